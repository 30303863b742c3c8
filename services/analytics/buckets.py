"""Time buckets by the clock of an IANA time zone, the same on every MongoDB-wire server.

A bucket is a minute, an hour or a day of local time in the query's zone, labelled by the
instant it starts. Hours and minutes are local wall-clock hours and minutes, so the repeated
hour when clocks go back is two buckets (one per UTC offset) and the skipped hour when they
go forward is none; a day is a local calendar date (23, 24 or 25 hours long). A bucket is
labelled by its first instant: local midnight or the top of the hour, or the end of a gap
that swallowed it, or the moment of an offset change inside it (a half-hour shift).

All time zone knowledge stays in Python (`zoneinfo`): the range is cut into spans of one
constant UTC offset, and the server only formats each event's time with its span's fixed
offset (``$dateToString`` with ``timezone: "+01:00"``, inside a ``$switch`` on the span
boundaries). So the server's own time zone database (which may differ from Python's, or be
missing) is never used, and the zero-filled list of buckets made here always lines up with
the keys the server returns. Offsets that are not whole minutes (local mean time before the
1970s in a few zones) cannot be written as ``+HH:MM`` and are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any, Final
from zoneinfo import ZoneInfo

INTERVALS: Final = ("minute", "hour", "day")
_SIZES: Final = {"minute": 60, "hour": 3600}
_PROBE: Final = timedelta(hours=1)  # offsets never change twice within an hour


class UnsupportedOffset(ValueError):
    """The zone has an offset in the range that is not a whole number of minutes."""


@dataclass(frozen=True, slots=True)
class OffsetSpan:
    """[start, end) of constant UTC offset `offset` (``"+HH:MM"``)."""

    start: datetime
    end: datetime
    offset: timedelta

    @property
    def offset_text(self) -> str:
        return format_offset(self.offset)


def format_offset(offset: timedelta) -> str:
    seconds = int(offset.total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, minutes = divmod(abs(seconds) // 60, 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def _offset_at(zone: ZoneInfo, instant: datetime) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _epoch(instant: datetime) -> int:
    return math.floor(instant.timestamp())


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first whole second in (before, after] with `after`'s offset."""
    low, high = _epoch(before), math.ceil(after.timestamp())
    old = _offset_at(zone, before)
    while high - low > 1:
        middle = (low + high) // 2
        if _offset_at(zone, datetime.fromtimestamp(middle, UTC)) == old:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def offset_spans(zone: ZoneInfo, start: datetime, end: datetime) -> list[OffsetSpan]:
    """[start, end) cut where the zone's UTC offset changes."""
    spans: list[OffsetSpan] = []
    span_start, offset = start, _offset_at(zone, start)
    probe, last = start, end - timedelta(microseconds=1)
    while probe < last:
        following = min(probe + _PROBE, last)
        next_offset = _offset_at(zone, following)
        if next_offset != offset:
            change = _transition(zone, probe, following)
            spans.append(OffsetSpan(span_start, change, offset))
            span_start, offset = change, next_offset
        probe = following
    spans.append(OffsetSpan(span_start, end, offset))
    for span in spans:
        if span.offset.total_seconds() % 60:
            raise UnsupportedOffset(
                f"{zone.key} has the UTC offset {span.offset} at {span.start:%Y-%m-%d}, "
                "not a whole number of minutes"
            )
    return spans


def day_start(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of a local date (fold=0 puts a skipped midnight after the gap)."""
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Bucketing:
    interval: str
    zone: ZoneInfo
    start: datetime
    end: datetime
    spans: tuple[OffsetSpan, ...]

    @classmethod
    def of(cls, interval: str, zone: ZoneInfo, start: datetime, end: datetime) -> Bucketing:
        if interval not in INTERVALS:
            raise ValueError(f"unknown interval {interval!r}")
        return cls(interval, zone, start, end, tuple(offset_spans(zone, start, end)))

    def key_format(self, span: OffsetSpan) -> str:
        """The ``$dateToString`` format of a bucket key in `span` (parsed back by `label`)."""
        if self.interval == "day":
            return "%Y-%m-%d"
        clock = "%H:%M:00" if self.interval == "minute" else "%H:00:00"
        return f"%Y-%m-%dT{clock}{span.offset_text}"

    def key_expression(self, field: str) -> dict[str, Any]:
        """An aggregation expression giving each event's bucket key (from its `field`)."""

        def formatted(span: OffsetSpan) -> dict[str, Any]:
            return {
                "$dateToString": {
                    "format": self.key_format(span),
                    "date": field,
                    "timezone": span.offset_text,
                }
            }

        if len(self.spans) == 1:
            return formatted(self.spans[0])
        return {
            "$switch": {
                "branches": [
                    {"case": {"$lt": [field, span.end]}, "then": formatted(span)}
                    for span in self.spans[:-1]
                ],
                "default": formatted(self.spans[-1]),
            }
        }

    def label(self, key: str) -> datetime:
        """The start of the bucket with server key `key`."""
        if self.interval == "day":
            return day_start(date.fromisoformat(key), self.zone)
        natural = datetime.fromisoformat(key)
        offset = natural.utcoffset()
        assert offset is not None
        return self._first_instant(natural.astimezone(UTC), offset)

    def label_of(self, instant: datetime) -> datetime:
        """The start of the bucket holding `instant` (what the server's key says)."""
        local = instant.astimezone(self.zone)
        if self.interval == "day":
            return day_start(local.date(), self.zone)
        offset = _offset_at(self.zone, instant)
        cut = local.replace(tzinfo=timezone(offset), second=0, microsecond=0)
        if self.interval == "hour":
            cut = cut.replace(minute=0)
        return self._first_instant(cut.astimezone(UTC), offset)

    def _first_instant(self, natural: datetime, offset: timedelta) -> datetime:
        """The first instant of the bucket whose wall-clock start under `offset` is `natural`:
        `natural` itself, unless the zone had another offset then (the offset changed in the
        middle of the hour, as Lord Howe Island's half-hour shift does)."""
        if _offset_at(self.zone, natural) == offset:
            return natural
        last = natural + timedelta(seconds=_SIZES[self.interval] - 1)
        return (
            _transition(self.zone, natural, last)
            if _offset_at(self.zone, last) == offset
            else natural
        )

    def labels(self) -> list[datetime]:
        """Every bucket overlapping [start, end), in order."""
        if self.interval == "day":
            first = self.start.astimezone(self.zone).date()
            last = (self.end - timedelta(microseconds=1)).astimezone(self.zone).date()
            days = (first + timedelta(days=n) for n in _days(first, last))
            # A date the zone skipped (Samoa's 2011-12-30) has no instant and no bucket.
            return [
                day_start(d, self.zone)
                for d in days
                if day_start(d, self.zone).astimezone(self.zone).date() == d
            ]
        size = _SIZES[self.interval]
        found: set[datetime] = set()
        for span in self.spans:
            shift = int(span.offset.total_seconds())
            aligned = (_epoch(span.start) + shift) // size * size - shift
            for natural in range(aligned, math.ceil(span.end.timestamp()), size):
                found.add(self._first_instant(datetime.fromtimestamp(natural, UTC), span.offset))
        return sorted(found)


def _days(first: date, last: date) -> range:
    return range((last - first).days + 1)
