"""Conditional requests (RFC 9110 section 13) for transcoded routes.

Services own their entity tags: a service that wants conditional requests sends ``etag``
in a response's initial or trailing metadata (the catalog uses trailers), and checks
preconditions on its writes itself, atomically with the write (only it can). The gateway:

* sets ``ETag`` on the response from that metadata;
* answers a GET or HEAD whose ``If-None-Match`` matches the tag (weak comparison, or
  ``*``) with ``304 Not Modified`` and no body;
* forwards ``If-Match`` on other methods as the ``if-match`` request metadata; the
  service's FAILED_PRECONDITION with reason PRECONDITION_FAILED becomes 412 by
  `mesh.problem.HTTP_STATUS_BY_REASON`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from aiohttp import hdrs, web

ETAG_METADATA: Final = "etag"
IF_MATCH_METADATA: Final = "if-match"
MAX_CONDITION_LENGTH: Final = 1024  # longer If-Match values are not forwarded (never match)

_SAFE_METHODS: Final = frozenset({"GET", "HEAD"})
# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text
_ENTITY_TAG: Final = re.compile(r'\s*(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
_VALID_ETAG: Final = re.compile(r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"')


def opaque_tags(header: str) -> list[str] | None:
    """The opaque tags (quoted, without ``W/``) of an If-None-Match / If-Match value.

    None for ``*``; tags that do not parse are skipped (they cannot match).
    """
    if header.strip() == "*":
        return None
    tags = []
    position = 0
    while position < len(header):
        found = _ENTITY_TAG.match(header, position)
        if found is None:
            # Skip to the next comma: a malformed member cannot match anything.
            comma = header.find(",", position)
            if comma == -1:
                break
            position = comma + 1
            continue
        tags.append(found[1])
        position = found.end()
    return tags


def none_match(if_none_match: str, etag: str) -> bool:
    """Whether If-None-Match `if_none_match` matches `etag` (weak comparison): then 304."""
    tags = opaque_tags(if_none_match)
    if tags is None:
        return True
    current = etag.removeprefix("W/")
    return current in tags


def forwarded_metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    """The precondition headers a service needs, as gRPC metadata (If-Match on writes)."""
    if request.method in _SAFE_METHODS:
        return ()
    if_match = request.headers.get(hdrs.IF_MATCH)
    if if_match is None or len(if_match) > MAX_CONDITION_LENGTH or not if_match.isascii():
        return ()
    return ((IF_MATCH_METADATA, if_match),)


def response_etag(*metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The entity tag a service sent in its initial or trailing metadata, if well-formed."""
    for key, value in (item for part in metadata for item in part or ()):
        if key == ETAG_METADATA:
            text = value if isinstance(value, str) else value.decode("latin-1")
            return text if _VALID_ETAG.fullmatch(text) else None
    return None


def not_modified(request: web.Request, etag: str | None) -> bool:
    """Whether a safe request's If-None-Match says the client has this representation."""
    if etag is None or request.method not in _SAFE_METHODS:
        return False
    if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
    return if_none_match is not None and none_match(if_none_match, etag)


def not_modified_response(etag: str | None) -> web.Response:
    return web.Response(status=304, headers={hdrs.ETAG: etag} if etag is not None else None)


def json_response(body: bytes, etag: str | None) -> web.Response:
    """A 200 with a JSON body, and the ETag when the service gave one."""
    headers = {hdrs.ETAG: etag} if etag is not None else None
    return web.Response(body=body, content_type="application/json", headers=headers)
