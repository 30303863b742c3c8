"""`RateLimiter.admit`: one decision per request, in Redis, or locally while Redis is away.

The consumer is the signed-in user (policy ``key = "user"`` and a verified caller) or else
the client's address (`gateway.client_address`, through trusted proxies only; an IPv6
client counts per /64, the block one subscriber usually holds). Its state lives in Redis
under ``<MESH_NAMESPACE>mesh:rl:<policy>:user:<id>`` or ``...:addr:<address>``.

When Redis fails (error, refused, or no answer within `redis_timeout_seconds`), the process
switches at once, logs it once, and counts the switch; from then on no decision touches
Redis, so a dead Redis costs at most one timeout per request that was already waiting. A
background task PINGs Redis every 0.5 s and switches back when it answers. Meanwhile:

- ``on_redis_failure = "local"`` (default): decisions are made by `LocalLimiter`, the same
  GCRA at the same rates, per process (fail open, but still limited);
- ``"closed"``: every limited request gets a 503 problem with ``Retry-After: 1``.

A refused request gets a 429 problem naming the policy and when to retry, with
`Retry-After`; a request costing more than the burst (an event batch larger than the
policy ever allows at once) a 413. Allowed or not, the request carries the `RateLimit`
fields for its response (`headers`). With rate limits switched off (``enabled = false``)
`admit` returns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final, Literal

from aiohttp import hdrs, web
from prometheus_client import Counter

from gateway.client_address import client_address
from gateway.metrics import (
    RATE_LIMIT_DECISIONS,
    RATE_LIMIT_FALLBACK_ACTIVE,
    RATE_LIMIT_FALLBACK_SWITCHES,
)
from gateway.policy import RateLimit
from gateway.ratelimit.gcra import Decision, Rate
from gateway.ratelimit.headers import FIELDS_KEY, limit_field, policy_field, retry_after
from gateway.ratelimit.local_limiter import LocalLimiter
from gateway.ratelimit.redis_limiter import REDIS_FAILURES, RedisLimiter, redis_for_limits
from gateway.settings import RateLimitSettings
from mesh.auth.identity import Caller
from mesh.problem import ProblemError

log = logging.getLogger("gateway.ratelimit")

PROBE_INTERVAL_SECONDS: Final = 0.5
IPV6_PREFIX: Final = 64

Backend = Literal["redis", "local"]
Outcome = Literal["allowed", "limited", "unavailable"]


def address_bucket(address: str) -> str:
    """The address a limit counts: itself for IPv4, its /64 network for IPv6."""
    if ":" not in address:
        return address
    try:
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    except ValueError:
        return address


def consumer_key(rate_limit: RateLimit, caller: Caller | None, address: str) -> str:
    """The key (under the prefix) of the consumer a request is counted against."""
    if rate_limit.key == "user" and caller is not None:
        return f"{rate_limit.name}:user:{caller.user_id}"
    return f"{rate_limit.name}:addr:{address_bucket(address)}"


def _describe(rate_limit: RateLimit) -> str:
    unit = "events" if rate_limit.cost == "events" else "requests"
    text = f"{rate_limit.limit} {unit} per {rate_limit.window_seconds:g} s"
    if rate_limit.burst != rate_limit.limit:
        text += f", bursts of {rate_limit.burst}"
    return text


class RateLimiter:
    """Admits or refuses requests under their route's `RateLimit` (see the module doc)."""

    def __init__(
        self,
        settings: RateLimitSettings,
        redis: RedisLimiter | None,
        *,
        local: LocalLimiter | None = None,
        probe_interval_seconds: float = PROBE_INTERVAL_SECONDS,
    ) -> None:
        self._redis = redis if settings.enabled else None
        self._trusted = settings.trusted_proxies
        self._closed = settings.on_redis_failure == "closed"
        self._local = local if local is not None else LocalLimiter()
        self._probe_interval = probe_interval_seconds
        self._rates: dict[RateLimit, Rate] = {}
        self._counters: dict[tuple[str, Outcome, Backend], Counter] = {}
        self._failed_at: float | None = None  # monotonic time of the switch away from Redis
        self._probe: asyncio.Task[None] | None = None

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: RateLimitSettings) -> AsyncIterator[RateLimiter]:
        """The limiter for `settings`, with its Redis client; closes both on exit."""
        if not settings.enabled:
            yield cls(settings, None)
            return
        timeout = settings.redis_timeout_seconds
        async with redis_for_limits(settings.redis_url, timeout) as client:
            limiter = cls(settings, RedisLimiter(client, settings.key_prefix, timeout))
            try:
                yield limiter
            finally:
                await limiter.close()

    async def admit(
        self, request: web.Request, rate_limit: RateLimit, caller: Caller | None, *, cost: int = 1
    ) -> None:
        """Count `cost` units of `request` against its consumer; raise a problem if refused."""
        redis = self._redis
        if redis is None:
            return
        cost = max(1, cost)
        key = consumer_key(rate_limit, caller, client_address(request, self._trusted))
        rate = self._rates.get(rate_limit)
        if rate is None:
            rate = self._rates[rate_limit] = Rate.of(rate_limit)
        decision: Decision | None = None
        backend: Backend = "redis"
        if self._failed_at is None:
            try:
                decision = await redis.decide(key, rate, cost)
            except REDIS_FAILURES as error:
                self._switch_away(error)
        if decision is None:
            if self._closed:
                request[FIELDS_KEY] = (policy_field(rate_limit), None)
                self._count(rate_limit, "unavailable", backend)
                raise ProblemError(
                    503,
                    f"The rate limit '{rate_limit.name}' cannot be checked right now; "
                    "retry shortly.",
                    headers={hdrs.RETRY_AFTER: "1"},
                    extensions={"policy": rate_limit.name},
                )
            backend = "local"
            decision = self._local.decide(key, rate, cost)
        request[FIELDS_KEY] = (policy_field(rate_limit), limit_field(rate_limit, decision))
        if decision.allowed:
            self._count(rate_limit, "allowed", backend)
            return
        self._count(rate_limit, "limited", backend)
        if cost > rate.burst:
            raise ProblemError(
                413,
                f"This request counts {cost} events, more than the {rate.burst} the rate limit "
                f"'{rate_limit.name}' ({_describe(rate_limit)}) ever allows at once; "
                "send smaller batches.",
                extensions={"policy": rate_limit.name, "burst": rate.burst},
            )
        seconds = retry_after(decision)
        raise ProblemError(
            429,
            f"Too many requests for the rate limit '{rate_limit.name}' "
            f"({_describe(rate_limit)}); retry in {seconds} s.",
            headers={hdrs.RETRY_AFTER: str(seconds)},
            extensions={
                "policy": rate_limit.name,
                "retryAfterSeconds": seconds,
                "violated-policies": [rate_limit.name],
            },
        )

    def _count(self, rate_limit: RateLimit, outcome: Outcome, backend: Backend) -> None:
        labels = (rate_limit.name, outcome, backend)
        counter = self._counters.get(labels)
        if counter is None:
            counter = self._counters[labels] = RATE_LIMIT_DECISIONS.labels(*labels)
        counter.inc()

    def _switch_away(self, error: BaseException) -> None:
        if self._failed_at is not None:
            return  # another decision in flight already switched
        self._failed_at = time.monotonic()
        fallback = "closed" if self._closed else "local"
        RATE_LIMIT_FALLBACK_ACTIVE.set(1)
        RATE_LIMIT_FALLBACK_SWITCHES.labels(fallback).inc()
        log.warning(
            "rate limits: Redis failed (%s: %s); %s until it answers again",
            type(error).__name__,
            str(error) or "no answer in time",
            "refusing limited requests (503)" if self._closed else "deciding in this process",
        )
        self._probe = asyncio.create_task(self._probe_redis(), name="rate-limit redis probe")

    async def _probe_redis(self) -> None:
        assert self._redis is not None
        while True:
            await asyncio.sleep(self._probe_interval)
            try:
                await self._redis.ping()
            except Exception:  # still away (whatever the failure): keep probing
                continue
            break
        failed_at, self._failed_at = self._failed_at, None
        RATE_LIMIT_FALLBACK_ACTIVE.set(0)
        RATE_LIMIT_FALLBACK_SWITCHES.labels("redis").inc()
        log.info(
            "rate limits: Redis answers again after %.1f s; deciding in Redis",
            time.monotonic() - (failed_at or time.monotonic()),
        )
        self._probe = None

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        if self._failed_at is not None:
            self._failed_at = None
            RATE_LIMIT_FALLBACK_ACTIVE.set(0)
