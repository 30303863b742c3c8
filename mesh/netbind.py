"""Binding listening sockets with errors that name the variable behind the port."""

from __future__ import annotations

import errno
import functools
import random
import socket
from pathlib import Path

from aiohttp import web


class StartupError(Exception):
    """The process cannot start; the message is one line naming the cause.

    `fatal` errors (a port taken, a bad setting) are not worth restarting the process for.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


def port_in_use(variable: str, host: str, port: int) -> StartupError:
    return StartupError(f"{variable}: port {port} on {host} is already in use", fatal=True)


async def bind_site(
    runner: web.AppRunner, host: str, port: int, variable: str, *, reuse_port: bool = False
) -> web.TCPSite:
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise port_in_use(variable, host, port) from None
        raise StartupError(
            f"{variable}: cannot listen on {host}:{port}: {exc.strerror}", fatal=True
        ) from None
    return site


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_is_free(host: str, port: int) -> bool:
    """True when a server could listen on `host:port` right now.

    The probe sets SO_REUSEADDR, as the servers themselves do, so connections still in
    TIME_WAIT after a quick restart do not count as "in use"; a listener or a bound socket does.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PICK_SPAN = 12_000
_handed_out: set[int] = set()


@functools.cache
def _ephemeral_low() -> int | None:
    """The lowest port the kernel hands to outgoing connections, when it says."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _bindable(host: str, port: int) -> bool:
    # No SO_REUSEADDR: a port with a connection in TIME_WAIT is not offered either.
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now, for tests and benchmarks that start servers on it.

    The port comes from just below the kernel's ephemeral range, so an outgoing connection
    (a client's local port) cannot take it between this call and the server's bind, and no
    port is handed out twice by one process.
    """
    low = _ephemeral_low()
    if low is not None and low - _PICK_SPAN > 1024:
        for _ in range(400):
            port = random.randrange(low - _PICK_SPAN, low)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        chosen: int = probe.getsockname()[1]
    _handed_out.add(chosen)
    return chosen


def netloc(host: str, port: int) -> str:
    """`host:port` for a URL, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
