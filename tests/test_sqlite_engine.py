"""The SQLite engine against the shared conformance suites (engine SPI and
subscription runners), on a fresh database file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from evercore.engines.sqlite.engine import SqliteStorageEngine, open_sqlite_engine
from evercore.testing import StorageEngineConformance
from evercore.testing.subscriptions import SubscriptionConformance


def _fresh_engine(tmp_path: Path) -> Iterator[SqliteStorageEngine]:
    engine = open_sqlite_engine(f"sqlite:///{tmp_path / 'events.db'}")
    engine.migrate()
    yield engine
    engine.close()


class TestSqliteEngine(StorageEngineConformance):
    """Every SPI rule, on a SQLite file."""

    @pytest.fixture
    def engine(self, tmp_path: Path) -> Iterator[SqliteStorageEngine]:
        yield from _fresh_engine(tmp_path)


class TestSqliteSubscriptions(SubscriptionConformance):
    """The subscription runners over a SQLite file."""

    @pytest.fixture
    def engine(self, tmp_path: Path) -> Iterator[SqliteStorageEngine]:
        yield from _fresh_engine(tmp_path)


class TestSqliteMemoryEngine(StorageEngineConformance):
    """Every SPI rule, on ``sqlite://:memory:`` (one connection, shared by threads)."""

    @pytest.fixture
    def engine(self) -> Iterator[SqliteStorageEngine]:
        engine = open_sqlite_engine("sqlite://:memory:")
        engine.migrate()
        yield engine
        engine.close()
