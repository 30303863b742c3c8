"""Tracing and RED metrics for the mesh's aiohttp apps, in one middleware.

Written here rather than taken from opentelemetry-instrumentation-aiohttp-server because
that package only works by patching `web.Application` globally (which would trace the ops
server too). Spans continue a client's W3C `traceparent`; spans and metric labels use the
route template (`/api/v1/products/{id}`), never the raw path. The response carries
`traceparent` so a client can find its trace.
"""

from __future__ import annotations

import time
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode

from mesh.metrics import HTTP_DURATION, HTTP_REQUESTS

UNMATCHED: Final = "unmatched"
_tracer = trace.get_tracer("mesh.http")


def route_template(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else UNMATCHED


def _traceparent(span: trace.Span) -> str | None:
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


@web.middleware
async def observability_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = route_template(request)
    started = time.perf_counter()
    status = 500
    with _tracer.start_as_current_span(
        f"{request.method} {route}",
        context=extract(request.headers),
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": request.method,
            "http.route": route,
            "url.path": request.path,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                header = _traceparent(span)
                if header:
                    response.headers["traceparent"] = header
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            HTTP_DURATION.labels(route, request.method).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
