"""The users service over real gRPC against real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from mesh.errors import details_from_trailers
from protos.users.v1 import users_pb2, users_pb2_grpc
from tests.integration.services.conftest import RunningService
from tests.integration.services.users.support import (
    PASSWORD,
)


@pytest.fixture
async def stub(users: RunningService) -> AsyncIterator[users_pb2_grpc.UsersServiceStub]:
    async with grpc.aio.insecure_channel(users.address) as channel:
        yield users_pb2_grpc.UsersServiceStub(channel)


async def test_register_normalises_email_and_stores_an_argon2id_hash(
    stub: users_pb2_grpc.UsersServiceStub, users: RunningService
) -> None:
    user = await stub.Register(
        users_pb2.RegisterRequest(
            email="  Ada@Example.ORG ", password=PASSWORD, display_name=" Ada "
        )
    )
    assert user.email == "ada@example.org"
    assert user.display_name == "Ada"
    assert list(user.roles) == ["user"]
    assert user.created_at.seconds > 0
    connection = await asyncpg.connect(users.stores.postgres_for("users"))
    try:
        row = await connection.fetchrow("SELECT id::text, password_hash FROM users")
    finally:
        await connection.close()
    assert row["id"] == user.id
    assert row["password_hash"].startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in row["password_hash"]


async def test_duplicate_email_is_already_exists(stub: users_pb2_grpc.UsersServiceStub) -> None:
    await stub.Register(
        users_pb2.RegisterRequest(email="bo@example.org", password=PASSWORD, display_name="Bo")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Register(
            users_pb2.RegisterRequest(
                email="BO@example.org ", password=PASSWORD, display_name="Bo 2"
            )
        )
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_concurrent_registrations_of_one_email_create_one_account(
    stub: users_pb2_grpc.UsersServiceStub, users: RunningService
) -> None:
    request = users_pb2.RegisterRequest(
        email="race@example.org", password=PASSWORD, display_name="Racer"
    )
    results = await asyncio.gather(
        *(stub.Register(request) for _ in range(5)), return_exceptions=True
    )
    assert sum(isinstance(r, users_pb2.User) for r in results) == 1
    codes = [r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert codes == [grpc.StatusCode.ALREADY_EXISTS] * 4
    connection = await asyncpg.connect(users.stores.postgres_for("users"))
    try:
        assert await connection.fetchval("SELECT count(*) FROM users") == 1
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("email", "password", "display_name", "fields"),
    [
        ("not-an-email", PASSWORD, "X", ["email"]),
        ("a@example.org", "short", "X", ["password"]),
        ("a@example.org", "p" * 129, "X", ["password"]),
        ("longenough@example.org", "LongEnough@Example.org", "X", ["password"]),
        ("a@example.org", PASSWORD, "   ", ["displayName"]),
        ("", "", "", ["email", "password", "displayName"]),
    ],
)
async def test_bad_registration_names_each_field(
    stub: users_pb2_grpc.UsersServiceStub,
    email: str,
    password: str,
    display_name: str,
    fields: list[str],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Register(
            users_pb2.RegisterRequest(email=email, password=password, display_name=display_name)
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = details_from_trailers(caught.value.trailing_metadata())
    assert [e.field for e in details.field_errors] == fields


async def test_health_service_reports_serving(users: RunningService) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(users.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="users.v1.UsersService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
