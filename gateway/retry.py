"""Retries of upstream calls: which calls may be retried, when, and how many per upstream.

A call is retried only when it is idempotent (`is_idempotent`: a GET/HEAD route, or a proto
method declared ``idempotency_level = IDEMPOTENT`` or ``NO_SIDE_EFFECTS``), only after
UNAVAILABLE (the call did not run, or the replica went away), at most ``max_retries`` times,
after a full-jitter exponential backoff (`backoff_seconds`), never when that backoff would end
past the request's deadline, and only while the upstream's `RetryBudget` allows it.

The budget keeps retries at or below ``budget_ratio`` of the requests sent to the upstream
over a sliding window (20 % over 10 s by default), so that when an upstream fails every call
the gateway adds at most that much load to it instead of multiplying it by
``1 + max_retries``. It is strict: with fewer than ``1 / budget_ratio`` requests in the window
(5 by default) there is no retry at all. It is counted per gateway process.

Why not gRPC's own retries (a ``retryPolicy`` in the channel's service config)? They retry
inside the channel, so the breaker and the metrics never see the attempts, and their
throttle (``retryThrottling``) is a token bucket per channel that stops retrying once failures
outweigh successes - not a cap on retries as a share of requests across the several channels
and methods of an upstream. They also cannot tell a GET from a POST on the same method
table without listing every method, nor skip a retry whose backoff would outlast the
deadline. gRPC's transparent retries (of calls that never left the client) stay on.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final

from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

from gateway.sliding_window import Clock, WindowCounts

IDEMPOTENT_HTTP_METHODS: Final = frozenset({"GET", "HEAD"})
IDEMPOTENT_LEVELS: Final = frozenset({MethodOptions.IDEMPOTENT, MethodOptions.NO_SIDE_EFFECTS})


def is_idempotent(http_method: str, method: MethodDescriptor) -> bool:
    """Whether a call may be repeated: a GET/HEAD, or a method the proto declares idempotent."""
    return (
        http_method in IDEMPOTENT_HTTP_METHODS
        or method.GetOptions().idempotency_level in IDEMPOTENT_LEVELS
    )


def backoff_seconds(
    retry: int,
    base_seconds: float,
    max_seconds: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Full jitter: uniform in [0, min(max, base * 2**retry)] before retry number `retry`
    (0 for the first). Spreads retries of many clients instead of synchronising them."""
    return uniform(0.0, min(max_seconds, base_seconds * 2.0**retry))


class RetryBudget:
    """Retries allowed while they stay within `ratio` of the requests over the window.

    `request()` counts a request (every one sent to the upstream, retried or not);
    `try_spend()` takes one retry if ``retries + 1 <= ratio * requests`` within the window.
    Over any run, not just any window, retries stay within ``ratio`` of the requests: the
    window ending at the last retry holds at most that share, and so does the window ending
    at the last retry before it began, and so on: disjoint windows covering every retry.
    """

    __slots__ = ("_counts", "ratio")

    def __init__(self, ratio: float, window_seconds: float, clock: Clock = time.monotonic) -> None:
        self.ratio = ratio
        self._counts = WindowCounts(window_seconds, clock=clock)  # (requests, retries)

    def request(self) -> None:
        self._counts.add(1, 0)

    def try_spend(self) -> bool:
        requests, retries = self._counts.totals()
        if retries + 1 > self.ratio * requests:
            return False
        self._counts.add(0, 1)
        return True
