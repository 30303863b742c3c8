"""The chat's baseline: a bare aiohttp WebSocket server broadcasting to everyone joined.

It speaks just enough of the chat's protocol for the same clients (`bench.chat_fanout`):
``{"type": "join"}`` answers ``{"type": "joined"}`` and adds the connection to the one
room; ``{"type": "send", "text": ...}`` is encoded once as a ``message`` and sent to every
joined connection with aiohttp's own API (``send_frame``). No authentication, storage,
sequence bookkeeping, queues or Redis: the ceiling of fan-out with aiohttp on this machine,
and of an idle connection's memory.

    python -m bench.baselines.ws_broadcast --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson
import uvloop
from aiohttp import WSMsgType, web

from bench.harness.cores import taskset
from bench.harness.mesh import stop_process, wait_port
from mesh.harness import free_port


def app() -> web.Application:
    joined: set[web.WebSocketResponse] = set()
    seq = 0

    async def handle(request: web.Request) -> web.WebSocketResponse:
        nonlocal seq
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                frame = orjson.loads(message.data)
                if frame.get("type") == "join":
                    joined.add(ws)
                    await ws.send_str('{"type":"joined"}')
                elif frame.get("type") == "send":
                    seq += 1
                    out = orjson.dumps(
                        {"type": "message", "room": frame.get("room"), "seq": seq}
                        | {"text": frame.get("text", "")}
                    )
                    for peer in list(joined):  # encoded once, framed per connection
                        if not peer.closed:
                            await peer.send_frame(out, WSMsgType.TEXT)
        finally:
            joined.discard(ws)
        return ws

    application = web.Application()
    application.router.add_get("/ws/chat", handle)
    return application


async def serve(port: int) -> None:
    runner = web.AppRunner(app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()


@dataclass
class Broadcast:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat"

    @property
    def pid(self) -> int:
        return self.process.pid


@contextlib.contextmanager
def ws_broadcast(cpus: Sequence[int]) -> Iterator[Broadcast]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.baselines.ws_broadcast", "--port", str(port)]
    process = subprocess.Popen(taskset(cpus, argv) if cpus else argv)
    try:
        wait_port(port, 30, process)
        yield Broadcast(port, process)
    finally:
        stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
