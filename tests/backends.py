"""Fresh, isolated stores on every landed backend, for the reliability and fault tests.

Each helper is a context manager yielding a :class:`FreshBackend`: a URI that any
process can open (its own SQLite file, PostgreSQL schema or Redis key prefix) and
an engine opened on it, migrated. On exit the engine is closed and the data is
removed. PostgreSQL and Redis are started when installed but not running
(``tests.services``); when they cannot be reached the test fails, it is not skipped.

``backend_params()`` gives the backend names as pytest params; a backend whose plugin
is not installed is skipped locally and fails under ``CI``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import evercore
import pytest
from evercore.registry import get_registry
from evercore.spi import StorageEngine
from evercore.testing.reliability import FIGURES_ENV

from tests.services import ensure_postgres, ensure_redis

POSTGRES_URI = "postgresql://postgres@127.0.0.1:5432/test"
"""The shared test database; every fresh backend gets its own schema in it."""
REDIS_URI = "redis://127.0.0.1:6379/0"
"""The shared Redis database; every fresh backend gets its own key prefix in it."""

BACKENDS = ("memory", "sqlite", "postgresql", "redis")
"""Every backend the reliability suites run on."""

MULTI_PROCESS_BACKENDS = ("sqlite", "postgresql", "redis")
"""Backends several processes can share (memory is one process's memory)."""


@dataclass
class FreshBackend:
    """A fresh store: its URI (openable from any process) and an engine on it."""

    name: str
    uri: str
    engine: StorageEngine

    def open(self) -> StorageEngine:
        """Another engine on the same store (the caller closes it)."""
        return open_migrated(self.uri)


def open_migrated(uri: str) -> StorageEngine:
    """The engine for ``uri``, with its schema migrated."""
    return evercore.connect(uri).storage_engine


def unique_name(prefix: str) -> str:
    """A name no other test uses: ``<prefix>_<12 hex digits>`` (a valid identifier)."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@contextmanager
def fresh_memory(tmp_path: Path) -> Iterator[FreshBackend]:
    """A new in-process memory engine (``memory://`` is per process: not shareable)."""
    engine = open_migrated("memory://")
    try:
        yield FreshBackend("memory", "memory://", engine)
    finally:
        engine.close()


@contextmanager
def fresh_sqlite(tmp_path: Path) -> Iterator[FreshBackend]:
    """A new SQLite file under ``tmp_path`` (pytest removes the directory)."""
    uri = f"sqlite:///{tmp_path / unique_name('events')}.db"
    engine = open_migrated(uri)
    try:
        yield FreshBackend("sqlite", uri, engine)
    finally:
        engine.close()


@contextmanager
def fresh_postgres(tmp_path: Path) -> Iterator[FreshBackend]:
    """A new schema in database ``test``, dropped afterwards."""
    ensure_postgres()
    schema = unique_name("rel")
    uri = f"{POSTGRES_URI}?schema={schema}"
    try:
        engine = open_migrated(uri)
        try:
            yield FreshBackend("postgresql", uri, engine)
        finally:
            engine.close()
    finally:
        drop_postgres_schema(schema)


def drop_postgres_schema(schema: str) -> None:
    """Drop a test schema and everything in it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_URI, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def fresh_redis(tmp_path: Path) -> Iterator[FreshBackend]:
    """A new key prefix in Redis database 0; its keys are deleted afterwards."""
    ensure_redis()
    prefix = unique_name("rel")
    uri = f"{REDIS_URI}?prefix={prefix}"
    try:
        engine = open_migrated(uri)
        try:
            yield FreshBackend("redis", uri, engine)
        finally:
            engine.close()
    finally:
        delete_redis_prefix(prefix)


def delete_redis_prefix(prefix: str) -> None:
    """Delete every key of a store's prefix (the engine puts them under ``{prefix}:``)."""
    import redis

    client = redis.Redis.from_url(REDIS_URI)
    try:
        keys = list(client.scan_iter(match="{" + prefix + "}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


FRESH: dict[str, Callable[[Path], AbstractContextManager[FreshBackend]]] = {
    "memory": fresh_memory,
    "sqlite": fresh_sqlite,
    "postgresql": fresh_postgres,
    "redis": fresh_redis,
}

_MARKS = {"postgresql": (pytest.mark.postgres,), "redis": (pytest.mark.redis,)}


def installed(name: str) -> bool:
    """True when a plugin handles the backend's URI scheme (its name)."""
    return name in get_registry().schemes()


def backend_params(names: tuple[str, ...] = BACKENDS) -> list[Any]:
    """``names`` as pytest params; one whose plugin is missing is skipped locally and
    fails in CI (``CI`` set), where every plugin must be installed."""
    params = []
    for name in names:
        marks: list[Any] = list(_MARKS.get(name, ()))
        if not installed(name) and not os.environ.get("CI"):
            marks.append(pytest.mark.skip(reason=f"the {name} plugin is not installed"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@contextmanager
def fresh_backend(name: str, tmp_path: Path) -> Iterator[FreshBackend]:
    """A fresh store on the backend ``name`` (see :data:`BACKENDS`)."""
    with FRESH[name](tmp_path) as backend:
        yield backend


def engine_fixture(names: tuple[str, ...] = BACKENDS) -> Any:
    """A class-level ``engine`` fixture over ``names``: ``engine = engine_fixture()``
    in a suite's subclass runs each of its tests on a fresh store of every backend."""

    @pytest.fixture(params=backend_params(names))
    def engine(
        self: object, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Iterator[StorageEngine]:
        with fresh_backend(request.param, tmp_path) as backend:
            yield backend.engine

    return engine


def backend_fixture(names: tuple[str, ...] = BACKENDS) -> Any:
    """Like :func:`engine_fixture`, for a ``backend`` fixture yielding the
    :class:`FreshBackend` (for tests that also need the URI)."""

    @pytest.fixture(params=backend_params(names))
    def backend(
        self: object, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Iterator[FreshBackend]:
        with fresh_backend(request.param, tmp_path) as fresh:
            yield fresh

    return backend


FIGURES_FILE = Path(__file__).resolve().parent.parent / ".reliability-figures.json"
"""Where the reliability tests write their figures (rendered into RELIABILITY.md)."""
os.environ.setdefault(FIGURES_ENV, str(FIGURES_FILE))
