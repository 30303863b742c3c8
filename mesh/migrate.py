"""Versioned SQL migrations for the PostgreSQL-backed services.

Each service keeps its migrations as `NNNN_description.sql` files in a package
(`services/<name>/migrations/`), numbered from 0001 without gaps. `migrate` applies the ones
a database lacks, each in its own transaction together with its row in `schema_migrations`,
so a failing file leaves no trace. A session advisory lock serializes concurrent migrators
(two processes starting at once), and the checksums of applied files are verified: editing
an applied migration is an error; write a new one instead.

A migration file runs as one multi-statement script inside a transaction, so statements that
cannot run in a transaction (`CREATE INDEX CONCURRENTLY`, `VACUUM`) do not belong in one.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import asyncpg

from mesh.settings import with_database

logger = logging.getLogger("mesh.migrate")

POSTGRES_SERVICES: Final = {
    "users": "services.users.migrations",
    "catalog": "services.catalog.migrations",
}

TABLE: Final = "schema_migrations"
# pg_advisory_lock takes a bigint; advisory locks are per database, so services do not contend.
LOCK_KEY: Final = int.from_bytes(hashlib.sha256(TABLE.encode()).digest()[:8], "big", signed=True)

_FILE_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_DATABASE_NAME: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_CREATE_TABLE: Final = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """Migrations that cannot be applied safely (bad file, gap, edited applied file, ...)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str  # the description part of the file name
    sql: str
    checksum: str  # sha256 hex of the SQL text (UTF-8)

    @classmethod
    def from_sql(cls, version: int, name: str, sql: str) -> Migration:
        return cls(version, name, sql, hashlib.sha256(sql.encode()).hexdigest())

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def check_sequence(migrations: Sequence[Migration], where: str = "migrations") -> None:
    """Versions must be 1, 2, 3, ... in order: no duplicate, no gap."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            seen = [m.version for m in migrations]
            if seen.count(migration.version) > 1:
                problem = f"duplicate version {migration.version:04d}"
            else:
                problem = f"expected version {expected:04d}, found {migration.label}"
            raise MigrationError(f"{where}: {problem} (versions start at 0001, without gaps)")


def discover(package: str) -> list[Migration]:
    """The migrations in `package` (files `NNNN_description.sql`), sorted by version."""
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as error:
        raise MigrationError(f"no migrations package {package!r}") from error
    migrations: list[Migration] = []
    for entry in root.iterdir():
        if not entry.name.endswith(".sql") or not entry.is_file():
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(
                f"{package}: bad migration file name {entry.name!r}"
                " (expected NNNN_description.sql, description in [a-z0-9_])"
            )
        sql = entry.read_text(encoding="utf-8")
        if not sql.strip():
            raise MigrationError(f"{package}: {entry.name} is empty")
        migrations.append(Migration.from_sql(int(match[1]), match[2], sql))
    migrations.sort(key=lambda m: (m.version, m.name))
    check_sequence(migrations, package)
    return migrations


def database_name(service: str, namespace: str = "") -> str:
    """The service's database name: `namespace + service`, e.g. "users" or "t1a2b_users"."""
    name = namespace + service
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"bad database name {name!r}: expected [a-z_][a-z0-9_]*, 63 at most")
    return name


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def ensure_database(server_dsn: str, name: str) -> bool:
    """Create database `name` unless it exists; True if this call created it.

    Race-safe: when two callers create the same database at once, both succeed.
    """
    connection = await asyncpg.connect(server_dsn)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await connection.execute(f"CREATE DATABASE {quote_identifier(name)}")
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # created concurrently by another caller
    finally:
        await connection.close()
    logger.info("created database %s", name)
    return True


async def migrate(dsn: str, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations the database at `dsn` lacks; returns the versions applied."""
    check_sequence(migrations)
    database = urlsplit(dsn).path.lstrip("/") or "?"
    connection = await asyncpg.connect(dsn)
    try:
        # Session-level lock: released by the explicit unlock or, at worst, by disconnecting.
        await connection.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
        await connection.execute(_CREATE_TABLE)
        rows = await connection.fetch(f"SELECT version, name, checksum FROM {TABLE}")
        applied = {row["version"]: (row["name"], row["checksum"]) for row in rows}
        pending = _pending(database, migrations, applied)
        for migration in pending:
            began = time.monotonic()
            try:
                async with connection.transaction():
                    await connection.execute(migration.sql)
                    await connection.execute(
                        f"INSERT INTO {TABLE} (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as error:
                raise MigrationError(
                    f"database {database}: migration {migration.label} failed and was rolled"
                    f" back: {type(error).__name__}: {error}"
                ) from error
            logger.info(
                "database %s: applied migration %s in %.3f s",
                database,
                migration.label,
                time.monotonic() - began,
            )
        await connection.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
        return [m.version for m in pending]
    finally:
        await connection.close()


def _pending(
    database: str, migrations: Sequence[Migration], applied: Mapping[int, tuple[str, str]]
) -> list[Migration]:
    known = {m.version for m in migrations}
    for migration in migrations:
        if migration.version in applied and applied[migration.version][1] != migration.checksum:
            raise MigrationError(
                f"database {database}: migration {migration.label} was changed after it was"
                " applied (checksum mismatch); add a new migration instead of editing it"
            )
    newer = sorted(set(applied) - known)
    if newer:
        logger.warning(
            "database %s: has migrations this code does not know: %s (a newer release?)",
            database,
            ", ".join(f"{v:04d}" for v in newer),
        )
    pending = [m for m in migrations if m.version not in applied]
    if pending and applied and pending[0].version < max(applied):
        raise MigrationError(
            f"database {database}: migration {pending[0].label} is missing but later version"
            f" {max(applied):04d} is applied; renumber it after the applied ones"
        )
    return pending


async def migrate_all(
    server_dsn: str, namespace: str = "", *, services: Mapping[str, str] = POSTGRES_SERVICES
) -> dict[str, list[int]]:
    """Create each service's database if missing and bring it up to date.

    Returns the versions applied per service. `services` maps a service to its migrations
    package (POSTGRES_SERVICES by default).
    """
    applied: dict[str, list[int]] = {}
    for service, package in services.items():
        migrations = await asyncio.to_thread(discover, package)
        name = database_name(service, namespace)
        await ensure_database(server_dsn, name)
        applied[service] = await migrate(with_database(server_dsn, name), migrations)
    return applied
