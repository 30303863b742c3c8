"""Where products live: a small interface and its PostgreSQL implementation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
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


class ProductStore(Protocol):
    async def get(self, product_id: uuid.UUID) -> ProductRecord | None: ...


_COLUMNS = (
    "id, sku, name, description, price_cents, currency, category, attributes, stock, "
    "version, created_at, updated_at"
)


class PostgresProductStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, product_id: uuid.UUID) -> ProductRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM products WHERE id = $1 AND deleted_at IS NULL", product_id
        )
        return None if row is None else _record(row)


def _record(row: asyncpg.Record) -> ProductRecord:
    attributes = row["attributes"]
    return ProductRecord(
        id=row["id"],
        sku=row["sku"],
        name=row["name"],
        description=row["description"],
        price_cents=row["price_cents"],
        currency=row["currency"],
        category=row["category"],
        attributes=orjson.loads(attributes) if isinstance(attributes, str) else attributes,
        stock=row["stock"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
