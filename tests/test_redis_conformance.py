"""The shared conformance suites against the Redis engine on the local server.

Each test gets its own key prefix (``evercore_t_<uuid hex>``) and deletes its keys
afterwards. An unreachable server fails these tests; they are never skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from evercore.testing.subscriptions import SubscriptionConformance
from evercore_redis.engine import RedisStorageEngine, open_redis_engine

from tests.services import REDIS_HOST, REDIS_PORT, ensure_redis

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module", autouse=True)
def _redis_server() -> None:
    ensure_redis()


def fresh_engine() -> RedisStorageEngine:
    """An engine on a new, empty prefix of the local Redis, migrated."""
    prefix = f"evercore_t_{uuid.uuid4().hex}"
    engine = open_redis_engine(f"redis://{REDIS_HOST}:{REDIS_PORT}/0?prefix={prefix}")
    engine.migrate()
    return engine


@pytest.fixture
def redis_engine() -> Iterator[RedisStorageEngine]:
    """A fresh engine whose keys are deleted after the test."""
    engine = fresh_engine()
    try:
        yield engine
    finally:
        engine.drop_store()
        engine.close()


class TestRedisSubscriptions(SubscriptionConformance):
    """Subscription runners (durable and ephemeral) on Redis."""

    @pytest.fixture
    def engine(self, redis_engine: RedisStorageEngine) -> RedisStorageEngine:
        return redis_engine
