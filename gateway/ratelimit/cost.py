"""What a request costs under a policy counted in events (`cost = "events"`)."""

from __future__ import annotations


def event_count(body: object) -> int:
    """The length of the body's `events` list; 1 for an empty or malformed body, so that it
    is limited too (the service validates the body itself)."""
    if isinstance(body, dict):
        events = body.get("events")
        if isinstance(events, list) and events:
            return len(events)
    return 1
