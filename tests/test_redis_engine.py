"""Redis-specific behaviour of the evercore-redis engine, on the local server.

Atomic commits, read-your-writes, key handling, id order under concurrent writers,
server-side filters, the key prefix, the database number, blocking waits, fencing
and the plugin registration. Every test uses its own key prefix and deletes it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import evercore
import pytest
import redis
from evercore.errors import (
    ConcurrencyError,
    ConfigurationError,
    ConstraintViolationError,
    KeyTooLongError,
    NotFoundError,
    SchemaVersionError,
    SerializationError,
    StorageEngineError,
    SubscriptionLeaseLost,
)
from evercore.registry import BackendRegistry, make_plugin_manager
from evercore.spi import StorageEngine, SupportsEventWait, SupportsMigrations, SupportsStats
from evercore.values import IdNamePair, Snapshot, StorageEngineEvent, Subscription
from evercore_redis import engine as engine_module
from evercore_redis.engine import RedisStorageEngine, open_redis_engine
from evercore_redis.testing import fresh_prefix, temporary_engine

from tests.services import REDIS_HOST, REDIS_PORT, ensure_redis

pytestmark = pytest.mark.redis
URL = f"redis://{REDIS_HOST}:{REDIS_PORT}"
T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


@pytest.fixture(scope="module", autouse=True)
def _redis_server() -> None:
    ensure_redis()


@pytest.fixture
def engine() -> Iterator[RedisStorageEngine]:
    with temporary_engine() as fresh:
        yield fresh


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
    yield client
    client.close()


def event(aggregate_id: int, sequence: int, type_id: int, state: str = "{}",
          when: datetime = T0, reference: str = "") -> StorageEngineEvent:
    return StorageEngineEvent(aggregate_id, sequence, type_id, state, when, reference)


def new_with_events(engine: StorageEngine, count: int, key: str | None = None) -> int:
    tx = engine.get_transaction_info()
    type_id = engine.get_aggregate_type_id(tx, "Order")
    if key is None:
        aggregate_id = engine.new_aggregate(tx, type_id)
    else:
        aggregate_id = engine.new_aggregate_with_key(tx, type_id, key)
    placed = engine.get_event_type_id(tx, "Placed")
    engine.write_state(tx, [event(aggregate_id, s, placed) for s in range(1, count + 1)], [])
    tx.commit()
    return aggregate_id


# -- atomic commits ----------------------------------------------------------------------


def test_conflict_at_commit_names_the_aggregate_and_writes_nothing_of_the_context(
    engine: RedisStorageEngine,
) -> None:
    taken = new_with_events(engine, 2)
    placed = engine.get_event_type_id(None, "Placed")
    tx = engine.get_transaction_info()
    assert len(engine.get_events_for_aggregate(tx, taken, 0)) == 2
    fresh = engine.new_aggregate_with_key(tx, engine.get_aggregate_type_id(tx, "Order"), "k-1")
    engine.write_state(
        tx, [event(fresh, 1, placed), event(taken, 3, placed)], [Snapshot(fresh, "{}", 1)]
    )
    engine.write_state(None, [event(taken, 3, placed, "racer")], [])  # a racing writer
    before = engine.get_counts(None)
    with pytest.raises(ConcurrencyError) as caught:
        tx.commit()
    assert (caught.value.aggregate_id, caught.value.sequence) == (taken, 3)
    assert engine.get_counts(None) == before
    assert engine.get_max_event_id(None) == 3
    assert [e.state for e in engine.get_events_for_aggregate(None, taken, 2)] == ["racer"]
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_key(None, engine.get_aggregate_type_id(None, "Order"), "k-1")
    assert engine.get_snapshot_for_aggregate(None, fresh) is None


def test_stored_duplicate_is_refused_by_write_state_itself(engine: RedisStorageEngine) -> None:
    taken = new_with_events(engine, 2)
    placed = engine.get_event_type_id(None, "Placed")
    tx = engine.get_transaction_info()
    with pytest.raises(ConcurrencyError) as caught:  # not read in tx: checked at once
        engine.write_state(tx, [event(taken, 3, placed), event(taken, 2, placed)], [])
    tx.rollback()
    assert (caught.value.aggregate_id, caught.value.sequence) == (taken, 2)


def test_second_of_two_racing_transactions_gets_concurrency_error_at_commit(
    engine: RedisStorageEngine,
) -> None:
    aggregate_id = new_with_events(engine, 1)
    placed = engine.get_event_type_id(None, "Placed")
    first, second = engine.get_transaction_info(), engine.get_transaction_info()
    for tx in (first, second):  # both load the aggregate, as a context does
        assert len(engine.get_events_for_aggregate(tx, aggregate_id, 0)) == 1
    engine.write_state(first, [event(aggregate_id, 2, placed, '{"w":1}')], [])
    engine.write_state(second, [event(aggregate_id, 2, placed, '{"w":2}')], [])
    first.commit()
    with pytest.raises(ConcurrencyError, match=f"aggregate {aggregate_id}"):
        second.commit()
    assert [e.state for e in engine.get_events_for_aggregate(None, aggregate_id, 1)] == ['{"w":1}']


def test_a_duplicate_written_by_another_process_is_caught_at_commit(
    engine: RedisStorageEngine,
) -> None:
    aggregate_id = new_with_events(engine, 1)  # this engine last stored sequence 1
    placed = engine.get_event_type_id(None, "Placed")
    other = open_redis_engine(f"{URL}/0?prefix={engine.prefix}")
    try:
        other.write_state(None, [event(aggregate_id, 2, placed, "theirs")], [])
    finally:
        other.close()
    tx = engine.get_transaction_info()
    engine.write_state(tx, [event(aggregate_id, 2, placed, "ours")], [])
    with pytest.raises(ConcurrencyError) as caught:
        tx.commit()
    assert (caught.value.aggregate_id, caught.value.sequence) == (aggregate_id, 2)
    assert [e.state for e in engine.get_events_for_aggregate(None, aggregate_id, 1)] == ["theirs"]


def test_duplicate_within_one_transaction_is_refused_before_commit(
    engine: RedisStorageEngine,
) -> None:
    aggregate_id = new_with_events(engine, 1)
    placed = engine.get_event_type_id(None, "Placed")
    tx = engine.get_transaction_info()
    engine.write_state(tx, [event(aggregate_id, 2, placed)], [])
    with pytest.raises(ConcurrencyError):
        engine.write_state(tx, [event(aggregate_id, 2, placed)], [])


def test_rolled_back_aggregate_and_key_do_not_exist(engine: RedisStorageEngine) -> None:
    order = engine.get_aggregate_type_id(None, "Order")
    tx = engine.get_transaction_info()
    aggregate_id = engine.new_aggregate_with_key(tx, order, "rolled-back")
    tx.rollback()
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_id(None, order, aggregate_id)
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_key(None, order, "rolled-back")
    assert engine.new_aggregate_with_key(None, order, "rolled-back") != aggregate_id
    with pytest.raises(StorageEngineError, match="already committed or rolled back"):
        tx.commit()


def test_events_for_a_missing_aggregate_are_not_found(engine: RedisStorageEngine) -> None:
    placed = engine.get_event_type_id(None, "Placed")
    with pytest.raises(NotFoundError, match="999"):
        engine.write_state(None, [event(999, 1, placed)], [])
    assert engine.get_max_event_id(None) == 0


# -- reads inside a transaction ----------------------------------------------------------


def test_reads_inside_a_transaction_see_its_own_writes(engine: RedisStorageEngine) -> None:
    existing = new_with_events(engine, 1, key="old-key")
    tx = engine.get_transaction_info()
    order = engine.get_aggregate_type_id(tx, "Order")
    placed = engine.get_event_type_id(tx, "Placed")
    created = engine.new_aggregate_with_key(tx, order, "new-key")
    engine.change_aggregate_natural_key(tx, existing, "renamed")
    engine.write_state(
        tx, [event(existing, 2, placed, "two"), event(created, 1, placed, "one")],
        [Snapshot(existing, "snap", 2)],
    )
    assert engine.get_aggregate_by_id(tx, order, created) == (created, "new-key")
    assert engine.get_aggregate_by_key(tx, order, "new-key") == created
    assert engine.get_aggregate_by_key(tx, order, "renamed") == existing
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_key(tx, order, "old-key")
    assert engine.get_or_create_aggregate_by_key(tx, order, "new-key") == (False, created)
    assert [(e.sequence, e.state) for e in engine.get_events_for_aggregate(tx, existing, 0)] == [
        (1, "{}"), (2, "two"),
    ]
    assert engine.get_snapshot_for_aggregate(tx, existing) == Snapshot(existing, "snap", 2)
    # Outside the transaction nothing has changed yet.
    assert engine.get_aggregate_by_key(None, order, "old-key") == existing
    assert len(engine.get_events_for_aggregate(None, existing, 0)) == 1
    tx.commit()
    assert engine.get_aggregate_by_key(None, order, "renamed") == existing
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_key(None, order, "old-key")
    assert engine.get_snapshot_for_aggregate(None, existing) == Snapshot(existing, "snap", 2)


# -- natural keys ------------------------------------------------------------------------


def test_natural_keys_are_unique_across_aggregate_types(engine: RedisStorageEngine) -> None:
    order = engine.get_aggregate_type_id(None, "Order")
    user = engine.get_aggregate_type_id(None, "User")
    aggregate_id = engine.new_aggregate_with_key(None, order, "shared")
    with pytest.raises(ConstraintViolationError, match="shared"):
        engine.new_aggregate_with_key(None, user, "shared")
    with pytest.raises(ConstraintViolationError, match="shared"):
        engine.get_or_create_aggregate_by_key(None, user, "shared")
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_key(None, user, "shared")
    assert engine.get_or_create_aggregate_by_key(None, order, "shared") == (False, aggregate_id)


def test_key_taken_by_a_concurrent_commit_fails_at_commit(engine: RedisStorageEngine) -> None:
    order = engine.get_aggregate_type_id(None, "Order")
    tx = engine.get_transaction_info()
    engine.new_aggregate_with_key(tx, order, "contested")
    winner = engine.new_aggregate_with_key(None, order, "contested")
    with pytest.raises(ConstraintViolationError, match="contested"):
        tx.commit()
    assert engine.get_aggregate_by_key(None, order, "contested") == winner
    assert engine.get_counts(None).aggregates == 1


def test_two_aggregates_swap_keys_in_one_transaction(engine: RedisStorageEngine) -> None:
    order = engine.get_aggregate_type_id(None, "Order")
    a = engine.new_aggregate_with_key(None, order, "a")
    b = engine.new_aggregate_with_key(None, order, "b")
    tx = engine.get_transaction_info()
    engine.change_aggregate_natural_key(tx, a, "tmp")
    engine.change_aggregate_natural_key(tx, b, "a")
    engine.change_aggregate_natural_key(tx, a, "b")
    tx.commit()
    assert engine.get_aggregate_by_key(None, order, "a") == b
    assert engine.get_aggregate_by_key(None, order, "b") == a
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_key(None, order, "tmp")


def test_key_rules(engine: RedisStorageEngine) -> None:
    order = engine.get_aggregate_type_id(None, "Order")
    holder = engine.new_aggregate_with_key(None, order, "taken")
    other = engine.new_aggregate(None, order)
    with pytest.raises(ConstraintViolationError, match="taken"):
        engine.change_aggregate_natural_key(None, other, "taken")
    with pytest.raises(NotFoundError, match="4242"):
        engine.change_aggregate_natural_key(None, 4242, "free")
    with pytest.raises(KeyTooLongError):
        engine.new_aggregate_with_key(None, order, "k" * 65)
    engine.change_aggregate_natural_key(None, holder, "taken")  # its own key: a no-op
    assert engine.get_aggregate_by_id(None, order, holder) == (holder, "taken")


# -- stored values ------------------------------------------------------------------------


def test_state_reference_and_time_round_trip_exactly(engine: RedisStorageEngine) -> None:
    order = engine.get_aggregate_type_id(None, "Order")
    placed = engine.get_event_type_id(None, "Placed")
    aggregate_id = engine.new_aggregate(None, order)
    odd_state = '{"a":1,  "colon:s":"ü€😀\\n"}:::'
    moments = [
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(2026, 5, 6, 7, 8, 9, 1, tzinfo=timezone(timedelta(hours=-5))),
    ]
    engine.write_state(None, [
        event(aggregate_id, 1, placed, odd_state, moments[0], "ref:ü:1"),
        event(aggregate_id, 2, placed, "", moments[1], ""),
    ], [Snapshot(aggregate_id, "snap:ü", 2)])
    stored = engine.get_events_for_aggregate(None, aggregate_id, 0)
    assert [(e.state, e.reference, e.event_time) for e in stored] == [
        (odd_state, "ref:ü:1", moments[0]), ("", "", moments[1]),
    ]
    assert all(e.event_time.tzinfo == timezone.utc for e in stored)
    assert [e.event_id for e in stored] == [1, 2]
    assert engine.get_snapshot_for_aggregate(None, aggregate_id) == Snapshot(
        aggregate_id, "snap:ü", 2
    )
    log = engine.get_events_for_subscription(None, Subscription(0, "all"), 10)
    assert log == stored


def test_a_large_context_on_one_aggregate(engine: RedisStorageEngine) -> None:
    aggregate_id = new_with_events(engine, 1300)  # written in slices inside commit.lua
    events = engine.get_events_for_aggregate(None, aggregate_id, 700)
    assert [e.sequence for e in events] == list(range(701, 1301))
    assert [e.event_id for e in events] == list(range(701, 1301))
    placed = engine.get_event_type_id(None, "Placed")
    with pytest.raises(ConcurrencyError, match="1300"):
        engine.write_state(None, [event(aggregate_id, 1301, placed),
                                  event(aggregate_id, 1300, placed)], [])


def test_sequences_with_gaps_and_out_of_order_are_read_in_order(
    engine: RedisStorageEngine,
) -> None:
    order = engine.get_aggregate_type_id(None, "Order")
    placed = engine.get_event_type_id(None, "Placed")
    aggregate_id = engine.new_aggregate(None, order)
    for batch in ([7], [2, 3], [1], [9, 5]):  # each a commit; the list keeps commit order
        engine.write_state(None, [event(aggregate_id, s, placed, f"s{s}") for s in batch], [])
    for after, expected in ((0, [1, 2, 3, 5, 7, 9]), (1, [2, 3, 5, 7, 9]), (3, [5, 7, 9]),
                            (6, [7, 9]), (9, []), (-1, [1, 2, 3, 5, 7, 9])):
        events = engine.get_events_for_aggregate(None, aggregate_id, after)
        assert [e.sequence for e in events] == expected, after
        assert [e.state for e in events] == [f"s{s}" for s in expected]
    for taken in (1, 5, 9):
        with pytest.raises(ConcurrencyError, match=f"sequence {taken}"):
            engine.write_state(None, [event(aggregate_id, taken, placed)], [])
        tx = engine.get_transaction_info()
        with pytest.raises(ConcurrencyError, match=f"sequence {taken}"):
            engine.write_state(tx, [event(aggregate_id, taken, placed)], [])
        tx.rollback()
    engine.write_state(None, [event(aggregate_id, 4, placed, "s4")], [])  # a free gap
    assert [e.sequence for e in engine.get_events_for_aggregate(None, aggregate_id, 3)] == [
        4, 5, 7, 9,
    ]


def test_text_that_is_not_utf8_is_refused_with_a_typed_error(
    engine: RedisStorageEngine,
) -> None:
    aggregate_id = new_with_events(engine, 1)
    placed = engine.get_event_type_id(None, "Placed")
    with pytest.raises(SerializationError, match="ud800"):
        engine.write_state(None, [event(aggregate_id, 2, placed, '{"x":"\ud800"}')], [])
    with pytest.raises(SerializationError, match="ud800"):
        engine.get_event_type_id(None, "bad\ud800")
    assert engine.get_max_event_id(None) == 1
    new_with_events(engine, 1)  # the engine still works


def test_an_older_snapshot_does_not_replace_a_newer_one(engine: RedisStorageEngine) -> None:
    aggregate_id = new_with_events(engine, 3)
    engine.write_state(None, [], [Snapshot(aggregate_id, "at-3", 3)])
    engine.write_state(None, [], [Snapshot(aggregate_id, "at-2", 2)])
    assert engine.get_snapshot_for_aggregate(None, aggregate_id) == Snapshot(
        aggregate_id, "at-3", 3
    )


# -- the global log ------------------------------------------------------------------------


def test_ids_are_gap_free_and_in_commit_order_under_concurrent_writers(
    engine: RedisStorageEngine,
) -> None:
    def writer() -> None:
        for _ in range(15):
            new_with_events(engine, 3)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    log = engine.get_events_for_subscription(None, Subscription(0, "all"), 1000)
    assert [e.event_id for e in log] == list(range(1, 181))
    # A context's events are contiguous in the log: each commit is one atomic step.
    for start in range(0, 180, 3):
        chunk = log[start:start + 3]
        assert {e.aggregate_id for e in chunk} == {chunk[0].aggregate_id}
        assert [e.sequence for e in chunk] == [1, 2, 3]
    assert engine.get_max_event_id(None) == 180


def test_filters_run_on_the_server_across_scan_budgets(
    engine: RedisStorageEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "SCAN_BUDGET", 4)  # force many continuation calls
    order = engine.get_aggregate_type_id(None, "Order")
    user = engine.get_aggregate_type_id(None, "User")
    types = [engine.get_event_type_id(None, n) for n in ("A", "B", "C")]
    written = []
    for i in range(30):
        aggregate_type = user if i % 5 == 0 else order
        aggregate_id = engine.new_aggregate_with_key(None, aggregate_type, f"k{i}")
        engine.write_state(None, [event(aggregate_id, 1, types[i % 3])], [])
        written.append((aggregate_id, aggregate_type, types[i % 3], f"k{i}"))
    log = engine.get_events_for_subscription(None, Subscription(0, "all"), 100)

    def ids(**filters: Any) -> list[int]:
        sub = Subscription(0, "f", **filters)
        return [e.event_id for e in engine.get_events_for_subscription(None, sub, 100)]

    def expected(keep: Callable[[tuple[int, int, int, str]], bool]) -> list[int]:
        return [e.event_id for e, w in zip(log, written, strict=True) if keep(w)]

    assert ids(aggregate_type_id=user) == expected(lambda w: w[1] == user)
    assert ids(event_type_ids=(types[0], types[2])) == expected(lambda w: w[2] != types[1])
    assert ids(event_type_id=types[1], event_type_ids=(types[2],)) == expected(
        lambda w: w[2] == types[2]
    )
    assert ids(aggregate_type_id=order, event_type_id=types[0]) == expected(
        lambda w: w[1] == order and w[2] == types[0]
    )
    assert ids(aggregate_key="k17") == expected(lambda w: w[3] == "k17")
    assert ids(aggregate_key="k17", aggregate_type_id=user) == []
    assert ids(aggregate_key="nobody") == []
    limited = engine.get_events_for_subscription(
        None, Subscription(0, "f", aggregate_type_id=user, last_event_id=log[5].event_id), 2
    )
    assert [e.event_id for e in limited] == expected(lambda w: w[1] == user)[2:4]


def test_first_event_id_from_timestamp_scans_in_slices(
    engine: RedisStorageEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "SCAN_BUDGET", 3)
    order = engine.get_aggregate_type_id(None, "Order")
    placed = engine.get_event_type_id(None, "Placed")
    aggregate_id = engine.new_aggregate(None, order)
    moments = [T0 + timedelta(seconds=s) for s in (5, 1, 2, 3, 9, 4, 9, 7)]
    engine.write_state(
        None, [event(aggregate_id, i + 1, placed, when=m) for i, m in enumerate(moments)], []
    )
    assert engine.get_first_event_id_from_timestamp(None, T0) == 1
    assert engine.get_first_event_id_from_timestamp(None, T0 + timedelta(seconds=6)) == 5
    assert engine.get_first_event_id_from_timestamp(None, T0 + timedelta(seconds=10)) == 0


def test_wait_for_events_wakes_on_a_commit_and_times_out_without_one(
    engine: RedisStorageEngine,
) -> None:
    assert isinstance(engine, SupportsEventWait)
    started = time.monotonic()
    engine.wait_for_events(0, 0.2)
    assert time.monotonic() - started >= 0.15
    timer = threading.Timer(0.2, lambda: new_with_events(engine, 1))
    timer.start()
    started = time.monotonic()
    engine.wait_for_events(0, 8.0)
    timer.join()
    assert time.monotonic() - started < 4.0
    assert engine.get_max_event_id(None) == 1


# -- subscriptions ------------------------------------------------------------------------


def test_fencing_refuses_a_runner_whose_owner_name_was_claimed_again_elsewhere(
    engine: RedisStorageEngine,
) -> None:
    new_with_events(engine, 2)
    other = open_redis_engine(f"{URL}/0?prefix={engine.prefix}")
    try:
        sub_id = engine.upsert_subscription(None, "s", None, None, None, "beginning", 0, None)
        assert engine.claim_subscription(None, "s", "worker", 5.0)
        engine.advance_subscription_cursor(None, sub_id, 1, owner="worker")
        # A second process configured with the same owner name takes the lease over.
        assert other.claim_subscription(None, "s", "worker", 5.0)
        with pytest.raises(SubscriptionLeaseLost, match="worker"):
            engine.advance_subscription_cursor(None, sub_id, 2, owner="worker")
        assert not engine.renew_subscription(None, "s", "worker", 5.0)
        other.advance_subscription_cursor(None, sub_id, 2, owner="worker")
        assert engine.get_subscription_by_name(None, "s").last_event_id == 2
    finally:
        other.close()


def test_lease_expiry_is_judged_by_the_server_clock(engine: RedisStorageEngine,
                                                    raw: redis.Redis) -> None:
    sub_id = engine.upsert_subscription(None, "s", None, None, None, "end", 0, None)
    assert engine.claim_subscription(None, "s", "a", 30.0)
    sub = engine.get_subscription_by_name(None, "s")
    seconds, micros = raw.time()
    server_now = datetime.fromtimestamp(seconds, timezone.utc) + timedelta(microseconds=micros)
    assert sub.lease_expires_at is not None
    assert abs((sub.lease_expires_at - server_now).total_seconds() - 30.0) < 2.0
    assert not engine.claim_subscription(None, "s", "b", 30.0)
    assert engine.claim_subscription(None, "s", "a", 0.05)
    time.sleep(0.1)
    with pytest.raises(SubscriptionLeaseLost):
        engine.advance_subscription_cursor(None, sub_id, 5, owner="a")
    assert engine.claim_subscription(None, "s", "b", 30.0)


def test_subscription_state_lives_in_redis(engine: RedisStorageEngine) -> None:
    new_with_events(engine, 3)
    placed = engine.get_event_type_id(None, "Placed")
    order = engine.get_aggregate_type_id(None, "Order")
    sub_id = engine.upsert_subscription(None, "s", order, None, "k", "end", 0, None)
    engine.add_subscription_event_type(None, sub_id, placed)
    engine.add_subscription_event_type(None, sub_id, placed)
    other = open_redis_engine(f"{URL}/0?prefix={engine.prefix}")
    try:
        sub = other.get_subscription_by_name(None, "s")
        assert (sub.id, sub.aggregate_type_id, sub.aggregate_key, sub.event_type_ids) == (
            sub_id, order, "k", (placed,),
        )
        assert sub.last_event_id == 3 and sub.active
        other.set_subscription_active(None, sub_id, False)
        # An update changes the filter but keeps the cursor and the switch.
        again = engine.upsert_subscription(None, "s", None, None, None, "beginning", 0, None)
        assert again == sub_id
        sub = engine.get_subscription_by_name(None, "s")
        assert (sub.aggregate_type_id, sub.aggregate_key) == (None, None)
        assert sub.start_from == "beginning"
        assert (sub.last_event_id, sub.active) == (3, False)
        assert [s.name for s in other.list_subscriptions(None)] == ["s"]
    finally:
        other.close()
    with pytest.raises(NotFoundError, match="nope"):
        engine.get_subscription_by_name(None, "nope")
    with pytest.raises(NotFoundError):
        engine.advance_subscription_cursor(None, 999, 1)


# -- configuration, layout, plugin ---------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "a:b", "{x}", "a*", "a b", "-x", "é", "p" * 65])
def test_bad_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        open_redis_engine(f"{URL}/0", prefix=prefix)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="contradicts"):
        open_redis_engine(f"{URL}/0?prefix=a", prefix="b")
    with pytest.raises(ConfigurationError, match="pool_sise"):
        open_redis_engine(f"{URL}/0", pool_sise=3)


def test_prefixes_and_database_numbers_keep_stores_apart(raw: redis.Redis) -> None:
    prefix = fresh_prefix()
    in_db3 = open_redis_engine(f"{URL}/3?prefix={prefix}")
    in_db0 = open_redis_engine(f"{URL}/0", prefix=prefix)
    try:
        new_with_events(in_db3, 2)
        assert in_db0.get_max_event_id(None) == 0
        db3 = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=3, decode_responses=True)
        keys = set(db3.scan_iter(match="{" + prefix + "}:*"))
        db3.close()
        assert f"{{{prefix}}}:log" in keys
        assert not list(raw.scan_iter(match="{" + prefix + "}:*"))
    finally:
        assert in_db3.drop_store() > 0
        in_db3.close()
        in_db0.close()


def test_a_newer_layout_is_refused(engine: RedisStorageEngine, raw: redis.Redis) -> None:
    assert isinstance(engine, SupportsMigrations)
    assert engine.migrate() == engine_module.LAYOUT_VERSION
    raw.hset(f"{{{engine.prefix}}}:meta", "layout", engine_module.LAYOUT_VERSION + 1)
    with pytest.raises(SchemaVersionError, match=str(engine_module.LAYOUT_VERSION + 1)):
        engine.migrate()


def test_counts(engine: RedisStorageEngine) -> None:
    assert isinstance(engine, SupportsStats)
    aggregate_id = new_with_events(engine, 4)
    engine.new_aggregate(None, engine.get_aggregate_type_id(None, "Order"))
    engine.write_state(None, [], [Snapshot(aggregate_id, "{}", 4)])
    assert tuple(engine.get_counts(None)) == (2, 4, 1)


def test_closed_engine_refuses_work() -> None:
    engine = open_redis_engine(f"{URL}/0?prefix={fresh_prefix()}")  # writes no key
    engine.close()
    engine.close()
    with pytest.raises(StorageEngineError, match="closed"):
        engine.get_max_event_id(None)


def test_plugin_registers_redis_schemes_without_importing_redis() -> None:
    registry = BackendRegistry()
    registry.collect(make_plugin_manager())
    for uri in ("redis://h/0", "rediss://h/0", "unix:///tmp/redis.sock"):
        spec = registry.for_uri(uri)
        assert (spec.name, spec.factory) == ("redis", "evercore_redis.engine:open_redis_engine")
    probe = (
        "import sys, evercore.registry as r; r.get_registry().for_uri('redis://x'); "
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_a_type_registered_by_two_transactions_at_once_gets_one_id(
    engine: RedisStorageEngine,
) -> None:
    first, second = engine.get_transaction_info(), engine.get_transaction_info()
    ids = []
    for tx in (first, second):
        order = engine.get_aggregate_type_id(tx, "Racing")
        placed = engine.get_event_type_id(tx, "RacingEvent")
        aggregate_id = engine.new_aggregate(tx, order)
        engine.write_state(tx, [event(aggregate_id, 1, placed)], [])
        ids.append((order, placed, aggregate_id))
    first.commit()
    second.commit()
    (order, placed, a), (alias_order, alias_placed, b) = ids
    assert (alias_order, alias_placed) != (order, placed)
    assert engine.get_aggregate_types(None) == [IdNamePair(order, "Racing")]
    assert engine.get_event_types(None) == [IdNamePair(placed, "RacingEvent")]
    # The losing transaction's ids still work: they are aliases of the stored ones.
    assert engine.get_aggregate_by_id(None, alias_order, b) == (b, None)
    assert engine.get_aggregate_by_id(None, order, b) == (b, None)
    engine.write_state(None, [event(a, 2, alias_placed)], [])
    log = engine.get_events_for_subscription(None, Subscription(0, "all"), 10)
    assert [e.event_type for e in log] == ["RacingEvent"] * 3
    by_alias = Subscription(0, "f", aggregate_type_id=alias_order, event_type_id=alias_placed)
    assert engine.get_events_for_subscription(None, by_alias, 10) == log


# -- through the facade ---------------------------------------------------------------------


@evercore.state_event
@dataclass
class RedisOpened:
    owner: str


@evercore.state_event
@dataclass
class RedisDeposited:
    balance: int


@dataclass
class RedisAccount:
    owner: str = ""
    balance: int = 0


class RedisAccountAggregate(evercore.StateAggregate[RedisAccount]):
    snapshot_frequency = 3


def test_facade_contexts_snapshots_and_a_push_subscription() -> None:
    prefix = fresh_prefix()
    with evercore.connect(f"{URL}/0?prefix={prefix}") as store:
        try:
            for amount in range(1, 6):
                with store.context() as ctx:
                    account = RedisAccountAggregate()
                    if ctx.load_or_create_aggregate(account, "alice"):
                        ctx.apply_event_to(account, RedisOpened(owner="alice"))
                    ctx.apply_event_to(account, RedisDeposited(balance=account.state.balance
                                                               + amount))
            with store.readonly_context() as reader:
                account = RedisAccountAggregate()
                reader.load_state_by_key_into(account, "alice")
            assert (account.state, account.sequence) == (RedisAccount("alice", 15), 6)
            snapshot = store.storage_engine.get_snapshot_for_aggregate(None, account.id)
            assert snapshot is not None and snapshot.sequence == 6
            stale = RedisAccountAggregate()
            with pytest.raises(ConcurrencyError), store.context() as ctx:
                ctx.load_state_by_key_into(stale, "alice")
                ctx.apply_event_to(stale, RedisDeposited(balance=0))
                other = evercore.connect(f"{URL}/0?prefix={prefix}")
                with other.context() as racing:
                    rival = RedisAccountAggregate()
                    racing.load_state_by_key_into(rival, "alice")
                    racing.apply_event_to(rival, RedisDeposited(balance=99))
                other.close()

            delivered: list[evercore.SerializedEvent] = []
            stop = threading.Event()

            def handle(batch: list[evercore.SerializedEvent]) -> None:
                delivered.extend(batch)
                if len(delivered) >= 8:
                    stop.set()

            options = evercore.SubscriptionOptions(poll_interval=5.0, lease=5.0)
            runner = threading.Thread(target=store.run_subscription, args=(
                "audit", evercore.SubscriptionFilter(), evercore.StartFrom.beginning(),
                options, handle), kwargs={"stop": stop})
            runner.start()
            deadline = time.monotonic() + 4.0
            while len(delivered) < 7 and time.monotonic() < deadline:
                time.sleep(0.02)
            # The poll interval is 5 s, so only a blocking stream read delivers this in time.
            with store.context() as ctx:
                account = RedisAccountAggregate()
                ctx.load_state_by_key_into(account, "alice")
                ctx.apply_event_to(account, RedisDeposited(balance=1))
            runner.join(timeout=4.0)
            assert not runner.is_alive()
            assert [e.event_id for e in delivered] == list(range(1, 9))
        finally:
            cast(RedisStorageEngine, store.storage_engine).drop_store()
