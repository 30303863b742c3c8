"""Scenario: 200 concurrent clients each reserve 1 unit of a product with stock 50.

Each round creates a product with stock 50 and fires 200 ReserveProduct calls at once,
each from its own user (its own token) with its own idempotency key, straight at the
catalog service over gRPC (no gateway). It checks that exactly 50 succeed, 150 are refused
with ABORTED (409) and the stock ends at 0 (read from PostgreSQL), and reports the
round's throughput (calls answered per second) and latencies.

In `python -m bench` (scenario 3, `measure`) the rounds repeat, and each is paired with the
baseline: the same 200 reservations spread over 200 products (nothing contended).

    python -m bench.catalog_reserve --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import uvloop

from bench.catalog_support import (
    CatalogBench,
    catalog_processes,
    create_product,
    latency_line,
    stubs,
)
from bench.harness.cores import CoreSplit, pin, pin_self
from bench.harness.procfs import CpuMeter, by_role, descendants
from bench.harness.report import Row, ScenarioResult, Table, headline
from bench.harness.runner import Context, Scenario
from bench.harness.stats import Figure, column, paired, percentile
from protos.catalog.v1 import catalog_pb2

CLIENTS = 200
STOCK = 50


@dataclass
class Round:
    seconds: float
    latencies: list[float]
    codes: list[grpc.StatusCode]
    stock: int | None  # the contended product's stock afterwards


async def _reserve_all(
    bench: CatalogBench, stubs_: list[Any], product_ids: list[str]
) -> tuple[float, list[float], list[grpc.StatusCode]]:
    """One ReserveProduct of 1 unit per product id, all at once, each its own user."""
    requests = [
        (
            catalog_pb2.ReserveProductRequest(
                id=product_id, quantity=1, idempotency_key=str(uuid.uuid4())
            ),
            (("authorization", bench.bearer()),),
        )
        for product_id in product_ids
    ]
    latencies: list[float] = []
    codes: list[grpc.StatusCode] = []

    async def client(index: int) -> None:
        request, metadata = requests[index]
        stub = stubs_[index % len(stubs_)]
        started = time.perf_counter()
        try:
            await stub.ReserveProduct(request, metadata=metadata, timeout=30)
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(len(requests))))
    return time.perf_counter() - started, latencies, codes


async def contended(bench: CatalogBench, stubs_: list[Any]) -> Round:
    """CLIENTS clients reserve 1 unit each of one product with stock STOCK."""
    product = await create_product(stubs_[0], bench, stock=STOCK)
    seconds, latencies, codes = await _reserve_all(bench, stubs_, [product.id] * CLIENTS)
    connection = await asyncpg.connect(bench.catalog_dsn)
    try:
        stock = await connection.fetchval(
            "SELECT stock FROM products WHERE id = $1", uuid.UUID(product.id)
        )
    finally:
        await connection.close()
    return Round(seconds, latencies, codes, stock)


def correct(result: Round) -> bool:
    """Exactly STOCK succeeded, the rest were refused with ABORTED, stock ended at 0."""
    ok = result.codes.count(grpc.StatusCode.OK)
    refused = result.codes.count(grpc.StatusCode.ABORTED)
    return (ok, refused, result.stock) == (STOCK, CLIENTS - STOCK, 0)


async def one_round(bench: CatalogBench, stubs_: list[object]) -> tuple[float, list[float]]:
    result = await contended(bench, stubs_)
    assert correct(result), (result.codes, result.stock)
    return result.seconds, result.latencies


async def run(rounds: int) -> None:
    async with catalog_processes() as bench, stubs(bench.catalog.address) as stubs_:
        await one_round(bench, stubs_)  # warm-up: connections, JWKS, plans
        cpu_before = bench.catalog.cpu()
        results = [await one_round(bench, stubs_) for _ in range(rounds)]
        cpu = bench.catalog.cpu() - cpu_before
        seconds = [r[0] for r in results]
        latencies = [sample for r in results for sample in r[1]]
        print(
            f"reserve: {CLIENTS} clients x 1 unit, stock {STOCK}, {rounds} rounds: "
            f"exactly {STOCK} succeeded and stock ended at 0 every round"
        )
        print(
            f"  round wall time median {statistics.median(seconds) * 1000:.1f} ms "
            f"(min {min(seconds) * 1000:.1f}, max {max(seconds) * 1000:.1f}); "
            f"throughput {CLIENTS / statistics.median(seconds):.0f} calls/s "
            f"({STOCK / statistics.median(seconds):.0f} reservations/s)"
        )
        print(f"  per call: {latency_line(latencies)}")
        print(f"  catalog CPU {cpu:.2f} s for {rounds * CLIENTS} calls")


# --- in the report ------------------------------------------------------------------------


def _sample(result: Round, cpu: dict[str, float], unexpected: int) -> dict[str, float]:
    per_thousand = 1000 / len(result.codes)
    return {
        "calls/s": len(result.codes) / result.seconds,
        "round ms": result.seconds * 1000,
        "p50 ms": percentile(result.latencies, 0.5) * 1000,
        "p99 ms": percentile(result.latencies, 0.99) * 1000,
        "errors": float(unexpected),
        **{f"cpu {k}": v * per_thousand for k, v in cpu.items()},
    }


async def _repetitions(
    repetitions: int, split: CoreSplit
) -> tuple[list[dict[str, float]], list[dict[str, float]], int]:
    contended_runs, spread_runs, wrong_rounds = [], [], 0
    async with catalog_processes() as bench, stubs(bench.catalog.address) as stubs_:
        pin(bench.catalog.popen.pid, split.server)
        pin_self(split.load)
        groups = {"catalog": [bench.catalog.popen.pid]}
        groups["postgres"] = by_role(descendants(os.getpid()), {"p": "postgres"}).get("p", [])
        groups["load (this process)"] = [os.getpid()]
        meter = CpuMeter(groups)
        spread = [
            (await create_product(stubs_[0], bench, stock=repetitions + 2)).id
            for _ in range(CLIENTS)
        ]
        await one_round(bench, stubs_)  # warm-up: connections, JWKS, plans
        await _reserve_all(bench, stubs_, spread)
        for _ in range(repetitions):
            meter.start()
            result = await contended(bench, stubs_)
            cpu = meter.stop()
            wrong = not correct(result)
            wrong_rounds += wrong
            unexpected = sum(
                c not in (grpc.StatusCode.OK, grpc.StatusCode.ABORTED) for c in result.codes
            )
            contended_runs.append(_sample(result, cpu, unexpected))
            meter.start()
            seconds, latencies, codes = await _reserve_all(bench, stubs_, spread)
            cpu = meter.stop()
            free = Round(seconds, latencies, codes, None)
            spread_runs.append(_sample(free, cpu, sum(c != grpc.StatusCode.OK for c in codes)))
    return contended_runs, spread_runs, wrong_rounds


def measure(context: Context) -> ScenarioResult:
    split = CoreSplit.plan(1)
    pin_self(split.upstream)  # PostgreSQL and the users service start on the upstream cores
    contended_runs, spread_runs, wrong = uvloop.run(
        _repetitions(context.settings.repetitions, split)
    )
    result = ScenarioResult(
        3,
        "catalog_reserve",
        "Write path: reservations under contention",
        setup=(
            f"The catalog issue's scenario: {CLIENTS} clients at once, each its own user and "
            f"idempotency key, reserve 1 unit of one product with stock {STOCK}, straight at "
            "the catalog's gRPC `ReserveProduct` (fresh embedded PostgreSQL). Baseline: the "
            f"same {CLIENTS} reservations spread over {CLIENTS} products (no row contended)."
        ),
        cores=split.describe("the catalog") + " (PostgreSQL and users with them)",
        tables=[
            Table(
                f"{CLIENTS} concurrent reservations per round",
                [
                    Row.of(f"one product, stock {STOCK} (contended)", contended_runs),
                    Row.of(f"{CLIENTS} products (uncontended)", spread_runs),
                ],
                cpu_unit="CPU s per 1,000 calls",
            )
        ],
        headlines=[
            headline("contended calls/s", Figure.of(column(contended_runs, "calls/s"))),
            headline(
                "contended ÷ uncontended calls/s",
                paired(column(contended_runs, "calls/s"), column(spread_runs, "calls/s")),
                "x",
            ),
        ],
        errors=int(sum(r["errors"] for r in contended_runs + spread_runs)) + wrong,
        errors_expected=f"{CLIENTS - STOCK} ABORTED (409) refusals per contended round",
    )
    result.notes.append(
        f"exactly {STOCK} succeeded and the stock ended at 0 in "
        f"{len(contended_runs) - wrong} of {len(contended_runs)} contended rounds"
    )
    return result


SCENARIO = Scenario(3, "catalog_reserve", "Write path: reservations under contention", measure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    uvloop.run(run(max(1, min(args.rounds, 50))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
