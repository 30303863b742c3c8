"""Where accounts live: a small interface and its PostgreSQL implementation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: uuid.UUID
    email: str
    display_name: str
    roles: tuple[str, ...]
    created_at: datetime


class EmailTaken(Exception):
    """An account with this email exists already."""


class UserStore(Protocol):
    async def create(self, email: str, display_name: str, password_hash: str) -> UserRecord: ...


class PostgresUserStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, email: str, display_name: str, password_hash: str) -> UserRecord:
        try:
            row = await self._pool.fetchrow(
                """
                INSERT INTO users (id, email, display_name, password_hash)
                VALUES ($1, $2, $3, $4)
                RETURNING id, email, display_name, roles, created_at
                """,
                uuid.uuid4(),
                email,
                display_name,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise EmailTaken(email) from None
        assert row is not None
        return UserRecord(
            row["id"], row["email"], row["display_name"], tuple(row["roles"]), row["created_at"]
        )
