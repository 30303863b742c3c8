"""Composition root of the catalog service."""

from __future__ import annotations

from mesh.auth.remote import remote_verifier
from mesh.backing_settings import POSTGRES_VAR
from mesh.common import CommonSettings
from mesh.grpc_server import serve_grpc
from mesh.lifecycle import Lifecycle
from mesh.stores import postgres_pool, postgres_ready
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.catalog.api import CatalogApi
from services.catalog.service import CatalogService
from services.catalog.settings import CatalogSettings
from services.catalog.store import PostgresProductStore

SERVICE_NAME = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name


async def serve(common: CommonSettings, settings: CatalogSettings, lifecycle: Lifecycle) -> None:
    async with (
        postgres_pool(settings.stores.postgres_for("catalog"), POSTGRES_VAR) as pool,
        remote_verifier(common.users_addresses, common.tokens) as verifier,
    ):
        lifecycle.add_readiness_check("postgres", lambda: postgres_ready(pool))
        api = CatalogApi(CatalogService(PostgresProductStore(pool)))
        await serve_grpc(
            common,
            lifecycle,
            lambda server: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(api, server),
            [SERVICE_NAME],
            verifier=verifier,
        )
