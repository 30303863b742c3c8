"""Port errors of the embedded backing services (the port helpers live in mesh.netbind)."""

from __future__ import annotations

from mesh.netbind import free_port, netloc, port_is_free

__all__ = ["PortInUse", "free_port", "netloc", "port_is_free"]


class PortInUse(Exception):
    """The port an embedded server needs is already taken by another process."""

    def __init__(self, name: str, host: str, port: int) -> None:
        super().__init__(f"embedded {name}: port {port} on {host} is already in use")
        self.name = name
        self.host = host
        self.port = port
