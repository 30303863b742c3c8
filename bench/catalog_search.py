"""Scenario: search over 100,000 products, latency at the service (target: p95 < 50 ms).

The products (the seed's generator, 12 categories) are bulk-loaded with COPY before the
catalog starts, then ANALYZEd. The catalog runs with its read cache off
(MESH_CATALOG_CACHE=off), so every call is a PostgreSQL search: full text (GIN), trigram
names (GIN), filters, ranking and keyset paging. A fixed mix of searches - single words,
phrases, prefixes, typos, with category/price/stock filters, other orders, second pages -
is sent over gRPC one at a time (the latency of one search), then by 8 concurrent clients
(throughput).

    python -m bench.catalog_search --products 100000 --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections import defaultdict
from typing import Any

import asyncpg
import orjson
import uvloop

from bench.catalog_support import catalog_processes, latency_line, stubs
from bench.harness.stats import percentile
from mesh.harness import BackingUrls
from mesh.settings import with_database
from protos.catalog.v1 import catalog_pb2
from services.catalog.seed import generate

SEARCHES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("word", {"q": "headphones"}),
    ("word", {"q": "kettle"}),
    ("word", {"q": "organic"}),
    ("word", {"q": "steel"}),
    ("phrase", {"q": "wireless headphones"}),
    ("phrase", {"q": "cast iron skillet"}),
    ("phrase", {"q": "running shoes waterproof"}),
    ("prefix", {"q": "head"}),
    ("prefix", {"q": "esp"}),
    ("prefix", {"q": "gard"}),
    ("typo", {"q": "wirless headphnes"}),
    ("typo", {"q": "espreso machin"}),
    ("typo", {"q": "mechanicl keybord"}),
    ("filtered", {"q": "lamp", "category": "home", "in_stock": True}),
    ("filtered", {"q": "coffee", "max_price_cents": 1500}),
    ("filtered", {"q": "boots", "min_price_cents": 5000, "max_price_cents": 15000}),
    ("ordered", {"q": "shirt", "order_by": "price"}),
    ("ordered", {"q": "chair", "order_by": "-createdAt"}),
    ("browse", {"category": "kitchen", "order_by": "price"}),
    ("browse", {"in_stock": True}),
    ("browse", {"min_price_cents": 1000, "max_price_cents": 2000, "order_by": "-price"}),
    ("page2", {"q": "steel", "page_token": "next"}),
    ("page2", {"category": "toys", "page_token": "next"}),
    ("rare", {"q": "zeppelin"}),
)


async def bulk_load(urls: BackingUrls, namespace: str, count: int) -> float:
    started = time.perf_counter()
    connection = await asyncpg.connect(with_database(urls.postgres_dsn, f"{namespace}catalog"))
    try:
        records = [
            (p.id, p.sku, p.name, p.description, p.price_cents, p.currency, p.category,
             orjson.dumps(p.attributes).decode(), p.stock, p.created_at, p.created_at)
            for p in generate(count)
        ]  # fmt: skip
        await connection.copy_records_to_table(
            "products",
            records=records,
            columns=["id", "sku", "name", "description", "price_cents", "currency",
                     "category", "attributes", "stock", "created_at", "updated_at"],
        )  # fmt: skip
        await connection.execute("VACUUM ANALYZE products")
        await connection.execute("VACUUM ANALYZE search_words")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def request_for(stub: Any, fields: dict[str, Any]) -> catalog_pb2.ListProductsRequest:
    fields = dict(fields)
    if fields.pop("page_token", None):
        first = await stub.ListProducts(catalog_pb2.ListProductsRequest(**fields))
        fields["page_token"] = first.next_page_token
    return catalog_pb2.ListProductsRequest(**fields)


async def run(count: int, rounds: int, concurrency: int) -> None:
    loaded: list[float] = []

    async def prepare(urls: BackingUrls, namespace: str) -> None:
        loaded.append(await bulk_load(urls, namespace, count))

    async with (
        catalog_processes({"MESH_CATALOG_CACHE": "off"}, prepare) as bench,
        stubs(bench.catalog.address) as stubs_,
    ):
        stub = stubs_[0]
        requests = [(kind, await request_for(stub, f)) for kind, f in SEARCHES]
        for _, request in requests:  # warm-up: plans, buffers
            await stub.ListProducts(request)
        by_kind: dict[str, list[float]] = defaultdict(list)
        everything: list[float] = []
        hits: list[int] = []
        cpu_before = bench.catalog.cpu()
        for _ in range(rounds):
            for kind, request in requests:
                started = time.perf_counter()
                response = await stub.ListProducts(request)
                elapsed = time.perf_counter() - started
                by_kind[kind].append(elapsed)
                everything.append(elapsed)
                hits.append(len(response.products))
        cpu = bench.catalog.cpu() - cpu_before
        print(
            f"search: {count} products bulk-loaded in {loaded[0]:.1f} s; "
            f"{len(everything)} searches one at a time, cache off"
        )
        print(f"  all: {latency_line(everything)}")
        for kind, samples in by_kind.items():
            print(f"  {kind:8s}: {latency_line(samples)}")
        print(
            f"  mean results per page {statistics.fmean(hits):.1f}; "
            f"catalog CPU {cpu / len(everything) * 1000:.2f} ms per search"
        )

        total = rounds * len(requests)
        latencies: list[float] = []
        cursor = iter(range(total))

        async def client(index: int) -> None:
            for n in cursor:
                request = requests[n % len(requests)][1]
                started = time.perf_counter()
                await stubs_[index % len(stubs_)].ListProducts(request)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        print(
            f"  {concurrency} concurrent clients: {total / elapsed:.0f} searches/s, "
            f"p95 {percentile(latencies, 0.95) * 1000:.1f} ms"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    uvloop.run(
        run(
            max(1, min(args.products, 1_000_000)),
            max(1, min(args.rounds, 200)),
            max(1, min(args.concurrency, 64)),
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
