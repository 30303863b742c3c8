"""free_port: ports for test servers that no outgoing connection can take first."""

from __future__ import annotations

import socket
from pathlib import Path

from mesh.netbind import free_port


def _ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_ports_come_from_below_the_ephemeral_range_and_are_never_repeated() -> None:
    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(1024 < port < low for port in ports), sorted(ports)[-5:]


def test_the_port_can_be_bound_right_away() -> None:
    port = free_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert server.getsockname()[1] == port
