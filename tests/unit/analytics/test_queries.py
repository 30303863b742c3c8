"""Checking the query parameters: every problem named by its field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mesh.errors import InvalidArgument
from services.analytics.queries import (
    QueryLimits,
    funnel_query,
    parse_within,
    series_query,
    split_steps,
    top_query,
)

START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 10, 8, tzinfo=UTC)
LIMITS = QueryLimits()


def series(**overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "type_": "page.view",
        "start": START,
        "end": END,
        "interval": "",
        "tz": "",
        "source": "",
        "limits": LIMITS,
    }
    return series_query(**{**fields, **overrides})


def fields_of(caught: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [e.field for e in caught.value.field_errors]


def test_defaults_are_day_utc_and_client_events() -> None:
    query = series()
    assert query.bucketing.interval == "day"
    assert query.bucketing.zone.key == "UTC"
    assert query.range.source == "clients"
    assert len(query.bucketing.labels()) == 7


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"start": END, "end": START}, "from"),
        ({"end": START}, "from"),
        ({"start": None}, "from"),
        ({"end": None}, "to"),
        ({"start": datetime(1969, 12, 31, tzinfo=UTC)}, "from"),
        ({"end": START + timedelta(days=400, seconds=1)}, "to"),
        ({"interval": "week"}, "interval"),
        ({"interval": "minute", "end": START + timedelta(days=7, seconds=1)}, "interval"),
        ({"tz": "Nowhere/Special"}, "tz"),
        ({"tz": "../../etc/passwd"}, "tz"),
        ({"type_": "Page"}, "type"),
        ({"type_": "page.view\n"}, "type"),
        ({"type_": ""}, "type"),
        ({"source": "all"}, "source"),
    ],
)
def test_bad_series_parameters(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        series(**overrides)
    assert fields_of(caught) == [field]


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(InvalidArgument) as caught:
        series(type_="", interval="year", tz="X/Y", start=None)
    assert sorted(fields_of(caught)) == ["from", "interval", "type", "tz"]


def test_limits_are_settings() -> None:
    tight = QueryLimits(max_range=timedelta(days=3), max_minute_range=timedelta(days=1))
    with pytest.raises(InvalidArgument):
        series(limits=tight)
    assert series(interval="minute", end=START + timedelta(days=1), limits=tight)
    assert series(end=START + timedelta(days=400))  # the default cap, exactly


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"property_": ""}, "property"),
        ({"property_": "$where"}, "property"),
        ({"property_": "a.b"}, "property"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
    ],
)
def test_bad_top_parameters(overrides: dict[str, Any], field: str) -> None:
    fields: dict[str, Any] = {
        "type_": "page.view",
        "start": START,
        "end": END,
        "property_": "plan",
        "limit": None,
        "source": "",
        "limits": LIMITS,
    }
    with pytest.raises(InvalidArgument) as caught:
        top_query(**{**fields, **overrides})
    assert fields_of(caught) == [field]


def test_top_limit_defaults_to_ten() -> None:
    query = top_query(
        type_="a", start=START, end=END, property_="plan", limit=None, source="", limits=LIMITS
    )
    assert query.limit == 10


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30), ("30m", 1800), ("1h", 3600), ("7d", 7 * 86400)],
)
def test_within(text: str, expected: int) -> None:
    assert parse_within(text) == timedelta(seconds=expected)


@pytest.mark.parametrize("text", ["", "0h", "1", "h", "1.5h", "1w", "-1h", "1 h", "01h"])
def test_bad_within(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_within(text)


def test_steps_may_be_repeated_or_comma_separated() -> None:
    assert split_steps(["a,b", "c"]) == ["a", "b", "c"]
    query = funnel_query(
        steps=["a, b,a"], within="1h", start=START, end=END, source="", limits=LIMITS
    )
    assert query.steps == ("a", "b", "a")
    assert [r.type for r in query.ranges()] == ["a", "b"]  # one index range per type


@pytest.mark.parametrize(
    ("steps", "within", "field"),
    [
        (["a"], "1h", "steps"),
        ([",".join("abcdefghijk")], "1h", "steps"),
        (["a,"], "1h", "steps"),
        (["a,B"], "1h", "steps"),
        (["a,b"], "", "within"),
        (["a,b"], "soon", "within"),
        (["a,b"], "401d", "within"),
    ],
)
def test_bad_funnel_parameters(steps: list[str], within: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        funnel_query(steps=steps, within=within, start=START, end=END, source="", limits=LIMITS)
    assert fields_of(caught) == [field]
