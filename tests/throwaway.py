"""Throwaway namespaces on the shared local servers, removed on exit.

A PostgreSQL schema and a Redis key prefix of their own let a test use the real
servers without touching anybody else's data. Removal uses this process's drivers,
so it works whatever the code under test did.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from tests.services import ensure_postgres, ensure_redis

POSTGRES_BASE = "postgresql://postgres@127.0.0.1:5432/test"
"""The local test database (trust authentication)."""

REDIS_BASE = "redis://127.0.0.1:6379/0"
"""The local Redis, database 0."""


@contextmanager
def postgres_uri(tag: str) -> Iterator[str]:
    """A URI whose ``?schema=`` is new and unique; the schema is dropped on exit."""
    import psycopg
    from psycopg import sql

    ensure_postgres()
    schema = f"evercore_{tag}_{uuid.uuid4().hex[:8]}"
    try:
        yield f"{POSTGRES_BASE}?schema={schema}"
    finally:
        with psycopg.connect(POSTGRES_BASE, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def redis_uri(tag: str) -> Iterator[str]:
    """A URI whose ``?prefix=`` is new and unique; its keys are deleted on exit."""
    import redis

    ensure_redis()
    prefix = f"evercore-{tag}-{uuid.uuid4().hex[:8]}"
    try:
        yield f"{REDIS_BASE}?prefix={prefix}"
    finally:
        client = redis.Redis.from_url(REDIS_BASE)
        try:
            # the plugin keeps every key of a store under "{prefix}:" (a cluster hash tag)
            keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
        finally:
            client.close()
