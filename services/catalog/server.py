"""Composition root of the catalog service.

Redis is not a start-up or readiness requirement: reads fall back to PostgreSQL while it
is down (`mesh.cache`), and the outbox keeps events until the relay can publish them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Final

import asyncpg

from mesh.auth.remote import remote_verifier
from mesh.backing_settings import POSTGRES_VAR
from mesh.cache import NoCache, ReadCache, RedisCache, lazy_redis
from mesh.common import CommonSettings
from mesh.grpc_server import serve_grpc
from mesh.lifecycle import Lifecycle
from mesh.outbox import Event, Outbox, OutboxRelay, events_stream
from mesh.settings import Secret
from mesh.stores import postgres_pool, postgres_ready
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.catalog.api import CatalogApi
from services.catalog.inventory import PostgresInventory
from services.catalog.listing import PageTokens
from services.catalog.service import CatalogService, invalidate_for_events
from services.catalog.settings import CatalogSettings
from services.catalog.store import PostgresProductStore

SERVICE_NAME = catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name
EVENT_SOURCE: Final = "catalog"
RELAY_REDIS_TIMEOUT_SECONDS: Final = 2.0
_PAGE_TOKEN_SECRET: Final = "page_tokens"


async def page_token_key(pool: asyncpg.Pool, configured: Secret | None) -> bytes:
    """The configured secret, or the one this service made on its first start."""
    if configured is not None:
        return hashlib.sha256(b"catalog page tokens\x00" + configured.value.encode()).digest()
    await pool.execute(
        "INSERT INTO service_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        _PAGE_TOKEN_SECRET,
        secrets.token_bytes(32),
    )
    key: bytes = await pool.fetchval(
        "SELECT secret FROM service_secrets WHERE name = $1", _PAGE_TOKEN_SECRET
    )
    return key


async def serve(common: CommonSettings, settings: CatalogSettings, lifecycle: Lifecycle) -> None:
    stores = settings.stores
    async with (
        postgres_pool(
            stores.postgres_for("catalog"),
            POSTGRES_VAR,
            max_size=settings.db_pool_size,
            reset_on_release=False,  # no session state: no LISTEN, SET or session locks
        ) as pool,
        remote_verifier(common.users_addresses, common.tokens) as verifier,
        lazy_redis(stores.redis_url, settings.cache.timeout_seconds) as cache_redis,
        lazy_redis(stores.redis_url, RELAY_REDIS_TIMEOUT_SECONDS) as relay_redis,
    ):
        lifecycle.add_readiness_check("postgres", lambda: postgres_ready(pool))
        cache: ReadCache = (
            RedisCache(cache_redis, f"{stores.namespace}catalog:", settings.cache, name="catalog")
            if settings.cache_enabled
            else NoCache()
        )

        async def reinvalidate(events: Sequence[Event]) -> None:
            await invalidate_for_events(cache, events)

        outbox = Outbox("outbox")
        relay = OutboxRelay(
            pool,
            relay_redis,
            stream=events_stream(stores.namespace),
            source=EVENT_SOURCE,
            outbox=outbox,
            poll_seconds=settings.outbox_poll_seconds,
            before_publish=reinvalidate,
        )
        service = CatalogService(
            PostgresProductStore(pool, outbox),
            PostgresInventory(pool, outbox),
            cache,
            PageTokens(await page_token_key(pool, settings.page_token_secret)),
            on_change=relay.wake,
        )
        api = CatalogApi(service)
        async with relay.running():
            await serve_grpc(
                common,
                lifecycle,
                lambda server: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(api, server),
                [SERVICE_NAME],
                verifier=verifier,
            )
