"""GET /openapi.json serves the generated document."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[web.Request, web.Application]


async def test_openapi_json_is_served(gateway: Client) -> None:
    response = await gateway.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    document = await response.json()
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/products/{id}" in document["paths"]
    assert "/v1/books/{id}:reserve" in document["paths"]
    assert "get" in document["paths"]["/api/v1/products/{id}"]
