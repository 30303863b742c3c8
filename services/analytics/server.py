"""Composition root of the analytics service."""

from __future__ import annotations

from mesh.auth.remote import remote_verifier
from mesh.backing_settings import MONGO_VAR
from mesh.common import CommonSettings
from mesh.grpc_server import serve_grpc
from mesh.lifecycle import Lifecycle
from mesh.stores import mongo_client, mongo_ready
from protos.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics.api import AnalyticsApi
from services.analytics.service import AnalyticsService
from services.analytics.settings import AnalyticsSettings
from services.analytics.store import MongoEventStore

SERVICE_NAME = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name


async def serve(common: CommonSettings, settings: AnalyticsSettings, lifecycle: Lifecycle) -> None:
    async with (
        mongo_client(settings.stores.mongo_url, MONGO_VAR) as client,
        remote_verifier(common.users_addresses, common.tokens) as verifier,
    ):
        store = MongoEventStore(client, settings.stores.database_name("analytics"))
        await store.ensure_indexes()
        lifecycle.add_readiness_check("mongo", lambda: mongo_ready(client))
        api = AnalyticsApi(AnalyticsService(store))
        await serve_grpc(
            common,
            lifecycle,
            lambda server: analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(api, server),
            [SERVICE_NAME],
            verifier=verifier,
        )
