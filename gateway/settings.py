"""The gateway's settings: read once from the environment at start, frozen, typed."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from gateway.policy import DEFAULT_POLICY_FILE, POLICIES_VAR, PolicyTable, RoutePolicy
from mesh.auth.handshake import DEFAULT_ALLOWED_ORIGINS, allowed_origins, normalize_origin
from mesh.auth.tokens import TokenSettings
from mesh.backing_settings import DEFAULT_REDIS, StoreUrls
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


IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
TRUSTED_PROXIES_VAR = "MESH_GATEWAY_TRUSTED_PROXIES"


def _networks(env: Env, name: str) -> tuple[IpNetwork, ...]:
    """A comma-separated list of addresses or CIDR blocks (``10.0.0.0/8,::1``)."""
    networks = []
    for item in (i.strip() for i in env.str(name, "").split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise SettingsError(
                name, f"expected IP addresses or CIDR blocks, got {item!r}"
            ) from None
    return tuple(networks)


def default_workers() -> int:
    """One gateway process per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When a per-upstream circuit breaker opens, and for how long."""

    enabled: bool = True
    consecutive_failures: int = 5  # trips after this many failures in a row ...
    error_ratio: float = 0.5  # ... or when at least this share of calls fail
    minimum_calls: int = 20  # ... out of at least this many calls
    window_seconds: float = 10.0  # ... within this sliding window
    open_seconds: float = 5.0  # open this long, then half-open: one probe at a time

    @classmethod
    def from_env(cls, env: Env) -> BreakerSettings:
        return cls(
            enabled=env.bool("MESH_GATEWAY_BREAKERS", True),
            consecutive_failures=env.int("MESH_GATEWAY_BREAKER_FAILURES", 5, minimum=1),
            error_ratio=env.float(
                "MESH_GATEWAY_BREAKER_ERROR_RATIO", 0.5, minimum=0.01, maximum=1.0
            ),
            minimum_calls=env.int("MESH_GATEWAY_BREAKER_MINIMUM_CALLS", 20, minimum=1),
            window_seconds=env.float(
                "MESH_GATEWAY_BREAKER_WINDOW_SECONDS", 10.0, minimum=0.1, maximum=3600.0
            ),
            open_seconds=env.float(
                "MESH_GATEWAY_BREAKER_OPEN_SECONDS", 5.0, minimum=0.01, maximum=3600.0
            ),
        )


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """Retries of idempotent calls on UNAVAILABLE: jittered exponential backoff, budgeted."""

    enabled: bool = True
    max_retries: int = 2
    backoff_base_seconds: float = 0.025  # first backoff is uniform in [0, base], then doubles
    backoff_max_seconds: float = 0.25
    budget_ratio: float = 0.2  # retries <= this share of requests per upstream ...
    budget_window_seconds: float = 10.0  # ... counted over this sliding window

    @classmethod
    def from_env(cls, env: Env) -> RetrySettings:
        return cls(
            enabled=env.bool("MESH_GATEWAY_RETRIES", True),
            max_retries=env.int("MESH_GATEWAY_RETRY_MAX", 2, minimum=0, maximum=5),
            backoff_base_seconds=env.float(
                "MESH_GATEWAY_RETRY_BACKOFF_SECONDS", 0.025, minimum=0.0, maximum=10.0
            ),
            backoff_max_seconds=env.float(
                "MESH_GATEWAY_RETRY_BACKOFF_MAX_SECONDS", 0.25, minimum=0.0, maximum=60.0
            ),
            budget_ratio=env.float("MESH_GATEWAY_RETRY_BUDGET", 0.2, minimum=0.0, maximum=1.0),
            budget_window_seconds=env.float(
                "MESH_GATEWAY_RETRY_BUDGET_WINDOW_SECONDS", 10.0, minimum=0.1, maximum=3600.0
            ),
        )


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """Distributed rate limits (Redis), and what happens when Redis does not answer."""

    enabled: bool = True
    redis_url: str = DEFAULT_REDIS
    key_prefix: str = "mesh:rl:"
    # "local": fail open to a per-process limiter at the same rates; "closed": answer 503.
    on_redis_failure: Literal["local", "closed"] = "local"
    redis_timeout_seconds: float = 0.25  # a decision waits at most this long for Redis
    # Addresses whose X-Forwarded-For is believed (a load balancer in front of the gateway).
    trusted_proxies: tuple[IpNetwork, ...] = ()

    @classmethod
    def from_env(cls, env: Env) -> RateLimitSettings:
        stores = StoreUrls.from_env(env)
        failure = env.choice(
            "MESH_GATEWAY_RATE_LIMIT_ON_REDIS_FAILURE", "local", ("local", "closed")
        )
        return cls(
            enabled=env.bool("MESH_GATEWAY_RATE_LIMITS", True),
            redis_url=stores.redis_url,
            key_prefix=f"{stores.namespace}mesh:rl:",
            on_redis_failure="closed" if failure == "closed" else "local",
            redis_timeout_seconds=env.float(
                "MESH_GATEWAY_RATE_LIMIT_REDIS_TIMEOUT_SECONDS", 0.25, minimum=0.01, maximum=5.0
            ),
            trusted_proxies=_networks(env, TRUSTED_PROXIES_VAR),
        )


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
    # Origins whose pages may call the API (CORS) and open /ws/chat (MESH_ALLOWED_ORIGINS;
    # chat checks the same list).
    allowed_origins: frozenset[str] = field(
        default_factory=lambda: frozenset(normalize_origin(o) for o in DEFAULT_ALLOWED_ORIGINS)
    )
    policies: PolicyTable = field(default_factory=PolicyTable)  # none: no rate limits
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    breakers: BreakerSettings = field(default_factory=BreakerSettings)
    retries: RetrySettings = field(default_factory=RetrySettings)
    # A client must send a request's whole head within this time (slow-loris defence).
    header_timeout_seconds: float = 10.0
    # Gateway processes sharing the port (SO_REUSEPORT); `--workers N` overrides.
    workers: int = 1

    @classmethod
    def from_env(cls, env: Env) -> GatewaySettings:
        def addresses(name: str, port: int) -> tuple[str, ...]:
            return env.addresses(f"MESH_{name.upper()}_ADDR", f"127.0.0.1:{port}")

        body_limit = env.int("MESH_GATEWAY_BODY_LIMIT_BYTES", MIB, minimum=1)
        timeout = env.float(
            "MESH_GATEWAY_UPSTREAM_TIMEOUT_SECONDS", 5.0, minimum=0.001, maximum=3600.0
        )
        return cls(
            host=env.str("MESH_HOST", "127.0.0.1"),
            port=env.port(GATEWAY.port_var, GATEWAY.port),
            ops_port=env.port(GATEWAY.ops_port_var, GATEWAY.ops_port),
            users_addresses=addresses(USERS.name, USERS.port),
            catalog_addresses=addresses(CATALOG.name, CATALOG.port),
            analytics_addresses=addresses(ANALYTICS.name, ANALYTICS.port),
            chat_urls=_http_urls(env, "MESH_CHAT_URL", f"http://127.0.0.1:{CHAT.port}"),
            body_limit_bytes=body_limit,
            upstream_timeout_seconds=timeout,
            channels_per_upstream=env.int(
                "MESH_GATEWAY_CHANNELS_PER_UPSTREAM", 2, minimum=1, maximum=64
            ),
            tokens=TokenSettings.from_env(env),
            allowed_origins=allowed_origins(env),
            policies=PolicyTable.load(Path(env.str(POLICIES_VAR, str(DEFAULT_POLICY_FILE)))),
            rate_limits=RateLimitSettings.from_env(env),
            breakers=BreakerSettings.from_env(env),
            retries=RetrySettings.from_env(env),
            header_timeout_seconds=env.float(
                "MESH_GATEWAY_HEADER_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=3600.0
            ),
            workers=env.int("MESH_GATEWAY_WORKERS", default_workers(), minimum=1, maximum=256),
        )

    def route_policy(self, name: str) -> RoutePolicy:
        """The policy of the route named `name` (a method's full name, or `chat.http`)."""
        default = RoutePolicy("default", self.upstream_timeout_seconds, self.body_limit_bytes, None)
        return self.policies.for_name(name, default)

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
