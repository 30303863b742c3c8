"""Scenario: GetProduct at the service, read cache on vs off (the ratio is the figure).

The demo catalog (3,000 seeded products) is loaded, then the catalog service runs twice on
the same data: with its Redis read cache (each product read once first, so every timed
call is a hit) and with MESH_CATALOG_CACHE=off (every call reads PostgreSQL). Each run is
64 concurrent gRPC clients calling GetProduct on random product ids for a fixed time,
straight at the service (the gateway's wrk run is measured separately).

    python -m bench.catalog_get --seconds 10 --connections 64
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import asyncpg
import uvloop

from bench.catalog_support import CatalogBench, catalog_processes, latency_line, stubs
from mesh.harness import BackingUrls
from protos.catalog.v1 import catalog_pb2
from services.catalog.seed import seed

PRODUCTS = 3000
MAX_CALLS = 2_000_000


async def product_ids(bench: CatalogBench) -> list[str]:
    connection = await asyncpg.connect(bench.catalog_dsn)
    try:
        return [str(r["id"]) for r in await connection.fetch("SELECT id FROM products")]
    finally:
        await connection.close()


async def load(
    bench: CatalogBench, ids: list[str], seconds: float, connections: int
) -> dict[str, Any]:
    async with stubs(bench.catalog.address, channels=4) as stubs_:
        for product_id in ids:  # warm: every product read once (cached when the cache is on)
            await stubs_[0].GetProduct(catalog_pb2.GetProductRequest(id=product_id))
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds
        calls = 0

        async def client(index: int) -> None:
            nonlocal calls
            rng = random.Random(index)
            stub = stubs_[index % len(stubs_)]
            while time.perf_counter() < deadline and calls < MAX_CALLS:
                request = catalog_pb2.GetProductRequest(id=rng.choice(ids))
                started = time.perf_counter()
                await stub.GetProduct(request)
                latencies.append(time.perf_counter() - started)
                calls += 1

        cpu_before = bench.catalog.cpu()
        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(connections)))
        elapsed = time.perf_counter() - started
        cpu = bench.catalog.cpu() - cpu_before
    return {
        "rps": calls / elapsed,
        "latencies": latencies,
        "cpu_per_call_ms": cpu / max(calls, 1) * 1000,
        "calls": calls,
    }


async def run(seconds: float, connections: int) -> None:
    async def prepare(urls: BackingUrls, namespace: str) -> None:
        await seed(urls.postgres_dsn, namespace, PRODUCTS)

    results: dict[str, dict[str, Any]] = {}
    for label, env in (("cache on", {}), ("cache off", {"MESH_CATALOG_CACHE": "off"})):
        async with catalog_processes(env, prepare) as bench:
            ids = await product_ids(bench)
            results[label] = await load(bench, ids, seconds, connections)
    for label, result in results.items():
        print(
            f"GetProduct, {label}: {result['rps']:.0f} calls/s at {connections} concurrent "
            f"clients ({result['calls']} calls); {latency_line(result['latencies'])}; "
            f"catalog CPU {result['cpu_per_call_ms']:.2f} ms/call"
        )
    ratio = results["cache on"]["rps"] / results["cache off"]["rps"]
    print(f"  cached / uncached throughput: {ratio:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    uvloop.run(run(max(1.0, min(args.seconds, 120.0)), max(1, min(args.connections, 512))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
