"""The subscription conformance suite on the built-in engines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from evercore.engines.memory.engine import open_memory_engine
from evercore.engines.sqlite.engine import open_sqlite_engine
from evercore.spi import StorageEngine
from evercore.testing.subscriptions import SubscriptionConformance


class TestMemorySubscriptions(SubscriptionConformance):
    """Runners on the in-memory engine."""

    @pytest.fixture
    def engine(self) -> Iterator[StorageEngine]:
        engine = open_memory_engine("memory://")
        yield engine
        engine.close()


class TestSqliteSubscriptions(SubscriptionConformance):
    """Runners on a SQLite file."""

    @pytest.fixture
    def engine(self, tmp_path: Path) -> Iterator[StorageEngine]:
        engine = open_sqlite_engine(f"sqlite:///{tmp_path}/subscriptions.db")
        engine.migrate()
        yield engine
        engine.close()
