"""The HTTP/JSON + WebSocket gateway in front of the mesh's services."""

from gateway.app import create_app
from gateway.settings import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]
