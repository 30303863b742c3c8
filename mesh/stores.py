"""Connecting to PostgreSQL, Redis and MongoDB at start, failing fast with one clear line.

Each opener checks the server really answers (a query, PING, `ping`) within a short
timeout; on failure it raises `StartupError` naming the variable that holds the URL, with
the password redacted. Every opener is an async context manager that closes what it opened.

PostgreSQL pools are measured while open: ``mesh_db_pool_connections{pool, state}`` (state
``in_use`` or ``idle``) and ``mesh_db_pool_max_connections{pool}``, read from the pools
when Prometheus scrapes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pymongo import AsyncMongoClient

from mesh.netbind import StartupError
from mesh.settings import redact_url

CONNECT_TIMEOUT_SECONDS = 5.0
REDIS_MAX_CONNECTIONS = 100


class PoolCollector(Collector):
    """The open PostgreSQL pools' connections, by pool name, read at scrape time."""

    def __init__(self) -> None:
        self._pools: dict[str, asyncpg.Pool] = {}

    def add(self, name: str, pool: asyncpg.Pool) -> None:
        self._pools[name] = pool

    def remove(self, name: str, pool: asyncpg.Pool) -> None:
        if self._pools.get(name) is pool:
            del self._pools[name]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        connections = GaugeMetricFamily(
            "mesh_db_pool_connections",
            "PostgreSQL pool connections, in use (lent out) or idle.",
            labels=["pool", "state"],
        )
        maximum = GaugeMetricFamily(
            "mesh_db_pool_max_connections",
            "The most connections a PostgreSQL pool opens.",
            labels=["pool"],
        )
        for name, pool in list(self._pools.items()):
            idle = pool.get_idle_size()
            connections.add_metric([name, "in_use"], pool.get_size() - idle)
            connections.add_metric([name, "idle"], idle)
            maximum.add_metric([name], pool.get_max_size())
        yield connections
        yield maximum


POOLS: Final = PoolCollector()
REGISTRY.register(POOLS)


def _unreachable(variable: str, url: str, exc: BaseException) -> StartupError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StartupError(f"{variable}: cannot connect to {redact_url(url)}: {reason}")


@asynccontextmanager
async def postgres_pool(
    dsn: str,
    variable: str,
    *,
    min_size: int = 2,
    max_size: int = 10,
    reset_on_release: bool = True,
    name: str = "postgres",
) -> AsyncIterator[asyncpg.Pool]:
    """A pool of `min_size` to `max_size` connections, measured as `name`.

    `reset_on_release=False` skips asyncpg's reset query (RESET ALL, UNLISTEN, advisory
    unlock...) when a connection goes back to the pool: one round trip less per use, for
    code that leaves no session state behind (an open transaction is still rolled back).
    """
    try:
        pool = await asyncio.wait_for(
            asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                reset=None if reset_on_release else _keep_session,
            ),
            CONNECT_TIMEOUT_SECONDS * 2,
        )
    except (OSError, asyncpg.PostgresError, TimeoutError, ValueError) as exc:
        raise _unreachable(variable, dsn, exc) from None
    POOLS.add(name, pool)
    try:
        yield pool
    finally:
        POOLS.remove(name, pool)
        await pool.close()


async def _keep_session(connection: asyncpg.Connection) -> None:
    """A pool reset that keeps the session as it is (asyncpg still ends a transaction)."""


@asynccontextmanager
async def redis_client(url: str, variable: str) -> AsyncIterator[aioredis.Redis]:
    # A pool that waits for a free connection (up to the timeout) rather than failing with
    # "Too many connections" during a burst.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_MAX_CONNECTIONS,
        timeout=CONNECT_TIMEOUT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        health_check_interval=30,
    )
    client: aioredis.Redis = aioredis.Redis.from_pool(pool)
    try:
        try:
            await asyncio.wait_for(client.ping(), CONNECT_TIMEOUT_SECONDS)
        except (OSError, aioredis.RedisError, TimeoutError) as exc:
            raise _unreachable(variable, url, exc) from None
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def mongo_client(url: str, variable: str) -> AsyncIterator[AsyncMongoClient[Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(
        url, serverSelectionTimeoutMS=int(CONNECT_TIMEOUT_SECONDS * 1000), tz_aware=True
    )
    try:
        try:
            await client.admin.command("ping")
        except Exception as exc:  # pymongo raises several families here
            raise _unreachable(variable, url, exc) from None
        yield client
    finally:
        await client.close()


async def postgres_ready(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT 1") == 1)


async def redis_ready(client: aioredis.Redis) -> bool:
    return bool(await client.ping())


async def mongo_ready(client: AsyncMongoClient[Any]) -> bool:
    reply = await client.admin.command("ping")
    return bool(reply.get("ok"))
