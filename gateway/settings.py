"""The gateway's settings: read once from the environment at start, frozen, typed."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mesh.auth.handshake import DEFAULT_ALLOWED_ORIGINS, allowed_origins, normalize_origin
from mesh.auth.tokens import TokenSettings
from mesh.settings import Env, SettingsError, redact_url
from mesh.topology import ANALYTICS, CATALOG, CHAT, GATEWAY, USERS

MIB = 1024 * 1024


def _http_urls(env: Env, name: str, default: str) -> tuple[str, ...]:
    """A comma-separated list of http(s) base URLs, without trailing slashes."""
    urls = tuple(u.strip().rstrip("/") for u in env.str(name, default).split(",") if u.strip())
    if not urls:
        raise SettingsError(name, "expected at least one http(s) URL")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(name, f"expected http(s)://host[:port], got {redact_url(url)!r}")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise SettingsError(name, f"bad port in {redact_url(url)!r}") from None
    return urls


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = GATEWAY.port
    ops_port: int = GATEWAY.ops_port
    users_addresses: tuple[str, ...] = (f"127.0.0.1:{USERS.port}",)
    catalog_addresses: tuple[str, ...] = (f"127.0.0.1:{CATALOG.port}",)
    analytics_addresses: tuple[str, ...] = (f"127.0.0.1:{ANALYTICS.port}",)
    chat_urls: tuple[str, ...] = (f"http://127.0.0.1:{CHAT.port}",)
    body_limit_bytes: int = MIB
    upstream_timeout_seconds: float = 5.0
    channels_per_upstream: int = 2
    service_name: str = "gateway"
    tokens: TokenSettings = field(default_factory=TokenSettings)
    # Origins whose pages may open /ws/chat (MESH_ALLOWED_ORIGINS; chat checks the same list).
    allowed_origins: frozenset[str] = field(
        default_factory=lambda: frozenset(normalize_origin(o) for o in DEFAULT_ALLOWED_ORIGINS)
    )

    @classmethod
    def from_env(cls, env: Env) -> GatewaySettings:
        def addresses(name: str, port: int) -> tuple[str, ...]:
            return env.addresses(f"MESH_{name.upper()}_ADDR", f"127.0.0.1:{port}")

        return cls(
            host=env.str("MESH_HOST", "127.0.0.1"),
            port=env.port(GATEWAY.port_var, GATEWAY.port),
            ops_port=env.port(GATEWAY.ops_port_var, GATEWAY.ops_port),
            users_addresses=addresses(USERS.name, USERS.port),
            catalog_addresses=addresses(CATALOG.name, CATALOG.port),
            analytics_addresses=addresses(ANALYTICS.name, ANALYTICS.port),
            chat_urls=_http_urls(env, "MESH_CHAT_URL", f"http://127.0.0.1:{CHAT.port}"),
            body_limit_bytes=env.int("MESH_GATEWAY_BODY_LIMIT_BYTES", MIB, minimum=1),
            upstream_timeout_seconds=env.float(
                "MESH_GATEWAY_UPSTREAM_TIMEOUT_SECONDS", 5.0, minimum=0.001, maximum=3600.0
            ),
            channels_per_upstream=env.int(
                "MESH_GATEWAY_CHANNELS_PER_UPSTREAM", 2, minimum=1, maximum=64
            ),
            tokens=TokenSettings.from_env(env),
            allowed_origins=allowed_origins(env),
        )

    def grpc_addresses(self, upstream: str) -> tuple[str, ...]:
        """The replica addresses of the gRPC upstream named `upstream` (users, catalog, ...)."""
        by_name = {
            USERS.name: self.users_addresses,
            CATALOG.name: self.catalog_addresses,
            ANALYTICS.name: self.analytics_addresses,
        }
        try:
            return by_name[upstream]
        except KeyError:
            raise ValueError(f"no gRPC upstream named {upstream!r}") from None
