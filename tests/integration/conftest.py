"""Fixtures shared by the integration tests: a Redis client and a fresh stream name."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
import redis.asyncio as aioredis

from mesh.harness import BackingUrls


@pytest_asyncio.fixture
async def redis(backing: BackingUrls) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(backing.redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest_asyncio.fixture
async def stream(redis: aioredis.Redis) -> AsyncIterator[str]:
    """A stream name no other test uses, deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:8]}_mesh:events"
    yield name
    await redis.delete(name)
