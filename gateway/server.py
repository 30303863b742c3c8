"""Composition root of the gateway process."""

from __future__ import annotations

from gateway.app import create_app
from gateway.settings import GatewaySettings
from mesh.common import CommonSettings
from mesh.lifecycle import Lifecycle
from mesh.web import serve_http


async def serve(common: CommonSettings, settings: GatewaySettings, lifecycle: Lifecycle) -> None:
    await serve_http(common, lifecycle, create_app(settings))
