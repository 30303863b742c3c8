"""A real users service per test, on free ports, against real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mesh.auth.keys import SigningKey
from mesh.backing_settings import StoreUrls
from protos.users.v1 import users_pb2_grpc
from tests.integration.services.conftest import RunningService
from tests.integration.services.users.support import (
    clear_redis,
    new_key,
    running_users,
    users_settings,
    users_stub,
)


@pytest.fixture
def key() -> SigningKey:
    return new_key()


@pytest.fixture
async def users(stores: StoreUrls, key: SigningKey) -> AsyncIterator[RunningService]:
    async with running_users(users_settings(stores, [key])) as running:
        yield running
    await clear_redis(stores)


@pytest.fixture
async def stub(users: RunningService) -> AsyncIterator[users_pb2_grpc.UsersServiceStub]:
    async with users_stub(users.address) as stub:
        yield stub
