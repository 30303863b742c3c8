"""Refresh-token families in PostgreSQL, rotated under a row lock.

A family is one sign-in; each refresh spends its current token and adds the next. Every
operation on a family first locks the family row (`SELECT ... FOR UPDATE`), then reads the
token in a fresh statement, so two refreshes racing with one token serialize: the first
rotates, the second sees a spent token and revokes the family.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from typing import Protocol

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# What `pool.acquire()` gives.
Connection = asyncpg.Connection | PoolConnectionProxy


class Outcome(enum.Enum):
    ROTATED = "rotated"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"  # a spent token again: the family is now revoked


@dataclass(frozen=True, slots=True)
class Rotation:
    outcome: Outcome
    user_id: uuid.UUID | None = None
    roles: tuple[str, ...] = ()


class RefreshStore(Protocol):
    async def start_family(self, user_id: uuid.UUID, token_hash: bytes, ttl: int) -> None: ...

    async def rotate(self, old_hash: bytes, new_hash: bytes, ttl: int) -> Rotation: ...

    async def revoke_family(self, token_hash: bytes, reason: str) -> bool: ...


class PostgresRefreshStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def start_family(self, user_id: uuid.UUID, token_hash: bytes, ttl: int) -> None:
        family_id = uuid.uuid4()
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(
                "INSERT INTO refresh_families (id, user_id) VALUES ($1, $2)", family_id, user_id
            )
            await _insert_token(connection, token_hash, family_id, ttl)

    async def rotate(self, old_hash: bytes, new_hash: bytes, ttl: int) -> Rotation:
        async with self._pool.acquire() as connection, connection.transaction():
            family = await _lock_family(connection, old_hash)
            if family is None:
                return Rotation(Outcome.UNKNOWN)
            family_id, user_id = family["id"], family["user_id"]
            if family["revoked_at"] is not None:
                return Rotation(Outcome.REVOKED, user_id)
            # A new statement after the lock: sees what a racing refresh committed.
            token = await connection.fetchrow(
                """
                SELECT spent_at IS NOT NULL AS spent, expires_at <= now() AS expired
                FROM refresh_tokens WHERE token_hash = $1
                """,
                old_hash,
            )
            assert token is not None
            if token["spent"]:
                await _revoke(connection, family_id, "reuse")
                return Rotation(Outcome.REUSED, user_id)
            if token["expired"]:
                return Rotation(Outcome.EXPIRED, user_id)
            await connection.execute(
                "UPDATE refresh_tokens SET spent_at = now() WHERE token_hash = $1", old_hash
            )
            await _insert_token(connection, new_hash, family_id, ttl)
            roles = await connection.fetchval("SELECT roles FROM users WHERE id = $1", user_id)
            return Rotation(Outcome.ROTATED, user_id, tuple(roles))

    async def revoke_family(self, token_hash: bytes, reason: str) -> bool:
        """Revoke the family of the token (any of its tokens); False for an unknown token."""
        async with self._pool.acquire() as connection, connection.transaction():
            family = await _lock_family(connection, token_hash)
            if family is None:
                return False
            if family["revoked_at"] is None:
                await _revoke(connection, family["id"], reason)
            return True


async def _lock_family(connection: Connection, token_hash: bytes) -> asyncpg.Record | None:
    family: asyncpg.Record | None = await connection.fetchrow(
        """
        SELECT id, user_id, revoked_at FROM refresh_families
        WHERE id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)
        FOR UPDATE
        """,
        token_hash,
    )
    return family


async def _insert_token(
    connection: Connection, token_hash: bytes, family_id: uuid.UUID, ttl: int
) -> None:
    await connection.execute(
        """
        INSERT INTO refresh_tokens (token_hash, family_id, expires_at)
        VALUES ($1, $2, now() + make_interval(secs => $3))
        """,
        token_hash,
        family_id,
        float(ttl),
    )


async def _revoke(connection: Connection, family_id: uuid.UUID, reason: str) -> None:
    await connection.execute(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = $2 WHERE id = $1",
        family_id,
        reason,
    )
