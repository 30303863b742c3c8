"""A TCP fault proxy for the resilience suite: Toxiproxy's toxics, in-process, over asyncio.

Each `FaultProxy` listens on a free local port and forwards every connection to its target.
Toxics change what passes, while connections are open and for new ones:

- `Latency(ms, jitter_ms)`: every chunk waits ms ± jitter before it is passed on.
- `Bandwidth(bytes_per_second)`: chunks are passed on no faster than that.
- `BlackHole()`: a silent network: nothing passes and connections stay open. Bytes wait in
  the proxy (then in the sender's socket buffers) and pass in order once the toxic is
  removed, as TCP retransmits them after a partition heals; a stream is never cut short.
- `ResetPeer(after_ms)`: open connections, and new ones, are reset (TCP RST) after after_ms.
- `SlowClose(delay_ms)`: a side's close reaches the other side only after the delay.
- `LimitData(bytes)`: a connection is closed once that many bytes have passed it one way.

Every toxic applies to one `Direction` or to both. The proxies run on one event loop in a
thread of their own (`ProxyHost`), so a test that blocks (a subprocess wait, a sync client)
never stalls them, and their controls are thread-safe: `proxy.add(toxic)`,
`proxy.remove(toxic)`, `with proxy.toxic(...)`, `proxy.clear()`, `proxy.reset_all()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import socket
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from mesh.netbind import free_port

T = TypeVar("T")
CHUNK = 64 * 1024


class Direction(enum.Enum):
    UPSTREAM = "upstream"  # client -> target
    DOWNSTREAM = "downstream"  # target -> client
    BOTH = "both"

    def covers(self, direction: Direction) -> bool:
        return self is Direction.BOTH or self is direction


@dataclass(frozen=True)
class Latency:
    ms: float
    jitter_ms: float = 0.0
    direction: Direction = Direction.BOTH


@dataclass(frozen=True)
class Bandwidth:
    bytes_per_second: int
    direction: Direction = Direction.BOTH


@dataclass(frozen=True)
class BlackHole:
    direction: Direction = Direction.BOTH


@dataclass(frozen=True)
class ResetPeer:
    after_ms: float = 0.0


@dataclass(frozen=True)
class SlowClose:
    delay_ms: float


@dataclass(frozen=True)
class LimitData:
    bytes: int
    direction: Direction = Direction.BOTH


Toxic = Latency | Bandwidth | BlackHole | ResetPeer | SlowClose | LimitData


@dataclass
class Stats:
    connections: int = 0  # accepted from clients
    resets: int = 0  # connections reset by a ResetPeer toxic or reset_all()
    bytes_up: int = 0
    bytes_down: int = 0


@dataclass(eq=False)
class _Connection:
    client: asyncio.StreamWriter
    target: asyncio.StreamWriter | None = None
    passed: dict[Direction, int] = field(default_factory=dict)  # bytes per way, for LimitData
    closed: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _hard_reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with RST instead of FIN: SO_LINGER on, timeout 0, then abort."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """One listening port forwarding to `target` ("host:port"), with toxics."""

    def __init__(self, host: ProxyHost, name: str, target: str, port: int) -> None:
        self._host = host
        self.name = name
        self.target = target
        self.port = port
        self.stats = Stats()
        self._toxics: list[Toxic] = []
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        return f"FaultProxy({self.name}: {self.address} -> {self.target}, {self._toxics})"

    # ---- controls (any thread) ----

    def add(self, toxic: Toxic) -> None:
        with self._lock:
            self._toxics.append(toxic)
        if isinstance(toxic, ResetPeer):
            self._host.call(self._reset_later(toxic.after_ms))

    def remove(self, toxic: Toxic) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._toxics.remove(toxic)

    def clear(self) -> None:
        with self._lock:
            self._toxics.clear()

    @contextlib.contextmanager
    def toxic(self, *toxics: Toxic) -> Iterator[None]:
        for t in toxics:
            self.add(t)
        try:
            yield
        finally:
            for t in toxics:
                self.remove(t)

    def reset_all(self) -> int:
        """Reset every open connection now; returns how many there were."""
        count: int = self._host.call(self._reset_now())
        return count

    def open_connections(self) -> int:
        return len(self._connections)

    # ---- on the proxy loop ----

    def _active(self, kind: type[T], direction: Direction | None = None) -> list[T]:
        with self._lock:
            found: list[T] = [t for t in self._toxics if isinstance(t, kind)]
        if direction is not None:
            found = [t for t in found if getattr(t, "direction", Direction.BOTH).covers(direction)]
        return found

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_now()
        if self._server is not None:
            await self._server.wait_closed()

    async def _reset_now(self) -> int:
        connections = list(self._connections)
        for connection in connections:
            self._reset(connection)
        return len(connections)

    async def _reset_later(self, after_ms: float) -> None:
        await asyncio.sleep(after_ms / 1000)
        await self._reset_now()

    def _reset(self, connection: _Connection) -> None:
        if connection.closed:
            return
        connection.closed = True
        self.stats.resets += 1
        _hard_reset(connection.client)
        _hard_reset(connection.target)
        self._connections.discard(connection)

    def _close(self, connection: _Connection) -> None:
        """Close both sides after what was written is flushed (FIN, not RST)."""
        if connection.closed:
            return
        connection.closed = True
        self._connections.discard(connection)
        for writer in (connection.client, connection.target):
            if writer is not None:
                writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        connection = _Connection(writer)
        self._connections.add(connection)
        resets = self._active(ResetPeer)
        if resets:
            await asyncio.sleep(min(t.after_ms for t in resets) / 1000)
            self._reset(connection)
            return
        host, _, port = self.target.rpartition(":")
        try:
            target_reader, target_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            self._reset(connection)  # the target is down: the client sees a reset
            return
        connection.target = target_writer
        if connection.closed:  # reset while connecting
            _hard_reset(target_writer)
            return
        connection.tasks = [
            asyncio.create_task(self._pump(connection, reader, target_writer, Direction.UPSTREAM)),
            asyncio.create_task(
                self._pump(connection, target_reader, writer, Direction.DOWNSTREAM)
            ),
        ]
        await asyncio.gather(*connection.tasks, return_exceptions=True)
        if not connection.closed:
            connection.closed = True
            self._connections.discard(connection)
            for w in (writer, target_writer):
                w.close()

    async def _pump(
        self,
        connection: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        try:
            while not connection.closed:
                data = await reader.read(CHUNK)
                if not data:
                    break
                # Held, not dropped (TCP would retransmit it). Polled: toxics change from
                # other threads, and a 10 ms poll is all the precision a fault needs.
                while self._active(BlackHole, direction) and not connection.closed:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                for latency in self._active(Latency, direction):
                    jitter = random.uniform(-latency.jitter_ms, latency.jitter_ms)
                    await asyncio.sleep(max(0.0, latency.ms + jitter) / 1000)
                limits = self._active(LimitData, direction)
                if limits:
                    room = min(t.bytes for t in limits) - connection.passed.get(direction, 0)
                    if room <= 0:
                        self._close(connection)
                        return
                    data = data[:room]
                connection.passed[direction] = connection.passed.get(direction, 0) + len(data)
                if direction is Direction.UPSTREAM:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                await self._write(writer, data, direction)
                if limits and connection.passed[direction] >= min(t.bytes for t in limits):
                    self._close(connection)
                    return
        except (ConnectionError, OSError):
            self._reset(connection)
            return
        # This side closed: pass the close on (late, with SlowClose).
        slow = self._active(SlowClose)
        if slow:
            await asyncio.sleep(max(t.delay_ms for t in slow) / 1000)
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, direction: Direction) -> None:
        caps = self._active(Bandwidth, direction)
        if not caps:
            writer.write(data)
            await writer.drain()
            return
        rate = min(t.bytes_per_second for t in caps)
        slice_size = max(1, rate // 20)  # 20 slices a second
        for start in range(0, len(data), slice_size):
            piece = data[start : start + slice_size]
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(len(piece) / rate)


class ProxyHost:
    """An event loop in a daemon thread that runs every FaultProxy of a test session."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxies")
        self._thread.daemon = True
        self._thread.start()
        self._proxies: list[FaultProxy] = []

    def call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    def proxy(self, name: str, target: str = "127.0.0.1:1") -> FaultProxy:
        """A started proxy on a free port; `target` ("host:port") may be set later."""
        proxy = FaultProxy(self, name, target, free_port())
        self.call(proxy._start())
        self._proxies.append(proxy)
        return proxy

    def close(self) -> None:
        for proxy in self._proxies:
            self.call(proxy._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def url_through(url: str, proxy: FaultProxy) -> str:
    """`url` (postgresql://, redis://, mongodb://, http://) pointed at the proxy instead."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{proxy.address}" if userinfo else proxy.address
    return urlunsplit(parts._replace(netloc=netloc))


def target_of(url: str) -> str:
    """The "host:port" a URL points at."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"
