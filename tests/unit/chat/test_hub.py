"""A room hub releases messages in seq order, whatever order they arrive in, and catches a
joining connection up without a gap or a duplicate."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

from services.chat.connection import Connection
from services.chat.hub import RoomHub, framed_message
from services.chat.store import ChatStore, StoredMessage, WindowEntry


def message(seq: int) -> StoredMessage:
    return StoredMessage("r", seq, f"id{seq}", "u", f"c{seq}", f"t{seq}", datetime.now(UTC))


class FakeStore:
    """What the hub reads: the counter, the stored seqs, a window of them."""

    def __init__(self, counter: int = 0, stored: Sequence[int] = (), holes: Sequence[int] = ()):
        self.counter = counter
        self.stored = {s: message(s) for s in stored}
        self.holes = set(holes)

    async def counters(self, rooms: Sequence[str]) -> dict[str, int]:
        return {"r": self.counter} if self.counter else {}

    async def stored_seqs(self, room: str, after: int) -> set[int]:
        return {s for s in (*self.stored, *self.holes) if s > after}

    async def window(self, room: str, after: int, upto: int, limit: int) -> list[WindowEntry]:
        seqs = sorted(s for s in (*self.stored, *self.holes) if after < s <= upto)[:limit]
        return [WindowEntry(s, self.stored.get(s)) for s in seqs]


class FakeConnection:
    def __init__(self, user_id: str = "u") -> None:
        self.user_id = user_id
        self.frames: list[bytes] = []
        self.closed: int | None = None

    def write(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    def close_soon(self, code: int, reason: str) -> None:
        self.closed = code

    def seqs(self) -> list[int]:
        seqs = []
        for frame in self.frames:
            text = frame.decode(errors="replace")
            if '"type":"message"' in text:
                seqs.append(int(text.split('"seq":')[1].split(",")[0]))
        return seqs


async def hub_for(store: FakeStore, gap_timeout: float = 0.3, buffer: int = 100) -> RoomHub:
    hub = RoomHub("r", cast(ChatStore, store), gap_timeout, buffer, lambda _: None)
    await hub.initialize()
    return hub


def live(hub: RoomHub, user: str = "u") -> FakeConnection:
    connection = FakeConnection(user)
    last = hub.attach(cast(Connection, connection))
    hub.go_live(cast(Connection, connection), last)
    return connection


async def test_out_of_order_arrivals_are_released_in_order() -> None:
    hub = await hub_for(FakeStore())
    connection = live(hub)
    for seq in (2, 3, 1, 5, 4):
        hub.on_message(seq, framed_message(message(seq)))
    hub.on_message(3, framed_message(message(3)))  # a duplicate publish
    assert connection.seqs() == [1, 2, 3, 4, 5]
    assert hub.released == 5


async def test_a_hole_is_stepped_over_at_once() -> None:
    hub = await hub_for(FakeStore())
    connection = live(hub)
    hub.on_message(2, framed_message(message(2)))
    hub.on_message(1, None)  # seq 1 was allocated by a retry and never used
    assert connection.seqs() == [2]


async def test_a_lost_publish_is_read_from_the_store() -> None:
    store = FakeStore(counter=0)
    hub = await hub_for(store)
    connection = live(hub)
    store.stored[1] = message(1)  # stored, but its publish never arrives
    hub.on_message(2, framed_message(message(2)))
    await asyncio.sleep(0.2)
    assert connection.seqs() == [1, 2]


async def test_a_seq_never_stored_is_skipped_after_the_gap_timeout() -> None:
    hub = await hub_for(FakeStore(), gap_timeout=0.2)
    connection = live(hub)
    hub.on_message(2, framed_message(message(2)))
    await asyncio.sleep(0.1)
    assert connection.seqs() == []
    await asyncio.sleep(0.6)
    assert connection.seqs() == [2]


async def test_the_counter_sync_delivers_a_message_never_published() -> None:
    store = FakeStore()
    hub = await hub_for(store)
    connection = live(hub)
    store.stored[1] = message(1)
    store.counter = 1
    hub.note_top(1)
    await asyncio.sleep(0.2)
    assert connection.seqs() == [1]


async def test_a_new_hub_starts_below_a_write_in_flight() -> None:
    # seqs 1-3 stored, 4 allocated but not yet stored, 5 stored: start at 3.
    store = FakeStore(counter=5, stored=[1, 2, 3, 5])
    hub = await hub_for(store, gap_timeout=5)
    assert hub.released == 3
    connection = live(hub)
    hub.on_message(4, framed_message(message(4)))  # its publish, after it is stored
    await asyncio.sleep(0.2)
    assert connection.seqs() == [4, 5]


async def test_catching_up_buffers_then_skips_what_the_replay_sent() -> None:
    hub = await hub_for(FakeStore(counter=2, stored=[1, 2]))
    connection = FakeConnection()
    last = hub.attach(cast(Connection, connection))
    assert last == 2
    hub.on_message(3, framed_message(message(3)))
    hub.broadcast(b"presence")
    assert connection.frames == []  # buffered while the backlog is replayed
    hub.go_live(cast(Connection, connection), 2)
    assert connection.seqs() == [3]
    assert connection.frames[-1] == b"presence"
    hub.on_message(4, framed_message(message(4)))
    assert connection.seqs() == [3, 4]


async def test_a_client_ahead_of_the_hub_gets_nothing_twice() -> None:
    hub = await hub_for(FakeStore(counter=2, stored=[1, 2]))
    connection = FakeConnection()
    hub.attach(cast(Connection, connection))
    hub.go_live(cast(Connection, connection), 4)  # it saw up to 4 on another replica
    for seq in (3, 4, 5):
        hub.on_message(seq, framed_message(message(seq)))
    assert connection.seqs() == [5]
    assert connection in hub.live


async def test_typing_skips_the_typist_and_a_full_buffer_closes_1013() -> None:
    hub = await hub_for(FakeStore(), buffer=2)
    typist, other = live(hub, "a"), live(hub, "b")
    hub.broadcast(b"typing", skip_user="a")
    assert (typist.frames, other.frames) == ([], [b"typing"])
    slow = FakeConnection()
    hub.attach(cast(Connection, slow))
    for seq in (1, 2, 3):
        hub.on_message(seq, framed_message(message(seq)))
    assert slow.closed == 1013
