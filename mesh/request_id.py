"""Request ids for aiohttp apps: accept a sane client `X-Request-ID` or make one, echo it.

Install in any aiohttp app of the mesh, outermost, so every other middleware (the problem
middleware included) can read the id, and the prepare hook so streamed responses and
WebSocket handshakes carry it too::

    app = web.Application(middlewares=[request_id_middleware, problem_middleware])
    app.on_response_prepare.append(echo_request_id)

A client id is kept when it is 1 to 128 characters of ``[A-Za-z0-9._-]``; anything else
(absent, too long, other characters: a log-injection or header-smuggling vector) is
replaced by a fresh uuid4 hex. The id is forwarded upstream as gRPC metadata
``x-request-id`` and set in `mesh.context.request_id_var` for log lines.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from mesh.context import request_id_var

REQUEST_ID_HEADER: Final = "X-Request-ID"
REQUEST_ID_METADATA: Final = "x-request-id"
REQUEST_ID_KEY: Final = web.RequestKey("mesh_request_id", str)

_SANE_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")


def accept_or_generate(candidate: str | None) -> str:
    """`candidate` when it is a sane request id, else a new uuid4 hex."""
    if candidate is not None and _SANE_ID.fullmatch(candidate):
        return candidate
    return uuid.uuid4().hex


def request_id_of(request: web.Request) -> str | None:
    """The id the middleware stored on `request`, if it ran."""
    return request.get(REQUEST_ID_KEY)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = accept_or_generate(request.headers.get(REQUEST_ID_HEADER))
    request[REQUEST_ID_KEY] = request_id
    token = request_id_var.set(request_id)  # for log lines written while handling
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = request_id
        raise
    finally:
        request_id_var.reset(token)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare` hook: the id on responses a handler prepared itself."""
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
