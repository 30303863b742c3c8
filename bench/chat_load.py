"""Chat load clients for the nothing-lost check: send, reconnect with `since`, resend, verify.

Used by bench/chat_nothing_lost.py (20 clients x 500 messages) and, in a bounded form, by
tests/integration/services/test_chat_replicas.py. Each client:

- joins the shared room and keeps ``last_seq``, the seq of the last message it saw;
- sends its messages with a window of unacknowledged ones, each with a fixed clientMsgId;
- on any disconnect (1012 from a stopping replica, a refused connection...) reconnects to
  the next URL, joins with ``since=last_seq`` and resends every message not yet acked (the
  server's idempotency makes the retries safe);
- records every ``message`` seq it receives, so the caller can check that each client saw
  every stored message exactly once and in order, and every ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, WebSocketException


@dataclass
class LoadResult:
    acked: dict[tuple[str, str], int] = field(default_factory=dict)  # (user, clientMsgId) -> seq
    seen: list[list[int]] = field(default_factory=list)  # per client, in arrival order
    reconnects: int = 0
    restarted: bool = False
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)  # send -> ack, seconds


class _Client:
    def __init__(
        self,
        index: int,
        user_id: str,
        token: str,
        room: str,
        messages: int,
        window: int,
        shared: _Shared,
    ) -> None:
        self.index = index
        self.user_id = user_id
        self.token = token
        self.room = room
        self.messages = messages
        self.window = window
        self.shared = shared
        self.next = 0
        self.unacked: dict[str, float] = {}  # clientMsgId -> first send time
        self.acked: dict[str, int] = {}
        self.seen: list[int] = []
        self.last_seq = 0
        self.reconnects = 0
        self.latencies: list[float] = []

    def _frame(self, client_msg_id: str) -> str:
        return orjson.dumps(
            {
                "type": "send",
                "room": self.room,
                "clientMsgId": client_msg_id,
                "text": f"client {self.index} says {client_msg_id}",
            }
        ).decode()

    async def run(self) -> None:
        attempt = 0
        while True:
            urls = self.shared.urls()
            url = urls[(self.index + attempt) % len(urls)]
            try:
                async with connect(
                    url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    ping_interval=None,
                    open_timeout=5,
                    close_timeout=1,
                    max_queue=None,
                ) as ws:
                    if await self._session(ws):
                        return
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException):
                pass
            self.reconnects += 1
            attempt += 1
            await asyncio.sleep(0.05)

    async def _session(self, ws: ClientConnection) -> bool:
        join: dict[str, Any] = {"type": "join", "room": self.room, "since": self.last_seq}
        await ws.send(orjson.dumps(join).decode())
        joined = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        while joined["type"] != "joined":
            if joined["type"] == "error":
                raise AssertionError(f"join refused: {joined}")
            joined = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if joined.get("recovered") is False:
            raise AssertionError(f"client {self.index}: replay over the cap")
        for client_msg_id in list(self.unacked):  # resend what may not have been stored
            await ws.send(self._frame(client_msg_id))
        await self._fill(ws)
        while True:
            if self._finished():
                return True
            try:
                data = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            frame = orjson.loads(data)
            kind = frame["type"]
            if kind == "message":
                self.seen.append(frame["seq"])
                self.last_seq = max(self.last_seq, frame["seq"])
            elif kind == "ack":
                client_msg_id = frame["clientMsgId"]
                sent = self.unacked.pop(client_msg_id, None)
                if sent is not None:
                    self.latencies.append(time.perf_counter() - sent)
                self.acked[client_msg_id] = frame["seq"]
                self.shared.note_ack(frame["seq"])
                await self._fill(ws)
            elif kind == "error" and frame.get("ref") in self.unacked:
                await asyncio.sleep(0.05)
                await ws.send(self._frame(frame["ref"]))

    async def _fill(self, ws: ClientConnection) -> None:
        while self.next < self.messages and len(self.unacked) < self.window:
            client_msg_id = f"c{self.index}-{self.next}"
            self.next += 1
            self.unacked[client_msg_id] = time.perf_counter()
            await ws.send(self._frame(client_msg_id))
        if self.next >= self.messages and not self.unacked:
            self.shared.client_done(self.index)

    def _finished(self) -> bool:
        target = self.shared.target()
        return target is not None and self.last_seq >= target


class _Shared:
    def __init__(self, clients: int, urls: Callable[[], Sequence[str]]) -> None:
        self._clients = clients
        self._done_ids: set[int] = set()
        self._max_seq = 0
        self._acks = 0
        self.urls = lambda: list(urls())
        self.progress = asyncio.Event()

    def note_ack(self, seq: int) -> None:
        self._max_seq = max(self._max_seq, seq)
        self._acks += 1
        self.progress.set()

    @property
    def acks(self) -> int:
        return self._acks

    def client_done(self, index: int) -> None:
        self._done_ids.add(index)

    def target(self) -> int | None:
        """The last seq every client must reach, once every client has all its acks."""
        return self._max_seq if len(self._done_ids) >= self._clients else None


async def run_load(
    users: Sequence[tuple[str, str]],
    room: str,
    urls: Callable[[], Sequence[str]],
    *,
    messages: int,
    window: int = 10,
    restart: Callable[[], Awaitable[None]] | None = None,
    restart_after: float = 0.5,
    timeout: float = 120.0,
) -> LoadResult:
    """`users` (id, token) each send `messages` to `room` (empty at the start: a client's
    first join is `since=0`, so it sees every message whenever it joins); `restart` runs once
    `restart_after` of all the messages are acked."""
    shared = _Shared(len(users), urls)
    clients = [
        _Client(i, user_id, token, room, messages, window, shared)
        for i, (user_id, token) in enumerate(users)
    ]
    result = LoadResult()
    started = time.perf_counter()
    tasks = [asyncio.create_task(c.run()) for c in clients]
    try:
        async with asyncio.timeout(timeout):
            if restart is not None:
                total = len(users) * messages
                while shared.acks < restart_after * total:
                    shared.progress.clear()
                    await shared.progress.wait()
                await restart()
                result.restarted = True
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
    result.elapsed = time.perf_counter() - started
    for c in clients:
        result.acked.update({(c.user_id, k): v for k, v in c.acked.items()})
        result.seen.append(c.seen)
        result.reconnects += c.reconnects
        result.latencies.extend(c.latencies)
    return result
