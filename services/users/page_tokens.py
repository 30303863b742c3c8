"""Opaque, tamper-proof page tokens for keyset pagination over (created_at, id).

A token is base64url(version, created_at in microseconds, id, HMAC-SHA256 tag): it names
the last row of the previous page, so a page is "the next rows after that one" however
many rows were added meanwhile. The tag (truncated to 128 bits, keyed per deployment)
makes an edited or foreign token fail instead of reading from an arbitrary position.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

VERSION: Final = 1
_PAYLOAD: Final = struct.Struct(">Bq16s")
_TAG_BYTES: Final = 16
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidPageToken(ValueError):
    """The token was not made by this service (edited, truncated, or from elsewhere)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: uuid.UUID


class PageTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("page token key too short")
        self._key = key

    def encode(self, cursor: Cursor) -> str:
        micros = (cursor.created_at - _EPOCH) // timedelta(microseconds=1)
        payload = _PAYLOAD.pack(VERSION, micros, cursor.id.bytes)
        raw = payload + self._tag(payload)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def decode(self, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidPageToken("not a page token") from None
        if len(raw) != _PAYLOAD.size + _TAG_BYTES:
            raise InvalidPageToken("not a page token")
        payload, tag = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        if not hmac.compare_digest(tag, self._tag(payload)):
            raise InvalidPageToken("not a page token of this service")
        version, micros, id_bytes = _PAYLOAD.unpack(payload)
        if version != VERSION:
            raise InvalidPageToken("page token version not supported")
        try:
            created_at = _EPOCH + timedelta(microseconds=micros)
        except OverflowError:
            raise InvalidPageToken("not a page token") from None
        return Cursor(created_at, uuid.UUID(bytes=id_bytes))

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG_BYTES]
