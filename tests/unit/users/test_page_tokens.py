"""Page tokens: round trip, and every edit or foreign key is rejected."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.users.page_tokens import Cursor, InvalidPageToken, PageTokens

KEY = b"k" * 32
CURSOR = Cursor(datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC), uuid.uuid4())

instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)


@given(instants, st.uuids())
def test_round_trip_keeps_microseconds_and_id(created_at: datetime, user_id: uuid.UUID) -> None:
    codec = PageTokens(KEY)
    cursor = Cursor(created_at, user_id)
    token = codec.encode(cursor)
    assert codec.decode(token) == cursor
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_non_utc_time_means_the_same_instant() -> None:
    codec = PageTokens(KEY)
    local = CURSOR.created_at.astimezone(timezone(timedelta(hours=2)))
    assert codec.decode(codec.encode(Cursor(local, CURSOR.id))) == CURSOR


@given(st.integers(min_value=0, max_value=40), st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_is_rejected(position: int, mask: int) -> None:
    codec = PageTokens(KEY)
    raw = bytearray(base64.urlsafe_b64decode(codec.encode(CURSOR) + "==="))
    raw[position] ^= mask
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(InvalidPageToken):
        codec.decode(tampered)


@pytest.mark.parametrize("token", ["", "a", "%%%", "é", "AAAA" * 20])
def test_garbage_is_rejected(token: str) -> None:
    with pytest.raises(InvalidPageToken):
        PageTokens(KEY).decode(token)


def test_a_token_of_another_key_is_rejected() -> None:
    token = PageTokens(b"a" * 32).encode(CURSOR)
    with pytest.raises(InvalidPageToken):
        PageTokens(b"b" * 32).decode(token)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="too short"):
        PageTokens(b"short")
