"""``/api/v1/chat/...``: a streaming HTTP reverse proxy to chat's REST routes.

Chat's REST API is plain HTTP (aiohttp routes), not gRPC, so it is proxied rather than
transcoded. Only signed-in users get through: the bearer token is verified here before any
byte goes upstream, and chat verifies it again. A request body is read up to the route's
limit (413 past it) and sent on; the response body streams back without being buffered;
end-to-end headers pass, hop-by-hop ones (RFC 9110 section 7.6.1)
do not. A path with a dot segment is a 400: it would leave ``/api/v1/chat/`` upstream. A
replica that refuses the connection is skipped for the next one (nothing was sent to it, so
this is safe for any method); if none answers, the client gets a 503 problem, and
a replica that accepts but does not answer in time a 504. Chat has a circuit breaker like
the gRPC upstreams (named "chat"): those failures and chat's 5xx answers count, and while it
is open requests get a 503 with ``Retry-After`` without reaching chat.
"""

from __future__ import annotations

import re
from typing import Any, Final
from urllib.parse import unquote

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict

from gateway.body import read_limited
from gateway.keys import RATE_LIMITER_KEY, SETTINGS_KEY, UPSTREAMS_KEY, VERIFIER_KEY
from gateway.openapi import access_fields
from gateway.policy import CHAT_HTTP
from gateway.upstreams import CHAT
from mesh.auth.access import USER, authorize
from mesh.errors import ServiceError
from mesh.problem import PROBLEM_CONTENT_TYPE, ProblemError, problem_from_service_error
from mesh.request_id import REQUEST_ID_HEADER, request_id_of

CHAT_PREFIX: Final = "/api/v1/chat"
_HOP_BY_HOP: Final = frozenset(
    h.lower()
    for h in (
        hdrs.CONNECTION,
        hdrs.KEEP_ALIVE,
        hdrs.PROXY_AUTHENTICATE,
        hdrs.PROXY_AUTHORIZATION,
        hdrs.TE,
        hdrs.TRAILER,
        hdrs.TRANSFER_ENCODING,
        hdrs.UPGRADE,
        hdrs.HOST,
        hdrs.CONTENT_LENGTH,
        hdrs.ACCEPT_ENCODING,  # chat answers uncompressed; bodies pass through as they are
        REQUEST_ID_HEADER,
    )
)


def _end_to_end(headers: Any) -> CIMultiDict[str]:
    passed: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in _HOP_BY_HOP:
            passed.add(name, value)
    return passed


def _check_path(raw_path: str) -> None:
    """A 400 for a path with a dot segment (``..``, ``%2e%2e``, ``.``): the upstream would
    resolve it out of ``/api/v1/chat/`` to routes chat does not publish (its ``/health/ready``,
    ``/ws/chat``). Clients that follow RFC 3986 remove dot segments before sending."""
    if any(unquote(segment) in (".", "..") for segment in raw_path.split("/")):
        raise ProblemError(400, "The path has a '.' or '..' segment.")


async def chat_http(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS_KEY]
    _check_path(request.rel_url.raw_path)
    try:  # before the body is read: an unauthorised caller costs no upload
        caller = await authorize(
            USER, request.headers.get(hdrs.AUTHORIZATION), request.app[VERIFIER_KEY]
        )
    except ServiceError as exc:
        raise problem_from_service_error(exc) from None
    rate_limit = settings.route_policy(CHAT_HTTP).rate_limit
    if rate_limit is not None:  # before the upload, as for transcoded routes
        await request.app[RATE_LIMITER_KEY].admit(request, rate_limit, caller)
    body_limit = settings.route_policy(CHAT_HTTP).body_limit_bytes
    length = request.content_length
    if length is not None and length > body_limit:
        raise ProblemError(
            413, f"The request body exceeds the limit of {body_limit} bytes.",
            close_connection=True,
        )  # fmt: skip
    # A body of announced length streams through; a chunked one is read first (413 past it).
    body = (
        (request.content if length is not None else await read_limited(request, body_limit))
        if request.body_exists
        else None
    )
    headers = _end_to_end(request.headers)
    request_id = request_id_of(request)
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    upstreams = request.app[UPSTREAMS_KEY]
    timeout = aiohttp.ClientTimeout(
        total=None,
        sock_connect=settings.upstream_timeout_seconds,
        sock_read=settings.upstream_timeout_seconds,
    )
    # Chat's breaker judges the request once: a 5xx, a timeout, a broken or refused
    # connection (every replica) is a failure; a client that goes away first, nothing.
    with upstreams.chat_verdict() as verdict:
        for base in upstreams.chat_candidates():
            try:
                async with upstreams.http.request(
                    request.method,
                    base + request.rel_url.raw_path_qs,
                    headers=headers,
                    data=body,
                    timeout=timeout,
                    allow_redirects=False,
                ) as upstream:
                    verdict.give(failed=upstream.status >= 500)
                    return await _stream_back(request, upstream)
            except aiohttp.ClientConnectorError:
                continue  # refused or unreachable before anything was sent: the next replica
            except (TimeoutError, aiohttp.ServerTimeoutError):
                verdict.give(failed=True)
                raise ProblemError(
                    504,
                    f"The upstream service '{CHAT}' did not answer in time.",
                    extensions={"upstream": CHAT},
                ) from None
            except aiohttp.ClientError:
                verdict.give(failed=True)
                raise ProblemError(
                    502,
                    f"The upstream service '{CHAT}' failed to answer.",
                    extensions={"upstream": CHAT},
                ) from None
        verdict.give(failed=True)
    raise ProblemError(
        503,
        f"The upstream service '{CHAT}' is unavailable.",
        headers={hdrs.RETRY_AFTER: "1"},
        extensions={"upstream": CHAT},
    )


async def _stream_back(
    request: web.Request, upstream: aiohttp.ClientResponse
) -> web.StreamResponse:
    response = web.StreamResponse(
        status=upstream.status, reason=upstream.reason, headers=_end_to_end(upstream.headers)
    )
    if upstream.content_length is not None:
        response.content_length = upstream.content_length
    await response.prepare(request)
    async for chunk in upstream.content.iter_any():
        await response.write(chunk)
    await response.write_eof()
    return response


def add_chat_routes(router: web.UrlDispatcher) -> None:
    """Chat's documented routes (`CHAT_OPENAPI_PATHS`) with their methods, then a catch-all.

    A documented path serves just its documented methods (a GET also HEAD), so that a plain
    ``OPTIONS`` and a 405 list exactly those in ``Allow``, as the OpenAPI document says; any
    other path under the prefix goes to chat as it is, for chat's own 404 or 405.
    """
    documented: list[str] = []
    for path, operations in CHAT_OPENAPI_PATHS.items():
        resource = router.add_resource(path)
        for method in operations:
            resource.add_route(method.upper(), chat_http)
            if method == "get":
                resource.add_route(hdrs.METH_HEAD, chat_http)
        tail = re.escape(path.removeprefix(CHAT_PREFIX + "/"))
        documented.append(re.sub(r"\\\{[^/]*?\\\}", "[^/]+", tail))  # {id}: one segment
    others = "(?!(?:" + "|".join(documented) + r")\Z).*"  # no braces: aiohttp's own syntax
    router.add_route("*", CHAT_PREFIX + "/{tail:" + others + "}", chat_http)


# The chat routes in the gateway's OpenAPI document (chat owns them; they are not in a proto).

_REF: Final = "#/components/schemas/"
_JSON: Final = "application/json"


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": _REF + "Problem"}}},
    }


def _json_body(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_ROOM: Final = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "private": {"type": "boolean"},
        "ownerId": {"type": "string"},
        "createdAt": {"type": "string", "format": "date-time"},
    },
}
_MESSAGE: Final = {
    "type": "object",
    "properties": {
        "room": {"type": "string"},
        "seq": {"type": "integer"},
        "id": {"type": "string"},
        "userId": {"type": "string"},
        "text": {"type": "string"},
        "ts": {"type": "string", "format": "date-time"},
        "clientMsgId": {"type": "string"},
    },
}
_SIGNED_IN: Final = access_fields(USER)  # chat's REST routes are all for signed-in users
_ROOM_ID: Final = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_COMMON_ERRORS: Final = {
    "401": _problem("Not signed in, or the token is not valid."),
    "503": _problem("The chat service is unavailable."),
    "default": _problem("An error from the chat service."),
}


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string" if name == "pageToken" else "integer"}}  # fmt: skip


CHAT_OPENAPI_PATHS: Final[dict[str, Any]] = {
    CHAT_PREFIX + "/rooms": {
        "post": {
            "operationId": "chat.CreateRoom",
            "tags": ["chat"],
            **_SIGNED_IN,
            "summary": "Create a room; the caller owns it and is its first member.",
            "requestBody": {"required": True, "content": {_JSON: {"schema": {
                "type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "maxLength": 100},
                    "private": {"type": "boolean", "default": False},
                }}}}},
            "responses": {"201": _json_body(_ROOM, "The room."),
                          "400": _problem("The room is not valid."), **_COMMON_ERRORS},
        },
        "get": {
            "operationId": "chat.ListRooms",
            "tags": ["chat"],
            **_SIGNED_IN,
            "summary": "The caller's rooms and the public ones, oldest first.",
            "parameters": [_query("pageSize", "1..100, default 20"),
                           _query("pageToken", "from nextPageToken")],
            "responses": {"200": _json_body({"type": "object", "properties": {
                "rooms": {"type": "array", "items": _ROOM},
                "nextPageToken": {"type": "string"}}}), **_COMMON_ERRORS},
        },
    },
    CHAT_PREFIX + "/rooms/{id}/members": {
        "post": {
            "operationId": "chat.AddMember",
            "tags": ["chat"],
            **_SIGNED_IN,
            "summary": "The owner adds a user (anyone may add themselves to a public room).",
            "parameters": [_ROOM_ID],
            "requestBody": {"required": True, "content": {_JSON: {"schema": {
                "type": "object", "required": ["userId"],
                "properties": {"userId": {"type": "string"}}}}}},
            "responses": {"200": _json_body({"type": "object", "properties": {
                "roomId": {"type": "string"}, "userId": {"type": "string"}}}),
                "403": _problem("Not the room's owner."),
                "404": _problem("No such room."), **_COMMON_ERRORS},
        },
    },
    CHAT_PREFIX + "/rooms/{id}/messages": {
        "get": {
            "operationId": "chat.History",
            "tags": ["chat"],
            **_SIGNED_IN,
            "summary": "The room's messages, newest first (members only).",
            "parameters": [_ROOM_ID, _query("before", "a seq: only older messages"),
                           _query("limit", "1..100, default 50")],
            "responses": {"200": _json_body({"type": "object", "properties": {
                "messages": {"type": "array", "items": _MESSAGE},
                "nextBefore": {"type": "integer"}}}),
                "403": _problem("Not a member of the room."),
                "404": _problem("No such room."), **_COMMON_ERRORS},
        },
    },
}  # fmt: skip
