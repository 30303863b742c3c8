"""The request-head timeout of `mesh.web` (slow-loris defence) against raw sockets: a head
dribbled in slower than the timeout is cut with a 408, a silent connection is closed, while
keep-alive clients, slow bodies, slow handlers and pipelining are unaffected. Served by
`serve_http` itself (with the ops server), and by a gateway process from its setting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest_asyncio
from aiohttp import web

from mesh.common import CommonSettings
from mesh.lifecycle import Lifecycle
from mesh.netbind import free_port
from mesh.settings import Env
from mesh.topology import GATEWAY
from mesh.web import HEAD_TIMEOUT_KEY, serve_http
from tests.integration.gateway.test_workers import running_gateway

TIMEOUT = 0.5
SLACK = 1.5  # a loaded machine may run the timer late, never early


@dataclass
class Served:
    port: int
    ops_port: int


async def _hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


async def _echo(request: web.Request) -> web.Response:
    return web.Response(text=str(len(await request.read())))


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(3 * TIMEOUT)
    return web.Response(text="slow")


@pytest_asyncio.fixture(scope="module")
async def served() -> AsyncIterator[Served]:
    port, ops_port = free_port(), free_port()
    common = CommonSettings.from_env(
        Env({GATEWAY.port_var: str(port), GATEWAY.ops_port_var: str(ops_port)}), GATEWAY
    )
    app = web.Application()
    app[HEAD_TIMEOUT_KEY] = TIMEOUT
    app.router.add_get("/hello", _hello)
    app.router.add_post("/echo", _echo)
    app.router.add_get("/slow", _slow)
    lifecycle = Lifecycle()
    serving = asyncio.create_task(serve_http(common, lifecycle, app))
    while not lifecycle.ready:
        assert not serving.done(), serving.exception()
        await asyncio.sleep(0.01)
    try:
        yield Served(port, ops_port)
    finally:
        lifecycle.request_stop()
        await asyncio.wait_for(serving, 10)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def dribble(writer: asyncio.StreamWriter, data: bytes, interval: float) -> None:
    """Send `data` a byte at a time, `interval` apart, until done or the peer closes."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(interval)


async def read_to_close(reader: asyncio.StreamReader, limit: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), limit):
            chunks.append(chunk)
    return b"".join(chunks)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await asyncio.wait_for(reader.readexactly(length), 10)


SLOW_HEAD = b"GET /hello HTTP/1.1\r\nHost: mesh\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"


async def assert_cut_for_slowness(port: int, timeout: float) -> None:
    reader, writer = await connect(port)
    started = time.monotonic()
    sender = asyncio.create_task(dribble(writer, SLOW_HEAD, timeout / 5))  # never idle long
    try:
        answer = await read_to_close(reader)
        elapsed = time.monotonic() - started
    finally:
        sender.cancel()
        writer.close()
    assert timeout * 0.9 <= elapsed <= timeout + SLACK, elapsed
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
    assert b"Connection: close" in head
    problem = orjson.loads(body)
    assert (problem["status"], problem["title"]) == (408, "Request Timeout")


async def test_a_head_dribbled_slower_than_the_timeout_is_cut(served: Served) -> None:
    await assert_cut_for_slowness(served.port, TIMEOUT)


async def test_a_silent_connection_is_closed_after_the_timeout(served: Served) -> None:
    reader, writer = await connect(served.port)
    started = time.monotonic()
    answer = await read_to_close(reader)
    elapsed = time.monotonic() - started
    writer.close()
    assert answer == b""  # nothing was asked, nothing is answered
    assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT + SLACK


async def test_the_ops_server_has_the_timeout_too(served: Served) -> None:
    await assert_cut_for_slowness(served.ops_port, TIMEOUT)


async def test_a_keep_alive_connection_may_idle_longer_than_the_timeout(served: Served) -> None:
    reader, writer = await connect(served.port)
    try:
        for _ in range(2):
            writer.write(b"GET /hello HTTP/1.1\r\nHost: mesh\r\n\r\n")
            assert await read_response(reader) == (200, b"hello")
            await asyncio.sleep(3 * TIMEOUT)  # idle between requests: the keep-alive timeout's
        writer.write(b"GET /hello HTTP/1.1\r\nHost: mesh\r\n\r\n")
        assert await read_response(reader) == (200, b"hello")  # the same connection
    finally:
        writer.close()


async def test_the_next_heads_timer_starts_with_its_first_byte(served: Served) -> None:
    reader, writer = await connect(served.port)
    try:
        writer.write(b"GET /hello HTTP/1.1\r\nHost: mesh\r\n\r\n")
        assert await read_response(reader) == (200, b"hello")
        await asyncio.sleep(2 * TIMEOUT)
        started = time.monotonic()
        sender = asyncio.create_task(dribble(writer, SLOW_HEAD, TIMEOUT / 5))
        answer = await read_to_close(reader)
        elapsed = time.monotonic() - started
        sender.cancel()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT + SLACK, elapsed


async def test_a_slow_body_after_a_complete_head_is_not_cut(served: Served) -> None:
    reader, writer = await connect(served.port)
    try:
        writer.write(b"POST /echo HTTP/1.1\r\nHost: mesh\r\nContent-Length: 12\r\n\r\n")
        await dribble(writer, b"0123456789ab", TIMEOUT / 4)  # 1.5 s > the timeout
        assert await read_response(reader) == (200, b"12")
    finally:
        writer.close()


async def test_a_slow_handler_is_not_cut(served: Served) -> None:
    reader, writer = await connect(served.port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: mesh\r\n\r\n")
        assert await read_response(reader) == (200, b"slow")
    finally:
        writer.close()


async def test_pipelined_requests_are_all_answered(served: Served) -> None:
    reader, writer = await connect(served.port)
    try:
        writer.write(
            b"GET /slow HTTP/1.1\r\nHost: mesh\r\n\r\n"
            + b"GET /hello HTTP/1.1\r\nHost: mesh\r\n\r\n"
        )
        assert await read_response(reader) == (200, b"slow")  # the second head waited 1.5 s
        assert await read_response(reader) == (200, b"hello")
    finally:
        writer.close()


async def test_a_gateway_process_cuts_slow_heads_after_its_setting(tmp_path: Path) -> None:
    async with running_gateway(
        tmp_path, MESH_GATEWAY_WORKERS="1", MESH_GATEWAY_HEADER_TIMEOUT_SECONDS="1"
    ) as gateway:
        await assert_cut_for_slowness(gateway.port, 1.0)
        reader, writer = await connect(gateway.port)
        writer.write(b"HEAD /openapi.json HTTP/1.1\r\nHost: mesh\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.close()
        assert head.startswith(b"HTTP/1.1 200 ")
