"""A paced HTTP load: calls evenly spaced at a given rate, from a Python aiohttp client.

The latency at a given load (the rate `hey -q` aims at, without its synchronised bursts:
see `bench.harness.pacing`). It runs as its own process, so it can be pinned and its CPU
counted, and prints one JSON line.

    python -m bench.harness.http_paced --url URL --rate 200 [--seconds 5] [--connections 64]
        [--header 'Authorization: Bearer ...']
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import aiohttp
import orjson
import uvloop

from bench.harness.cores import taskset
from bench.harness.http_load import HttpLoad
from bench.harness.pacing import run_paced
from bench.harness.procfs import run_child


async def _load(
    url: str, headers: dict[str, str], seconds: float, connections: int, rate: float, warmup: float
) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def call(_: int) -> bool:
            try:
                async with http.get(url) as response:
                    await response.read()
                    return response.status < 400
            except aiohttp.ClientError:
                return False

        paced = await run_paced(call, seconds, connections, rate, warmup)
    return paced.figures


def paced_http_load(
    url: str,
    seconds: float,
    rate: float,
    *,
    connections: int = 64,
    headers: Sequence[str] = (),
    cpus: Sequence[int] = (),
    warmup: float = 1.0,
) -> HttpLoad:
    """Run the client as a process (on `cpus`); its figures and the CPU it used."""
    argv = [sys.executable, "-m", "bench.harness.http_paced", "--url", url, "--rate", str(rate)]
    argv += ["--seconds", str(seconds), "--connections", str(connections)]
    argv += ["--warmup", str(warmup)]
    for header in headers:
        argv += ["--header", header]
    result, cpu = run_child(taskset(cpus, argv) if cpus else argv, seconds + warmup + 60)
    figures = orjson.loads(result.stdout.strip().splitlines()[-1])
    return HttpLoad(
        requests=int(figures["requests"]),
        seconds=figures["seconds"],
        requests_per_second=figures["requests_per_second"],
        p50_ms=figures["p50_ms"],
        p99_ms=figures["p99_ms"],
        errors=int(figures["errors"]),
        generator_cpu_seconds=cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    figures = uvloop.run(
        _load(
            args.url,
            {k.strip(): v.strip() for k, v in headers.items()},
            max(0.5, min(args.seconds, 120.0)),
            max(1, min(args.connections, 1024)),
            max(0.1, args.rate),
            max(0.0, min(args.warmup, 30.0)),
        )
    )
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
