"""The chat aiohttp app: the WebSocket endpoint and its connection registry.

This is the skeleton the chat issue builds on: it accepts connections on `/ws/chat`,
answers `ping`, reports malformed frames with an `error` frame, and on shutdown closes
every connection with 1012 (service restart) so clients reconnect elsewhere.
"""

from __future__ import annotations

import logging
import weakref

from aiohttp import WSCloseCode, WSMsgType, web

from mesh.lifecycle import Lifecycle
from mesh.ops import readiness_handler
from mesh.problem import problem_middleware
from mesh.request_id import echo_request_id, request_id_middleware
from services.chat.protocol import PONG, ProtocolError, decode_frame, error_frame
from services.chat.settings import ChatSettings

_Connections = weakref.WeakSet[web.WebSocketResponse]
CONNECTIONS: web.AppKey[_Connections] = web.AppKey("connections")
SETTINGS = web.AppKey("settings", ChatSettings)
log = logging.getLogger("services.chat")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat_seconds, max_msg_size=settings.max_frame_bytes
    )
    await ws.prepare(request)
    request.app[CONNECTIONS].add(ws)
    async for message in ws:
        if message.type is WSMsgType.BINARY:
            await ws.send_str(error_frame("binary_frame", "only text frames are accepted"))
            await ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=b"text frames only")
            break
        if message.type is not WSMsgType.TEXT:
            continue
        try:
            frame = decode_frame(message.data)
        except ProtocolError as exc:
            await ws.send_str(error_frame(exc.code, str(exc)))
            continue
        if frame["type"] == "ping":
            await ws.send_str(PONG)
        else:
            await ws.send_str(
                error_frame("unknown_type", f"unknown frame type {frame['type'][:40]!r}")
            )
    return ws


async def _close_connections(app: web.Application) -> None:
    connections: _Connections = app[CONNECTIONS]
    for ws in list(connections):
        await ws.close(code=WSCloseCode.SERVICE_RESTART, message=b"server restarting")


def create_app(settings: ChatSettings, lifecycle: Lifecycle) -> web.Application:
    app = web.Application(middlewares=[request_id_middleware, problem_middleware])
    app.on_response_prepare.append(echo_request_id)
    app[SETTINGS] = settings
    app[CONNECTIONS] = _Connections()
    app.router.add_get("/ws/chat", websocket)
    app.router.add_get("/health/ready", readiness_handler(lifecycle))
    app.on_shutdown.append(_close_connections)
    return app
