"""Versioned schema migrations for the SQLite engine.

Each migration is a file ``migrations/NNNN_description.sql`` shipped as package
data; ``NNNN`` is its version. Applied versions are recorded in the
``schema_migrations`` table. Migrating runs under ``BEGIN IMMEDIATE``, so several
processes migrating one file at once apply each version exactly once, and a
failed migration leaves nothing behind (SQLite DDL is transactional).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from functools import cache
from importlib import resources

from evercore.errors import SchemaVersionError

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

VERSION_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY,"
    " applied_at INTEGER NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version: its number, file name and statements."""

    version: int
    name: str
    statements: tuple[str, ...]


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with this package, in version order."""
    folder = resources.files("evercore.engines.sqlite").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            text = entry.read_text(encoding="utf-8")
            found.append(Migration(int(match.group(1)), entry.name, split_statements(text)))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"SQLite migrations must be numbered 1, 2, ...; found {versions}")
    return tuple(found)


def latest_version() -> int:
    """The schema version this code writes and understands."""
    return len(migrations())


def split_statements(script: str) -> tuple[str, ...]:
    """The complete SQL statements of ``script`` (``executescript`` would commit the
    migrating transaction, so statements run one by one)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise RuntimeError(f"incomplete SQL statement in migration: {pending.strip()[:80]!r}")
    return tuple(statements)


def current_version(conn: sqlite3.Connection) -> int:
    """The highest applied version (0 for an empty database)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0])


def check_not_newer(version: int, label: str) -> None:
    """Refuse a database whose schema a newer evercore wrote."""
    latest = latest_version()
    if version > latest:
        raise SchemaVersionError(
            f"SQLite database {label} has schema version {version}, newer than version "
            f"{latest} that this evercore understands; upgrade evercore to open it"
        )


def apply_pending(conn: sqlite3.Connection, label: str) -> int:
    """Apply every pending migration inside the caller's write transaction; return
    the resulting version."""
    version = current_version(conn)
    check_not_newer(version, label)
    if version == latest_version():
        return version
    conn.execute(VERSION_TABLE_DDL)
    for migration in migrations()[version:]:
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) "
            "VALUES (?, CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER))",
            (migration.version,),
        )
    return latest_version()
