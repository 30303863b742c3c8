"""The analytics tests' stack: a real users service (for the token keys) and the analytics
service in-process on free ports, against the MongoDB-wire server and real Redis."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import redis.asyncio as aioredis
from google.protobuf import json_format
from pymongo import AsyncMongoClient

from mesh.auth.tokens import TokenIssuer, TokenSettings
from mesh.backing_settings import StoreUrls
from mesh.errors import ErrorDetails, details_from_trailers
from mesh.outbox import events_stream
from mesh.topology import ANALYTICS
from protos.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from services.analytics.server import serve
from services.analytics.settings import AnalyticsSettings
from tests.integration.services.conftest import RunningService, run_service
from tests.integration.services.users.support import new_key, running_users, users_settings

USER_ID = str(uuid.uuid4())
ADMIN_ID = str(uuid.uuid4())
Stub = analytics_pb2_grpc.AnalyticsServiceStub


@dataclasses.dataclass
class Analytics:
    service: RunningService
    issuer: TokenIssuer
    user_token: str
    admin_token: str

    @property
    def stores(self) -> StoreUrls:
        return self.service.stores


@contextlib.asynccontextmanager
async def running_analytics(
    stores: StoreUrls,
    settings: AnalyticsSettings | None = None,
    env: Mapping[str, str] | None = None,
    *,
    drop: bool = True,
) -> AsyncIterator[Analytics]:
    """Analytics verifying tokens with a real users service's keys; its data dropped after
    (unless `drop` is false: then the test calls `drop_analytics`)."""
    key = new_key()
    issuer = TokenIssuer([key], TokenSettings())
    try:
        async with (
            running_users(users_settings(stores, [key])) as users,
            run_service(
                ANALYTICS,
                settings or AnalyticsSettings(stores=stores),
                serve,
                stores,
                {"MESH_USERS_ADDR": users.address, **(env or {})},
            ) as running,
        ):
            yield Analytics(
                running,
                issuer,
                issuer.issue(USER_ID, ["user"]),
                issuer.issue(ADMIN_ID, ["user", "admin"]),
            )
    finally:
        if drop:
            await drop_analytics(stores)


async def drop_analytics(stores: StoreUrls) -> None:
    client: AsyncMongoClient[Any] = AsyncMongoClient(stores.mongo_url)
    try:
        await client.drop_database(stores.database_name("analytics"))
    finally:
        await client.close()
    redis = aioredis.Redis.from_url(stores.redis_url)
    try:
        await redis.delete(events_stream(stores.namespace))
    finally:
        await redis.aclose()


class BearerInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add("authorization", f"Bearer {self._token}")
        return await continuation(details._replace(metadata=metadata), request)


@contextlib.asynccontextmanager
async def stub_for(address: str, token: str | None) -> AsyncIterator[Stub]:
    interceptors = [BearerInterceptor(token)] if token else None
    async with grpc.aio.insecure_channel(address, interceptors=interceptors) as channel:
        yield analytics_pb2_grpc.AnalyticsServiceStub(channel)


def event(**fields: Any) -> analytics_pb2.Event:
    body: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "type": "page.view",
        "timestamp": "2026-11-01T10:00:00Z",
        "properties": {"path": "/"},
    }
    body.update(fields)
    return json_format.ParseDict(
        {k: v for k, v in body.items() if v is not None}, analytics_pb2.Event()
    )


def field_errors(error: grpc.aio.AioRpcError) -> ErrorDetails:
    return details_from_trailers(error.trailing_metadata())  # type: ignore[arg-type]


async def stored(stores: StoreUrls, collection: str = "events") -> list[dict[str, Any]]:
    client: AsyncMongoClient[Any] = AsyncMongoClient(stores.mongo_url, tz_aware=True)
    try:
        found = client[stores.database_name("analytics")][collection]
        return await found.find({}).to_list()
    finally:
        await client.close()
