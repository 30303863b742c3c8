"""Baseline (a): a bare aiohttp handler answering every GET with the same JSON body.

The same runtime as the gateway (uvloop, no access log) and nothing else: no routing
table, policies, gRPC or tracing. It binds with SO_REUSEPORT: `bare_http(workers=N)` starts
N of them on one port, as the gateway's workers do. Also nginx's upstream in baseline (b).

    python -m bench.baselines.bare_http --port 8000 --body product.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import uvloop
from aiohttp import web

from bench.harness.cores import taskset
from bench.harness.mesh import listening_pids, stop_process, wait_port
from mesh.harness import free_port


def app(body: bytes) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    application = web.Application()
    application.router.add_get("/{tail:.*}", handle)
    return application


async def serve(port: int, body: bytes) -> None:
    runner = web.AppRunner(app(body), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=1024).start()
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()


@dataclass
class BareServer:
    url: str
    port: int
    processes: list[subprocess.Popen[bytes]]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]


@contextlib.contextmanager
def bare_http(body_file: Path, workers: int, cpus: Sequence[int]) -> Iterator[BareServer]:
    """`workers` processes serving `body_file` on one free port, on `cpus`."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.baselines.bare_http", "--port", str(port)]
    argv += ["--body", str(body_file)]
    processes = [
        subprocess.Popen(taskset(cpus, argv), stdout=subprocess.DEVNULL) for _ in range(workers)
    ]
    try:
        wait_port(port, 30, processes[0])
        while len(listening_pids(port)) < workers:
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a bare aiohttp worker exited")
            wait_port(port, 1)
        yield BareServer(f"http://127.0.0.1:{port}", port, processes)
    finally:
        for process in processes:
            stop_process(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.port, args.body.read_bytes()))


if __name__ == "__main__":
    main()
