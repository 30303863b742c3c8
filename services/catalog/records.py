"""The catalog's plain data: products, reservations, and their JSON form.

The JSON form (`product_json`) is the proto3 JSON mapping of `catalog.v1.Product`
(lowerCamelCase, RFC 3339 UTC times, the version as a number): it is what the read cache
stores and what domain events carry, so both read like the public API.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ProductRecord:
    id: uuid.UUID
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    category: str
    attributes: dict[str, Any]
    stock: int
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewProduct:
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    category: str
    attributes: dict[str, Any] = field(default_factory=dict)
    stock: int = 0


@dataclass(frozen=True, slots=True)
class ProductChanges:
    """The fields a PATCH sets; None leaves a field as it is."""

    sku: str | None = None
    name: str | None = None
    description: str | None = None
    price_cents: int | None = None
    currency: str | None = None
    category: str | None = None
    attributes: dict[str, Any] | None = None
    stock: int | None = None

    def columns(self) -> dict[str, object]:
        """The changed columns and their new values."""
        values = {
            "sku": self.sku,
            "name": self.name,
            "description": self.description,
            "price_cents": self.price_cents,
            "currency": self.currency,
            "category": self.category,
            "attributes": self.attributes,
            "stock": self.stock,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True, slots=True)
class CategoryCount:
    name: str
    product_count: int


@dataclass(frozen=True, slots=True)
class ReservationRecord:
    id: uuid.UUID
    product_id: uuid.UUID
    user_id: str
    quantity: int
    remaining_stock: int
    status: str  # "active" or "released"
    created_at: datetime
    released_at: datetime | None = None


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def product_json(product: ProductRecord) -> dict[str, Any]:
    return {
        "id": str(product.id),
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "priceCents": product.price_cents,
        "currency": product.currency,
        "category": product.category,
        "attributes": product.attributes,
        "stock": product.stock,
        "version": product.version,
        "createdAt": _time(product.created_at),
        "updatedAt": _time(product.updated_at),
    }


def product_from_json(document: dict[str, Any]) -> ProductRecord:
    return ProductRecord(
        id=uuid.UUID(document["id"]),
        sku=document["sku"],
        name=document["name"],
        description=document["description"],
        price_cents=document["priceCents"],
        currency=document["currency"],
        category=document["category"],
        attributes=document["attributes"],
        stock=document["stock"],
        version=document["version"],
        created_at=datetime.fromisoformat(document["createdAt"]),
        updated_at=datetime.fromisoformat(document["updatedAt"]),
    )


def encode_product(product: ProductRecord) -> bytes:
    return orjson.dumps(product_json(product))


def decode_product(raw: bytes) -> ProductRecord:
    return product_from_json(orjson.loads(raw))
