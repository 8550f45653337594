"""Versioned schema migrations, shipped as package data and applied under an advisory lock."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

import psycopg
from evercore.errors import SchemaVersionError
from psycopg import sql

_FILE_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


def load_migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every shipped migration, in version order."""
    found = []
    for entry in resources.files("evercore_postgres").joinpath("migrations").iterdir():
        match = _FILE_NAME.fullmatch(entry.name)
        if match is not None:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    return found


MIGRATIONS = load_migrations()
LATEST_VERSION = MIGRATIONS[-1][0]
"""The schema version this code writes and understands."""


def advisory_lock_key(schema: str) -> int:
    """A stable signed 64-bit advisory-lock key for migrating ``schema``."""
    digest = hashlib.blake2b(f"evercore-postgres:migrate:{schema}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _version_table_exists(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> bool:
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL",
        (sql.Identifier(schema, "schema_version").as_string(conn),),
    ).fetchone()
    return bool(row and row[0])


def current_version(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> int:
    """The schema version stored in ``schema`` (0 when it was never migrated)."""
    if not _version_table_exists(conn, schema):
        return 0
    row = conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(
            sql.Identifier(schema, "schema_version")
        )
    ).fetchone()
    return int(row[0]) if row else 0  # type: ignore[call-overload]


def refuse_newer(version: int, schema: str) -> None:
    """Raise ``SchemaVersionError`` when ``version`` is newer than this code."""
    if version > LATEST_VERSION:
        raise SchemaVersionError(
            f"PostgreSQL schema {schema!r} is at version {version}, newer than the "
            f"version {LATEST_VERSION} this evercore-postgres understands; upgrade "
            "evercore-postgres"
        )


def migrate(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> int:
    """Apply pending migrations to ``schema`` in one transaction; return the version.

    A transaction-scoped advisory lock serialises processes that migrate at once:
    the second waits, then finds nothing left to do.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_lock_key(schema),))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version = current_version(conn, schema)
        refuse_newer(version, schema)
        for number, script in MIGRATIONS:
            if number > version:
                conn.execute(script.encode())
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
                version = number
    return version
