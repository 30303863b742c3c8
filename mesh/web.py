"""Serving an aiohttp app as a mesh process (the gateway, chat).

The app gets the observability middleware in front, is served without an access log on
the hot path, next to the ops server; on a stop request readiness goes false, the listener
closes, in-flight requests get the grace period and WebSockets are closed by the app's
`on_shutdown` handlers.
"""

from __future__ import annotations

import logging

from aiohttp import web

from mesh.common import CommonSettings
from mesh.http_observability import observability_middleware
from mesh.lifecycle import Lifecycle
from mesh.netbind import bind_site
from mesh.ops import ops_server

log = logging.getLogger("mesh.web")
MAX_REQUEST_LINE_BYTES = 16 * 1024


async def serve_http(
    settings: CommonSettings,
    lifecycle: Lifecycle,
    app: web.Application,
    *,
    reuse_port: bool = False,
) -> None:
    app.middlewares.insert(0, observability_middleware)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.grace_seconds,
        # Room for long query strings (a search `q` of 10,000 characters gets the API's own
        # 400 naming the parameter, not the HTTP parser's plain-text one).
        max_line_size=MAX_REQUEST_LINE_BYTES,
    )
    async with ops_server(settings, lifecycle):
        await runner.setup()
        try:
            await bind_site(
                runner, settings.host, settings.port, settings.port_var, reuse_port=reuse_port
            )
            lifecycle.mark_ready()
            log.info(
                "serving HTTP on %s:%s",
                settings.host,
                settings.port,
                extra={"ops_port": settings.ops_port},
            )
            await lifecycle.wait_for_stop()
        finally:
            await runner.cleanup()
            log.info("HTTP server stopped")
