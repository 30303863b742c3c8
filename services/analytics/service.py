"""The analytics domain: batch ingestion with per-event validation, and the admin queries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from mesh.errors import FieldError, invalid
from services.analytics.events import EventRejected, ValidEvent, validate_event
from services.analytics.metrics import CLIENTS, count_events
from services.analytics.queries import FunnelQuery, SeriesQuery, TopQuery
from services.analytics.store import EventStore

MAX_BATCH: Final = 500
MAX_BATCH_BYTES: Final = 512 * 1024


@dataclass(frozen=True, slots=True)
class RawEvent:
    event_id: str
    type: str
    timestamp: str
    sent_at: str
    anonymous_id: str
    properties: Any
    size_bytes: int


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[tuple[int, str]]


@dataclass(frozen=True, slots=True)
class Series:
    """(bucket start, value) for every bucket of the range, in order."""

    buckets: list[tuple[datetime, int]]

    @property
    def total(self) -> int:
        return sum(value for _, value in self.buckets)


def _zero_filled(query: SeriesQuery, by_key: dict[str, int]) -> Series:
    values = dict.fromkeys(query.bucketing.labels(), 0)
    for key, value in by_key.items():
        label = query.bucketing.label(key)
        values[label] = values.get(label, 0) + value
    return Series(sorted(values.items()))


class AnalyticsService:
    def __init__(self, store: EventStore) -> None:
        self._store = store

    async def ingest(
        self, batch: Sequence[RawEvent], batch_bytes: int, user_id: str | None
    ) -> IngestResult:
        if not batch:
            raise invalid([FieldError("events", "must hold 1 to 500 events")])
        if len(batch) > MAX_BATCH:
            raise invalid([FieldError("events", f"holds {len(batch)} events, over {MAX_BATCH}")])
        if batch_bytes > MAX_BATCH_BYTES:
            raise invalid(
                [FieldError("events", f"batch is {batch_bytes} bytes, over {MAX_BATCH_BYTES}")]
            )
        received_at = datetime.now(UTC)
        valid: list[ValidEvent] = []
        rejected: list[tuple[int, str]] = []
        for index, raw in enumerate(batch):
            try:
                valid.append(
                    validate_event(
                        event_id=raw.event_id,
                        type_=raw.type,
                        timestamp=raw.timestamp,
                        sent_at=raw.sent_at,
                        anonymous_id=raw.anonymous_id,
                        properties=raw.properties,
                        size_bytes=raw.size_bytes,
                        received_at=received_at,
                    )
                )
            except EventRejected as exc:
                rejected.append((index, str(exc)))
        outcome = await self._store.insert(valid, user_id, received_at)
        count_events(CLIENTS, outcome.inserted, outcome.duplicates, len(rejected))
        return IngestResult(outcome.inserted, outcome.duplicates, rejected)

    async def counts(self, query: SeriesQuery) -> Series:
        return _zero_filled(query, await self._store.counts(query.range, query.bucketing))

    async def uniques(self, query: SeriesQuery) -> Series:
        return _zero_filled(query, await self._store.uniques(query.range, query.bucketing))

    async def top(self, query: TopQuery) -> list[tuple[Any, int]]:
        return await self._store.top(query)

    async def funnel(self, query: FunnelQuery) -> list[tuple[str, int]]:
        """(step type, users who reached it) for every step."""
        reached = await self._store.funnel(query)
        return [
            (step, sum(users for count, users in reached.items() if count > index))
            for index, step in enumerate(query.steps)
        ]
