"""GET /health: every upstream probed, 503 naming the one that does not serve."""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health_pb2

from tests.integration.gateway.conftest import FakeUpstreams, closed_address, serve

UPSTREAMS = {"users", "catalog", "analytics", "chat"}


def check_shape(body: dict[str, Any]) -> None:
    assert set(body["upstreams"]) == UPSTREAMS
    for report in body["upstreams"].values():
        assert isinstance(report["latencyMs"], float)
        assert report["targets"]


async def test_all_serving_is_200(upstreams: FakeUpstreams) -> None:
    async with serve(upstreams.settings()) as client:
        response = await client.get("/health")
        body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ok"
    check_shape(body)
    assert {r["status"] for r in body["upstreams"].values()} == {"SERVING"}
    assert body["upstreams"]["catalog"]["targets"] == [upstreams.catalog_address]
    assert body["upstreams"]["chat"]["targets"] == [upstreams.chat_url]


async def test_one_grpc_upstream_down_is_503(upstreams: FakeUpstreams) -> None:
    async with serve(upstreams.settings(users_addresses=(closed_address(),))) as client:
        response = await client.get("/health")
        body = await response.json()
    assert response.status == 503
    assert body["status"] == "degraded"
    check_shape(body)
    assert body["upstreams"]["users"]["status"] == "NOT_SERVING"
    assert body["upstreams"]["users"]["error"] == "UNAVAILABLE"
    assert body["upstreams"]["catalog"]["status"] == "SERVING"


async def test_an_upstream_reporting_not_serving_is_503(upstreams: FakeUpstreams) -> None:
    health = upstreams.analytics_health
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        async with serve(upstreams.settings()) as client:
            response = await client.get("/health")
            body = await response.json()
    finally:
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
    assert response.status == 503
    assert body["upstreams"]["analytics"]["status"] == "NOT_SERVING"
    assert "error" not in body["upstreams"]["analytics"]


async def test_chat_down_is_503(upstreams: FakeUpstreams) -> None:
    async with serve(upstreams.settings(chat_urls=(f"http://{closed_address()}",))) as client:
        response = await client.get("/health")
        body = await response.json()
    assert response.status == 503
    assert body["upstreams"]["chat"]["status"] == "NOT_SERVING"
    assert body["upstreams"]["users"]["status"] == "SERVING"
