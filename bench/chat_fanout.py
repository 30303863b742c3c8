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

In `python -m bench` (scenario 5, `measure`) each repetition walks the rates again, the
same load runs on a bare aiohttp WebSocket broadcast as the baseline, and the memory is
measured on both.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.baselines.ws_broadcast import ws_broadcast
from bench.chat_support import ChatBench, chat_bench, raise_open_files
from bench.harness.cores import CoreSplit, pin_self
from bench.harness.procfs import cpu_seconds, rss_bytes
from bench.harness.report import Row, ScenarioResult, Table, at_least, at_most, headline
from bench.harness.runner import Context, Scenario, Settings
from bench.harness.stats import Figure, column, paired, percentile

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


async def open_subscriber(port: int, token: str, sample: bool = False) -> RawSubscriber:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(
        lambda: RawSubscriber(request, sample), "127.0.0.1", port
    )
    await asyncio.wait_for(protocol.upgraded, 30)
    return protocol


async def open_many(
    port: int, token: Callable[[], str], count: int, room: str | None, concurrency: int = 50
) -> list[RawSubscriber]:
    """`count` subscribers (each with a new `token()`), joined to `room` unless None."""
    semaphore = asyncio.Semaphore(concurrency)
    subscribers: list[RawSubscriber] = []

    async def one(index: int) -> None:
        async with semaphore:
            subscriber = await open_subscriber(port, token(), sample=index % SAMPLE_EVERY == 0)
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


def close_all(clients: Sequence[RawSubscriber]) -> None:
    for c in clients:
        if c.transport is not None:
            c.transport.close()


@dataclass
class Target:
    """What the subscribers and senders talk to: a chat process or the baseline."""

    port: int
    pid: int
    room: str
    sender_headers: dict[str, str]

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat"

    def cpu(self) -> float:
        return cpu_seconds(self.pid)


async def send_at_rate(
    senders: Sequence[ClientConnection], room: str, rate: int, seconds: float, tag: str
) -> int:
    """`rate` messages a second for `seconds`, round robin over the senders; how many."""
    total = int(rate * seconds)
    begin = time.perf_counter()
    for i in range(total):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        text = f"{time.time_ns()} fan-out {rate}/s #{i}"
        await senders[i % len(senders)].send(
            orjson.dumps(
                {"type": "send", "room": room, "clientMsgId": f"{tag}-{i}", "text": text}
            ).decode()
        )
    return total


async def _delivered(clients: Sequence[RawSubscriber], before: int, count: int) -> None:
    """Until `count` more frames than `before` arrived in all, or none for 5 s, or 60 s."""
    deadline = time.perf_counter() + 60
    seen, progress = -1, time.perf_counter()
    while (now := sum(c.messages for c in clients)) < before + count:
        if now != seen:
            seen, progress = now, time.perf_counter()
        if time.perf_counter() > min(deadline, progress + 5):
            return
        await asyncio.sleep(0.05)


async def rates_rows(
    target: Target,
    clients: list[RawSubscriber],
    rates: Sequence[int],
    seconds: float,
    warmup: float = 0.0,
) -> list[dict[str, Any]]:
    """For each rate in turn: deliveries/s, deliveries per CPU-second of the target and the
    send→receive p50/p99 over the sampled subscribers (after `warmup` seconds at the first
    rate, not counted)."""
    results = []
    async with contextlib.AsyncExitStack() as stack:
        senders = [
            await stack.enter_async_context(
                connect(target.ws, additional_headers=target.sender_headers, max_queue=None)
            )
            for _ in range(SENDERS)
        ]

        async def drain_acks(sender: ClientConnection) -> None:
            async for _ in sender:
                pass

        acks = [asyncio.create_task(drain_acks(sender)) for sender in senders]
        if warmup > 0:
            before = sum(c.messages for c in clients)
            sent = await send_at_rate(senders, target.room, rates[0], warmup, "warm")
            await _delivered(clients, before, sent * len(clients))
        for index, rate in enumerate(rates):
            for c in clients:
                c.latencies.clear()
            before = sum(c.messages for c in clients)
            cpu_before = target.cpu()
            begin = time.perf_counter()
            total = await send_at_rate(senders, target.room, rate, seconds, f"r{index}")
            await _delivered(clients, before, total * len(clients))
            elapsed = time.perf_counter() - begin
            cpu = target.cpu() - cpu_before
            delivered = sum(c.messages for c in clients) - before
            latencies = [x for c in clients for x in c.latencies]
            result = {
                "rate (messages/s sent)": rate,
                "delivered": delivered,
                "expected": total * len(clients),
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
    return results


def _token(bench: ChatBench) -> Callable[[], str]:
    return lambda: bench.user()[1]


async def fanout(
    bench: ChatBench,
    subscribers: int,
    rates: Sequence[int],
    seconds: float,
    warmup: float = 0.0,
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
    clients = await open_many(chat.port, _token(bench), subscribers, room)
    print(
        f"  {subscribers} subscribers joined in {time.perf_counter() - started:.1f} s", flush=True
    )
    target = Target(chat.port, chat.pid, room, {"Authorization": f"Bearer {owner_token}"})
    try:
        return await rates_rows(target, clients, rates, seconds, warmup)
    finally:
        close_all(clients)
        bench.stop_chat(chat)


async def fanout_baseline(
    bench: ChatBench,
    subscribers: int,
    rates: Sequence[int],
    seconds: float,
    warmup: float = 0.0,
) -> list[dict[str, Any]]:
    """The same load on the bare aiohttp broadcast (`bench.baselines.ws_broadcast`)."""
    with ws_broadcast(bench.cpus) as server:
        clients = await open_many(server.port, _token(bench), subscribers, "bench")
        target = Target(server.port, server.pid, "bench", {})
        try:
            return await rates_rows(target, clients, rates, seconds, warmup)
        finally:
            close_all(clients)


async def idle_memory(
    port: int, pid: int, token: Callable[[], str], connections: int
) -> dict[str, Any]:
    """Resident memory of `pid` grown by `connections` idle WebSockets, per connection."""
    warm = await open_many(port, token, 20, None)  # code paths and pools warmed up
    await asyncio.sleep(1)
    baseline = rss_bytes(pid)
    clients = await open_many(port, token, connections, None, concurrency=100)
    await asyncio.sleep(3)
    loaded = rss_bytes(pid)
    close_all([*warm, *clients])
    return {
        "connections": connections,
        "rss before (MiB)": round(baseline / 2**20, 1),
        "rss after (MiB)": round(loaded / 2**20, 1),
        "KiB per idle connection": round((loaded - baseline) / connections / 1024, 1),
    }


async def memory(bench: ChatBench, connections: int) -> dict[str, Any]:
    chat = await bench.start_chat(MESH_CHAT_SHUTDOWN_BATCH_SIZE="1000")
    try:
        return await idle_memory(chat.port, chat.pid, _token(bench), connections)
    finally:
        bench.stop_chat(chat)


async def memory_baseline(bench: ChatBench, connections: int) -> dict[str, Any]:
    with ws_broadcast(bench.cpus) as server:
        return await idle_memory(server.port, server.pid, _token(bench), connections)


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


# --- in the report ------------------------------------------------------------------------

RATES = (10, 25, 50)  # messages/s: 10,000 to 50,000 deliveries/s at 1,000 subscribers
SECONDS = 3.0
TARGET_PER_CORE = 12_500
TARGET_P99_MS = 100.0
TARGET_KIB = 32.0


def _samples(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, float]]]:
    by_rate: dict[int, list[dict[str, float]]] = {}
    for row in rows:
        by_rate.setdefault(row["rate (messages/s sent)"], []).append(
            {
                "deliveries/s": float(row["deliveries/s"]),
                "deliveries per CPU-s": float(row["deliveries per CPU-second"] or 0),
                "CPU (cores)": float(row["chat CPU (cores)"]),
                "p50 ms": float(row["p50 ms"]),
                "p99 ms": float(row["p99 ms"]),
                "missing": float(row["expected"] - row["delivered"]),
            }
        )
    return by_rate


def _best(
    by_rate: dict[int, list[dict[str, float]]],
) -> tuple[int, list[dict[str, float]], str]:
    """The highest rate whose median p99 is within the target with nothing missing (else
    the lowest rate), and which of the two it is."""
    fine = [
        rate
        for rate, runs in by_rate.items()
        if Figure.of(column(runs, "p99 ms")).median <= TARGET_P99_MS
        and Figure.of(column(runs, "missing")).max == 0
    ]
    if fine:
        return max(fine), by_rate[max(fine)], "the highest rate within the p99 target, none lost"
    return min(by_rate), by_rate[min(by_rate)], "the lowest rate: none met the p99 target"


async def _measure(
    settings: Settings, split: CoreSplit
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    subscribers = settings.pick(1000, 100)
    rates = RATES if not settings.is_quick else RATES[:1]
    connections = settings.pick(5000, 300)
    raise_open_files(max(4 * connections, 4 * subscribers, 4096))
    pin_self(split.upstream)  # the stores and users start on the upstream cores
    async with chat_bench() as bench:
        bench.cpus = split.server
        pin_self(split.load)
        seconds = min(settings.seconds, SECONDS)  # bounded: an overloaded rate drains slowly
        rounds = rates * settings.repetitions  # each repetition walks the rates again
        warmup = settings.warmup
        chat_rows = await fanout(bench, subscribers, rounds, seconds, warmup)
        base_rows = await fanout_baseline(bench, subscribers, rounds, seconds, warmup)
        chat_mem, base_mem = [], []
        for _ in range(settings.repetitions):
            chat_mem.append(await memory(bench, connections))
            base_mem.append(await memory_baseline(bench, connections))
    return chat_rows, base_rows, chat_mem, base_mem


def measure(context: Context) -> ScenarioResult:
    settings = context.settings
    split = CoreSplit.plan(1)
    chat_rows, base_rows, chat_mem, base_mem = asyncio.run(_measure(settings, split))
    chat, base = _samples(chat_rows), _samples(base_rows)
    rate, best, which = _best(chat)
    per_core = Figure.of(column(best, "deliveries per CPU-s"))
    subscribers = settings.pick(1000, 100)
    connections = settings.pick(5000, 300)
    mem_rows = [
        Row.of(
            name,
            [
                {
                    "KiB per connection": m["KiB per idle connection"],
                    "RSS after, MiB": m["rss after (MiB)"],
                }
                for m in runs
            ],
        )
        for name, runs in (("chat", chat_mem), ("bare aiohttp WebSocket", base_mem))
    ]
    return ScenarioResult(
        5,
        "chat_fanout",
        "Chat fan-out",
        setup=(
            f"One chat process, {subscribers} subscribers in one room (lean raw WebSocket "
            f"clients, every {SAMPLE_EVERY}th timing its messages), {SENDERS} senders at a fixed "
            f"rate for {min(settings.seconds, SECONDS):g} s per rate after "
            f"{settings.warmup:g} s of warm-up; baseline: the same clients on a bare "
            "aiohttp WebSocket broadcast (`bench.baselines.ws_broadcast`: no auth, storage or "
            f"Redis). Memory: resident growth for {connections} idle authenticated connections."
        ),
        cores=split.describe("the chat process (or the baseline)")
        + " (the subscribers and senders are this process; Redis, MongoDB-wire, users with them)",
        tables=[
            Table(
                "Fan-out by send rate (deliveries/s = rate x subscribers when it keeps up)",
                [Row.of(f"chat, {r} msg/s", runs) for r, runs in chat.items()]
                + [Row.of(f"bare aiohttp, {r} msg/s", runs) for r, runs in base.items()],
            ),
            Table(f"Memory at {connections} idle connections", mem_rows),
        ],
        headlines=[
            headline(
                f"chat deliveries per CPU-second (at {rate} msg/s, {which})",
                per_core,
                "",
                f"≥ {TARGET_PER_CORE:,}",
                at_least(TARGET_PER_CORE),
            ),
            headline(
                f"chat send→receive p99 at {rate} msg/s",
                Figure.of(column(best, "p99 ms")),
                " ms",
                f"≤ {TARGET_P99_MS:.0f} ms",
                at_most(TARGET_P99_MS),
            ),
            headline(
                f"chat ÷ bare aiohttp deliveries per CPU-second at {rate} msg/s",
                paired(
                    column(best, "deliveries per CPU-s"),
                    column(base.get(rate, []), "deliveries per CPU-s"),
                ),
                "x",
            ),
            headline(
                "chat memory per idle connection",
                Figure.of(m["KiB per idle connection"] for m in chat_mem),
                " KiB",
                f"≤ {TARGET_KIB:.0f} KiB",
                at_most(TARGET_KIB),
            ),
            headline(
                "chat ÷ bare aiohttp memory per idle connection",
                paired(
                    [m["KiB per idle connection"] for m in chat_mem],
                    [m["KiB per idle connection"] for m in base_mem],
                ),
                "x",
            ),
        ],
        notes=[
            "missing = deliveries not received by the time none had arrived for 5 s (a chat "
            "that falls behind closes slow connections rather than buffer without bound)"
        ],
    )


SCENARIO = Scenario(5, "chat_fanout", "Chat fan-out", measure)


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
