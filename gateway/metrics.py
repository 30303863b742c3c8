"""The gateway's own Prometheus metrics: rate limits, circuit breakers, retries, deadlines.

Label values are bounded (policy names, upstream names, decisions). Gauges say how they
combine across `--workers` processes (`multiprocess_mode`), see `mesh.metrics`.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

# --- rate limits ---------------------------------------------------------------------------

RATE_LIMIT_DECISIONS: Final = Counter(
    "mesh_gateway_ratelimit_decisions_total",
    "Rate-limit decisions by policy, outcome (allowed, limited, or unavailable: 503 because "
    "Redis did not answer and on_redis_failure is closed) and where they were made.",
    ["policy", "decision", "backend"],
)
RATE_LIMIT_FALLBACK_ACTIVE: Final = Gauge(
    "mesh_gateway_ratelimit_fallback_active",
    "1 while a gateway process decides rate limits without Redis (local limiter, or "
    "refusing when on_redis_failure is closed) because Redis did not answer (any live worker).",
    multiprocess_mode="livemax",
)
RATE_LIMIT_FALLBACK_SWITCHES: Final = Counter(
    "mesh_gateway_ratelimit_fallback_switches_total",
    "Switches of the rate limiter between Redis and its fallback, by what it switched to "
    "(local, closed, redis).",
    ["to"],
)

# --- circuit breakers, retries, deadlines -------------------------------------------------

BREAKER_STATE: Final = Gauge(
    "mesh_gateway_breaker_state",
    "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open (worst live worker).",
    ["upstream"],
    multiprocess_mode="livemax",
)
BREAKER_TRANSITIONS: Final = Counter(
    "mesh_gateway_breaker_transitions_total",
    "Circuit breaker state changes, by the state entered.",
    ["upstream", "to"],
)
BREAKER_REJECTIONS: Final = Counter(
    "mesh_gateway_breaker_rejections_total",
    "Requests answered 503 by an open (or probing half-open) breaker, upstream untouched.",
    ["upstream"],
)
UPSTREAM_RETRIES: Final = Counter(
    "mesh_gateway_upstream_retries_total",
    "Upstream calls retried (idempotent methods, after UNAVAILABLE).",
    ["upstream"],
)
RETRY_BUDGET_EXHAUSTED: Final = Counter(
    "mesh_gateway_retry_budget_exhausted_total",
    "Retries not made because the upstream's retry budget was spent.",
    ["upstream"],
)
UPSTREAM_DEADLINE_EXCEEDED: Final = Counter(
    "mesh_gateway_upstream_deadline_exceeded_total",
    "Requests answered 504 because their deadline passed before the upstream answered.",
    ["upstream"],
)
