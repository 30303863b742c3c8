"""gRPC statuses, unreachable upstreams and oversized bodies, as problems over real sockets."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mesh.problem import GRPC_TO_HTTP
from tests.integration.gateway.conftest import BODY_LIMIT, FakeUpstreams, closed_address, serve
from tests.integration.gateway.test_unary import problem

Client = TestClient[web.Request, web.Application]
FAILURES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]
OWN_WORDS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


@pytest.mark.parametrize("code", FAILURES, ids=lambda c: c.name)
async def test_every_grpc_status_maps_to_its_http_status(
    gateway: Client, code: grpc.StatusCode
) -> None:
    response = await gateway.get(f"/api/v1/products/status-{code.name}")
    body = await problem(response, GRPC_TO_HTTP[code])
    if code in OWN_WORDS:
        assert code.name not in body["detail"]  # the gateway's words, naming the upstream
        assert "'catalog'" in body["detail"]
    else:
        assert body["detail"] == f"failed with {code.name}"
    if code is grpc.StatusCode.UNAUTHENTICATED:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    else:
        assert "WWW-Authenticate" not in response.headers


async def test_field_violations_become_errors(gateway: Client) -> None:
    body = await problem(await gateway.get("/api/v1/products/invalid"), 400)
    assert body["detail"] == "id is malformed"
    assert body["errors"] == [{"field": "id", "message": "must be a UUID"}]


async def test_retry_info_becomes_retry_after(gateway: Client) -> None:
    response = await gateway.get("/api/v1/products/busy")
    await problem(response, 429)
    assert response.headers["Retry-After"] == "3"


async def test_an_exception_in_the_service_leaks_nothing(gateway: Client) -> None:
    response = await gateway.get("/api/v1/products/boom")
    body = await problem(response, 500)
    assert "hunter2" not in await response.text()
    assert "'catalog'" in body["detail"]


async def test_a_late_upstream_is_a_504(gateway: Client) -> None:
    body = await problem(await gateway.get("/api/v1/products/slow"), 504)
    assert "'catalog'" in body["detail"]


async def test_unimplemented_method_is_501(gateway: Client) -> None:
    # The users test server registers no UsersService at all.
    response = await gateway.post(
        "/api/v1/auth/register", json={"email": "a@b.c", "password": "x" * 12}
    )
    await problem(response, 501)


async def test_unreachable_upstream_is_a_503_naming_it(upstreams: FakeUpstreams) -> None:
    settings = upstreams.settings(catalog_addresses=(closed_address(),))
    async with serve(settings) as client:
        body = await problem(await client.get("/api/v1/products/p1"), 503)
    assert body["detail"] == "The upstream service 'catalog' is unavailable."
    assert body["upstream"] == "catalog"
    assert "127.0.0.1" not in body["detail"]


async def test_unexpected_exception_is_a_500_without_internals(
    upstreams: FakeUpstreams, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("internal detail 0xdeadbeef")

    async with serve(upstreams.settings()) as client:
        monkeypatch.setattr("gateway.transcoding.Transcoder.response_json", explode)
        with caplog.at_level(logging.ERROR, logger="mesh.problem"):
            response = await client.get("/api/v1/products/p1")
            body = await problem(response, 500)
    assert "0xdeadbeef" not in await response.text()
    assert body["detail"] == "An unexpected error occurred; it has been logged."
    assert any("0xdeadbeef" in r.exc_text for r in caplog.records if r.exc_text)


async def _raw_request(client: Client, head: bytes, body_chunks: int, chunked: bool) -> bytes:
    """Send `head`, then up to `body_chunks` 16 KiB chunks while reading the answer's head."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    chunk = b"x" * 16384
    framed = b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk

    async def feed() -> None:
        writer.write(head)
        for _ in range(body_chunks):
            writer.write(framed)
            await writer.drain()

    feeder = asyncio.create_task(feed())
    try:
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        assert b"Connection: close" in head
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        writer.close()
    return status_line


async def test_chunked_body_over_the_limit_is_stopped_with_413(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    before = upstreams.shelf.calls["ArchiveAll"]
    head = (
        b"POST /v1/books:archive HTTP/1.1\r\nHost: gateway\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    # 64 MiB offered; the server must answer long before reading it all (it never ends
    # the chunked body, so reading it whole would hang until the timeout).
    status_line = await _raw_request(gateway, head, body_chunks=4096, chunked=True)
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert upstreams.shelf.calls["ArchiveAll"] == before


async def test_content_length_over_the_limit_is_413_before_reading(
    gateway: Client, upstreams: FakeUpstreams
) -> None:
    before = upstreams.shelf.calls["ArchiveAll"]
    head = (
        b"POST /v1/books:archive HTTP/1.1\r\nHost: gateway\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (BODY_LIMIT + 1)
    )
    # No body byte is sent: only a decision from Content-Length can answer.
    status_line = await _raw_request(gateway, head, body_chunks=0, chunked=False)
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert upstreams.shelf.calls["ArchiveAll"] == before


async def test_body_at_the_limit_is_read(gateway: Client) -> None:
    ids = '"a",' * ((BODY_LIMIT - 20) // 4)
    payload = ('{"ids": [' + ids.rstrip(",") + "]}").encode()
    payload += b" " * (BODY_LIMIT - len(payload))
    assert len(payload) == BODY_LIMIT
    response = await gateway.post(
        "/v1/books:archive", data=payload, headers={"Content-Type": "application/json"}
    )
    assert response.status == 200
    over = await gateway.post(
        "/v1/books:archive", data=payload + b" ", headers={"Content-Type": "application/json"}
    )
    await problem(over, 413)
