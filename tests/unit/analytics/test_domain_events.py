"""Reading a domain event out of a stream entry (the format mesh.outbox publishes)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from mesh.outbox import Event, stream_fields
from mesh.streams import StreamEntry
from services.analytics.domain_events import parse_entry
from services.analytics.events import EventRejected


def entry(**fields: str) -> StreamEntry:
    event = Event(
        type="product.created",
        subject="p-1",
        payload={"name": "Lamp", "userId": "u-1"},
        id=uuid.UUID("00000000-0000-4000-8000-000000000001"),
        occurred_at=datetime(2026, 10, 1, 12, tzinfo=UTC),
    )
    return StreamEntry("1-0", {**stream_fields(event, "catalog"), **fields})


def test_an_outbox_entry_becomes_a_service_event() -> None:
    parsed = parse_entry(entry())
    assert parsed.event_id == "00000000-0000-4000-8000-000000000001"
    assert (parsed.type, parsed.source, parsed.subject) == ("product.created", "catalog", "p-1")
    assert parsed.occurred_at == datetime(2026, 10, 1, 12, tzinfo=UTC)
    assert parsed.properties == {"name": "Lamp", "userId": "u-1"}
    assert parsed.user_id == "u-1"
    assert parsed.data is None
    assert parsed.stream_id == "1-0"


@pytest.mark.parametrize(
    "data", ['{"$inc": {"stock": 1}}', '{"a.b": 1}', "[1, 2]", "not json", '"text"']
)
def test_payloads_that_cannot_be_properties_are_kept_as_text(data: str) -> None:
    parsed = parse_entry(entry(data=data))
    assert parsed.properties is None
    assert parsed.data == data
    assert parsed.user_id is None


@pytest.mark.parametrize(
    "fields",
    [{"id": ""}, {"id": "x" * 129}, {"type": "Product"}, {"type": ""}, {"time": "yesterday"}],
)
def test_entries_that_cannot_be_events_are_rejected(fields: dict[str, str]) -> None:
    with pytest.raises(EventRejected):
        parse_entry(entry(**fields))


def test_an_entry_without_a_payload_has_no_properties() -> None:
    fields = dict(entry().fields)
    del fields["data"]
    parsed = parse_entry(StreamEntry("2-0", fields))
    assert parsed.properties is None
    assert parsed.data is None
