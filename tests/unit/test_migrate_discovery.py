"""Finding migration files: names, order, checksums, and the sequences that are refused."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from mesh.migrate import (
    Migration,
    MigrationError,
    check_sequence,
    database_name,
    discover,
)

MigrationsPackage = Callable[[dict[str, str]], str]


def test_discovers_sql_files_sorted_by_version(migrations_package: MigrationsPackage) -> None:
    package = migrations_package(
        {
            "0003_add_index.sql": "CREATE INDEX i ON t (a);",
            "0001_create_table.sql": "CREATE TABLE t (a int);",
            "0002_seed.sql": "INSERT INTO t VALUES (1);",
            "README.md": "not a migration",
            "notes.txt": "0004_ignored.sql",
        }
    )

    migrations = discover(package)

    assert [(m.version, m.name) for m in migrations] == [
        (1, "create_table"),
        (2, "seed"),
        (3, "add_index"),
    ]
    assert migrations[0].sql == "CREATE TABLE t (a int);"
    assert migrations[0].checksum == hashlib.sha256(b"CREATE TABLE t (a int);").hexdigest()
    assert migrations[2].label == "0003_add_index"


def test_package_without_sql_files_has_no_migrations(
    migrations_package: MigrationsPackage,
) -> None:
    assert discover(migrations_package({})) == []


@pytest.mark.parametrize(
    "file_name",
    [
        "1_create.sql",
        "00001_create.sql",
        "0001-create.sql",
        "0001_Create.sql",
        "0001_.sql",
        "0001_create table.sql",
        "create.sql",
        "0001_create.SQL.sql",
    ],
)
def test_bad_file_name_is_rejected(migrations_package: MigrationsPackage, file_name: str) -> None:
    package = migrations_package({"0001_ok.sql": "SELECT 1;", file_name: "SELECT 2;"})

    with pytest.raises(MigrationError, match="bad migration file name") as error:
        discover(package)
    assert repr(file_name) in str(error.value)


def test_duplicate_versions_are_rejected(migrations_package: MigrationsPackage) -> None:
    package = migrations_package({"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 2;"})

    with pytest.raises(MigrationError, match="duplicate version 0001"):
        discover(package)


def test_gap_in_versions_is_rejected(migrations_package: MigrationsPackage) -> None:
    package = migrations_package({"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 3;"})

    with pytest.raises(MigrationError, match="expected version 0002, found 0003_c"):
        discover(package)


def test_versions_start_at_one(migrations_package: MigrationsPackage) -> None:
    package = migrations_package({"0002_b.sql": "SELECT 2;"})

    with pytest.raises(MigrationError, match="expected version 0001"):
        discover(package)


def test_empty_file_is_rejected(migrations_package: MigrationsPackage) -> None:
    package = migrations_package({"0001_a.sql": "  \n"})

    with pytest.raises(MigrationError, match=r"0001_a\.sql is empty"):
        discover(package)


def test_missing_package_is_a_migration_error() -> None:
    with pytest.raises(MigrationError, match="no migrations package"):
        discover("no_such_package_for_migrations")


def test_check_sequence_rejects_duplicates_in_a_list() -> None:
    one = Migration.from_sql(1, "a", "SELECT 1;")
    check_sequence([one, Migration.from_sql(2, "b", "SELECT 2;")])
    with pytest.raises(MigrationError, match="duplicate version 0001"):
        check_sequence([one, Migration.from_sql(1, "b", "SELECT 2;")])


def test_database_name() -> None:
    assert database_name("users") == "users"
    assert database_name("users", "t1a2b_") == "t1a2b_users"
    with pytest.raises(ValueError, match="bad database name"):
        database_name("users", "Bad-")
    with pytest.raises(ValueError, match="bad database name"):
        database_name("x" * 64)
