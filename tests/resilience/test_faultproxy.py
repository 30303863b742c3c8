"""The fault proxy itself, against a real echo server over TCP: each toxic does what it says."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.resilience.faultproxy import (
    Bandwidth,
    BlackHole,
    Direction,
    FaultProxy,
    Latency,
    LimitData,
    ProxyHost,
    ResetPeer,
    SlowClose,
)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture(scope="module")
def host() -> Iterator[ProxyHost]:
    proxies = ProxyHost()
    yield proxies
    proxies.close()


@pytest.fixture
async def proxy(host: ProxyHost) -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = host.proxy("echo", f"127.0.0.1:{port}")
    yield proxy
    proxy.clear()
    server.close()


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _round_trip(proxy: FaultProxy, payload: bytes = b"ping") -> tuple[bytes, float]:
    reader, writer = await _connect(proxy)
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    data = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
    elapsed = time.monotonic() - started
    writer.close()
    return data, elapsed


async def _read_until_cut(reader: asyncio.StreamReader, into: bytearray) -> None:
    while chunk := await asyncio.wait_for(reader.read(65536), 5):
        into += chunk
    raise asyncio.IncompleteReadError(bytes(into), None)


async def test_without_toxics_bytes_pass_both_ways(proxy: FaultProxy) -> None:
    data, _ = await _round_trip(proxy, b"x" * 200_000)
    assert data == b"x" * 200_000
    assert proxy.stats.bytes_up == proxy.stats.bytes_down == 200_000


async def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    with proxy.toxic(Latency(150, jitter_ms=20)):
        _, slow = await _round_trip(proxy)
    _, fast = await _round_trip(proxy)
    assert slow >= 0.26, slow  # 2 x (150 - 20) ms
    assert fast < 0.1, fast
    with proxy.toxic(Latency(150, direction=Direction.UPSTREAM)):
        _, one_way = await _round_trip(proxy)
    assert 0.13 <= one_way < 0.28, one_way


async def test_bandwidth_caps_the_rate(proxy: FaultProxy) -> None:
    with proxy.toxic(Bandwidth(400_000, direction=Direction.DOWNSTREAM)):
        data, elapsed = await _round_trip(proxy, b"y" * 200_000)
    assert data == b"y" * 200_000
    assert elapsed >= 0.45, elapsed


async def test_black_hole_holds_data_until_it_heals(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    with proxy.toxic(BlackHole()):
        writer.write(b"held")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(10), 0.5)
    writer.write(b"next")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(8), 5) == b"heldnext"
    writer.close()


async def test_reset_peer_resets_open_and_new_connections(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    writer.write(b"a")
    await writer.drain()
    assert await reader.readexactly(1) == b"a"
    with proxy.toxic(ResetPeer()):
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await _round_trip(proxy, b"b")
    assert proxy.stats.resets >= 2
    data, _ = await _round_trip(proxy)
    assert data == b"ping"


async def test_limit_data_cuts_the_connection(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    with proxy.toxic(LimitData(1000, direction=Direction.DOWNSTREAM)):
        writer.write(b"z" * 5000)
        await writer.drain()
        received = bytearray()
        with pytest.raises(asyncio.IncompleteReadError):
            await _read_until_cut(reader, received)
    assert len(received) == 1000


async def test_slow_close_delays_the_end_of_the_stream(proxy: FaultProxy) -> None:
    reader, writer = await _connect(proxy)
    with proxy.toxic(SlowClose(400)):
        started = time.monotonic()
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        elapsed = time.monotonic() - started
    assert elapsed >= 0.35, elapsed
    writer.close()


async def test_a_target_that_is_down_looks_like_a_reset(host: ProxyHost) -> None:
    proxy = host.proxy("nowhere", "127.0.0.1:1")
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await _round_trip(proxy)
