"""Settings of the analytics service (MESH_ANALYTICS_*, besides the store URLs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from mesh.backing_settings import StoreUrls
from mesh.settings import Env, SettingsError
from services.analytics.queries import QueryLimits


@dataclass(frozen=True, slots=True)
class AnalyticsSettings:
    stores: StoreUrls
    # The longest time range a query may cover, and the longest for minute buckets.
    max_range_days: int = 400
    max_minute_range_days: int = 7
    # A query running longer is stopped on the server (maxTimeMS) and answered 504.
    query_timeout_seconds: float = 30.0
    # Consume the other services' domain events from the Redis Stream (off: ingest and
    # queries only, e.g. a query-only replica).
    consume_events: bool = True
    # Pending stream entries idle this long (their consumer died) are claimed by another.
    claim_idle_seconds: float = 60.0

    @property
    def limits(self) -> QueryLimits:
        return QueryLimits(
            timedelta(days=self.max_range_days), timedelta(days=self.max_minute_range_days)
        )

    @classmethod
    def from_env(cls, env: Env) -> AnalyticsSettings:
        max_range = env.int("MESH_ANALYTICS_MAX_RANGE_DAYS", 400, minimum=1, maximum=3660)
        max_minute = env.int("MESH_ANALYTICS_MAX_MINUTE_RANGE_DAYS", 7, minimum=1, maximum=31)
        if max_minute > max_range:
            raise SettingsError(
                "MESH_ANALYTICS_MAX_MINUTE_RANGE_DAYS",
                f"must not exceed MESH_ANALYTICS_MAX_RANGE_DAYS ({max_range}), got {max_minute}",
            )
        return cls(
            stores=StoreUrls.from_env(env),
            max_range_days=max_range,
            max_minute_range_days=max_minute,
            query_timeout_seconds=env.float(
                "MESH_ANALYTICS_QUERY_TIMEOUT_SECONDS", 30.0, minimum=0.1, maximum=600
            ),
            consume_events=env.bool("MESH_ANALYTICS_CONSUME_EVENTS", True),
            claim_idle_seconds=env.float(
                "MESH_ANALYTICS_CLAIM_IDLE_SECONDS", 60.0, minimum=1, maximum=86400
            ),
        )
