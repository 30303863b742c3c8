"""Conditional requests and ErrorInfo statuses through the gateway, against real grpc.aio
servers: ETag and 304 from a service's `etag` metadata, If-Match forwarded, 412/422/409."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.settings import GatewaySettings
from mesh.auth.keys import SigningKey, key_id, public_jwk
from mesh.auth.tokens import TokenIssuer, TokenSettings
from mesh.errors import Aborted, IdempotencyKeyReused, PreconditionFailed, to_grpc_status
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from protos.users.v1 import users_pb2, users_pb2_grpc
from tests.integration.gateway.conftest import closed_address, serve
from tests.integration.gateway.fakes import start_grpc_server

Client = TestClient[web.Request, web.Application]
Context = grpc.aio.ServicerContext[Any, Any]
_PRIVATE = Ed25519PrivateKey.generate()
KEY = SigningKey(key_id(_PRIVATE.public_key()), _PRIVATE)


class Users(users_pb2_grpc.UsersServiceServicer):
    async def GetJwks(self, request: users_pb2.GetJwksRequest, context: Context) -> users_pb2.Jwks:
        return users_pb2.Jwks(keys=[users_pb2.Jwk(**public_jwk(KEY))])


class Catalog(catalog_pb2_grpc.CatalogServiceServicer):
    """Product "e1" is at version 3; updates need If-Match "v3" when one is given."""

    def __init__(self) -> None:
        self.if_match: list[str | None] = []

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: Context
    ) -> catalog_pb2.Product:
        context.set_trailing_metadata((("etag", '"v3"'),))
        return catalog_pb2.Product(id=request.id, name="Kettle", version=3)

    async def UpdateProduct(
        self, request: catalog_pb2.UpdateProductRequest, context: Context
    ) -> catalog_pb2.Product:
        metadata = dict(context.invocation_metadata() or ())
        condition = metadata.get("if-match")
        self.if_match.append(condition if isinstance(condition, str) else None)
        if condition is not None and condition != '"v3"':
            await context.abort_with_status(
                to_grpc_status(PreconditionFailed("changed", metadata={"currentVersion": "3"}))
            )
        await context.send_initial_metadata((("etag", '"v4"'),))
        return catalog_pb2.Product(id=request.id, name=request.name, version=4)

    async def ReserveProduct(
        self, request: catalog_pb2.ReserveProductRequest, context: Context
    ) -> catalog_pb2.Reservation:
        if request.idempotency_key == "reused":
            await context.abort_with_status(to_grpc_status(IdempotencyKeyReused("other body")))
        await context.abort_with_status(
            to_grpc_status(
                Aborted(
                    "only 2 in stock",
                    reason="INSUFFICIENT_STOCK",
                    metadata={"availableStock": "2"},
                )
            )
        )
        raise AssertionError("unreachable")


@pytest_asyncio.fixture(scope="module")
async def catalog() -> AsyncIterator[tuple[Catalog, Client]]:
    servicer = Catalog()
    users_server, users_address, _ = await start_grpc_server(
        lambda server: users_pb2_grpc.add_UsersServiceServicer_to_server(Users(), server)
    )
    catalog_server, catalog_address, _ = await start_grpc_server(
        lambda server: catalog_pb2_grpc.add_CatalogServiceServicer_to_server(servicer, server)
    )
    settings = GatewaySettings(
        users_addresses=(users_address,),
        catalog_addresses=(catalog_address,),
        analytics_addresses=(closed_address(),),
        chat_urls=("http://" + closed_address(),),
        upstream_timeout_seconds=2.0,
    )
    try:
        async with serve(settings) as client:
            yield servicer, client
    finally:
        for server in (users_server, catalog_server):
            await server.stop(None)


def bearer(roles: tuple[str, ...]) -> dict[str, str]:
    token = TokenIssuer([KEY], TokenSettings()).issue("u1", roles)
    return {"Authorization": f"Bearer {token}"}


async def test_etag_and_if_none_match(catalog: tuple[Catalog, Client]) -> None:
    _, client = catalog
    response = await client.get("/api/v1/products/e1")
    assert response.status == 200
    assert response.headers["ETag"] == '"v3"'
    assert (await response.json())["name"] == "Kettle"
    for matching in ('"v3"', 'W/"v3"', '"v1", "v3"', "*"):
        cached = await client.get("/api/v1/products/e1", headers={"If-None-Match": matching})
        assert cached.status == 304, matching
        assert cached.headers["ETag"] == '"v3"'
        assert await cached.read() == b""
    stale = await client.get("/api/v1/products/e1", headers={"If-None-Match": '"v2"'})
    assert stale.status == 200
    head = await client.head("/api/v1/products/e1", headers={"If-None-Match": '"v3"'})
    assert head.status == 304


async def test_if_match_is_forwarded_and_a_stale_one_is_412(
    catalog: tuple[Catalog, Client],
) -> None:
    servicer, client = catalog
    admin = bearer(("user", "admin"))
    stale = await client.patch(
        "/api/v1/products/e1", json={"name": "New"}, headers={**admin, "If-Match": '"v2"'}
    )
    assert stale.status == 412
    body = orjson.loads(await stale.read())
    assert (body["status"], body["reason"], body["currentVersion"]) == (
        412,
        "PRECONDITION_FAILED",
        3,
    )
    fresh = await client.patch(
        "/api/v1/products/e1", json={"name": "New"}, headers={**admin, "If-Match": '"v3"'}
    )
    assert fresh.status == 200
    assert fresh.headers["ETag"] == '"v4"'
    unconditional = await client.patch("/api/v1/products/e1", json={"name": "X"}, headers=admin)
    assert unconditional.status == 200
    assert servicer.if_match[-3:] == ['"v2"', '"v3"', None]
    # If-None-Match on a write is not a reason for a 304.
    write = await client.patch(
        "/api/v1/products/e1", json={"name": "Y"}, headers={**admin, "If-None-Match": '"v4"'}
    )
    assert write.status == 200


async def test_stock_conflicts_and_reused_keys(catalog: tuple[Catalog, Client]) -> None:
    _, client = catalog
    user = bearer(("user",))
    short = await client.post(
        "/api/v1/products/e1:reserve", json={"quantity": 5, "idempotencyKey": "k"}, headers=user
    )
    assert short.status == 409
    body = orjson.loads(await short.read())
    assert (body["reason"], body["availableStock"]) == ("INSUFFICIENT_STOCK", 2)
    reused = await client.post(
        "/api/v1/products/e1:reserve",
        json={"quantity": 1, "idempotencyKey": "reused"},
        headers=user,
    )
    assert reused.status == 422
    assert orjson.loads(await reused.read())["reason"] == "IDEMPOTENCY_KEY_REUSED"
