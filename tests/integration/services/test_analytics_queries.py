"""The admin queries over real gRPC against the MongoDB-wire server: answers equal the ones
computed in Python from the same events, bad parameters are 400s naming the field, normal
users are refused, and every pipeline reads the (type, ts) index."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import json_format, timestamp_pb2
from pymongo import AsyncMongoClient

from bench import analytics_reference as reference
from mesh.backing_settings import StoreUrls
from protos.analytics.v1 import analytics_pb2
from services.analytics import pipelines
from services.analytics.queries import QueryLimits, funnel_query, series_query, top_query
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import INDEX_NAME
from tests.integration.services.analytics_support import (
    Analytics,
    Stub,
    field_errors,
    running_analytics,
    stub_for,
)

# Around the end of summer time in Europe/Berlin (2026-10-25 01:00 UTC).
START = datetime(2026, 10, 24, 12, tzinfo=UTC)
END = datetime(2026, 10, 26, 12, tzinfo=UTC)
TYPES = ("page.view", "cart.add", "checkout.done")


def stamp(value: datetime) -> timestamp_pb2.Timestamp:
    result = timestamp_pb2.Timestamp()
    result.FromDatetime(value)
    return result


def generate(seed: int, users: int = 8, count: int = 240) -> list[tuple[str, reference.Row]]:
    """(event id, row): events of a few users in and around [START, END)."""
    rng = random.Random(seed)
    span_ms = int((END - START).total_seconds() * 1000)
    rows = []
    for _ in range(count):
        offset = rng.randrange(-3_600_000, span_ms + 3_600_000)  # some outside the range
        ts = START + timedelta(milliseconds=offset)
        row = reference.Row(
            rng.choices(TYPES, weights=(5, 3, 2))[0],
            ts,
            f"user-{rng.randrange(users)}",
            {"plan": rng.choice(("free", "pro", "team", "enterprise")), "n": rng.randrange(3)},
        )
        rows.append((str(uuid.uuid4()), row))
    return rows


async def ingest(analytics: Analytics, rows: list[tuple[str, reference.Row]]) -> None:
    by_user: dict[str, list[analytics_pb2.Event]] = {}
    for event_id, row in rows:
        iso = row.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        by_user.setdefault(row.user or "", []).append(
            json_format.ParseDict(
                {
                    "eventId": event_id,
                    "type": row.type,
                    "timestamp": iso,
                    "properties": row.properties,
                },
                analytics_pb2.Event(),
            )
        )
    for user, events in by_user.items():
        token = analytics.issuer.issue(user, ["user"])
        async with stub_for(analytics.service.address, token) as stub:
            reply = await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=events))
            assert reply.accepted == len(events)


@pytest.fixture
async def analytics(stores: StoreUrls) -> AsyncIterator[Analytics]:
    async with running_analytics(stores) as running:
        yield running


@pytest.fixture
async def admin(analytics: Analytics) -> AsyncIterator[Stub]:
    async with stub_for(analytics.service.address, analytics.admin_token) as stub:
        yield stub


@pytest.fixture
async def rows(analytics: Analytics) -> list[reference.Row]:
    generated = generate(seed=5)
    await ingest(analytics, generated)
    return [row for _, row in generated]


def buckets(reply: Any) -> list[tuple[datetime, int]]:
    return [(b.start.ToDatetime(tzinfo=UTC), b.count) for b in reply.buckets]


@pytest.mark.parametrize(
    ("interval", "tz", "start", "end"),
    [
        ("hour", "Europe/Berlin", START, END),
        ("day", "America/New_York", START, END),
        ("day", "Asia/Kathmandu", START, END),
        ("minute", "UTC", START + timedelta(hours=13), START + timedelta(hours=14, minutes=30)),
    ],
)
async def test_counts_and_uniques_equal_python(
    admin: Stub,
    rows: list[reference.Row],
    interval: str,
    tz: str,
    start: datetime,
    end: datetime,
) -> None:
    for type_ in TYPES[:2]:
        request = {"type": type_, "interval": interval, "tz": tz}
        counts = await admin.CountEvents(
            analytics_pb2.CountEventsRequest(
                start_time=stamp(start), end_time=stamp(end), **request
            )
        )
        expected = reference.counts(rows, type_, start, end, interval, tz)
        assert buckets(counts) == expected
        assert counts.total == sum(n for _, n in expected)
        uniques = await admin.CountUniques(
            analytics_pb2.CountUniquesRequest(
                start_time=stamp(start), end_time=stamp(end), **request
            )
        )
        assert buckets(uniques) == reference.uniques(rows, type_, start, end, interval, tz)


async def test_hour_buckets_follow_the_zone_clock_with_zero_fill(
    admin: Stub, rows: list[reference.Row]
) -> None:
    reply = await admin.CountEvents(
        analytics_pb2.CountEventsRequest(
            type="page.view",
            start_time=stamp(START),
            end_time=stamp(END),
            interval="hour",
            tz="Europe/Berlin",
        )
    )
    starts = [b.start.ToDatetime(tzinfo=UTC) for b in reply.buckets]
    # 48 hours of range, one bucket each: local 02:00 happens twice (CEST, then CET) on
    # 2026-10-25, and each is its own bucket.
    assert starts == [START + timedelta(hours=n) for n in range(48)]
    berlin = ZoneInfo("Europe/Berlin")
    twice = [s for s in starts if s.astimezone(berlin).strftime("%m-%d %H") == "10-25 02"]
    assert [s.astimezone(berlin).utcoffset() for s in twice] == [
        timedelta(hours=2),
        timedelta(hours=1),
    ]
    assert sum(b.count for b in reply.buckets) == reply.total > 0


async def test_an_empty_range_is_all_zero_buckets(admin: Stub, analytics: Analytics) -> None:
    midnight = START.replace(hour=0)
    reply = await admin.CountEvents(
        analytics_pb2.CountEventsRequest(
            type="page.view",
            start_time=stamp(midnight),
            end_time=stamp(midnight + timedelta(days=3)),
        )
    )
    assert [(b.start.ToDatetime(tzinfo=UTC), b.count) for b in reply.buckets] == [
        (midnight + timedelta(days=n), 0) for n in range(3)
    ]
    assert reply.total == 0


async def test_top_values_equal_python(admin: Stub, rows: list[reference.Row]) -> None:
    for limit in (None, 2):
        reply = await admin.TopValues(
            analytics_pb2.TopValuesRequest(
                type="page.view",
                start_time=stamp(START),
                end_time=stamp(END),
                property="plan",
                limit=limit,
            )
        )
        expected = reference.top(rows, "page.view", START, END, "plan", limit or 10)
        assert [(json_format.MessageToDict(v.value), v.count) for v in reply.values] == expected
    missing = await admin.TopValues(
        analytics_pb2.TopValuesRequest(
            type="page.view", start_time=stamp(START), end_time=stamp(END), property="nothing"
        )
    )
    assert list(missing.values) == []


@pytest.mark.parametrize(
    ("steps", "within"),
    [
        (["page.view", "cart.add", "checkout.done"], "30m"),
        (["page.view,cart.add,checkout.done"], "6h"),
        (["cart.add", "cart.add"], "1d"),
    ],
)
async def test_funnel_equals_python(
    admin: Stub, rows: list[reference.Row], steps: list[str], within: str
) -> None:
    reply = await admin.Funnel(
        analytics_pb2.FunnelRequest(
            steps=steps, within=within, start_time=stamp(START), end_time=stamp(END)
        )
    )
    names = [s for value in steps for s in value.split(",")]
    window = {"30m": timedelta(minutes=30), "6h": timedelta(hours=6), "1d": timedelta(days=1)}
    expected = reference.funnel(rows, names, window[within], START, END)
    assert [(s.type, s.users) for s in reply.steps] == expected
    assert expected[0][1] > 0


async def test_funnel_counts_steps_in_order_within_the_window(analytics: Analytics) -> None:
    t0 = START + timedelta(hours=1)
    scenarios = {
        "in-order": [("a.x", 0), ("b.x", 10), ("c.x", 20)],
        "out-of-order": [("a.x", 0), ("c.x", 10), ("b.x", 20)],
        "too-late": [("a.x", 0), ("b.x", 10), ("c.x", 61)],
        "second-try": [("a.x", 0), ("a.x", 100), ("b.x", 110)],  # only the first step-1 counts
        "same-instant": [("a.x", 0), ("b.x", 0)],  # a later step must come strictly after
    }
    generated = [
        (str(uuid.uuid4()), reference.Row(t, t0 + timedelta(minutes=m), user))
        for user, events in scenarios.items()
        for t, m in events
    ]
    await ingest(analytics, generated)
    async with stub_for(analytics.service.address, analytics.admin_token) as admin:
        reply = await admin.Funnel(
            analytics_pb2.FunnelRequest(
                steps=["a.x", "b.x", "c.x"],
                within="1h",
                start_time=stamp(START),
                end_time=stamp(END),
            )
        )
    # a: all 5; b: in-order, out-of-order, too-late; c: in-order.
    assert [(s.type, s.users) for s in reply.steps] == [("a.x", 5), ("b.x", 3), ("c.x", 1)]


def _field(error: grpc.aio.AioRpcError) -> list[str]:
    return [e.field for e in field_errors(error).field_errors]


BAD_QUERIES: list[tuple[str, str, dict[str, Any], str]] = [
    ("from-after-to", "CountEvents", {"start_time": END, "end_time": START}, "from"),
    ("from-equals-to", "CountEvents", {"start_time": START, "end_time": START}, "from"),
    ("no-from", "CountEvents", {"start_time": None}, "from"),
    ("no-to", "TopValues", {"end_time": None, "property": "plan"}, "to"),
    ("unknown-interval", "CountEvents", {"interval": "week"}, "interval"),
    ("unknown-interval-uniques", "CountUniques", {"interval": "fortnight"}, "interval"),
    ("range-over-400-days", "CountEvents", {"end_time": START + timedelta(days=401)}, "to"),
    (
        "minute-over-7-days",
        "CountUniques",
        {"interval": "minute", "end_time": START + timedelta(days=8)},
        "interval",
    ),
    ("unknown-zone", "CountEvents", {"tz": "Mars/Olympus_Mons"}, "tz"),
    ("bad-type", "CountEvents", {"type": "Page View"}, "type"),
    ("no-type", "CountUniques", {"type": ""}, "type"),
    ("unknown-source", "CountEvents", {"source": "everything"}, "source"),
    ("operator-property", "TopValues", {"property": "$where"}, "property"),
    ("dotted-property", "TopValues", {"property": "a.b"}, "property"),
    ("limit-zero", "TopValues", {"property": "plan", "limit": 0}, "limit"),
    ("limit-over-100", "TopValues", {"property": "plan", "limit": 101}, "limit"),
    ("one-step", "Funnel", {"steps": ["a"], "within": "1h"}, "steps"),
    ("eleven-steps", "Funnel", {"steps": [",".join("abcdefghijk")], "within": "1h"}, "steps"),
    ("bad-step", "Funnel", {"steps": ["a,B!"], "within": "1h"}, "steps"),
    ("bad-within", "Funnel", {"steps": ["a,b"], "within": "1 hour"}, "within"),
    ("no-within", "Funnel", {"steps": ["a,b"], "within": ""}, "within"),
    ("within-over-limit", "Funnel", {"steps": ["a,b"], "within": "500d"}, "within"),
]
REQUESTS = {
    "CountEvents": analytics_pb2.CountEventsRequest,
    "CountUniques": analytics_pb2.CountUniquesRequest,
    "TopValues": analytics_pb2.TopValuesRequest,
    "Funnel": analytics_pb2.FunnelRequest,
}


def request_for(method: str, overrides: dict[str, Any]) -> Any:
    fields: dict[str, Any] = {"start_time": START, "end_time": END, **overrides}
    if method != "Funnel":
        fields.setdefault("type", "page.view")
    values = {
        k: stamp(v) if isinstance(v, datetime) else v for k, v in fields.items() if v is not None
    }
    return REQUESTS[method](**values)


async def test_bad_query_parameters_are_invalid_arguments_naming_the_field(
    admin: Stub,
) -> None:
    for name, method, overrides, field in BAD_QUERIES:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(admin, method)(request_for(method, overrides))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
        assert field in _field(caught.value), (name, caught.value.details())


async def test_normal_users_and_anonymous_callers_are_refused(analytics: Analytics) -> None:
    calls = [
        ("CountEvents", {}),
        ("CountUniques", {}),
        ("TopValues", {"property": "plan"}),
        ("Funnel", {"steps": ["a", "b"], "within": "1h"}),
    ]
    for token, code in (
        (analytics.user_token, grpc.StatusCode.PERMISSION_DENIED),
        (None, grpc.StatusCode.UNAUTHENTICATED),
    ):
        async with stub_for(analytics.service.address, token) as stub:
            for method, overrides in calls:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await getattr(stub, method)(request_for(method, overrides))
                assert caught.value.code() is code, method


def _plans(explained: dict[str, Any]) -> dict[str, Any]:
    cursor = explained["stages"][0]["$cursor"] if "stages" in explained else explained
    return {
        "plan": cursor["queryPlanner"]["winningPlan"],
        "stats": cursor.get("executionStats", {}),
    }


async def test_every_pipeline_reads_the_type_ts_index(
    analytics: Analytics, rows: list[reference.Row]
) -> None:
    limits = QueryLimits()
    series = series_query(
        type_="cart.add",
        start=START,
        end=END,
        interval="hour",
        tz="Europe/Berlin",
        source="",
        limits=limits,
    )
    top = top_query(
        type_="cart.add",
        start=START,
        end=END,
        property_="plan",
        limit=None,
        source="",
        limits=limits,
    )
    funnel = funnel_query(
        steps=["page.view", "cart.add"],
        within="1h",
        start=START,
        end=END,
        source="",
        limits=limits,
    )
    checks = [
        pipelines.counts(series.range, series.bucketing),
        pipelines.uniques(series.range, series.bucketing),
        pipelines.top(top),
        pipelines.funnel(funnel, "events"),
        # SecantusDB's explain shows the first $match only: explain each $unionWith branch.
        *([pipelines.match(r)] for r in funnel.ranges()),
    ]
    client: AsyncMongoClient[Any] = AsyncMongoClient(analytics.stores.mongo_url, tz_aware=True)
    try:
        database = client[analytics.stores.database_name("analytics")]
        for pipeline in checks:
            explained = await database.command(
                {
                    "explain": {"aggregate": "events", "pipeline": pipeline, "cursor": {}},
                    "verbosity": "executionStats",
                }
            )
            found = _plans(explained)
            scan = found["plan"].get("inputStage", found["plan"])
            assert scan["stage"] == "IXSCAN", pipeline[0]
            assert scan["indexName"] == INDEX_NAME
            type_ = pipeline[0]["$match"]["type"]
            matching = sum(1 for r in rows if r.type == type_ and START <= r.ts < END)
            # Bounds on both keys: only the matching entries are read.
            assert found["stats"]["totalKeysExamined"] == matching
    finally:
        await client.close()


async def test_a_query_over_the_time_limit_is_stopped_with_deadline_exceeded(
    stores: StoreUrls,
) -> None:
    settings = AnalyticsSettings(stores=stores, query_timeout_seconds=0.001)
    async with running_analytics(stores, settings) as analytics:
        await ingest(analytics, generate(seed=9, count=400))
        async with stub_for(analytics.service.address, analytics.admin_token) as admin:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await admin.Funnel(
                    request_for("Funnel", {"steps": [",".join(TYPES)], "within": "1d"})
                )
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "narrow the range" in (caught.value.details() or "")
