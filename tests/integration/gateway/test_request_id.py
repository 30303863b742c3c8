"""X-Request-ID through the gateway: accepted or generated, echoed, forwarded upstream."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.integration.gateway.conftest import FakeUpstreams

Client = TestClient[web.Request, web.Application]


async def test_a_sane_client_id_is_echoed_and_forwarded(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    response = await gateway.get("/api/v1/products/p1", headers={"X-Request-ID": "abc.DEF_1-2"})
    assert response.status == 200
    assert response.headers["X-Request-ID"] == "abc.DEF_1-2"
    assert upstreams.catalog.metadata[-1]["x-request-id"] == "abc.DEF_1-2"


async def test_an_id_is_generated_when_absent(gateway: Client, upstreams: FakeUpstreams) -> None:
    response = await gateway.get("/api/v1/products/p1")
    generated = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert upstreams.catalog.metadata[-1]["x-request-id"] == generated
    again = await gateway.get("/api/v1/products/p1")
    assert again.headers["X-Request-ID"] != generated


async def test_an_insane_id_is_replaced(gateway: Client) -> None:
    for bad in ("a" * 129, "has space", "semi;colon", "é"):
        response = await gateway.get("/api/v1/products/p1", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"]), bad
    longest = "a" * 128
    response = await gateway.get("/api/v1/products/p1", headers={"X-Request-ID": longest})
    assert response.headers["X-Request-ID"] == longest


async def test_errors_carry_the_id_in_header_and_body(gateway: Client) -> None:
    for method, path in (("GET", "/nowhere"), ("DELETE", "/api/v1/products/p1"),
                         ("GET", "/api/v1/products/missing")):  # fmt: skip
        response = await gateway.request(method, path, headers={"X-Request-ID": "err-1"})
        assert response.status >= 400
        assert response.headers["X-Request-ID"] == "err-1"
        assert (await response.json(content_type=None))["requestId"] == "err-1"


async def test_openapi_and_health_carry_an_id(gateway: Client) -> None:
    for path in ("/openapi.json", "/health"):
        response = await gateway.get(path, headers={"X-Request-ID": "ops-1"})
        assert response.headers["X-Request-ID"] == "ops-1"
