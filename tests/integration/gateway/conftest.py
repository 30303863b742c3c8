"""The gateway served on a real socket in front of real grpc.aio servers and a chat app."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from grpc_health.v1 import health

from gateway.app import create_app
from gateway.routing import UpstreamService
from gateway.settings import GatewaySettings
from gateway.upstreams import GRPC_SERVICES
from protos.catalog.v1 import catalog_pb2_grpc
from protos.users.v1 import users_pb2_grpc
from tests.integration.gateway.fakes import (
    KEY,
    CatalogServicer,
    JwksServicer,
    ShelfServicer,
    chat_app,
    start_grpc_server,
)
from tests.unit.gateway.bookshelf import BOOKSHELF

BODY_LIMIT = 64 * 1024
SERVICES: tuple[UpstreamService, ...] = (*GRPC_SERVICES, BOOKSHELF)


def closed_address() -> str:
    """A loopback host:port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


@dataclass
class FakeUpstreams:
    catalog: CatalogServicer
    shelf: ShelfServicer
    users_address: str
    catalog_address: str
    analytics_address: str
    analytics_health: health.aio.HealthServicer
    chat: web.Application
    chat_url: str

    def settings(self, **overrides: object) -> GatewaySettings:
        base = GatewaySettings(
            users_addresses=(self.users_address,),
            catalog_addresses=(self.catalog_address,),
            analytics_addresses=(self.analytics_address,),
            chat_urls=(self.chat_url,),
            body_limit_bytes=BODY_LIMIT,
            upstream_timeout_seconds=1.0,
        )
        return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@pytest_asyncio.fixture(scope="module")
async def upstreams() -> AsyncIterator[FakeUpstreams]:
    catalog, shelf = CatalogServicer(), ShelfServicer()
    users_server, users_address, _ = await start_grpc_server()
    catalog_server, catalog_address, _ = await start_grpc_server(
        lambda server: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(catalog, server),
        lambda server: server.add_generic_rpc_handlers((shelf.handler(),)),
    )
    analytics_server, analytics_address, analytics_health = await start_grpc_server()
    chat = chat_app()
    chat_server = TestServer(chat, host="127.0.0.1")
    await chat_server.start_server()
    try:
        yield FakeUpstreams(
            catalog=catalog,
            shelf=shelf,
            users_address=users_address,
            catalog_address=catalog_address,
            analytics_address=analytics_address,
            analytics_health=analytics_health,
            chat=chat,
            chat_url=str(chat_server.make_url("")).rstrip("/"),
        )
    finally:
        await chat_server.close()
        for server in (users_server, catalog_server, analytics_server):
            await server.stop(None)


@asynccontextmanager
async def serve(
    settings: GatewaySettings, services: Sequence[UpstreamService] = SERVICES
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """The gateway for `settings` on a free loopback port, with a client for it."""
    app = create_app(settings, services=services)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest_asyncio.fixture(scope="module")
async def gateway(
    upstreams: FakeUpstreams,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with serve(upstreams.settings()) as client:
        yield client


@pytest_asyncio.fixture(scope="module")
async def jwks_address() -> AsyncIterator[str]:
    """A users service that only publishes the key TOKEN is signed with (`fakes.KEY`)."""
    servicer = JwksServicer(KEY)
    server, address, _ = await start_grpc_server(
        lambda s: users_pb2_grpc.add_UsersServiceServicer_to_server(servicer, s)
    )
    try:
        yield address
    finally:
        await server.stop(None)
