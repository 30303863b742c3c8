"""The in-process fallback: the same GCRA at the same rates, in memory, bounded.

Used while Redis does not answer (`MESH_GATEWAY_RATE_LIMIT_ON_REDIS_FAILURE=local`). Each
gateway process counts on its own, so with N processes (workers, replicas) a consumer may
get up to N times its allowance until Redis is back: failing open, but not unlimited.

Memory is bounded: an entry whose TAT has passed holds no information (a fresh consumer is
the same) and is dropped by a sweep; a sweep runs every `max_keys // 4` new keys, and when
the table is still full after it, the oldest entries are forgotten (those consumers get a
fresh allowance, which errs on the open side, as this whole mode does).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from gateway.ratelimit.gcra import Decision, Rate, advance, decision

DEFAULT_MAX_KEYS: Final = 100_000


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class LocalLimiter:
    """GCRA state per key in a dict; `decide` is synchronous and O(1) amortized."""

    def __init__(
        self, max_keys: int = DEFAULT_MAX_KEYS, clock: Callable[[], int] = monotonic_us
    ) -> None:
        self._max_keys = max(4, max_keys)
        self._clock = clock
        self._tats: dict[str, int] = {}
        self._new_since_sweep = 0

    def __len__(self) -> int:
        return len(self._tats)

    def decide(self, key: str, rate: Rate, cost: int) -> Decision:
        now = self._clock()
        tat = self._tats.get(key)
        allowed, new_tat = advance(now if tat is None else tat, now, rate, cost)
        if allowed:
            if tat is None:
                self._new_since_sweep += 1
                if self._new_since_sweep >= self._max_keys // 4 or len(self) >= self._max_keys:
                    self._sweep(now)
            self._tats[key] = new_tat
        return decision(allowed, new_tat - now, rate, cost)

    def _sweep(self, now: int) -> None:
        self._new_since_sweep = 0
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        excess = len(self._tats) - (self._max_keys - self._max_keys // 4)
        if excess > 0:  # still full of live entries: forget the oldest-inserted ones
            for key in list(self._tats)[:excess]:
                del self._tats[key]
