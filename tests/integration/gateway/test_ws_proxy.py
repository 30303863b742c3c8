"""The WebSocket proxy /ws/chat against a small aiohttp chat app."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from tests.integration.gateway.conftest import FakeUpstreams, closed_address, serve
from tests.integration.gateway.fakes import CHAT_CLOSES
from tests.integration.gateway.test_unary import problem

Client = TestClient[web.Request, web.Application]
GOOD = {"Authorization": "Bearer good", "X-Request-ID": "ws-1"}
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
        "authorization": "Bearer good",
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
    ("headers", "status"),
    [({"Authorization": "Bearer bad"}, 401), ({"Origin": "https://evil.example"}, 403)],
)
async def test_refused_handshake_status_is_passed_through_as_a_problem(
    gateway: Client, headers: dict[str, str], status: int
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gateway.ws_connect("/ws/chat", headers=headers)
    assert refused.value.status == status
    response = await gateway.get("/ws/chat", headers={**UPGRADE, **headers})
    body = await problem(response, status)
    assert "refused" in body["detail"]
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_chat_down_is_a_503_problem(upstreams: FakeUpstreams) -> None:
    settings = upstreams.settings(chat_urls=(f"http://{closed_address()}",))
    async with serve(settings) as client:
        response = await client.get("/ws/chat", headers={**UPGRADE, **GOOD})
        body = await problem(response, 503)
    assert "'chat'" in body["detail"]


async def test_a_plain_get_is_426(gateway: Client) -> None:
    response = await gateway.get("/ws/chat")
    await problem(response, 426)
    assert response.headers["Upgrade"] == "websocket"


async def test_shutdown_closes_both_sides_with_going_away(upstreams: FakeUpstreams) -> None:
    async with serve(upstreams.settings()) as gateway, aiohttp.ClientSession() as session:
        ws = await session.ws_connect(gateway.make_url("/ws/chat"), headers=GOOD)
        await ws.send_str("ping")
        assert (await ws.receive(timeout=5)).data == "ping"
        shutdown = asyncio.create_task(gateway.server.close())
        message = await ws.receive(timeout=5)
        assert (message.type, message.data) == (WSMsgType.CLOSE, aiohttp.WSCloseCode.GOING_AWAY)
        await asyncio.wait_for(shutdown, timeout=10)
    assert (await next_close(upstreams))[0] == aiohttp.WSCloseCode.GOING_AWAY
