"""The ops HTTP server every process runs on its own port.

`/metrics` (Prometheus), `/health/live`, `/health/ready` (false while starting, when a
dependency check fails, and from the moment a stop is requested), `/health/startup`,
`/version`. It is not traced and keeps no access log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from mesh.common import CommonSettings
from mesh.lifecycle import Lifecycle
from mesh.netbind import bind_site


def _json(body: dict[str, object], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def readiness_handler(lifecycle: Lifecycle) -> Handler:
    """`/health/ready`: 200 only when started, not stopping, and every check answers."""

    async def ready(_: web.Request) -> web.StreamResponse:
        if not lifecycle.ready:
            state = "stopping" if lifecycle.stopping else "starting"
            return _json({"status": state}, 503)
        failing = await lifecycle.failing_checks()
        if failing:
            return _json({"status": "not ready", "failing": failing}, 503)
        return _json({"status": "ready"})

    return ready


def create_ops_app(settings: CommonSettings, lifecycle: Lifecycle) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def live(_: web.Request) -> web.Response:
        return _json({"status": "live"})

    async def startup(_: web.Request) -> web.Response:
        return _json(
            {"status": "started"} if lifecycle.started else {"status": "starting"},
            200 if lifecycle.started else 503,
        )

    async def version(_: web.Request) -> web.Response:
        return _json(
            {
                "service": settings.service_name,
                "version": settings.version,
                "environment": settings.environment,
                "instance": settings.instance_id,
            }
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", readiness_handler(lifecycle))
    app.router.add_get("/health/startup", startup)
    app.router.add_get("/version", version)
    return app


@asynccontextmanager
async def ops_server(settings: CommonSettings, lifecycle: Lifecycle) -> AsyncIterator[None]:
    runner = web.AppRunner(
        create_ops_app(settings, lifecycle), access_log=None, handle_signals=False
    )
    await runner.setup()
    try:
        await bind_site(runner, settings.host, settings.ops_port, settings.ops_port_var)
        yield
    finally:
        await runner.cleanup()
