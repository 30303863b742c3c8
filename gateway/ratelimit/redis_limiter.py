"""The distributed limiter: one atomic Lua script per decision, shared by every gateway.

The script reads the consumer's TAT, decides by GCRA (`gcra`) with Redis's own clock
(``TIME``: the gateways' clocks never matter) and writes the new TAT with an expiry of
exactly the time it runs ahead of now, so idle consumers leave nothing behind. It runs by
``EVALSHA``; redis-py's `Script` loads it again when the server answers ``NOSCRIPT`` (a
restarted or failed-over Redis). One key per call, so it also runs on a Redis Cluster.
Scripts that write after ``TIME`` need effects replication: Redis 5 or later.

The client has no retries, short socket timeouts and a bounded pool that waits for a free
connection; `decide` is also cut at `timeout_seconds` as a whole, so a decision never waits
longer than that for Redis. Any failure raises (`REDIS_FAILURES`); the caller falls back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.ratelimit.gcra import Decision, Rate, decision

REDIS_FAILURES: Final = (RedisError, OSError, TimeoutError)
MAX_CONNECTIONS: Final = 64

# KEYS[1]: the consumer's TAT (µs of Redis time); ARGV: interval µs, capacity µs, cost µs.
# Returns {allowed (1|0), how far the TAT runs ahead of now after the decision, in µs}.
GCRA_SCRIPT: Final = """
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local increment = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = math.max(tonumber(stored), now) end
local new_tat = tat + increment
if new_tat - now <= capacity then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
             'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
  return {1, new_tat - now}
end
return {0, tat - now}
"""


@asynccontextmanager
async def redis_for_limits(url: str, timeout_seconds: float) -> AsyncIterator[aioredis.Redis]:
    """A lazily connecting client for rate-limit decisions (start-up never waits for Redis)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=timeout_seconds,  # waiting for a free pooled connection
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )
    client: aioredis.Redis = aioredis.Redis.from_pool(pool)
    try:
        yield client
    finally:
        await client.aclose()


class RedisLimiter:
    """GCRA decisions in Redis under `prefix`; raises one of `REDIS_FAILURES` on failure."""

    def __init__(self, client: aioredis.Redis, prefix: str, timeout_seconds: float) -> None:
        self._client = client
        self._prefix = prefix
        self._timeout = timeout_seconds
        self._script = client.register_script(GCRA_SCRIPT)

    async def decide(self, key: str, rate: Rate, cost: int) -> Decision:
        async with asyncio.timeout(self._timeout):
            allowed, used = await self._script(
                keys=(self._prefix + key,),
                args=(rate.interval_us, rate.capacity_us, cost * rate.interval_us),
            )
        return decision(bool(allowed), int(used), rate, cost)

    async def ping(self) -> None:
        async with asyncio.timeout(self._timeout):
            await self._client.ping()
