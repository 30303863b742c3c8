"""Analytics' Prometheus metrics (on the ops port's /metrics with the shared ones)."""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter

CLIENTS: Final = "clients"
SERVICES: Final = "services"

EVENTS: Final = Counter(
    "mesh_analytics_events_total",
    "Events taken in, by source (clients: IngestEvents; services: the domain-event stream)"
    " and outcome (ingested: stored; duplicate: stored before, same id; rejected: invalid).",
    ["source", "outcome"],
)


def count_events(source: str, ingested: int, duplicates: int, rejected: int) -> None:
    EVENTS.labels(source, "ingested").inc(ingested)
    EVENTS.labels(source, "duplicate").inc(duplicates)
    EVENTS.labels(source, "rejected").inc(rejected)
