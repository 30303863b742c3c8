"""The `RateLimit-Policy` and `RateLimit` fields (draft-ietf-httpapi-ratelimit-headers-11).

Both are Structured Field lists of one item, the policy's name as a String::

    RateLimit-Policy: "general";q=100;w=1;mesh-burst=200
    RateLimit: "general";r=57;t=1

`RateLimit-Policy`: ``q`` units per ``w`` seconds (a whole number of seconds: a fractional
window is advertised as the whole seconds above it with the quota scaled down), plus the
implementation parameters ``mesh-burst`` (the most units at once, when it differs from
``q``) and ``mesh-unit="events"`` for policies that count events rather than requests (the
draft's ``qu`` registry has no such unit).

`RateLimit`: ``r`` units would pass right now; ``t`` is the effective window, the whole
seconds (rounded up) until ``r`` grows again, 0 when the allowance is full. On a 429,
`Retry-After` (seconds until the refused cost would pass, at least 1) is never earlier.

`RateLimiter.admit` stores both on the request (`FIELDS_KEY`); `add_rate_limit_headers`, an
`on_response_prepare` hook, puts them on whatever response then goes out: the upstream's
answer, an error problem or the 429 itself, streamed or not.
"""

from __future__ import annotations

import functools
import math
from typing import Final

from aiohttp import web

from gateway.policy import RateLimit
from gateway.ratelimit.gcra import Decision

RATELIMIT: Final = "RateLimit"
RATELIMIT_POLICY: Final = "RateLimit-Policy"

FIELDS_KEY: Final = web.RequestKey("gateway_rate_limit_fields", tuple[str, str | None])
"""(`RateLimit-Policy`, `RateLimit` or None when the allowance is unknown) of a request."""


@functools.cache
def policy_field(rate_limit: RateLimit) -> str:
    """The `RateLimit-Policy` value of `rate_limit`."""
    window = float(rate_limit.window_seconds)
    if window.is_integer():
        quota, whole = rate_limit.limit, int(window)
    else:
        whole = max(1, math.ceil(window))
        quota = math.floor(rate_limit.limit * whole / window)
    value = f'"{rate_limit.name}";q={quota};w={whole}'
    if rate_limit.burst != quota:
        value += f";mesh-burst={rate_limit.burst}"
    if rate_limit.cost == "events":
        value += ';mesh-unit="events"'
    return value


def limit_field(rate_limit: RateLimit, decision: Decision) -> str:
    """The `RateLimit` value after `decision`."""
    window = math.ceil(decision.next_unit_seconds)
    return f'"{rate_limit.name}";r={decision.remaining};t={window}'


def retry_after(decision: Decision) -> int:
    """`Retry-After` for a refused `decision`: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(decision.retry_after_seconds))


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: the fields `admit` stored for `request`, if any."""
    fields = request.get(FIELDS_KEY)
    if fields is not None:
        policy, limit = fields
        response.headers[RATELIMIT_POLICY] = policy
        if limit is not None:
            response.headers[RATELIMIT] = limit
