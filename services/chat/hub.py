"""A room as one chat process sees it: its local subscribers and its messages in seq order.

Messages reach a hub from the fan-out bus (Redis pub/sub), which does not promise order
across replicas: two replicas store seq 7 and 8 of a room at the same moment and their
publishes can arrive 8 first. The hub therefore *releases* messages strictly in seq order:

- ``released`` is the last seq delivered (or stepped over: a hole, see `ChatStore`).
- A message above ``released + 1`` waits in ``pending``; when the missing seq does not
  arrive within a moment (its publish was lost, or the sender died between storing and
  publishing), the hub reads the stored seqs from MongoDB and releases those; a seq that is
  still absent after ``gap_timeout`` (allocated by a sender that died before storing) is
  stepped over with a warning.
- ``top`` is the highest seq known to exist; the bus raises it from the room's counter on a
  timer and after a Redis reconnect, so a message that was never published is still
  delivered.

A joining connection is attached in *catching* state at the current ``released`` (its
``lastSeq``): frames for it are buffered while its backlog is replayed from MongoDB, then
flushed (skipping seqs it already has), and it goes *live*. Live delivery writes the same
frame bytes to every connection, in one loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from services.chat.connection import TRY_AGAIN_LATER, Connection
from services.chat.metrics import DELIVERIES, SEQS_SKIPPED
from services.chat.protocol import message_frame, text_frame
from services.chat.store import ChatStore, StoredMessage

log = logging.getLogger("services.chat.hub")

TAIL_WINDOW: Final = 256  # seqs checked for in-flight writes when a hub starts
FILL_BATCH: Final = 500
FILL_FIRST_DELAY: Final = 0.05
FILL_MAX_DELAY: Final = 1.0
NOT_A_MESSAGE: Final = 0  # the seq of buffered presence/typing frames


def framed_message(message: StoredMessage) -> bytes:
    return text_frame(
        message_frame(
            message.room, message.seq, message.id, message.user_id, message.text, message.ts,
            message.client_msg_id,
        )
    )  # fmt: skip


class _Catching:
    __slots__ = ("buffer", "floor")

    def __init__(self) -> None:
        self.buffer: list[tuple[int, bytes]] | None = []
        self.floor = 0


class RoomHub:
    def __init__(
        self,
        room: str,
        store: ChatStore,
        gap_timeout: float,
        buffer_limit: int,
        on_empty: Callable[[RoomHub], None],
    ) -> None:
        self.room = room
        self.released = 0
        self.top = 0
        self.live: set[Connection] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.linger: asyncio.TimerHandle | None = None
        self.closed = False
        self._store = store
        self._gap_timeout = gap_timeout
        self._buffer_limit = buffer_limit
        self._on_empty = on_empty
        self._initialized = False
        self._pending: dict[int, bytes | None] = {}
        self._catching: dict[Connection, _Catching] = {}
        self._gap_since: float | None = None
        self._fill_task: asyncio.Task[None] | None = None

    @property
    def empty(self) -> bool:
        return not self.live and not self._catching

    @property
    def subscribers(self) -> int:
        return len(self.live) + len(self._catching)

    async def initialize(self) -> None:
        """Find ``released`` once subscribed: the room's last seq below any write in flight."""
        counter = (await self._store.counters([self.room])).get(self.room, 0)
        base = max(0, counter - TAIL_WINDOW)
        stored = await self._store.stored_seqs(self.room, base) if counter else set()
        released = counter
        for seq in range(base + 1, counter + 1):
            if seq not in stored:
                released = seq - 1
                break
        self.released = released
        self.top = max(self.top, counter)
        for seq in [s for s in self._pending if s <= released]:
            del self._pending[seq]
        self._initialized = True
        self._drain()

    # Input from the bus.

    def on_message(self, seq: int, frame: bytes | None) -> None:
        """A stored message (its frame) or a hole (None) arrived for `seq`."""
        if seq <= self.released and self._initialized:
            return
        self._pending.setdefault(seq, frame)
        if seq > self.top:
            self.top = seq
        if self._initialized:
            self._drain()

    def note_top(self, seq: int) -> None:
        """The room's counter says seqs up to `seq` exist (or are being written)."""
        if seq > self.top:
            self.top = seq
            if self._initialized:
                self._drain()

    def broadcast(self, frame: bytes, skip_user: str | None = None) -> None:
        """A frame outside the seq order (presence, typing) to every subscriber."""
        for connection in self.live:
            if connection.user_id != skip_user:
                connection.write(frame)
        for connection, catching in self._catching.items():
            if connection.user_id == skip_user:
                continue
            if catching.buffer is None:
                connection.write(frame)
            else:
                self._buffer(connection, catching.buffer, NOT_A_MESSAGE, frame)

    # Subscribers.

    def attach(self, connection: Connection) -> int:
        """Subscribe `connection` in catching state; returns the seq its backlog ends at."""
        self._catching[connection] = _Catching()
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        return self.released

    def go_live(self, connection: Connection, floor: int) -> None:
        """Flush what was buffered for `connection` above seq `floor`, then deliver live."""
        catching = self._catching.get(connection)
        if catching is None or catching.buffer is None:
            return
        buffered, catching.buffer = catching.buffer, None
        for seq, frame in buffered:
            if seq == NOT_A_MESSAGE or seq > floor:
                connection.write(frame)
                floor = max(floor, seq)
        catching.floor = floor
        if self.released >= floor:
            del self._catching[connection]
            self.live.add(connection)

    def detach(self, connection: Connection) -> None:
        self.live.discard(connection)
        self._catching.pop(connection, None)
        if self.empty:
            self._on_empty(self)

    def close(self) -> None:
        self.closed = True
        if self.linger is not None:
            self.linger.cancel()
        if self._fill_task is not None:
            self._fill_task.cancel()

    # Ordering.

    def _buffer(
        self, connection: Connection, buffer: list[tuple[int, bytes]], seq: int, frame: bytes
    ) -> None:
        if len(buffer) >= self._buffer_limit:
            connection.close_soon(TRY_AGAIN_LATER, "too far behind the room")
            return
        buffer.append((seq, frame))

    def _release(self, seq: int, frame: bytes | None) -> None:
        self.released = seq
        if frame is None:
            return
        for connection in self.live:
            connection.write(frame)
        DELIVERIES.inc(len(self.live))
        if self._catching:
            promoted = []
            for connection, catching in self._catching.items():
                if catching.buffer is not None:
                    self._buffer(connection, catching.buffer, seq, frame)
                elif seq > catching.floor:
                    connection.write(frame)
                    promoted.append(connection)
            for connection in promoted:
                del self._catching[connection]
                self.live.add(connection)

    def _advance(self) -> bool:
        """Release every pending seq that is next in line; True if any was released."""
        advanced = False
        pending = self._pending
        while pending:
            following = self.released + 1
            if following not in pending:
                break
            self._release(following, pending.pop(following))
            advanced = True
        return advanced

    def _drain(self) -> None:
        if self._advance():
            self._gap_since = None
        if self.released >= self.top:
            self._gap_since = None
            return
        if self._gap_since is None:
            self._gap_since = time.monotonic()
        if self._fill_task is None and not self.closed:
            self._fill_task = asyncio.create_task(self._fill(), name=f"chat-fill-{self.room}")

    async def _fill(self) -> None:
        """Close a gap from MongoDB, stepping over a seq that never gets stored."""
        delay = FILL_FIRST_DELAY
        try:
            while self.released < self.top and not self.closed:
                await asyncio.sleep(delay)
                if self.released >= self.top:
                    break
                try:
                    entries = await self._store.window(
                        self.room, self.released, self.top, FILL_BATCH
                    )
                except Exception:
                    log.warning("reading room %s from MongoDB failed", self.room, exc_info=True)
                    delay = min(delay * 2, FILL_MAX_DELAY)
                    continue
                for entry in entries:
                    if entry.seq > self.released and entry.seq not in self._pending:
                        frame = None if entry.message is None else framed_message(entry.message)
                        self._pending[entry.seq] = frame
                if self._advance():
                    self._gap_since = time.monotonic()
                    delay = FILL_FIRST_DELAY
                    continue
                since = self._gap_since or time.monotonic()
                if time.monotonic() - since >= self._gap_timeout:
                    log.warning(
                        "room %s: seq %d was allocated but never stored; stepping over it",
                        self.room,
                        self.released + 1,
                    )
                    SEQS_SKIPPED.inc()
                    self._pending[self.released + 1] = None
                    self._advance()
                    self._gap_since = time.monotonic()
                    delay = FILL_FIRST_DELAY
                    continue
                delay = min(delay * 2, FILL_MAX_DELAY)
        finally:
            self._fill_task = None
            if self.released >= self.top:
                self._gap_since = None
