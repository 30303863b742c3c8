"""Page tokens, search text and the listing SQL of the catalog."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.catalog.listing import (
    Cursor,
    InvalidPageToken,
    ListQuery,
    Order,
    PageTokens,
    SearchText,
)
from services.catalog.store import list_sql

KEY = b"k" * 32
TOKENS = PageTokens(KEY)
AN_ID = uuid.UUID("6f1c1a52-9f3b-4b1e-8a57-2f4f1d1e0c11")


@pytest.mark.parametrize(
    ("order", "key"),
    [
        (Order.PRICE, 2599),
        (Order.PRICE_DESC, 1),
        (Order.CREATED, datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)),
        (Order.CREATED_DESC, datetime(1999, 1, 1, tzinfo=UTC)),
        (Order.RELEVANCE, 0.6079271030426025),
    ],
)
def test_tokens_round_trip(order: Order, key: object) -> None:
    query = ListQuery(category="kitchen", order=order)
    cursor = Cursor(key, AN_ID)  # type: ignore[arg-type]
    token = TOKENS.encode(query, cursor)
    assert not {"=", "+", "/"} & set(token)
    assert TOKENS.decode(query, token) == cursor


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_relevance_keys_survive_exactly(score: float) -> None:
    query = ListQuery(text=SearchText.parse("tea"), order=Order.RELEVANCE)
    assert TOKENS.decode(query, TOKENS.encode(query, Cursor(score, AN_ID))).key == score


def test_corrections_travel_in_the_token() -> None:
    query = ListQuery(text=SearchText.parse("wirless headp"), order=Order.RELEVANCE)
    cursor = Cursor(0.25, AN_ID, (("wireless", "wirelss"), ()))
    assert TOKENS.decode(query, TOKENS.encode(query, cursor)) == cursor


def test_every_flipped_bit_is_rejected() -> None:
    query = ListQuery(text=SearchText.parse("wirless"), order=Order.RELEVANCE)
    token = TOKENS.encode(query, Cursor(0.5, AN_ID, (("wireless",),)))
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for index in range(len(raw)):
        for bit in range(8):
            bad = bytearray(raw)
            bad[index] ^= 1 << bit
            forged = base64.urlsafe_b64encode(bytes(bad)).rstrip(b"=").decode()
            with pytest.raises(InvalidPageToken):
                TOKENS.decode(query, forged)


@pytest.mark.parametrize(
    "token", ["", "!!!", "a" * 3000, "AAAA", base64.b64encode(b"x" * 50).decode()]
)
def test_garbage_is_rejected(token: str) -> None:
    with pytest.raises(InvalidPageToken):
        TOKENS.decode(ListQuery(), token)


def test_a_token_is_bound_to_its_key_filters_and_order() -> None:
    query = ListQuery(category="toys", order=Order.PRICE)
    token = TOKENS.encode(query, Cursor(100, AN_ID))
    with pytest.raises(InvalidPageToken, match="this service"):
        PageTokens(b"x" * 32).decode(query, token)
    for other in (
        ListQuery(category="books", order=Order.PRICE),
        ListQuery(category="toys", order=Order.PRICE_DESC),
        ListQuery(category="toys", order=Order.PRICE, in_stock=True),
        ListQuery(category="toys", order=Order.PRICE, min_price_cents=1),
        ListQuery(category="toys", order=Order.PRICE, text=SearchText.parse("x")),
    ):
        with pytest.raises(InvalidPageToken, match="other filters"):
            TOKENS.decode(other, token)


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="short"):
        PageTokens(b"short")


@pytest.mark.parametrize(
    ("q", "words", "tsquery"),
    [
        ("Tea Pot", ("tea", "pot"), "(tea:*) & (pot:*)"),
        (
            "'; DROP TABLE products; --",
            ("drop", "table", "products"),
            "(drop:*) & (table:*) & (products:*)",
        ),
        ("a:* & b | !c (d)", ("a", "b", "c", "d"), "(a:*) & (b:*) & (c:*) & (d:*)"),
        ("%_%", ("_",), "(_:*)"),
        ("%%%", (), ""),
        ("Crème brûlée", ("crème", "brûlée"), "(crème:*) & (brûlée:*)"),
    ],
)
def test_search_text_keeps_only_words(q: str, words: tuple[str, ...], tsquery: str) -> None:
    text = SearchText.parse(q)
    assert text.words == words
    assert text.tsquery() == tsquery


def test_corrections_are_alternatives_of_their_word() -> None:
    text = SearchText.parse("wirless headp")
    assert text.tsquery((("wireless", "wirelss"), ())) == (
        "(wirless:* | wireless:* | wirelss:*) & (headp:*)"
    )


def test_search_text_is_bounded() -> None:
    assert len(SearchText.parse(" ".join(f"w{i}" for i in range(100))).words) == 16


def test_values_only_reach_sql_as_parameters() -> None:
    nasty = "'; DROP TABLE products; --"
    query = ListQuery(
        category=nasty,
        text=SearchText.parse(nasty),
        min_price_cents=1,
        max_price_cents=2,
        in_stock=True,
        order=Order.RELEVANCE,
    )
    sql, params = list_sql(query, (("drops",), (), ()), Cursor(0.5, AN_ID), 21)
    assert "DROP" not in sql
    assert nasty in params
    assert params[-1] == 21
    assert "ORDER BY sort_key DESC, id DESC" in sql
    assert "(drop:* | drops:*) & (table:*) & (products:*)" in params
    sql, _ = list_sql(ListQuery(order=Order.PRICE), (), Cursor(10, AN_ID), 5)
    assert "(price_cents, id) > ($1, $2)" in sql
    assert "ORDER BY sort_key ASC, id ASC" in sql
    sql, _ = list_sql(
        ListQuery(text=SearchText.parse("tea"), order=Order.CREATED_DESC), ((),), None, 5
    )
    assert sql.startswith("WITH matches AS MATERIALIZED")
