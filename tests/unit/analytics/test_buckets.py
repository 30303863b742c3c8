"""Time buckets by a zone's clock: the labels listed equal the buckets of every instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bench.analytics_reference import all_buckets, bucket_of
from services.analytics.buckets import (
    Bucketing,
    UnsupportedOffset,
    format_offset,
    offset_spans,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


CASES = [
    ("Europe/Berlin", "hour", "2026-10-24T20:00:00Z", "2026-10-25T06:00:00Z"),  # clocks back
    ("Europe/Berlin", "hour", "2026-03-28T20:00:00Z", "2026-03-29T06:00:00Z"),  # forward
    ("Europe/Berlin", "day", "2026-03-27T10:00:00Z", "2026-04-02T00:00:00Z"),
    ("Europe/Berlin", "minute", "2026-10-25T00:50:00Z", "2026-10-25T01:10:00Z"),
    ("America/Sao_Paulo", "day", "2018-11-02T00:00:00Z", "2018-11-06T00:00:00Z"),  # no midnight
    ("Asia/Kathmandu", "hour", "2026-01-01T00:10:00Z", "2026-01-01T05:00:00Z"),  # +05:45
    ("Australia/Lord_Howe", "hour", "2026-04-04T12:00:00Z", "2026-04-04T18:00:00Z"),  # 30 min
    ("UTC", "day", "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z"),
    ("Pacific/Apia", "day", "2011-12-28T00:00:00Z", "2012-01-02T00:00:00Z"),  # skipped a day
]


@pytest.mark.parametrize(("tz", "interval", "start", "end"), CASES)
def test_labels_are_the_buckets_of_every_instant(
    tz: str, interval: str, start: str, end: str
) -> None:
    zone = ZoneInfo(tz)
    bucketing = Bucketing.of(interval, zone, at(start), at(end))
    assert bucketing.labels() == all_buckets(at(start), at(end), interval, zone)


@pytest.mark.parametrize(("tz", "interval", "start", "end"), CASES)
def test_label_of_agrees_with_an_independent_computation(
    tz: str, interval: str, start: str, end: str
) -> None:
    zone = ZoneInfo(tz)
    bucketing = Bucketing.of(interval, zone, at(start), at(end))
    t = at(start)
    while t < at(end):
        assert bucketing.label_of(t) == bucket_of(t, interval, zone), t
        t += timedelta(minutes=7, seconds=13)


def test_server_keys_parse_back_to_bucket_starts() -> None:
    zone = ZoneInfo("Europe/Berlin")
    hours = Bucketing.of("hour", zone, at("2026-10-24T22:00:00Z"), at("2026-10-25T03:00:00Z"))
    # What $dateToString gives for 01:30 UTC with the span's offset (+01:00 after the change).
    assert hours.label("2026-10-25T02:00:00+01:00") == at("2026-10-25T01:00:00Z")
    assert hours.label("2026-10-25T02:00:00+02:00") == at("2026-10-25T00:00:00Z")
    days = Bucketing.of("day", zone, at("2026-10-24T22:00:00Z"), at("2026-10-26T03:00:00Z"))
    assert days.label("2026-10-25") == at("2026-10-24T22:00:00Z")


def test_spans_split_at_each_offset_change() -> None:
    spans = offset_spans(
        ZoneInfo("Europe/Berlin"), at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z")
    )
    assert [(s.start, s.offset_text) for s in spans] == [
        (at("2026-01-01T00:00:00Z"), "+01:00"),
        (at("2026-03-29T01:00:00Z"), "+02:00"),
        (at("2026-10-25T01:00:00Z"), "+01:00"),
    ]
    assert spans[-1].end == at("2027-01-01T00:00:00Z")


def test_one_span_gives_a_plain_expression_and_several_a_switch() -> None:
    zone = ZoneInfo("Europe/Berlin")
    one = Bucketing.of("day", zone, at("2026-06-01T00:00:00Z"), at("2026-06-02T00:00:00Z"))
    assert one.key_expression("$ts") == {
        "$dateToString": {"format": "%Y-%m-%d", "date": "$ts", "timezone": "+02:00"}
    }
    two = Bucketing.of("hour", zone, at("2026-10-24T00:00:00Z"), at("2026-10-26T00:00:00Z"))
    switch = two.key_expression("$ts")["$switch"]
    assert switch["branches"][0]["case"] == {"$lt": ["$ts", at("2026-10-25T01:00:00Z")]}
    assert switch["default"]["$dateToString"]["format"] == "%Y-%m-%dT%H:00:00+01:00"


def test_offsets_that_are_not_whole_minutes_are_refused() -> None:
    # Liberia kept -00:44:30 until 1972.
    with pytest.raises(UnsupportedOffset, match="Monrovia"):
        offset_spans(
            ZoneInfo("Africa/Monrovia"), at("1971-01-01T00:00:00Z"), at("1971-02-01T00:00:00Z")
        )


@pytest.mark.parametrize(
    ("offset", "text"),
    [
        (timedelta(0), "+00:00"),
        (timedelta(hours=5, minutes=45), "+05:45"),
        (timedelta(hours=-3, minutes=-30), "-03:30"),
    ],
)
def test_format_offset(offset: timedelta, text: str) -> None:
    assert format_offset(offset) == text
