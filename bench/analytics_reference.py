"""The analytics queries computed in plain Python from a list of events: the answers the
service must give exactly (used by `bench/analytics_ingest.py` and the integration tests).

Written independently of the service's code: buckets come straight from `zoneinfo` (local
wall-clock truncation, a day from its first instant), the funnel is a loop per user.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class Row:
    """One stored event as the queries see it."""

    type: str
    ts: datetime  # aware, millisecond precision (what MongoDB keeps)
    user: str | None
    properties: dict[str, Any] = field(default_factory=dict)


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def bucket_of(ts: datetime, interval: str, zone: ZoneInfo) -> datetime:
    """The first instant of the bucket holding `ts`: the instants with the same local date
    (day), or the same local wall-clock hour or minute and the same UTC offset."""
    local = ts.astimezone(zone)
    if interval == "day":
        return _day_start(local.date(), zone)
    offset = local.utcoffset()
    drop = {"second": 0, "microsecond": 0}
    if interval == "hour":
        drop["minute"] = 0
    first = local.replace(tzinfo=timezone(offset), **drop).astimezone(UTC)  # type: ignore[arg-type]
    while first.astimezone(zone).utcoffset() != offset:  # the offset changed inside it
        first += timedelta(minutes=1)
    return first


def all_buckets(start: datetime, end: datetime, interval: str, zone: ZoneInfo) -> list[datetime]:
    """Every bucket holding an instant of [start, end), by brute force (a minute at a time
    for minutes and hours, an hour at a time for days)."""
    step = timedelta(hours=1) if interval == "day" else timedelta(minutes=1)
    found, t = set(), start
    while t < end:
        found.add(bucket_of(t, interval, zone))
        t += step
    found.add(bucket_of(end - timedelta(milliseconds=1), interval, zone))
    return sorted(found)


def _in(rows: Iterable[Row], type_: str, start: datetime, end: datetime) -> list[Row]:
    return [r for r in rows if r.type == type_ and start <= r.ts < end]


def counts(
    rows: Sequence[Row], type_: str, start: datetime, end: datetime, interval: str, tz: str
) -> list[tuple[datetime, int]]:
    zone = ZoneInfo(tz)
    found = Counter(bucket_of(r.ts, interval, zone) for r in _in(rows, type_, start, end))
    return [(b, found.get(b, 0)) for b in all_buckets(start, end, interval, zone)]


def uniques(
    rows: Sequence[Row], type_: str, start: datetime, end: datetime, interval: str, tz: str
) -> list[tuple[datetime, int]]:
    zone = ZoneInfo(tz)
    users: dict[datetime, set[str]] = defaultdict(set)
    for r in _in(rows, type_, start, end):
        if r.user is not None:
            users[bucket_of(r.ts, interval, zone)].add(r.user)
    return [(b, len(users.get(b, ()))) for b in all_buckets(start, end, interval, zone)]


def top(
    rows: Sequence[Row], type_: str, start: datetime, end: datetime, prop: str, limit: int
) -> list[tuple[Any, int]]:
    """Most frequent first, ties in ascending value order (string values only)."""
    found = Counter(
        r.properties[prop] for r in _in(rows, type_, start, end) if prop in r.properties
    )
    return sorted(found.items(), key=lambda item: (-item[1], item[0]))[:limit]


def funnel(
    rows: Sequence[Row], steps: Sequence[str], within: timedelta, start: datetime, end: datetime
) -> list[tuple[str, int]]:
    by_user: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        if r.user is not None and r.type in steps and start <= r.ts < end:
            by_user[r.user].append(r)
    reached: Counter[int] = Counter()
    for events in by_user.values():
        events.sort(key=lambda r: r.ts)
        firsts = [r for r in events if r.type == steps[0]]
        if not firsts:
            continue
        t0 = last = firsts[0].ts
        count = 1
        for r in events:
            if count == len(steps):
                break
            if r.type == steps[count] and last < r.ts <= t0 + within:
                count += 1
                last = r.ts
        reached[count] += 1
    return [(s, sum(n for c, n in reached.items() if c > i)) for i, s in enumerate(steps)]
