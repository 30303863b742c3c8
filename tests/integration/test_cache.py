"""mesh.cache against a real Redis: hits, invalidation races, single flight, Redis down."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from mesh.cache import CacheSettings, NoCache, RedisCache, lazy_redis
from mesh.harness import BackingUrls, free_port

Loader = Callable[[], Awaitable[bytes | None]]


@pytest_asyncio.fixture
async def client(backing: BackingUrls) -> AsyncIterator[aioredis.Redis]:
    async with lazy_redis(backing.redis_url, 0.5) as redis:
        yield redis


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


class Source:
    """A loader that counts its calls and can be held back."""

    def __init__(self, value: bytes | None = b"v1") -> None:
        self.value = value
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self) -> bytes | None:
        self.calls += 1
        value = self.value  # what the database says when the read starts
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return value


async def test_miss_then_hit(client: aioredis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix)
    source = Source()
    assert await cache.get("k", source) == b"v1"
    assert await cache.get("k", source) == b"v1"
    assert source.calls == 1
    assert await client.get(f"{prefix}k") == b"0\x00v1"


async def test_invalidate_makes_the_next_read_load(client: aioredis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix)
    source = Source()
    await cache.get("k", source)
    source.value = b"v2"
    assert await cache.invalidate(["k:v"])
    assert await cache.get("k", source) == b"v2"
    assert await cache.get("k", source) == b"v2"
    assert source.calls == 2
    assert 0 < await client.pttl(f"{prefix}k:v") <= CacheSettings().version_ttl_seconds * 1000


async def test_shared_version_key_invalidates_a_group(client: aioredis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix)
    a, b = Source(b"a"), Source(b"b")
    await cache.get("list:1", a, version_key="lists")
    await cache.get("list:2", b, version_key="lists")
    await cache.invalidate(["lists"])
    await cache.get("list:1", a, version_key="lists")
    await cache.get("list:2", b, version_key="lists")
    assert (a.calls, b.calls) == (2, 2)


async def test_a_slow_loader_never_stores_a_value_older_than_an_invalidation(
    client: aioredis.Redis, prefix: str
) -> None:
    cache = RedisCache(client, prefix)
    source = Source(b"old")
    source.gate = asyncio.Event()
    slow_read = asyncio.create_task(cache.get("k", source))
    await source.started.wait()  # it has read "old" from the database
    source.value = b"new"  # a write commits ...
    await cache.invalidate(["k:v"])  # ... and invalidates before answering
    source.gate.set()
    assert await slow_read == b"old"  # that reader started before the write: fine
    source.gate = None
    assert await cache.get("k", source) == b"new"  # but "old" was not stored


async def test_a_read_after_an_invalidation_does_not_join_an_older_load(
    client: aioredis.Redis, prefix: str
) -> None:
    cache = RedisCache(client, prefix)
    source = Source(b"old")
    source.gate = asyncio.Event()
    slow_read = asyncio.create_task(cache.get("k", source))
    await source.started.wait()
    source.value = b"new"
    await cache.invalidate(["k:v"])
    fresh = Source(b"new")
    assert await asyncio.wait_for(cache.get("k", fresh), 2) == b"new"
    source.gate.set()
    await slow_read


async def test_concurrent_misses_share_one_load(client: aioredis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix)
    source = Source()
    source.gate = asyncio.Event()
    reads = [asyncio.create_task(cache.get("hot", source)) for _ in range(100)]
    await source.started.wait()
    await asyncio.sleep(0.05)
    source.gate.set()
    assert set(await asyncio.gather(*reads)) == {b"v1"}
    assert source.calls == 1


async def test_processes_share_one_load_through_the_lock(
    client: aioredis.Redis, prefix: str
) -> None:
    """Two caches (as two processes would have) miss together: one loads, one waits."""
    first, second = RedisCache(client, prefix), RedisCache(client, prefix)
    loader, waiter = Source(b"v"), Source(b"v")
    loader.gate = asyncio.Event()
    loading = asyncio.create_task(first.get("hot", loader))
    await loader.started.wait()
    waiting = asyncio.create_task(second.get("hot", waiter))
    await asyncio.sleep(0.05)
    loader.gate.set()
    assert await loading == await waiting == b"v"
    assert (loader.calls, waiter.calls) == (1, 0)


async def test_a_waiter_loads_itself_when_the_lock_holder_is_too_slow(
    client: aioredis.Redis, prefix: str
) -> None:
    settings = CacheSettings(lock_wait_seconds=0.05)
    first, second = RedisCache(client, prefix, settings), RedisCache(client, prefix, settings)
    stuck = Source(b"v")
    stuck.gate = asyncio.Event()
    hanging = asyncio.create_task(first.get("k", stuck))
    await stuck.started.wait()
    other = Source(b"v")
    assert await asyncio.wait_for(second.get("k", other), 1) == b"v"
    assert other.calls == 1
    stuck.gate.set()
    await hanging


async def test_nothing_is_cached_for_none(client: aioredis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix)
    source = Source(None)
    assert await cache.get("missing", source) is None
    assert await cache.get("missing", source) is None
    assert source.calls == 2
    assert await client.exists(f"{prefix}missing:lock:0") == 0


async def test_loader_errors_reach_every_waiter(client: aioredis.Redis, prefix: str) -> None:
    cache = RedisCache(client, prefix)

    async def broken() -> bytes:
        await asyncio.sleep(0.02)
        raise RuntimeError("database down")

    results = await asyncio.gather(
        *(cache.get("k", broken) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert cache.available  # a loader failure is not a Redis failure


async def test_redis_refusing_connections_falls_back_quickly() -> None:
    settings = CacheSettings(timeout_seconds=0.2, circuit_seconds=0.3)
    async with lazy_redis(f"redis://127.0.0.1:{free_port()}/0", 0.2) as dead:
        cache = RedisCache(dead, "x:", settings)
        source = Source()
        assert await cache.get("k", source) == b"v1"
        assert not cache.available
        started = time.perf_counter()
        for _ in range(100):
            assert await cache.get("k", source) == b"v1"
        assert time.perf_counter() - started < 0.2
        assert source.calls == 101
        assert not await cache.invalidate(["k:v"])
        await asyncio.sleep(0.35)
        assert cache.available  # the next read probes Redis again


async def test_a_hanging_redis_costs_one_short_timeout_per_circuit() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)  # accept, read, never answer

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = CacheSettings(timeout_seconds=0.1, circuit_seconds=5)
        async with lazy_redis(f"redis://127.0.0.1:{port}/0", 0.1) as hanging:
            cache = RedisCache(hanging, "x:", settings)
            source = Source()
            started = time.perf_counter()
            assert await cache.get("k", source) == b"v1"
            first = time.perf_counter() - started
            assert 0.09 < first < 1.0
            started = time.perf_counter()
            for _ in range(50):
                await cache.get("k", source)
            assert time.perf_counter() - started < 0.1
    finally:
        server.close()
        await server.wait_closed()


async def test_no_cache_always_loads() -> None:
    cache = NoCache()
    source = Source()
    await cache.get("k", source)
    await cache.get("k", source)
    assert source.calls == 2
    assert await cache.invalidate(["k:v"])
