"""The memory engine: the engine conformance suite plus memory-only checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from evercore.engines.memory.engine import MemoryStorageEngine, open_memory_engine
from evercore.testing import StorageEngineConformance


class TestMemoryEngine(StorageEngineConformance):
    """Every SPI rule, on ``memory://``."""

    @pytest.fixture
    def engine(self) -> Iterator[MemoryStorageEngine]:
        engine = open_memory_engine("memory://")
        yield engine
        engine.close()
