"""What a product listing asks for (filters, search, order) and where a page starts.

Pagination is keyset: every order is a sort key plus the product id, and a page token names
the (key, id) of the last product of the previous page, so the next page is "the products
after that one" however many were added or removed meanwhile: a product that exists
throughout a walk is returned exactly once (unless its own sort key changes, e.g. a price
edit under ``orderBy=price``).

A page token is base64url(version, order, query fingerprint, key, id, spelling corrections,
HMAC-SHA256 tag). The tag (128 bits, keyed per deployment) rejects an edited token or one
from another service, and the fingerprint of the filters rejects a token replayed with other
filters or order. The corrections (see `SearchText`) are frozen into the token so that every
page of a walk searches for exactly the same words, even if new product names change what
a misspelt word would be corrected to meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

DEFAULT_PAGE_SIZE: Final = 20
MAX_PAGE_SIZE: Final = 100
MAX_QUERY_LENGTH: Final = 200
MAX_QUERY_WORDS: Final = 16

_WORD: Final = re.compile(r"\w+")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Order(enum.Enum):
    """The `orderBy` values, by their API names."""

    RELEVANCE = "relevance"
    PRICE = "price"
    PRICE_DESC = "-price"
    CREATED = "createdAt"
    CREATED_DESC = "-createdAt"

    @property
    def descending(self) -> bool:
        return self in (Order.RELEVANCE, Order.PRICE_DESC, Order.CREATED_DESC)

    @property
    def code(self) -> int:
        return list(Order).index(self) + 1


ORDER_NAMES: Final = tuple(o.value for o in Order)


# Per search word, the known words (from product names and categories) it may be a typo of.
Corrections = tuple[tuple[str, ...], ...]
MAX_CORRECTIONS: Final = 3


@dataclass(frozen=True, slots=True)
class SearchText:
    """A `q` reduced to words: the only part of it that reaches SQL as search syntax.

    Each word matches as a prefix of a stemmed word of the name, category or description
    ("headp" finds "headphones"); a word that is no prefix of any known name or category
    word is also tried as its closest known words by trigram similarity (pg_trgm: "wirless"
    finds "wireless"). Every word (or one of its corrections) must match.
    """

    words: tuple[str, ...]

    @classmethod
    def parse(cls, q: str) -> SearchText:
        return cls(tuple(_WORD.findall(q.lower()))[:MAX_QUERY_WORDS])

    def tsquery(self, corrections: Corrections = ()) -> str:
        """A to_tsquery() text, e.g. ``(wirless:* | wireless:*) & (headp:*)``."""
        groups = []
        for index, word in enumerate(self.words):
            extra = corrections[index] if index < len(corrections) else ()
            groups.append("(" + " | ".join(f"{w}:*" for w in (word, *extra)) + ")")
        return " & ".join(groups)


@dataclass(frozen=True, slots=True)
class ListQuery:
    category: str | None = None
    text: SearchText | None = None
    min_price_cents: int | None = None
    max_price_cents: int | None = None
    in_stock: bool | None = None
    order: Order = Order.CREATED_DESC

    def fingerprint(self) -> bytes:
        """8 bytes that differ, in practice, between any two different queries."""
        parts = (
            self.category,
            self.text.words if self.text else None,
            self.min_price_cents,
            self.max_price_cents,
            self.in_stock,
            self.order.value,
        )
        return hashlib.sha256(repr(parts).encode()).digest()[:8]


SortKey = int | float | datetime


@dataclass(frozen=True, slots=True)
class Cursor:
    """The (sort key, id) of the last product of a page, and the walk's corrections."""

    key: SortKey
    id: uuid.UUID
    corrections: Corrections = ()


class InvalidPageToken(ValueError):
    """Not a token of this service for this query (edited, truncated, foreign, stale)."""


_VERSION: Final = 1
_PAYLOAD: Final = struct.Struct(">BB8s8s16sH")
_TAG_BYTES: Final = 16
_MAX_CORRECTIONS_BYTES: Final = 1024


class PageTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("page token key too short")
        self._key = key

    def encode(self, query: ListQuery, cursor: Cursor) -> str:
        corrections = "|".join(" ".join(words) for words in cursor.corrections).encode()
        if len(corrections) > _MAX_CORRECTIONS_BYTES:
            corrections = b""  # cannot happen with bounded words; degrade, never fail
        payload = _PAYLOAD.pack(
            _VERSION,
            query.order.code,
            query.fingerprint(),
            _pack_key(query.order, cursor.key),
            cursor.id.bytes,
            len(corrections),
        )
        raw = payload + corrections
        raw += self._tag(raw)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def decode(self, query: ListQuery, token: str) -> Cursor:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidPageToken("not a page token")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise InvalidPageToken("not a page token") from None
        if len(raw) < _PAYLOAD.size + _TAG_BYTES:
            raise InvalidPageToken("not a page token")
        signed, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(signed)):
            raise InvalidPageToken("not a page token of this service")
        version, order_code, fingerprint, key, id_bytes, length = _PAYLOAD.unpack(
            signed[: _PAYLOAD.size]
        )
        if version != _VERSION or length != len(signed) - _PAYLOAD.size:
            raise InvalidPageToken("page token version not supported")
        if order_code != query.order.code or not hmac.compare_digest(
            fingerprint, query.fingerprint()
        ):
            raise InvalidPageToken("the page token belongs to other filters or another order")
        corrections = _corrections(signed[_PAYLOAD.size :], query)
        return Cursor(_unpack_key(query.order, key), uuid.UUID(bytes=id_bytes), corrections)

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG_BYTES]


MAX_TOKEN_LENGTH: Final = 2 * _MAX_CORRECTIONS_BYTES


def _corrections(raw: bytes, query: ListQuery) -> Corrections:
    if not raw:
        return ()
    groups = tuple(tuple(group.split()) for group in raw.decode().split("|"))
    words = query.text.words if query.text else ()
    if len(groups) != len(words) or not all(_WORD.fullmatch(w) for g in groups for w in g):
        raise InvalidPageToken("not a page token")
    return groups


def _pack_key(order: Order, key: SortKey) -> bytes:
    if order is Order.RELEVANCE:
        assert isinstance(key, float)
        return struct.pack(">d", key)
    if order in (Order.CREATED, Order.CREATED_DESC):
        assert isinstance(key, datetime)
        return struct.pack(">q", (key - _EPOCH) // timedelta(microseconds=1))
    assert isinstance(key, int)
    return struct.pack(">q", key)


def _unpack_key(order: Order, raw: bytes) -> SortKey:
    if order is Order.RELEVANCE:
        (score,) = struct.unpack(">d", raw)
        if score != score:  # NaN: never produced by this service
            raise InvalidPageToken("not a page token")
        return float(score)
    (number,) = struct.unpack(">q", raw)
    if order in (Order.CREATED, Order.CREATED_DESC):
        try:
            return _EPOCH + timedelta(microseconds=number)
        except OverflowError:
            raise InvalidPageToken("not a page token") from None
    return int(number)
