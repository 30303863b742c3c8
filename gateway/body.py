"""Request bodies: media type, size limit and JSON syntax, checked in that order.

The limit is enforced before any byte is read when ``Content-Length`` announces too much,
and while reading otherwise (chunked bodies): reading stops at the first chunk past the
limit and the 413 goes out at once, so an oversized body is never held whole. The 413 says
``Connection: close``: aiohttp discards what the client is still sending for its lingering
time (as nginx does), so the client reliably reads the answer, then closes the connection.
"""

from __future__ import annotations

import enum
from typing import Final, Literal

import orjson
from aiohttp import web

from mesh.problem import ProblemError

JSON_MEDIA_TYPE: Final = "application/json"


class _NoBody(enum.Enum):
    NO_BODY = "no body"


NO_BODY: Final = _NoBody.NO_BODY
"""The request had no body (or only whitespace): distinct from a JSON ``null``."""


def is_json_media_type(media_type: str) -> bool:
    media_type = media_type.lower()
    return media_type == JSON_MEDIA_TYPE or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _too_large(limit: int) -> ProblemError:
    return ProblemError(
        413, f"The request body exceeds the limit of {limit} bytes.", close_connection=True
    )


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body if it is at most `limit` bytes; a 413 problem as soon as it is not."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    buffer = bytearray()
    async for chunk in request.content.iter_any():
        buffer += chunk
        if len(buffer) > limit:
            raise _too_large(limit)
    return bytes(buffer)


def _first_non_utf8_byte(raw: bytes) -> int | None:
    """The offset of the first byte that is not UTF-8 (JSON text is UTF-8: RFC 8259 §8.1)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start
    return None


async def read_json_body(request: web.Request, limit: int) -> object | Literal[_NoBody.NO_BODY]:
    """The parsed JSON body, or `NO_BODY` (then the request message starts empty)."""
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    if not request.body_exists:
        return NO_BODY
    if not is_json_media_type(request.content_type):
        raise ProblemError(
            415,
            f"Expected a body of type {JSON_MEDIA_TYPE}, got {request.content_type}.",
        )
    raw = await read_limited(request, limit)
    if not raw.strip():
        return NO_BODY
    try:
        document: object = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if (bad_byte := _first_non_utf8_byte(raw)) is not None:  # orjson says "char 0"
            raise ProblemError(
                400, f"The request body is not valid UTF-8 (byte {bad_byte})."
            ) from None
        raise ProblemError(
            400,
            f"Malformed JSON at line {error.lineno}, column {error.colno} (char {error.pos}): "
            f"{error.msg}.",
        ) from None
    return document
