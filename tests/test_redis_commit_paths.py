"""``commit.lua`` paths that only large or unusual contexts take, on the local Redis.

The script reads and writes the aggregates' hash in slices of 1,000 fields and
translates event type ids only when an alias exists; these tests drive each path
and check the guarantees hold on it: a conflict names the aggregate and sequence,
nothing of a failed context is written, ids stay gap-free in commit order.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from evercore.errors import ConcurrencyError, NotFoundError
from evercore.values import StorageEngineEvent, Subscription
from evercore_redis.engine import RedisStorageEngine
from evercore_redis.testing import temporary_engine

from tests.services import ensure_redis

pytestmark = pytest.mark.redis
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


@pytest.fixture
def engine() -> Iterator[RedisStorageEngine]:
    ensure_redis()
    with temporary_engine() as fresh:
        yield fresh


def event(aggregate_id: int, sequence: int, type_id: int, state: str = "{}") -> StorageEngineEvent:
    return StorageEngineEvent(aggregate_id, sequence, type_id, state, T0, "")


def test_a_context_over_more_aggregates_than_one_script_slice(
    engine: RedisStorageEngine,
) -> None:
    # commit.lua reads and writes the aggregates' hash in slices of 1,000 fields.
    tx = engine.get_transaction_info()
    order = engine.get_aggregate_type_id(tx, "Order")
    placed = engine.get_event_type_id(tx, "Placed")
    ids = [engine.new_aggregate(tx, order) for _ in range(2_100)]
    tx.commit()
    engine.write_state(None, [event(a, 1, placed) for a in reversed(ids)], [])
    assert engine.get_max_event_id(None) == 2_100
    assert [e.event_id for e in engine.get_events_for_aggregate(None, ids[0], 0)] == [2_100]
    late, before = ids[1_700], engine.get_counts(None)
    tx = engine.get_transaction_info()
    engine.write_state(tx, [event(a, 2, placed) for a in ids], [])
    engine.write_state(None, [event(late, 2, placed, "racer")], [])
    with pytest.raises(ConcurrencyError) as caught:
        tx.commit()
    assert (caught.value.aggregate_id, caught.value.sequence) == (late, 2)
    assert engine.get_counts(None) == before._replace(events=before.events + 1)
    assert engine.get_max_event_id(None) == 2_101
    with pytest.raises(NotFoundError, match="no aggregate with id 999999"):
        engine.write_state(None, [event(a, 3, placed) for a in ids[:1_500]]
                           + [event(999_999, 1, placed)], [])
    assert engine.get_max_event_id(None) == 2_101
    # Every aggregate's highest sequence was stored: the next append needs no lookup.
    engine.write_state(None, [event(a, 2, placed) for a in ids if a != late], [])
    with pytest.raises(ConcurrencyError, match="sequence 2"):
        engine.write_state(None, [event(ids[-1], 2, placed)], [])
    assert [e.sequence for e in engine.get_events_for_aggregate(None, ids[-1], 0)] == [1, 2]


def test_event_type_aliases_are_translated_in_a_mixed_context(
    engine: RedisStorageEngine,
) -> None:
    first, second = engine.get_transaction_info(), engine.get_transaction_info()
    stored, alias = (engine.get_event_type_id(tx, "Racing") for tx in (first, second))
    order = engine.get_aggregate_type_id(None, "Order")
    aggregate_id = engine.new_aggregate(None, order)
    engine.write_state(first, [event(aggregate_id, 1, stored)], [])
    first.commit()
    second.commit()  # registers nothing: its reserved id becomes an alias
    other = engine.get_event_type_id(None, "Other")
    engine.write_state(None, [event(aggregate_id, 2, alias), event(aggregate_id, 3, other),
                              event(aggregate_id, 4, stored), event(aggregate_id, 5, alias)], [])
    log = engine.get_events_for_subscription(None, Subscription(0, "all"), 10)
    assert [(e.event_id, e.sequence, e.event_type) for e in log] == [
        (1, 1, "Racing"), (2, 2, "Racing"), (3, 3, "Other"), (4, 4, "Racing"), (5, 5, "Racing"),
    ]
    assert engine.get_events_for_aggregate(None, aggregate_id, 0) == log
    by_type = Subscription(0, "f", event_type_id=stored)
    assert [e.sequence for e in engine.get_events_for_subscription(None, by_type, 10)] == [
        1, 2, 4, 5,
    ]
