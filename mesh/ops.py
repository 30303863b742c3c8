"""The ops HTTP server every process runs on its own port.

`/metrics` (Prometheus), `/health/live`, `/health/ready` (false while starting, when a
dependency check fails, and from the moment a stop is requested), `/health/startup`,
`/version`. It is not traced and keeps no access log.

Metrics of several processes: when ``PROMETHEUS_MULTIPROC_DIR`` is set (the gateway's
``--workers`` parent sets it for its workers; prometheus_client reads it at import), every
process writes its samples to files there and `/metrics`, answered by whichever process
gets the scrape, is the aggregate of all of them (`MultiProcessCollector`): counters and
histograms summed, gauges as their ``multiprocess_mode`` says (see `mesh.metrics`).
Multiprocess mode has no exemplars and no custom collectors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from mesh.common import CommonSettings
from mesh.lifecycle import Lifecycle
from mesh.netbind import bind_site
from mesh.settings import Env

MULTIPROC_DIR_VAR: Final = "PROMETHEUS_MULTIPROC_DIR"
RunnerFactory = Callable[[web.Application], web.AppRunner]


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


def metrics_registry() -> CollectorRegistry:
    """What `/metrics` exposes: this process's registry, or every worker's files."""
    directory = Env().raw(MULTIPROC_DIR_VAR)  # read once at start, as prometheus_client does
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def create_ops_app(settings: CommonSettings, lifecycle: Lifecycle) -> web.Application:
    registry = metrics_registry()

    async def metrics(request: web.Request) -> web.Response:
        # OpenMetrics when the scraper asks for it (Prometheus does): only it carries exemplars.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        response = web.Response(body=encode(registry))
        response.headers["Content-Type"] = content_type
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


def _plain_runner(app: web.Application) -> web.AppRunner:
    return web.AppRunner(app, access_log=None, handle_signals=False)


@asynccontextmanager
async def ops_server(
    settings: CommonSettings,
    lifecycle: Lifecycle,
    *,
    reuse_port: bool = False,
    make_runner: RunnerFactory = _plain_runner,
) -> AsyncIterator[None]:
    """The ops server on the ops port while the block runs.

    `reuse_port`: several processes share the port (each answers for the whole group, see
    above); `make_runner`: how the app is served (`mesh.web` gives a request-head timeout).
    """
    runner = make_runner(create_ops_app(settings, lifecycle))
    await runner.setup()
    try:
        await bind_site(
            runner, settings.host, settings.ops_port, settings.ops_port_var, reuse_port=reuse_port
        )
        yield
    finally:
        await runner.cleanup()
