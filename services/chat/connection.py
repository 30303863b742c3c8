"""One client WebSocket as the chat service sees it: who, which rooms, and how to write to it.

Writes go straight to the socket's transport as ready-made frames (`protocol.text_frame`),
never awaited: a fan-out writes the same bytes to every connection in one loop, and one slow
reader cannot hold the loop up. The transport's write buffer is the connection's send
queue, bounded by ``send_buffer_bytes``; a write that finds it fuller than that closes the
connection with 1013 (try again later) instead of buffering more.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web

from services.chat.metrics import SEND_QUEUE_DROPS
from services.chat.protocol import text_frame

if TYPE_CHECKING:
    from services.chat.hub import RoomHub

TRY_AGAIN_LATER: Final = 1013
Closer = Callable[["Connection", int, str], None]


class Connection:
    __slots__ = (
        "_closer",
        "_idle_waiter",
        "busy",
        "closing",
        "draining",
        "id",
        "last_ping",
        "last_seen",
        "limit",
        "rooms",
        "strikes",
        "tokens",
        "tokens_at",
        "transport",
        "typing_at",
        "user_id",
        "verified",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        user_id: str,
        connection_id: str,
        send_buffer_bytes: int,
        burst: int,
        now: float,
        closer: Closer,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.user_id = user_id
        self.id = connection_id
        self.limit = send_buffer_bytes
        self.rooms: dict[str, RoomHub] = {}
        self.last_seen = now
        self.last_ping = now
        self.tokens = float(burst)
        self.tokens_at = now
        self.strikes = 0
        self.typing_at: dict[str, float] | None = None
        self.verified: set[str] | None = None  # rooms whose membership was checked
        self.closing = False  # no more writes: a close is under way
        self.draining = False  # no more commands: the server is shutting down
        self.busy = False
        self._idle_waiter: asyncio.Future[None] | None = None
        self._closer = closer

    def write(self, frame: bytes) -> bool:
        """Queue one complete frame; False (and a 1013 close) when the queue is full."""
        if self.closing:
            return False
        transport = self.transport
        if transport.is_closing():
            return False
        if transport.get_write_buffer_size() > self.limit:
            SEND_QUEUE_DROPS.inc()
            self.close_soon(TRY_AGAIN_LATER, "send queue full: the client reads too slowly")
            return False
        transport.write(frame)
        return True

    def reply(self, payload: bytes) -> bool:
        return self.write(text_frame(payload))

    def queued_bytes(self) -> int:
        return self.transport.get_write_buffer_size()

    def close_soon(self, code: int, reason: str) -> None:
        """Close with `code` in the background (the caller never waits on a slow peer)."""
        self._closer(self, code, reason)

    def allow(self, now: float, rate: float, burst: int) -> bool:
        """Token bucket: `rate` frames per second, `burst` at once.

        ``strikes`` counts frames refused since the bucket was last full, so a client that
        keeps flooding (and so never lets it refill) is told, then closed.
        """
        tokens = min(float(burst), self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if tokens >= burst:
            self.strikes = 0
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    # In-flight work, so that a shutdown closes a connection between two commands.

    def start_work(self) -> None:
        self.busy = True

    def end_work(self) -> None:
        self.busy = False
        waiter = self._idle_waiter
        if waiter is not None:
            self._idle_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait_idle(self, timeout: float) -> None:
        if not self.busy:
            return
        if self._idle_waiter is None:
            self._idle_waiter = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._idle_waiter), timeout)
