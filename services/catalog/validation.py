"""Checks on what clients send, each failure naming the JSON field (proto3 JSON names).

Strings are stored exactly as given (quotes, ``%``, ``;`` and the like are plain text:
every value reaches SQL as a parameter); only control characters are refused, and NUL,
which PostgreSQL text cannot hold.
"""

from __future__ import annotations

import re
from typing import Any, Final

import iso4217
import orjson

from mesh.errors import FieldError

SKU_MAX: Final = 64
NAME_MAX: Final = 200
DESCRIPTION_MAX: Final = 5000
CATEGORY_MAX: Final = 64
ATTRIBUTES_MAX_BYTES: Final = 16 * 1024
STOCK_MAX: Final = 10_000_000
QUANTITY_MAX: Final = 1000
IDEMPOTENCY_KEY_MAX: Final = 128

# ISO 4217 codes of currencies with a minor unit (so "cents" mean something): excludes
# precious metals, SDRs, testing and "no currency" codes.
CURRENCIES: Final = frozenset(c.code for c in iso4217.Currency if c.exponent is not None)

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_WHITESPACE: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def check_text(
    errors: list[FieldError], field: str, value: str, *, maximum: int, required: bool = True
) -> None:
    if required and not value.strip():
        errors.append(FieldError(field, "is required"))
    elif len(value) > maximum:
        errors.append(FieldError(field, f"must be at most {maximum} characters"))
    elif _CONTROL.search(value):
        errors.append(FieldError(field, "must not contain control characters"))


def check_description(errors: list[FieldError], value: str) -> None:
    if len(value) > DESCRIPTION_MAX:
        errors.append(FieldError("description", f"must be at most {DESCRIPTION_MAX} characters"))
    elif _CONTROL_BUT_WHITESPACE.search(value):
        errors.append(FieldError("description", "must not contain control characters"))


def check_price(errors: list[FieldError], value: int) -> None:
    if value <= 0:
        errors.append(FieldError("priceCents", "must be greater than 0"))


def check_stock(errors: list[FieldError], value: int) -> None:
    if value < 0:
        errors.append(FieldError("stock", "must not be negative"))
    elif value > STOCK_MAX:
        errors.append(FieldError("stock", f"must be at most {STOCK_MAX}"))


def normalize_currency(errors: list[FieldError], value: str) -> str:
    code = value.strip().upper()
    if not code:
        errors.append(FieldError("currency", "is required"))
    elif code not in CURRENCIES:
        errors.append(FieldError("currency", "must be an ISO 4217 currency code, e.g. EUR"))
    return code


def check_attributes(errors: list[FieldError], value: dict[str, Any]) -> None:
    encoded = orjson.dumps(value)
    if len(encoded) > ATTRIBUTES_MAX_BYTES:
        errors.append(
            FieldError("attributes", f"must be at most {ATTRIBUTES_MAX_BYTES} bytes as JSON")
        )
    elif b"\\u0000" in encoded:
        errors.append(FieldError("attributes", "must not contain NUL characters"))
