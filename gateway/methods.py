"""Which HTTP methods the gateway answers, and on which paths.

Only ``GET HEAD POST PUT PATCH DELETE OPTIONS`` are known. Any other method (``TRACE``,
``CONNECT``, a made-up one) and a known method a path does not serve get a 405 problem
with ``Allow`` listing the path's methods (empty for a path that matches no route), on
every path: the chat REST proxy's catch-all route forwards only the known methods, never
``TRACE``. A plain ``OPTIONS`` (not a CORS preflight, which `gateway.cors` answers first) is
answered here with 204 and ``Allow``; it never reaches a handler or an upstream. ``Allow``
is spelled as aiohttp spells it (``GET,HEAD,PATCH``, sorted) and leaves out ``OPTIONS``,
which every routed path answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from mesh.problem import ProblemError

KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def path_methods(request: web.Request) -> frozenset[str] | None:
    """The methods `request`'s routes serve (OPTIONS aside), None when no route matches.

    Read from the route resolution aiohttp has already done for the request: a catch-all
    route (method ``*``) stands for every known method.
    """
    match = request.match_info
    error = match.http_exception
    if isinstance(error, web.HTTPMethodNotAllowed):
        methods = set(error.allowed_methods)
    elif error is not None:
        return None
    else:
        resource = match.route.resource
        if resource is None:  # a system route (aiohttp's own, e.g. an expect handler)
            return None
        methods = {route.method for route in resource}
    if hdrs.METH_ANY in methods:
        methods = set(KNOWN_METHODS)
    return frozenset(methods & (KNOWN_METHODS - {hdrs.METH_OPTIONS}))


def allow_header(methods: Iterable[str]) -> str:
    """An ``Allow`` value: sorted, comma-separated (as aiohttp's own 405 says it)."""
    return ",".join(sorted(methods))


@web.middleware
async def method_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    method = request.method
    if method in KNOWN_METHODS and method != hdrs.METH_OPTIONS:
        error = request.match_info.http_exception
        if not isinstance(error, web.HTTPMethodNotAllowed):
            return await handler(request)  # routed (or 404): the common case costs one check
    methods = path_methods(request)
    if method == hdrs.METH_OPTIONS and methods is not None:
        return web.Response(status=204, headers={hdrs.ALLOW: allow_header(methods)})
    if method == hdrs.METH_OPTIONS:
        return await handler(request)  # no such path: the router's 404
    allowed = allow_header(methods or ())
    raise ProblemError(
        405,
        f"Method {method} is not allowed for {request.path}; allowed: {allowed or 'none'}.",
        headers={hdrs.ALLOW: allowed},
    )
