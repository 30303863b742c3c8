"""Typed keys of the gateway's aiohttp application."""

from __future__ import annotations

import asyncio
import weakref
from typing import Final

from aiohttp import web

from gateway.ratelimit import RateLimiter
from gateway.routing import Route, UpstreamService
from gateway.settings import GatewaySettings
from gateway.upstreams import Upstreams
from mesh.auth.tokens import TokenVerifier

SETTINGS_KEY: Final = web.AppKey("gateway_settings", GatewaySettings)
ROUTES_KEY: Final = web.AppKey("gateway_routes", tuple[Route, ...])
OPENAPI_KEY: Final = web.AppKey("gateway_openapi", bytes)
UPSTREAMS_KEY: Final = web.AppKey("gateway_upstreams", Upstreams)
SERVICES_KEY: Final = web.AppKey("gateway_services", tuple[UpstreamService, ...])
WEBSOCKETS_KEY: Final = web.AppKey("gateway_websockets", weakref.WeakSet[web.WebSocketResponse])
WS_DRAINING_KEY: Final = web.AppKey("gateway_ws_draining", asyncio.Event)
"""Set on shutdown: proxied WebSockets end their upstream session first (`gateway.ws_proxy`)."""
VERIFIER_KEY: Final = web.AppKey("gateway_token_verifier", TokenVerifier)
RATE_LIMITER_KEY: Final = web.AppKey("gateway_rate_limiter", RateLimiter)
