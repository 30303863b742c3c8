"""``GET /ws/chat``: the handshake checks, then one connection's frames, one at a time.

Before the upgrade: a foreign ``Origin`` is 403, missing or bad credentials 401 (the token
is verified here again: chat never trusts the gateway's word), a user with too many
connections 429, a stopping process 503 - all as problems. After it, frames are read and
handled in order (so the client's own frames never race each other); limits apply per
connection: the token bucket, the text length, the frame size (aiohttp closes with 1009),
binary frames (1003), the rooms joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from socket import SO_SNDBUF, SOL_SOCKET
from typing import Final

from aiohttp import WSMsgType, hdrs, web
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from mesh.auth.handshake import (
    BEARER_PROTOCOL,
    handshake_credentials,
    offered_protocols,
    origin_allowed,
)
from mesh.auth.identity import Caller
from mesh.auth.tokens import InvalidToken
from mesh.problem import ProblemError
from services.chat import protocol
from services.chat.connection import TRY_AGAIN_LATER, Connection
from services.chat.hub import framed_message
from services.chat.keys import RUNTIME
from services.chat.metrics import CONNECTIONS, MESSAGES_STORED
from services.chat.protocol import (
    PONG,
    Join,
    Leave,
    Ping,
    ProtocolError,
    Send,
    Typing,
    ack_frame,
    error_frame,
    joined_frame,
    message_frame,
    parse_command,
    typing_frame,
)
from services.chat.runtime import ChatRuntime
from services.chat.service import ChatError
from services.chat.store import StoredMessage

log = logging.getLogger("services.chat.session")

UNSUPPORTED_DATA: Final = 1003
POLICY_VIOLATION: Final = 1008
REPLAY_DRAIN_POLL: Final = 0.005
SPAN_NAMES: Final[dict[type[protocol.Command], str]] = {
    Send: "chat send",
    Join: "chat join",
    Leave: "chat leave",
    Typing: "chat typing",
}
_tracer = trace.get_tracer("services.chat.session")


async def authenticate_handshake(request: web.Request, runtime: ChatRuntime) -> tuple[Caller, bool]:
    """The verified caller, and whether to answer with the ``bearer`` subprotocol."""
    if not origin_allowed(request.headers.get(hdrs.ORIGIN), runtime.settings.allowed_origins):
        raise ProblemError(403, "This page's Origin may not open a chat WebSocket.")
    credentials = handshake_credentials(
        request.headers.get(hdrs.AUTHORIZATION),
        offered_protocols(request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL)),
    )
    if credentials.token is None:
        raise ProblemError(401, credentials.problem, headers={hdrs.WWW_AUTHENTICATE: "Bearer"})
    try:
        caller = await runtime.verifier.verify(credentials.token)
    except InvalidToken as exc:
        raise ProblemError(
            401, str(exc), headers={hdrs.WWW_AUTHENTICATE: 'Bearer error="invalid_token"'}
        ) from None
    return caller, credentials.subprotocol is not None


async def websocket(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME]
    settings = runtime.settings
    if not runtime.accepting:
        raise ProblemError(503, "This chat replica is shutting down.", headers={"Retry-After": "1"})
    caller, bearer = await authenticate_handshake(request, runtime)
    ws = web.WebSocketResponse(
        protocols=(BEARER_PROTOCOL,) if bearer else (),
        autoping=False,  # pongs are read here: any frame counts as a sign of life
        compress=False,  # frames are written pre-framed and uncompressed
        max_msg_size=settings.max_frame_bytes,
        timeout=settings.close_timeout_seconds,
        decode_text=False,
    )
    if not ws.can_prepare(request).ok:
        raise ProblemError(400, "Expected a WebSocket handshake.")
    connection_id = uuid.uuid4().hex
    try:
        slot = await runtime.shared.acquire_slot(
            caller.user_id, connection_id, settings.max_connections_per_user
        )
    except Exception:
        log.warning("connection slots unavailable", exc_info=True)
        raise ProblemError(503, "Chat cannot accept connections right now.") from None
    if not slot:
        raise ProblemError(
            429,
            f"At most {settings.max_connections_per_user} chat connections per user.",
            headers={"Retry-After": "5"},
        )
    try:
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        if settings.socket_send_buffer_bytes:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(SOL_SOCKET, SO_SNDBUF, settings.socket_send_buffer_bytes)
        connection = Connection(
            ws,
            transport,
            caller.user_id,
            connection_id,
            settings.send_buffer_bytes,
            settings.rate_burst,
            time.monotonic(),
            runtime.close_soon,
        )
        runtime.connections.add(connection)
        CONNECTIONS.inc()
        try:
            await Session(runtime, connection).run()
        finally:
            runtime.connections.discard(connection)
            CONNECTIONS.dec()
            await _leave_everything(runtime, connection)
    finally:
        with contextlib.suppress(Exception):
            await runtime.shared.release_slot(caller.user_id, connection_id)
    return ws


async def _leave_everything(runtime: ChatRuntime, connection: Connection) -> None:
    rooms, connection.rooms = connection.rooms, {}
    for room, hub in rooms.items():
        hub.detach(connection)
        try:
            await runtime.presence_exit(room, connection.user_id)
        except Exception:
            log.warning("presence exit failed for room %s", room, exc_info=True)


class Session:
    """One connection's frames. Each command is a span of its own trace (``chat send``,
    ``chat join``...) linked to the connection's span (the handshake request's, which lasts
    as long as the socket): a connection's hours of traffic never make one endless trace."""

    __slots__ = ("connection", "links", "runtime", "settings")

    def __init__(self, runtime: ChatRuntime, connection: Connection) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.connection = connection
        handshake = trace.get_current_span().get_span_context()
        self.links = (Link(handshake),) if handshake.is_valid else ()

    async def run(self) -> None:
        connection = self.connection
        ws = connection.ws
        settings = self.settings
        while True:
            message = await ws.receive()
            now = time.monotonic()
            connection.last_seen = now
            kind = message.type
            if kind is WSMsgType.TEXT:
                if connection.draining:
                    continue  # unanswered: the client resends after reconnecting
                if not connection.allow(now, settings.rate_per_second, settings.rate_burst):
                    self._flooded()
                    continue
                try:
                    command = parse_command(message.data, settings.max_text_chars)
                except ProtocolError as exc:
                    connection.reply(error_frame(exc.code, str(exc), exc.ref))
                    continue
                connection.start_work()
                try:
                    await self.traced(command)
                finally:
                    connection.end_work()
            elif kind is WSMsgType.PING:
                await ws.pong(message.data)
            elif kind is WSMsgType.PONG:
                continue
            elif kind is WSMsgType.BINARY:
                connection.reply(
                    error_frame(protocol.BINARY_FRAME, "only JSON text frames are accepted")
                )
                connection.close_soon(UNSUPPORTED_DATA, "text frames only")
            else:  # CLOSE, CLOSING, CLOSED, ERROR (a frame over the size limit: 1009)
                return

    def _flooded(self) -> None:
        connection = self.connection
        connection.strikes += 1
        settings = self.settings
        connection.reply(
            error_frame(
                protocol.RATE_LIMITED,
                f"at most {settings.rate_per_second:g} frames per second (bursts of "
                f"{settings.rate_burst}): this frame was dropped",
            )
        )
        if connection.strikes >= settings.flood_close_after:
            connection.close_soon(POLICY_VIOLATION, "message rate limit exceeded")

    async def traced(self, command: protocol.Command) -> None:
        """`handle` in a span of its own trace (a ping needs none)."""
        name = SPAN_NAMES.get(type(command))
        if name is None:
            await self.handle(command)
            return
        with _tracer.start_as_current_span(
            name,
            context=Context(),
            kind=SpanKind.SERVER,
            links=self.links,
            attributes={"chat.room": getattr(command, "room", "")},
        ):
            await self.handle(command)

    async def handle(self, command: protocol.Command) -> None:
        if isinstance(command, Send):
            await self.send(command)
        elif isinstance(command, Ping):
            self.connection.reply(PONG)
        elif isinstance(command, Join):
            await self.join(command)
        elif isinstance(command, Leave):
            await self.leave(command)
        elif isinstance(command, Typing):
            await self.typing(command)

    def _error(self, code: str, message: str, ref: str | None) -> None:
        if code == protocol.UNAVAILABLE:  # our fault, not the client's: an error trace
            trace.get_current_span().set_status(Status(StatusCode.ERROR, code))
        self.connection.reply(error_frame(code, message, ref))

    async def join(self, command: Join) -> None:
        connection, runtime, room = self.connection, self.runtime, command.room
        if room in connection.rooms:
            await self._leave_room(room)  # a join again starts over from its `since`
        if len(connection.rooms) >= self.settings.max_rooms_per_connection:
            limit = self.settings.max_rooms_per_connection
            self._error(protocol.TOO_MANY_ROOMS, f"at most {limit} rooms per connection", room)
            return
        try:
            await runtime.service.enter(connection.user_id, room)
            hub = await runtime.bus.hub(room)
        except ChatError as exc:
            self._error(exc.code, exc.message, room)
            return
        except Exception:
            log.warning("join of room %s failed", room, exc_info=True)
            self._error(protocol.UNAVAILABLE, "the room cannot be joined right now", room)
            return
        last = hub.attach(connection)
        connection.rooms[room] = hub
        try:
            present = await runtime.presence_enter(room, connection.user_id)
            backlog, recovered = await self._backlog(room, command.since, last)
        except Exception:
            log.warning("join of room %s failed", room, exc_info=True)
            await self._leave_room(room)
            self._error(protocol.UNAVAILABLE, "the room cannot be joined right now", room)
            return
        connection.reply(joined_frame(room, last, present, recovered))
        for message in backlog:
            if not connection.write(framed_message(message)):
                return
            if connection.queued_bytes() > connection.limit // 2:
                await self._drained()
        hub.go_live(connection, max(last, command.since or 0))

    async def _backlog(
        self, room: str, since: int | None, last: int
    ) -> tuple[list[StoredMessage], bool | None]:
        if since is None:
            return [], None
        if since >= last:
            return [], True
        limit = self.settings.replay_limit
        backlog = await self.runtime.store.after(room, since, last, limit + 1)
        if len(backlog) > limit:
            return [], False  # too far behind: the client pages the history over REST
        return backlog, True

    async def _drained(self) -> None:
        """Wait for the socket to take a replay's frames (a replay is not a slow reader)."""
        connection = self.connection
        deadline = time.monotonic() + self.settings.idle_timeout_seconds
        while connection.queued_bytes() > connection.limit // 4 and not connection.closing:
            if time.monotonic() > deadline:
                connection.close_soon(TRY_AGAIN_LATER, "the client reads too slowly")
                return
            await asyncio.sleep(REPLAY_DRAIN_POLL)

    async def leave(self, command: Leave) -> None:
        if command.room not in self.connection.rooms:
            self._error(protocol.NOT_JOINED, "you have not joined this room", command.room)
            return
        await self._leave_room(command.room)

    async def _leave_room(self, room: str) -> None:
        hub = self.connection.rooms.pop(room, None)
        if hub is None:
            return
        hub.detach(self.connection)
        try:
            await self.runtime.presence_exit(room, self.connection.user_id)
        except Exception:
            log.warning("presence exit failed for room %s", room, exc_info=True)

    async def send(self, command: Send) -> None:
        connection, runtime, room = self.connection, self.runtime, command.room
        ref = command.client_msg_id
        if room not in connection.rooms and (
            connection.verified is None or room not in connection.verified
        ):
            try:
                await runtime.service.require_member(connection.user_id, room)
            except ChatError as exc:
                self._error(exc.code, exc.message, ref)
                return
            except Exception:
                log.warning("membership check failed", exc_info=True)
                self._error(protocol.UNAVAILABLE, "the message was not stored: retry", ref)
                return
            if connection.verified is None:
                connection.verified = set()
            connection.verified.add(room)
        try:
            result = await runtime.service.send(connection.user_id, room, ref, command.text)
        except Exception:
            log.warning("storing a message failed", exc_info=True)
            self._error(protocol.UNAVAILABLE, "the message was not stored: retry", ref)
            return
        stored = result.message
        if not result.duplicate:
            MESSAGES_STORED.inc()
        connection.reply(ack_frame(ref, stored.seq, stored.id))
        payload = message_frame(
            room, stored.seq, stored.id, stored.user_id, stored.text, stored.ts,
            stored.client_msg_id,
        )  # fmt: skip
        runtime.bus.publish_stored(room, stored.seq, payload, result.hole)

    async def typing(self, command: Typing) -> None:
        connection, room = self.connection, command.room
        if room not in connection.rooms:
            self._error(protocol.NOT_JOINED, "join the room before typing in it", room)
            return
        interval = self.settings.typing_interval_seconds
        now = time.monotonic()
        if connection.typing_at is None:
            connection.typing_at = {}
        last = connection.typing_at.get(room)
        if last is not None and now - last < interval:
            return
        connection.typing_at[room] = now
        runtime = self.runtime
        try:
            if await runtime.shared.typing_allowed(room, connection.user_id, interval):
                frame = typing_frame(room, connection.user_id)
                await runtime.bus.publish_typing(room, connection.user_id, frame)
        except Exception:
            log.warning("typing in room %s failed", room, exc_info=True)
