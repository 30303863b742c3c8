"""Security headers on every gateway response (an ``on_response_prepare`` hook, so that
problems, streamed chat answers and WebSocket handshakes get them too).

* ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and
  ``X-Frame-Options: DENY``: always (an upstream's own values are replaced).
* ``Cache-Control: no-store`` on the answer to a request that carried ``Authorization``: a
  shared cache must never keep one user's answer. A ``Cache-Control`` the handler or the
  upstream set stays only when it already says ``no-store`` (nothing is stricter).
* ``Strict-Transport-Security: max-age=31536000`` (a year; no ``includeSubDomains``: the
  gateway does not speak for its domain's other hosts) only when the request came over
  TLS: a TLS connection to the gateway, or ``X-Forwarded-Proto: https`` (its last value,
  the nearest proxy's) from a trusted proxy (``MESH_GATEWAY_TRUSTED_PROXIES``). Browsers
  ignore it over plain HTTP, and a client cannot make the gateway claim TLS it did not see.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from aiohttp import hdrs, web

from gateway.client_address import peer_is_trusted
from gateway.settings import IpNetwork

ResponseHook = Callable[[web.Request, web.StreamResponse], Awaitable[None]]

HSTS: Final = "max-age=31536000"
NO_STORE: Final = "no-store"
_FIXED: Final = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)


def came_over_tls(request: web.Request, trusted: Sequence[IpNetwork]) -> bool:
    if request.secure:
        return True
    forwarded = request.headers.get(hdrs.X_FORWARDED_PROTO)
    if forwarded is None:
        return False
    nearest = forwarded.rsplit(",", 1)[-1].strip().lower()
    return nearest == "https" and peer_is_trusted(request, trusted)


def security_headers(trusted: Sequence[IpNetwork]) -> ResponseHook:
    trusted = tuple(trusted)

    async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        for name, value in _FIXED:
            headers[name] = value
        if hdrs.AUTHORIZATION in request.headers:
            current = headers.get(hdrs.CACHE_CONTROL)
            if current is None or NO_STORE not in current.lower():
                headers[hdrs.CACHE_CONTROL] = NO_STORE
        if came_over_tls(request, trusted):
            headers[hdrs.STRICT_TRANSPORT_SECURITY] = HSTS

    return add_security_headers
