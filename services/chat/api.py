"""The chat REST routes (the gateway proxies ``/api/v1/chat/...`` here), signed-in users only.

- ``POST /api/v1/chat/rooms`` ``{name, private?}`` → 201, the room.
- ``GET /api/v1/chat/rooms?pageSize=&pageToken=`` → ``{rooms, nextPageToken?}``: the
  caller's rooms and the public ones, oldest first.
- ``POST /api/v1/chat/rooms/{id}/members`` ``{userId}`` → ``{roomId, userId}``: the owner
  adds anyone; anyone may add themselves to a public room.
- ``GET /api/v1/chat/rooms/{id}/messages?before=&limit=`` → ``{messages, nextBefore?}``:
  newest first, members only; ``before`` is a seq (exclusive), ``limit`` 1..100 (50).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import hdrs, web

from mesh.auth.access import bearer_token
from mesh.auth.identity import Caller
from mesh.auth.tokens import InvalidToken
from mesh.errors import FieldError
from mesh.problem import ProblemError
from services.chat.keys import RUNTIME
from services.chat.protocol import rfc3339
from services.chat.service import (
    HISTORY_DEFAULT,
    HISTORY_MAX,
    PAGE_DEFAULT,
    PAGE_MAX,
    ChatError,
)
from services.chat.store import (
    InvalidPageToken,
    Room,
    StoredMessage,
    decode_page_token,
    encode_page_token,
)

PREFIX = "/api/v1/chat"


async def caller_of(request: web.Request) -> Caller:
    authorization = request.headers.get(hdrs.AUTHORIZATION)
    if authorization is None:
        raise ProblemError(
            401,
            "sign in first: this call needs a bearer access token",
            headers={hdrs.WWW_AUTHENTICATE: "Bearer"},
        )
    token = bearer_token(authorization)
    if token is None:
        raise ProblemError(
            401,
            "the Authorization header must be 'Bearer <access token>'",
            headers={hdrs.WWW_AUTHENTICATE: "Bearer"},
        )
    try:
        return await request.app[RUNTIME].verifier.verify(token)
    except InvalidToken as exc:
        raise ProblemError(
            401, str(exc), headers={hdrs.WWW_AUTHENTICATE: 'Bearer error="invalid_token"'}
        ) from None


def _problem(error: ChatError) -> ProblemError:
    return ProblemError(error.status, error.message, errors=error.field_errors)


async def _body(request: web.Request) -> Mapping[str, Any]:
    if request.content_type != "application/json":
        raise ProblemError(415, "The body must be JSON (Content-Type: application/json).")
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as not_utf8:
            detail = f"The body is not valid UTF-8 (byte {not_utf8.start})."
        else:
            detail = (
                f"The body is not valid JSON: {error.msg} at line {error.lineno}, "
                f"column {error.colno} (char {error.pos})."
            )
        raise ProblemError(400, detail) from None
    if not isinstance(body, dict):
        raise ProblemError(400, "The body must be a JSON object.")
    return body


def _only(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
    """A 400 naming every member of `body` the route does not take (no silent extras)."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ProblemError(
            400,
            "The body has unknown fields.",
            errors=tuple(FieldError(name[:100], "unknown field") for name in unknown[:20]),
        )


def _integer(
    request: web.Request, name: str, default: int | None, low: int, high: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None:  # absent; an empty value is not a number (as on the gateway's own routes)
        return default
    # ASCII digits, no more of them than `high` has: str.isdigit() also takes "²", and int()
    # refuses that and strings over 4300 digits (both were a 500).
    digits = raw.isascii() and raw.isdigit() and len(raw) <= len(str(high))
    if not digits or not low <= int(raw) <= high:
        raise ProblemError(
            400,
            f"'{name}' is not valid.",
            errors=(FieldError(name, f"must be a whole number from {low} to {high}"),),
        )
    return int(raw)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def room_json(room: Room) -> dict[str, object]:
    return {
        "id": room.id,
        "name": room.name,
        "private": room.private,
        "ownerId": room.owner_id,
        "createdAt": rfc3339(room.created_at),
    }


def message_json(message: StoredMessage) -> dict[str, object]:
    return {
        "room": message.room,
        "seq": message.seq,
        "id": message.id,
        "userId": message.user_id,
        "text": message.text,
        "ts": rfc3339(message.ts),
        "clientMsgId": message.client_msg_id,
    }


async def create_room(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    body = await _body(request)
    _only(body, frozenset({"name", "private"}))
    try:
        room = await request.app[RUNTIME].service.create_room(
            caller.user_id, body.get("name"), body.get("private", False)
        )
    except ChatError as exc:
        raise _problem(exc) from None
    return _json(room_json(room), 201)


async def list_rooms(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    page_size = _integer(request, "pageSize", PAGE_DEFAULT, 1, PAGE_MAX)
    assert page_size is not None
    token = request.query.get("pageToken") or None
    try:
        after = None if token is None else decode_page_token(token)
    except InvalidPageToken as exc:
        raise ProblemError(400, str(exc), errors=(FieldError("pageToken", str(exc)),)) from None
    rooms, last = await request.app[RUNTIME].service.visible_rooms(caller.user_id, page_size, after)
    body: dict[str, object] = {"rooms": [room_json(room) for room in rooms]}
    if last is not None:
        body["nextPageToken"] = encode_page_token(last)
    return _json(body)


async def add_member(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    body = await _body(request)
    _only(body, frozenset({"userId"}))
    room_id = request.match_info["room"]
    try:
        member = await request.app[RUNTIME].service.add_member(
            caller.user_id, room_id, body.get("userId")
        )
    except ChatError as exc:
        raise _problem(exc) from None
    return _json({"roomId": room_id, "userId": member})


async def history(request: web.Request) -> web.Response:
    caller = await caller_of(request)
    before = _integer(request, "before", None, 1, 2**63 - 1)
    limit = _integer(request, "limit", HISTORY_DEFAULT, 1, HISTORY_MAX)
    assert limit is not None
    try:
        messages, next_before = await request.app[RUNTIME].service.history(
            caller.user_id, request.match_info["room"], before, limit
        )
    except ChatError as exc:
        raise _problem(exc) from None
    body: dict[str, object] = {"messages": [message_json(m) for m in messages]}
    if next_before is not None:
        body["nextBefore"] = next_before
    return _json(body)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post(f"{PREFIX}/rooms", create_room)
    router.add_get(f"{PREFIX}/rooms", list_rooms)
    router.add_post(f"{PREFIX}/rooms/{{room}}/members", add_member)
    router.add_get(f"{PREFIX}/rooms/{{room}}/messages", history)
