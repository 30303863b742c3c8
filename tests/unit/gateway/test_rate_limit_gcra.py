"""GCRA arithmetic and the in-process limiter, on a clock the test moves."""

from __future__ import annotations

from gateway.policy import RateLimit
from gateway.ratelimit.gcra import Rate, advance, decision
from gateway.ratelimit.local_limiter import LocalLimiter

SECOND = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000 * SECOND

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * SECOND)


def limiter(max_keys: int = 1000) -> tuple[LocalLimiter, Clock]:
    clock = Clock()
    return LocalLimiter(max_keys, clock), clock


def test_rate_of_a_policy() -> None:
    rate = Rate.of(RateLimit("general", limit=100, window_seconds=1, burst=200))
    assert (rate.interval_us, rate.burst, rate.capacity_us) == (10_000, 200, 2 * SECOND)
    assert Rate.of(RateLimit("auth", 10, 60, 10)).interval_us == 6 * SECOND


def test_a_burst_passes_at_once_then_one_unit_per_interval() -> None:
    local, clock = limiter()
    rate = Rate.of(RateLimit("p", limit=2, window_seconds=1, burst=5))  # one unit per 0.5 s
    outcomes = [local.decide("k", rate, 1).allowed for _ in range(8)]
    assert outcomes == [True] * 5 + [False] * 3
    clock.advance(0.49)
    assert not local.decide("k", rate, 1).allowed
    clock.advance(0.01)
    assert local.decide("k", rate, 1).allowed
    assert not local.decide("k", rate, 1).allowed
    clock.advance(10)  # long idle: the allowance is full again, never more than the burst
    assert [local.decide("k", rate, 1).allowed for _ in range(6)] == [True] * 5 + [False]


def test_remaining_and_the_times_reported() -> None:
    local, clock = limiter()
    rate = Rate.of(RateLimit("auth", limit=10, window_seconds=60, burst=10))  # 6 s per unit
    first = local.decide("k", rate, 1)
    assert (first.allowed, first.remaining, first.retry_after_seconds) == (True, 9, 0)
    assert first.next_unit_seconds == 6
    clock.advance(1.5)
    assert local.decide("k", rate, 1).next_unit_seconds == 4.5
    for _ in range(8):
        last = local.decide("k", rate, 1)
    assert (last.allowed, last.remaining) == (True, 0)
    refused = local.decide("k", rate, 1)
    assert (refused.allowed, refused.remaining) == (False, 0)
    assert refused.retry_after_seconds == refused.next_unit_seconds == 4.5
    assert local.decide("k", rate, 3).retry_after_seconds == 4.5 + 12


def test_a_refused_request_costs_nothing() -> None:
    local, clock = limiter()
    rate = Rate.of(RateLimit("p", limit=1, window_seconds=1, burst=1))
    assert local.decide("k", rate, 1).allowed
    for _ in range(100):
        assert not local.decide("k", rate, 1).allowed
    clock.advance(1)
    assert local.decide("k", rate, 1).allowed


def test_costs_count_units() -> None:
    local, _ = limiter()
    rate = Rate.of(RateLimit("ingest", limit=10, window_seconds=60, burst=10, cost="events"))
    assert local.decide("k", rate, 4).remaining == 6
    assert local.decide("k", rate, 6).remaining == 0
    refused = local.decide("k", rate, 1)
    assert not refused.allowed
    assert not local.decide("other", rate, 11).allowed  # more than the burst: never


def test_keys_are_independent() -> None:
    local, _ = limiter()
    rate = Rate.of(RateLimit("p", limit=1, window_seconds=60, burst=1))
    assert local.decide("a", rate, 1).allowed
    assert not local.decide("a", rate, 1).allowed
    assert local.decide("b", rate, 1).allowed


def test_the_table_stays_bounded_and_drops_idle_keys_first() -> None:
    local, clock = limiter(max_keys=100)
    rate = Rate.of(RateLimit("p", limit=1, window_seconds=1, burst=1))
    for i in range(1000):
        local.decide(f"idle{i}", rate, 1)
    assert len(local) <= 100
    clock.advance(2)  # every entry so far has expired
    for i in range(30):
        assert local.decide(f"new{i}", rate, 1).allowed
    assert len(local) <= 30 + 100 // 4


def test_decision_when_full_and_when_empty() -> None:
    rate = Rate(interval_us=SECOND, burst=3)
    full = decision(True, 0, rate, 1)
    assert (full.remaining, full.next_unit_seconds) == (3, 0)
    empty = decision(False, 3 * SECOND, rate, 2)
    assert (empty.remaining, empty.retry_after_seconds, empty.next_unit_seconds) == (0, 2, 1)
    assert advance(0, 10 * SECOND, rate, 3) == (True, 13 * SECOND)
    assert advance(13 * SECOND, 10 * SECOND, rate, 1) == (False, 13 * SECOND)
