"""Consuming a Redis Stream with a consumer group: at least once, acknowledged after handling.

`StreamConsumer` is the reading side of `mesh.outbox` (which publishes). One consumer group
per consuming service (e.g. "analytics"); every process of that service is one consumer of
the group, named by its instance id, so the entries are shared between the replicas:

* The group is created on first use (``XGROUP CREATE ... MKSTREAM``) from `start_id`
  ("0": everything still in the stream, so nothing published before the first start is
  missed).
* New entries are read with ``XREADGROUP ... BLOCK`` in batches and given to the handler;
  they are acknowledged (``XACK``) only after the handler returned, i.e. stored them. A
  handler that raises leaves them pending; the consumer backs off and reads its own pending
  entries again (``XREADGROUP`` from id 0) before new ones. A crash between the handler and
  the ``XACK`` delivers the entries again: handlers must be idempotent (the outbox's event
  id is the key).
* A consumer that died leaves entries pending under its name. Every `claim_every_seconds`
  each live consumer takes over entries idle for longer than `claim_idle_seconds`
  (``XAUTOCLAIM``) and handles them the same way. Consumers that have had nothing pending
  for `forget_after_seconds` are removed from the group (``XGROUP DELCONSUMER``).
* Stopping (`stop()`, or leaving `running()`) interrupts a blocking read at once but lets
  a batch being handled finish and be acknowledged, within `stop_seconds`.

The Redis client must allow a blocking read: a socket timeout longer than `block_seconds`
(`mesh.cache.lazy_redis(url, block_seconds + 3)` is one; it also lets the process start
while Redis is down: the consumer retries with a growing pause and logs once).

Tracing: each batch handed to the handler is a CONSUMER span ``process <stream>``, the root
of a trace of its own (a batch mixes entries of many requests), with a link to the W3C
context each entry carries (``traceparent``, written by `mesh.outbox`); it is sampled when
any linked trace was. The handler's own calls (the store's writes) are its children.

Metrics, besides the entry counters: every `measure_every_seconds` (in a task of its own, so
a stuck handler still shows) the group's lag in seconds (the age of the oldest entry not yet
delivered to the group: 0 when caught up, growing while the consumers fall behind or
stall), its lag in entries (Redis 7+ reports it) and its pending entries (delivered, not yet
acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge
from redis.exceptions import ResponseError

log = logging.getLogger("mesh.streams")

STREAM_ENTRIES: Final = Counter(
    "mesh_stream_entries_total",
    "Stream entries handled and acknowledged, by how they came (read, or claimed from a"
    " consumer that stopped answering).",
    ["group", "via"],
)
STREAM_ERRORS: Final = Counter(
    "mesh_stream_consumer_errors_total",
    "Consumer rounds that failed (Redis or the handler); the entries are retried.",
    ["group"],
)
STREAM_LAG_SECONDS: Final = Gauge(
    "mesh_stream_consumer_lag_seconds",
    "Age of the oldest stream entry not yet delivered to the consumer group (0: caught up).",
    ["group"],
)
STREAM_LAG_ENTRIES: Final = Gauge(
    "mesh_stream_consumer_lag_entries",
    "Stream entries not yet delivered to the consumer group (as Redis 7+ reports it).",
    ["group"],
)
STREAM_PENDING: Final = Gauge(
    "mesh_stream_consumer_pending_entries",
    "Stream entries delivered to the consumer group and not yet acknowledged.",
    ["group"],
)
MAX_LINKS: Final = 128  # the SDK's default limit of links per span
_tracer = trace.get_tracer("mesh.streams")


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One stream entry. `fields` is empty for an entry trimmed from the stream while it was
    pending (nothing left to handle; it is acknowledged)."""

    id: str
    fields: Mapping[str, str]


Handler = Callable[[Sequence[StreamEntry]], Awaitable[None]]


def entry_link(entry: StreamEntry) -> Link | None:
    """A link to the trace context `entry` carries, if it carries a valid one."""
    if "traceparent" not in entry.fields:
        return None
    context = trace.get_current_span(propagate.extract(entry.fields)).get_span_context()
    return Link(context) if context.is_valid else None


def entry_id_millis(entry_id: str) -> int:
    """The time part of a stream entry id (``<milliseconds>-<sequence>``)."""
    return int(entry_id.partition("-")[0])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(raw: Sequence[Any]) -> list[StreamEntry]:
    """Entries as redis-py parses them: ``[(id, {field: value} | None), ...]``."""
    return [
        StreamEntry(_text(entry_id), {_text(k): _text(v) for k, v in (fields or {}).items()})
        for entry_id, fields in raw
    ]


class StreamConsumer:
    """One consumer of a consumer group on one stream (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        stream: str,
        group: str,
        consumer: str,
        handler: Handler,
        start_id: str = "0",
        batch_size: int = 100,
        block_seconds: float = 2.0,
        claim_idle_seconds: float = 60.0,
        claim_every_seconds: float | None = None,
        forget_after_seconds: float = 24 * 3600,
        retry_seconds: float = 0.5,
        stop_seconds: float = 5.0,
        measure_every_seconds: float = 5.0,
    ) -> None:
        if batch_size < 1 or block_seconds <= 0 or claim_idle_seconds <= 0:
            raise ValueError("batch_size, block_seconds and claim_idle_seconds must be positive")
        self._redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._handler = handler
        self._start_id = start_id
        self._batch_size = batch_size
        self._block_ms = int(block_seconds * 1000)
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._claim_every = (
            claim_every_seconds if claim_every_seconds is not None else claim_idle_seconds / 2
        )
        self._forget_after_ms = int(forget_after_seconds * 1000)
        self._retry_seconds = retry_seconds
        self._stop_seconds = stop_seconds
        self._stopping = asyncio.Event()
        self._group_ready = False
        self._own_pending = True  # after a start or a failure: our pending entries first
        self._blocked = False  # waiting in XREADGROUP BLOCK (safe to interrupt)
        self._read_entries = STREAM_ENTRIES.labels(group, "read")
        self._claimed_entries = STREAM_ENTRIES.labels(group, "claimed")
        self._errors = STREAM_ERRORS.labels(group)
        self._measure_every = measure_every_seconds
        self._lag_seconds = STREAM_LAG_SECONDS.labels(group)
        self._lag_entries = STREAM_LAG_ENTRIES.labels(group)
        self._pending = STREAM_PENDING.labels(group)
        self._span_name = f"process {stream}"

    async def ensure_group(self) -> None:
        """Create the stream and the group if they do not exist yet."""
        try:
            await self._redis.xgroup_create(self.stream, self.group, self._start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def read_once(self, *, block: bool = True) -> int:
        """Handle and acknowledge one batch; how many entries it held (0: none waiting).

        Our own pending entries (delivered before but not acknowledged) come first, then new
        ones, waiting up to `block_seconds` for them when `block` is set.
        """
        if not self._group_ready:
            await self.ensure_group()
        if self._own_pending:
            entries = await self._read("0", None)
            if entries:
                return await self._handle(entries, self._read_entries)
            self._own_pending = False
        entries = await self._read(">", self._block_ms if block else None)
        return await self._handle(entries, self._read_entries) if entries else 0

    async def claim_once(self) -> int:
        """Take over and handle the entries idle longer than `claim_idle_seconds`."""
        if not self._group_ready:
            await self.ensure_group()
        handled, cursor = 0, "0-0"
        while True:
            reply = await self._redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                self._claim_idle_ms,
                start_id=cursor,
                count=self._batch_size,
            )
            cursor = _text(reply[0])
            entries = _entries(reply[1])
            if entries:
                handled += await self._handle(entries, self._claimed_entries)
            if cursor == "0-0":
                return handled

    async def forget_idle_consumers(self) -> list[str]:
        """Remove consumers with nothing pending, idle longer than `forget_after_seconds`."""
        forgotten = []
        for info in await self._redis.xinfo_consumers(self.stream, self.group):
            name = _text(info["name"])
            if (
                name != self.consumer
                and int(info["pending"]) == 0
                and int(info["idle"]) > self._forget_after_ms
            ):
                await self._redis.xgroup_delconsumer(self.stream, self.group, name)
                forgotten.append(name)
        return forgotten

    async def measure_lag(self) -> float:
        """Update the lag and pending gauges from Redis; returns the lag in seconds."""
        groups = await self._redis.xinfo_groups(self.stream)
        info = next((g for g in groups if _text(g["name"]) == self.group), None)
        if info is None:
            return 0.0
        self._pending.set(int(info["pending"]))
        if info.get("lag") is not None:
            self._lag_entries.set(int(info["lag"]))
        last_delivered = _text(info["last-delivered-id"])
        oldest = await self._redis.xrange(self.stream, min=f"({last_delivered}", count=1)
        lag = 0.0
        first_id = oldest[0][0] if oldest else None
        if first_id is not None:
            lag = max(0.0, time.time() - entry_id_millis(_text(first_id)) / 1000)
        self._lag_seconds.set(lag)
        return lag

    async def _measure_until_stopped(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._group_ready:
                    await self.measure_lag()
            except Exception as exc:  # Redis down: the read loop logs it
                log.debug("measuring the lag of %s failed: %s", self.stream, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._measure_every)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until `stop()`: read, claim now and then; failures are retried."""
        failures = 0
        next_claim = time.monotonic()  # at once: a restart may follow a crash
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= next_claim:
                    await self.claim_once()
                    await self.forget_idle_consumers()
                    next_claim = time.monotonic() + self._claim_every
                await self._read_until_stopped()
            except Exception as exc:  # Redis or the handler: both retried the same way
                self._errors.inc()
                self._own_pending = True
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    self._group_ready = False  # the stream was deleted: create it again
                failures += 1
                if failures == 1:
                    log.warning(
                        "stream %s, group %s: %s: %s; retrying",
                        self.stream,
                        self.group,
                        type(exc).__name__,
                        exc,
                    )
                pause = min(self._retry_seconds * 2 ** min(failures - 1, 6), 30.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                continue
            if failures:
                log.info("stream %s, group %s: consuming again", self.stream, self.group)
                failures = 0

    async def _read_until_stopped(self) -> None:
        """One `read_once`, abandoned if a stop comes while it waits for entries."""
        read = asyncio.ensure_future(self.read_once())
        stopped = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done() and self._blocked:
                read.cancel()  # blocked in XREADGROUP: nothing delivered to us is lost
            with contextlib.suppress(asyncio.CancelledError):
                await read
        finally:
            stopped.cancel()
            if not read.done():
                read.cancel()

    async def _read(self, from_id: str, block_ms: int | None) -> list[StreamEntry]:
        self._blocked = block_ms is not None
        try:
            reply = await self._redis.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: from_id},
                count=self._batch_size,
                block=block_ms,
            )
        finally:
            self._blocked = False
        if not reply:
            return []
        # RESP2 gives [[stream, entries]], RESP3 {stream: [entries]}.
        batches = reply.values() if isinstance(reply, dict) else (e for _, e in reply)
        return [entry for raw in batches for entry in _entries(raw)]

    async def _handle(self, entries: list[StreamEntry], counter: Counter) -> int:
        live = [e for e in entries if e.fields]
        if live:
            await self._traced(live)
        await self._redis.xack(self.stream, self.group, *(e.id for e in entries))
        counter.inc(len(entries))
        return len(entries)

    async def _traced(self, entries: list[StreamEntry]) -> None:
        links = [link for link in map(entry_link, entries) if link is not None]
        with (
            _tracer.start_as_current_span(
                self._span_name,
                context=Context(),  # a root: the batch belongs to no single request
                kind=SpanKind.CONSUMER,
                links=links[:MAX_LINKS],
                attributes={
                    "messaging.system": "redis",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": self.stream,
                    "messaging.consumer.group.name": self.group,
                    "messaging.batch.message_count": len(entries),
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as span
        ):
            try:
                await self._handler(entries)
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[StreamConsumer]:
        """Consume in the background; on exit, stop (a batch in hand is finished first)."""
        self._stopping.clear()
        task = asyncio.create_task(self.run(), name=f"stream-{self.group}-{self.consumer}")
        measuring = asyncio.create_task(
            self._measure_until_stopped(), name=f"stream-lag-{self.group}"
        )
        try:
            yield self
        finally:
            self.stop()
            measuring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await measuring
            try:
                await asyncio.wait_for(asyncio.shield(task), self._stop_seconds)
            except TimeoutError:
                log.warning("stream %s: handler still busy at stop; cancelled", self.stream)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
