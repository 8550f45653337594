"""Helpers for tests that need a throw-away Redis store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from evercore_redis.engine import RedisStorageEngine, open_redis_engine


def fresh_prefix() -> str:
    """A key prefix no other store uses: ``evercore_t_<uuid hex>``."""
    return f"evercore_t_{uuid.uuid4().hex}"


@contextmanager
def temporary_engine(url: str = "redis://127.0.0.1:6379/0") -> Iterator[RedisStorageEngine]:
    """A migrated engine on a fresh prefix of the server at ``url`` (no query string);
    every key of that prefix is deleted afterwards."""
    engine = open_redis_engine(f"{url}?prefix={fresh_prefix()}")
    try:
        engine.migrate()
        yield engine
    finally:
        try:
            engine.drop_store()
        finally:
            engine.close()
