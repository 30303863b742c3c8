"""mesh.request_id: sane ids kept, others replaced, echoed on every kind of response."""

from __future__ import annotations

import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mesh.context import request_id_var
from mesh.request_id import (
    REQUEST_ID_KEY,
    accept_or_generate,
    echo_request_id,
    request_id_middleware,
)

UUID_HEX = re.compile(r"[0-9a-f]{32}")


@pytest.mark.parametrize("sane", ["a", "A-b_c.9", "x" * 128, "0af7651916cd43dd8448eb211c80319c"])
def test_sane_ids_are_kept(sane: str) -> None:
    assert accept_or_generate(sane) == sane


@pytest.mark.parametrize("insane", [None, "", "x" * 129, "a b", "a\r\nb", "é", "a/b", "a;b"])
def test_other_ids_are_replaced(insane: str | None) -> None:
    generated = accept_or_generate(insane)
    assert UUID_HEX.fullmatch(generated)
    assert generated != accept_or_generate(insane)


async def test_echoed_on_returned_raised_and_streamed_responses() -> None:
    seen: list[tuple[str, str | None]] = []

    async def ok(request: web.Request) -> web.Response:
        seen.append((request[REQUEST_ID_KEY], request_id_var.get()))
        return web.Response(text="ok")

    async def raised(request: web.Request) -> web.Response:
        raise web.HTTPConflict()

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"chunk")
        return response

    app = web.Application(middlewares=[request_id_middleware])
    app.on_response_prepare.append(echo_request_id)
    app.router.add_get("/ok", ok)
    app.router.add_get("/raised", raised)
    app.router.add_get("/streamed", streamed)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for path, status in (("/ok", 200), ("/raised", 409), ("/streamed", 200), ("/no", 404)):
            response = await client.get(path, headers={"X-Request-ID": f"id{status}"})
            assert response.status == status
            assert response.headers["X-Request-ID"] == f"id{status}", path
        generated = (await client.get("/ok")).headers["X-Request-ID"]
    assert UUID_HEX.fullmatch(generated)
    assert seen == [("id200", "id200"), (generated, generated)]
    assert request_id_var.get() is None
