"""Scenario: chat fan-out and connection memory, one chat process.

1. Fan-out: 1,000 subscribers in one room; one sender sends at a fixed rate for a few
   seconds (several rates); for each: messages delivered per second by the chat process,
   deliveries per CPU-second of that process (its user + system time over the run: a
   per-core figure that holds on a shared machine; the anchor is Centrifugo's ~12,500
   deliveries/s per CPU), and the p50/p99 send-to-receive latency over a sample of
   subscribers spread over the join order.
2. Memory: the chat process's resident memory grown by 5,000 idle connections
   (authenticated WebSockets that joined no room), per connection (target <= 32 KiB).

Subscribers are lean raw WebSocket clients (an asyncio protocol that counts frames and
reads the send time out of sampled ones) so that the client side costs little next to the
server's; the sender uses the `websockets` library. Everything runs on loopback; the open
files limit is raised for the 5,000 connections.

    python -m bench.chat_fanout [--subscribers 1000] [--rates 25,50,100,150] [--seconds 5]
                                [--connections 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import struct
import time
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.chat_support import (
    ChatBench,
    ChatProcess,
    chat_bench,
    percentile,
    raise_open_files,
    rss_bytes,
)

SAMPLE_EVERY = 20  # every 20th subscriber parses each message for its latency
SENDERS = 8


def _masked_text(payload: bytes) -> bytes:
    """A client text frame (clients must mask; a zero key leaves the payload as is)."""
    size = len(payload)
    short = size < 126
    header = bytes((0x81, 0x80 | size)) if short else struct.pack("!BBH", 0x81, 0xFE, size)
    return header + b"\x00\x00\x00\x00" + payload


class RawSubscriber(asyncio.Protocol):
    """A minimal WebSocket client: the upgrade, then counting server frames."""

    def __init__(self, request: bytes, sample: bool) -> None:
        self.request = request
        self.sample = sample
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.buffer = b""
        self.messages = 0
        self.latencies: list[float] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(RuntimeError(buffer[:200].decode(errors="replace")))
                return
            self.upgraded.set_result(None)
            buffer = buffer[end + 4 :]
        now = time.time_ns()
        position, size = 0, len(buffer)
        while size - position >= 2:
            opcode = buffer[position] & 0x0F
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = struct.unpack_from("!H", buffer, position + 2)[0]
                start = position + 4
            elif length == 127:
                if size - position < 10:
                    break
                length = struct.unpack_from("!Q", buffer, position + 2)[0]
                start = position + 10
            if start + length > size:
                break
            if opcode == 1:
                self.messages += 1
                if self.sample:
                    frame = orjson.loads(buffer[start : start + length])
                    if frame.get("type") == "message":
                        sent = int(frame["text"].split(" ", 1)[0])
                        self.latencies.append((now - sent) / 1e9)
            elif opcode == 9 and self.transport is not None:  # ping: answer with a pong
                self.transport.write(b"\x8a\x80\x00\x00\x00\x00")
            position = start + length
        self.buffer = buffer[position:]

    def send(self, frame: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(_masked_text(orjson.dumps(frame)))


async def open_subscriber(chat: ChatProcess, token: str, sample: bool = False) -> RawSubscriber:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1:{chat.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: RawSubscriber(request, sample), "127.0.0.1", chat.port
    )
    await asyncio.wait_for(protocol.upgraded, 30)
    return protocol


async def open_many(
    chat: ChatProcess, bench: ChatBench, count: int, room: str | None, concurrency: int = 50
) -> list[RawSubscriber]:
    semaphore = asyncio.Semaphore(concurrency)
    subscribers: list[RawSubscriber] = []

    async def one(index: int) -> None:
        async with semaphore:
            _, token = bench.user()
            subscriber = await open_subscriber(chat, token, sample=index % SAMPLE_EVERY == 0)
            if room is not None:
                before = subscriber.messages
                subscriber.send({"type": "join", "room": room})
                for _ in range(600):  # the `joined` frame
                    if subscriber.messages > before:
                        break
                    await asyncio.sleep(0.05)
            subscribers.append(subscriber)

    await asyncio.gather(*(one(i) for i in range(count)))
    return subscribers


async def fanout(
    bench: ChatBench, subscribers: int, rates: list[int], seconds: float
) -> list[dict[str, Any]]:
    chat = await bench.start_chat(
        MESH_CHAT_RATE_PER_SECOND="100000",
        MESH_CHAT_RATE_BURST="100000",
        MESH_CHAT_SEND_BUFFER_BYTES=str(8 * 1024 * 1024),
        MESH_CHAT_MAX_CONNECTIONS_PER_USER=str(SENDERS + 1),  # the senders share a user
    )
    _, owner_token = bench.user()
    room = await bench.create_room(owner_token, [], private=False)
    started = time.perf_counter()
    clients = await open_many(chat, bench, subscribers, room)
    print(
        f"  {subscribers} subscribers joined in {time.perf_counter() - started:.1f} s", flush=True
    )
    results = []
    headers = {"Authorization": f"Bearer {owner_token}"}
    async with contextlib.AsyncExitStack() as stack:
        senders = [
            await stack.enter_async_context(
                connect(chat.ws, additional_headers=headers, max_queue=None)
            )
            for _ in range(SENDERS)
        ]

        async def drain_acks(sender: ClientConnection) -> None:
            async for _ in sender:
                pass

        acks = [asyncio.create_task(drain_acks(sender)) for sender in senders]
        for rate in rates:
            for c in clients:
                c.latencies.clear()
            before = sum(c.messages for c in clients)
            cpu_before = chat.cpu()
            total = int(rate * seconds)
            begin = time.perf_counter()
            for i in range(total):
                due = begin + i / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                text = f"{time.time_ns()} fan-out {rate}/s #{i}"
                await senders[i % SENDERS].send(orjson.dumps(
                    {"type": "send", "room": room, "clientMsgId": f"r{rate}-{i}", "text": text}
                ).decode())  # fmt: skip
            expected = before + total * subscribers
            deadline = time.perf_counter() + 60
            while sum(c.messages for c in clients) < expected:
                if time.perf_counter() > deadline:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - begin
            cpu = chat.cpu() - cpu_before
            delivered = sum(c.messages for c in clients) - before
            latencies = [x for c in clients for x in c.latencies]
            result = {
                "rate (messages/s sent)": rate,
                "delivered": delivered,
                "expected": total * subscribers,
                "deliveries/s": round(delivered / elapsed),
                "chat CPU (cores)": round(cpu / elapsed, 2),
                "deliveries per CPU-second": round(delivered / cpu) if cpu else None,
                "p50 ms": round(percentile(latencies, 0.5) * 1000, 1),
                "p99 ms": round(percentile(latencies, 0.99) * 1000, 1),
            }
            print(f"  {result}", flush=True)
            results.append(result)
        for task in acks:
            task.cancel()
        for task in acks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    bench.stop_chat(chat)
    return results


async def memory(bench: ChatBench, connections: int) -> dict[str, Any]:
    chat = await bench.start_chat(MESH_CHAT_SHUTDOWN_BATCH_SIZE="1000")
    warm = await open_many(chat, bench, 20, None)  # code paths and pools warmed up
    await asyncio.sleep(1)
    baseline = rss_bytes(chat.pid)
    clients = await open_many(chat, bench, connections, None, concurrency=100)
    await asyncio.sleep(3)
    loaded = rss_bytes(chat.pid)
    per_connection = (loaded - baseline) / connections
    for c in (*warm, *clients):
        if c.transport is not None:
            c.transport.close()
    bench.stop_chat(chat)
    return {
        "connections": connections,
        "rss before (MiB)": round(baseline / 2**20, 1),
        "rss after (MiB)": round(loaded / 2**20, 1),
        "KiB per idle connection": round(per_connection / 1024, 1),
    }


async def scenario(
    subscribers: int, rates: list[int], seconds: float, connections: int
) -> dict[str, Any]:
    limit = raise_open_files(max(4 * connections, 4 * subscribers, 4096))
    async with chat_bench() as bench:
        print(f"fan-out at {subscribers} subscribers (open files limit {limit})", flush=True)
        rows = await fanout(bench, subscribers, rates, seconds)
        print(f"memory at {connections} idle connections", flush=True)
        mem = await memory(bench, connections)
        print(f"  {mem}", flush=True)
    return {"fanout": rows, "memory": mem, "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--rates", default="25,50,100,150")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=5000)
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    report = asyncio.run(scenario(args.subscribers, rates, args.seconds, args.connections))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
