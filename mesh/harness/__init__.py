"""Backing services for local runs and tests: PostgreSQL, Redis and a MongoDB-wire server.

A configured URL (`MESH_POSTGRES_DSN`, `MESH_REDIS_URL`, `MESH_MONGO_URL`) is used as is and
nothing is started for it; each one left unconfigured is started as an embedded child
process with its data under `data_dir` (so it survives restarts) and its log in
`data_dir/logs/<name>.log`:

    config = BackingConfig.from_env(Env(), data_dir=Path(".mesh"))
    async with backing_services(config) as urls:
        ...  # urls.postgres_dsn, urls.redis_url, urls.mongo_url answer their protocol

The embedded servers need the optional `embedded` dependencies; production configures real
servers and never imports them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from mesh import topology
from mesh.harness.mongo import EmbeddedMongo
from mesh.harness.ports import PortInUse, free_port, port_is_free
from mesh.harness.postgres import EmbeddedPostgres
from mesh.harness.process import BackingStartError, EmbeddedServer
from mesh.harness.redis import EmbeddedRedis
from mesh.settings import Env

__all__ = [
    "BackingConfig",
    "BackingStartError",
    "BackingUrls",
    "EmbeddedMongo",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServer",
    "PortInUse",
    "backing_services",
    "embedded_servers",
    "free_port",
    "port_is_free",
]

logger = logging.getLogger("mesh.harness")


@dataclass(frozen=True, slots=True)
class BackingUrls:
    postgres_dsn: str  # server-level DSN, e.g. postgresql://postgres@127.0.0.1:15432/postgres
    redis_url: str  # e.g. redis://127.0.0.1:16379/0
    mongo_url: str  # e.g. mongodb://127.0.0.1:17017/?directConnection=true


@dataclass(frozen=True, slots=True)
class BackingConfig:
    """Which backing services to use, and where embedded ones keep their data."""

    data_dir: Path
    postgres_dsn: str | None = None  # configured: used as is, nothing started
    redis_url: str | None = None
    mongo_url: str | None = None
    host: str = "127.0.0.1"
    postgres_port: int = topology.EMBEDDED_POSTGRES_PORT
    redis_port: int = topology.EMBEDDED_REDIS_PORT
    mongo_port: int = topology.EMBEDDED_MONGO_PORT

    @classmethod
    def from_env(cls, env: Env, data_dir: Path) -> BackingConfig:
        """Read the URLs and embedded ports; a bad value raises SettingsError naming it."""
        return cls(
            data_dir=data_dir,
            postgres_dsn=env.url("MESH_POSTGRES_DSN", None, ("postgresql", "postgres")),
            redis_url=env.url("MESH_REDIS_URL", None, ("redis", "rediss")),
            mongo_url=env.url("MESH_MONGO_URL", None, ("mongodb", "mongodb+srv")),
            postgres_port=env.port("MESH_EMBEDDED_POSTGRES_PORT", topology.EMBEDDED_POSTGRES_PORT),
            redis_port=env.port("MESH_EMBEDDED_REDIS_PORT", topology.EMBEDDED_REDIS_PORT),
            mongo_port=env.port("MESH_EMBEDDED_MONGO_PORT", topology.EMBEDDED_MONGO_PORT),
        )


def embedded_servers(config: BackingConfig) -> list[EmbeddedServer]:
    """The embedded servers `config` needs (one per backing service without a URL)."""
    servers: list[EmbeddedServer] = []
    if config.postgres_dsn is None:
        servers.append(
            EmbeddedPostgres(config.data_dir, host=config.host, port=config.postgres_port)
        )
    if config.redis_url is None:
        servers.append(EmbeddedRedis(config.data_dir, host=config.host, port=config.redis_port))
    if config.mongo_url is None:
        servers.append(EmbeddedMongo(config.data_dir, host=config.host, port=config.mongo_port))
    return servers


async def _check_ports(servers: list[EmbeddedServer]) -> None:
    claimed: set[int] = set()
    for server in servers:
        await server.stop_stale()  # our own leftover from a killed run is not "in use"
        if server.port in claimed:
            raise PortInUse(server.name, server.host, server.port)
        server.check_port()
        claimed.add(server.port)


async def _stop_all(servers: list[EmbeddedServer]) -> None:
    results = await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
    for server, result in zip(servers, results, strict=True):
        if isinstance(result, Exception):
            logger.error("embedded %s: stop failed: %s", server.name, result)


@asynccontextmanager
async def backing_services(config: BackingConfig) -> AsyncIterator[BackingUrls]:
    """Start the embedded servers `config` needs, yield every URL, stop them on exit.

    The needed ports are checked first (PortInUse, nothing started); the servers then start
    concurrently and each is ready (answers its own protocol) before the URLs are yielded.
    If one fails, the others are stopped and its BackingStartError is raised. On exit each is
    stopped gracefully, and killed if it has not exited within 5 s.
    """
    servers = embedded_servers(config)
    await _check_ports(servers)
    by_name = {server.name: server for server in servers}
    try:
        results = await asyncio.gather(*(s.start() for s in servers), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for extra in errors[1:]:
            logger.error("%s", extra)
        if errors:
            raise errors[0]
        yield BackingUrls(
            postgres_dsn=config.postgres_dsn or by_name["postgres"].url,
            redis_url=config.redis_url or by_name["redis"].url,
            mongo_url=config.mongo_url or by_name["mongo"].url,
        )
    finally:
        await _stop_all(servers)
