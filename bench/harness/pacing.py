"""Open-loop pacing shared by the Python load clients (gRPC and HTTP).

`connections` clients each send on a fixed schedule, staggered so that together they send
one call every ``1 / rate`` seconds, evenly spaced: the latency at a given load, without the
synchronised bursts of a generator whose clients all tick at once (``hey -q`` starts every
worker's ticker together, so 64 connections at 1 call/s each arrive as one burst of 64).
Without a rate, each client keeps one call in flight (closed loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.harness.stats import percentile

Call = Callable[[int], Awaitable[bool]]
"""Sends one call from client `index`; True when it succeeded."""


@dataclass
class Paced:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def figures(self) -> dict[str, float]:
        count = len(self.latencies)
        return {
            "requests": count,
            "seconds": self.seconds,
            "requests_per_second": count / self.seconds if self.seconds else 0.0,
            "p50_ms": percentile(self.latencies, 0.5) * 1000,
            "p99_ms": percentile(self.latencies, 0.99) * 1000,
            "errors": self.errors,
        }


async def run_paced(
    call: Call, seconds: float, connections: int, rate: float | None, warmup: float = 0.0
) -> Paced:
    result = Paced()

    async def client(index: int, until: float, record: bool) -> None:
        sent = 0
        begin = time.perf_counter()
        while True:
            if rate:
                due = begin + (sent * connections + index) / rate
                if due >= until:
                    return
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif time.perf_counter() >= until:
                return
            started = time.perf_counter()
            ok = await call(index)
            if record:
                result.latencies.append(time.perf_counter() - started)
                result.errors += not ok
            sent += 1

    if warmup > 0:
        until = time.perf_counter() + warmup
        await asyncio.gather(*(client(i, until, False) for i in range(connections)))
    started = time.perf_counter()
    await asyncio.gather(*(client(i, started + seconds, True) for i in range(connections)))
    result.seconds = time.perf_counter() - started
    return result
