"""mesh.outbox against real PostgreSQL and Redis: written with the change, relayed once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from mesh.migrate import POSTGRES_SERVICES, discover, migrate
from mesh.outbox import Event, Outbox, OutboxRelay, events_stream, new_event, schema


@pytest_asyncio.fixture
async def pool(pg_database: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(pg_database, min_size=1, max_size=4) as created:
        await created.execute(schema("events_out"))
        yield created


@pytest.fixture
def stream() -> str:
    return events_stream(f"t{uuid.uuid4().hex[:8]}_")


def relay_for(
    pool: asyncpg.Pool, redis: aioredis.Redis, stream: str, **options: object
) -> OutboxRelay:
    return OutboxRelay(
        pool,
        redis,
        stream=stream,
        source="test",
        outbox=Outbox("events_out"),
        **options,  # type: ignore[arg-type]
    )


async def entries(redis: aioredis.Redis, stream: str) -> list[dict[str, str]]:
    return [fields for _, fields in await redis.xrange(stream)]


async def test_events_exist_only_if_the_transaction_commits(
    pool: asyncpg.Pool, redis: aioredis.Redis, stream: str
) -> None:
    outbox = Outbox("events_out")
    async with pool.acquire() as connection:
        transaction = connection.transaction()
        await transaction.start()
        await outbox.add(connection, new_event("thing.created", "t1", {"n": 1}))
        await transaction.rollback()  # the change failed
        async with connection.transaction():
            await outbox.add(
                connection,
                new_event("thing.created", "t2", {"n": 2}),
                new_event("thing.updated", "t2", {"n": 3}),
            )
    relay = relay_for(pool, redis, stream)
    assert await relay.relay_once() == 2
    assert await relay.relay_once() == 0
    published = await entries(redis, stream)
    assert [(e["type"], e["subject"]) for e in published] == [
        ("thing.created", "t2"),
        ("thing.updated", "t2"),
    ]
    assert await pool.fetchval("SELECT count(*) FROM events_out WHERE relayed_at IS NULL") == 0


async def test_entry_fields(pool: asyncpg.Pool, redis: aioredis.Redis, stream: str) -> None:
    event = Event(
        type="product.created",
        subject="p1",
        payload={"name": "Tea pot", "priceCents": 2599},
        occurred_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    async with pool.acquire() as connection:
        await Outbox("events_out").add(connection, event)
    await relay_for(pool, redis, stream).relay_once()
    (entry,) = await entries(redis, stream)
    assert entry == {
        "specversion": "1.0",
        "id": str(event.id),
        "source": "test",
        "type": "product.created",
        "subject": "p1",
        "time": "2024-05-06T07:08:09.123456Z",
        "datacontenttype": "application/json",
        "data": orjson.dumps({"name": "Tea pot", "priceCents": 2599}).decode(),
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }


def test_new_event_carries_the_active_trace_context() -> None:
    tracer = TracerProvider().get_tracer("test")
    assert new_event("x.y", "s", {}).traceparent is None
    with tracer.start_as_current_span("change") as span:
        event = new_event("x.y", "s", {})
    trace_id = trace.format_trace_id(span.get_span_context().trace_id)
    assert event.traceparent is not None
    assert event.traceparent.split("-")[1] == trace_id


async def test_a_failing_hook_leaves_the_batch_for_later(
    pool: asyncpg.Pool, redis: aioredis.Redis, stream: str
) -> None:
    seen: list[int] = []

    async def flaky(events: Sequence[Event]) -> None:
        seen.append(len(events))
        if len(seen) == 1:
            raise ConnectionError("cache unreachable")

    async with pool.acquire() as connection:
        await Outbox("events_out").add(connection, new_event("a.b", "1", {}))
    relay = relay_for(pool, redis, stream, before_publish=flaky)
    with pytest.raises(ConnectionError):
        await relay.relay_once()
    assert await entries(redis, stream) == []
    assert await relay.relay_once() == 1
    assert len(await entries(redis, stream)) == 1
    assert seen == [1, 1]


async def test_the_background_relay_publishes_soon_after_a_wake(
    pool: asyncpg.Pool, redis: aioredis.Redis, stream: str
) -> None:
    relay = relay_for(pool, redis, stream, poll_seconds=30)
    async with relay.running():
        await asyncio.sleep(0.05)
        async with pool.acquire() as connection:
            await Outbox("events_out").add(connection, new_event("a.b", "1", {}))
        relay.wake()
        for _ in range(100):
            if await entries(redis, stream):
                break
            await asyncio.sleep(0.01)
        assert len(await entries(redis, stream)) == 1


async def test_pending_events_are_drained_on_stop(
    pool: asyncpg.Pool, redis: aioredis.Redis, stream: str
) -> None:
    relay = relay_for(pool, redis, stream, poll_seconds=30)
    async with relay.running():
        await asyncio.sleep(0.05)
        async with pool.acquire() as connection:
            await Outbox("events_out").add(connection, new_event("a.b", "1", {}))
    assert len(await entries(redis, stream)) == 1


async def test_replicas_share_the_work_without_duplicates(
    pool: asyncpg.Pool, redis: aioredis.Redis, stream: str
) -> None:
    outbox = Outbox("events_out")
    async with pool.acquire() as connection:
        await outbox.add(connection, *(new_event("n.n", str(i), {"i": i}) for i in range(500)))
    relays = [relay_for(pool, redis, stream, batch_size=25) for _ in range(3)]

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while published := await relay.relay_once():
            total += published
        return total

    counts = await asyncio.gather(*(drain(r) for r in relays))
    assert sum(counts) == 500
    published = await entries(redis, stream)
    assert len(published) == 500
    assert len({e["id"] for e in published}) == 500


async def test_relayed_events_are_purged_after_the_retention(
    pool: asyncpg.Pool, redis: aioredis.Redis, stream: str
) -> None:
    async with pool.acquire() as connection:
        await Outbox("events_out").add(connection, new_event("a.b", "1", {}))
    relay = relay_for(pool, redis, stream, retention_seconds=0)
    await relay.relay_once()
    await asyncio.sleep(0.01)
    assert await relay.purge() == 1
    assert await pool.fetchval("SELECT count(*) FROM events_out") == 0


def test_table_names_are_plain_identifiers() -> None:
    for bad in ("outbox; DROP TABLE x", "Outbox", "1outbox", ""):
        with pytest.raises(ValueError, match="table name"):
            Outbox(bad)
        with pytest.raises(ValueError, match="table name"):
            schema(bad)


async def test_the_catalog_outbox_has_the_shared_schema(pg_database: str) -> None:
    """The catalog's migration creates its outbox exactly as `schema()` says."""
    await migrate(pg_database, discover(POSTGRES_SERVICES["catalog"]))
    columns = """
        SELECT column_name, data_type, is_nullable, is_identity FROM information_schema.columns
        WHERE table_name = $1 ORDER BY ordinal_position
    """
    connection = await asyncpg.connect(pg_database)
    try:
        await connection.execute(schema("expected"))
        expected = [tuple(r) for r in await connection.fetch(columns, "expected")]
        actual = [tuple(r) for r in await connection.fetch(columns, "outbox")]
    finally:
        await connection.close()
    assert actual == expected
