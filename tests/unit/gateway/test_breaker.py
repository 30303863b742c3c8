"""The asyncio adapter around pybreaker: trips, ignored codes, no-verdict calls, half-open."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from prometheus_client import REGISTRY

from gateway.breaker import (
    CLOSED,
    FAILURE_CODES,
    HALF_OPEN,
    OPEN,
    BreakerOpen,
    UpstreamBreaker,
    Verdict,
)
from gateway.settings import BreakerSettings
from gateway.sliding_window import WindowCounts

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
OK = grpc.StatusCode.OK
SETTINGS = BreakerSettings(
    consecutive_failures=5, error_ratio=0.5, minimum_calls=20, window_seconds=10, open_seconds=5
)
RATIO_ONLY = BreakerSettings(
    consecutive_failures=1000, error_ratio=0.5, minimum_calls=20, window_seconds=10, open_seconds=5
)
FAILURES = [  # the contract: the codes meaning the upstream is unwell
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNKNOWN,
]
NOT_FAILURES = [c for c in grpc.StatusCode if c not in FAILURES and c is not OK]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, settings: BreakerSettings = SETTINGS, name: str = "b") -> UpstreamBreaker:
    return UpstreamBreaker(name, settings, clock=clock)


def outcome(b: UpstreamBreaker, code: grpc.StatusCode) -> None:
    b.record(b.admit(), code)


def trip(b: UpstreamBreaker) -> None:
    for _ in range(SETTINGS.consecutive_failures):
        outcome(b, UNAVAILABLE)
    assert b.state == OPEN


def test_the_failure_codes_are_the_contracts() -> None:
    assert set(FAILURE_CODES) == set(FAILURES)


@pytest.mark.parametrize("code", FAILURES, ids=str)
def test_consecutive_failures_trip_it(clock: Clock, code: grpc.StatusCode) -> None:
    b = breaker(clock)
    for _ in range(4):
        outcome(b, code)
    assert b.state == CLOSED
    assert b.consecutive_failures == 4
    outcome(b, code)
    assert b.state == OPEN
    with pytest.raises(BreakerOpen) as refused:
        b.admit()
    assert refused.value.retry_after == 5


def test_a_success_resets_the_consecutive_count(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(3):
        for _ in range(4):
            outcome(b, UNAVAILABLE)
        outcome(b, OK)
    assert b.state == CLOSED
    assert b.consecutive_failures == 0


@pytest.mark.parametrize("code", NOT_FAILURES, ids=str)
def test_codes_of_a_healthy_upstream_never_count(clock: Clock, code: grpc.StatusCode) -> None:
    b = breaker(clock)
    for _ in range(4):
        outcome(b, UNAVAILABLE)
    for _ in range(100):
        outcome(b, code)
    assert b.state == CLOSED
    if code is not grpc.StatusCode.CANCELLED:  # an answer: the failure run is broken
        assert b.consecutive_failures == 0
    outcome(b, UNAVAILABLE)  # CANCELLED counted nothing: this is the 5th in a row
    assert b.state == (OPEN if code is grpc.StatusCode.CANCELLED else CLOSED)


def test_the_error_ratio_trips_it_only_with_the_minimum_of_calls(clock: Clock) -> None:
    b = breaker(clock, RATIO_ONLY)
    for _ in range(9):
        outcome(b, UNAVAILABLE)
        outcome(b, OK)
    outcome(b, UNAVAILABLE)  # 10 of 19 failed: 53 %, but fewer than 20 calls
    assert b.state == CLOSED
    outcome(b, OK)  # a success does not trip it, even at 50 % of 20
    assert b.state == CLOSED
    outcome(b, UNAVAILABLE)  # 11 of 21
    assert b.state == OPEN


def test_the_error_ratio_under_the_threshold_does_not_trip(clock: Clock) -> None:
    b = breaker(clock, RATIO_ONLY)
    for _ in range(50):
        outcome(b, OK)
        outcome(b, UNAVAILABLE)
        outcome(b, OK)  # 1 failure in 3 calls
    assert b.state == CLOSED


def test_failures_older_than_the_window_do_not_count(clock: Clock) -> None:
    b = breaker(clock, RATIO_ONLY)
    for _ in range(15):
        outcome(b, UNAVAILABLE)
    clock.now += 10.5  # they slide out
    for _ in range(10):
        outcome(b, OK)
    for _ in range(9):
        outcome(b, UNAVAILABLE)
    assert b.state == CLOSED  # 9 of 19 in the window
    outcome(b, UNAVAILABLE)
    assert b.state == OPEN  # 10 of 20


def test_a_closed_breaker_forgets_the_failures_that_opened_it(clock: Clock) -> None:
    b = breaker(clock, RATIO_ONLY)
    for _ in range(10):
        outcome(b, OK)
        outcome(b, UNAVAILABLE)
    assert b.state == OPEN
    clock.now += 5
    outcome(b, OK)  # the probe
    assert b.state == CLOSED
    outcome(b, UNAVAILABLE)  # 1 of 1 since it closed, not 11 of 21
    assert b.state == CLOSED


def test_open_answers_at_once_until_open_seconds_then_lets_one_probe(clock: Clock) -> None:
    b = breaker(clock)
    trip(b)
    clock.now += 3.2
    with pytest.raises(BreakerOpen) as refused:
        b.admit()
    assert refused.value.retry_after == 2  # 1.8 s rounded up
    clock.now += 1.79
    with pytest.raises(BreakerOpen) as refused:
        b.admit()
    assert refused.value.retry_after == 1  # never 0
    clock.now += 0.02
    probe = b.admit()
    assert b.state == HALF_OPEN
    for _ in range(3):
        with pytest.raises(BreakerOpen) as refused:
            b.admit()
        assert refused.value.retry_after == 1
    b.record(probe, OK)
    assert b.state == CLOSED
    assert b.consecutive_failures == 0
    b.admit()
    b.admit()  # closed again: everyone passes


@pytest.mark.parametrize("code", FAILURES, ids=str)
def test_a_failed_probe_reopens_it_for_open_seconds(clock: Clock, code: grpc.StatusCode) -> None:
    b = breaker(clock)
    trip(b)
    clock.now += 5
    b.record(b.admit(), code)
    assert b.state == OPEN
    clock.now += 4.9
    with pytest.raises(BreakerOpen):
        b.admit()
    clock.now += 0.1
    b.record(b.admit(), OK)
    assert b.state == CLOSED


def test_a_probe_answered_not_found_closes_it(clock: Clock) -> None:
    b = breaker(clock)
    trip(b)
    clock.now += 5
    b.record(b.admit(), grpc.StatusCode.NOT_FOUND)  # the upstream answered
    assert b.state == CLOSED


def test_a_released_probe_counts_nothing_and_frees_the_slot(clock: Clock) -> None:
    b = breaker(clock)
    trip(b)
    clock.now += 5
    b.release(b.admit())  # its client went away
    assert b.state == HALF_OPEN
    probe = b.admit()  # the next request probes
    with pytest.raises(BreakerOpen):
        b.admit()
    b.record(probe, OK)
    assert b.state == CLOSED


def test_an_outcome_from_before_a_transition_is_ignored(clock: Clock) -> None:
    b = breaker(clock)
    slow = b.admit()  # admitted while closed, answers late
    trip(b)
    clock.now += 5
    probe = b.admit()
    b.record(slow, OK)  # must not close it in the probe's place
    assert b.state == HALF_OPEN
    b.record(slow, UNAVAILABLE)  # nor reopen it
    assert b.state == HALF_OPEN
    b.release(slow)  # nor free the probe's slot
    with pytest.raises(BreakerOpen):
        b.admit()
    b.record(probe, OK)
    assert b.state == CLOSED


async def test_half_open_lets_exactly_one_concurrent_probe_through(clock: Clock) -> None:
    b = breaker(clock)
    trip(b)
    clock.now += 5
    release = asyncio.Event()
    started = 0

    async def request() -> str:
        nonlocal started
        try:
            ticket = b.admit()
        except BreakerOpen:
            return "refused"
        started += 1
        await release.wait()  # the upstream takes its time
        b.record(ticket, OK)
        return "probed"

    tasks = [asyncio.create_task(request()) for _ in range(20)]
    await asyncio.sleep(0.01)
    assert started == 1
    assert b.state == HALF_OPEN
    release.set()
    results = await asyncio.gather(*tasks)
    assert sorted(results) == ["probed"] + ["refused"] * 19
    assert b.state == CLOSED


async def test_a_cancelled_call_has_no_verdict(clock: Clock) -> None:
    """The pattern of `Upstreams.call`: a cancellation releases the ticket."""
    b = breaker(clock)
    trip(b)
    clock.now += 5
    hang = asyncio.Event()

    async def request() -> None:
        ticket = b.admit()
        try:
            await hang.wait()
        except BaseException:
            b.release(ticket)
            raise

    probe = asyncio.create_task(request())
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert b.state == HALF_OPEN
    b.record(b.admit(), OK)
    assert b.state == CLOSED


def test_a_verdict_counts_its_first_outcome_only(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(4):
        with Verdict(b, b.admit()) as verdict:
            verdict.give(failed=True)
            verdict.give(failed=False)  # ignored: a proxy learnt more after judging
    assert b.consecutive_failures == 4
    with Verdict(b, b.admit()) as verdict:
        verdict.give(failed=True)
    assert b.state == OPEN


def test_a_verdict_never_given_releases_the_call(clock: Clock) -> None:
    b = breaker(clock)
    trip(b)
    clock.now += 5
    with pytest.raises(asyncio.CancelledError), Verdict(b, b.admit()):
        raise asyncio.CancelledError  # the client went away before the answer
    assert b.state == HALF_OPEN
    with Verdict(b, b.admit()) as verdict:  # the slot was freed
        verdict.give(failed=False)
    assert b.state == CLOSED
    with Verdict(None) as nothing:  # breakers off
        nothing.give(failed=True)


def test_each_transition_is_logged_once_and_exported(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    name = "logged-upstream"
    b = breaker(clock, name=name)

    def state_value() -> float | None:
        return REGISTRY.get_sample_value("mesh_gateway_breaker_state", {"upstream": name})

    def transitions(to: str) -> float:
        labels = {"upstream": name, "to": to}
        return REGISTRY.get_sample_value("mesh_gateway_breaker_transitions_total", labels) or 0.0

    assert state_value() == 0
    with caplog.at_level(logging.INFO, logger="gateway.breaker"):
        trip(b)
        assert state_value() == 2
        clock.now += 5
        probe = b.admit()
        assert state_value() == 1
        b.record(probe, OK)
        assert state_value() == 0
    records = [r for r in caplog.records if r.name == "gateway.breaker"]
    lines = [(r.upstream, r.old_state, r.new_state) for r in records]  # type: ignore[attr-defined]
    assert lines == [(name, CLOSED, OPEN), (name, OPEN, HALF_OPEN), (name, HALF_OPEN, CLOSED)]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO, logging.INFO]
    assert records[0].getMessage() == f"circuit breaker of {name}: closed -> open"
    assert (transitions(OPEN), transitions(HALF_OPEN), transitions(CLOSED)) == (1, 1, 1)


def test_window_counts_slide(clock: Clock) -> None:
    window = WindowCounts(1.0, buckets=10, clock=clock)
    window.add(3, 1)
    clock.now += 0.5
    window.add(2, 2)
    assert window.totals() == (5, 3)
    clock.now += 0.55  # the first slice is out
    assert window.totals() == (2, 2)
    clock.now += 1.0
    assert window.totals() == (0, 0)
    window.add()
    window.clear()
    assert window.totals() == (0, 0)
