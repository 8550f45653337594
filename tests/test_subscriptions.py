"""The subscription conformance suite on the built-in engines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from evercore.engines.memory.engine import open_memory_engine
from evercore.spi import StorageEngine
from evercore.testing.subscriptions import SubscriptionConformance


class TestMemorySubscriptions(SubscriptionConformance):
    """Runners on the in-memory engine."""

    @pytest.fixture
    def engine(self) -> Iterator[StorageEngine]:
        engine = open_memory_engine("memory://")
        yield engine
        engine.close()
