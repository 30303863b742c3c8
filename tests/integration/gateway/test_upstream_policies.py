"""Circuit breakers, deadlines and retries, against a real grpc.aio upstream over a socket.

Each test gets its own `ControlledShelf` (gwtest.v1.ShelfService, served as the "catalog"
upstream) on its own server, which it makes fail, hang, stop and start again, and counts the
calls that reach it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from gateway.breaker import CLOSED, OPEN, UpstreamBreaker
from gateway.keys import UPSTREAMS_KEY
from gateway.settings import BreakerSettings, RateLimitSettings, RetrySettings
from protos.users.v1 import users_pb2_grpc
from tests.integration.gateway.conftest import FakeUpstreams, serve
from tests.integration.gateway.fakes import (
    KEY,
    TOKEN,
    ControlledChat,
    ControlledShelf,
    JwksServicer,
    RestartableServer,
    start_grpc_server,
)
from tests.integration.gateway.test_unary import problem

Client = TestClient[web.Request, web.Application]
GET = "/v1/books/b1"  # ShelfService.GetBook: a GET, so idempotent
POST = "/v1/books/b1:reserve"  # ShelfService.ReserveBook: a POST without idempotency_level
UPSTREAM = "catalog"
BREAKERS_OFF = BreakerSettings(enabled=False)
RETRIES_OFF = RetrySettings(enabled=False)
FAST_RETRIES = RetrySettings(backoff_base_seconds=0.001, backoff_max_seconds=0.004)
# Deadline bounds: the 504 comes at the deadline, not before, and not much after it.
LATE_BY_AT_MOST = 0.3
# What the upstream sees left may exceed what the gateway sent by a few ms: grpc-timeout is
# rounded up on the wire and counted from when the server read it.
WIRE_ROUNDING = 0.01


@dataclass
class Upstream:
    shelf: ControlledShelf
    server: RestartableServer


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[Upstream]:
    shelf = ControlledShelf()
    server = RestartableServer(shelf.handler())
    await server.start()
    try:
        yield Upstream(shelf, server)
    finally:
        shelf.gate.set()  # let hanging calls end
        await server.stop()


@asynccontextmanager
async def gateway(
    upstreams: FakeUpstreams,
    upstream: Upstream,
    *,
    timeout: float = 1.0,
    breakers: BreakerSettings = BREAKERS_OFF,
    retries: RetrySettings = FAST_RETRIES,
) -> AsyncIterator[Client]:
    settings = upstreams.settings(
        catalog_addresses=(upstream.server.address,),
        channels_per_upstream=1,
        upstream_timeout_seconds=timeout,
        breakers=breakers,
        retries=retries,
        rate_limits=RateLimitSettings(enabled=False),
    )
    async with serve(settings) as client:
        yield client


def breaker_of(client: Client) -> UpstreamBreaker:
    breaker = client.app[UPSTREAMS_KEY].breaker(UPSTREAM)
    assert breaker is not None
    return breaker


async def channel_ready(client: Client, within: float = 4.0) -> None:
    """Wait until the gateway's channel to the upstream is connected again."""
    async with asyncio.timeout(within):
        for channel in client.app[UPSTREAMS_KEY].grpc[UPSTREAM].channels:
            state = channel.get_state(try_to_connect=True)
            while state is not grpc.ChannelConnectivity.READY:
                await channel.wait_for_state_change(state)
                state = channel.get_state(try_to_connect=True)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"upstream": UPSTREAM, **labels}) or 0.0


async def timed_get(
    client: Client, path: str = GET, headers: Mapping[str, str] | None = None
) -> tuple[aiohttp.ClientResponse, float]:
    started = time.monotonic()
    response = await client.get(path, headers=headers)
    await response.read()
    return response, time.monotonic() - started


async def hang_after_warming_up(client: Client, upstream: Upstream) -> None:
    """One answered call first (connections made), then every call hangs: what is timed is
    the deadline, not connecting."""
    assert (await client.get(GET)).status == 200
    upstream.shelf.reset()
    upstream.shelf.hang = True


# --- circuit breaker ------------------------------------------------------------------------


async def test_a_stopped_upstream_opens_the_breaker_then_a_probe_closes_it(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    breakers = BreakerSettings(consecutive_failures=3, minimum_calls=1000, open_seconds=1.0)
    async with gateway(upstreams, upstream, breakers=breakers, retries=RETRIES_OFF) as client:
        assert (await client.get(GET)).status == 200
        rejected_before = metric("mesh_gateway_breaker_rejections_total")
        await upstream.server.stop()
        for _ in range(3):  # refused connections: UNAVAILABLE, counted
            body = await problem(await client.get(GET), 503)
            assert "circuit breaker" not in body["detail"]
        tripped_at = time.monotonic()
        assert breaker_of(client).state == OPEN

        await upstream.server.start()  # back, but the breaker is open: nobody calls it
        upstream.shelf.reset()
        for _ in range(10):
            response = await client.get(GET)
            body = await problem(response, 503)
            assert response.headers["Retry-After"] == "1"  # 1.0 s open, rounded up
            assert body["upstream"] == UPSTREAM
            assert "circuit breaker" in body["detail"]
        assert upstream.shelf.total_calls == 0
        assert metric("mesh_gateway_breaker_rejections_total") - rejected_before == 10

        await channel_ready(client)
        await asyncio.sleep(max(0.0, tripped_at + breakers.open_seconds - time.monotonic()))
        assert (await client.get(GET)).status == 200  # the probe
        assert breaker_of(client).state == CLOSED
        assert (await client.get(GET)).status == 200
        assert upstream.shelf.calls["GetBook"] == 2


async def test_half_open_lets_one_probe_reach_the_upstream_at_a_time(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    breakers = BreakerSettings(consecutive_failures=2, minimum_calls=1000, open_seconds=0.3)
    async with gateway(upstreams, upstream, breakers=breakers, retries=RETRIES_OFF) as client:
        upstream.shelf.fail_with = grpc.StatusCode.UNAVAILABLE
        for _ in range(2):
            await problem(await client.get(GET), 503)
        assert breaker_of(client).state == OPEN
        upstream.shelf.reset()
        upstream.shelf.hang = True  # the probe will wait at the upstream until the gate opens
        await asyncio.sleep(breakers.open_seconds + 0.05)

        probe = asyncio.create_task(client.get(GET))
        await asyncio.wait_for(upstream.shelf.called.wait(), 1.0)
        others = await asyncio.gather(*(client.get(GET) for _ in range(10)))
        for response in others:
            await problem(response, 503)
            assert response.headers["Retry-After"] == "1"
        assert upstream.shelf.total_calls == 1

        upstream.shelf.gate.set()
        assert (await probe).status == 200
        assert breaker_of(client).state == CLOSED
        assert (await client.get(GET)).status == 200


async def test_not_found_is_neither_retried_nor_counted_by_the_breaker(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    breakers = BreakerSettings(consecutive_failures=3, minimum_calls=5)
    async with gateway(upstreams, upstream, breakers=breakers) as client:
        for _ in range(10):  # earn retry budget: 10 requests allow 2 retries
            assert (await client.get(GET)).status == 200
        upstream.shelf.reset()
        upstream.shelf.fail_with = grpc.StatusCode.NOT_FOUND
        for _ in range(10):
            await problem(await client.get(GET), 404)
        assert upstream.shelf.calls["GetBook"] == 10
        assert breaker_of(client).state == CLOSED
        assert breaker_of(client).consecutive_failures == 0


# --- deadlines ------------------------------------------------------------------------------


async def test_a_hanging_upstream_gets_a_504_at_the_deadline(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    async with gateway(upstreams, upstream, timeout=0.5) as client:
        await hang_after_warming_up(client, upstream)
        deadlines_before = metric("mesh_gateway_upstream_deadline_exceeded_total")
        response, elapsed = await timed_get(client)
        body = await problem(response, 504)
        assert body["upstream"] == UPSTREAM
        assert 0.5 <= elapsed <= 0.5 + LATE_BY_AT_MOST
        assert metric("mesh_gateway_upstream_deadline_exceeded_total") - deadlines_before == 1
        left = upstream.shelf.time_left[0]
        assert left is not None
        assert left <= 0.5 + WIRE_ROUNDING  # the deadline travelled with the call
        await asyncio.wait_for(upstream.shelf.cancelled_event.wait(), 1.0)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"grpc-timeout": "200m"}, 0.2),
        ({"Request-Timeout": "0.2"}, 0.2),
        ({"grpc-timeout": "200000u", "Request-Timeout": "0.6"}, 0.2),
        ({"grpc-timeout": "10S"}, 0.5),  # longer than the route's: capped
        ({"Request-Timeout": "30"}, 0.5),
    ],
)
async def test_the_client_may_shorten_the_deadline_not_lengthen_it(
    upstreams: FakeUpstreams, upstream: Upstream, headers: dict[str, str], expected: float
) -> None:
    async with gateway(upstreams, upstream, timeout=0.5) as client:
        await hang_after_warming_up(client, upstream)
        response, elapsed = await timed_get(client, headers=headers)
        await problem(response, 504)
        assert expected <= elapsed <= expected + LATE_BY_AT_MOST
        left = upstream.shelf.time_left[0]
        assert left is not None
        assert left <= expected + WIRE_ROUNDING


@pytest.mark.parametrize(
    ("header", "value"),
    [("grpc-timeout", "1.5S"), ("grpc-timeout", "soon"), ("Request-Timeout", "1s")],
)
async def test_a_malformed_timeout_header_is_a_400_naming_it(
    upstreams: FakeUpstreams, upstream: Upstream, header: str, value: str
) -> None:
    async with gateway(upstreams, upstream) as client:
        body = await problem(await client.get(GET, headers={header: value}), 400)
        assert header in body["detail"]
        assert body["header"] == header
        assert upstream.shelf.total_calls == 0


async def test_time_spent_reading_the_body_comes_off_the_deadline(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"user": '
        await asyncio.sleep(0.4)  # a slow upload: the gateway waits for it
        yield b'"ada"}'

    async with gateway(upstreams, upstream, timeout=0.7) as client:
        await hang_after_warming_up(client, upstream)
        started = time.monotonic()
        response = await client.post(
            POST, data=slow_body(), headers={"Content-Type": "application/json"}
        )
        await problem(response, 504)
        elapsed = time.monotonic() - started
        assert 0.7 <= elapsed <= 0.7 + LATE_BY_AT_MOST  # not 0.4 + 0.7
        left = upstream.shelf.time_left[0]
        assert left is not None
        assert left <= 0.3 + WIRE_ROUNDING


async def test_an_expired_deadline_is_a_504_without_calling_the_upstream(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    async with gateway(upstreams, upstream) as client:
        await problem(await client.get(GET, headers={"grpc-timeout": "0n"}), 504)
        assert upstream.shelf.total_calls == 0


async def test_deadlines_count_for_the_breaker_only_when_the_gateway_set_them(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    breakers = BreakerSettings(consecutive_failures=3, minimum_calls=1000)
    async with gateway(upstreams, upstream, timeout=0.3, breakers=breakers) as client:
        await hang_after_warming_up(client, upstream)
        for _ in range(5):  # a client's own 20 ms says nothing about the upstream's health
            await problem(await client.get(GET, headers={"grpc-timeout": "20m"}), 504)
        assert breaker_of(client).state == CLOSED
        assert breaker_of(client).consecutive_failures == 0
        for _ in range(3):  # the route's 300 ms does
            await problem(await client.get(GET), 504)
        assert breaker_of(client).state == OPEN
        calls = upstream.shelf.total_calls
        response = await client.get(GET)
        await problem(response, 503)
        assert int(response.headers["Retry-After"]) == 5
        assert upstream.shelf.total_calls == calls


async def test_a_client_that_goes_away_cancels_the_upstream_call_and_counts_nothing(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    upstream.shelf.hang = True
    breakers = BreakerSettings(consecutive_failures=2, minimum_calls=1000)
    async with gateway(upstreams, upstream, timeout=3.0, breakers=breakers) as client:
        for attempt in range(1, 4):
            upstream.shelf.cancelled_event.clear()
            with pytest.raises(TimeoutError):
                await client.get(GET, timeout=aiohttp.ClientTimeout(total=0.1))
            # The gateway's handler is cancelled, and with it the gRPC call: the upstream
            # sees the cancellation long before the 3 s deadline.
            await asyncio.wait_for(upstream.shelf.cancelled_event.wait(), 1.0)
            assert upstream.shelf.cancelled == attempt
        assert breaker_of(client).state == CLOSED
        assert breaker_of(client).consecutive_failures == 0


# --- retries --------------------------------------------------------------------------------


async def unavailable_storm(client: Client, requests: int = 200, at_once: int = 10) -> list[int]:
    statuses: list[int] = []
    for _ in range(requests // at_once):
        responses = await asyncio.gather(*(client.get(GET) for _ in range(at_once)))
        for response in responses:
            await response.read()
            statuses.append(response.status)
    return statuses


async def test_retries_of_a_failing_upstream_stay_within_the_budget(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    upstream.shelf.fail_with = grpc.StatusCode.UNAVAILABLE
    async with gateway(upstreams, upstream) as client:  # breakers off: the budget alone
        retried_before = metric("mesh_gateway_upstream_retries_total")
        exhausted_before = metric("mesh_gateway_retry_budget_exhausted_total")
        statuses = await unavailable_storm(client)
        assert statuses == [503] * 200
        calls = upstream.shelf.calls["GetBook"]
        assert calls <= 1.2 * 200  # without the budget: 3 x 200
        assert calls > 200  # but it does retry
        assert metric("mesh_gateway_upstream_retries_total") - retried_before == calls - 200
        assert metric("mesh_gateway_retry_budget_exhausted_total") > exhausted_before


async def test_retries_and_the_breaker_together_stay_within_the_budget(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    upstream.shelf.fail_with = grpc.StatusCode.UNAVAILABLE
    async with gateway(upstreams, upstream, breakers=BreakerSettings()) as client:
        rejected_before = metric("mesh_gateway_breaker_rejections_total")
        statuses = await unavailable_storm(client)
        assert statuses == [503] * 200
        calls = upstream.shelf.calls["GetBook"]
        assert calls <= 1.2 * 200
        assert breaker_of(client).state == OPEN
        rejected = metric("mesh_gateway_breaker_rejections_total") - rejected_before
        assert rejected + calls >= 200  # every request either reached it or was turned away


async def test_a_retry_that_succeeds_answers_200(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    async with gateway(upstreams, upstream) as client:
        for _ in range(10):  # earn retry budget
            assert (await client.get(GET)).status == 200
        upstream.shelf.reset()
        upstream.shelf.fail_with = grpc.StatusCode.UNAVAILABLE

        async def recover() -> None:  # the replica comes back during the backoff
            await upstream.shelf.called.wait()
            upstream.shelf.fail_with = None

        recovering = asyncio.create_task(recover())
        response = await client.get(GET)
        await recovering
        assert response.status == 200
        assert upstream.shelf.calls["GetBook"] == 2


async def test_a_non_idempotent_post_is_never_retried(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    async with gateway(upstreams, upstream) as client:
        for _ in range(20):  # earn retry budget: 20 requests allow 4 retries
            assert (await client.get(GET)).status == 200
        upstream.shelf.reset()
        upstream.shelf.fail_with = grpc.StatusCode.UNAVAILABLE
        for _ in range(2):
            response = await client.post(POST, json={"user": "ada"})
            await problem(response, 503)
        assert upstream.shelf.calls["ReserveBook"] == 2
        await problem(await client.get(GET), 503)  # the control: a GET is retried twice
        assert upstream.shelf.calls["GetBook"] == 3


async def test_no_retry_starts_that_would_end_past_the_deadline(
    upstreams: FakeUpstreams, upstream: Upstream
) -> None:
    slow_backoff = RetrySettings(backoff_base_seconds=10.0, backoff_max_seconds=10.0)
    async with gateway(upstreams, upstream, timeout=0.5, retries=slow_backoff) as client:
        for _ in range(20):
            assert (await client.get(GET)).status == 200
        upstream.shelf.reset()
        upstream.shelf.fail_with = grpc.StatusCode.UNAVAILABLE
        for _ in range(10):
            response, elapsed = await timed_get(client)
            # The upstream's own answer, at once: no retry waited up to 10 s (a 504 after
            # it), though one whose backoff ends before the deadline (1 in 20) may start.
            await problem(response, 503)
            assert elapsed < 0.5


# --- chat's REST proxy ----------------------------------------------------------------------

CHAT_ROOMS = "/api/v1/chat/rooms"
SIGNED_IN = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def chat_gateway(
    upstreams: FakeUpstreams, chat: ControlledChat, breakers: BreakerSettings
) -> AsyncIterator[tuple[Client, TestServer]]:
    """The gateway in front of `chat` (one replica), verifying tokens with a JWKS upstream."""
    jwks = JwksServicer(KEY)  # type: ignore[abstract]  # only GetJwks is served
    users, users_address, _ = await start_grpc_server(
        lambda server: users_pb2_grpc.add_UsersServiceServicer_to_server(jwks, server)
    )
    chat_server = TestServer(chat.app(), host="127.0.0.1")
    await chat_server.start_server()
    settings = upstreams.settings(
        users_addresses=(users_address,),
        chat_urls=(str(chat_server.make_url("")).rstrip("/"),),
        breakers=breakers,
        rate_limits=RateLimitSettings(enabled=False),
    )
    try:
        async with serve(settings) as client:
            yield client, chat_server
    finally:
        await chat_server.close()
        await users.stop(None)


def chat_breaker(client: Client) -> UpstreamBreaker:
    breaker = client.app[UPSTREAMS_KEY].chat_breaker
    assert breaker is not None
    return breaker


async def test_chat_5xx_answers_open_its_breaker(upstreams: FakeUpstreams) -> None:
    chat = ControlledChat()
    breakers = BreakerSettings(consecutive_failures=3, minimum_calls=1000)
    async with chat_gateway(upstreams, chat, breakers) as (client, _):
        chat.status = 500
        for _ in range(3):
            response = await client.get(CHAT_ROOMS, headers=SIGNED_IN)
            assert response.status == 500  # chat's own answer, passed through
        response = await client.get(CHAT_ROOMS, headers=SIGNED_IN)
        body = await problem(response, 503)
        assert body["upstream"] == "chat"
        assert response.headers["Retry-After"] == "5"
        assert chat.calls == 3
        assert chat_breaker(client).state == OPEN


async def test_chat_4xx_answers_do_not_count(upstreams: FakeUpstreams) -> None:
    chat = ControlledChat()
    breakers = BreakerSettings(consecutive_failures=3, minimum_calls=1000)
    async with chat_gateway(upstreams, chat, breakers) as (client, _):
        chat.status = 404
        for _ in range(10):
            assert (await client.get(CHAT_ROOMS, headers=SIGNED_IN)).status == 404
        assert chat.calls == 10
        assert chat_breaker(client).state == CLOSED


async def test_a_stopped_chat_opens_its_breaker(upstreams: FakeUpstreams) -> None:
    chat = ControlledChat()
    breakers = BreakerSettings(consecutive_failures=2, minimum_calls=1000)
    async with chat_gateway(upstreams, chat, breakers) as (client, chat_server):
        assert (await client.get(CHAT_ROOMS, headers=SIGNED_IN)).status == 200
        await chat_server.close()  # connections refused
        for _ in range(2):
            body = await problem(await client.get(CHAT_ROOMS, headers=SIGNED_IN), 503)
            assert "circuit breaker" not in body["detail"]
        assert chat_breaker(client).state == OPEN
        body = await problem(await client.get(CHAT_ROOMS, headers=SIGNED_IN), 503)
        assert "circuit breaker" in body["detail"]
