"""Validating one client event and computing the time to store it under.

Rules: `eventId` a UUID; `type` matching ^[a-z][a-z0-9_.]{0,63}$; `timestamp` (and
`sentAt`, if given) RFC 3339; `properties` a JSON object of at most 50 keys, no key at any
depth starting with `$` or containing `.` (so nothing can be read as a MongoDB operator or
path); at most 32 KiB per event. Clock skew: with `sentAt`, the stored time is
`receivedAt - (sentAt - timestamp)`; never more than one hour after `receivedAt`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

MAX_EVENT_BYTES: Final = 32 * 1024
MAX_PROPERTIES: Final = 50
MAX_FUTURE: Final = timedelta(hours=1)
TYPE_PATTERN: Final = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")


class EventRejected(ValueError):
    """The event breaks a rule; the message is the reason given back to the client."""


@dataclass(frozen=True, slots=True)
class ValidEvent:
    event_id: str
    type: str
    client_time: datetime
    sent_at: datetime | None
    stored_time: datetime
    anonymous_id: str | None
    properties: dict[str, Any]


def parse_rfc3339(value: str, field: str) -> datetime:
    if not value:
        raise EventRejected(f"{field} is required")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise EventRejected(f"{field} must be an RFC 3339 date-time, got {value[:40]!r}") from None
    if parsed.tzinfo is None or "T" not in value.upper():
        raise EventRejected(f"{field} must be an RFC 3339 date-time with a UTC offset")
    return parsed


def check_property_keys(value: Any, depth: int = 0) -> None:
    """No key at any depth may start with "$" or contain "." (or NUL); at most 16 levels."""
    if depth > 16:
        raise EventRejected("properties nest deeper than 16 levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("$") or "." in key or "\x00" in key:
                raise EventRejected(
                    f"property key {key[:40]!r} must not start with '$' or contain '.'"
                )
            check_property_keys(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_property_keys(item, depth + 1)


def validate_event(
    *,
    event_id: str,
    type_: str,
    timestamp: str,
    sent_at: str,
    anonymous_id: str,
    properties: Any,
    size_bytes: int,
    received_at: datetime,
) -> ValidEvent:
    if size_bytes > MAX_EVENT_BYTES:
        raise EventRejected(f"event is {size_bytes} bytes, over the {MAX_EVENT_BYTES} limit")
    try:
        canonical_id = str(uuid.UUID(event_id))
    except ValueError:
        raise EventRejected("eventId must be a UUID") from None
    if not TYPE_PATTERN.fullmatch(type_):
        raise EventRejected("type must match ^[a-z][a-z0-9_.]{0,63}$")
    client_time = parse_rfc3339(timestamp, "timestamp")
    sent = parse_rfc3339(sent_at, "sentAt") if sent_at else None
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        raise EventRejected("properties must be a JSON object")
    if len(properties) > MAX_PROPERTIES:
        raise EventRejected(f"properties has {len(properties)} keys, over {MAX_PROPERTIES}")
    check_property_keys(properties)
    stored = received_at - (sent - client_time) if sent is not None else client_time
    stored = min(stored, received_at + MAX_FUTURE)
    return ValidEvent(
        canonical_id, type_, client_time, sent, stored, anonymous_id or None, properties
    )
