"""What one chat process runs besides its HTTP server: connections and their upkeep.

`ChatRuntime` owns the live connections, the fan-out bus, the shared Redis state, and three
timers: keepalive (a ping every ``ping_seconds``, a connection silent for
``idle_timeout_seconds`` is dropped - one sweep for all connections, no timer per
connection), presence and connection-slot refresh (every third of the presence TTL), and
the counter sync that lets hubs notice a message pub/sub never delivered.

On shutdown (`close_all`) new handshakes are refused, then connections are closed with 1012
(service restart) in batches, each after its command in flight has been answered, so every
acknowledged message is stored and clients reconnect elsewhere and resume with ``since``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Final

import redis.asyncio as aioredis

from mesh.auth.tokens import TokenVerifier
from services.chat.bus import FanoutBus
from services.chat.connection import Connection
from services.chat.metrics import SERVER_CLOSES
from services.chat.presence import SharedState
from services.chat.protocol import PING_FRAME, presence_frame
from services.chat.service import ChatService
from services.chat.settings import ChatSettings
from services.chat.store import ChatStore

log = logging.getLogger("services.chat")

SERVICE_RESTART: Final = 1012
GOING_AWAY: Final = 1001
# Redis commands in flight at once (the client's pool holds 100 connections, one of them
# the subscription): more wait their turn instead of failing.
REDIS_CONCURRENCY: Final = 64


class ChatRuntime:
    def __init__(
        self,
        settings: ChatSettings,
        store: ChatStore,
        redis: aioredis.Redis,
        verifier: TokenVerifier,
        instance: str,
    ) -> None:
        namespace = settings.stores.namespace
        gate = asyncio.Semaphore(REDIS_CONCURRENCY)
        self.settings = settings
        self.store = store
        self.service = ChatService(store)
        self.verifier = verifier
        self.bus = FanoutBus(
            redis,
            store,
            namespace,
            settings.gap_timeout_seconds,
            buffer_limit=settings.replay_limit * 2 + 1000,
            gate=gate,
        )
        self.shared = SharedState(redis, namespace, instance, settings.presence_ttl_seconds, gate)
        self.connections: set[Connection] = set()
        self.accepting = True
        self._here: dict[tuple[str, str], int] = {}  # (room, user) -> connections here
        self._tasks: list[asyncio.Task[None]] = []
        self._closing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.store.ensure_indexes()
        await self.bus.start()
        settings = self.settings
        self._tasks = [
            self._every(min(1.0, settings.ping_seconds / 5), self._keepalive, "keepalive"),
            self._every(settings.presence_ttl_seconds / 3, self._refresh, "presence"),
            self._every(settings.sync_interval_seconds, self.bus.sync, "sync"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=self.settings.close_timeout_seconds)
        for room, user_id in list(self._here):  # left over if a handler was cancelled
            with contextlib.suppress(Exception):
                await self.shared.exit(room, user_id)
        self._here.clear()
        await self.bus.stop()

    def _every(
        self, seconds: float, job: Callable[[], Awaitable[None]], name: str
    ) -> asyncio.Task[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(seconds)
                try:
                    await job()
                except Exception:
                    log.warning("chat %s job failed", name, exc_info=True)

        return asyncio.create_task(loop(), name=f"chat-{name}")

    # Closing connections.

    def close_soon(self, connection: Connection, code: int, reason: str) -> None:
        if connection.closing:
            return
        connection.closing = True
        SERVER_CLOSES.labels(str(code)).inc()
        task = asyncio.create_task(self._close(connection, code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, connection: Connection, code: int, reason: str) -> None:
        """Send the close frame and wait for the answer; a peer that does not read is cut."""
        try:
            await asyncio.wait_for(
                connection.ws.close(code=code, message=reason.encode()[:120]),
                self.settings.close_timeout_seconds,
            )
        except (TimeoutError, Exception):
            connection.transport.abort()

    async def close_all(
        self, code: int = SERVICE_RESTART, reason: str = "server restarting"
    ) -> None:
        """Refuse new connections, then close the open ones in batches."""
        self.accepting = False
        connections = list(self.connections)
        size = self.settings.shutdown_batch_size
        if connections:
            log.info("closing %d connections with %d", len(connections), code)
        for start in range(0, len(connections), size):
            if start:
                await asyncio.sleep(self.settings.shutdown_batch_pause_seconds)
            batch = connections[start : start + size]
            await asyncio.gather(*(self._close_after_work(c, code, reason) for c in batch))

    async def _close_after_work(self, connection: Connection, code: int, reason: str) -> None:
        connection.draining = True
        await connection.wait_idle(self.settings.close_timeout_seconds)
        if not connection.closing:
            connection.closing = True
            SERVER_CLOSES.labels(str(code)).inc()
            await self._close(connection, code, reason)

    # Presence of local connections.

    async def presence_enter(self, room: str, user_id: str) -> list[str]:
        """Count a connection of `user_id` in `room`; announce the user if new; who is here."""
        key = (room, user_id)
        self._here[key] = self._here.get(key, 0) + 1
        entered = await self.shared.enter(room, user_id)
        if entered.gone:
            await self.bus.publish_presence(room, presence_frame(room, [], entered.gone))
        if entered.joined:
            frame = presence_frame(room, [user_id], [])
            await self.bus.publish_presence(room, frame, skip_user=user_id)
        return entered.present

    async def presence_exit(self, room: str, user_id: str) -> None:
        key = (room, user_id)
        count = self._here.get(key, 0) - 1
        if count > 0:
            self._here[key] = count
            return
        self._here.pop(key, None)
        if await self.shared.exit(room, user_id):
            await self.bus.publish_presence(room, presence_frame(room, [], [user_id]))

    async def _refresh(self) -> None:
        by_room: dict[str, list[str]] = defaultdict(list)
        for room, user_id in self._here:
            by_room[room].append(user_id)
        for room, users in by_room.items():
            refreshed = await self.shared.refresh(room, users)
            if refreshed.back or refreshed.gone:
                frame = presence_frame(room, refreshed.back, refreshed.gone)
                await self.bus.publish_presence(room, frame)
        await self.shared.refresh_slots([(c.user_id, c.id) for c in self.connections])

    # Keepalive.

    async def _keepalive(self) -> None:
        now = time.monotonic()
        idle_limit = self.settings.idle_timeout_seconds
        ping_every = self.settings.ping_seconds
        for connection in list(self.connections):
            if connection.closing:
                continue
            if now - connection.last_seen > idle_limit:
                self.close_soon(connection, GOING_AWAY, "no answer to pings: idle timeout")
            elif now - connection.last_ping >= ping_every:
                connection.last_ping = now
                connection.write(PING_FRAME)
