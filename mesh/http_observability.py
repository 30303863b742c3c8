"""Tracing and RED metrics for the mesh's aiohttp apps, in one middleware.

Written here rather than taken from opentelemetry-instrumentation-aiohttp-server because
that package only works by patching `web.Application` globally (which would trace the ops
server too). Spans continue a client's W3C `traceparent`; spans and metric labels use the
route template (`/api/v1/products/{id}`), never the raw path, and a method outside the
standard ones is labelled ``other``, so a client cannot create series. The response carries
`traceparent` so a client can find its trace (install `echo_traceparent` as an
`on_response_prepare` hook for responses a handler prepares itself); the latency histogram
carries the trace id as an exemplar when the trace is exported.

Health checks (``/health``, ``/health/...``) and ``/metrics`` are counted but not traced:
the request runs with instrumentation suppressed, so nothing it calls makes spans either.
A WebSocket (a 101 answer) is counted, and its span lasts the connection, but its duration
is not a request latency and stays out of the histogram. A request whose client went away
before the answer (the handler cancelled) is counted as 499, as nginx does: not a 5xx.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, Status, StatusCode

from mesh.metrics import HTTP_DURATION, HTTP_REQUESTS
from mesh.telemetry import exemplar

UNMATCHED: Final = "unmatched"
OTHER_METHOD: Final = "other"
METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
SWITCHING_PROTOCOLS: Final = 101
CLIENT_CLOSED_REQUEST: Final = 499
_tracer = trace.get_tracer("mesh.http")


def route_template(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else UNMATCHED


def traced(path: str) -> bool:
    """False for health checks and metrics scrapes."""
    return not (path == "/health" or path.startswith("/health/") or path == "/metrics")


def traceparent(span: trace.Span) -> str | None:
    """The W3C `traceparent` header value naming `span`."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


@web.middleware
async def observability_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not traced(request.path):
        with suppress_instrumentation():
            return await _measured(request, handler)
    return await _traced(request, handler)


async def _measured(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        _record(request, route_template(request), status, time.perf_counter() - started, None)


async def _traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = route_template(request)
    started = time.perf_counter()
    status = 500
    with _tracer.start_as_current_span(
        f"{request.method} {route}" if route != UNMATCHED else request.method,
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
                header = traceparent(span)
                if header:
                    response.headers["traceparent"] = header
            return response
        except web.HTTPException as exc:
            status = exc.status
            header = traceparent(span)
            if header:
                exc.headers["traceparent"] = header
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED_REQUEST
            raise
        except Exception as exc:
            span.record_exception(exc)
            raise
        finally:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            elapsed = time.perf_counter() - started
            _record(request, route, status, elapsed, exemplar(span, error=status >= 500))


async def echo_traceparent(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: `traceparent` on responses a handler prepares itself
    (streamed bodies, the 101 of a WebSocket), which the middleware cannot add it to."""
    if "traceparent" not in response.headers:
        header = traceparent(trace.get_current_span())
        if header:
            response.headers["traceparent"] = header


def _record(
    request: web.Request,
    route: str,
    status: int,
    seconds: float,
    exemplar: dict[str, str] | None,
) -> None:
    method = request.method if request.method in METHODS else OTHER_METHOD
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    if status != SWITCHING_PROTOCOLS:
        HTTP_DURATION.labels(route, method).observe(seconds, exemplar)
