"""The WebSocket proxy /ws/chat against a small aiohttp chat app (tests/integration/gateway/
fakes.py), with the gateway's own handshake checks (tokens verified against a JWK Set served
over gRPC like the users service's) and the choice among several chat replicas."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from gateway.keys import UPSTREAMS_KEY
from tests.integration.gateway.conftest import FakeUpstreams, closed_address, serve
from tests.integration.gateway.fakes import CHAT_CLOSES, TOKEN, chat_app
from tests.integration.gateway.test_unary import problem

Client = TestClient[web.Request, web.Application]
GOOD = {"Authorization": f"Bearer {TOKEN}", "X-Request-ID": "ws-1"}


@pytest_asyncio.fixture(scope="module")
async def gateway(upstreams: FakeUpstreams, jwks_address: str) -> AsyncIterator[Client]:
    settings = upstreams.settings(
        users_addresses=(jwks_address,), allowed_origins=frozenset({"https://app.example"})
    )
    async with serve(settings) as client:
        yield client


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


async def next_close(upstreams: FakeUpstreams) -> tuple[int | None, str]:
    """How the chat app saw its last connection end: (close code, request id)."""
    return await asyncio.wait_for(upstreams.chat[CHAT_CLOSES].get(), timeout=5)


async def test_frames_are_relayed_both_ways(gateway: Client, upstreams: FakeUpstreams) -> None:
    async with gateway.ws_connect("/ws/chat", headers=GOOD) as ws:
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        message = await ws.receive(timeout=5)
        assert (message.type, message.data) == (WSMsgType.BINARY, b"\x00\x01binary")
        for i in range(50):  # many frames, in order
            await ws.send_str(f"n{i}")
        assert [(await ws.receive(timeout=5)).data for _ in range(50)] == [
            f"n{i}" for i in range(50)
        ]
    await next_close(upstreams)


async def test_headers_subprotocol_and_query_reach_chat(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    async with gateway.ws_connect(
        "/ws/chat?room=lobby",
        headers=GOOD,
        protocols=("other", "chat.v1"),
        origin="https://app.example",
    ) as ws:
        assert ws.protocol == "chat.v1"
        await ws.send_str("whoami")
        seen = orjson.loads((await ws.receive(timeout=5)).data)
    assert seen == {
        "authorization": f"Bearer {TOKEN}",
        "origin": "https://app.example",
        "requestId": "ws-1",
        "query": {"room": "lobby"},
        "protocol": "chat.v1",
    }
    await next_close(upstreams)


async def test_upstream_close_code_reaches_the_client(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    async with gateway.ws_connect("/ws/chat", headers=GOOD) as ws:
        await ws.send_str("close:4001")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert (message.data, message.extra) == (4001, "bye")
    assert ws.close_code == 4001
    assert (await next_close(upstreams))[0] == 4001


async def test_client_close_code_reaches_chat(gateway: Client, upstreams: FakeUpstreams) -> None:
    async with gateway.ws_connect("/ws/chat", headers=GOOD) as ws:
        await ws.send_str("ping")
        assert (await ws.receive(timeout=5)).data == "ping"
        await ws.close(code=4002, message=b"done")
    assert await next_close(upstreams) == (4002, "ws-1")


async def test_chat_vanishing_closes_the_client(gateway: Client, upstreams: FakeUpstreams) -> None:
    async with gateway.ws_connect("/ws/chat", headers=GOOD) as ws:
        await ws.send_str("drop")
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert message.data == aiohttp.WSCloseCode.BAD_GATEWAY
    assert (await next_close(upstreams))[0] is None


async def test_client_vanishing_closes_chat(gateway: Client, upstreams: FakeUpstreams) -> None:
    ws = await gateway.ws_connect("/ws/chat", headers=GOOD)
    await ws.send_str("ping")
    assert (await ws.receive(timeout=5)).data == "ping"
    ws._response.connection.transport.abort()  # type: ignore[union-attr]  # no close frame
    code, _ = await next_close(upstreams)
    assert code == aiohttp.WSCloseCode.GOING_AWAY


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({}, 401, "sign in first"),
        ({"Authorization": "Bearer bad"}, 401, "malformed token"),
        ({"Authorization": "Basic eDp5"}, 401, "Bearer <access token>"),
        ({"Sec-WebSocket-Protocol": "bearer"}, 401, "followed by the access token"),
        ({**GOOD, "Origin": "https://evil.example"}, 403, "Origin"),
    ],
)
async def test_the_gateway_checks_the_handshake_before_chat(
    gateway: Client, headers: dict[str, str], status: int, detail: str
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.ws_connect("/ws/chat", headers=headers)
    assert refused.value.status == status
    response = await gateway.get("/ws/chat", headers={**UPGRADE, **headers})
    body = await problem(response, status)
    assert detail in body["detail"]
    assert "refused" not in body["detail"]  # the gateway's own answer: chat was not asked
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_the_bearer_subprotocol_pair_is_accepted(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    async with gateway.ws_connect("/ws/chat", protocols=("bearer", TOKEN)) as ws:
        await ws.send_str("ping")
        assert (await ws.receive(timeout=5)).data == "ping"
    await next_close(upstreams)


async def test_a_handshake_chat_refuses_is_passed_through_as_a_problem(
    upstreams: FakeUpstreams, jwks_address: str
) -> None:
    settings = upstreams.settings(users_addresses=(jwks_address,), allowed_origins=frozenset({"*"}))
    headers = {**GOOD, "Origin": "https://evil.example"}  # the fake chat refuses it
    async with serve(settings) as gateway:
        response = await gateway.get("/ws/chat", headers={**UPGRADE, **headers})
        body = await problem(response, 403)
    assert "refused" in body["detail"]


async def test_pings_and_pongs_are_relayed_end_to_end(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    async with gateway.ws_connect("/ws/chat", headers=GOOD, autoping=False) as ws:
        await ws.ping(b"are you there")
        message = await ws.receive(timeout=5)  # the fake chat (aiohttp) answers it
        assert (message.type, message.data) == (WSMsgType.PONG, b"are you there")
    await next_close(upstreams)


async def test_sockets_go_to_the_replica_with_fewest_and_skip_dead_ones(
    upstreams: FakeUpstreams, jwks_address: str
) -> None:
    second = TestServer(chat_app(), host="127.0.0.1")
    await second.start_server()
    second_url = str(second.make_url("")).rstrip("/")
    dead = f"http://{closed_address()}"
    settings = upstreams.settings(
        users_addresses=(jwks_address,), chat_urls=(dead, upstreams.chat_url, second_url)
    )
    try:
        async with serve(settings) as gateway:
            sockets = [await gateway.ws_connect("/ws/chat", headers=GOOD) for _ in range(4)]
            counts = gateway.app[UPSTREAMS_KEY].chat_sockets
            assert counts == {dead: 0, upstreams.chat_url: 2, second_url: 2}
            for ws in sockets:
                await ws.close()
            for _ in range(50):
                if not any(counts.values()):
                    break
                await asyncio.sleep(0.05)
            assert counts == {dead: 0, upstreams.chat_url: 0, second_url: 0}
    finally:
        await second.close()
    for _ in range(2):
        await next_close(upstreams)


async def test_chat_down_is_a_503_problem(upstreams: FakeUpstreams, jwks_address: str) -> None:
    settings = upstreams.settings(
        users_addresses=(jwks_address,), chat_urls=(f"http://{closed_address()}",)
    )
    async with serve(settings) as client:
        response = await client.get("/ws/chat", headers={**UPGRADE, **GOOD})
        body = await problem(response, 503)
    assert "'chat'" in body["detail"]


async def test_a_plain_get_is_426(gateway: Client) -> None:
    response = await gateway.get("/ws/chat")
    await problem(response, 426)
    assert response.headers["Upgrade"] == "websocket"


async def test_shutdown_closes_both_sides_with_going_away(
    upstreams: FakeUpstreams, jwks_address: str
) -> None:
    settings = upstreams.settings(users_addresses=(jwks_address,))
    async with serve(settings) as gateway, aiohttp.ClientSession() as session:
        ws = await session.ws_connect(gateway.make_url("/ws/chat"), headers=GOOD)
        await ws.send_str("ping")
        assert (await ws.receive(timeout=5)).data == "ping"
        shutdown = asyncio.create_task(gateway.server.close())
        message = await ws.receive(timeout=5)
        assert (message.type, message.data) == (WSMsgType.CLOSE, aiohttp.WSCloseCode.GOING_AWAY)
        await asyncio.wait_for(shutdown, timeout=10)
    assert (await next_close(upstreams))[0] == aiohttp.WSCloseCode.GOING_AWAY


async def test_a_frame_over_the_limit_closes_both_sides(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    async with gateway.ws_connect("/ws/chat", headers=GOOD) as ws:
        await ws.send_bytes(b"\x00" * (64 * 1024 + 1))
        message = await ws.receive(timeout=5)
        assert message.type is WSMsgType.CLOSE
        assert message.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
    code, _ = await next_close(upstreams)
    assert code == aiohttp.WSCloseCode.GOING_AWAY


async def test_a_large_frame_within_the_limit_is_relayed_whole_both_ways(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    payload = bytes(range(256)) * 255  # 65,280 bytes: one frame, just under the limit
    async with gateway.ws_connect("/ws/chat", headers=GOOD) as ws:
        await ws.send_bytes(payload)
        message = await ws.receive(timeout=5)
        assert (message.type, message.data) == (WSMsgType.BINARY, payload)
    await next_close(upstreams)
