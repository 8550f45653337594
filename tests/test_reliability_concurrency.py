"""Concurrency stress on every backend: threads racing read-modify-append on a few
aggregates, and writer processes with a subscriber reading small batches.

The multi-process test does not run on memory: a ``memory://`` store lives in one
process, so there is nothing for a second process to open.
"""

from __future__ import annotations

import pytest
from evercore.testing.reliability import ConcurrencyStress, MultiProcessStress

from tests.backends import MULTI_PROCESS_BACKENDS, FreshBackend, backend_fixture, engine_fixture


class TestThreads(ConcurrencyStress):
    """4 threads x 100 appends on 3 aggregates, per backend."""

    engine = engine_fixture()


class TestProcesses(MultiProcessStress):
    """3 writer processes x 150 contexts with a subscriber reading batches of 7, and
    3 processes x 60 read-modify-appends on shared aggregates."""

    backend = backend_fixture(MULTI_PROCESS_BACKENDS)

    @pytest.fixture
    def engine(self, backend: FreshBackend) -> object:
        return backend.engine

    @pytest.fixture
    def engine_uri(self, backend: FreshBackend) -> str:
        return backend.uri
