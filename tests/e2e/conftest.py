from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import aiohttp
import pytest

from mesh.harness import BackingUrls
from tests.e2e.mesh_process import MeshProcess, drop_mesh_databases, mesh_env, start_mesh

READY = "the mesh is ready"


@contextlib.contextmanager
def running_mesh(
    backing: BackingUrls, data_dir: Path, extra_env: Mapping[str, str] | None = None
) -> Iterator[MeshProcess]:
    """`mesh up` on free ports with the test session's PostgreSQL, Redis and MongoDB."""
    env, ports, ops_ports, namespace = mesh_env(
        {
            "MESH_POSTGRES_DSN": backing.postgres_dsn,
            "MESH_REDIS_URL": backing.redis_url,
            "MESH_MONGO_URL": backing.mongo_url,
            **(extra_env or {}),
        },
        data_dir,
    )
    running = start_mesh(env, ports, ops_ports, namespace, data_dir / "mesh-up.log")
    try:
        running.wait_for(READY, timeout=120)
        yield running
    finally:
        if running.process.poll() is None:
            running.stop()
        drop_mesh_databases(backing.postgres_dsn, namespace)


@pytest.fixture(scope="module")
def mesh(backing: BackingUrls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    with running_mesh(backing, tmp_path_factory.mktemp("mesh-data")) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent.name == "e2e":
            item.add_marker(pytest.mark.e2e)
