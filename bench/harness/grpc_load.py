"""`GetProduct` straight at the catalog service from a Python grpc.aio client.

The baseline the gateway's read path is compared with: the same product, signed in (the
bearer token as metadata, as the gateway forwards it), over the same kind of channels as
the gateway's (a few, each with its own subchannel). `connections` calls are kept in flight
(closed loop), or with `--rate` each of them sends on a fixed schedule so that the total is
`rate` calls/s (paced: the latency at a given load, like ``hey -q``). It runs as its own
process, so it can be pinned and its CPU counted, and prints one JSON line.

    python -m bench.harness.grpc_load --address 127.0.0.1:50052 --product ID --token T \
        [--seconds 5] [--connections 64] [--rate 1000]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass

import grpc
import orjson
import uvloop

from bench.harness.cores import taskset
from bench.harness.pacing import run_paced
from bench.harness.procfs import run_child
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc


@dataclass(frozen=True)
class GrpcLoad:
    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    generator_cpu_seconds: float = 0.0


async def _load(
    address: str,
    product: str,
    token: str,
    seconds: float,
    connections: int,
    rate: float | None,
    channels: int,
    warmup: float,
) -> GrpcLoad:
    opened = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    stubs = [catalog_pb2_grpc.CatalogServiceStub(c) for c in opened]
    request = catalog_pb2.GetProductRequest(id=product)
    metadata = (("authorization", f"Bearer {token}"),)

    async def call(index: int) -> bool:
        try:
            await stubs[index % len(stubs)].GetProduct(request, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError:
            return False
        return True

    try:
        paced = await run_paced(call, seconds, connections, rate, warmup)
    finally:
        for channel in opened:
            await channel.close(None)
    return GrpcLoad(**paced.figures)


def get_product_load(
    address: str,
    product: str,
    token: str,
    seconds: float,
    *,
    connections: int = 64,
    rate: float | None = None,
    cpus: tuple[int, ...] = (),
    warmup: float = 0.0,
    channels: int = 2,
) -> GrpcLoad:
    """Run the client as a process (on `cpus`); its figures and the CPU it used."""
    argv = [sys.executable, "-m", "bench.harness.grpc_load", "--address", address]
    argv += ["--product", product, "--token", token, "--seconds", str(seconds)]
    argv += ["--connections", str(connections), "--channels", str(channels)]
    argv += ["--warmup", str(warmup)]
    if rate:
        argv += ["--rate", str(rate)]
    result, cpu = run_child(taskset(cpus, argv) if cpus else argv, seconds + warmup + 60)
    figures = orjson.loads(result.stdout.strip().splitlines()[-1])
    figures["generator_cpu_seconds"] = cpu
    return GrpcLoad(**figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--product", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=0.0)
    args = parser.parse_args()
    result = uvloop.run(
        _load(
            args.address,
            args.product,
            args.token,
            max(0.5, min(args.seconds, 120.0)),
            max(1, min(args.connections, 1024)),
            args.rate,
            max(1, min(args.channels, 16)),
            max(0.0, min(args.warmup, 30.0)),
        )
    )
    print(orjson.dumps(asdict(result)).decode())


if __name__ == "__main__":
    main()
