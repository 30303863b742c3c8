"""One client request is one trace through every hop, with correct parents, as exported."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.client import call, mesh_cli
from tests.e2e.mesh_process import MeshProcess
from tests.integration.telemetry.conftest import new_traceparent
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan, render_tree

PASSWORD = "a long enough secret"
RESOURCE_KEYS = ("service.name", "service.version", "deployment.environment", "service.instance.id")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


def db_system(span: ReceivedSpan) -> str | None:
    value = span.attributes.get("db.system", span.attributes.get("db.system.name"))
    return str(value) if value is not None else None


def has(spans: list[ReceivedSpan], *hops: tuple[str, str]) -> bool:
    """Whether `spans` hold a span of each (service, kind): batches arrive in any order."""
    return all(any((s.service, s.kind) == hop for s in spans) for hop in hops)


HOPS = (("gateway", "SERVER"), ("gateway", "CLIENT"))


def one(spans: list[ReceivedSpan], **match: object) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, f"{match}: {len(found)} spans\n{render_tree(spans)}"
    return found[0]


def trace_header_ids(header: str) -> tuple[str, str, int]:
    _, trace_id, span_id, flags = header.split("-")
    return trace_id, span_id, int(flags, 16)


async def product_id(mesh: MeshProcess, http: aiohttp.ClientSession, index: int) -> str:
    """The id of the `index`th product of a seeded catalog (each test reads its own)."""
    code, output = await mesh_cli(mesh, "seed", "--count", "5")
    assert code == 0, output
    status, _, body = await call(http, "GET", f"{mesh.gateway}/api/v1/products?pageSize=5")
    assert status == 200, body
    return str(body["products"][index]["id"])


async def test_a_product_read_is_one_trace_from_the_client_to_postgres_and_redis(
    traced_mesh: MeshProcess, receiver: OtlpReceiver, http: aiohttp.ClientSession
) -> None:
    product = await product_id(traced_mesh, http, 0)  # never read yet: not in the cache
    header, trace_id, client_span = new_traceparent()
    status, headers, body = await call(
        http,
        "GET",
        f"{traced_mesh.gateway}/api/v1/products/{product}",
        headers={"traceparent": header},
    )
    assert status == 200, body

    def complete(r: OtlpReceiver) -> list[ReceivedSpan] | None:
        spans = r.trace(trace_id)
        systems = {db_system(s) for s in spans}
        complete = has(spans, *HOPS, ("catalog", "SERVER"))
        return spans if complete and {"postgresql", "redis"} <= systems else None

    spans = await receiver.wait_for(complete)
    # The client's trace continues, and the response names the gateway's span in it.
    answered_trace, answered_span, flags = trace_header_ids(headers["traceparent"])
    assert (answered_trace, flags & 1) == (trace_id, 1)
    server = one(spans, service="gateway", kind="SERVER")
    assert server.parent_span_id == client_span
    assert server.span_id == answered_span
    assert server.name == "GET /api/v1/products/{id}"
    assert server.attributes["http.route"] == "/api/v1/products/{id}"
    assert server.attributes["http.response.status_code"] == 200
    # gateway CLIENT -> catalog SERVER -> the catalog's PostgreSQL and Redis calls.
    grpc_call = one(spans, service="gateway", kind="CLIENT")
    assert grpc_call.name == "catalog.v1.CatalogService/GetProduct"
    assert grpc_call.parent_span_id == server.span_id
    handler = one(spans, service="catalog", kind="SERVER")
    assert handler.name == "catalog.v1.CatalogService/GetProduct"
    assert handler.parent_span_id == grpc_call.span_id
    assert handler.attributes["rpc.grpc.status_code"] == 0
    stores = [s for s in spans if db_system(s) in {"postgresql", "redis"}]
    assert stores
    assert all(s.service == "catalog" and s.kind == "CLIENT" for s in stores)
    assert all(s.parent_span_id == handler.span_id for s in stores), render_tree(spans)
    # Nothing else in the trace, and no span whose parent is missing but the gateway's.
    ids = {s.span_id for s in spans}
    assert [s for s in spans if s.parent_span_id not in ids] == [server]
    for span in spans:
        assert all(span.resource.get(k) for k in RESOURCE_KEYS), span.resource
        assert span.resource["deployment.environment"] == "telemetry-test"
    print(render_tree(spans))


async def test_analytics_ingest_reaches_mongodb_in_the_same_trace(
    traced_mesh: MeshProcess, receiver: OtlpReceiver, http: aiohttp.ClientSession
) -> None:
    token = await sign_in(traced_mesh, http)
    header, trace_id, client_span = new_traceparent()
    event = {
        "eventId": str(uuid.uuid4()),
        "type": "page.view",
        "timestamp": "2026-01-01T00:00:00Z",
        "properties": {"path": "/"},
    }
    status, _, body = await call(
        http,
        "POST",
        f"{traced_mesh.gateway}/api/v1/analytics/events:batch",
        token,
        json={"events": [event]},
        headers={"traceparent": header},
    )
    assert status == 200, body

    def complete(r: OtlpReceiver) -> list[ReceivedSpan] | None:
        spans = r.trace(trace_id)
        complete = has(spans, *HOPS, ("analytics", "SERVER"))
        return spans if complete and any(db_system(s) == "mongodb" for s in spans) else None

    spans = await receiver.wait_for(complete)
    server = one(spans, service="gateway", kind="SERVER")
    assert server.parent_span_id == client_span
    grpc_call = one(spans, service="gateway", kind="CLIENT")
    handler = one(spans, service="analytics", kind="SERVER")
    assert handler.name == "analytics.v1.AnalyticsService/IngestEvents"
    assert handler.parent_span_id == grpc_call.span_id
    insert = next(s for s in spans if db_system(s) == "mongodb")
    assert (insert.service, insert.parent_span_id) == ("analytics", handler.span_id)


async def test_an_unsampled_request_that_fails_is_kept_and_one_that_succeeds_is_not(
    traced_mesh: MeshProcess, receiver: OtlpReceiver, http: aiohttp.ClientSession
) -> None:
    product = await product_id(traced_mesh, http, 1)
    url = f"{traced_mesh.gateway}/api/v1/products/{product}"
    status, ok_headers, _ = await call(http, "GET", url)
    assert status == 200
    ok_trace, _, ok_flags = trace_header_ids(ok_headers["traceparent"])
    assert ok_flags & 1 == 0  # the ratio is 0: not sampled
    # A deadline already spent: the gateway answers 504 without calling the catalog.
    status, headers, problem = await call(http, "GET", url, headers={"Request-Timeout": "0"})
    assert status == 504, problem
    failed_trace, failed_span, flags = trace_header_ids(headers["traceparent"])
    assert flags & 1 == 0
    assert problem["traceId"] == failed_trace  # the problem names the trace to look for

    spans = await receiver.wait_for(lambda r: r.trace(failed_trace))
    root = one(spans, span_id=failed_span)
    assert (root.service, root.kind, root.status) == ("gateway", "SERVER", "ERROR")
    assert root.attributes["mesh.sampling.kept"] == "error"
    assert root.attributes["http.response.status_code"] == 504
    await asyncio.sleep(1.0)  # the successful one had as long to arrive: it never does
    assert receiver.trace(ok_trace) == []


async def test_a_client_error_names_its_trace_and_is_no_error_span(
    traced_mesh: MeshProcess, receiver: OtlpReceiver, http: aiohttp.ClientSession
) -> None:
    header, trace_id, _ = new_traceparent()
    status, _, problem = await call(
        http,
        "GET",
        f"{traced_mesh.gateway}/api/v1/products/{uuid.uuid4()}",
        headers={"traceparent": header},
    )
    assert status == 404, problem
    assert problem["traceId"] == trace_id
    assert problem["requestId"]
    # NOT_FOUND is the caller's mistake: recorded, not an error (no alert, no kept trace).
    spans = await receiver.wait_for(
        lambda r: has(r.trace(trace_id), *HOPS, ("catalog", "SERVER")) and r.trace(trace_id)
    )
    handler = one(spans, service="catalog", kind="SERVER")
    assert handler.attributes["rpc.grpc.status_code"] == 5
    assert handler.status == "UNSET"
    assert one(spans, service="gateway", kind="SERVER").status == "UNSET"


async def test_health_checks_are_not_traced(
    traced_mesh: MeshProcess, receiver: OtlpReceiver, http: aiohttp.ClientSession
) -> None:
    header, trace_id, _ = new_traceparent()
    status, _, _ = await call(
        http, "GET", f"{traced_mesh.gateway}/health", headers={"traceparent": header}
    )
    assert status == 200
    # A traced request sent after it arrives; the health check's trace never does.
    marker, marker_trace, _ = new_traceparent()
    await call(
        http, "GET", f"{traced_mesh.gateway}/api/v1/categories", headers={"traceparent": marker}
    )
    await receiver.wait_for(lambda r: r.trace(marker_trace))
    await asyncio.sleep(0.5)
    assert receiver.trace(trace_id) == []


async def sign_in(mesh: MeshProcess, http: aiohttp.ClientSession) -> str:
    credentials = {"email": f"t{uuid.uuid4().hex[:10]}@example.org", "password": PASSWORD}
    status, _, body = await call(
        http,
        "POST",
        f"{mesh.gateway}/api/v1/auth/register",
        json={**credentials, "displayName": "T"},
    )
    assert status == 200, body
    status, _, body = await call(
        http, "POST", f"{mesh.gateway}/api/v1/auth/login", json=credentials
    )
    assert status == 200, body
    return str(body["accessToken"])
