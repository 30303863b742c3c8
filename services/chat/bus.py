"""Fan-out across chat replicas: Redis pub/sub, one subscription per process.

Each process holds one pub/sub connection and subscribes it to the channel of every room
that has a subscriber here (``<ns>chat:room:<id>``; a room with nobody here costs nothing),
plus a control channel so the connection is always subscribed. The replica that stored a
message publishes it once, already encoded as the JSON of its ``message`` frame; each
process frames it once and its `RoomHub` writes those bytes to every local connection.

Envelopes (bytes): ``m<seq>[,<published µs>[,<traceparent>]] <message json>``, ``s<seq>``
(a hole: step over it), ``p<userId or nothing> <presence json>``, ``t<userId> <typing
json>`` (not delivered to the connections of that user).

A message envelope carries the time it was published (for the fan-out latency histogram)
and the W3C trace context of the sender's ``chat send`` span: each replica delivers it in a
``chat deliver`` CONSUMER span of its own trace, linked to the sender's (a fan-out to N
replicas is N traces, each one short, rather than one trace that never ends).

Pub/sub rather than Streams: the durable log is MongoDB (a message is stored before it is
acknowledged or published), so the bus only has to be fast, and every gap it leaves (a
publish lost in a reconnect, a replica dead between storing and publishing) is filled from
MongoDB by the hub's seq check and the periodic counter sync. Streams would store every
message a second time, need trimming, and make each process block-read one key per room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

import redis.asyncio as aioredis
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind
from redis.asyncio.client import PubSub

from mesh.telemetry import exemplar
from services.chat.hub import RoomHub
from services.chat.metrics import FANOUT_LATENCY, FANOUT_MESSAGES, ROOMS
from services.chat.protocol import text_frame
from services.chat.store import ChatStore

log = logging.getLogger("services.chat.bus")

HUB_LINGER_SECONDS: Final = 10.0
CONFIRM_TIMEOUT_SECONDS: Final = 5.0
RECONNECT_MAX_DELAY: Final = 5.0
PUBLISH_TIMEOUT_SECONDS: Final = 0.5
_tracer = trace.get_tracer("services.chat.bus")


def message_header(seq: int, published_us: int, context: trace.SpanContext | None) -> bytes:
    """The head of a message envelope (before the space and the message's JSON)."""
    head = b"m%d,%d" % (seq, published_us)
    if context is not None and context.is_valid:
        head += b",00-%032x-%016x-%02x" % (context.trace_id, context.span_id, context.trace_flags)
    return head


def parse_message_header(head: bytes) -> tuple[int, int | None, Link | None]:
    """(seq, published µs or None, link to the sender's span or None) of an envelope head
    (without its ``m``); an old-style head is just the seq."""
    parts = head.split(b",", 2)
    seq = int(parts[0])
    published = int(parts[1]) if len(parts) > 1 else None
    link = None
    if len(parts) > 2:
        carrier = {"traceparent": parts[2].decode("ascii", "replace")}
        context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
        link = Link(context) if context.is_valid else None
    return seq, published, link


class FanoutBus:
    def __init__(
        self,
        redis: aioredis.Redis,
        store: ChatStore,
        namespace: str,
        gap_timeout: float,
        buffer_limit: int,
        gate: asyncio.Semaphore,
    ) -> None:
        self._redis = redis
        self._gate = gate
        self._store = store
        self._prefix = f"{namespace}chat:room:"
        self._prefix_bytes = self._prefix.encode()
        self._control = f"{namespace}chat:control"
        self._gap_timeout = gap_timeout
        self._buffer_limit = buffer_limit
        self._hubs: dict[str, RoomHub] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._confirmations: dict[bytes, asyncio.Future[None]] = {}
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._publishing: set[asyncio.Task[None]] = set()
        self.healthy = False

    @property
    def hubs(self) -> dict[str, RoomHub]:
        return self._hubs

    def channel(self, room: str) -> str:
        return self._prefix + room

    async def start(self) -> None:
        await self._connect()
        self._reader = asyncio.create_task(self._read(), name="chat-bus-reader")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for task in list(self._retiring):
            task.cancel()
        if self._publishing:  # let stored messages reach the other replicas now if they can
            await asyncio.wait(list(self._publishing), timeout=PUBLISH_TIMEOUT_SECONDS)
            for task in list(self._publishing):
                task.cancel()
        for hub in self._hubs.values():
            hub.close()
        ROOMS.dec(len(self._hubs))
        self._hubs.clear()
        if self._pubsub is not None:
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        self.healthy = False

    # Hubs.

    async def hub(self, room: str) -> RoomHub:
        """The room's hub, subscribed and initialized (made on the first call)."""
        hub = self._hubs.get(room)
        if hub is not None:
            await asyncio.shield(hub.ready)
            return hub
        hub = RoomHub(room, self._store, self._gap_timeout, self._buffer_limit, self._hub_empty)
        channel = self.channel(room)
        try:
            async with self._lock:
                if room not in self._hubs:
                    ROOMS.inc()
                self._hubs[room] = hub
                confirmed = self._expect(channel)
                assert self._pubsub is not None
                await self._pubsub.subscribe(channel)
            await asyncio.wait_for(asyncio.shield(confirmed), CONFIRM_TIMEOUT_SECONDS)
            await hub.initialize()
        except BaseException as exc:
            self._abandon(hub, exc)
            raise
        hub.ready.set_result(None)
        return hub

    def _abandon(self, hub: RoomHub, exc: BaseException) -> None:
        """A hub that could not start: joiners waiting on it fail, the next join retries."""
        if not hub.ready.done():
            error = exc if isinstance(exc, Exception) else RuntimeError("hub start cancelled")
            hub.ready.set_exception(error)
            hub.ready.exception()  # retrieved: the joiners waiting on it see it themselves
        if self._hubs.get(hub.room) is hub:
            del self._hubs[hub.room]
            ROOMS.dec()
        hub.close()
        task = asyncio.create_task(self._unsubscribe_unless_used(hub.room))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _unsubscribe_unless_used(self, room: str) -> None:
        async with self._lock:
            if room in self._hubs or self._pubsub is None:
                return
            with contextlib.suppress(Exception):
                await self._pubsub.unsubscribe(self.channel(room))

    def _expect(self, channel: str) -> asyncio.Future[None]:
        key = channel.encode()
        future = self._confirmations.get(key)
        if future is None or future.done():
            future = asyncio.get_running_loop().create_future()
            self._confirmations[key] = future
        return future

    def _hub_empty(self, hub: RoomHub) -> None:
        if hub.linger is None and not hub.closed:
            loop = asyncio.get_running_loop()
            hub.linger = loop.call_later(HUB_LINGER_SECONDS, self._retire_soon, hub)

    def _retire_soon(self, hub: RoomHub) -> None:
        hub.linger = None
        task = asyncio.create_task(self._retire(hub))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, hub: RoomHub) -> None:
        if not hub.empty or self._hubs.get(hub.room) is not hub:
            return
        del self._hubs[hub.room]
        ROOMS.dec()
        hub.close()
        await self._unsubscribe_unless_used(hub.room)

    # Publishing (any pooled connection: only subscribing needs the dedicated one).

    async def _publish(self, room: str, data: bytes) -> None:
        """Publish, or fail within `PUBLISH_TIMEOUT_SECONDS`: a command waiting on a silent
        Redis would hold up the connection's next frames (its commands run in order) for
        the whole outage. What is not published is delivered from MongoDB by the hubs."""
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS), self._gate:
            await self._redis.publish(self.channel(room), data)

    async def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        """Publish a stored message, with the current span's trace context."""
        context = trace.get_current_span().get_span_context()
        head = message_header(seq, time.time_ns() // 1000, context)
        await self._publish(room, b"%s %s" % (head, payload))

    def publish_stored(self, room: str, seq: int, payload: bytes, hole: int | None) -> None:
        """Publish a stored, acknowledged message (after the `hole` seq it skipped, if any) in
        the background: the sender's next frames never wait on Redis. The hubs release in seq
        order whatever order publishes land in, and fill what never lands from MongoDB."""
        task = asyncio.create_task(self._publish_stored(room, seq, payload, hole))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish_stored(self, room: str, seq: int, payload: bytes, hole: int | None) -> None:
        try:
            if hole is not None:
                await self.publish_hole(room, hole)
            await self.publish_message(room, seq, payload)
        except Exception:  # stored and acknowledged: the hubs' counter sync delivers it
            log.warning("publishing seq %d of room %s failed", seq, room, exc_info=True)

    async def publish_hole(self, room: str, seq: int) -> None:
        await self._publish(room, b"s%d" % seq)

    async def publish_presence(self, room: str, payload: bytes, skip_user: str = "") -> None:
        """A presence frame, not sent to `skip_user` (the joiner: its `joined` says it)."""
        await self._publish(room, b"p%s %s" % (skip_user.encode(), payload))

    async def publish_typing(self, room: str, user_id: str, payload: bytes) -> None:
        await self._publish(room, b"t%s %s" % (user_id.encode(), payload))

    # Sync: the counters say which seqs exist, whatever pub/sub delivered.

    async def sync(self) -> None:
        rooms = [room for room, hub in self._hubs.items() if hub.ready.done()]
        if not rooms:
            return
        counters = await self._store.counters(rooms)
        for room, seq in counters.items():
            hub = self._hubs.get(room)
            if hub is not None and hub.ready.done() and not hub.ready.exception():
                hub.note_top(seq)

    # The subscription.

    async def _connect(self) -> None:
        pubsub = self._redis.pubsub()
        self._pubsub = pubsub
        channels = [self._control, *(self.channel(room) for room in self._hubs)]
        confirmations = [self._expect(channel) for channel in channels]
        await pubsub.subscribe(*channels)
        # The reader is not running yet: read the confirmations here.
        pending = {c.encode() for c in channels}
        while pending:
            message = await pubsub.get_message(timeout=CONFIRM_TIMEOUT_SECONDS)
            if message is None:
                raise TimeoutError("Redis did not confirm the subscriptions")
            self._dispatch(message)
            if message["type"] == "subscribe":
                pending.discard(message["channel"])
        del confirmations
        self.healthy = True

    async def _read(self) -> None:
        delay = 0.1
        while True:
            try:
                assert self._pubsub is not None
                message = await self._pubsub.get_message(timeout=None)
                if message is not None:
                    self._dispatch(message)
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                self.healthy = False
                log.warning("the Redis subscription failed; reconnecting", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY)
                await self._reconnect()

    async def _reconnect(self) -> None:
        async with self._lock:
            old = self._pubsub
            self._pubsub = None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.aclose()  # type: ignore[no-untyped-call]
            try:
                await self._connect()
            except Exception:
                log.warning("resubscribing failed", exc_info=True)
                self._pubsub = self._redis.pubsub()
                return
        log.info("the Redis subscription is back: syncing %d rooms", len(self._hubs))
        with contextlib.suppress(Exception):
            await self.sync()

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel: bytes = message["channel"]
        if kind == "subscribe":
            future = self._confirmations.pop(channel, None)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind != "message" or not channel.startswith(self._prefix_bytes):
            return
        hub = self._hubs.get(channel[len(self._prefix_bytes) :].decode())
        if hub is None or hub.closed:
            return
        data: bytes = message["data"]
        try:
            self._deliver(hub, data)
        except Exception:
            log.exception("bad envelope on %s: %r", channel, data[:80])

    @staticmethod
    def _deliver(hub: RoomHub, data: bytes) -> None:
        tag = data[:1]
        if tag == b"m":
            space = data.index(b" ")
            seq, published, link = parse_message_header(data[1:space])
            FANOUT_MESSAGES.inc()
            with _tracer.start_as_current_span(
                "chat deliver",
                context=Context(),  # a trace per replica, linked to the sender's
                kind=SpanKind.CONSUMER,
                links=(link,) if link is not None else (),
                attributes={
                    "messaging.system": "redis",
                    "messaging.operation.type": "process",
                    "chat.room": hub.room,
                    "chat.seq": seq,
                    "chat.subscribers": hub.subscribers,
                },
            ) as span:
                hub.on_message(seq, text_frame(data[space + 1 :]))
            if published is not None:
                latency = max(0.0, time.time() - published / 1_000_000)
                FANOUT_LATENCY.observe(latency, exemplar(span))
        elif tag == b"s":
            hub.on_message(int(data[1:]), None)
        elif tag == b"p" or tag == b"t":
            space = data.index(b" ")
            hub.broadcast(text_frame(data[space + 1 :]), skip_user=data[1:space].decode() or None)
