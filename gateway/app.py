"""The gateway's composition root: `create_app(settings)` builds the aiohttp application.

The routing table and the OpenAPI document are built here, once, from the protos; the
upstream connections are opened and closed by a cleanup context, inside the server's loop.
Serving (uvloop, signals, the ops port, telemetry) is the process runner's job.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence

import orjson
from aiohttp import web

from gateway.console import add_console_routes
from gateway.edge import Edge
from gateway.health import health
from gateway.http_proxy import CHAT_OPENAPI_PATHS, add_chat_routes
from gateway.keys import (
    OPENAPI_KEY,
    RATE_LIMITER_KEY,
    ROUTES_KEY,
    SERVICES_KEY,
    SETTINGS_KEY,
    UPSTREAMS_KEY,
    VERIFIER_KEY,
    WEBSOCKETS_KEY,
    WS_DRAINING_KEY,
)
from gateway.openapi import build_openapi
from gateway.ratelimit import RateLimiter, add_rate_limit_headers
from gateway.routing import Route, UpstreamService, build_routes
from gateway.settings import GatewaySettings
from gateway.unary_proxy import unary_handler
from gateway.upstreams import GRPC_SERVICES, Upstreams
from gateway.ws_proxy import WS_PATH, close_websockets, ws_chat
from mesh.auth.remote import remote_verifier
from mesh.problem import problem_middleware
from mesh.request_id import echo_request_id, request_id_middleware


async def _upstreams(app: web.Application) -> AsyncIterator[None]:
    names = [s.upstream for s in app[SERVICES_KEY]]
    upstreams = Upstreams(app[SETTINGS_KEY], names)
    app[UPSTREAMS_KEY] = upstreams
    yield
    await upstreams.close()


async def _verifier(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    async with remote_verifier(settings.users_addresses, settings.tokens) as verifier:
        app[VERIFIER_KEY] = verifier
        yield


async def _rate_limiter(app: web.Application) -> AsyncIterator[None]:
    async with RateLimiter.open(app[SETTINGS_KEY].rate_limits) as limiter:
        app[RATE_LIMITER_KEY] = limiter
        yield


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_KEY], content_type="application/json")


def add_routes(
    router: web.UrlDispatcher, routes: Sequence[Route], settings: GatewaySettings
) -> None:
    """One aiohttp resource per path template, one route per HTTP method on it.

    A GET also answers HEAD (as aiohttp's `add_get` does) unless a rule binds HEAD itself.
    """
    resources: dict[str, web.Resource] = {}
    methods: dict[str, set[str]] = {}
    for route in routes:
        path = route.template.aiohttp_path
        if path not in resources:
            resources[path] = router.add_resource(path)
            methods[path] = {r.http_method for r in routes if r.template.aiohttp_path == path}
        handler = unary_handler(route, settings.route_policy(route.method.full_name))
        resources[path].add_route(route.http_method, handler)
        if route.http_method == "GET" and "HEAD" not in methods[path]:
            resources[path].add_route("HEAD", handler)


def create_app(
    settings: GatewaySettings, *, services: Sequence[UpstreamService] = GRPC_SERVICES
) -> web.Application:
    """The gateway app for `settings`, exposing `services` (the protos' registry by default)."""
    routes = build_routes(services)
    edge = Edge.for_gateway(settings, routes)
    app = web.Application(
        middlewares=[request_id_middleware, problem_middleware, *edge.middlewares],
        client_max_size=edge.client_max_size,
    )
    app.on_response_prepare.append(echo_request_id)
    edge.install(app)  # CORS and security headers on every response; request-head timeout
    app.on_response_prepare.append(add_rate_limit_headers)
    app[SETTINGS_KEY] = settings
    app[SERVICES_KEY] = tuple(services)
    app[ROUTES_KEY] = routes
    document = build_openapi(routes)
    document["paths"].update(CHAT_OPENAPI_PATHS)
    app[OPENAPI_KEY] = orjson.dumps(document)
    add_routes(app.router, routes, settings)
    add_chat_routes(app.router)
    app.router.add_get("/openapi.json", openapi_document)
    app.router.add_get("/health", health)
    add_console_routes(app.router)  # the web console at /, the API docs at /docs
    app.router.add_get(WS_PATH, ws_chat)
    app[WEBSOCKETS_KEY] = weakref.WeakSet()
    app[WS_DRAINING_KEY] = asyncio.Event()
    app.on_shutdown.append(close_websockets)
    app.cleanup_ctx.append(_upstreams)
    app.cleanup_ctx.append(_verifier)
    app.cleanup_ctx.append(_rate_limiter)
    return app
