"""The gateway's edge on a real socket, in front of the fake gRPC upstreams and a chat that
echoes what reaches it: security headers, client-supplied internal headers dropped (REST,
gRPC metadata, WebSocket), the method allow-list, CORS through the chat proxy, per-route
body limits (exactly 1 MiB passes, one byte more is a 413)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.edge import Edge, largest_body_limit
from gateway.policy import PolicyTable
from gateway.routing import build_routes
from gateway.settings import GatewaySettings, RateLimitSettings
from mesh.common import CommonSettings
from mesh.lifecycle import Lifecycle
from mesh.netbind import free_port
from mesh.settings import Env
from mesh.topology import GATEWAY
from mesh.web import serve_http
from tests.integration.gateway.conftest import SERVICES, FakeUpstreams, closed_address, serve
from tests.integration.gateway.fakes import TOKEN
from tests.integration.gateway.test_unary import problem

Client = TestClient[web.Request, web.Application]
MIB = 1024 * 1024
APP_ORIGIN = "https://app.example"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SEEN = web.AppKey("edge_chat_seen", list[dict[str, Any]])  # what each chat request carried

INTERNAL = {
    "X-Client-Address": "6.6.6.6",
    "X-Mesh-User": "admin",
    "x-MESH-roles": "admin",
    "grpc-status": "0",
    "grpc-encoding": "gzip",
    "X-Forwarded-For": "6.6.6.6",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "Forwarded": "for=6.6.6.6;proto=https",
    "X-Real-IP": "6.6.6.6",
}
PASSED = {"X-Custom": "kept", "grpc-timeout": "3S"}
PROXY_SET = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"}


# --- a chat that echoes -------------------------------------------------------------------


async def _echo_http(request: web.Request) -> web.Response:
    body = await request.read()
    seen = {
        "method": request.method,
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "bodyLength": len(body),
    }
    request.app[SEEN].append(seen)
    return web.json_response(
        seen,
        headers={  # what a careless upstream might send; the gateway's policy wins
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Credentials": "true",
            "Cache-Control": "public, max-age=60",
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


async def _echo_ws(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.send_bytes(orjson.dumps({k.lower(): v for k, v in request.headers.items()}))
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await ws.send_str(message.data)
    return ws


@pytest_asyncio.fixture(scope="module")
async def echo_chat() -> AsyncIterator[tuple[str, web.Application]]:
    app = web.Application(client_max_size=4 * MIB)
    app[SEEN] = []
    app.router.add_route("*", "/api/v1/chat/{tail:.*}", _echo_http)
    app.router.add_get("/ws/chat", _echo_ws)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), app
    finally:
        await server.close()


@pytest.fixture(scope="module")
def settings(
    upstreams: FakeUpstreams, jwks_address: str, echo_chat: tuple[str, web.Application]
) -> GatewaySettings:
    return upstreams.settings(
        users_addresses=(jwks_address,),
        chat_urls=(echo_chat[0],),
        body_limit_bytes=MIB,
        allowed_origins=frozenset({APP_ORIGIN}),
        # Every route rate-limited, against a Redis that is down: the local fallback answers.
        policies=PolicyTable.parse(
            {
                "group": [
                    {
                        "name": "general",
                        "routes": ["*"],
                        "rate": {"limit": 1000, "window_seconds": 1},
                    }
                ]
            }
        ),
        rate_limits=RateLimitSettings(
            redis_url=f"redis://{closed_address()}/0", redis_timeout_seconds=0.05
        ),
    )


@pytest_asyncio.fixture(scope="module")
async def gateway(settings: GatewaySettings) -> AsyncIterator[Client]:
    async with serve(settings) as client:
        yield client


@pytest_asyncio.fixture(scope="module")
async def behind_proxy(settings: GatewaySettings) -> AsyncIterator[Client]:
    """A gateway that trusts its peer (127.0.0.1) as its load balancer."""
    trusting = dataclasses.replace(
        settings,
        rate_limits=RateLimitSettings(
            enabled=False, trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),)
        ),
    )
    async with serve(trusting) as client:
        yield client


def last_seen(echo_chat: tuple[str, web.Application]) -> dict[str, Any]:
    return echo_chat[1][SEEN][-1]


# --- security headers ---------------------------------------------------------------------

SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/openapi.json", {}, 200),
        ("GET", "/api/v1/nothing/here", {}, 404),
        ("TRACE", "/api/v1/products/p1", {}, 405),
        ("GET", "/api/v1/products/nope", {}, 404),  # a problem from the upstream
        ("GET", "/api/v1/chat/rooms", AUTH, 200),  # streamed by the chat proxy
        ("GET", "/api/v1/chat/rooms", {}, 401),
        ("OPTIONS", "/api/v1/products/p1", {}, 204),
        (
            "OPTIONS",
            "/api/v1/products/p1",
            {"Origin": APP_ORIGIN, "Access-Control-Request-Method": "GET"},
            204,
        ),
    ],
)
async def test_every_response_carries_the_security_headers(
    gateway: Client, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    response = await gateway.request(method, path, headers=headers)
    assert response.status == status, await response.text()
    for name, value in SECURITY.items():
        assert response.headers[name] == value, name
    assert "Strict-Transport-Security" not in response.headers  # plain HTTP


async def test_authenticated_answers_are_no_store(gateway: Client) -> None:
    signed_in = await gateway.get("/api/v1/chat/rooms", headers=AUTH)
    assert signed_in.status == 200
    assert signed_in.headers["Cache-Control"] == "no-store"  # chat's "public" replaced
    unary = await gateway.get("/api/v1/products/p1", headers=AUTH)
    assert unary.status == 200
    assert unary.headers["Cache-Control"] == "no-store"
    anonymous = await gateway.get("/api/v1/products/p1")
    assert "Cache-Control" not in anonymous.headers


async def test_hsts_only_when_a_trusted_proxy_says_the_client_used_tls(
    gateway: Client, behind_proxy: Client
) -> None:
    https = {"X-Forwarded-Proto": "https"}
    trusted = await behind_proxy.get("/openapi.json", headers=https)
    assert trusted.headers["Strict-Transport-Security"] == "max-age=31536000"
    plain = await behind_proxy.get("/openapi.json", headers={"X-Forwarded-Proto": "http"})
    assert "Strict-Transport-Security" not in plain.headers
    chained = await behind_proxy.get(
        "/openapi.json", headers={"X-Forwarded-Proto": "https, http"}
    )  # the nearest proxy's word counts
    assert "Strict-Transport-Security" not in chained.headers
    forged = await gateway.get("/openapi.json", headers=https)  # the peer is not trusted
    assert "Strict-Transport-Security" not in forged.headers


# --- internal headers ---------------------------------------------------------------------


async def test_internal_headers_never_reach_chat(
    gateway: Client, echo_chat: tuple[str, web.Application]
) -> None:
    response = await gateway.post(
        "/api/v1/chat/rooms", headers={**AUTH, **INTERNAL, **PASSED}, json={"name": "x"}
    )
    assert response.status == 200, await response.text()
    seen = last_seen(echo_chat)["headers"]
    for name in INTERNAL:
        assert name.lower() not in seen, name
    assert seen["x-custom"] == "kept"
    assert seen["grpc-timeout"] == "3S"  # a client's deadline is the client's to set
    assert seen["authorization"] == AUTH["Authorization"]
    assert response.headers["RateLimit-Policy"]  # what the handler stored is not lost


async def test_a_trusted_proxys_forwarding_headers_pass(
    behind_proxy: Client, echo_chat: tuple[str, web.Application]
) -> None:
    response = await behind_proxy.get("/api/v1/chat/rooms", headers={**AUTH, **INTERNAL})
    assert response.status == 200
    seen = last_seen(echo_chat)["headers"]
    assert {name for name in PROXY_SET if name in seen} == PROXY_SET
    assert "x-client-address" not in seen
    assert "x-mesh-user" not in seen
    assert "grpc-status" not in seen


async def test_internal_headers_never_reach_a_grpc_service(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    response = await gateway.get("/api/v1/products/p1", headers={**INTERNAL, **PASSED})
    assert response.status == 200
    # The handler ran on a copy without those headers; what it stored for the response hooks
    # (the rate-limit fields) still reaches the response, which aiohttp prepares itself.
    assert response.headers["RateLimit-Policy"]
    metadata = upstreams.catalog.metadata[-1]
    assert metadata["x-client-address"] == "127.0.0.1"  # the gateway's, not the client's
    for name in ("x-mesh-user", "x-mesh-roles", "x-forwarded-for", "forwarded", "x-custom"):
        assert name not in metadata, name
    assert metadata.get("grpc-status") is None


async def test_internal_headers_never_reach_chat_over_a_websocket(gateway: Client) -> None:
    async with gateway.ws_connect("/ws/chat", headers={**AUTH, **INTERNAL}) as ws:
        seen = orjson.loads((await ws.receive(timeout=5)).data)
        await ws.send_str("still relayed")
        assert (await ws.receive(timeout=5)).data == "still relayed"
    for name in INTERNAL:
        assert name.lower() not in seen, name
    assert seen["authorization"] == AUTH["Authorization"]


# --- methods ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/api/v1/products/p1", "DELETE,GET,HEAD,PATCH"),
        ("TRACE", "/api/v1/chat/rooms", "GET,HEAD,POST"),  # chat's documented methods
        ("PROPFIND", "/api/v1/chat/rooms/r1/messages", "GET,HEAD"),
        ("DELETE", "/api/v1/chat/rooms/r1/members", "POST"),
        ("PROPFIND", "/api/v1/chat/other", "DELETE,GET,HEAD,PATCH,POST,PUT"),  # to chat
        ("TRACE", "/openapi.json", "GET,HEAD"),
        ("PROPFIND", "/ws/chat", "GET,HEAD"),
        ("TRACE", "/api/v1/nothing/here", ""),
        ("PUT", "/openapi.json", "GET,HEAD"),
    ],
)
async def test_trace_and_unknown_methods_are_405_problems_on_every_path(
    gateway: Client,
    echo_chat: tuple[str, web.Application],
    method: str,
    path: str,
    allow: str,
) -> None:
    before = len(echo_chat[1][SEEN])
    response = await gateway.request(method, path, headers=AUTH)
    body = await problem(response, 405)
    assert response.headers["Allow"] == allow
    assert method in body["detail"]
    assert len(echo_chat[1][SEEN]) == before  # chat was never asked


def status_line(head: bytes) -> bytes:
    """`head`'s status code and reason."""
    return head.split(b"\r\n", 1)[0].split(b" ", 1)[1]


async def raw_exchange(port: int, data: bytes) -> tuple[bytes, dict[str, Any]]:
    """Send `data`, read the answer to the close: (head, parsed problem body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, orjson.loads(body)


async def test_methods_the_http_parser_refuses_are_problems_too(settings: GatewaySettings) -> None:
    """Served as a process serves it (`serve_http`): the parser refuses some methods before
    any middleware; those answers are problems as well."""
    port, ops_port = free_port(), free_port()
    common = CommonSettings.from_env(
        Env({GATEWAY.port_var: str(port), GATEWAY.ops_port_var: str(ops_port)}), GATEWAY
    )
    lifecycle = Lifecycle()
    app = create_app(settings, services=SERVICES)
    serving = asyncio.create_task(serve_http(common, lifecycle, app))
    try:
        while not lifecycle.ready:
            assert not serving.done()
            await asyncio.sleep(0.01)
        head, body = await raw_exchange(port, b"FOO /api/v1/chat/rooms HTTP/1.1\r\nHost: g\r\n\r\n")
        assert status_line(head) == b"405 Method Not Allowed"  # HTTP/1.0: no request parsed
        assert b"Content-Type: application/problem+json" in head
        assert b"Allow: DELETE,GET,HEAD,PATCH,POST,PUT" in head
        assert (body["status"], body["title"]) == (405, "Method Not Allowed")
        assert body["requestId"].encode() in head  # also in X-Request-ID
        head, body = await raw_exchange(port, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        assert status_line(head) == b"400 Bad Request"
        assert "HTTPS" in body["detail"]
        head, body = await raw_exchange(port, b"GET /x HTTP/1.1\r\nBad Header\r\n\r\n")
        assert status_line(head) == b"400 Bad Request"
        assert body["detail"].startswith("Malformed request")
        head, body = await raw_exchange(
            port, b"TRACE /openapi.json HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n"
        )
        assert head.startswith(b"HTTP/1.1 405 ")  # a method the parser knows: the app's 405
        assert b"Allow: GET,HEAD\r\n" in head
        assert b"X-Content-Type-Options: nosniff" in head
    finally:
        lifecycle.request_stop()
        await asyncio.wait_for(serving, 10)


async def test_a_plain_options_is_answered_by_the_gateway(
    gateway: Client, echo_chat: tuple[str, web.Application]
) -> None:
    before = len(echo_chat[1][SEEN])
    response = await gateway.options("/api/v1/chat/rooms", headers=AUTH)
    assert response.status == 204
    assert response.headers["Allow"] == "GET,HEAD,POST"  # as /openapi.json documents it
    assert len(echo_chat[1][SEEN]) == before


# --- CORS through the whole gateway ----------------------------------------------------------


async def test_cors_preflight_and_answers_through_the_gateway(gateway: Client) -> None:
    preflight = await gateway.options(
        "/api/v1/products/p1",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "authorization, content-type, if-match",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Methods"] == "DELETE,GET,HEAD,PATCH"
    assert preflight.headers["Access-Control-Allow-Headers"] == (
        "authorization, content-type, if-match"
    )
    streamed = await gateway.get("/api/v1/chat/rooms", headers={**AUTH, "Origin": APP_ORIGIN})
    assert streamed.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert streamed.headers["Access-Control-Allow-Credentials"] == "true"
    assert "RateLimit" in streamed.headers["Access-Control-Expose-Headers"]
    foreign = await gateway.get(
        "/api/v1/chat/rooms", headers={**AUTH, "Origin": "https://evil.example"}
    )
    assert not [h for h in foreign.headers if h.lower().startswith("access-control-")]
    refused = await gateway.options(
        "/api/v1/chat/rooms",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    await problem(refused, 403)
    assert not [h for h in refused.headers if h.lower().startswith("access-control-")]


# --- body limits --------------------------------------------------------------------------


def json_of_size(size: int) -> bytes:
    """A ReserveBook body of exactly `size` bytes."""
    empty = orjson.dumps({"user": "", "days": 3})
    return orjson.dumps({"user": "u" * (size - len(empty)), "days": 3})


async def test_a_transcoded_route_takes_exactly_its_limit(gateway: Client) -> None:
    exact = json_of_size(MIB)
    assert len(exact) == MIB
    headers = {"Content-Type": "application/json"}
    response = await gateway.post("/v1/books/b1:reserve", data=exact, headers=headers)
    assert response.status == 200, await response.text()
    over = await gateway.post("/v1/books/b1:reserve", data=json_of_size(MIB + 1), headers=headers)
    body = await problem(over, 413)
    assert str(MIB) in body["detail"]


async def test_the_chat_proxy_takes_exactly_its_limit(
    gateway: Client, echo_chat: tuple[str, web.Application]
) -> None:
    response = await gateway.post("/api/v1/chat/rooms", data=b"x" * MIB, headers=AUTH)
    assert response.status == 200
    assert (await response.json())["bodyLength"] == MIB
    before = len(echo_chat[1][SEEN])
    over = await gateway.post("/api/v1/chat/rooms", data=b"x" * (MIB + 1), headers=AUTH)
    await problem(over, 413)
    assert len(echo_chat[1][SEEN]) == before  # refused before anything went upstream


async def test_a_chunked_body_to_the_chat_proxy_is_limited_too(
    gateway: Client, echo_chat: tuple[str, web.Application]
) -> None:
    async def chunks(total: int) -> AsyncIterator[bytes]:
        for start in range(0, total, 64 * 1024):
            yield b"y" * min(64 * 1024, total - start)

    response = await gateway.post("/api/v1/chat/rooms", data=chunks(MIB), headers=AUTH)
    assert response.status == 200
    assert (await response.json())["bodyLength"] == MIB
    before = len(echo_chat[1][SEEN])
    over = await gateway.post("/api/v1/chat/rooms", data=chunks(MIB + 1), headers=AUTH)
    await problem(over, 413)
    assert len(echo_chat[1][SEEN]) == before


async def test_the_chat_proxy_uses_its_own_routes_limit(
    settings: GatewaySettings, echo_chat: tuple[str, web.Application]
) -> None:
    policies = PolicyTable.parse(
        {"group": [{"name": "chat", "routes": ["chat.http"], "body_limit_bytes": 2 * MIB}]}
    )
    bigger = dataclasses.replace(
        settings, policies=policies, rate_limits=RateLimitSettings(enabled=False)
    )
    async with serve(bigger) as client:
        response = await client.post("/api/v1/chat/rooms", data=b"z" * (2 * MIB), headers=AUTH)
        assert response.status == 200
        assert (await response.json())["bodyLength"] == 2 * MIB
        over = await client.post("/api/v1/chat/rooms", data=b"z" * (2 * MIB + 1), headers=AUTH)
        await problem(over, 413)
        unary = await client.post(
            "/v1/books/b1:reserve",
            data=json_of_size(MIB + 1),
            headers={"Content-Type": "application/json"},
        )
        await problem(unary, 413)  # other routes keep the default
    routes = build_routes(SERVICES)
    assert largest_body_limit(bigger, routes) == 2 * MIB
    assert Edge.for_gateway(bigger, routes).client_max_size == 2 * MIB
    assert Edge.for_gateway(settings, routes).client_max_size == MIB


async def test_an_oversized_body_does_not_poison_the_connection(gateway: Client) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = gateway.make_url("/api/v1/chat/rooms")
        async with session.post(url, data=b"x" * (MIB + 1), headers=AUTH) as over:
            assert over.status == 413
        async with session.get(url, headers=AUTH) as after:
            assert after.status == 200
