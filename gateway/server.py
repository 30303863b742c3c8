"""Composition root of the gateway process."""

from __future__ import annotations

import functools

from gateway.app import create_app
from gateway.settings import GatewaySettings
from mesh.common import CommonSettings
from mesh.lifecycle import Lifecycle
from mesh.web import serve_http


async def serve(
    common: CommonSettings,
    settings: GatewaySettings,
    lifecycle: Lifecycle,
    *,
    reuse_port: bool = False,
) -> None:
    # A client that goes away cancels its handler, and with it the upstream call.
    await serve_http(
        common, lifecycle, create_app(settings), reuse_port=reuse_port, handler_cancellation=True
    )


serve_worker = functools.partial(serve, reuse_port=True)
"""One of `--workers` processes: the gateway on ports it shares with the other workers."""
