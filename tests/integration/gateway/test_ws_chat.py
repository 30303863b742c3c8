"""The gateway in front of real chat replicas (and a real users service for the keys): the
WebSocket and the REST routes end to end, replica choice, failover and a replica restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from websockets.exceptions import InvalidStatus

from gateway.app import create_app
from gateway.keys import UPSTREAMS_KEY
from gateway.settings import GatewaySettings
from mesh.harness import BackingUrls
from tests.integration.gateway.conftest import closed_address
from tests.integration.services.chat_support import Chat, ChatEnv, chat_env, client, rest


@pytest_asyncio.fixture(scope="module")
async def env(backing: BackingUrls) -> AsyncIterator[ChatEnv]:
    async with chat_env(backing) as env:
        yield env


@pytest_asyncio.fixture(scope="module")
async def replicas(env: ChatEnv) -> AsyncIterator[tuple[Chat, Chat]]:
    async with env.chat() as one, env.chat() as two:
        yield one, two


@contextlib.asynccontextmanager
async def gateway_for(env: ChatEnv, *chat_urls: str) -> AsyncIterator[TestServer]:
    nowhere = (closed_address(),)
    settings = GatewaySettings(
        users_addresses=(env.users.address,),
        catalog_addresses=nowhere,
        analytics_addresses=nowhere,
        chat_urls=chat_urls,
        upstream_timeout_seconds=2.0,
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@pytest_asyncio.fixture(scope="module")
async def gateway(env: ChatEnv, replicas: tuple[Chat, Chat]) -> AsyncIterator[TestServer]:
    async with gateway_for(env, *(r.http for r in replicas)) as server:
        yield server


def ws_url(server: TestServer) -> str:
    return str(server.make_url("/ws/chat")).replace("http://", "ws://")


def http_url(server: TestServer, path: str = "") -> str:
    return str(server.make_url(f"/api/v1/chat{path}"))


def socket_counts(server: TestServer) -> dict[str, int]:
    app: web.Application = server.app  # type: ignore[assignment]
    return dict(app[UPSTREAMS_KEY].chat_sockets)


async def test_rest_routes_through_the_gateway(env: ChatEnv, gateway: TestServer) -> None:
    owner, token = env.user()
    member, member_token = env.user()
    status, room = await rest(
        "POST", http_url(gateway, "/rooms"), token, {"name": "g", "private": True}
    )
    assert status == 201
    assert room["ownerId"] == owner
    status, _ = await rest(
        "POST", http_url(gateway, f"/rooms/{room['id']}/members"), token, {"userId": member}
    )
    assert status == 200
    status, page = await rest("GET", http_url(gateway, "/rooms"), member_token)
    assert room["id"] in [r["id"] for r in page["rooms"]]
    status, history = await rest(
        "GET", http_url(gateway, f"/rooms/{room['id']}/messages"), member_token
    )
    assert (status, history) == (200, {"messages": []})
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            http_url(gateway, "/rooms/nope/messages"),
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "via-gw"},
        ) as response,
    ):
        assert response.status == 404
        assert response.content_type == "application/problem+json"
        assert response.headers["X-Request-ID"] == "via-gw"
        assert (await response.json())["requestId"] == "via-gw"  # chat saw the same id


async def test_rest_needs_a_signed_in_user_at_the_gateway(gateway: TestServer) -> None:
    for token in (None, "garbage"):
        status, problem = await rest("GET", http_url(gateway, "/rooms"), token)
        assert (status, problem["status"]) == (401, 401)


async def test_rest_fails_over_to_a_live_replica(env: ChatEnv, replicas: tuple[Chat, Chat]) -> None:
    _, token = env.user()
    dead = f"http://{closed_address()}"
    async with gateway_for(env, dead, replicas[0].http) as server:
        for _ in range(3):
            status, _ = await rest("GET", http_url(server, "/rooms"), token)
            assert status == 200
    async with gateway_for(env, dead) as server:
        status, problem = await rest("GET", http_url(server, "/rooms"), token)
        assert (status, problem["upstream"]) == (503, "chat")


async def test_websocket_through_the_gateway_across_replicas(
    env: ChatEnv, gateway: TestServer
) -> None:
    alice, token = env.user()
    bob, bob_token = env.user()
    _, room = await rest("POST", http_url(gateway, "/rooms"), token, {"name": "x"})
    async with (
        client(ws_url(gateway), token) as a,
        client(ws_url(gateway), None, subprotocols=["bearer", bob_token]) as b,
    ):
        assert b.connection.subprotocol == "bearer"  # chosen by chat, passed on
        assert sorted(socket_counts(gateway).values()) == [1, 1]  # one on each replica
        await a.join(room["id"])
        joined = await b.join(room["id"])
        assert set(joined["presence"]) == {alice, bob}
        ack = await b.say(room["id"], "hello over two replicas")
        message = await a.expect("message")
        assert (message["seq"], message["userId"], message["text"]) == (
            ack["seq"], bob, "hello over two replicas",
        )  # fmt: skip
        await a.connection.send(b"binary")  # chat's close code reaches the client
        assert (await a.recv())["code"] == "binary_frame"
        assert await a.close_code() == 1003


async def test_the_gateway_refuses_before_the_upgrade(env: ChatEnv, gateway: TestServer) -> None:
    _, token = env.user()
    for headers, status in (
        ({}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({"Authorization": f"Bearer {token}", "Origin": "https://evil.example"}, 403),
    ):
        with pytest.raises(InvalidStatus) as refusal:
            async with client(ws_url(gateway), None, additional_headers=headers):
                pass
        assert refusal.value.response.status_code == status


async def test_a_restarting_replica_sends_clients_to_another(
    env: ChatEnv, replicas: tuple[Chat, Chat]
) -> None:
    _, token = env.user()
    _, room = await rest("POST", f"{replicas[0].http}/api/v1/chat/rooms", token, {"name": "r"})
    async with (
        env.chat() as leaving,
        gateway_for(env, leaving.http, replicas[0].http) as server,
        client(ws_url(server), token) as first,
        client(ws_url(server), token) as second,
    ):
        assert socket_counts(server) == {leaving.http: 1, replicas[0].http: 1}
        await first.join(room["id"])
        await second.join(room["id"])
        ack = await first.say(room["id"], "before")
        leaving.stop()
        closing = [asyncio.create_task(c.close_code()) for c in (first, second)]
        done, pending = await asyncio.wait(closing, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        assert [t.result() for t in done] == [1012]  # relayed by the gateway
        async with client(ws_url(server), token) as again:
            joined = await again.join(room["id"], since=0)
            assert joined["recovered"] is True
            assert (await again.expect("message"))["seq"] == ack["seq"]
            assert socket_counts(server)[replicas[0].http] >= 1
