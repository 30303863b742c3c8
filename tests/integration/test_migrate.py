"""Migrations against a real PostgreSQL: applied once, recorded, concurrent-safe, atomic."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
import pytest_asyncio

from mesh.harness import BackingUrls
from mesh.migrate import (
    POSTGRES_SERVICES,
    TABLE,
    Migration,
    MigrationError,
    database_name,
    ensure_database,
    migrate,
    migrate_all,
)
from mesh.settings import with_database
from tests.conftest import drop_database

MigrationsPackage = Callable[[dict[str, str]], str]

CREATE = Migration.from_sql(
    1, "create_items", "CREATE TABLE items (id int PRIMARY KEY, note text);"
)
SEED = Migration.from_sql(2, "seed_items", "INSERT INTO items VALUES (1, 'first');")


async def fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()


async def recorded(dsn: str) -> list[tuple[int, str, str]]:
    rows = await fetch(dsn, f"SELECT version, name, checksum FROM {TABLE} ORDER BY version")
    return [(r["version"], r["name"], r["checksum"]) for r in rows]


@pytest_asyncio.fixture
async def scratch_databases(backing: BackingUrls) -> AsyncIterator[list[str]]:
    """Names a test creates through the code under test; dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        await drop_database(backing.postgres_dsn, name)


async def test_applies_once_and_records(pg_database: str) -> None:
    assert await migrate(pg_database, [CREATE, SEED]) == [1, 2]

    assert await recorded(pg_database) == [
        (1, "create_items", CREATE.checksum),
        (2, "seed_items", SEED.checksum),
    ]
    assert [tuple(r) for r in await fetch(pg_database, "SELECT id, note FROM items")] == [
        (1, "first")
    ]


async def test_second_run_applies_nothing(pg_database: str) -> None:
    await migrate(pg_database, [CREATE, SEED])

    assert await migrate(pg_database, [CREATE, SEED]) == []
    assert len(await recorded(pg_database)) == 2
    assert len(await fetch(pg_database, "SELECT * FROM items")) == 1  # the seed ran once


async def test_new_migration_is_applied_on_top(pg_database: str) -> None:
    await migrate(pg_database, [CREATE])
    third = Migration.from_sql(3, "more", "INSERT INTO items VALUES (3, 'third');")

    assert await migrate(pg_database, [CREATE, SEED, third]) == [2, 3]
    assert [r["id"] for r in await fetch(pg_database, "SELECT id FROM items ORDER BY id")] == [1, 3]


async def test_concurrent_migrators_apply_each_once(pg_database: str) -> None:
    slow = Migration.from_sql(
        2, "slow_seed", "SELECT pg_sleep(0.3); INSERT INTO items VALUES (2, 'slow');"
    )
    migrations = [CREATE, slow]

    results = await asyncio.gather(
        migrate(pg_database, migrations), migrate(pg_database, migrations)
    )

    assert sorted(results) == [[], [1, 2]]
    assert [v for v, _, _ in await recorded(pg_database)] == [1, 2]
    assert [r["id"] for r in await fetch(pg_database, "SELECT id FROM items ORDER BY id")] == [2]


async def test_ensure_database_raced_succeeds(
    backing: BackingUrls, namespace: str, scratch_databases: list[str]
) -> None:
    name = database_name("race", namespace)
    scratch_databases.append(name)

    created = await asyncio.gather(*(ensure_database(backing.postgres_dsn, name) for _ in range(3)))

    assert sorted(created) == [False, False, True]
    rows = await fetch(
        backing.postgres_dsn, f"SELECT datname FROM pg_database WHERE datname = '{name}'"
    )
    assert len(rows) == 1
    assert await ensure_database(backing.postgres_dsn, name) is False


async def test_changed_applied_migration_is_refused(pg_database: str) -> None:
    await migrate(pg_database, [CREATE])
    edited = Migration.from_sql(1, "create_items", "CREATE TABLE items (id bigint PRIMARY KEY);")

    with pytest.raises(MigrationError, match="0001_create_items was changed"):
        await migrate(pg_database, [edited, SEED])

    assert await recorded(pg_database) == [(1, "create_items", CREATE.checksum)]
    assert await fetch(pg_database, "SELECT * FROM items") == []  # SEED did not run


async def test_failing_migration_rolls_back_entirely(pg_database: str) -> None:
    broken = Migration.from_sql(
        2,
        "broken",
        "CREATE TABLE partial (a int); INSERT INTO items VALUES (9, 'x'); SELECT 1 / 0;",
    )

    with pytest.raises(MigrationError, match="0002_broken failed") as error:
        await migrate(pg_database, [CREATE, broken])
    assert isinstance(error.value.__cause__, asyncpg.DivisionByZeroError)

    assert [v for v, _, _ in await recorded(pg_database)] == [1]
    state = await fetch(pg_database, "SELECT to_regclass('partial') AS t, count(*) AS n FROM items")
    assert state[0]["t"] is None
    assert state[0]["n"] == 0
    fixed = Migration.from_sql(2, "fixed", "CREATE TABLE partial (a int);")
    assert await migrate(pg_database, [CREATE, fixed]) == [2]


async def test_missing_earlier_version_is_refused(pg_database: str) -> None:
    await migrate(pg_database, [CREATE])
    connection = await asyncpg.connect(pg_database)
    try:  # a database where 0003 got applied but not 0002 (a renumbered file)
        await connection.execute(f"INSERT INTO {TABLE} VALUES (3, 'later', 'x')")
    finally:
        await connection.close()
    third = Migration(3, "later", "SELECT 1;", "x")

    with pytest.raises(MigrationError, match="0002_seed_items is missing but later version 0003"):
        await migrate(pg_database, [CREATE, SEED, third])


async def test_migrate_all_creates_and_migrates_each_database(
    backing: BackingUrls,
    namespace: str,
    migrations_package: MigrationsPackage,
    scratch_databases: list[str],
) -> None:
    services = {
        "alpha": migrations_package(
            {
                "0001_create.sql": "CREATE TABLE a (x int);",
                "0002_seed.sql": "INSERT INTO a VALUES (7);",
            }
        ),
        "beta": migrations_package({"0001_create.sql": "CREATE TABLE b (y int);"}),
    }
    scratch_databases += [database_name(s, namespace) for s in services]

    first = await migrate_all(backing.postgres_dsn, namespace, services=services)
    second = await migrate_all(backing.postgres_dsn, namespace, services=services)

    assert first == {"alpha": [1, 2], "beta": [1]}
    assert second == {"alpha": [], "beta": []}
    alpha = with_database(backing.postgres_dsn, f"{namespace}alpha")
    assert [r["x"] for r in await fetch(alpha, "SELECT x FROM a")] == [7]
    beta = with_database(backing.postgres_dsn, f"{namespace}beta")
    assert [v for v, _, _ in await recorded(beta)] == [1]


def importable(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(
    not all(importable(p) for p in POSTGRES_SERVICES.values()),
    reason="the services' migration packages are not written yet",
)
async def test_migrate_all_applies_the_services_migrations(
    backing: BackingUrls, namespace: str, scratch_databases: list[str]
) -> None:
    scratch_databases += [database_name(s, namespace) for s in POSTGRES_SERVICES]

    applied = await migrate_all(backing.postgres_dsn, namespace)

    assert set(applied) == set(POSTGRES_SERVICES)
    for service, versions in applied.items():
        assert versions, f"{service} has no migrations"
        dsn = with_database(backing.postgres_dsn, database_name(service, namespace))
        assert [v for v, _, _ in await recorded(dsn)] == versions
    assert await migrate_all(backing.postgres_dsn, namespace) == {s: [] for s in POSTGRES_SERVICES}
