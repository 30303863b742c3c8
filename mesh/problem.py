"""RFC 9457 problem details for every aiohttp app of the mesh.

A handler signals a failure by raising `ProblemError` (or one of aiohttp's HTTP exceptions,
or letting a `grpc.RpcError` from `problem_from_rpc_error` bubble as a `ProblemError`);
`problem_middleware` renders it as ``application/problem+json``::

    {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "...",
     "instance": "/api/v1/...", "requestId": "...", "traceId": "<32 hex>",
     "errors": [{"field": "priceCents", "message": "..."}]}

``traceId`` is present when an OpenTelemetry span is active, ``errors`` when there are
per-field violations. ``instance`` is the request's path percent-encoded, so that it is a URI
reference whatever bytes the client put in the path. Any other exception becomes a 500 whose
body says nothing about the internals; the traceback goes to the log.

Install (with `mesh.request_id`, which must be outermost so the id is known here)::

    app = web.Application(middlewares=[request_id_middleware, problem_middleware])
    app.on_response_prepare.append(echo_request_id)

gRPC status codes map to HTTP by the google.rpc.Code table (`GRPC_TO_HTTP`). The two
statuses that table cannot express travel as a google.rpc.ErrorInfo reason
(`HTTP_STATUS_BY_REASON`): PRECONDITION_FAILED is 412 and IDEMPOTENCY_KEY_REUSED is 422, both
on a FAILED_PRECONDITION status. An ErrorInfo also shows in the problem as ``reason`` plus its
metadata as extension members (a value that reads as a JSON number or boolean becomes one),
e.g. ``{"status": 409, "reason": "INSUFFICIENT_STOCK", "availableStock": 3, ...}``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from types import MappingProxyType
from typing import Final, cast
from urllib.parse import quote

import grpc
import orjson
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from opentelemetry import trace

from mesh.errors import FieldError, ServiceError, details_from_trailers
from mesh.request_id import request_id_of

PROBLEM_CONTENT_TYPE: Final = "application/problem+json"

logger = logging.getLogger(__name__)

GRPC_TO_HTTP: Final[Mapping[grpc.StatusCode, int]] = MappingProxyType(
    {
        grpc.StatusCode.OK: 200,
        grpc.StatusCode.CANCELLED: 499,
        grpc.StatusCode.UNKNOWN: 500,
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.DEADLINE_EXCEEDED: 504,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.ALREADY_EXISTS: 409,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.UNAUTHENTICATED: 401,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
        grpc.StatusCode.FAILED_PRECONDITION: 400,
        grpc.StatusCode.ABORTED: 409,
        grpc.StatusCode.OUT_OF_RANGE: 400,
        grpc.StatusCode.UNIMPLEMENTED: 501,
        grpc.StatusCode.INTERNAL: 500,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.DATA_LOSS: 500,
    }
)

# ErrorInfo reasons that stand for an HTTP status, and the only code each may come with.
HTTP_STATUS_BY_REASON: Final[Mapping[str, tuple[grpc.StatusCode, int]]] = MappingProxyType(
    {
        "PRECONDITION_FAILED": (grpc.StatusCode.FAILED_PRECONDITION, 412),
        "IDEMPOTENCY_KEY_REUSED": (grpc.StatusCode.FAILED_PRECONDITION, 422),
    }
)

# Codes whose upstream message may carry internals (exception text, addresses): replaced.
_OPAQUE_CODES: Final = frozenset(
    {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
)
_EXTRA_PHRASES: Final = {499: "Client Closed Request"}
# Headers of an aiohttp HTTPException that describe its own plain-text body.
_BODY_HEADERS: Final = frozenset({hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.CONTENT_ENCODING})


def status_title(status: int) -> str:
    """The standard reason phrase for `status` (RFC 9457 titles for type about:blank)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return _EXTRA_PHRASES.get(status, "Error")


def http_status_for(code: grpc.StatusCode, reason: str = "") -> int:
    """The HTTP status for a gRPC code and, when there was one, its ErrorInfo reason."""
    special = HTTP_STATUS_BY_REASON.get(reason)
    if special is not None and special[0] is code:
        return special[1]
    return GRPC_TO_HTTP.get(code, 500)


def error_info_extensions(reason: str, metadata: Mapping[str, str]) -> dict[str, object]:
    """Problem members for an ErrorInfo: ``reason``, then each metadata entry."""
    if not reason:
        return {}
    extensions: dict[str, object] = {"reason": reason}
    for key, value in metadata.items():
        extensions[key] = _metadata_value(value)
    return extensions


def _metadata_value(value: str) -> object:
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if isinstance(parsed, bool | int | float):
        return parsed
    return value


class ProblemError(Exception):
    """A failure to answer as an RFC 9457 problem (raise it from any handler)."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type: str = "about:blank",
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, object] | None = None,
        close_connection: bool = False,
    ) -> None:
        self.status = status
        self.title = title or status_title(status)
        self.detail = detail or self.title
        self.type = type
        self.errors = tuple(errors)
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})
        self.close_connection = close_connection  # e.g. after leaving a request body unread
        super().__init__(f"{status} {self.title}: {self.detail}")


def current_trace_id() -> str | None:
    """The active OpenTelemetry trace id as 32 hex characters, if a valid span is active."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def problem_body(problem: ProblemError, *, instance: str, request_id: str | None) -> bytes:
    document: dict[str, object] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
    }
    if request_id is not None:
        document["requestId"] = request_id
    trace_id = current_trace_id()
    if trace_id is not None:
        document["traceId"] = trace_id
    if problem.errors:
        document["errors"] = [{"field": e.field, "message": e.message} for e in problem.errors]
    for key, value in problem.extensions.items():
        document.setdefault(key, value)
    return orjson.dumps(document)


_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/", less pct-encoded


def instance_of(request: web.Request) -> str:
    """The problem's ``instance``: the request path as a URI reference (RFC 3986)."""
    return quote(request.path, safe=_PATH_SAFE)


def problem_response(request: web.Request, problem: ProblemError) -> web.Response:
    """`problem` rendered for `request` (for handlers that must return, not raise)."""
    response = web.Response(
        status=problem.status,
        reason=status_title(problem.status),
        body=problem_body(
            problem, instance=instance_of(request), request_id=request_id_of(request)
        ),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=problem.headers,
    )
    if problem.close_connection:
        response.force_close()
    return response


def problem_from_rpc_error(error: grpc.RpcError, *, upstream: str) -> ProblemError:
    """The HTTP problem for a failed gRPC call to `upstream`, by the google.rpc.Code table.

    The service's message becomes the detail and its BadRequest field violations the
    ``errors``; a RetryInfo becomes ``Retry-After``; an ErrorInfo may pick the status (see
    `HTTP_STATUS_BY_REASON`) and adds ``reason`` and its metadata. For codes that signal a
    server-side fault (UNKNOWN, INTERNAL, DATA_LOSS) and for transport failures (UNAVAILABLE,
    DEADLINE_EXCEEDED) the detail is the gateway's own words, naming the upstream, so that
    no exception text or internal address leaks to clients.
    """
    code = error.code()
    # grpc.aio gives (key, value) tuples here, whatever the stubs say.
    trailers = cast(Iterable[tuple[str, str | bytes]], error.trailing_metadata() or ())
    details = details_from_trailers(tuple(trailers))
    status = http_status_for(code, details.reason)
    headers: dict[str, str] = {}
    extensions: dict[str, object] = {}
    if code not in _OPAQUE_CODES:
        extensions.update(error_info_extensions(details.reason, details.metadata))
    if code is grpc.StatusCode.UNAVAILABLE:
        detail = f"The upstream service '{upstream}' is unavailable."
        extensions["upstream"] = upstream
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED:
        detail = f"The upstream service '{upstream}' did not answer in time."
        extensions["upstream"] = upstream
    elif code in _OPAQUE_CODES:
        detail = f"The upstream service '{upstream}' failed to process the request."
    else:
        detail = error.details() or status_title(status)
    headers.update(_status_headers(code, details.retry_after_seconds))
    return ProblemError(
        status, detail, errors=details.field_errors, headers=headers, extensions=extensions
    )


def problem_from_service_error(error: ServiceError) -> ProblemError:
    """The HTTP problem for a domain error raised in this process (e.g. by access checks)."""
    headers = _status_headers(error.code, error.retry_after_seconds)
    return ProblemError(
        http_status_for(error.code, error.reason),
        error.detail,
        errors=tuple(error.field_errors),
        headers=headers,
        extensions=error_info_extensions(error.reason, error.metadata),
    )


def _status_headers(code: grpc.StatusCode, retry_after_seconds: float | None) -> dict[str, str]:
    """`WWW-Authenticate` on 401 and `Retry-After` when the service said when to retry."""
    headers: dict[str, str] = {}
    if code is grpc.StatusCode.UNAUTHENTICATED:
        headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
    if retry_after_seconds is not None:
        headers[hdrs.RETRY_AFTER] = str(max(0, math.ceil(retry_after_seconds)))
    return headers


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> ProblemError:
    headers = {k: v for k, v in exc.headers.items() if k not in _BODY_HEADERS}
    default_text = f"{exc.status}: {exc.reason}"
    if exc.text and exc.text != default_text:
        detail = exc.text
    elif exc.status == 404:
        detail = f"No route matches {request.path}."
    elif exc.status == 405:
        allowed = exc.headers.get(hdrs.ALLOW, "")
        detail = f"Method {request.method} is not allowed for {request.path}; allowed: {allowed}."
    else:
        detail = status_title(exc.status)
    return ProblemError(exc.status, detail, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProblemError as problem:
        return problem_response(request, problem)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(request, _from_http_exception(request, exc))
    except ConnectionResetError:
        raise  # the client went away: nobody to answer, aiohttp drops the connection
    except Exception:
        logger.exception(
            "unhandled error in %s %s",
            request.method,
            request.path,
            extra={"request_id": request_id_of(request)},
        )
        return problem_response(
            request, ProblemError(500, "An unexpected error occurred; it has been logged.")
        )
