"""Where accounts live: a small interface and its PostgreSQL implementation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

import asyncpg

from mesh.outbox import Event, Outbox, new_event
from services.users.page_tokens import Cursor

_COLUMNS: Final = "id, email, display_name, roles, created_at"


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: uuid.UUID
    email: str
    display_name: str
    roles: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Credentials:
    user: UserRecord
    password_hash: str


class EmailTaken(Exception):
    """An account with this email exists already."""


class UnknownEmail(Exception):
    """No account has this email."""


class UserStore(Protocol):
    async def create(self, email: str, display_name: str, password_hash: str) -> UserRecord: ...

    async def get(self, user_id: uuid.UUID) -> UserRecord | None: ...

    async def credentials(self, email: str) -> Credentials | None: ...

    async def replace_password_hash(self, user_id: uuid.UUID, old: str, new: str) -> bool: ...

    async def set_display_name(
        self, user_id: uuid.UUID, display_name: str
    ) -> UserRecord | None: ...

    async def page(self, after: Cursor | None, limit: int) -> list[UserRecord]: ...

    async def add_role(self, email: str, role: str) -> tuple[UserRecord, bool]: ...


OUTBOX_TABLE = "outbox"
USER_REGISTERED = "user.registered"


def _record(row: asyncpg.Record) -> UserRecord:
    return UserRecord(
        row["id"], row["email"], row["display_name"], tuple(row["roles"]), row["created_at"]
    )


def registered_event(user: UserRecord) -> Event:
    """The domain event of a new account (no email: consumers need the id, not the PII)."""
    return new_event(
        USER_REGISTERED,
        str(user.id),
        {
            "userId": str(user.id),
            "roles": list(user.roles),
            "createdAt": user.created_at.isoformat(),
        },
    )


class PostgresUserStore:
    def __init__(self, pool: asyncpg.Pool, outbox: Outbox | None = None) -> None:
        self._pool = pool
        self._outbox = outbox or Outbox(OUTBOX_TABLE)

    async def create(self, email: str, display_name: str, password_hash: str) -> UserRecord:
        """Insert the account and its `user.registered` event in one transaction."""
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                row = await connection.fetchrow(
                    f"""
                    INSERT INTO users (id, email, display_name, password_hash)
                    VALUES ($1, $2, $3, $4)
                    RETURNING {_COLUMNS}
                    """,
                    uuid.uuid4(),
                    email,
                    display_name,
                    password_hash,
                )
                assert row is not None
                user = _record(row)
                await self._outbox.add(connection, registered_event(user))
        except asyncpg.UniqueViolationError:
            raise EmailTaken(email) from None
        return user

    async def get(self, user_id: uuid.UUID) -> UserRecord | None:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1", user_id)
        return None if row is None else _record(row)

    async def credentials(self, email: str) -> Credentials | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS}, password_hash FROM users WHERE email = $1", email
        )
        return None if row is None else Credentials(_record(row), row["password_hash"])

    async def replace_password_hash(self, user_id: uuid.UUID, old: str, new: str) -> bool:
        """Swap the hash unless it changed meanwhile (a concurrent login upgraded it)."""
        status: str = await self._pool.execute(
            """
            UPDATE users SET password_hash = $3, updated_at = now()
            WHERE id = $1 AND password_hash = $2
            """,
            user_id,
            old,
            new,
        )
        return status == "UPDATE 1"

    async def set_display_name(self, user_id: uuid.UUID, display_name: str) -> UserRecord | None:
        row = await self._pool.fetchrow(
            f"""
            UPDATE users SET display_name = $2, updated_at = now()
            WHERE id = $1
            RETURNING {_COLUMNS}
            """,
            user_id,
            display_name,
        )
        return None if row is None else _record(row)

    async def page(self, after: Cursor | None, limit: int) -> list[UserRecord]:
        """Up to `limit` accounts after `after` in (created_at, id) order."""
        rows: Sequence[asyncpg.Record]
        if after is None:
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM users ORDER BY created_at, id LIMIT $1", limit
            )
        else:
            rows = await self._pool.fetch(
                f"""
                SELECT {_COLUMNS} FROM users
                WHERE (created_at, id) > ($1, $2)
                ORDER BY created_at, id
                LIMIT $3
                """,
                after.created_at,
                after.id,
                limit,
            )
        return [_record(row) for row in rows]

    async def add_role(self, email: str, role: str) -> tuple[UserRecord, bool]:
        """Give the account `role`; returns it and whether it changed. Idempotent."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                f"SELECT {_COLUMNS} FROM users WHERE email = $1 FOR UPDATE", email
            )
            if row is None:
                raise UnknownEmail(email)
            if role in row["roles"]:
                return _record(row), False
            row = await connection.fetchrow(
                f"""
                UPDATE users SET roles = array_append(roles, $2), updated_at = now()
                WHERE id = $1
                RETURNING {_COLUMNS}
                """,
                row["id"],
                role,
            )
            assert row is not None
            return _record(row), True
