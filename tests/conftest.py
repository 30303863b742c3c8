"""Shared fixtures: the backing services, fresh databases and unique name prefixes.

`backing` uses MESH_POSTGRES_DSN / MESH_REDIS_URL / MESH_MONGO_URL when set (CI sets the
machine's PostgreSQL and Redis) and otherwise starts embedded servers once per session, on
free ports, under a session temporary directory.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from mesh.harness import BackingConfig, BackingUrls, backing_services, free_port
from mesh.migrate import quote_identifier
from mesh.settings import Env, with_database


@pytest_asyncio.fixture(scope="session")
async def backing(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[BackingUrls]:
    configured = BackingConfig.from_env(Env(), tmp_path_factory.mktemp("backing"))
    config = BackingConfig(
        data_dir=configured.data_dir,
        postgres_dsn=configured.postgres_dsn,
        redis_url=configured.redis_url,
        mongo_url=configured.mongo_url,
        postgres_port=free_port(),
        redis_port=free_port(),
        mongo_port=free_port(),
    )
    async with backing_services(config) as urls:
        yield urls


@pytest.fixture
def namespace() -> str:
    """A unique short prefix for database names and Redis keys, e.g. "t3f9a1c_"."""
    return f"t{secrets.token_hex(3)}_"


async def drop_database(server_dsn: str, name: str) -> None:
    connection = await asyncpg.connect(server_dsn)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)")
    finally:
        await connection.close()


@pytest_asyncio.fixture
async def pg_database(backing: BackingUrls) -> AsyncIterator[str]:
    """The DSN of a freshly created, uniquely named database; dropped afterwards."""
    name = f"t_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(backing.postgres_dsn)
    try:
        await connection.execute(f"CREATE DATABASE {quote_identifier(name)}")
    finally:
        await connection.close()
    try:
        yield with_database(backing.postgres_dsn, name)
    finally:
        await drop_database(backing.postgres_dsn, name)


MigrationsPackage = Callable[[dict[str, str]], str]


@pytest.fixture
def migrations_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MigrationsPackage:
    """Factory: write `{file name: content}` into a new importable package; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(files: dict[str, str]) -> str:
        name = f"migrations_{secrets.token_hex(4)}"
        package = tmp_path / name
        package.mkdir()
        (package / "__init__.py").write_text("")
        for file_name, content in files.items():
            (package / file_name).write_text(content)
        return name

    return make
