"""Distributed rate limits for the gateway's routes (policies in `gateway/policies.toml`).

`RateLimiter.admit(request, rate_limit, caller, cost=...)` decides by GCRA in Redis (one
atomic script per decision, Redis's clock, shared by every gateway process and replica),
falls back to an in-process limiter (or 503s) while Redis does not answer, and leaves the
`RateLimit` / `RateLimit-Policy` fields for `add_rate_limit_headers` to put on the response.

Modules: `gcra` (the arithmetic), `redis_limiter` (the Lua script), `local_limiter` (the
fallback), `limiter` (keys, switching, problems, metrics), `headers`, `cost`.
"""

from gateway.ratelimit.cost import event_count
from gateway.ratelimit.headers import add_rate_limit_headers
from gateway.ratelimit.limiter import RateLimiter

__all__ = ["RateLimiter", "add_rate_limit_headers", "event_count"]
