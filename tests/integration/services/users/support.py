"""Helpers for the users-service tests: keys, settings, a running service, a client."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import grpc
import jwt
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.auth.keys import SigningKey, key_id
from mesh.backing_settings import StoreUrls
from mesh.errors import ErrorDetails, details_from_trailers
from mesh.topology import USERS
from protos.users.v1 import users_pb2, users_pb2_grpc
from services.users.server import serve
from services.users.settings import UsersSettings
from tests.integration.services.conftest import RunningService, run_service

PASSWORD = "correct horse battery staple"
ISSUER = "the-mesh"
AUDIENCE = "mesh-api"


def new_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    return SigningKey(key_id(private.public_key()), private)


def pem(key: SigningKey) -> str:
    return key.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def users_settings(
    stores: StoreUrls, keys: Sequence[SigningKey] | None = None, **overrides: Any
) -> UsersSettings:
    settings = UsersSettings(
        stores=stores,
        argon2_memory_kib=19 * 1024,
        argon2_time_cost=2,
        hashing_threads=2,
        signing_keys=tuple(keys or (new_key(),)),
    )
    return dataclasses.replace(settings, **overrides)


@contextlib.asynccontextmanager
async def running_users(settings: UsersSettings) -> AsyncIterator[RunningService]:
    async with run_service(USERS, settings, serve, settings.stores) as running:
        yield running


@contextlib.asynccontextmanager
async def users_stub(address: str) -> AsyncIterator[users_pb2_grpc.UsersServiceStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield users_pb2_grpc.UsersServiceStub(channel)


async def clear_redis(stores: StoreUrls) -> None:
    client = aioredis.Redis.from_url(stores.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{stores.namespace}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def users_db(stores: StoreUrls) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(stores.postgres_for("users"))
    try:
        yield connection
    finally:
        await connection.close()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def from_address(address: str) -> tuple[tuple[str, str], ...]:
    return (("x-client-address", address),)


def error_details(error: grpc.aio.AioRpcError) -> ErrorDetails:
    return details_from_trailers(error.trailing_metadata())  # type: ignore[arg-type]


def fields_of(error: grpc.aio.AioRpcError) -> list[str]:
    return [e.field for e in error_details(error).field_errors]


async def register(
    stub: users_pb2_grpc.UsersServiceStub,
    email: str,
    password: str = PASSWORD,
    display_name: str = "Someone",
) -> users_pb2.User:
    return await stub.Register(
        users_pb2.RegisterRequest(email=email, password=password, display_name=display_name)
    )


async def login(
    stub: users_pb2_grpc.UsersServiceStub,
    email: str,
    password: str = PASSWORD,
    address: str = "198.51.100.1",
) -> users_pb2.TokenPair:
    return await stub.Login(
        users_pb2.LoginRequest(email=email, password=password), metadata=from_address(address)
    )


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid access-token claims; a value of None drops that claim."""
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "00000000-0000-0000-0000-000000000000",
        "iat": now,
        "exp": now + 300,
        "jti": "test",
        "roles": ["user"],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def sign(key: SigningKey, body: dict[str, Any]) -> str:
    return jwt.encode(body, key.private, algorithm="EdDSA", headers={"kid": key.kid})
