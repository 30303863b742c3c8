"""mesh.stores measures its PostgreSQL pools while they are open (real PostgreSQL)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from mesh.harness import BackingUrls
from mesh.stores import postgres_pool


def connections(pool: str, state: str) -> float | None:
    return REGISTRY.get_sample_value("mesh_db_pool_connections", {"pool": pool, "state": state})


async def test_a_pool_reports_connections_in_use_idle_and_its_maximum(
    backing: BackingUrls,
) -> None:
    async with postgres_pool(
        backing.postgres_dsn, "MESH_POSTGRES_DSN", min_size=2, max_size=5, name="unit"
    ) as pool:
        assert REGISTRY.get_sample_value("mesh_db_pool_max_connections", {"pool": "unit"}) == 5
        assert (connections("unit", "in_use"), connections("unit", "idle")) == (0, 2)
        async with pool.acquire(), pool.acquire(), pool.acquire():
            assert connections("unit", "in_use") == 3
            assert connections("unit", "idle") == 0
        assert (connections("unit", "in_use"), connections("unit", "idle")) == (0, 3)
    assert connections("unit", "in_use") is None  # closed: no longer reported
