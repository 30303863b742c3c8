"""The gateway's edge hygiene, assembled for `create_app`: what a request may bring in and
what every response carries out. Each policy is its own module:

* `gateway.internal_headers`: client-supplied internal headers are dropped;
* `gateway.cors`: preflights answered, CORS headers on actual responses;
* `gateway.methods`: unknown and unrouted methods get a 405 problem with ``Allow``;
* `gateway.security_headers`: nosniff, no-referrer, DENY framing, no-store, HSTS;
* request bodies: aiohttp's ``client_max_size`` is the largest route limit (each route
  enforces its own, `GatewaySettings.route_policy`);
* the request-head timeout (slow-loris defence) of `mesh.web`, from
  ``MESH_GATEWAY_HEADER_TIMEOUT_SECONDS``.

Middleware order (after the request id and problem middlewares, so refusals are problems
with a request id): internal headers first (nothing after them sees one), then CORS (a
preflight is an ``OPTIONS`` the method middleware would otherwise answer), then methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.cors import CorsPolicy, ResponseHook, cors_middleware, cors_response_headers
from gateway.internal_headers import internal_headers_middleware
from gateway.methods import method_middleware
from gateway.policy import CHAT_HTTP
from gateway.routing import Route
from gateway.security_headers import security_headers
from gateway.settings import GatewaySettings
from mesh.web import HEAD_TIMEOUT_KEY


def largest_body_limit(settings: GatewaySettings, routes: Sequence[Route]) -> int:
    """The largest body any route accepts (transcoded routes and the chat proxy)."""
    names = [route.method.full_name for route in routes] + [CHAT_HTTP]
    return max(
        settings.body_limit_bytes, *(settings.route_policy(n).body_limit_bytes for n in names)
    )


@dataclass(frozen=True, slots=True)
class Edge:
    middlewares: tuple[Middleware, ...]
    response_hooks: tuple[ResponseHook, ...]
    client_max_size: int
    head_timeout_seconds: float

    @classmethod
    def for_gateway(cls, settings: GatewaySettings, routes: Sequence[Route]) -> Edge:
        trusted = settings.rate_limits.trusted_proxies
        cors = CorsPolicy(settings.allowed_origins)
        return cls(
            middlewares=(
                internal_headers_middleware(trusted),
                cors_middleware(cors),
                method_middleware,
            ),
            response_hooks=(cors_response_headers(cors), security_headers(trusted)),
            client_max_size=largest_body_limit(settings, routes),
            head_timeout_seconds=settings.header_timeout_seconds,
        )

    def install(self, app: web.Application) -> None:
        """The response hooks and the head timeout (the middlewares go in the constructor)."""
        app.on_response_prepare.extend(self.response_hooks)
        app[HEAD_TIMEOUT_KEY] = self.head_timeout_seconds
