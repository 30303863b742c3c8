"""Where events live: MongoDB database `analytics`, one collection per source.

* ``events``: client events (IngestEvents), ``_id`` = the client's event id.
* ``service_events``: domain events of the other services (from the Redis Stream),
  ``_id`` = the producer's event id.

The id as ``_id`` makes storing an event twice impossible, also when two batches (or two
deliveries of a stream entry) race: the second insert fails with a duplicate-key error and
is counted as a duplicate. Both collections have the index ``(type, ts)``, which serves every
query: each starts by matching one type and a range of ``ts`` (see `pipelines`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from prometheus_client import Histogram
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, ExecutionTimeout

from mesh.metrics import LATENCY_BUCKETS
from services.analytics import pipelines
from services.analytics.buckets import Bucketing
from services.analytics.events import ValidEvent
from services.analytics.queries import EventRange, FunnelQuery, QueryTimeout, TopQuery

DUPLICATE_KEY: Final = 11000
INDEX_NAME: Final = "type_ts"
COLLECTIONS: Final = {"clients": "events", "services": "service_events"}

STORE_SECONDS: Final = Histogram(
    "analytics_store_operation_seconds",
    "Time spent waiting for MongoDB, by operation (inserts, the four queries).",
    ["operation"],
    buckets=LATENCY_BUCKETS,
)


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    inserted: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """A domain event of another service, as stored."""

    event_id: str
    type: str
    source: str
    subject: str
    occurred_at: datetime
    user_id: str | None
    properties: Mapping[str, Any] | None
    data: str | None  # the raw payload, kept when it is not a storable JSON object
    stream_id: str


class EventStore(Protocol):
    async def insert(
        self, events: Sequence[ValidEvent], user_id: str | None, received_at: datetime
    ) -> InsertOutcome: ...

    async def insert_service_events(
        self, events: Sequence[ServiceEvent], received_at: datetime
    ) -> InsertOutcome: ...

    async def counts(self, event_range: EventRange, bucketing: Bucketing) -> dict[str, int]:
        """Events per bucket key (buckets without events absent)."""
        ...

    async def uniques(self, event_range: EventRange, bucketing: Bucketing) -> dict[str, int]:
        """Distinct users per bucket key (buckets without users absent)."""
        ...

    async def top(self, query: TopQuery) -> list[tuple[Any, int]]: ...

    async def funnel(self, query: FunnelQuery) -> dict[int, int]:
        """Users by the number of steps they reached (1..len(steps))."""
        ...


async def _insert_many(
    collection: AsyncCollection[Any], documents: list[Any], operation: str
) -> InsertOutcome:
    if not documents:
        return InsertOutcome(0, 0)
    try:
        with STORE_SECONDS.labels(operation).time():
            result = await collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return InsertOutcome(len(documents) - len(errors), len(errors))
    return InsertOutcome(len(result.inserted_ids), 0)


class MongoEventStore:
    def __init__(
        self,
        client: AsyncMongoClient[Any],
        database: str,
        *,
        query_timeout_seconds: float = 30.0,
    ) -> None:
        self._database = client[database]
        self._collections = {s: self._database[c] for s, c in COLLECTIONS.items()}
        self._events = self._collections["clients"]
        self._service_events = self._collections["services"]
        self._max_time_ms = int(query_timeout_seconds * 1000)

    async def ensure_indexes(self) -> None:
        for collection in self._collections.values():
            await collection.create_index([("type", ASCENDING), ("ts", ASCENDING)], name=INDEX_NAME)

    async def insert(
        self, events: Sequence[ValidEvent], user_id: str | None, received_at: datetime
    ) -> InsertOutcome:
        return await _insert_many(
            self._events,
            [
                {
                    "_id": e.event_id,
                    "type": e.type,
                    "ts": e.stored_time,
                    "clientTs": e.client_time,
                    "sentAt": e.sent_at,
                    "receivedAt": received_at,
                    "userId": user_id,
                    "anonymousId": e.anonymous_id,
                    "properties": e.properties,
                }
                for e in events
            ],
            "insert_events",
        )

    async def insert_service_events(
        self, events: Sequence[ServiceEvent], received_at: datetime
    ) -> InsertOutcome:
        documents = []
        for e in events:
            document: dict[str, Any] = {
                "_id": e.event_id,
                "type": e.type,
                "ts": e.occurred_at,
                "receivedAt": received_at,
                "source": e.source,
                "subject": e.subject,
                "userId": e.user_id,
                "properties": dict(e.properties) if e.properties is not None else {},
                "streamId": e.stream_id,
            }
            if e.data is not None:
                document["data"] = e.data
            documents.append(document)
        return await _insert_many(self._service_events, documents, "insert_service_events")

    async def _aggregate(
        self, operation: str, source: str, pipeline: pipelines.Pipeline
    ) -> list[dict[str, Any]]:
        try:
            with STORE_SECONDS.labels(operation).time():
                cursor = await self._collections[source].aggregate(
                    pipeline, allowDiskUse=True, maxTimeMS=self._max_time_ms
                )
                return await cursor.to_list()
        except ExecutionTimeout:
            raise QueryTimeout(
                f"the query took longer than {self._max_time_ms / 1000:g} s; narrow the range"
            ) from None

    async def counts(self, event_range: EventRange, bucketing: Bucketing) -> dict[str, int]:
        pipeline = pipelines.counts(event_range, bucketing)
        rows = await self._aggregate("counts", event_range.source, pipeline)
        return {row["_id"]: int(row["count"]) for row in rows}

    async def uniques(self, event_range: EventRange, bucketing: Bucketing) -> dict[str, int]:
        pipeline = pipelines.uniques(event_range, bucketing)
        rows = await self._aggregate("uniques", event_range.source, pipeline)
        return {row["_id"]: int(row["users"]) for row in rows}

    async def top(self, query: TopQuery) -> list[tuple[Any, int]]:
        rows = await self._aggregate("top", query.range.source, pipelines.top(query))
        return [(row["_id"], int(row["count"])) for row in rows]

    async def funnel(self, query: FunnelQuery) -> dict[int, int]:
        pipeline = pipelines.funnel(query, COLLECTIONS[query.source])
        rows = await self._aggregate("funnel", query.source, pipeline)
        return {int(row["_id"]): int(row["users"]) for row in rows}
