"""The catalog tests' stack: the real users service (token keys) and the real catalog service,
in-process on free ports, against real PostgreSQL and Redis in a fresh namespace."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import redis.asyncio as aioredis

from mesh.auth.keys import load_or_create_keys
from mesh.auth.tokens import TokenIssuer, TokenSettings
from mesh.backing_settings import StoreUrls
from mesh.common import CommonSettings
from mesh.errors import ErrorDetails, details_from_trailers
from mesh.harness import BackingUrls, free_port
from mesh.lifecycle import Lifecycle
from mesh.migrate import POSTGRES_SERVICES, migrate_all
from mesh.outbox import events_stream
from mesh.settings import Env
from mesh.topology import CATALOG, USERS, ProcessSpec
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.catalog.server import serve as serve_catalog
from services.catalog.settings import CatalogSettings
from services.users.server import serve as serve_users
from services.users.settings import SIGNING_KEYS_DIR_VAR, UsersSettings

Metadata = tuple[tuple[str, str], ...]
ADMIN_ID = "00000000-0000-4000-8000-00000000a0a0"


@dataclasses.dataclass
class Running:
    address: str
    lifecycle: Lifecycle
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running(
    spec: ProcessSpec,
    settings: Any,
    serve: Callable[[CommonSettings, Any, Lifecycle], Awaitable[None]],
    env: dict[str, str] | None = None,
) -> AsyncIterator[Running]:
    """`serve` in this event loop on free ports, with extra environment for its common
    settings (e.g. MESH_USERS_ADDR); stopped gracefully on exit."""
    common = CommonSettings.from_env(
        Env(
            {
                spec.port_var: str(free_port()),
                spec.ops_port_var: str(free_port()),
                "MESH_SHUTDOWN_GRACE_SECONDS": "1",
                **(env or {}),
            }
        ),
        spec,
    )
    lifecycle = Lifecycle()
    task = asyncio.create_task(serve(common, settings, lifecycle))
    for _ in range(400):
        if lifecycle.ready or task.done():
            break
        await asyncio.sleep(0.025)
    if task.done():
        task.result()
    assert lifecycle.ready, f"{spec.name} did not become ready"
    try:
        yield Running(f"{common.host}:{common.port}", lifecycle, task)
    finally:
        lifecycle.request_stop()
        await asyncio.wait_for(task, 15)


@dataclasses.dataclass
class CatalogStack:
    stores: StoreUrls
    address: str
    users_address: str
    issuer: TokenIssuer

    @property
    def dsn(self) -> str:
        return self.stores.postgres_for("catalog")

    @property
    def stream(self) -> str:
        return events_stream(self.stores.namespace)

    def token(self, user_id: str | None = None, roles: tuple[str, ...] = ("user",)) -> str:
        return self.issuer.issue(user_id or str(uuid.uuid4()), roles)

    def user(self, user_id: str | None = None) -> Metadata:
        return (("authorization", f"Bearer {self.token(user_id)}"),)

    def admin(self) -> Metadata:
        return (("authorization", f"Bearer {self.token(ADMIN_ID, ('user', 'admin'))}"),)

    @contextlib.asynccontextmanager
    async def replica(self, **overrides: Any) -> AsyncIterator[str]:
        """Another catalog process on the same stores (e.g. a second replica)."""
        settings = dataclasses.replace(CatalogSettings(stores=self.stores), **overrides)
        async with running(
            CATALOG, settings, serve_catalog, {"MESH_USERS_ADDR": self.users_address}
        ) as replica:
            yield replica.address


async def drop_stores(backing: BackingUrls, stores: StoreUrls) -> None:
    connection = await asyncpg.connect(backing.postgres_dsn)
    try:
        for service in POSTGRES_SERVICES:
            await connection.execute(
                f'DROP DATABASE IF EXISTS "{stores.database_name(service)}" WITH (FORCE)'
            )
    finally:
        await connection.close()
    client = aioredis.Redis.from_url(stores.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{stores.namespace}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def catalog_stack(
    backing: BackingUrls, keys_dir: Path, **overrides: Any
) -> AsyncIterator[CatalogStack]:
    """Users (for its JWKS) and catalog, migrated in a fresh namespace; dropped afterwards."""
    namespace = f"t{uuid.uuid4().hex[:8]}_"
    stores = StoreUrls(backing.postgres_dsn, backing.redis_url, backing.mongo_url, namespace)
    await migrate_all(backing.postgres_dsn, namespace)
    keys = load_or_create_keys(keys_dir)
    users_settings = dataclasses.replace(
        UsersSettings.from_env(Env({SIGNING_KEYS_DIR_VAR: str(keys_dir)})), stores=stores
    )
    try:
        async with running(USERS, users_settings, serve_users) as users:
            settings = dataclasses.replace(CatalogSettings(stores=stores), **overrides)
            async with running(
                CATALOG, settings, serve_catalog, {"MESH_USERS_ADDR": users.address}
            ) as catalog:
                yield CatalogStack(
                    stores, catalog.address, users.address, TokenIssuer(keys, TokenSettings())
                )
    finally:
        await drop_stores(backing, stores)


@contextlib.asynccontextmanager
async def catalog_client(address: str) -> AsyncIterator[catalog_pb2_grpc.CatalogServiceStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)


def error_details(error: grpc.aio.AioRpcError) -> ErrorDetails:
    return details_from_trailers(error.trailing_metadata())  # type: ignore[arg-type]


def fields_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [e.field for e in error_details(error).field_errors]


def new_product(**overrides: Any) -> catalog_pb2.Product:
    values: dict[str, Any] = {
        "sku": f"SKU-{uuid.uuid4().hex[:10]}",
        "name": "Cast iron tea pot",
        "description": "Keeps tea hot for an hour.",
        "price_cents": 2599,
        "currency": "EUR",
        "category": "kitchen",
        "stock": 10,
        **overrides,
    }
    attributes = values.pop("attributes", {"colour": "black", "litres": 1.2})
    product = catalog_pb2.Product(**values)
    product.attributes.update(attributes)
    return product


async def create(
    stub: catalog_pb2_grpc.CatalogServiceStub, admin: Metadata, **overrides: Any
) -> catalog_pb2.Product:
    return await stub.CreateProduct(
        catalog_pb2.CreateProductRequest(product=new_product(**overrides)), metadata=admin
    )


async def stream_events(
    stack: CatalogStack, timeout: float = 5.0, want: int = 1
) -> list[dict[str, str]]:
    """The stream's entries, waiting until at least `want` are there."""
    client = aioredis.Redis.from_url(stack.stores.redis_url, decode_responses=True)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            entries = await client.xrange(stack.stream)
            if len(entries) >= want or asyncio.get_running_loop().time() > deadline:
                return [fields for _, fields in entries]
            await asyncio.sleep(0.05)
    finally:
        await client.aclose()
