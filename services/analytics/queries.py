"""The admin queries' parameters: checked once, every problem reported with its field.

Semantics (the README's "Analytics" section says the same):

* Every query reads the events of one `source` - "clients" (sent to IngestEvents) or
  "services" (domain events of the other services) - whose stored time is in [from, to).
  The range is at most `max_range` long (400 days by default), and `from` must be before
  `to`; both are required and between 1970 and 9999.
* counts and uniques: buckets of `interval` (minute, hour or day; default day) by the clock of
  `tz` (IANA; default UTC), see `services.analytics.buckets`; minute buckets only for ranges
  of at most `max_minute_range` (7 days by default).
* top: the `limit` (1..100, default 10) most frequent values of the top-level `property`
  among the events that have it; ties in ascending value order.
* funnel: 2 to 10 `steps` (types; "a,b,c" accepted as one value). A user enters with their
  first step-1 event in the range at t0; step k+1 is reached by the earliest event of that
  type strictly after the event that reached step k and no later than t0 + `within`. The
  answer is the number of users reaching each step. Only events with a user id count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import grpc

from mesh.errors import FieldError, ServiceError, invalid
from services.analytics.buckets import INTERVALS, Bucketing, UnsupportedOffset
from services.analytics.events import TYPE_PATTERN

SOURCES: Final = ("clients", "services")
DEFAULT_INTERVAL: Final = "day"
DEFAULT_TOP_LIMIT: Final = 10
MAX_TOP_LIMIT: Final = 100
MIN_STEPS: Final = 2
MAX_STEPS: Final = 10
_WITHIN: Final = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(9999, 1, 1, tzinfo=UTC)


class QueryTimeout(ServiceError):
    """The query ran longer than the service allows (a narrower range answers faster)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


@dataclass(frozen=True, slots=True)
class QueryLimits:
    max_range: timedelta = timedelta(days=400)
    max_minute_range: timedelta = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class EventRange:
    """The events of `type` from `source` stored at a time in [start, end)."""

    source: str
    type: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class SeriesQuery:
    range: EventRange
    bucketing: Bucketing


@dataclass(frozen=True, slots=True)
class TopQuery:
    range: EventRange
    property: str
    limit: int


@dataclass(frozen=True, slots=True)
class FunnelQuery:
    source: str
    steps: tuple[str, ...]
    within: timedelta
    start: datetime
    end: datetime

    def ranges(self) -> list[EventRange]:
        """One range per distinct step type (each a `(type, ts)` index range)."""
        return [EventRange(self.source, t, self.start, self.end) for t in dict.fromkeys(self.steps)]


def _check_type(value: str, field: str, errors: list[FieldError]) -> None:
    if not value:
        errors.append(FieldError(field, "is required"))
    elif not TYPE_PATTERN.fullmatch(value):
        errors.append(FieldError(field, f"must match {TYPE_PATTERN.pattern}"))


def _check_time(value: datetime | None, field: str, errors: list[FieldError]) -> None:
    if value is None:
        errors.append(FieldError(field, "is required (an RFC 3339 date-time)"))
    elif not _EARLIEST <= value < _LATEST:
        errors.append(FieldError(field, "must be between 1970-01-01 and 9999-01-01"))


def _check_range(
    start: datetime | None,
    end: datetime | None,
    source: str,
    limits: QueryLimits,
    errors: list[FieldError],
) -> tuple[datetime, datetime] | None:
    """[start, end) when `source`, `from` and `to` are good (else their errors added)."""
    if source not in SOURCES:
        errors.append(FieldError("source", f"must be one of {', '.join(SOURCES)}"))
    before = len(errors)
    _check_time(start, "from", errors)
    _check_time(end, "to", errors)
    if start is None or end is None or len(errors) > before:
        return None
    if start >= end:
        errors.append(FieldError("from", "must be before `to`"))
    elif end - start > limits.max_range:
        errors.append(
            FieldError("to", f"the range is over the limit of {limits.max_range.days} days")
        )
    else:
        return start, end
    return None


def _zone(tz: str, errors: list[FieldError]) -> ZoneInfo | None:
    name = tz or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        errors.append(FieldError("tz", f"unknown IANA time zone {name[:64]!r}"))
        return None


def series_query(
    *,
    type_: str,
    start: datetime | None,
    end: datetime | None,
    interval: str,
    tz: str,
    source: str,
    limits: QueryLimits,
) -> SeriesQuery:
    """The parameters of counts and uniques; InvalidArgument naming every bad one."""
    errors: list[FieldError] = []
    source = source or SOURCES[0]
    interval = interval or DEFAULT_INTERVAL
    _check_type(type_, "type", errors)
    if interval not in INTERVALS:
        errors.append(FieldError("interval", f"must be one of {', '.join(INTERVALS)}"))
    zone = _zone(tz, errors)
    bounds = _check_range(start, end, source, limits, errors)
    if (
        bounds is not None
        and interval == "minute"
        and bounds[1] - bounds[0] > limits.max_minute_range
    ):
        errors.append(
            FieldError(
                "interval",
                f"minute buckets cover at most {limits.max_minute_range.days} days;"
                " use hour or day, or a shorter range",
            )
        )
    if errors or bounds is None or zone is None:
        raise invalid(errors)
    try:
        bucketing = Bucketing.of(interval, zone, *bounds)
    except UnsupportedOffset as exc:
        raise invalid([FieldError("tz", str(exc))]) from None
    return SeriesQuery(EventRange(source, type_, *bounds), bucketing)


def top_query(
    *,
    type_: str,
    start: datetime | None,
    end: datetime | None,
    property_: str,
    limit: int | None,
    source: str,
    limits: QueryLimits,
) -> TopQuery:
    errors: list[FieldError] = []
    source = source or SOURCES[0]
    _check_type(type_, "type", errors)
    if not property_:
        errors.append(FieldError("property", "is required"))
    elif (
        property_.startswith("$") or "." in property_ or "\x00" in property_ or len(property_) > 256
    ):
        errors.append(
            FieldError(
                "property",
                "must be a top-level property name: no '.', not starting with '$'",
            )
        )
    if limit is not None and not 1 <= limit <= MAX_TOP_LIMIT:
        errors.append(FieldError("limit", f"must be between 1 and {MAX_TOP_LIMIT}"))
    bounds = _check_range(start, end, source, limits, errors)
    if errors or bounds is None:
        raise invalid(errors)
    return TopQuery(
        EventRange(source, type_, *bounds),
        property_,
        DEFAULT_TOP_LIMIT if limit is None else limit,
    )


def parse_within(value: str) -> timedelta:
    """ "30m", "1h", "7d" -> a timedelta; ValueError otherwise."""
    found = _WITHIN.match(value.strip())
    if not found:
        raise ValueError(value)
    return timedelta(seconds=int(found[1]) * _UNITS[found[2]])


def split_steps(values: Sequence[str]) -> list[str]:
    """Steps as given: repeated, comma-separated, or both ("a,b", "c")."""
    return [part.strip() for value in values for part in value.split(",")]


def funnel_query(
    *,
    steps: Sequence[str],
    within: str,
    start: datetime | None,
    end: datetime | None,
    source: str,
    limits: QueryLimits,
) -> FunnelQuery:
    errors: list[FieldError] = []
    source = source or SOURCES[0]
    types = split_steps(steps)
    if not MIN_STEPS <= len(types) <= MAX_STEPS:
        errors.append(
            FieldError("steps", f"must name {MIN_STEPS} to {MAX_STEPS} event types, in order")
        )
    else:
        bad = [t for t in types if not TYPE_PATTERN.fullmatch(t)]
        if bad:
            errors.append(
                FieldError("steps", f"{bad[0][:64]!r} does not match {TYPE_PATTERN.pattern}")
            )
    window = timedelta(0)
    if not within:
        errors.append(FieldError("within", "is required, e.g. 30m, 1h or 7d"))
    else:
        try:
            window = parse_within(within)
        except ValueError:
            errors.append(
                FieldError("within", "must be a whole number and s, m, h or d, e.g. 30m, 1h, 7d")
            )
        else:
            if window > limits.max_range:
                errors.append(FieldError("within", f"must be at most {limits.max_range.days} days"))
    bounds = _check_range(start, end, source, limits, errors)
    if errors or bounds is None:
        raise invalid(errors)
    return FunnelQuery(source, tuple(types), window, *bounds)
