"""The analytics service over real gRPC against the MongoDB-wire server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from pymongo import AsyncMongoClient

from mesh.auth.tokens import TokenIssuer, TokenSettings
from mesh.backing_settings import StoreUrls
from mesh.topology import ANALYTICS
from protos.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics.server import serve
from services.analytics.settings import AnalyticsSettings
from tests.integration.services.conftest import RunningService, run_service
from tests.integration.services.users.support import new_key, running_users, users_settings


def event(**fields: Any) -> analytics_pb2.Event:
    body: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "type": "page.view",
        "timestamp": "2026-11-01T10:00:00Z",
        "properties": {"path": "/"},
    }
    body.update(fields)
    return json_format.ParseDict(
        {k: v for k, v in body.items() if v is not None}, analytics_pb2.Event()
    )


USER_ID = str(uuid.uuid4())


@pytest.fixture
async def analytics(stores: StoreUrls) -> AsyncIterator[RunningService]:
    """The analytics service, verifying tokens with the keys of a real users service."""
    key = new_key()
    settings = AnalyticsSettings(stores=stores)
    async with (
        running_users(users_settings(stores, [key])) as users,
        run_service(
            ANALYTICS, settings, serve, stores, {"MESH_USERS_ADDR": users.address}
        ) as running,
    ):
        running.token = TokenIssuer([key], TokenSettings()).issue(USER_ID, ["user"])
        yield running
    client: AsyncMongoClient[Any] = AsyncMongoClient(stores.mongo_url)
    await client.drop_database(stores.database_name("analytics"))
    await client.close()


@pytest.fixture
async def stub(analytics: RunningService) -> AsyncIterator[analytics_pb2_grpc.AnalyticsServiceStub]:
    """A stub whose calls carry the signed-in user's access token."""
    async with grpc.aio.insecure_channel(
        analytics.address, interceptors=[BearerInterceptor(analytics.token)]
    ) as channel:
        yield analytics_pb2_grpc.AnalyticsServiceStub(channel)


class BearerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("authorization", f"Bearer {self._token}")
        return await continuation(details._replace(metadata=metadata), request)


async def stored(running: RunningService) -> list[dict[str, Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(running.stores.mongo_url, tz_aware=True)
    try:
        events = client[running.stores.database_name("analytics")]["events"]
        return await events.find({}).to_list()
    finally:
        await client.close()


async def test_batch_is_stored_once_and_duplicates_are_counted(
    stub: analytics_pb2_grpc.AnalyticsServiceStub, analytics: RunningService
) -> None:
    first, second = event(), event(type="cart.add", properties={"sku": "A-1", "qty": 2})
    reply = await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=[first, second]))
    assert (reply.accepted, reply.duplicates, list(reply.rejected)) == (2, 0, [])
    again = await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=[first, event()]))
    assert (again.accepted, again.duplicates) == (1, 1)
    documents = await stored(analytics)
    assert len(documents) == 3
    by_id = {d["_id"]: d for d in documents}
    assert by_id[second.event_id]["properties"] == {"sku": "A-1", "qty": 2}


async def test_racing_batches_store_a_shared_event_once(
    stub: analytics_pb2_grpc.AnalyticsServiceStub, analytics: RunningService
) -> None:
    shared = event()
    replies = await asyncio.gather(
        *(stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=[shared])) for _ in range(6))
    )
    assert sum(r.accepted for r in replies) == 1
    assert sum(r.duplicates for r in replies) == 5
    assert [d["_id"] for d in await stored(analytics)] == [shared.event_id]


async def test_each_bad_event_rejects_only_itself(
    stub: analytics_pb2_grpc.AnalyticsServiceStub, analytics: RunningService
) -> None:
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
    assert [d["_id"] for d in await stored(analytics)] == [good.event_id]


async def test_clock_skew_is_corrected_and_future_capped(
    stub: analytics_pb2_grpc.AnalyticsServiceStub, analytics: RunningService
) -> None:
    # The client's clock runs 2 hours fast: it happened 10 s before it was sent.
    skewed = event(timestamp="2030-01-01T12:00:00Z", sentAt="2030-01-01T12:00:10Z")
    future = event(timestamp="2099-01-01T00:00:00Z")
    before = datetime.now(UTC)
    await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=[skewed, future]))
    after = datetime.now(UTC)
    by_id = {d["_id"]: d for d in await stored(analytics)}
    corrected = by_id[skewed.event_id]["ts"]
    assert before - timedelta(seconds=11) <= corrected <= after - timedelta(seconds=9)
    assert by_id[skewed.event_id]["clientTs"] == datetime(2030, 1, 1, 12, tzinfo=UTC)
    assert by_id[future.event_id]["ts"] <= after + timedelta(hours=1)


@pytest.mark.parametrize("count", [0, 501])
async def test_batch_size_limits(
    stub: analytics_pb2_grpc.AnalyticsServiceStub, analytics: RunningService, count: int
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.IngestEvents(
            analytics_pb2.IngestEventsRequest(events=[event() for _ in range(count)])
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert await stored(analytics) == []


async def test_the_user_comes_from_the_token_and_anonymous_calls_are_refused(
    stub: analytics_pb2_grpc.AnalyticsServiceStub, analytics: RunningService
) -> None:
    await stub.IngestEvents(analytics_pb2.IngestEventsRequest(events=[event()]))
    assert [d["userId"] for d in await stored(analytics)] == [USER_ID]
    async with grpc.aio.insecure_channel(analytics.address) as channel:
        anonymous = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await anonymous.IngestEvents(analytics_pb2.IngestEventsRequest(events=[event()]))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert len(await stored(analytics)) == 1
