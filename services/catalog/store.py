"""Where products live: a small interface and its PostgreSQL implementation.

Every write emits its domain event into the outbox in the same transaction. Products are
soft-deleted (``deleted_at``), which frees their SKU; every change, stock included, bumps
``version``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any, Final, Protocol

import asyncpg
import orjson

from mesh.outbox import Connection, Event, Outbox, new_event
from services.catalog.listing import MAX_CORRECTIONS, Corrections, Cursor, ListQuery, Order, SortKey
from services.catalog.records import (
    CategoryCount,
    NewProduct,
    ProductChanges,
    ProductRecord,
    product_json,
)

PRODUCT_CREATED: Final = "product.created"
PRODUCT_UPDATED: Final = "product.updated"
PRODUCT_DELETED: Final = "product.deleted"

COLUMNS: Final = (
    "id, sku, name, description, price_cents, currency, category, attributes, stock, "
    "version, created_at, updated_at"
)
_JSON_NAMES: Final = {
    "sku": "sku",
    "name": "name",
    "description": "description",
    "price_cents": "priceCents",
    "currency": "currency",
    "category": "category",
    "attributes": "attributes",
    "stock": "stock",
}


class SkuTaken(Exception):
    """A live product has this SKU already."""


class ProductMissing(Exception):
    """No live product has this id."""


class StaleVersion(Exception):
    """The product is not at any of the expected versions."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the product is at version {current}")
        self.current = current


class ProductStore(Protocol):
    async def get(self, product_id: uuid.UUID) -> ProductRecord | None: ...

    async def corrections(self, words: Sequence[str]) -> Corrections: ...

    async def page(
        self, query: ListQuery, corrections: Corrections, after: Cursor | None, limit: int
    ) -> list[tuple[ProductRecord, SortKey]]: ...

    async def categories(self) -> list[CategoryCount]: ...

    async def create(self, product: NewProduct) -> ProductRecord: ...

    async def update(
        self,
        product_id: uuid.UUID,
        changes: ProductChanges,
        expected_versions: Collection[int] | None,
    ) -> ProductRecord: ...

    async def delete(
        self, product_id: uuid.UUID, expected_versions: Collection[int] | None
    ) -> ProductRecord: ...


class PostgresProductStore:
    def __init__(self, pool: asyncpg.Pool, outbox: Outbox) -> None:
        self._pool = pool
        self._outbox = outbox

    async def get(self, product_id: uuid.UUID) -> ProductRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {COLUMNS} FROM products WHERE id = $1 AND deleted_at IS NULL", product_id
        )
        return None if row is None else product_record(row)

    async def corrections(self, words: Sequence[str]) -> Corrections:
        """For each word, the known words it may be a typo of: none when it is the prefix of
        a known word (or shorter than 3 letters), else the nearest ones by trigram
        similarity (pg_trgm ``%``, at least 0.3), closest first."""
        rows = await self._pool.fetch(
            r"""
            SELECT CASE
                WHEN length(q.word) < 3 OR EXISTS (
                    SELECT 1 FROM search_words AS known
                    WHERE known.word LIKE replace(q.word, '_', '\_') || '%'
                ) THEN ARRAY[]::text[]
                ELSE ARRAY(
                    SELECT known.word FROM search_words AS known
                    WHERE known.word % q.word
                    ORDER BY known.word <-> q.word, known.word
                    LIMIT $2
                )
            END AS alternatives
            FROM unnest($1::text[]) WITH ORDINALITY AS q(word, n)
            ORDER BY q.n
            """,
            list(words),
            MAX_CORRECTIONS,
        )
        return tuple(tuple(row["alternatives"]) for row in rows)

    async def page(
        self, query: ListQuery, corrections: Corrections, after: Cursor | None, limit: int
    ) -> list[tuple[ProductRecord, SortKey]]:
        sql, params = list_sql(query, corrections, after, limit)
        rows = await self._pool.fetch(sql, *params)
        return [(product_record(row), row["sort_key"]) for row in rows]

    async def categories(self) -> list[CategoryCount]:
        rows = await self._pool.fetch(
            "SELECT category, count(*) AS products FROM products WHERE deleted_at IS NULL"
            " GROUP BY category ORDER BY category"
        )
        return [CategoryCount(row["category"], row["products"]) for row in rows]

    async def create(self, product: NewProduct) -> ProductRecord:
        async with self._pool.acquire() as connection, connection.transaction():
            try:
                row = await connection.fetchrow(
                    f"""
                    INSERT INTO products (id, sku, name, description, price_cents, currency,
                                          category, attributes, stock)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
                    RETURNING {COLUMNS}
                    """,
                    uuid.uuid4(),
                    product.sku,
                    product.name,
                    product.description,
                    product.price_cents,
                    product.currency,
                    product.category,
                    orjson.dumps(product.attributes).decode(),
                    product.stock,
                )
            except asyncpg.UniqueViolationError:
                raise SkuTaken(product.sku) from None
            assert row is not None
            record = product_record(row)
            await self._outbox.add(connection, _product_event(PRODUCT_CREATED, record))
        return record

    async def update(
        self,
        product_id: uuid.UUID,
        changes: ProductChanges,
        expected_versions: Collection[int] | None,
    ) -> ProductRecord:
        columns = changes.columns()
        params: list[object] = [product_id]
        assignments = ["version = version + 1", "updated_at = now()"]
        for column, value in columns.items():
            if column == "attributes":
                params.append(orjson.dumps(value).decode())
                assignments.append(f"attributes = ${len(params)}::jsonb")
            else:
                params.append(value)
                assignments.append(f"{column} = ${len(params)}")
        condition = "id = $1 AND deleted_at IS NULL"
        if expected_versions is not None:
            params.append(sorted(expected_versions))
            condition += f" AND version = ANY(${len(params)}::bigint[])"
        async with self._pool.acquire() as connection, connection.transaction():
            try:
                row = await connection.fetchrow(
                    f"UPDATE products SET {', '.join(assignments)} WHERE {condition}"
                    f" RETURNING {COLUMNS}",
                    *params,
                )
            except asyncpg.UniqueViolationError:
                raise SkuTaken(str(changes.sku)) from None
            if row is None:
                raise await _why_not(connection, product_id)
            record = product_record(row)
            changed = [_JSON_NAMES[c] for c in columns]
            await self._outbox.add(
                connection, _product_event(PRODUCT_UPDATED, record, changed=changed)
            )
        return record

    async def delete(
        self, product_id: uuid.UUID, expected_versions: Collection[int] | None
    ) -> ProductRecord:
        params: list[object] = [product_id]
        condition = "id = $1 AND deleted_at IS NULL"
        if expected_versions is not None:
            params.append(sorted(expected_versions))
            condition += " AND version = ANY($2::bigint[])"
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "UPDATE products SET deleted_at = now(), updated_at = now(),"
                f" version = version + 1 WHERE {condition} RETURNING {COLUMNS}",
                *params,
            )
            if row is None:
                raise await _why_not(connection, product_id)
            record = product_record(row)
            event = new_event(
                PRODUCT_DELETED,
                str(record.id),
                {"id": str(record.id), "sku": record.sku, "version": record.version},
                record.updated_at,
            )
            await self._outbox.add(connection, event)
        return record


async def _why_not(connection: Connection, product_id: uuid.UUID) -> Exception:
    current = await connection.fetchval(
        "SELECT version FROM products WHERE id = $1 AND deleted_at IS NULL", product_id
    )
    return ProductMissing(str(product_id)) if current is None else StaleVersion(current)


def _product_event(type: str, record: ProductRecord, **extra: Any) -> Event:
    return new_event(type, str(record.id), {**product_json(record), **extra}, record.updated_at)


def product_record(row: asyncpg.Record) -> ProductRecord:
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


_KEY_COLUMNS: Final = {
    Order.PRICE: "price_cents",
    Order.PRICE_DESC: "price_cents",
    Order.CREATED: "created_at",
    Order.CREATED_DESC: "created_at",
}


def list_sql(
    query: ListQuery, corrections: Corrections, after: Cursor | None, limit: int
) -> tuple[str, Sequence[object]]:
    """The SELECT of one page: filters, search, keyset position, order; and its parameters.

    Values only ever reach SQL as parameters; `q` becomes a to_tsquery() text made of words,
    ``:*``, ``|``, ``&`` and parentheses only (see `SearchText`), so it is matched literally.
    """
    params: list[object] = []

    def param(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    where = ["deleted_at IS NULL"]
    if query.category is not None:
        where.append(f"category = {param(query.category)}")
    if query.min_price_cents is not None:
        where.append(f"price_cents >= {param(query.min_price_cents)}")
    if query.max_price_cents is not None:
        where.append(f"price_cents <= {param(query.max_price_cents)}")
    if query.in_stock is True:
        where.append("stock > 0")
    elif query.in_stock is False:
        where.append("stock = 0")
    score = "0::float8"
    if query.text is not None:
        if query.text.words:
            tsquery = f"to_tsquery('english', {param(query.text.tsquery(corrections))})"
            where.append(f"search @@ {tsquery}")
            score = f"ts_rank(search, {tsquery})::float8"
        else:
            where.append("false")
    direction = "DESC" if query.order.descending else "ASC"
    compare = "<" if query.order.descending else ">"
    if query.order is Order.RELEVANCE:
        inner = f"SELECT {COLUMNS}, {score} AS sort_key FROM products WHERE {' AND '.join(where)}"
        position = ""
        if after is not None:
            position = (
                f" WHERE (sort_key, id) {compare} ({param(after.key)}::float8,"
                f" {param(after.id)}::uuid)"
            )
        sql = (
            f"SELECT * FROM ({inner}) AS matches{position}"
            f" ORDER BY sort_key {direction}, id {direction} LIMIT {param(limit)}"
        )
        return sql, params
    key = _KEY_COLUMNS[query.order]
    if after is not None:
        where.append(f"({key}, id) {compare} ({param(after.key)}, {param(after.id)})")
    matching = f"SELECT {COLUMNS}, {key} AS sort_key FROM products WHERE {' AND '.join(where)}"
    order = f"ORDER BY sort_key {direction}, id {direction} LIMIT {param(limit)}"
    if query.text is not None:
        # Find the matches through the text index, then sort them: walking the price or date
        # index and testing each row against the text costs rows, not matches, when the
        # matches sit far along that index.
        return f"WITH matches AS MATERIALIZED ({matching}) SELECT * FROM matches {order}", params
    return f"{matching} {order}", params
