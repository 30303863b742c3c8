"""mesh.http_observability on a real aiohttp server: spans, `traceparent`, bounded labels,
exemplars, what is not traced, and WebSockets kept out of the latency histogram."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY

from mesh.http_observability import echo_traceparent, observability_middleware
from mesh.tail_sampling import KEPT_ATTRIBUTE
from tests.tracing_capture import capture

PREFIX = "/unit-http-obs"


async def item(request: web.Request) -> web.Response:
    return web.Response(text=request.match_info["id"])


async def broken(_: web.Request) -> web.Response:
    return web.Response(status=503)


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def socket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    await ws.close()
    return ws


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[observability_middleware])
    app.router.add_get(PREFIX + "/items/{id}", item)
    app.router.add_get(PREFIX + "/broken", broken)
    app.router.add_get(PREFIX + "/ws", socket)
    app.router.add_get("/health/ready", health)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


def requests(route: str, method: str = "GET", status: str = "200") -> float:
    value = REGISTRY.get_sample_value(
        "mesh_http_server_requests_total", {"route": route, "method": method, "status": status}
    )
    return value or 0.0


def observed(route: str) -> float:
    labels = {"route": route, "method": "GET"}
    return REGISTRY.get_sample_value("mesh_http_server_request_duration_seconds_count", labels) or 0


def exemplar_traces(route: str) -> set[str]:
    return {
        sample.exemplar.labels["trace_id"]
        for family in REGISTRY.collect()
        if family.name == "mesh_http_server_request_duration_seconds"
        for sample in family.samples
        if sample.labels.get("route") == route and sample.exemplar is not None
    }


async def test_a_request_is_a_server_span_under_the_clients_trace(
    client: TestClient[web.Request, web.Application],
) -> None:
    client_trace, client_span = "ab" * 16, "cd" * 8
    with capture(ratio=0.0) as spans:
        response = await client.get(
            PREFIX + "/items/42", headers={"traceparent": f"00-{client_trace}-{client_span}-01"}
        )
    assert response.status == 200
    (span,) = spans
    context = span.get_span_context()
    assert context is not None
    assert span.name == f"GET {PREFIX}/items/{{id}}"
    assert (format(context.trace_id, "032x"), span.parent and span.parent.span_id) == (
        client_trace,
        int(client_span, 16),
    )
    assert response.headers["traceparent"] == f"00-{client_trace}-{context.span_id:016x}-01"
    assert span.attributes is not None
    assert span.attributes["http.route"] == PREFIX + "/items/{id}"
    assert client_trace in exemplar_traces(PREFIX + "/items/{id}")


async def test_an_unsampled_request_has_no_exemplar_unless_it_fails(
    client: TestClient[web.Request, web.Application],
) -> None:
    with capture(ratio=0.0) as spans:
        ok = await client.get(PREFIX + "/items/7")
        failed = await client.get(PREFIX + "/broken")
    ok_trace = ok.headers["traceparent"].split("-")[1]
    failed_trace = failed.headers["traceparent"].split("-")[1]
    assert ok_trace not in exemplar_traces(PREFIX + "/items/{id}")
    assert failed_trace in exemplar_traces(PREFIX + "/broken")
    (kept,) = spans  # the failure, kept by the tail decision; the success is dropped
    assert kept.attributes is not None
    assert kept.attributes[KEPT_ATTRIBUTE] == "error"
    assert format(kept.get_span_context().trace_id, "032x") == failed_trace  # type: ignore[union-attr]


async def test_ids_and_unknown_methods_do_not_make_label_values(
    client: TestClient[web.Request, web.Application],
) -> None:
    before = requests(PREFIX + "/items/{id}")
    unmatched = requests("unmatched", status="404")
    other = requests("unmatched", "other", "405")  # no route serves the method
    for index in range(25):
        assert (await client.get(f"{PREFIX}/items/{index}")).status == 200
        assert (await client.get(f"{PREFIX}/nothing/{index}")).status == 404
    assert (await client.request("PROPFIND", PREFIX + "/items/1")).status == 405
    assert requests(PREFIX + "/items/{id}") - before == 25
    assert requests("unmatched", status="404") - unmatched == 25
    assert requests("unmatched", "other", "405") - other == 1
    routes = {
        sample.labels["route"]
        for family in REGISTRY.collect()
        if family.name == "mesh_http_server_requests"
        for sample in family.samples
    }
    assert not any(route.startswith(PREFIX + "/nothing") for route in routes)
    assert PREFIX + "/items/1" not in routes


async def test_health_checks_are_counted_but_not_traced(
    client: TestClient[web.Request, web.Application],
) -> None:
    before = requests("/health/ready")
    with capture(ratio=1.0) as spans:
        response = await client.get(
            "/health/ready", headers={"traceparent": f"00-{'ef' * 16}-{'01' * 8}-01"}
        )
    assert response.status == 200
    assert spans == []
    assert "traceparent" not in response.headers
    assert requests("/health/ready") - before == 1


async def test_a_websocket_is_counted_but_its_lifetime_is_not_a_latency(
    client: TestClient[web.Request, web.Application],
) -> None:
    before = requests(PREFIX + "/ws", status="101")
    async with client.ws_connect(PREFIX + "/ws") as ws:
        await ws.receive()
    for _ in range(100):  # the server counts it when the handler returns
        if requests(PREFIX + "/ws", status="101") > before:
            break
        await client.get(PREFIX + "/items/wait")
    assert requests(PREFIX + "/ws", status="101") - before == 1
    assert observed(PREFIX + "/ws") == 0


async def test_a_client_that_hangs_up_is_a_499_not_a_5xx() -> None:
    started = asyncio.Event()

    async def slow(_: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(30)
        return web.Response()

    app = web.Application(middlewares=[observability_middleware])
    app.router.add_get(PREFIX + "/slow", slow)
    route = PREFIX + "/slow"
    async with TestClient(TestServer(app, handler_cancellation=True)) as client:
        with capture(ratio=1.0) as spans:
            request = asyncio.ensure_future(client.get(route))
            await asyncio.wait_for(started.wait(), 5)
            request.cancel()  # the client goes away: its connection is closed
            with contextlib.suppress(asyncio.CancelledError):
                await request
            for _ in range(100):
                if spans:
                    break
                await asyncio.sleep(0.02)
    assert requests(route, status="499") == 1
    assert requests(route, status="500") == 0
    (span,) = spans
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 499
    assert span.status.status_code is not StatusCode.ERROR


async def test_the_prepare_hook_puts_traceparent_on_streamed_responses() -> None:
    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"chunk")
        return response

    app = web.Application(middlewares=[observability_middleware])
    app.on_response_prepare.append(echo_traceparent)
    app.router.add_get(PREFIX + "/streamed", streamed)
    app.router.add_get(PREFIX + "/items/{id}", item)
    async with TestClient(TestServer(app)) as client:
        with capture(ratio=1.0) as spans:
            response = await client.get(PREFIX + "/streamed")
            assert await response.read() == b"chunk"
            plain = await client.get(PREFIX + "/items/1")
    span_ids = {f"{s.get_span_context().span_id:016x}" for s in spans}  # type: ignore[union-attr]
    assert response.headers["traceparent"].split("-")[2] in span_ids
    assert plain.headers["traceparent"].split("-")[2] in span_ids  # the middleware's, once
