"""A registration publishes `user.registered` through the outbox, once, without the email."""

from __future__ import annotations

import asyncio
import time

import grpc
import orjson
import pytest
import redis.asyncio as aioredis

from mesh.backing_settings import StoreUrls
from mesh.outbox import events_stream
from protos.users.v1 import users_pb2_grpc
from tests.integration.services.users.support import register, users_db


async def entries(stores: StoreUrls, want: int, timeout: float = 10.0) -> list[dict[str, str]]:
    client = aioredis.Redis.from_url(stores.redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            found = [f for _, f in await client.xrange(events_stream(stores.namespace))]
            if len(found) >= want or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()


async def test_registration_publishes_user_registered(
    stub: users_pb2_grpc.UsersServiceStub, stores: StoreUrls
) -> None:
    user = await register(stub, "events@example.org")
    with pytest.raises(grpc.aio.AioRpcError):  # a refused registration publishes nothing
        await register(stub, "EVENTS@example.org")
    published = await entries(stores, want=1)
    assert len(published) == 1
    entry = published[0]
    assert (entry["type"], entry["source"], entry["subject"]) == (
        "user.registered",
        "users",
        user.id,
    )
    data = orjson.loads(entry["data"])
    assert data["userId"] == user.id
    assert "events@example.org" not in entry["data"]
    # The relay XADDs, then marks the row relayed when its transaction commits.
    async with users_db(stores) as db:
        deadline = time.monotonic() + 10
        while await db.fetchval("SELECT count(*) FROM outbox WHERE relayed_at IS NULL"):
            assert time.monotonic() < deadline, "the outbox row was never marked relayed"
            await asyncio.sleep(0.05)
        assert await db.fetchval("SELECT count(*) FROM outbox") == 1
