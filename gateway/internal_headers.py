"""Headers the mesh sets itself, dropped from client requests at the edge.

A client must not be able to speak for the gateway: whatever it sends in a header the mesh
uses internally never reaches a handler, so never an upstream (the chat REST proxy forwards
end-to-end headers; the unary and WebSocket proxies build theirs explicitly, and this is
their second line). Dropped, case-insensitively:

* ``X-Client-Address`` and every ``X-Mesh-*`` header: the gateway's word to the services;
* ``grpc-*`` except ``grpc-timeout`` (a client's deadline, which `gateway.deadline` reads
  and can only shorten the route's): gRPC's own framing and status fields;
* ``X-Forwarded-*``, ``Forwarded`` and ``X-Real-IP`` unless the peer is a trusted proxy
  (``MESH_GATEWAY_TRUSTED_PROXIES``, as for `gateway.client_address`).

A request with none of these (the normal case) costs a look at the first byte of each header
name (about a microsecond for a browser's dozen headers). One
that has them is handled as a copy without them; what handlers store on the copy (e.g. the
rate-limit fields) is copied back for the response hooks, which see the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDict

from gateway.client_address import peer_is_trusted
from gateway.settings import IpNetwork

_INTERNAL_NAMES: Final = frozenset({"x-client-address"})
_INTERNAL_PREFIXES: Final = ("x-mesh-", "grpc-")
_CLIENT_GRPC_HEADERS: Final = frozenset({"grpc-timeout"})
_PROXY_NAMES: Final = frozenset({"forwarded", "x-real-ip"})
_PROXY_PREFIX: Final = "x-forwarded-"

_KEEP, _INTERNAL, _PROXY = 0, 1, 2
# The first letters of every dropped name: other headers are passed over on one byte.
_SUSPECT_FIRST_BYTES: Final = frozenset(b"xXgGfF")


def header_kind(name: str) -> int:
    """`_INTERNAL` for a header only the mesh may set, `_PROXY` for one only a trusted
    proxy may set, `_KEEP` otherwise."""
    lower = name.lower()
    if lower in _INTERNAL_NAMES:
        return _INTERNAL
    if lower.startswith(_INTERNAL_PREFIXES):
        return _KEEP if lower in _CLIENT_GRPC_HEADERS else _INTERNAL
    if lower in _PROXY_NAMES or lower.startswith(_PROXY_PREFIX):
        return _PROXY
    return _KEEP


def is_internal(name: str, *, from_trusted_proxy: bool = False) -> bool:
    """True when a header named `name` must not pass from this client."""
    kind = header_kind(name)
    return kind == _INTERNAL or (kind == _PROXY and not from_trusted_proxy)


def _any_dropped_kind(raw_headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """True when some header is internal or proxy-set (the hot path: mostly first bytes)."""
    for name, _ in raw_headers:  # a loop, not any(): this runs on every request
        if name[:1] and name[0] in _SUSPECT_FIRST_BYTES:  # noqa: SIM102 - the cheap test alone
            if header_kind(name.decode("latin-1")) != _KEEP:
                return True
    return False


def internal_headers_middleware(trusted: Sequence[IpNetwork]) -> Middleware:
    trusted = tuple(trusted)

    @web.middleware
    async def strip_internal_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _any_dropped_kind(request.raw_headers):
            return await handler(request)
        from_proxy = peer_is_trusted(request, trusted)
        kept: CIMultiDict[str] = CIMultiDict(
            (name, value)
            for name, value in request.headers.items()
            if not is_internal(name, from_trusted_proxy=from_proxy)
        )
        if len(kept) == len(request.headers):
            return await handler(request)  # only proxy headers, from a trusted proxy
        clean = request.clone(headers=kept)
        try:
            return await handler(clean)
        finally:
            request.update(clean)

    return strip_internal_headers
