"""Test helpers: an engine on a throw-away schema of the local server.

``temporary_engine()`` creates schema ``evercore_t_<uuid hex>`` in the ``test``
database of the server at ``EVERCORE_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``), migrates it, yields the engine and
drops the schema afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from evercore_postgres.engine import PostgresStorageEngine, open_postgres_engine

TEST_SERVER = os.environ.get("EVERCORE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The server and database tests use (the URI holds no engine options)."""


def temporary_schema_name() -> str:
    """A fresh schema name for one test."""
    return f"evercore_t_{uuid.uuid4().hex}"


def temporary_uri(schema: str, server: str = TEST_SERVER) -> str:
    """The URI of ``schema`` on ``server``."""
    separator = "&" if "?" in server else "?"
    return f"{server}{separator}schema={schema}"


def terminate_sessions(application_name: str, server: str = TEST_SERVER) -> int:
    """End every session named ``application_name`` (an engine's pool, listener and
    notifier: what a server restart or an operator does); return how many."""
    with psycopg.connect(server, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return len(rows)


def drop_schema(schema: str, server: str = TEST_SERVER) -> None:
    """End the sessions a test left open on ``schema`` (they carry its name as their
    ``application_name``), then drop it and everything in it."""
    terminate_sessions(schema, server)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def temporary_engine(**options: Any) -> Iterator[PostgresStorageEngine]:
    """A migrated engine on a fresh schema, dropped (with the engine closed) afterwards.

    Its connections are named after the schema, so that :func:`drop_schema` can end
    a transaction a failing test left open.
    """
    schema = temporary_schema_name()
    options.setdefault("application_name", schema)
    engine = open_postgres_engine(temporary_uri(schema), **options)
    try:
        engine.migrate()
        yield engine
    finally:
        engine.close()
        drop_schema(schema)
