"""Transactional outbox: domain events stored with the change, relayed to a Redis Stream.

A service writes its events with `Outbox.add(connection, *events)` inside the transaction
that makes the change, so an event exists if and only if the change committed. An
`OutboxRelay`, a background task of the same service, moves them to a Redis Stream: it
locks a batch of unrelayed rows (``FOR UPDATE SKIP LOCKED``, so replicas share the work),
XADDs them, then marks them relayed in the same transaction. Delivery is at least once: a
crash between the XADD and the commit publishes the batch again, so consumers deduplicate
by the event ``id``. Order holds within one relay's batches, not across replicas; product
payloads carry a ``version`` for consumers that need the latest state. Relayed rows are
purged after `retention_seconds`.

The relay wakes up at once when this process wrote events (`wake()`) and polls every
`poll_seconds` for the others (another replica's leftovers after a crash).

Stream entries use CloudEvents attribute names (structured as flat stream fields)::

    specversion=1.0  id=<uuid>  source=<service>  type=product.updated  subject=<id>
    time=<RFC 3339, UTC>  datacontenttype=application/json  data=<JSON payload>
    traceparent=<W3C trace context of the change, when traced>  tracestate=<...>

`events_stream(namespace)` is the stream every service publishes to (one stream, many
event types): ``<namespace>mesh:events``.

The table: each service creates its own in a migration, as `schema(table)` gives it (the
catalog's is ``outbox``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import orjson
import redis.asyncio as aioredis
from asyncpg.pool import PoolConnectionProxy
from opentelemetry import propagate
from prometheus_client import Counter

log = logging.getLogger("mesh.outbox")

STREAM: Final = "mesh:events"
SPEC_VERSION: Final = "1.0"
_IDENTIFIER: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

OUTBOX_RELAYED: Final = Counter(
    "mesh_outbox_relayed_events_total", "Outbox events published to the stream.", ["table"]
)
OUTBOX_ERRORS: Final = Counter(
    "mesh_outbox_relay_errors_total", "Relay rounds that failed (retried later).", ["table"]
)


def schema(table: str = "outbox") -> str:
    """The DDL of an outbox table (copy it into a service's migration)."""
    _check_identifier(table)
    return f"""\
CREATE TABLE {table} (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid NOT NULL UNIQUE,
    type        text NOT NULL,
    subject     text NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload     jsonb NOT NULL,
    traceparent text,
    tracestate  text,
    relayed_at  timestamptz
);
CREATE INDEX {table}_pending_idx ON {table} (seq) WHERE relayed_at IS NULL;
CREATE INDEX {table}_relayed_idx ON {table} (relayed_at) WHERE relayed_at IS NOT NULL;
"""


def _check_identifier(table: str) -> None:
    if not _IDENTIFIER.match(table):
        raise ValueError(f"not a plain table name: {table!r}")


def events_stream(namespace: str) -> str:
    """The Redis Stream of domain events for a mesh namespace."""
    return f"{namespace}{STREAM}"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """One domain event. `id` is the consumers' idempotency key."""

    type: str
    subject: str
    payload: Mapping[str, Any]
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    occurred_at: datetime = field(default_factory=_now)
    traceparent: str | None = None
    tracestate: str | None = None


def new_event(
    type: str, subject: str, payload: Mapping[str, Any], occurred_at: datetime | None = None
) -> Event:
    """An event carrying the current W3C trace context (if a span is active)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return Event(
        type=type,
        subject=subject,
        payload=payload,
        occurred_at=occurred_at or _now(),
        traceparent=carrier.get("traceparent"),
        tracestate=carrier.get("tracestate"),
    )


def stream_fields(event: Event, source: str) -> dict[str, str]:
    """The stream entry for `event` (CloudEvents attribute names)."""
    fields = {
        "specversion": SPEC_VERSION,
        "id": str(event.id),
        "source": source,
        "type": event.type,
        "subject": event.subject,
        "time": event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": orjson.dumps(event.payload).decode(),
    }
    if event.traceparent:
        fields["traceparent"] = event.traceparent
    if event.tracestate:
        fields["tracestate"] = event.tracestate
    return fields


# What `Outbox.add` writes with: a connection, or one taken from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy


class Outbox:
    """Writes events into one outbox table, inside the caller's transaction."""

    def __init__(self, table: str = "outbox") -> None:
        _check_identifier(table)
        self.table = table
        self._insert = (
            f"INSERT INTO {table} (id, type, subject, occurred_at, payload, traceparent,"
            " tracestate) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)"
        )

    async def add(self, connection: Connection, *events: Event) -> None:
        """Store `events`; call inside the transaction that makes the change."""
        rows = [
            (
                e.id,
                e.type,
                e.subject,
                e.occurred_at,
                orjson.dumps(e.payload).decode(),
                e.traceparent,
                e.tracestate,
            )
            for e in events
        ]
        if len(rows) == 1:
            await connection.execute(self._insert, *rows[0])
        elif rows:
            await connection.executemany(self._insert, rows)


BeforePublish = Callable[[Sequence[Event]], Awaitable[None]]


class OutboxRelay:
    """Publishes an outbox table's events to a Redis Stream (see the module docstring).

    `before_publish`, if given, runs for each batch before the XADD; if it raises, the batch
    stays unrelayed and is retried (the catalog re-invalidates its cache there).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        *,
        stream: str,
        source: str,
        outbox: Outbox | None = None,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        max_stream_length: int = 1_000_000,
        retention_seconds: float = 24 * 3600,
        before_publish: BeforePublish | None = None,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._stream = stream
        self._source = source
        self._table = (outbox or Outbox()).table
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._max_length = max_stream_length
        self._retention = retention_seconds
        self._before_publish = before_publish
        self._wakeup = asyncio.Event()
        self._relayed = OUTBOX_RELAYED.labels(self._table)
        self._errors = OUTBOX_ERRORS.labels(self._table)
        self._select = (
            f"SELECT seq, id, type, subject, occurred_at, payload::text AS payload, traceparent,"
            f" tracestate FROM {self._table} WHERE relayed_at IS NULL ORDER BY seq LIMIT $1"
            " FOR UPDATE SKIP LOCKED"
        )
        self._mark = f"UPDATE {self._table} SET relayed_at = now() WHERE seq = ANY($1::bigint[])"
        self._purge = (
            f"DELETE FROM {self._table} WHERE seq IN (SELECT seq FROM {self._table}"
            " WHERE relayed_at < now() - make_interval(secs => $1) LIMIT 10000)"
        )

    @property
    def stream(self) -> str:
        return self._stream

    def wake(self) -> None:
        """Relay soon: this process just committed events."""
        self._wakeup.set()

    async def relay_once(self) -> int:
        """Publish one batch of pending events; how many were published."""
        async with self._pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(self._select, self._batch_size)
            if not rows:
                return 0
            events = [_event(row) for row in rows]
            if self._before_publish is not None:
                await self._before_publish(events)
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.xadd(
                        self._stream,
                        stream_fields(event, self._source),  # type: ignore[arg-type]
                        maxlen=self._max_length,
                        approximate=True,
                    )
                await pipe.execute()
            await connection.execute(self._mark, [row["seq"] for row in rows])
        self._relayed.inc(len(rows))
        return len(rows)

    async def purge(self) -> int:
        """Delete relayed events older than the retention; how many were deleted."""
        status = await self._pool.execute(self._purge, self._retention)
        return int(status.split()[-1])

    async def run(self) -> None:
        """Relay until cancelled, retrying after failures with a growing pause."""
        failures = 0
        next_purge = time.monotonic()
        while True:
            self._wakeup.clear()
            try:
                published = await self.relay_once()
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + 60
                    await self.purge()
            except Exception as exc:  # the store, Redis or the hook: all retried the same way
                self._errors.inc()
                failures += 1
                if failures == 1:
                    log.warning(
                        "outbox %s: relay failed (%s: %s); retrying",
                        self._table,
                        type(exc).__name__,
                        exc,
                    )
                await asyncio.sleep(min(self._poll_seconds * 2 ** min(failures, 5), 30.0))
                continue
            if failures:
                log.info("outbox %s: relaying again", self._table)
                failures = 0
            if published >= self._batch_size:
                continue  # more are waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll_seconds)

    @contextlib.asynccontextmanager
    async def running(self, drain_seconds: float = 2.0) -> AsyncIterator[OutboxRelay]:
        """Run the relay in the background; on exit, one last bounded round, then stop."""
        task = asyncio.create_task(self.run(), name=f"outbox-relay-{self._table}")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.relay_once(), drain_seconds)


def _event(row: asyncpg.Record) -> Event:
    return Event(
        type=row["type"],
        subject=row["subject"],
        payload=orjson.loads(row["payload"]),
        id=row["id"],
        occurred_at=row["occurred_at"],
        traceparent=row["traceparent"],
        tracestate=row["tracestate"],
    )
