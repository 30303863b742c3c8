"""Scenario: 200 concurrent clients each reserve 1 unit of a product with stock 50.

Each round creates a product with stock 50 and fires 200 ReserveProduct calls at once,
each from its own user (its own token) with its own idempotency key, straight at the
catalog service over gRPC (no gateway). It checks that exactly 50 succeed, 150 are refused
with ABORTED (409) and the stock ends at 0 (read from PostgreSQL), and reports the
round's throughput (calls answered per second) and latencies.

    python -m bench.catalog_reserve --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

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
from protos.catalog.v1 import catalog_pb2

CLIENTS = 200
STOCK = 50


async def one_round(bench: CatalogBench, stubs_: list[object]) -> tuple[float, list[float]]:
    product = await create_product(stubs_[0], bench, stock=STOCK)
    requests = [
        (
            catalog_pb2.ReserveProductRequest(
                id=product.id, quantity=1, idempotency_key=str(uuid.uuid4())
            ),
            (("authorization", bench.bearer()),),
        )
        for _ in range(CLIENTS)
    ]
    latencies: list[float] = []
    codes: list[grpc.StatusCode] = []

    async def client(index: int) -> None:
        request, metadata = requests[index]
        stub = stubs_[index % len(stubs_)]
        started = time.perf_counter()
        try:
            await stub.ReserveProduct(request, metadata=metadata, timeout=30)  # type: ignore[attr-defined]
            codes.append(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as error:
            codes.append(error.code())
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(CLIENTS)))
    elapsed = time.perf_counter() - started
    ok = codes.count(grpc.StatusCode.OK)
    refused = codes.count(grpc.StatusCode.ABORTED)
    connection = await asyncpg.connect(bench.catalog_dsn)
    try:
        stock = await connection.fetchval(
            "SELECT stock FROM products WHERE id = $1", uuid.UUID(product.id)
        )
    finally:
        await connection.close()
    assert (ok, refused, stock) == (STOCK, CLIENTS - STOCK, 0), (ok, refused, stock, codes)
    return elapsed, latencies


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    uvloop.run(run(max(1, min(args.rounds, 50))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
