"""CORS: which browser origins may call the API, from the one allow-list the mesh has.

``MESH_ALLOWED_ORIGINS`` (`GatewaySettings.allowed_origins`) is the list for both CORS and
the WebSocket ``Origin`` check (`mesh.auth.handshake`): ``scheme://host[:port]`` values,
or ``*`` for any origin.

**Preflights** (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) are
answered by the gateway itself, never by a handler or an upstream:

* an allowed origin asking for a method the path serves gets ``204`` with
  ``Access-Control-Allow-Origin`` (the origin, echoed), ``Access-Control-Allow-Methods``
  (every method of the path's routes), ``Access-Control-Allow-Headers`` (the requested
  ones among `ALLOWED_REQUEST_HEADERS`; a browser refuses the request if one it asked
  for is missing), ``Access-Control-Max-Age`` and ``Vary: Origin``;
* a foreign origin gets a ``403`` problem and no CORS header: not a 2xx that a cache, a
  proxy or a person reading a log could take for a success;
* a path with no route gets the usual 404 problem, a method the path does not serve a 405
  problem with ``Allow``, both without CORS headers.

**Actual responses** to an allowed origin carry ``Access-Control-Allow-Origin`` (the
origin) and ``Access-Control-Expose-Headers`` (`EXPOSED_HEADERS`, so a page can read the
entity tag, request id, rate-limit fields, ``Retry-After``, ``traceparent`` and
``Location``); responses to a foreign origin carry none (the browser then hides the
answer from the page). Every response says ``Vary: Origin``. Whatever CORS headers an
upstream (chat) sent are dropped: the gateway alone speaks for the API.

**Credentials**: ``Access-Control-Allow-Credentials: true`` goes only to origins listed by
name. An origin admitted only by ``*`` gets its origin echoed without credentials (a
browser then sends no cookies; the API's bearer tokens are request headers and work
alike). ``Origin: null`` (sandboxed frames, files) is never allowed, not even by ``*``.

Written here rather than taken from aiohttp-cors (0.8, aio-libs): that package configures
CORS route by route, registering an ``OPTIONS`` route next to each, which collides with the
chat proxy's catch-all ``*`` route, and refuses preflights with aiohttp's plain-text
errors; the gateway wants one middleware over every route, problem+json refusals, the
shared allow-list and the credential rule above, in about a hundred lines.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from gateway.methods import allow_header, path_methods
from mesh.auth.handshake import ANY_ORIGIN, normalize_origin
from mesh.problem import ProblemError

ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]

ALLOWED_REQUEST_HEADERS: Final = frozenset(
    {
        "authorization",
        "content-type",
        "if-match",
        "if-none-match",
        "x-request-id",
        "request-timeout",
        "grpc-timeout",
        "traceparent",  # browser tracing (OpenTelemetry JS) continues its trace here
        "tracestate",
        "accept",  # safelisted unless long or odd, listed so it never blocks
        "accept-language",
        "content-language",
    }
)
EXPOSED_HEADERS: Final = (
    "ETag, X-Request-ID, RateLimit, RateLimit-Policy, Retry-After, traceparent, Location"
)
PREFLIGHT_MAX_AGE_SECONDS: Final = 600  # an allow-list change reaches browsers within this
_NULL_ORIGIN: Final = "null"
_UPSTREAM_CORS_HEADERS: Final = (
    hdrs.ACCESS_CONTROL_ALLOW_ORIGIN,
    hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS,
    hdrs.ACCESS_CONTROL_EXPOSE_HEADERS,
    hdrs.ACCESS_CONTROL_ALLOW_METHODS,
    hdrs.ACCESS_CONTROL_ALLOW_HEADERS,
    hdrs.ACCESS_CONTROL_MAX_AGE,
)


class CorsPolicy:
    """The allow-list, and what an origin may do."""

    def __init__(self, allowed_origins: frozenset[str]) -> None:
        self._listed = frozenset(normalize_origin(o) for o in allowed_origins) - {ANY_ORIGIN}
        self._any = ANY_ORIGIN in allowed_origins

    def credentials(self, origin: str) -> bool | None:
        """None: `origin` may not call the API; True: it is listed by name (credentials
        allowed); False: only ``*`` admits it (no credentials)."""
        normalized = normalize_origin(origin)
        if normalized in self._listed:
            return True
        if self._any and normalized != _NULL_ORIGIN:
            return False
        return None


def is_preflight(request: web.Request) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


def requested_headers(value: str) -> list[str]:
    """The names of an ``Access-Control-Request-Headers`` value, lower-cased, deduplicated."""
    names: dict[str, None] = {}
    for name in value.split(","):
        name = name.strip().lower()
        if name:
            names[name] = None
    return list(names)


def add_vary(response: web.StreamResponse, name: str) -> None:
    """Add `name` to the response's ``Vary`` unless it is there already."""
    current = response.headers.get(hdrs.VARY)
    if current is None:
        response.headers[hdrs.VARY] = name
    elif current.strip() != "*" and name.lower() not in (
        v.strip().lower() for v in current.split(",")
    ):
        response.headers[hdrs.VARY] = f"{current}, {name}"


def preflight_response(request: web.Request, policy: CorsPolicy) -> web.Response:
    """The answer to a preflight (see the module's docstring); refusals raise a problem."""
    origin = request.headers[hdrs.ORIGIN]
    credentials = policy.credentials(origin)
    if credentials is None:
        raise ProblemError(
            403,
            "This page's Origin may not call the API (it is not in MESH_ALLOWED_ORIGINS).",
            headers={hdrs.VARY: hdrs.ORIGIN},
        )
    methods = path_methods(request)
    if methods is None:
        raise ProblemError(404, f"No route matches {request.path}.")
    requested = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD].strip()
    if requested not in methods:
        allowed = allow_header(methods)
        raise ProblemError(
            405,
            f"Method {requested} is not allowed for {request.path}; allowed: {allowed}.",
            headers={hdrs.ALLOW: allowed},
        )
    headers = {
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: allow_header(methods),
        hdrs.ACCESS_CONTROL_MAX_AGE: str(PREFLIGHT_MAX_AGE_SECONDS),
        hdrs.VARY: hdrs.ORIGIN,
    }
    asked = requested_headers(request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, ""))
    allowed_headers = [name for name in asked if name in ALLOWED_REQUEST_HEADERS]
    if allowed_headers:
        headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ", ".join(allowed_headers)
    if credentials:
        headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
    return web.Response(status=204, headers=headers)


def cors_middleware(policy: CorsPolicy) -> Middleware:
    """Answers preflights before routing reaches a handler; other requests pass."""

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == hdrs.METH_OPTIONS and is_preflight(request):
            return preflight_response(request, policy)
        return await handler(request)

    return cors


def cors_response_headers(policy: CorsPolicy) -> ResponseHook:
    """`on_response_prepare` hook: the CORS headers of an actual (non-preflight) response.

    A hook rather than the middleware's return path, so that responses a handler prepares
    itself (the chat proxy's streamed ones) get them too.
    """

    async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
        if request.method == hdrs.METH_OPTIONS and is_preflight(request):
            return  # answered (or refused) by the middleware, headers and all
        headers = response.headers
        for name in _UPSTREAM_CORS_HEADERS:
            if name in headers:
                del headers[name]
        add_vary(response, hdrs.ORIGIN)
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return
        credentials = policy.credentials(origin)
        if credentials is None:
            return
        headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
        headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSED_HEADERS
        if credentials:
            headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"

    return add_cors_headers
