"""mesh.streams against real Redis: at least once, acknowledged after handling, dead
consumers' entries claimed, a prompt and clean stop."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis

from mesh.streams import StreamConsumer, StreamEntry

GROUP = "readers"


class Recorder:
    """A handler that stores entries by their `id` field, failing the first `failures` calls."""

    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        self.seen: dict[str, StreamEntry] = {}
        self.calls = 0
        self.failures = failures
        self.delay = delay

    async def __call__(self, entries: Sequence[StreamEntry]) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.calls <= self.failures:
            raise RuntimeError("store unavailable")
        for entry in entries:
            self.seen.setdefault(entry.fields["id"], entry)


def consumer(
    redis: aioredis.Redis, stream: str, handler: Recorder, name: str = "c1", **options: float
) -> StreamConsumer:
    return StreamConsumer(
        redis,
        stream=stream,
        group=GROUP,
        consumer=name,
        handler=handler,
        block_seconds=options.pop("block_seconds", 0.2),
        retry_seconds=0.05,
        **options,  # type: ignore[arg-type]
    )


async def publish(redis: aioredis.Redis, stream: str, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for event_id in ids:
        await redis.xadd(stream, {"id": event_id, "type": "thing.happened"})
    return ids


async def pending(redis: aioredis.Redis, stream: str) -> int:
    summary = await redis.xpending(stream, GROUP)
    return int(summary["pending"])


async def eventually(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_entries_from_before_the_group_existed_are_handled_and_acknowledged(
    redis: aioredis.Redis, stream: str
) -> None:
    early = await publish(redis, stream, 3)  # published before any consumer
    handler = Recorder()
    reader = consumer(redis, stream, handler, batch_size=2)
    async with reader.running():
        late = await publish(redis, stream, 4)

        async def all_seen() -> bool:
            return len(handler.seen) == 7

        await eventually(all_seen)
    assert set(handler.seen) == {*early, *late}
    assert await pending(redis, stream) == 0


async def test_a_failing_handler_leaves_entries_pending_and_they_are_retried(
    redis: aioredis.Redis, stream: str
) -> None:
    ids = await publish(redis, stream, 5)
    handler = Recorder(failures=2)
    reader = consumer(redis, stream, handler)
    async with reader.running():

        async def all_seen() -> bool:
            return len(handler.seen) == 5

        await eventually(all_seen)
    assert set(handler.seen) == set(ids)
    assert handler.calls >= 3
    assert await pending(redis, stream) == 0


async def test_a_dead_consumers_pending_entries_are_claimed_by_another(
    redis: aioredis.Redis, stream: str
) -> None:
    ids = await publish(redis, stream, 4)
    dead = consumer(redis, stream, Recorder(), name="dead")
    await dead.ensure_group()
    # The dead consumer got the entries delivered, then crashed before acknowledging them.
    await redis.xreadgroup(GROUP, "dead", {stream: ">"}, count=10)
    assert await pending(redis, stream) == 4
    handler = Recorder()
    survivor = consumer(redis, stream, handler, name="alive", claim_idle_seconds=0.3)
    async with survivor.running():

        async def claimed() -> bool:
            return len(handler.seen) == 4

        await eventually(claimed)
    assert set(handler.seen) == set(ids)
    assert await pending(redis, stream) == 0


async def test_idle_consumers_with_nothing_pending_are_forgotten(
    redis: aioredis.Redis, stream: str
) -> None:
    reader = consumer(redis, stream, Recorder(), forget_after_seconds=0.1)
    await reader.ensure_group()
    await redis.xgroup_createconsumer(stream, GROUP, "gone")
    await asyncio.sleep(0.2)
    assert await reader.forget_idle_consumers() == ["gone"]
    names = [c["name"] for c in await redis.xinfo_consumers(stream, GROUP)]
    assert "gone" not in names


async def test_entries_trimmed_while_pending_are_acknowledged_without_the_handler(
    redis: aioredis.Redis, stream: str
) -> None:
    await publish(redis, stream, 2)
    first = consumer(redis, stream, Recorder(), name="first")
    await first.ensure_group()
    await redis.xreadgroup(GROUP, "first", {stream: ">"}, count=10)
    await redis.xtrim(stream, maxlen=0)
    handler = Recorder()
    again = consumer(redis, stream, handler, name="first")  # restarted under its name
    assert await again.read_once(block=False) == 2
    assert handler.calls == 0
    assert await pending(redis, stream) == 0


async def test_stop_interrupts_a_blocking_read_at_once(redis: aioredis.Redis, stream: str) -> None:
    reader = consumer(redis, stream, Recorder(), block_seconds=30)
    async with reader.running():
        await asyncio.sleep(0.3)  # now blocked in XREADGROUP
        started = time.monotonic()
    assert time.monotonic() - started < 1.0


async def test_stop_lets_a_batch_in_hand_finish_and_be_acknowledged(
    redis: aioredis.Redis, stream: str
) -> None:
    handler = Recorder(delay=0.5)
    reader = consumer(redis, stream, handler)
    async with reader.running():
        await publish(redis, stream, 3)

        async def handling() -> bool:
            return handler.calls == 1

        await eventually(handling)
    assert len(handler.seen) == 3
    assert await pending(redis, stream) == 0


@pytest.mark.parametrize("value", [0, -1])
def test_bad_options_are_refused(value: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamConsumer(
            aioredis.Redis(),
            stream="s",
            group="g",
            consumer="c",
            handler=Recorder(),
            batch_size=value,
        )
