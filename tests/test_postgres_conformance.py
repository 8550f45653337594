"""The shared conformance suites against the PostgreSQL engine on the local server.

Each test gets its own schema (``evercore_t_<uuid hex>`` in database ``test``),
dropped afterwards. An unreachable server fails these tests; they are never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from evercore.testing import StorageEngineConformance
from evercore.testing.subscriptions import SubscriptionConformance
from evercore_postgres.engine import PostgresStorageEngine
from evercore_postgres.testing import temporary_engine

from tests.services import ensure_postgres

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module", autouse=True)
def _postgres_server() -> None:
    ensure_postgres()


class TestPostgresEngine(StorageEngineConformance):
    """Every SPI rule, on a fresh schema."""

    @pytest.fixture
    def engine(self) -> Iterator[PostgresStorageEngine]:
        with temporary_engine() as engine:
            yield engine


class TestPostgresSubscriptions(SubscriptionConformance):
    """Subscription runners (durable and ephemeral) on PostgreSQL."""

    @pytest.fixture
    def engine(self) -> Iterator[PostgresStorageEngine]:
        with temporary_engine() as engine:
            yield engine
