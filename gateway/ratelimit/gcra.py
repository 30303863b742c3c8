"""GCRA (the generic cell rate algorithm): a rate with a burst, kept as one timestamp per key.

A policy of `limit` units per `window_seconds` earns one unit back every *interval*
(``window / limit``) and holds at most `burst` of them. The state of a consumer is its
*theoretical arrival time* (TAT): the moment its allowance would be full again. A decision
for `cost` units at time `now` is::

    base    = max(tat, now)
    new_tat = base + cost * interval
    allowed = new_tat - now <= burst * interval      (then tat := new_tat; else unchanged)

so a burst of `burst` passes at once, then one unit per interval, and a refused request
costs nothing. The Redis script (`redis_limiter`) and the in-process fallback
(`local_limiter`) both run exactly this; this module holds the arithmetic they share, in
integer microseconds (exact in a Lua double up to 2**53 µs, i.e. for the next 200 years of
Unix time).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from gateway.policy import RateLimit

MICROS: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Rate:
    """A `RateLimit` in the algorithm's units."""

    interval_us: int  # one unit is earned back every interval
    burst: int

    @property
    def capacity_us(self) -> int:
        """How far the TAT may run ahead of now: the whole burst."""
        return self.burst * self.interval_us

    @classmethod
    def of(cls, rate_limit: RateLimit) -> Rate:
        return cls(max(1, round(rate_limit.interval_seconds * MICROS)), rate_limit.burst)


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision and the consumer's allowance right after it."""

    allowed: bool
    remaining: int  # units that would pass right now
    retry_after_seconds: float  # until `cost` units would pass (0 when allowed)
    next_unit_seconds: float  # until `remaining` grows by one (0 when the allowance is full)


def advance(tat_us: int, now_us: int, rate: Rate, cost: int) -> tuple[bool, int]:
    """GCRA for `cost` units at `now_us`: (allowed, the TAT after the decision)."""
    base = max(tat_us, now_us)
    new_tat = base + cost * rate.interval_us
    if new_tat - now_us <= rate.capacity_us:
        return True, new_tat
    return False, base


def decision(allowed: bool, used_us: int, rate: Rate, cost: int) -> Decision:
    """The `Decision` for a consumer whose TAT is `used_us` ahead of now after deciding."""
    used_us = max(0, used_us)
    interval = rate.interval_us
    free_us = rate.capacity_us - used_us
    remaining = max(0, free_us // interval)
    retry_us = 0 if allowed else max(0, cost * interval - free_us)
    next_us = 0 if used_us == 0 else max(0, (remaining + 1) * interval - free_us)
    return Decision(allowed, remaining, retry_us / MICROS, next_us / MICROS)
