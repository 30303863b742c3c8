"""Entity tags and versions of conditional writes, and product validation."""

from __future__ import annotations

import pytest

from mesh.errors import FieldError
from services.catalog import validation
from services.catalog.service import etag, expected_versions, plain_json, versions_from_if_match


def test_etags_are_strong_and_versioned() -> None:
    assert etag(7) == '"v7"'


@pytest.mark.parametrize(
    ("header", "versions"),
    [
        ('"v3"', {3}),
        ('"v3", "v4" ,"v5"', {3, 4, 5}),
        ('W/"v3"', set()),  # weak tags never match a write's precondition
        ('"3"', set()),
        ("v3", set()),
        ('"v3', set()),
        ("", set()),
        ('"v99999999999999999999"', set()),
    ],
)
def test_if_match_versions(header: str, versions: set[int]) -> None:
    assert versions_from_if_match(header) == frozenset(versions)


def test_star_and_absent_conditions() -> None:
    assert versions_from_if_match(" * ") is None
    assert expected_versions(None, None) is None
    assert expected_versions("*", None) is None
    assert expected_versions(None, 4) == {4}
    assert expected_versions('"v4", "v5"', 5) == {5}
    assert expected_versions('"v4"', 5) == frozenset()


def test_struct_numbers_become_integers_when_whole() -> None:
    assert plain_json({"a": 60.0, "b": [1.0, 1.5, {"c": -2.0}], "d": 2.0**60}) == {
        "a": 60,
        "b": [1, 1.5, {"c": -2}],
        "d": 2.0**60,
    }


def test_currencies_are_current_iso_4217_codes_with_minor_units() -> None:
    assert {"EUR", "USD", "JPY", "GBP", "CHF", "BHD"} <= validation.CURRENCIES
    assert not {"XXX", "XAU", "XTS", "ABC", "DEM"} & validation.CURRENCIES
    errors: list[FieldError] = []
    assert validation.normalize_currency(errors, " usd ") == "USD"
    assert errors == []
    validation.normalize_currency(errors, "usdollar")
    assert errors == [FieldError("currency", "must be an ISO 4217 currency code, e.g. EUR")]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("Tea pot", True),
        ("'; DROP TABLE products; --", True),
        ("", False),
        ("   ", False),
        ("a\x00b", False),
        ("line\nbreak", False),
        ("x" * 64, True),
        ("x" * 65, False),
    ],
)
def test_short_texts(value: str, ok: bool) -> None:
    errors: list[FieldError] = []
    validation.check_text(errors, "sku", value, maximum=64)
    assert (errors == []) is ok


def test_descriptions_may_span_lines_but_hold_no_other_control_characters() -> None:
    errors: list[FieldError] = []
    validation.check_description(errors, "line one\nline two\ttabbed")
    assert errors == []
    validation.check_description(errors, "bell\x07")
    assert [e.field for e in errors] == ["description"]


def test_attributes_are_bounded_and_nul_free() -> None:
    errors: list[FieldError] = []
    validation.check_attributes(errors, {"ok": "yes"})
    assert errors == []
    validation.check_attributes(errors, {"k": "x" * 20_000})
    validation.check_attributes(errors, {"nul\x00key": 1})
    assert [e.field for e in errors] == ["attributes", "attributes"]
