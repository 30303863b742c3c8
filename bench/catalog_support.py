"""What the catalog scenarios share: backing stores, the users and catalog processes, load.

`catalog_processes()` migrates a fresh namespace on the configured PostgreSQL/Redis
(MESH_POSTGRES_DSN / MESH_REDIS_URL, else embedded servers under a temporary directory),
starts the real users service (for its JWK Set) and the real catalog service as child
processes on free loopback ports (`python -m services.users`, `python -m services.catalog`),
waits until they are ready, and on exit stops them (SIGTERM), drops the databases and deletes
the namespace's Redis keys. Every load loop is bounded in requests and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.harness.procfs import cpu_seconds
from bench.harness.stats import percentile
from mesh.auth.keys import load_or_create_keys
from mesh.auth.tokens import TokenIssuer, TokenSettings
from mesh.harness import BackingConfig, BackingUrls, backing_services, free_port
from mesh.migrate import POSTGRES_SERVICES, migrate_all
from mesh.settings import Env, with_database
from mesh.topology import CATALOG, USERS, ProcessSpec
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc


@dataclass
class Process:
    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    address: str

    def cpu(self) -> float:
        return cpu_seconds(self.popen.pid)


@dataclass
class CatalogBench:
    backing: BackingUrls
    namespace: str
    catalog: Process
    users: Process
    issuer: TokenIssuer
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def catalog_dsn(self) -> str:
        return with_database(self.backing.postgres_dsn, f"{self.namespace}catalog")

    def bearer(self, user_id: str | None = None, roles: Sequence[str] = ("user",)) -> str:
        return f"Bearer {self.issuer.issue(user_id or str(uuid.uuid4()), list(roles))}"

    def admin(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", self.bearer(roles=("user", "admin"))),)


@contextlib.asynccontextmanager
async def backing() -> AsyncIterator[BackingUrls]:
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as data_dir:
        config = BackingConfig.from_env(Env(), Path(data_dir))
        config = BackingConfig(
            data_dir=config.data_dir,
            postgres_dsn=config.postgres_dsn,
            redis_url=config.redis_url,
            mongo_url=config.mongo_url or "mongodb://127.0.0.1:1/",  # not used here
            postgres_port=free_port(),
            redis_port=free_port(),
        )
        async with backing_services(config) as urls:
            yield urls


async def wait_serving(address: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"process exited with {process.returncode}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{address} did not become ready")


def start(spec: ProcessSpec, env: dict[str, str]) -> Process:
    port = free_port()
    full = {
        **os.environ,
        "MESH_LOG_LEVEL": "warning",
        "OTEL_TRACES_SAMPLER_ARG": "0",
        spec.port_var: str(port),
        spec.ops_port_var: str(free_port()),
        **env,
    }
    popen = subprocess.Popen([sys.executable, "-m", spec.module], env=full)
    return Process(spec, popen, f"127.0.0.1:{port}")


def stop(process: Process) -> None:
    if process.popen.poll() is None:
        process.popen.send_signal(signal.SIGTERM)
        try:
            process.popen.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()


async def drop(urls: BackingUrls, namespace: str) -> None:
    connection = await asyncpg.connect(urls.postgres_dsn)
    try:
        for service in POSTGRES_SERVICES:
            await connection.execute(f'DROP DATABASE IF EXISTS "{namespace}{service}" WITH (FORCE)')
    finally:
        await connection.close()
    client = aioredis.Redis.from_url(urls.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{namespace}*", count=1000)]
        for start_at in range(0, len(keys), 1000):
            await client.delete(*keys[start_at : start_at + 1000])
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def catalog_processes(
    catalog_env: dict[str, str] | None = None,
    prepare: Callable[[BackingUrls, str], Awaitable[None]] | None = None,
) -> AsyncIterator[CatalogBench]:
    """Users + catalog on a fresh namespace; `prepare(urls, namespace)` runs before start."""
    async with backing() as urls:
        namespace = f"bench{uuid.uuid4().hex[:6]}_"
        await migrate_all(urls.postgres_dsn, namespace)
        keys_dir = Path(tempfile.mkdtemp(prefix="mesh-bench-keys-"))
        issuer = TokenIssuer(load_or_create_keys(keys_dir), TokenSettings())
        stores = {
            "MESH_POSTGRES_DSN": urls.postgres_dsn,
            "MESH_REDIS_URL": urls.redis_url,
            "MESH_MONGO_URL": urls.mongo_url,
            "MESH_NAMESPACE": namespace,
        }
        processes: list[Process] = []
        try:
            if prepare is not None:
                await prepare(urls, namespace)
            users = start(USERS, {**stores, "MESH_USERS_SIGNING_KEYS_DIR": str(keys_dir)})
            processes.append(users)
            await wait_serving(users.address, users.popen, 60)
            catalog = start(
                CATALOG, {**stores, "MESH_USERS_ADDR": users.address, **(catalog_env or {})}
            )
            processes.append(catalog)
            await wait_serving(catalog.address, catalog.popen, 60)
            yield CatalogBench(urls, namespace, catalog, users, issuer)
        finally:
            for process in reversed(processes):
                stop(process)
            await drop(urls, namespace)


@contextlib.asynccontextmanager
async def stubs(address: str, channels: int = 4) -> AsyncIterator[list[Any]]:
    opened = [
        grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(channels)
    ]
    try:
        yield [catalog_pb2_grpc.CatalogServiceStub(c) for c in opened]
    finally:
        for channel in opened:
            await channel.close(None)


def latency_line(samples: Sequence[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"p50 {percentile(ms, 0.5):.2f} ms, p95 {percentile(ms, 0.95):.2f} ms, "
        f"p99 {percentile(ms, 0.99):.2f} ms, mean {statistics.fmean(ms):.2f} ms"
    )


async def create_product(stub: Any, bench: CatalogBench, **fields: Any) -> Any:
    product = catalog_pb2.Product(
        sku=f"BENCH-{uuid.uuid4().hex[:12]}",
        name=fields.pop("name", "Bench kettle"),
        price_cents=fields.pop("price_cents", 1999),
        currency="EUR",
        category=fields.pop("category", "bench"),
        **fields,
    )
    return await stub.CreateProduct(
        catalog_pb2.CreateProductRequest(product=product), metadata=bench.admin()
    )
