"""Rate limits through the gateway on real sockets, decided in a real Redis.

The gateway runs in front of grpc.aio fakes (users for the JWKS, catalog, analytics) and a
tiny chat REST app; Redis is MESH_REDIS_URL when set, else an embedded one. Every test has
its own key prefix. The Redis-failure tests start their own embedded Redis (the harness's
`EmbeddedRedis`) on a free port and kill, stop or restart it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

from gateway.policy import PolicyTable, RateLimit
from gateway.ratelimit.gcra import Rate
from gateway.ratelimit.redis_limiter import RedisLimiter, redis_for_limits
from gateway.settings import GatewaySettings, RateLimitSettings
from mesh.auth.keys import SigningKey, key_id, public_jwk
from mesh.auth.tokens import TokenIssuer, TokenSettings
from mesh.harness import EmbeddedRedis, free_port
from mesh.settings import Env
from protos.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from protos.users.v1 import users_pb2, users_pb2_grpc
from tests.integration.gateway.conftest import closed_address, serve
from tests.integration.gateway.fakes import start_grpc_server

Client = TestClient[web.Request, web.Application]
Context = grpc.aio.ServicerContext[Any, Any]

_PRIVATE = Ed25519PrivateKey.generate()
KEY = SigningKey(key_id(_PRIVATE.public_key()), _PRIVATE)
GET_PRODUCT = "catalog.v1.CatalogService.GetProduct"
LIST_CATEGORIES = "catalog.v1.CatalogService.ListCategories"
INGEST = "analytics.v1.AnalyticsService.IngestEvents"
RATELIMIT = re.compile(r'"(?P<name>\w+)";r=(?P<r>\d+);t=(?P<t>\d+)')


class Users(users_pb2_grpc.UsersServiceServicer):
    async def GetJwks(self, request: users_pb2.GetJwksRequest, context: Context) -> users_pb2.Jwks:
        return users_pb2.Jwks(keys=[users_pb2.Jwk(**public_jwk(KEY))])


class Catalog(catalog_pb2_grpc.CatalogServiceServicer):
    """GetProduct "p1" exists, any other id is NOT_FOUND; records x-client-address."""

    def __init__(self) -> None:
        self.client_addresses: list[str] = []

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: Context
    ) -> catalog_pb2.Product:
        metadata = dict(context.invocation_metadata() or ())
        self.client_addresses.append(str(metadata.get("x-client-address")))
        if request.id != "p1":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no product {request.id!r}")
        return catalog_pb2.Product(id="p1", name="Kettle")

    async def ListCategories(
        self, request: catalog_pb2.ListCategoriesRequest, context: Context
    ) -> catalog_pb2.ListCategoriesResponse:
        return catalog_pb2.ListCategoriesResponse()


class Analytics(analytics_pb2_grpc.AnalyticsServiceServicer):
    async def IngestEvents(
        self, request: analytics_pb2.IngestEventsRequest, context: Context
    ) -> analytics_pb2.IngestEventsResponse:
        return analytics_pb2.IngestEventsResponse(accepted=len(request.events))


async def _rooms(request: web.Request) -> web.Response:
    return web.json_response({"rooms": []})


@dataclasses.dataclass
class Upstreams:
    catalog: Catalog
    users_address: str
    catalog_address: str
    analytics_address: str
    chat_url: str


@pytest_asyncio.fixture(scope="module")
async def upstreams() -> AsyncIterator[Upstreams]:
    catalog = Catalog()
    users_server, users_address, _ = await start_grpc_server(
        lambda server: users_pb2_grpc.add_UsersServiceServicer_to_server(Users(), server)
    )
    catalog_server, catalog_address, _ = await start_grpc_server(
        lambda server: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(catalog, server)
    )
    analytics_server, analytics_address, _ = await start_grpc_server(
        lambda server: analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(
            Analytics(), server
        )
    )
    chat = web.Application()
    chat.router.add_get("/api/v1/chat/rooms", _rooms)
    chat_server = TestServer(chat, host="127.0.0.1")
    await chat_server.start_server()
    try:
        yield Upstreams(
            catalog,
            users_address,
            catalog_address,
            analytics_address,
            str(chat_server.make_url("")).rstrip("/"),
        )
    finally:
        await chat_server.close()
        for server in (users_server, catalog_server, analytics_server):
            await server.stop(None)


@pytest_asyncio.fixture(scope="module")
async def redis_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """MESH_REDIS_URL when set (CI), else an embedded Redis for this module."""
    configured = Env().url("MESH_REDIS_URL", None, ("redis", "rediss"))
    if configured is not None:
        yield configured
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("ratelimit-redis"), port=free_port())
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A Redis of this test's own, to kill, stop and restart."""
    server = EmbeddedRedis(tmp_path, port=free_port())
    await server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.returncode is None:
            os.kill(server.process.pid, signal.SIGCONT)
        await server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}:rl:"


def healthy(redis_url: str, prefix: str, **overrides: Any) -> RateLimitSettings:
    """Limits in a Redis that works. The timeout is generous so that a machine too busy to
    run the event loop in time (CI) does not switch to the local fallback; the fallback has
    its own tests below."""
    return RateLimitSettings(
        redis_url=redis_url, key_prefix=prefix, redis_timeout_seconds=2.0, **overrides
    )


def policies(*groups: tuple[str, list[str], dict[str, Any]]) -> PolicyTable:
    return PolicyTable.parse(
        {"group": [{"name": name, "routes": routes, "rate": rate} for name, routes, rate in groups]}
    )


def gateway_settings(
    upstreams: Upstreams, table: PolicyTable, limits: RateLimitSettings
) -> GatewaySettings:
    return GatewaySettings(
        users_addresses=(upstreams.users_address,),
        catalog_addresses=(upstreams.catalog_address,),
        analytics_addresses=(upstreams.analytics_address,),
        chat_urls=(upstreams.chat_url,),
        upstream_timeout_seconds=2.0,
        policies=table,
        rate_limits=limits,
    )


def bearer(user_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TokenIssuer([KEY], TokenSettings()).issue(user_id, ())}"}


def remaining(response: aiohttp.ClientResponse) -> int:
    match = RATELIMIT.fullmatch(response.headers["RateLimit"])
    assert match is not None, response.headers["RateLimit"]
    return int(match["r"])


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def decisions(policy: str, decision: str, backend: str) -> float:
    return metric(
        "mesh_gateway_ratelimit_decisions_total",
        policy=policy,
        decision=decision,
        backend=backend,
    )


async def statuses(client: Client, path: str, n: int, **kwargs: Any) -> list[int]:
    """`n` GETs one after the other."""
    result = []
    for _ in range(n):
        response = await client.get(path, **kwargs)
        await response.read()
        result.append(response.status)
    return result


# --- exactness under concurrency ------------------------------------------------------------


async def test_fifty_concurrent_clients_on_two_gateways_get_exactly_the_burst(
    upstreams: Upstreams, redis_url: str, prefix: str
) -> None:
    table = policies(
        ("burst5", [GET_PRODUCT], {"limit": 5, "window_seconds": 60, "key": "address"})
    )
    settings = gateway_settings(upstreams, table, healthy(redis_url, prefix))
    switches = metric("mesh_gateway_ratelimit_fallback_switches_total", to="local")
    async with AsyncExitStack() as stack:
        # two gateway processes (replicas) sharing the Redis
        gateways = [await stack.enter_async_context(serve(settings)) for _ in range(2)]
        session = await stack.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        )

        async def one(i: int) -> tuple[int, aiohttp.ClientResponse, bytes]:
            url = gateways[i % 2].make_url("/api/v1/products/p1")
            async with session.get(url) as response:
                return response.status, response, await response.read()

        results = await asyncio.gather(*(one(i) for i in range(50)))
    counted = Counter(status for status, _, _ in results)
    assert metric("mesh_gateway_ratelimit_fallback_switches_total", to="local") == switches
    assert counted == {200: 5, 429: 45}
    for status, response, body in results:
        assert response.headers["RateLimit-Policy"] == '"burst5";q=5;w=60'
        if status == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert remaining(response) == 0
            problem = orjson.loads(body)
            assert response.headers["Content-Type"].startswith("application/problem+json")
            assert problem["policy"] == "burst5"
            assert problem["retryAfterSeconds"] == int(response.headers["Retry-After"])
    assert sorted(remaining(r) for s, r, _ in results if s == 200) == [0, 1, 2, 3, 4]


async def test_a_limit_per_window_admits_at_most_the_limit(redis_url: str, prefix: str) -> None:
    async with redis_for_limits(redis_url, 2.0) as client:
        limiter = RedisLimiter(client, prefix, 2.0)

        async def admitted(key: str, rate: Rate, n: int) -> int:
            found = await asyncio.gather(*(limiter.decide(key, rate, 1) for _ in range(n)))
            return sum(d.allowed for d in found)

        slow = Rate.of(RateLimit("w", limit=2, window_seconds=10, burst=2))  # 5 s per unit
        assert await admitted("slow", slow, 50) == 2
        assert await admitted("slow", slow, 50) == 0
        ttl = await client.pttl(f"{prefix}slow")
        assert 9000 < ttl <= 10_000  # expires when the allowance is full again
        second = Rate.of(RateLimit("w", limit=1, window_seconds=1, burst=1))
        assert await admitted("second", second, 50) == 1
        await asyncio.sleep(1.05)  # one interval: exactly one more unit
        assert await admitted("second", second, 50) == 1
        # hammered for a while: never more than the burst plus one unit per interval
        fast = Rate.of(RateLimit("w", limit=4, window_seconds=1, burst=2))  # 0.25 s per unit
        began = time.monotonic()
        total = 0
        while time.monotonic() - began < 1.2:
            total += await admitted("fast", fast, 10)
        elapsed = time.monotonic() - began
        assert 2 <= total <= 2 + int(elapsed / 0.25) + 1


# --- who is counted --------------------------------------------------------------------------


async def test_signed_in_callers_count_per_user_and_others_per_address(
    upstreams: Upstreams, redis_url: str, prefix: str
) -> None:
    table = policies(
        ("peruser", [GET_PRODUCT], {"limit": 2, "window_seconds": 60, "key": "user"}),
        ("peraddr", [LIST_CATEGORIES], {"limit": 2, "window_seconds": 60, "key": "address"}),
    )
    limits = healthy(redis_url, prefix)
    async with serve(gateway_settings(upstreams, table, limits)) as client:
        product = "/api/v1/products/p1"
        assert await statuses(client, product, 3, headers=bearer("ada")) == [200, 200, 429]
        assert await statuses(client, product, 3, headers=bearer("bob")) == [200, 200, 429]
        assert await statuses(client, product, 3) == [200, 200, 429]  # anonymous: by address
        # key = "address": users on one address share it
        categories = "/api/v1/categories"
        assert await statuses(client, categories, 1, headers=bearer("ada")) == [200]
        assert await statuses(client, categories, 2, headers=bearer("bob")) == [200, 429]
        async with aioredis.Redis.from_url(redis_url) as redis:
            found = await redis.keys(f"{prefix}*")
    keys = sorted(k.decode() if isinstance(k, bytes) else k for k in found)
    assert keys == [
        f"{prefix}peraddr:addr:127.0.0.1",
        f"{prefix}peruser:addr:127.0.0.1",
        f"{prefix}peruser:user:ada",
        f"{prefix}peruser:user:bob",
    ]


async def test_x_forwarded_for_counts_only_through_a_trusted_proxy(
    upstreams: Upstreams, redis_url: str, prefix: str
) -> None:
    table = policies(("xff", [GET_PRODUCT], {"limit": 1, "window_seconds": 60, "key": "address"}))
    loopback = (ipaddress.ip_network("127.0.0.0/8"),)
    trusted = healthy(redis_url, prefix + "a:", trusted_proxies=loopback)
    untrusted = healthy(redis_url, prefix + "b:")
    product = "/api/v1/products/p1"

    def forwarded(address: str) -> dict[str, str]:
        return {"X-Forwarded-For": f"6.6.6.6, {address}"}  # the client forged 6.6.6.6

    async with serve(gateway_settings(upstreams, table, trusted)) as client:
        upstreams.catalog.client_addresses.clear()
        assert await statuses(client, product, 2, headers=forwarded("198.51.100.1")) == [200, 429]
        assert await statuses(client, product, 2, headers=forwarded("198.51.100.2")) == [200, 429]
        assert upstreams.catalog.client_addresses == ["198.51.100.1", "198.51.100.2"]
    async with serve(gateway_settings(upstreams, table, untrusted)) as client:
        upstreams.catalog.client_addresses.clear()
        assert await statuses(client, product, 1, headers=forwarded("198.51.100.1")) == [200]
        assert await statuses(client, product, 1, headers=forwarded("198.51.100.2")) == [429]
        assert upstreams.catalog.client_addresses == ["127.0.0.1"]


# --- what the client sees --------------------------------------------------------------------


async def test_headers_on_success_on_an_error_and_on_the_429(
    upstreams: Upstreams, redis_url: str, prefix: str
) -> None:
    table = policies(("general", [GET_PRODUCT], {"limit": 3, "window_seconds": 60}))
    limits = healthy(redis_url, prefix)
    async with serve(gateway_settings(upstreams, table, limits)) as client:
        ok = await client.get("/api/v1/products/p1")
        assert ok.status == 200
        assert ok.headers["RateLimit-Policy"] == '"general";q=3;w=60'
        assert RATELIMIT.fullmatch(ok.headers["RateLimit"])
        assert (remaining(ok), ok.headers["RateLimit"]) == (2, '"general";r=2;t=20')
        assert "Retry-After" not in ok.headers
        missing = await client.get("/api/v1/products/nope")  # the upstream's 404 problem
        assert missing.status == 404
        assert missing.headers["RateLimit-Policy"] == '"general";q=3;w=60'
        assert remaining(missing) == 1
        assert (await client.get("/api/v1/products/p1")).status == 200
        limited = await client.get("/api/v1/products/p1")
        assert limited.status == 429
        assert limited.headers["RateLimit-Policy"] == '"general";q=3;w=60'
        retry = int(limited.headers["Retry-After"])
        assert 1 <= retry <= 20
        match = RATELIMIT.fullmatch(limited.headers["RateLimit"])
        assert match is not None
        assert (match["r"], int(match["t"]) <= retry) == ("0", True)
        problem = await limited.json(content_type="application/problem+json")
        assert problem["status"] == 429
        assert problem["policy"] == "general"
        assert problem["violated-policies"] == ["general"]
        assert problem["retryAfterSeconds"] == retry
        assert "general" in problem["detail"]
        assert f"retry in {retry} s" in problem["detail"]
        assert problem["requestId"] == limited.headers["X-Request-ID"]
        unlimited = await client.get("/openapi.json")  # a route without a policy
        assert "RateLimit" not in unlimited.headers
        assert "RateLimit-Policy" not in unlimited.headers


async def test_ingest_counts_events(upstreams: Upstreams, redis_url: str, prefix: str) -> None:
    rate = {"limit": 10, "window_seconds": 60, "cost": "events"}
    table = policies(("ingest", [INGEST], rate))
    limits = healthy(redis_url, prefix)
    url = "/api/v1/analytics/events:batch"

    def batch(n: int) -> dict[str, Any]:
        return {
            "events": [
                {
                    "eventId": str(uuid.uuid4()),
                    "type": "page.view",
                    "timestamp": "2026-01-01T00:00:00Z",
                }
                for _ in range(n)
            ]
        }

    async with serve(gateway_settings(upstreams, table, limits)) as client:
        ada, bob = bearer("ada"), bearer("bob")
        four = await client.post(url, json=batch(4), headers=ada)
        assert four.status == 200
        assert (await four.json())["accepted"] == 4
        assert four.headers["RateLimit-Policy"] == '"ingest";q=10;w=60;mesh-unit="events"'
        assert remaining(four) == 6
        five = await client.post(url, json=batch(5), headers=ada)
        assert (five.status, remaining(five)) == (200, 1)
        too_many = await client.post(url, json=batch(2), headers=ada)  # 2 > the 1 left
        assert (too_many.status, remaining(too_many)) == (429, 1)
        empty = await client.post(url, json={"events": []}, headers=ada)  # counts one
        assert (empty.status, remaining(empty)) == (200, 0)
        assert (await client.post(url, json={}, headers=ada)).status == 429
        # more than the burst can never pass: 413, not a 429 to retry forever
        huge = await client.post(url, json=batch(11), headers=bob)
        assert huge.status == 413
        assert (await huge.json(content_type=None))["policy"] == "ingest"
        assert remaining(huge) == 10  # nothing was spent
        malformed = await client.post(url, json={"events": "many"}, headers=bob)
        assert malformed.status == 400  # the service's answer, counted as one event
        assert remaining(malformed) == 9


async def test_the_chat_rest_proxy_is_limited(
    upstreams: Upstreams, redis_url: str, prefix: str
) -> None:
    table = policies(("chatrest", ["chat.http"], {"limit": 2, "window_seconds": 60}))
    limits = healthy(redis_url, prefix)
    async with serve(gateway_settings(upstreams, table, limits)) as client:
        rooms = "/api/v1/chat/rooms"
        first = await client.get(rooms, headers=bearer("ada"))
        assert first.status == 200
        assert await first.json() == {"rooms": []}
        assert first.headers["RateLimit-Policy"] == '"chatrest";q=2;w=60'
        assert remaining(first) == 1
        gone = await client.get("/api/v1/chat/nowhere", headers=bearer("ada"))  # chat's 404
        assert (gone.status, remaining(gone)) == (404, 0)
        limited = await client.get(rooms, headers=bearer("ada"))
        assert limited.status == 429
        assert int(limited.headers["Retry-After"]) >= 1
        assert (await client.get(rooms, headers=bearer("bob"))).status == 200


async def test_switched_off_admits_everything_without_redis(upstreams: Upstreams) -> None:
    table = policies(("off", [GET_PRODUCT], {"limit": 1, "window_seconds": 60}))
    nowhere = RateLimitSettings(enabled=False, redis_url=f"redis://{closed_address()}/0")
    async with serve(gateway_settings(upstreams, table, nowhere)) as client:
        assert await statuses(client, "/api/v1/products/p1", 20) == [200] * 20
        response = await client.get("/api/v1/products/p1")
        assert "RateLimit" not in response.headers


# --- Redis away ------------------------------------------------------------------------------


@contextmanager
def timed(limit_seconds: float) -> Iterator[None]:
    began = time.monotonic()
    yield
    elapsed = time.monotonic() - began
    assert elapsed < limit_seconds, f"took {elapsed:.3f} s"


async def wait_for_fallback(active: bool, within: float) -> None:
    deadline = time.monotonic() + within
    while metric("mesh_gateway_ratelimit_fallback_active") != float(active):
        assert time.monotonic() < deadline, f"fallback_active did not become {active}"
        await asyncio.sleep(0.05)


async def test_redis_killed_then_restarted(
    upstreams: Upstreams, own_redis: EmbeddedRedis, prefix: str
) -> None:
    table = policies(("killed", [GET_PRODUCT], {"limit": 3, "window_seconds": 60}))
    limits = RateLimitSettings(redis_url=own_redis.url, key_prefix=prefix)
    product = "/api/v1/products/p1"
    to_local = metric("mesh_gateway_ratelimit_fallback_switches_total", to="local")
    to_redis = metric("mesh_gateway_ratelimit_fallback_switches_total", to="redis")
    local_limited = decisions("killed", "limited", "local")
    async with serve(gateway_settings(upstreams, table, limits)) as client:
        ada, bob = bearer("ada"), bearer("bob")
        assert await statuses(client, product, 4, headers=ada) == [200, 200, 200, 429]
        assert metric("mesh_gateway_ratelimit_fallback_active") == 0
        assert own_redis.process is not None
        own_redis.process.kill()  # SIGKILL: a crash, not a goodbye
        await own_redis.process.wait()
        for expected in (200, 200, 200, 429):  # bob, decided locally at the same rates
            with timed(1.0):
                response = await client.get(product, headers=bob)
            assert response.status == expected
            assert response.headers["RateLimit-Policy"] == '"killed";q=3;w=60'
        assert remaining(response) == 0
        assert int(response.headers["Retry-After"]) >= 1
        assert metric("mesh_gateway_ratelimit_fallback_active") == 1
        assert metric("mesh_gateway_ratelimit_fallback_switches_total", to="local") == to_local + 1
        assert decisions("killed", "limited", "local") == local_limited + 1
        with timed(1.0):  # ada's state was in Redis; locally she starts afresh
            assert await statuses(client, product, 1, headers=ada) == [200]

        await own_redis.start()  # same port; the script cache is empty (NOSCRIPT, reload)
        await wait_for_fallback(False, within=3.0)
        assert metric("mesh_gateway_ratelimit_fallback_switches_total", to="redis") == to_redis + 1
        # back on Redis, where bob never spent anything: his full burst again
        assert await statuses(client, product, 4, headers=bob) == [200, 200, 200, 429]
        async with aioredis.Redis.from_url(own_redis.url) as redis:
            assert await redis.exists(f"{prefix}killed:user:bob") == 1


async def test_redis_that_hangs_costs_one_timeout_then_decisions_are_local(
    upstreams: Upstreams, own_redis: EmbeddedRedis, prefix: str
) -> None:
    table = policies(("hung", [GET_PRODUCT], {"limit": 2, "window_seconds": 60, "key": "address"}))
    limits = RateLimitSettings(
        redis_url=own_redis.url, key_prefix=prefix, redis_timeout_seconds=0.4
    )
    product = "/api/v1/products/p1"
    async with serve(gateway_settings(upstreams, table, limits)) as client:
        assert await statuses(client, product, 1) == [200]  # connected, on Redis
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGSTOP)  # alive but silent
        try:
            with timed(1.0):  # each waited at most the 0.4 s timeout for Redis
                responses = await asyncio.gather(*(client.get(product) for _ in range(5)))
            assert sorted(r.status for r in responses) == [200, 200, 429, 429, 429]
            await wait_for_fallback(True, within=0.1)
            with timed(0.4):  # no Redis wait any more
                assert await statuses(client, product, 1) == [429]
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        await wait_for_fallback(False, within=3.0)
        # Decided in Redis again. (Whether it still has an allowance depends on the commands
        # that were sent while it was stopped: Redis runs them when it wakes up.)
        on_redis = decisions("hung", "allowed", "redis") + decisions("hung", "limited", "redis")
        assert (await client.get(product)).status in (200, 429)
        after = decisions("hung", "allowed", "redis") + decisions("hung", "limited", "redis")
        assert after == on_redis + 1


async def test_closed_answers_503_while_redis_is_away(upstreams: Upstreams, prefix: str) -> None:
    table = policies(("strict", [GET_PRODUCT], {"limit": 5, "window_seconds": 60}))
    limits = RateLimitSettings(
        redis_url=f"redis://{closed_address()}/0", key_prefix=prefix, on_redis_failure="closed"
    )
    unavailable = decisions("strict", "unavailable", "redis")
    to_closed = metric("mesh_gateway_ratelimit_fallback_switches_total", to="closed")
    calls = len(upstreams.catalog.client_addresses)
    async with serve(gateway_settings(upstreams, table, limits)) as client:
        for _ in range(3):
            with timed(1.0):
                response = await client.get("/api/v1/products/p1")
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert response.headers["RateLimit-Policy"] == '"strict";q=5;w=60'
            assert "RateLimit" not in response.headers  # the allowance is unknown
            problem = await response.json(content_type="application/problem+json")
            assert (problem["status"], problem["policy"]) == (503, "strict")
        assert len(upstreams.catalog.client_addresses) == calls  # the upstream was spared
        assert decisions("strict", "unavailable", "redis") == unavailable + 3
        assert (
            metric("mesh_gateway_ratelimit_fallback_switches_total", to="closed") == to_closed + 1
        )
        assert metric("mesh_gateway_ratelimit_fallback_active") == 1
    assert metric("mesh_gateway_ratelimit_fallback_active") == 0  # closing resets it
