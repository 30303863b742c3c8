"""Domain events from the mesh's Redis Stream into `service_events`, inside the running
analytics service: stored once, acknowledged after storing, a dead consumer's entries
claimed, malformed entries skipped, queryable with source=services."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from google.protobuf import timestamp_pb2

from mesh.backing_settings import StoreUrls
from mesh.outbox import Event, events_stream, stream_fields
from protos.analytics.v1 import analytics_pb2
from services.analytics.domain_events import CONSUMER_GROUP
from services.analytics.settings import AnalyticsSettings
from tests.integration.services.analytics_support import (
    drop_analytics,
    running_analytics,
    stored,
    stub_for,
)

OCCURRED = datetime(2026, 10, 20, 9, 30, tzinfo=UTC)


@pytest.fixture
async def redis(stores: StoreUrls) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(stores.redis_url, decode_responses=True)
    yield client
    await client.aclose()


def domain_event(type_: str = "product.created", **payload: Any) -> Event:
    return Event(
        type=type_,
        subject=str(uuid.uuid4()),
        payload=payload or {"name": "Lamp", "priceCents": 1999},
        occurred_at=OCCURRED,
    )


async def xadd(redis: aioredis.Redis, stores: StoreUrls, *events: Event) -> None:
    for e in events:
        await redis.xadd(events_stream(stores.namespace), stream_fields(e, "catalog"))  # type: ignore[arg-type]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def pending(redis: aioredis.Redis, stores: StoreUrls) -> int:
    summary = await redis.xpending(events_stream(stores.namespace), CONSUMER_GROUP)
    return int(summary["pending"])


async def test_domain_events_are_stored_once_and_acknowledged(
    stores: StoreUrls, redis: aioredis.Redis
) -> None:
    created = domain_event()
    reserved = domain_event("inventory.reserved", userId="u-7", quantity=2)
    registered = domain_event("user.registered", userId="u-9")
    async with running_analytics(stores) as analytics:
        await xadd(redis, stores, created, reserved, registered)
        await xadd(redis, stores, created, reserved)  # the relay published them again

        async def stored_all() -> bool:
            docs = await stored(stores, "service_events")
            return len(docs) == 3 and await pending(redis, stores) == 0

        await eventually(stored_all)
        by_id = {d["_id"]: d for d in await stored(stores, "service_events")}
        assert set(by_id) == {str(created.id), str(reserved.id), str(registered.id)}
        document = by_id[str(reserved.id)]
        assert document["type"] == "inventory.reserved"
        assert document["source"] == "catalog"
        assert document["subject"] == reserved.subject
        assert document["ts"] == OCCURRED
        assert document["userId"] == "u-7"
        assert document["properties"] == {"userId": "u-7", "quantity": 2}
        assert await stored(stores, "events") == []  # client events stay apart

        async with stub_for(analytics.service.address, analytics.admin_token) as admin:
            start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
            start.FromDatetime(OCCURRED - timedelta(hours=1))
            end.FromDatetime(OCCURRED + timedelta(hours=1))
            counts = await admin.CountEvents(
                analytics_pb2.CountEventsRequest(
                    type="product.created",
                    start_time=start,
                    end_time=end,
                    interval="hour",
                    source="services",
                )
            )
            assert [b.count for b in counts.buckets] == [0, 1, 0]  # 08:00, 09:00, 10:00
            clients = await admin.CountEvents(
                analytics_pb2.CountEventsRequest(
                    type="product.created", start_time=start, end_time=end, interval="hour"
                )
            )
            assert clients.total == 0


async def test_malformed_entries_are_skipped_and_unsafe_payloads_kept_as_text(
    stores: StoreUrls, redis: aioredis.Redis
) -> None:
    good = domain_event()
    unsafe = domain_event("product.updated", **{"$set": {"price": 0}})
    async with running_analytics(stores):
        stream = events_stream(stores.namespace)
        await redis.xadd(
            stream, {"id": "", "type": "product.created", "time": "2026-01-01T00:00:00Z"}
        )
        await redis.xadd(stream, {"id": "x1", "type": "Bad Type", "time": "2026-01-01T00:00:00Z"})
        await redis.xadd(stream, {"id": "x2", "type": "product.created", "time": "yesterday"})
        await xadd(redis, stores, unsafe, good)

        async def stored_both() -> bool:
            return len(await stored(stores, "service_events")) == 2

        await eventually(stored_both)
        await eventually(lambda: _no_pending(redis, stores))
        by_id = {d["_id"]: d for d in await stored(stores, "service_events")}
        assert by_id[str(unsafe.id)]["properties"] == {}
        assert by_id[str(unsafe.id)]["data"] == '{"$set":{"price":0}}'


async def _no_pending(redis: aioredis.Redis, stores: StoreUrls) -> bool:
    return await pending(redis, stores) == 0


async def test_entries_of_a_consumer_that_died_are_claimed_by_the_service(
    stores: StoreUrls, redis: aioredis.Redis
) -> None:
    stream = events_stream(stores.namespace)
    events = [domain_event() for _ in range(3)]
    await redis.xgroup_create(stream, CONSUMER_GROUP, "0", mkstream=True)
    await xadd(redis, stores, *events)
    # Another analytics replica got them, then died before storing and acknowledging.
    await redis.xreadgroup(CONSUMER_GROUP, "analytics-dead-1", {stream: ">"}, count=10)
    assert await pending(redis, stores) == 3
    settings = AnalyticsSettings(stores=stores, claim_idle_seconds=1.0)
    async with running_analytics(stores, settings):

        async def claimed() -> bool:
            docs = await stored(stores, "service_events")
            return len(docs) == 3 and await pending(redis, stores) == 0

        await eventually(claimed)
        assert {d["_id"] for d in await stored(stores, "service_events")} == {
            str(e.id) for e in events
        }


async def test_the_consumer_stops_with_the_service(
    stores: StoreUrls, redis: aioredis.Redis
) -> None:
    try:
        async with running_analytics(stores, drop=False) as analytics:
            await asyncio.sleep(0.3)  # the consumer is waiting in XREADGROUP
            started = time.monotonic()
            analytics.service.lifecycle.request_stop()
        assert time.monotonic() - started < 5.0
        stream = events_stream(stores.namespace)
        consumers = await redis.xinfo_consumers(stream, CONSUMER_GROUP)
        assert len(consumers) == 1  # it was there, with nothing left pending
        assert consumers[0]["pending"] == 0
    finally:
        await drop_analytics(stores)
