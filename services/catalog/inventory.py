"""Reservations: stock taken and returned atomically in PostgreSQL, at most once per key.

A reservation is one SQL statement (so one implicit transaction and one round trip):

1. ``UPDATE products SET stock = stock - n ... WHERE stock >= n``, unless the user already
   has a reservation with this idempotency key: the row lock serialises concurrent
   reservations of a product and the condition is re-checked on the latest row version, so
   stock never goes below zero (a CHECK constraint backs it up); the lock is held only
   while the statement runs and commits, which is what bounds a hot product's throughput;
2. the reservation row, unique per (user, idempotency key), and the ``inventory.reserved``
   event (the outbox row) are inserted from what the UPDATE returned.

When it made nothing, one more read tells why: the key's reservation exists (replayed if
the request is the same, `KeyReused` if not), the product is gone, or the stock is short.
Two concurrent requests with the same key: the second one's insert violates the unique key
once the first commits, its statement is undone (stock included), and it replays the first.
Only successful reservations are recorded: a retry after "out of stock" tries again.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Final, Protocol

import asyncpg
import orjson

from mesh.outbox import Outbox, new_event
from services.catalog.records import ReservationRecord
from services.catalog.store import ProductMissing

INVENTORY_RESERVED: Final = "inventory.reserved"
INVENTORY_RELEASED: Final = "inventory.released"

_COLUMNS: Final = (
    "id, product_id, user_id, quantity, remaining_stock, status, created_at, released_at,"
    " released_stock, request_hash"
)
_COLUMNS_OF_R: Final = ", ".join(f"r.{c.strip()}" for c in _COLUMNS.split(","))


class OutOfStock(Exception):
    def __init__(self, available: int) -> None:
        super().__init__(f"only {available} left")
        self.available = available


class KeyReused(Exception):
    """The idempotency key was used by this user for a different request."""


class ReservationMissing(Exception):
    """No such reservation (or not the caller's)."""


class Inventory(Protocol):
    async def reserve(
        self, user_id: str, product_id: uuid.UUID, quantity: int, idempotency_key: str
    ) -> tuple[ReservationRecord, bool]: ...

    async def release(
        self, reservation_id: uuid.UUID, user_id: str | None
    ) -> tuple[ReservationRecord, bool]: ...


def request_hash(product_id: uuid.UUID, quantity: int) -> bytes:
    return hashlib.sha256(f"{product_id}:{quantity}".encode()).digest()


class PostgresInventory:
    def __init__(self, pool: asyncpg.Pool, outbox: Outbox) -> None:
        self._pool = pool
        self._outbox = outbox
        # One statement, so one round trip and the product's row lock held only while the
        # server runs it (plus the commit): the reservation, the stock and the event.
        self._reserve = f"""
            WITH existing AS (
                SELECT 1 FROM reservations WHERE user_id = $1 AND idempotency_key = $2
            ), taken AS (
                UPDATE products
                SET stock = stock - $4, version = version + 1, updated_at = now()
                WHERE id = $3 AND deleted_at IS NULL AND stock >= $4
                  AND NOT EXISTS (SELECT 1 FROM existing)
                RETURNING stock, version
            ), made AS (
                INSERT INTO reservations (id, product_id, user_id, quantity, idempotency_key,
                                          request_hash, remaining_stock)
                SELECT $5, $3, $1, $4, $2, $6, taken.stock FROM taken
                RETURNING {_COLUMNS}
            ), event AS (
                INSERT INTO {outbox.table} (id, type, subject, occurred_at, payload,
                                            traceparent, tracestate)
                SELECT $7, $8, $3::text, made.created_at,
                       $9::jsonb || jsonb_build_object('remainingStock', taken.stock,
                                                       'productVersion', taken.version),
                       $10, $11
                FROM made, taken
            )
            SELECT made.* FROM made
        """

    async def reserve(
        self, user_id: str, product_id: uuid.UUID, quantity: int, idempotency_key: str
    ) -> tuple[ReservationRecord, bool]:
        """The reservation and whether it was made now (False: a replay)."""
        fingerprint = request_hash(product_id, quantity)
        reservation_id = uuid.uuid4()
        event = new_event(
            INVENTORY_RESERVED,
            str(product_id),
            {
                "reservationId": str(reservation_id),
                "productId": str(product_id),
                "userId": user_id,
                "quantity": quantity,
            },
        )
        try:
            row = await self._pool.fetchrow(
                self._reserve,
                user_id,
                idempotency_key,
                product_id,
                quantity,
                reservation_id,
                fingerprint,
                event.id,
                event.type,
                orjson.dumps(event.payload).decode(),
                event.traceparent,
                event.tracestate,
            )
        except asyncpg.UniqueViolationError:
            row = None  # the same key, committed by a concurrent request: replayed below
        if row is not None:
            return _first_answer(row), True
        after = await self._pool.fetchrow(
            f"""
            SELECT {_COLUMNS_OF_R},
                   (SELECT stock FROM products WHERE id = $3 AND deleted_at IS NULL) AS available
            FROM (SELECT 1) AS one
            LEFT JOIN reservations AS r ON r.user_id = $1 AND r.idempotency_key = $2
            """,
            user_id,
            idempotency_key,
            product_id,
        )
        assert after is not None
        if after["id"] is not None:
            if after["request_hash"] != fingerprint:
                raise KeyReused(idempotency_key)
            return _first_answer(after), False
        if after["available"] is None:
            raise ProductMissing(str(product_id))
        raise OutOfStock(after["available"])

    async def release(
        self, reservation_id: uuid.UUID, user_id: str | None
    ) -> tuple[ReservationRecord, bool]:
        """The released reservation and whether it was released now (False: already was).

        `user_id` None releases anyone's (an admin); otherwise only that user's.
        """
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"SELECT {_COLUMNS} FROM reservations WHERE id = $1 FOR UPDATE", reservation_id
            )
            if row is None or (user_id is not None and row["user_id"] != user_id):
                raise ReservationMissing(str(reservation_id))
            if row["status"] == "released":
                return _released(row), False
            restocked = await connection.fetchrow(
                "UPDATE products SET stock = stock + $2, version = version + 1,"
                " updated_at = now() WHERE id = $1 RETURNING stock, version",
                row["product_id"],
                row["quantity"],
            )
            assert restocked is not None  # products are never hard-deleted
            updated = await connection.fetchrow(
                "UPDATE reservations SET status = 'released', released_at = now(),"
                f" released_stock = $2 WHERE id = $1 RETURNING {_COLUMNS}",
                reservation_id,
                restocked["stock"],
            )
            assert updated is not None
            record = _released(updated)
            assert record.released_at is not None
            await self._outbox.add(
                connection,
                new_event(
                    INVENTORY_RELEASED,
                    str(record.product_id),
                    _payload(record, restocked["stock"], restocked["version"]),
                    record.released_at,
                ),
            )
        return record, True


def _payload(record: ReservationRecord, stock: int, version: int) -> dict[str, object]:
    return {
        "reservationId": str(record.id),
        "productId": str(record.product_id),
        "userId": record.user_id,
        "quantity": record.quantity,
        "remainingStock": stock,
        "productVersion": version,
    }


def _first_answer(row: asyncpg.Record) -> ReservationRecord:
    """The reservation as its first answer said (what a replay returns)."""
    return ReservationRecord(
        id=row["id"],
        product_id=row["product_id"],
        user_id=row["user_id"],
        quantity=row["quantity"],
        remaining_stock=row["remaining_stock"],
        status="active",
        created_at=row["created_at"],
    )


def _released(row: asyncpg.Record) -> ReservationRecord:
    return ReservationRecord(
        id=row["id"],
        product_id=row["product_id"],
        user_id=row["user_id"],
        quantity=row["quantity"],
        remaining_stock=row["released_stock"],
        status="released",
        created_at=row["created_at"],
        released_at=row["released_at"],
    )
