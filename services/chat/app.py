"""The chat aiohttp app: the WebSocket endpoint, the REST routes, the runtime's lifetime.

The runtime (connections, fan-out, presence) starts with the app (a cleanup context) and
stops after it; on shutdown every connection is closed with 1012 (service restart) in
batches, so clients reconnect to another replica and resume with ``since``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from mesh.lifecycle import Lifecycle
from mesh.ops import readiness_handler
from mesh.problem import problem_middleware
from mesh.request_id import echo_request_id, request_id_middleware
from services.chat import api
from services.chat.keys import RUNTIME
from services.chat.runtime import ChatRuntime
from services.chat.session import websocket

WS_PATH = "/ws/chat"
BODY_LIMIT_BYTES = 64 * 1024


async def _run_runtime(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    await runtime.start()
    yield
    await runtime.stop()


async def _close_connections(app: web.Application) -> None:
    await app[RUNTIME].close_all()


def create_app(runtime: ChatRuntime, lifecycle: Lifecycle) -> web.Application:
    app = web.Application(
        middlewares=[request_id_middleware, problem_middleware], client_max_size=BODY_LIMIT_BYTES
    )
    app.on_response_prepare.append(echo_request_id)
    app[RUNTIME] = runtime
    app.router.add_get(WS_PATH, websocket)
    api.add_routes(app.router)
    app.router.add_get("/health/ready", readiness_handler(lifecycle))
    app.cleanup_ctx.append(_run_runtime)
    app.on_shutdown.append(_close_connections)
    return app
