"""The shared conformance suites against the Redis engine on the local server.

Each test gets its own key prefix (``evercore_t_<uuid hex>``) and deletes its keys
afterwards. An unreachable server fails these tests; they are never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from evercore.testing import StorageEngineConformance
from evercore.testing.subscriptions import SubscriptionConformance
from evercore_redis.engine import RedisStorageEngine
from evercore_redis.testing import temporary_engine

from tests.services import ensure_redis

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module", autouse=True)
def _redis_server() -> None:
    ensure_redis()


class TestRedisEngine(StorageEngineConformance):
    """Every SPI rule on Redis."""

    @pytest.fixture
    def engine(self) -> Iterator[RedisStorageEngine]:
        with temporary_engine() as engine:
            yield engine


class TestRedisSubscriptions(SubscriptionConformance):
    """Subscription runners (durable and ephemeral) on Redis."""

    @pytest.fixture
    def engine(self) -> Iterator[RedisStorageEngine]:
        with temporary_engine() as engine:
            yield engine
