"""Domain events of the other services, from the mesh's Redis Stream into `service_events`.

Entries have the format `mesh.outbox` publishes (CloudEvents attribute names as stream
fields): ``id`` (the idempotency key, stored as ``_id``), ``type``, ``source`` (the service),
``subject``, ``time`` (RFC 3339, stored as ``ts``), ``data`` (JSON). Any event type is taken.
The payload is stored as ``properties`` when it is a JSON object whose keys could not be
read as MongoDB operators or paths (otherwise it is kept verbatim as the string ``data``);
its ``userId`` (a string), if any, becomes the event's user, so uniques and funnels work on
domain events too.

An entry that cannot be an event (no id, a bad type or time) is logged, counted and
acknowledged: retrying cannot fix it, and it must not hold up the entries behind it. A
storage failure raises, so the batch stays pending and is delivered again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import orjson

from mesh.streams import StreamEntry
from services.analytics.events import (
    TYPE_PATTERN,
    EventRejected,
    check_property_keys,
    parse_rfc3339,
)
from services.analytics.metrics import SERVICES, count_events
from services.analytics.store import EventStore, ServiceEvent

log = logging.getLogger("analytics.domain_events")

CONSUMER_GROUP: Final = "analytics"
MAX_ID_LENGTH: Final = 128


def parse_entry(entry: StreamEntry) -> ServiceEvent:
    """The event an entry carries; EventRejected when it cannot be one."""
    fields = entry.fields
    event_id = fields.get("id", "")
    if not event_id or len(event_id) > MAX_ID_LENGTH:
        raise EventRejected(f"id must be 1 to {MAX_ID_LENGTH} characters")
    type_ = fields.get("type", "")
    if not TYPE_PATTERN.fullmatch(type_):
        raise EventRejected(f"type {type_[:64]!r} does not match {TYPE_PATTERN.pattern}")
    occurred_at = parse_rfc3339(fields.get("time", ""), "time").astimezone(UTC)
    raw = fields.get("data")
    properties, data, user_id = None, None, None
    if raw is not None:
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        try:
            if not isinstance(payload, dict):
                raise EventRejected("not an object")
            check_property_keys(payload)
            properties = payload
            user = payload.get("userId")
            user_id = user if isinstance(user, str) and user else None
        except EventRejected:
            data = raw
    return ServiceEvent(
        event_id=event_id,
        type=type_,
        source=fields.get("source", ""),
        subject=fields.get("subject", ""),
        occurred_at=occurred_at,
        user_id=user_id,
        properties=properties,
        data=data,
        stream_id=entry.id,
    )


class DomainEventSink:
    """The stream consumer's handler: store a batch once; raise to have it retried."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    async def __call__(self, entries: Sequence[StreamEntry]) -> None:
        events: list[ServiceEvent] = []
        for entry in entries:
            try:
                events.append(parse_entry(entry))
            except EventRejected as exc:
                log.warning("skipping stream entry %s: %s", entry.id, exc)
        outcome = await self._store.insert_service_events(events, datetime.now(UTC))
        count_events(SERVICES, outcome.inserted, outcome.duplicates, len(entries) - len(events))
