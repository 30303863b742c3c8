"""Counts over a sliding time window (a breaker's calls and failures, a retry budget)."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class WindowCounts:
    """Two counts (events and hits) over a sliding window of `buckets` time slices.

    Adding is O(1); `totals` sums the slices still inside the window, so the window is
    between ``window_seconds * (1 - 1/buckets)`` and ``window_seconds`` long.
    """

    __slots__ = ("_clock", "_events", "_hits", "_slices", "_width")

    def __init__(
        self, window_seconds: float, buckets: int = 10, clock: Clock = time.monotonic
    ) -> None:
        if window_seconds <= 0 or buckets < 1:
            raise ValueError("a window needs a positive length and at least one bucket")
        self._width = window_seconds / buckets
        self._clock = clock
        self._slices = [-1] * buckets  # the absolute slice number each bucket holds
        self._events = [0] * buckets
        self._hits = [0] * buckets

    def add(self, events: int = 1, hits: int = 0) -> None:
        number = int(self._clock() / self._width)
        index = number % len(self._slices)
        if self._slices[index] != number:
            self._slices[index] = number
            self._events[index] = events
            self._hits[index] = hits
        else:
            self._events[index] += events
            self._hits[index] += hits

    def totals(self) -> tuple[int, int]:
        """(events, hits) within the window."""
        oldest = int(self._clock() / self._width) - len(self._slices)
        events = hits = 0
        for index, number in enumerate(self._slices):
            if number > oldest:
                events += self._events[index]
                hits += self._hits[index]
        return events, hits

    def clear(self) -> None:
        self._slices = [-1] * len(self._slices)
