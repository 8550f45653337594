"""The subscription conformance suite on the built-in engines."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import evercore
import pytest
from evercore.engines.memory.engine import open_memory_engine
from evercore.spi import StorageEngine
from evercore.subscriptions import run_subscription
from evercore.testing.subscriptions import SubscriptionConformance, write_aggregate
from evercore.values import SerializedEvent, StartFrom, SubscriptionFilter, SubscriptionOptions


class TestMemorySubscriptions(SubscriptionConformance):
    """Runners on the in-memory engine."""

    @pytest.fixture
    def engine(self) -> Iterator[StorageEngine]:
        engine = open_memory_engine("memory://")
        yield engine
        engine.close()


# SQLite, PostgreSQL and Redis run this suite in their own test modules.


# -- runner behaviour that does not depend on the engine -----------------------------------


def test_a_handler_that_empties_its_batch_does_not_break_acknowledgement() -> None:
    engine = open_memory_engine("memory://")
    name = "mutating-handler"
    try:
        events = write_aggregate(engine, "Order", ["Placed", "Paid"])
        stop = threading.Event()

        def consume(batch: list[SerializedEvent]) -> None:
            batch.clear()
            stop.set()

        options = SubscriptionOptions(poll_interval=0.02)
        run_subscription(
            engine, name, SubscriptionFilter(), StartFrom.beginning(), options, consume, stop=stop
        )
        assert engine.get_subscription_by_name(None, name).last_event_id == events[-1].event_id
    finally:
        engine.close()


def test_the_store_facade_delegates_to_the_runners() -> None:
    with evercore.connect("memory://") as store:
        events = write_aggregate(store.storage_engine, "Order", ["Placed", "Paid"])
        got: list[SerializedEvent] = []
        stop = threading.Event()

        def collect(batch: list[SerializedEvent]) -> None:
            got.extend(batch)
            stop.set()

        options = SubscriptionOptions(poll_interval=0.02)
        store.run_ephemeral_subscription(
            SubscriptionFilter(), StartFrom.beginning(), options, collect, stop=stop
        )
        assert got == events

        async def first_batch() -> list[SerializedEvent]:
            async for batch in store.subscribe(options=options, name="via-store"):
                return batch
            raise AssertionError("no batch")

        assert asyncio.run(first_batch()) == events
