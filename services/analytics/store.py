"""Where events live: MongoDB collection `events`, keyed by the client's event id.

`_id` is the event id, so storing an event twice is impossible, also when two batches carrying
it race: the second insert fails with a duplicate-key error and is counted as a duplicate.
The index `(type, ts)` serves every query, which filters on a type and a time range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pymongo import ASCENDING, AsyncMongoClient
from pymongo.errors import BulkWriteError

from services.analytics.events import ValidEvent

DUPLICATE_KEY = 11000


@dataclass(frozen=True, slots=True)
class InsertOutcome:
    inserted: int
    duplicates: int


class EventStore(Protocol):
    async def insert(
        self, events: Sequence[ValidEvent], user_id: str | None, received_at: datetime
    ) -> InsertOutcome: ...


class MongoEventStore:
    def __init__(self, client: AsyncMongoClient[Any], database: str) -> None:
        self._events = client[database]["events"]

    async def ensure_indexes(self) -> None:
        await self._events.create_index([("type", ASCENDING), ("ts", ASCENDING)], name="type_ts")

    async def insert(
        self, events: Sequence[ValidEvent], user_id: str | None, received_at: datetime
    ) -> InsertOutcome:
        if not events:
            return InsertOutcome(0, 0)
        documents = [
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
        ]
        try:
            result = await self._events.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            other = [e for e in errors if e.get("code") != DUPLICATE_KEY]
            if other:
                raise
            duplicates = len(errors)
            return InsertOutcome(len(documents) - duplicates, duplicates)
        return InsertOutcome(len(result.inserted_ids), 0)
