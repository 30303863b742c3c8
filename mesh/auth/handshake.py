"""WebSocket handshakes: where the access token is, and whether the page's Origin may connect.

One module for the gateway and chat, which both check every handshake before upgrading.

Native clients send ``Authorization: Bearer <token>``. Browsers cannot set headers on a
WebSocket, so they offer the subprotocol pair ``bearer, <token>`` in
``Sec-WebSocket-Protocol``; the server answers with the ``bearer`` subprotocol (never the
token itself). A header wins over the subprotocol pair when both are sent.

``Origin`` is checked against an allow-list (``MESH_ALLOWED_ORIGINS``): a browser always
sends it, so a page from a foreign site cannot ride on a user's credentials (cross-site
WebSocket hijacking). A handshake without ``Origin`` is a native client and passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from mesh.auth.access import bearer_token
from mesh.settings import Env, SettingsError
from mesh.topology import GATEWAY

BEARER_PROTOCOL: Final = "bearer"
ALLOWED_ORIGINS_VAR: Final = "MESH_ALLOWED_ORIGINS"
ANY_ORIGIN: Final = "*"
DEFAULT_ALLOWED_ORIGINS: Final = (
    f"http://localhost:{GATEWAY.port}",
    f"http://127.0.0.1:{GATEWAY.port}",
)


@dataclass(frozen=True, slots=True)
class HandshakeCredentials:
    token: str | None  # None: no usable credentials
    subprotocol: str | None  # "bearer" when the client offered the subprotocol pair
    problem: str  # why `token` is None ("" when it is not)


def offered_protocols(header: str | None) -> list[str]:
    """The subprotocols of a ``Sec-WebSocket-Protocol`` header, in the client's order."""
    return [p.strip() for p in (header or "").split(",") if p.strip()]


def handshake_credentials(
    authorization: str | None, protocols: Sequence[str]
) -> HandshakeCredentials:
    """The bearer token of a handshake, from the header or the ``bearer, <token>`` pair."""
    subprotocol = BEARER_PROTOCOL if BEARER_PROTOCOL in protocols else None
    if authorization is not None:
        token = bearer_token(authorization)
        if token is None:
            return HandshakeCredentials(
                None, subprotocol, "the Authorization header must be 'Bearer <access token>'"
            )
        return HandshakeCredentials(token, subprotocol, "")
    if subprotocol is not None:
        index = protocols.index(BEARER_PROTOCOL)
        token = protocols[index + 1] if index + 1 < len(protocols) else ""
        if token and token != BEARER_PROTOCOL:
            return HandshakeCredentials(token, subprotocol, "")
        return HandshakeCredentials(
            None, subprotocol, "the 'bearer' subprotocol must be followed by the access token"
        )
    return HandshakeCredentials(
        None,
        None,
        "sign in first: send 'Authorization: Bearer <token>' or the subprotocols 'bearer, <token>'",
    )


def normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """True for a handshake without Origin (not a browser) or with an allowed one."""
    if origin is None:
        return True
    return ANY_ORIGIN in allowed or normalize_origin(origin) in allowed


def allowed_origins(env: Env) -> frozenset[str]:
    """``MESH_ALLOWED_ORIGINS``: comma-separated ``scheme://host[:port]`` values, or ``*``;
    unset, the gateway's origin on ``MESH_GATEWAY_PORT`` (8080 by default)."""
    # Unset: the gateway's own pages (the web console) on the port it really listens on.
    port = env.port(GATEWAY.port_var, GATEWAY.port)
    default = f"http://localhost:{port},http://127.0.0.1:{port}"
    raw = env.str(ALLOWED_ORIGINS_VAR, default)
    origins = [o.strip() for o in raw.split(",") if o.strip()]
    for origin in origins:
        if origin == ANY_ORIGIN:
            continue
        parts = urlsplit(origin)
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
        ):
            raise SettingsError(
                ALLOWED_ORIGINS_VAR, f"expected scheme://host[:port] or *, got {origin!r}"
            )
    return frozenset(normalize_origin(o) for o in origins)
