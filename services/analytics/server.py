"""Composition root of the analytics service.

MongoDB is required (start-up and readiness). Redis is not: ingestion and queries work
without it, and the domain-event consumer retries until Redis answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

from mesh.auth.remote import remote_verifier
from mesh.backing_settings import MONGO_VAR
from mesh.cache import lazy_redis
from mesh.common import CommonSettings
from mesh.grpc_server import serve_grpc
from mesh.lifecycle import Lifecycle
from mesh.outbox import events_stream
from mesh.stores import mongo_client, mongo_ready
from mesh.streams import StreamConsumer
from protos.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics.api import AnalyticsApi
from services.analytics.domain_events import CONSUMER_GROUP, DomainEventSink
from services.analytics.service import AnalyticsService
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import MongoEventStore

SERVICE_NAME = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name
STREAM_BLOCK_SECONDS: Final = 2.0


@contextlib.asynccontextmanager
async def domain_event_consumer(
    common: CommonSettings, settings: AnalyticsSettings, store: MongoEventStore
) -> AsyncIterator[StreamConsumer | None]:
    """The stream consumer running in the background (None when switched off)."""
    if not settings.consume_events:
        yield None
        return
    async with lazy_redis(settings.stores.redis_url, STREAM_BLOCK_SECONDS + 3) as redis:
        consumer = StreamConsumer(
            redis,
            stream=events_stream(settings.stores.namespace),
            group=CONSUMER_GROUP,
            consumer=common.instance_id,
            handler=DomainEventSink(store),
            block_seconds=STREAM_BLOCK_SECONDS,
            claim_idle_seconds=settings.claim_idle_seconds,
        )
        async with consumer.running():
            yield consumer


async def serve(common: CommonSettings, settings: AnalyticsSettings, lifecycle: Lifecycle) -> None:
    async with (
        mongo_client(settings.stores.mongo_url, MONGO_VAR) as client,
        remote_verifier(common.users_addresses, common.tokens) as verifier,
    ):
        store = MongoEventStore(
            client,
            settings.stores.database_name("analytics"),
            query_timeout_seconds=settings.query_timeout_seconds,
        )
        await store.ensure_indexes()
        lifecycle.add_readiness_check("mongo", lambda: mongo_ready(client))
        api = AnalyticsApi(AnalyticsService(store), settings.limits)
        async with domain_event_consumer(common, settings, store):
            await serve_grpc(
                common,
                lifecycle,
                lambda server: analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(
                    api, server
                ),
                [SERVICE_NAME],
                verifier=verifier,
            )
