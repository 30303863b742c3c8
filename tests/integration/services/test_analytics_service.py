"""The analytics service over real gRPC against the MongoDB-wire server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from mesh.backing_settings import StoreUrls
from protos.analytics.v1 import analytics_pb2
from tests.integration.services.analytics_support import (
    USER_ID,
    Analytics,
    Stub,
    event,
    field_errors,
    running_analytics,
    stored,
    stub_for,
)


@pytest.fixture
async def analytics(stores: StoreUrls) -> AsyncIterator[Analytics]:
    async with running_analytics(stores) as running:
        yield running


@pytest.fixture
async def stub(analytics: Analytics) -> AsyncIterator[Stub]:
    """A stub whose calls carry the signed-in user's access token."""
    async with stub_for(analytics.service.address, analytics.user_token) as signed_in:
        yield signed_in


async def test_batch_is_stored_once_and_duplicates_are_counted(
    stub: Stub, analytics: Analytics
) -> None:
    first, second = event(), event(type="cart.add", properties={"sku": "A-1", "qty": 2})
    reply = await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=[first, second]))
    assert (reply.accepted, reply.duplicates, list(reply.rejected)) == (2, 0, [])
    again = await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=[first, event()]))
    assert (again.accepted, again.duplicates) == (1, 1)
    documents = await stored(analytics.stores)
    assert len(documents) == 3
    by_id = {d["_id"]: d for d in documents}
    assert by_id[second.event_id]["properties"] == {"sku": "A-1", "qty": 2}


async def test_racing_batches_store_a_shared_event_once(stub: Stub, analytics: Analytics) -> None:
    shared = event()
    replies = await asyncio.gather(
        *(stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=[shared])) for _ in range(6))
    )
    assert sum(r.accepted for r in replies) == 1
    assert sum(r.duplicates for r in replies) == 5
    assert [d["_id"] for d in await stored(analytics.stores)] == [shared.event_id]


async def test_each_bad_event_rejects_only_itself(stub: Stub, analytics: Analytics) -> None:
    good = event()
    batch = [
        event(eventId="not-a-uuid"),
        event(type="Bad Type"),
        event(timestamp="yesterday"),
        event(timestamp="2026-11-01 10:00:00"),
        event(properties=["not", "an", "object"]),
        event(properties={"$where": "1"}),
        event(properties={"a.b": 1}),
        event(properties={"nested": {"$gt": 1}}),
        event(properties={f"k{i}": i for i in range(51)}),
        event(properties={"blob": "x" * 33_000}),
        good,
    ]
    reply = await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=batch))
    assert reply.accepted == 1
    assert [r.index for r in reply.rejected] == list(range(10))
    reasons = [r.reason for r in reply.rejected]
    assert "eventId" in reasons[0]
    assert "type" in reasons[1]
    assert "timestamp" in reasons[2]
    assert "object" in reasons[4]
    assert "$" in reasons[5]
    assert "32768" in reasons[9]
    assert [d["_id"] for d in await stored(analytics.stores)] == [good.event_id]


async def test_clock_skew_is_corrected_and_future_capped(stub: Stub, analytics: Analytics) -> None:
    # The client's clock runs 2 hours fast: it happened 10 s before it was sent.
    skewed = event(timestamp="2030-01-01T12:00:00Z", sentAt="2030-01-01T12:00:10Z")
    future = event(timestamp="2099-01-01T00:00:00Z")
    before = datetime.now(UTC)
    await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=[skewed, future]))
    after = datetime.now(UTC)
    by_id = {d["_id"]: d for d in await stored(analytics.stores)}
    corrected = by_id[skewed.event_id]["ts"]
    assert before - timedelta(seconds=11) <= corrected <= after - timedelta(seconds=9)
    assert by_id[skewed.event_id]["clientTs"] == datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert by_id[future.event_id]["ts"] <= after + timedelta(hours=1)


@pytest.mark.parametrize("count", [0, 501])
async def test_batch_size_limits(stub: Stub, analytics: Analytics, count: int) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IngestEvents(
            analytics_pb2.IngestEventsRequest(events=[event() for _ in range(count)])
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert await stored(analytics.stores) == []


async def test_the_user_comes_from_the_token_and_anonymous_calls_are_refused(
    stub: Stub, analytics: Analytics
) -> None:
    await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=[event()]))
    assert [d["userId"] for d in await stored(analytics.stores)] == [USER_ID]
    async with stub_for(analytics.service.address, None) as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anonymous.IngestEvents(analytics_pb2.IngestEventsRequest(events=[event()]))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert len(await stored(analytics.stores)) == 1


async def test_a_batch_over_512_kib_is_refused_whole(stub: Stub, analytics: Analytics) -> None:
    events = [event(properties={"blob": "x" * 30_000}) for _ in range(18)]  # each under 32 KiB
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=events))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [e.field for e in field_errors(caught.value).field_errors] == ["events"]
    assert await stored(analytics.stores) == []


async def test_a_type_with_a_trailing_newline_is_rejected(stub: Stub, analytics: Analytics) -> None:
    reply = await stub.IngestEvents(
        analytics_pb2.IngestEventsRequest(events=[event(type="page.view\n")])
    )
    assert (reply.accepted, [r.index for r in reply.rejected]) == (0, [0])
