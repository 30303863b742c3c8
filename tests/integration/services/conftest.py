"""Running a real service process's `serve` in the test's event loop, on free ports, against
real stores (the `backing` fixture), with its databases migrated in a fresh namespace."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from mesh.backing_settings import StoreUrls
from mesh.common import CommonSettings
from mesh.harness import BackingUrls, free_port
from mesh.lifecycle import Lifecycle
from mesh.migrate import POSTGRES_SERVICES, migrate_all
from mesh.settings import Env
from mesh.topology import ProcessSpec


@dataclass
class RunningService:
    address: str
    ops_port: int
    lifecycle: Lifecycle
    stores: StoreUrls
    token: str = ""  # an access token for calls to it, where a test signs one in


@pytest.fixture
async def stores(backing: BackingUrls) -> AsyncIterator[StoreUrls]:
    namespace = f"t{uuid.uuid4().hex[:8]}_"
    urls = StoreUrls(backing.postgres_dsn, backing.redis_url, backing.mongo_url, namespace)
    await migrate_all(backing.postgres_dsn, namespace)
    yield urls
    connection = await asyncpg.connect(backing.postgres_dsn)
    try:
        for service in POSTGRES_SERVICES:
            await connection.execute(
                f'DROP DATABASE IF EXISTS "{urls.database_name(service)}" WITH (FORCE)'
            )
    finally:
        await connection.close()


def common_settings(spec: ProcessSpec, env: Mapping[str, str] | None = None) -> CommonSettings:
    return CommonSettings.from_env(
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


@contextlib.asynccontextmanager
async def run_service(
    spec: ProcessSpec,
    settings: Any,
    serve: Callable[[CommonSettings, Any, Lifecycle], Awaitable[None]],
    stores: StoreUrls,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[RunningService]:
    """`serve` on free ports; `env` adds settings (e.g. MESH_USERS_ADDR of a running users)."""
    common = common_settings(spec, env)
    lifecycle = Lifecycle()
    task = asyncio.create_task(serve(common, settings, lifecycle))
    for _ in range(200):
        if lifecycle.ready or task.done():
            break
        await asyncio.sleep(0.05)
    if task.done():
        task.result()  # raises the start-up error
    assert lifecycle.ready, f"{spec.name} did not become ready"
    try:
        yield RunningService(f"{common.host}:{common.port}", common.ops_port, lifecycle, stores)
    finally:
        lifecycle.request_stop()
        await asyncio.wait_for(task, 10)
