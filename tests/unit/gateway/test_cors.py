"""CORS (gateway/cors.py) on a small app served on a loopback socket: preflights answered by
the middleware, headers on actual and streamed responses, the credential rule, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.cors import (
    ALLOWED_REQUEST_HEADERS,
    EXPOSED_HEADERS,
    PREFLIGHT_MAX_AGE_SECONDS,
    CorsPolicy,
    cors_middleware,
    cors_response_headers,
    requested_headers,
)
from gateway.methods import method_middleware
from mesh.problem import PROBLEM_CONTENT_TYPE, problem_middleware

Client = TestClient[web.Request, web.Application]
LISTED = "https://app.example"
OTHER = "https://other.example"
HANDLED = web.AppKey("cors_test_handled", list[str])  # the methods handlers saw


async def _items(request: web.Request) -> web.Response:
    request.app[HANDLED].append(request.method)
    return web.json_response({"method": request.method})


async def _streamed(request: web.Request) -> web.StreamResponse:
    """Like the chat proxy: prepares the response itself, with an upstream's CORS headers."""
    request.app[HANDLED].append(request.method)
    response = web.StreamResponse(
        headers={"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"}
    )
    await response.prepare(request)
    await response.write(b"streamed")
    return response


def app_for(origins: frozenset[str]) -> web.Application:
    policy = CorsPolicy(origins)
    app = web.Application(
        middlewares=[problem_middleware, cors_middleware(policy), method_middleware]
    )
    app[HANDLED] = []
    app.on_response_prepare.append(cors_response_headers(policy))
    app.router.add_get("/items", _items)
    app.router.add_post("/items", _items)
    app.router.add_route("*", "/proxy/{tail:.*}", _streamed)
    return app


@pytest_asyncio.fixture(scope="module")
async def client() -> AsyncIterator[Client]:
    async with TestClient(TestServer(app_for(frozenset({LISTED})), host="127.0.0.1")) as c:
        yield c


@pytest_asyncio.fixture(scope="module")
async def wildcard() -> AsyncIterator[Client]:
    origins = frozenset({"*", "https://named.example"})
    async with TestClient(TestServer(app_for(origins), host="127.0.0.1")) as c:
        yield c


def cors_headers(response: web.StreamResponse | object) -> dict[str, str]:
    headers = response.headers  # type: ignore[attr-defined]
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


def preflight(origin: str, method: str, headers: str | None = None) -> dict[str, str]:
    sent = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        sent["Access-Control-Request-Headers"] = headers
    return sent


async def test_a_preflight_from_a_listed_origin_is_answered_by_the_gateway(
    client: Client,
) -> None:
    handled = len(client.app[HANDLED])
    response = await client.options(
        "/items",
        headers=preflight(
            LISTED, "POST", "Content-Type, authorization, X-Request-ID, if-match, X-Secret"
        ),
    )
    assert response.status == 204
    assert cors_headers(response) == {
        "Access-Control-Allow-Origin": LISTED,
        "Access-Control-Allow-Methods": "GET,HEAD,POST",
        "Access-Control-Allow-Headers": "content-type, authorization, x-request-id, if-match",
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
        "Access-Control-Allow-Credentials": "true",
    }
    assert response.headers["Vary"] == "Origin"
    assert len(client.app[HANDLED]) == handled  # the handler never ran


async def test_every_listed_request_header_is_allowed(client: Client) -> None:
    asked = ", ".join(sorted(ALLOWED_REQUEST_HEADERS))
    response = await client.options("/items", headers=preflight(LISTED, "GET", asked))
    assert response.status == 204
    assert set(response.headers["Access-Control-Allow-Headers"].split(", ")) >= {
        "authorization", "content-type", "if-match", "if-none-match", "x-request-id",
        "request-timeout", "grpc-timeout",
    }  # fmt: skip


async def test_the_catch_all_route_allows_every_known_method(client: Client) -> None:
    response = await client.options("/proxy/rooms", headers=preflight(LISTED, "PATCH"))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Methods"] == "DELETE,GET,HEAD,PATCH,POST,PUT"
    assert "Access-Control-Allow-Headers" not in response.headers  # none asked for


@pytest.mark.parametrize(
    "origin", [OTHER, "null", "https://app.example.evil", "http://app.example"]
)
async def test_a_preflight_from_a_foreign_origin_is_a_403_problem_without_cors_headers(
    client: Client, origin: str
) -> None:
    response = await client.options("/items", headers=preflight(origin, "GET"))
    assert response.status == 403
    assert response.content_type == PROBLEM_CONTENT_TYPE
    assert "MESH_ALLOWED_ORIGINS" in (await response.json())["detail"]
    assert cors_headers(response) == {}
    assert response.headers["Vary"] == "Origin"


async def test_a_preflight_for_a_method_the_path_lacks_is_a_405_problem(client: Client) -> None:
    response = await client.options("/items", headers=preflight(LISTED, "DELETE"))
    assert response.status == 405
    assert response.content_type == PROBLEM_CONTENT_TYPE
    assert response.headers["Allow"] == "GET,HEAD,POST"
    assert cors_headers(response) == {}


async def test_a_preflight_for_an_unknown_path_is_a_404_problem(client: Client) -> None:
    response = await client.options("/nowhere", headers=preflight(LISTED, "GET"))
    assert response.status == 404
    assert cors_headers(response) == {}


async def test_an_actual_response_to_a_listed_origin_carries_cors_headers(client: Client) -> None:
    response = await client.post("/items", headers={"Origin": LISTED})
    assert response.status == 200
    assert cors_headers(response) == {
        "Access-Control-Allow-Origin": LISTED,
        "Access-Control-Expose-Headers": EXPOSED_HEADERS,
        "Access-Control-Allow-Credentials": "true",
    }
    assert response.headers["Vary"] == "Origin"
    for name in ("ETag", "X-Request-ID", "RateLimit", "RateLimit-Policy", "Retry-After",
                 "traceparent", "Location"):  # fmt: skip
        assert name in EXPOSED_HEADERS.split(", ")


async def test_an_actual_response_to_a_foreign_origin_has_no_cors_headers(client: Client) -> None:
    response = await client.get("/items", headers={"Origin": OTHER})
    assert response.status == 200  # served: the browser, not the server, withholds it
    assert cors_headers(response) == {}
    assert response.headers["Vary"] == "Origin"


async def test_a_response_without_origin_still_varies_on_it(client: Client) -> None:
    response = await client.get("/items")
    assert cors_headers(response) == {}
    assert response.headers["Vary"] == "Origin"


async def test_a_streamed_response_gets_the_gateways_headers_not_the_upstreams(
    client: Client,
) -> None:
    response = await client.get("/proxy/rooms", headers={"Origin": LISTED})
    assert await response.read() == b"streamed"
    assert response.headers["Access-Control-Allow-Origin"] == LISTED
    foreign = await client.get("/proxy/rooms", headers={"Origin": OTHER})
    assert cors_headers(foreign) == {}  # the upstream's "*" and credentials are dropped


async def test_problems_carry_cors_headers_so_a_page_can_read_them(client: Client) -> None:
    response = await client.get("/nowhere", headers={"Origin": LISTED})
    assert response.status == 404
    assert response.headers["Access-Control-Allow-Origin"] == LISTED


async def test_a_plain_options_is_answered_with_allow(client: Client) -> None:
    handled = len(client.app[HANDLED])
    response = await client.options("/proxy/rooms")  # the catch-all would forward it
    assert response.status == 204
    assert response.headers["Allow"] == "DELETE,GET,HEAD,PATCH,POST,PUT"
    assert len(client.app[HANDLED]) == handled


async def test_star_admits_any_origin_without_credentials(wildcard: Client) -> None:
    response = await wildcard.options("/items", headers=preflight(OTHER, "GET"))
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == OTHER
    assert "Access-Control-Allow-Credentials" not in response.headers
    actual = await wildcard.get("/items", headers={"Origin": OTHER})
    assert actual.headers["Access-Control-Allow-Origin"] == OTHER
    assert "Access-Control-Allow-Credentials" not in actual.headers
    named = await wildcard.get("/items", headers={"Origin": "https://named.example"})
    assert named.headers["Access-Control-Allow-Credentials"] == "true"


async def test_star_never_admits_the_null_origin(wildcard: Client) -> None:
    response = await wildcard.options("/items", headers=preflight("null", "GET"))
    assert response.status == 403
    actual = await wildcard.get("/items", headers={"Origin": "null"})
    assert cors_headers(actual) == {}


def test_the_policy_compares_normalized_origins() -> None:
    policy = CorsPolicy(frozenset({"https://app.example"}))
    assert policy.credentials("HTTPS://App.Example/") is True
    assert policy.credentials("https://app.example:8443") is None
    assert CorsPolicy(frozenset({"*"})).credentials("https://x.example") is False


def test_requested_headers_are_lowercased_and_deduplicated() -> None:
    assert requested_headers(" Content-Type,, AUTHORIZATION ,content-type") == [
        "content-type",
        "authorization",
    ]
    assert requested_headers("") == []
