"""Cache-aside in Redis: versioned keys, one loader per key, and PostgreSQL when Redis is not.

`RedisCache.get(key, load)` answers from Redis when it can and otherwise calls `load` (a
read from the database), storing what it returns. Writers call `invalidate(key)` after
their transaction commits and before they answer, so a read that starts after a successful
write - in any process - never gets the old value:

* Versions. Each value is stored tagged with the version of its *version key* (``<key>:v``
  by default; a shared one such as "lists" for values that any write can change), and a
  hit needs the tag to equal the current version. `invalidate` increments the version
  (INCR), which makes every value tagged with the old one unreachable at once. A loader
  stores its result with a Lua script that compares the version it read *before* loading
  with the current one, so a slow loader that read the database before a write can never
  put the old value back after the write's invalidation (the race of plain delete-on-write).
* Stampedes. Concurrent misses of the same key and version in one process share one load
  (single-flight); across processes a short lock (``SET NX PX``, per key and version) lets
  one process load while the others poll for its value for up to `lock_wait_seconds`, then
  load themselves. A reader that sees a newer version never joins an older load.
* Redis down. The client has a short socket timeout and no retries; the first failure opens
  a circuit for `circuit_seconds`, during which every read goes straight to `load` without
  touching Redis (no per-request timeout), then the next request probes Redis again. Reads
  keep working from the database, and nothing is shared or cached meanwhile.

Key layout (``prefix`` is e.g. ``"<namespace>catalog:"``): the value at ``prefix + key``
holds ``b"<version>\\x00<payload>"``; versions at ``prefix + version_key``; loader locks at
``prefix + key + ":lock:" + version``. Version keys expire `version_ttl_seconds` after the last
write or store under them (always longer than any value tagged with them lives). Use a
``volatile-*`` eviction policy (or none) so that Redis never evicts a version key under
memory pressure while values stay.

When a write's invalidation cannot reach Redis, the writer's circuit opens (it stops reading
the cache) and the caller should invalidate again later; the catalog does it from its outbox
relay, which re-invalidates every changed key before publishing the change's event.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("mesh.cache")

Loader = Callable[[], Awaitable[bytes | None]]

CACHE_REQUESTS: Final = Counter(
    "mesh_cache_requests_total",
    "Cache-aside reads by outcome: hit, miss (loaded, then stored), bypass (Redis unavailable).",
    ["cache", "result"],
)
CACHE_ERRORS: Final = Counter(
    "mesh_cache_redis_errors_total",
    "Redis failures seen by the cache (each opens the circuit).",
    ["cache"],
)

_SEPARATOR: Final = b"\x00"
_NO_VERSION: Final = b"0"
# Store a loaded value only if its version key still holds the version read before loading;
# then (always) release the loader lock if it is still ours.
_STORE: Final = """
local current = redis.call('GET', KEYS[2]) or '0'
local stored = 0
if current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  if current ~= '0' then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
  stored = 1
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[3]) == ARGV[4] then redis.call('DEL', KEYS[3]) end
return stored
"""
_REDIS_FAILURES: Final = (RedisError, OSError, TimeoutError)


class ReadCache(Protocol):
    """What a service needs from a read cache (so that it can run without one)."""

    async def get(self, key: str, load: Loader, *, version_key: str | None = None) -> bytes | None:
        """The payload for `key`, from the cache or from `load` (None: nothing to cache)."""
        ...

    async def invalidate(self, version_keys: Iterable[str]) -> bool:
        """Make every value under `version_keys` stale; False if Redis could not be told."""
        ...


class NoCache:
    """Every read loads; for a cache switched off (benchmarks, a single-use process)."""

    async def get(self, key: str, load: Loader, *, version_key: str | None = None) -> bytes | None:
        return await load()

    async def invalidate(self, version_keys: Iterable[str]) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class CacheSettings:
    ttl_seconds: float = 300.0
    # Redis socket timeout: a Redis that hangs costs a read at most this, once per circuit.
    timeout_seconds: float = 0.25
    circuit_seconds: float = 5.0
    lock_seconds: float = 2.0
    lock_wait_seconds: float = 0.25

    @property
    def version_ttl_seconds(self) -> float:
        return 2 * self.ttl_seconds + self.lock_seconds


@asynccontextmanager
async def lazy_redis(url: str, timeout_seconds: float) -> AsyncIterator[aioredis.Redis]:
    """A Redis client with short timeouts and no retries (the caller decides what to do).

    It connects when first used, so a process can start and serve while Redis is down
    (unlike `mesh.stores.redis_client`, which fails start-up).
    """
    client: aioredis.Redis = aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        yield client
    finally:
        await client.aclose()


class RedisCache:
    """Cache-aside over one Redis (see the module docstring). Create inside the event loop."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        settings: CacheSettings = CacheSettings(),
        *,
        name: str = "default",
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._settings = settings
        self._ttl_ms = max(1, int(settings.ttl_seconds * 1000))
        self._lock_ms = max(1, int(settings.lock_seconds * 1000))
        self._version_ttl_ms = max(1, int(settings.version_ttl_seconds * 1000))
        self._store = client.register_script(_STORE)
        self._flights: dict[tuple[str, bytes], asyncio.Future[bytes | None]] = {}
        self._open_until = 0.0
        self._name = name
        self._hits = CACHE_REQUESTS.labels(name, "hit")
        self._misses = CACHE_REQUESTS.labels(name, "miss")
        self._bypasses = CACHE_REQUESTS.labels(name, "bypass")
        self._errors = CACHE_ERRORS.labels(name)

    @property
    def available(self) -> bool:
        """False while the circuit is open (Redis failed recently)."""
        return time.monotonic() >= self._open_until

    async def get(self, key: str, load: Loader, *, version_key: str | None = None) -> bytes | None:
        if not self.available:
            self._bypasses.inc()
            return await load()
        value_key = self._prefix + key
        versions_key = self._prefix + (version_key or f"{key}:v")
        try:
            raw, current = await self._redis.mget(value_key, versions_key)
        except _REDIS_FAILURES as exc:
            self._trip(exc)
            self._bypasses.inc()
            return await load()
        version = _bytes(current) or _NO_VERSION
        payload = _payload_if_current(_bytes(raw), version)
        if payload is not None:
            self._hits.inc()
            return payload
        self._misses.inc()
        flight = (value_key, version)
        shared = self._flights.get(flight)
        if shared is None:
            shared = asyncio.ensure_future(self._fill(value_key, versions_key, version, load))
            self._flights[flight] = shared
            shared.add_done_callback(lambda done: self._landed(flight, done))
        return await asyncio.shield(shared)

    async def invalidate(self, version_keys: Iterable[str]) -> bool:
        keys = [self._prefix + k for k in dict.fromkeys(version_keys)]
        if not keys:
            return True
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.incr(key)
                    pipe.pexpire(key, self._version_ttl_ms)
                await pipe.execute()
        except _REDIS_FAILURES as exc:
            self._trip(exc)
            return False
        return True

    def _landed(self, flight: tuple[str, bytes], done: asyncio.Future[bytes | None]) -> None:
        if self._flights.get(flight) is done:
            del self._flights[flight]
        if not done.cancelled():
            done.exception()  # retrieved here: every waiter may have gone away

    async def _fill(
        self, value_key: str, versions_key: str, version: bytes, load: Loader
    ) -> bytes | None:
        lock_key = f"{value_key}:lock:{version.decode()}"
        token = secrets.token_hex(8)
        try:
            locked = await self._redis.set(lock_key, token, nx=True, px=self._lock_ms)
        except _REDIS_FAILURES as exc:
            self._trip(exc)
            return await load()
        if not locked:
            waited = await self._wait_for_other(value_key, versions_key, version)
            if waited is not None:
                return waited
            token = ""  # not ours to release
        payload = await load()
        if payload is None:
            if token:
                await self._quietly(self._redis.delete(lock_key))
            return None
        try:
            await self._store(
                keys=[value_key, versions_key, lock_key],
                args=[version, version + _SEPARATOR + payload, self._ttl_ms, token,
                      self._version_ttl_ms],
            )  # fmt: skip
        except _REDIS_FAILURES as exc:
            self._trip(exc)
        return payload

    async def _wait_for_other(
        self, value_key: str, versions_key: str, version: bytes
    ) -> bytes | None:
        """Another process is loading this version: poll for its value, a short while."""
        deadline = time.monotonic() + self._settings.lock_wait_seconds
        delay = 0.002
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.025)
            try:
                raw, current = await self._redis.mget(value_key, versions_key)
            except _REDIS_FAILURES as exc:
                self._trip(exc)
                return None
            if (_bytes(current) or _NO_VERSION) != version:
                return None  # invalidated meanwhile: load the new one ourselves
            payload = _payload_if_current(_bytes(raw), version)
            if payload is not None:
                return payload
        return None

    async def _quietly(self, command: Awaitable[object]) -> None:
        try:
            await command
        except _REDIS_FAILURES as exc:
            self._trip(exc)

    def _trip(self, exc: BaseException) -> None:
        self._errors.inc()
        if self.available:
            log.warning(
                "cache %s: Redis failed (%s: %s); reading from the database for %.1fs",
                self._name,
                type(exc).__name__,
                exc,
                self._settings.circuit_seconds,
            )
        self._open_until = time.monotonic() + self._settings.circuit_seconds


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _payload_if_current(raw: bytes | None, version: bytes) -> bytes | None:
    if raw is None:
        return None
    tag, separator, payload = raw.partition(_SEPARATOR)
    return payload if separator and tag == version else None
