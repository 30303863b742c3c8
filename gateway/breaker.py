"""Per-upstream circuit breakers: pybreaker's state machine, driven from asyncio.

pybreaker (1.4.1) wraps *synchronous* calls: ``CircuitBreaker.call(func)`` checks the state,
runs ``func`` and records the outcome in one go, under a thread lock. Its ``call_async`` is
Tornado-only, and decorating an ``async def`` records the creation of a coroutine (always a
success), so it never trips. `UpstreamBreaker` splits a call in two around the ``await``:

- `admit` before the call: closed lets it through; open answers `BreakerOpen` (with the
  seconds until half-open) until ``open_seconds`` have passed, then moves pybreaker to
  half-open (``half_open()``); half-open lets exactly one probe through at a time, the
  others get `BreakerOpen` as when open.
- `record` after it: the outcome is replayed through ``CircuitBreaker.call`` with a function
  that returns (success) or raises (failure), so pybreaker counts consecutive failures,
  opens at ``fail_max``, re-opens on a failed probe and closes on a successful one, exactly
  as for a synchronous call. `release` ends a call that has no verdict (the client went
  away and cancelled it): nothing is counted, and a probe's slot is freed. A caller that
  learns the outcome in steps (the chat HTTP proxy: connection, status, streamed body)
  holds a `Verdict` instead: the first outcome given counts, none given releases.

State lives in pybreaker's storage (a ``CircuitMemoryStorage`` per breaker, per process);
transitions arrive through a pybreaker listener, which logs one line per transition, sets
the state gauge and counts it. Two things pybreaker lacks are added here: the error-ratio
trip (at least ``error_ratio`` of at least ``minimum_calls`` calls failed within
``window_seconds``: a `WindowCounts`), and a monotonic open timer (pybreaker's
``opened_at`` is a wall-clock datetime, which may step).

Each admission carries the breaker's *generation*, bumped on every transition: an outcome
from before a transition (a slow call admitted while closed, ending after a trip or during
the next half-open) is ignored, so it can neither re-trip a breaker nor close it in the
probe's place.

What counts as a failure is the upstream being unwell (`FAILURE_CODES`): UNAVAILABLE,
DEADLINE_EXCEEDED, INTERNAL, UNKNOWN. Every other status means the upstream answered, which
counts as a success (NOT_FOUND, INVALID_ARGUMENT, ...), except CANCELLED, which has no
verdict. RESOURCE_EXHAUSTED is an answer too: in the mesh it is one caller's quota (failed
logins of an account or address, a message over 4 MiB), and a client that keeps hitting its
own limit must not cut every other client off the service.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import Final, NoReturn

import grpc
import grpc.aio
import pybreaker

from gateway.metrics import BREAKER_STATE, BREAKER_TRANSITIONS
from gateway.settings import BreakerSettings
from gateway.sliding_window import Clock, WindowCounts

log = logging.getLogger(__name__)

CLOSED: Final = pybreaker.STATE_CLOSED
HALF_OPEN: Final = pybreaker.STATE_HALF_OPEN
OPEN: Final = pybreaker.STATE_OPEN
STATE_VALUES: Final = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
"""The value of `mesh_gateway_breaker_state` for each state."""

FAILURE_CODES: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
NO_VERDICT_CODES: Final = frozenset({grpc.StatusCode.CANCELLED})


class BreakerOpen(Exception):
    """The breaker refused the call: open, or half-open with its probe under way."""

    def __init__(self, upstream: str, retry_after_seconds: float) -> None:
        super().__init__(f"circuit breaker of {upstream!r} is open")
        self.upstream = upstream
        self.retry_after_seconds = retry_after_seconds

    @property
    def retry_after(self) -> int:
        """Whole seconds until it lets a probe through, rounded up, at least 1."""
        return max(1, math.ceil(self.retry_after_seconds))


class _Failure(Exception):
    """Replays a failed call through pybreaker."""


def _succeed() -> None:
    return None


def _fail() -> NoReturn:
    raise _Failure


class _Transitions(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: UpstreamBreaker) -> None:
        self._owner = owner

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._owner._changed(old_state.name if old_state else CLOSED, new_state.name)


class UpstreamBreaker:
    """The circuit breaker of one upstream (see the module docstring). One event loop only."""

    def __init__(
        self, upstream: str, settings: BreakerSettings, clock: Clock = time.monotonic
    ) -> None:
        self.upstream = upstream
        self._settings = settings
        self._clock = clock
        self._storage = pybreaker.CircuitMemoryStorage(CLOSED)
        self._generation = 0
        self._probing = False
        self._opened_until = 0.0
        self._window = WindowCounts(settings.window_seconds, clock=clock)
        self._gauge = BREAKER_STATE.labels(upstream)
        self._gauge.set(STATE_VALUES[CLOSED])
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=settings.consecutive_failures,
            reset_timeout=settings.open_seconds,
            success_threshold=1,
            listeners=[_Transitions(self)],
            state_storage=self._storage,
            name=upstream,
            throw_new_error_on_trip=False,  # the failure replayed is raised, nothing else
        )

    @property
    def state(self) -> str:
        """``closed``, ``half-open`` or ``open`` (pybreaker's names)."""
        return self._storage.state

    @property
    def consecutive_failures(self) -> int:
        return self._storage.counter

    def admit(self) -> int:
        """Let one call through and return its ticket, or raise `BreakerOpen`."""
        state = self._storage.state
        if state == CLOSED:
            return self._generation
        if state == OPEN:
            wait = self._opened_until - self._clock()
            if wait > 0:
                raise BreakerOpen(self.upstream, wait)
            self._breaker.half_open()  # the listener starts a new generation
        if self._probing:  # half-open: one probe at a time, the others as if open
            raise BreakerOpen(self.upstream, 0.0)
        self._probing = True
        return self._generation

    def record(self, ticket: int, code: grpc.StatusCode) -> None:
        """The call admitted with `ticket` ended with `code` (OK for a success)."""
        if code in FAILURE_CODES:
            self.record_failure(ticket)
        elif code in NO_VERDICT_CODES:
            self.release(ticket)
        else:
            self.record_success(ticket)

    def record_success(self, ticket: int) -> None:
        if ticket != self._generation:
            return
        self._window.add(1, 0)
        if self._storage.counter == 0 and self._storage.state == CLOSED:
            return  # pybreaker would reset a zero count and stay closed: nothing to replay
        self._breaker.call(_succeed)  # resets the failure count; closes when half-open

    def record_failure(self, ticket: int) -> None:
        if ticket != self._generation:
            return
        self._window.add(1, 1)
        with contextlib.suppress(_Failure):  # pybreaker re-raises the failure it counted
            self._breaker.call(_fail)  # counts it; opens at fail_max, or when half-open
        if ticket == self._generation and self._tripped_by_ratio():
            self._breaker.open()

    def release(self, ticket: int) -> None:
        """The call admitted with `ticket` ended without a verdict: count nothing."""
        if ticket == self._generation and self._probing:
            self._probing = False

    def _tripped_by_ratio(self) -> bool:
        calls, failures = self._window.totals()
        settings = self._settings
        return calls >= settings.minimum_calls and failures >= settings.error_ratio * calls

    def _changed(self, old: str, new: str) -> None:
        self._generation += 1
        self._probing = False
        if new == OPEN:
            self._opened_until = self._clock() + self._settings.open_seconds
        if new != HALF_OPEN:
            self._window.clear()  # a closed breaker starts afresh
        self._gauge.set(STATE_VALUES[new])
        BREAKER_TRANSITIONS.labels(self.upstream, new).inc()
        log.log(
            logging.WARNING if new == OPEN else logging.INFO,
            "circuit breaker of %s: %s -> %s",
            self.upstream,
            old,
            new,
            extra={"upstream": self.upstream, "old_state": old, "new_state": new},
        )


class Verdict:
    """One admitted call's outcome, for callers that learn it in steps: the first `give`
    counts, later ones are ignored, and leaving the ``with`` block without one (the client
    went away) releases the call. With no breaker (breakers off) it does nothing."""

    __slots__ = ("_breaker", "_pending", "_ticket")

    def __init__(self, breaker: UpstreamBreaker | None, ticket: int = 0) -> None:
        self._breaker = breaker
        self._ticket = ticket
        self._pending = breaker is not None

    def give(self, *, failed: bool) -> None:
        if not self._pending:
            return
        self._pending = False
        assert self._breaker is not None
        if failed:
            self._breaker.record_failure(self._ticket)
        else:
            self._breaker.record_success(self._ticket)

    def __enter__(self) -> Verdict:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pending:
            self._pending = False
            assert self._breaker is not None
            self._breaker.release(self._ticket)
