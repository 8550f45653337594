"""SQLite engine: threads, lock waits, transaction life cycle and time edge cases."""

from __future__ import annotations

import glob
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from evercore.engines.sqlite.engine import SqliteStorageEngine, open_sqlite_engine
from evercore.errors import ConcurrencyError, NotFoundError, StorageEngineError
from evercore.values import StorageEngineEvent, Subscription

T0 = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def engine(uri: str) -> Iterator[SqliteStorageEngine]:
    engine = open_sqlite_engine(uri)
    engine.migrate()
    yield engine
    engine.close()


def _types(engine: SqliteStorageEngine) -> tuple[int, int]:
    return engine.get_aggregate_type_id(None, "account"), engine.get_event_type_id(None, "moved")


def _event(
    aggregate_id: int, sequence: int, type_id: int, when: datetime = T0
) -> StorageEngineEvent:
    return StorageEngineEvent(aggregate_id, sequence, type_id, f'{{"n":{sequence}}}', when, "")


def _whole_log(engine: SqliteStorageEngine) -> list[tuple[int, int, int]]:
    events = engine.get_events_for_subscription(None, Subscription(id=0, name="all"), 1_000_000)
    return [(e.event_id, e.aggregate_id, e.sequence) for e in events]


# -- threads ------------------------------------------------------------------------------
def test_threads_writing_contexts_get_gap_free_ids_and_whole_contexts(
    engine: SqliteStorageEngine,
) -> None:
    type_id, event_type = _types(engine)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(15):
                tx = engine.get_transaction_info()
                aggregate_id = engine.new_aggregate(tx, type_id)
                engine.write_state(
                    tx, [_event(aggregate_id, s, event_type) for s in range(1, 9)], []
                )
                tx.commit()
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    log = _whole_log(engine)
    assert [event_id for event_id, _, _ in log] == list(range(1, 6 * 15 * 8 + 1))
    # One writer at a time: each context's events hold consecutive ids.
    for start in range(0, len(log), 8):
        block = log[start : start + 8]
        assert {aggregate_id for _, aggregate_id, _ in block} == {block[0][1]}
        assert [sequence for _, _, sequence in block] == list(range(1, 9))


def test_racing_writers_on_one_aggregate_get_concurrency_error(
    engine: SqliteStorageEngine,
) -> None:
    type_id, event_type = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    first, second = engine.get_transaction_info(), engine.get_transaction_info()
    # Both read the aggregate at sequence 0, then both append sequence 1.
    assert engine.get_events_for_aggregate(first, aggregate_id, 0) == []
    assert engine.get_events_for_aggregate(second, aggregate_id, 0) == []
    engine.write_state(first, [_event(aggregate_id, 1, event_type)], [])
    outcome: list[BaseException | None] = []

    def late_writer() -> None:
        try:
            engine.write_state(second, [_event(aggregate_id, 1, event_type)], [])
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=late_writer)
    thread.start()
    time.sleep(0.1)  # the late writer now waits for the write lock
    first.commit()
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], ConcurrencyError)
    assert (outcome[0].aggregate_id, outcome[0].sequence) == (aggregate_id, 1)
    second.rollback()
    assert [e.sequence for e in engine.get_events_for_aggregate(None, aggregate_id, 0)] == [1]


def test_lock_wait_succeeds_within_the_busy_timeout(uri: str, engine: SqliteStorageEngine) -> None:
    type_id, _ = _types(engine)
    holder = engine.get_transaction_info()
    engine.new_aggregate(holder, type_id)  # takes the write lock
    threading.Timer(0.3, holder.commit).start()
    started = time.monotonic()
    assert engine.new_aggregate(None, type_id) > 0
    assert 0.2 < time.monotonic() - started < 4.0


def test_locked_database_is_a_clear_error_after_the_busy_timeout(
    uri: str, engine: SqliteStorageEngine
) -> None:
    type_id, _ = _types(engine)
    impatient = open_sqlite_engine(uri, busy_timeout=0.3)
    holder = engine.get_transaction_info()
    try:
        engine.new_aggregate(holder, type_id)
        started = time.monotonic()
        with pytest.raises(StorageEngineError, match="locked") as caught:
            impatient.new_aggregate(None, type_id)
        waited = time.monotonic() - started
        assert 0.25 < waited < 3.0
        assert impatient.config.label in str(caught.value) and "0.3 s" in str(caught.value)
        assert impatient.get_max_event_id(None) == 0, "readers are never blocked (WAL)"
    finally:
        holder.commit()
    assert impatient.new_aggregate(None, type_id) > 0
    impatient.close()


def test_wait_for_events_sees_another_engines_commit(uri: str, engine: SqliteStorageEngine) -> None:
    type_id, event_type = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    other = open_sqlite_engine(uri)  # another connection pool, as another process has
    try:
        threading.Timer(
            0.1, other.write_state, (None, [_event(aggregate_id, 1, event_type)], [])
        ).start()
        started = time.monotonic()
        while engine.get_max_event_id(None) == 0 and time.monotonic() - started < 5:
            engine.wait_for_events(0, 10.0)
        assert engine.get_max_event_id(None) == 1
        assert time.monotonic() - started < 2.0
    finally:
        other.close()


# -- transaction life cycle -----------------------------------------------------------------
def test_failed_write_state_rolls_back_the_whole_transaction(engine: SqliteStorageEngine) -> None:
    type_id, event_type = _types(engine)
    existing = engine.new_aggregate(None, type_id)
    engine.write_state(None, [_event(existing, 1, event_type)], [])
    tx = engine.get_transaction_info()
    fresh = engine.new_aggregate(tx, type_id)
    batch = [_event(fresh, 1, event_type), _event(existing, 2, event_type)]
    batch += [_event(existing, 1, event_type), _event(existing, 3, event_type)]
    with pytest.raises(ConcurrencyError) as caught:
        engine.write_state(tx, batch, [])
    assert (caught.value.aggregate_id, caught.value.sequence) == (existing, 1)
    with pytest.raises(StorageEngineError, match="write_state failed"):
        tx.commit()
    tx.rollback()  # harmless after the automatic rollback
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_id(None, type_id, fresh)
    assert _whole_log(engine) == [(1, existing, 1)]


def test_event_of_an_unregistered_type_is_not_found(engine: SqliteStorageEngine) -> None:
    type_id, _ = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    with pytest.raises(NotFoundError, match="event type with id 424242"):
        engine.write_state(None, [_event(aggregate_id, 1, 424242)], [])
    with pytest.raises(NotFoundError, match="aggregate type with id 535353"):
        engine.new_aggregate(None, 535353)
    assert _whole_log(engine) == []


def test_finished_transaction_cannot_be_used(engine: SqliteStorageEngine) -> None:
    type_id, _ = _types(engine)
    tx = engine.get_transaction_info()
    engine.new_aggregate(tx, type_id)
    tx.commit()
    with pytest.raises(StorageEngineError, match="finished"):
        engine.new_aggregate(tx, type_id)
    with pytest.raises(StorageEngineError, match="finished"):
        tx.commit()
    with pytest.raises(TypeError, match="get_transaction_info"):
        engine.new_aggregate(object(), type_id)  # type: ignore[arg-type]


def test_close_is_idempotent_and_later_use_is_an_error(uri: str) -> None:
    engine = open_sqlite_engine(uri)
    engine.migrate()
    engine.close()
    engine.close()
    with pytest.raises(StorageEngineError, match="closed"):
        engine.get_max_event_id(None)


def test_memory_database_is_private_and_removed_on_close() -> None:
    before = set(glob.glob("/tmp/evercore-memory-*"))
    first = open_sqlite_engine("sqlite://:memory:")
    second = open_sqlite_engine("sqlite://:memory:")
    first.migrate()
    second.migrate()
    type_id, event_type = _types(first)
    first.write_state(None, [_event(first.new_aggregate(None, type_id), 1, event_type)], [])
    assert first.get_max_event_id(None) == 1
    assert second.get_max_event_id(None) == 0
    assert repr(first) == "SqliteStorageEngine(':memory:')"
    first.close()
    second.close()
    assert set(glob.glob("/tmp/evercore-memory-*")) <= before


# -- times ----------------------------------------------------------------------------------
def test_extreme_and_naive_times_round_trip(engine: SqliteStorageEngine) -> None:
    type_id, event_type = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    moments = [
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=timezone.utc),
        datetime(1833, 11, 24, 17, 31, 44, 999999, tzinfo=timezone.utc),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(2106, 2, 7, 6, 28, 16, 1, tzinfo=timezone.utc),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    ]
    naive = datetime(2030, 6, 15, 8, 0, 0, 654321)
    events = [_event(aggregate_id, i, event_type, m) for i, m in enumerate(moments, start=1)]
    events.append(_event(aggregate_id, len(events) + 1, event_type, naive))
    engine.write_state(None, events, [])
    read = [e.event_time for e in engine.get_events_for_aggregate(None, aggregate_id, 0)]
    assert read == [*moments, naive.replace(tzinfo=timezone.utc)]
    assert all(moment.utcoffset() == timedelta(0) for moment in read)
    assert engine.get_first_event_id_from_timestamp(None, datetime(2030, 1, 1)) == 4


def test_time_that_is_not_a_datetime_is_refused_naming_it(engine: SqliteStorageEngine) -> None:
    type_id, event_type = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    bad = StorageEngineEvent(aggregate_id, 1, event_type, "{}", "2025-01-01", "")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="2025-01-01"):
        engine.write_state(None, [bad], [])


def test_abandoned_transaction_releases_the_write_lock(
    uri: str, engine: SqliteStorageEngine
) -> None:
    type_id, _ = _types(engine)
    impatient = open_sqlite_engine(uri, busy_timeout=0.2)
    tx = engine.get_transaction_info()
    abandoned = engine.new_aggregate(tx, type_id)
    del tx  # never committed nor rolled back
    # The lock is free at once, and the abandoned aggregate was rolled back (its id
    # is handed out again).
    assert impatient.new_aggregate(None, type_id) == abandoned
    assert impatient.get_counts(None).aggregates == 1
    impatient.close()


def test_subscription_read_needs_a_positive_limit(engine: SqliteStorageEngine) -> None:
    with pytest.raises(ValueError, match="-1"):
        engine.get_events_for_subscription(None, Subscription(id=0, name="all"), -1)


def test_event_type_names_follow_rollbacks_and_other_engines(
    uri: str, engine: SqliteStorageEngine
) -> None:
    type_id, _ = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    tx = engine.get_transaction_info()
    ghost = engine.get_event_type_id(tx, "ghost")
    engine.write_state(tx, [_event(aggregate_id, 1, ghost)], [])
    assert [e.event_type for e in engine.get_events_for_aggregate(tx, aggregate_id, 0)] == ["ghost"]
    tx.rollback()
    other = open_sqlite_engine(uri)  # as another process would
    real = other.get_event_type_id(None, "real")
    assert real == ghost, "the rolled-back id is handed out again"
    other.write_state(None, [_event(aggregate_id, 1, real)], [])
    other.close()
    for read in (
        engine.get_events_for_aggregate(None, aggregate_id, 0),
        engine.get_events_for_subscription(None, Subscription(id=0, name="all"), 10),
    ):
        assert [e.event_type for e in read] == ["real"]


def test_subscription_with_a_bad_start_is_refused(engine: SqliteStorageEngine) -> None:
    with pytest.raises(ValueError, match="sometime"):
        engine.upsert_subscription(None, "s", None, None, None, "sometime", 0, None)
    with pytest.raises(ValueError, match="timestamp"):
        engine.upsert_subscription(None, "s", None, None, None, "timestamp", 0, None)
    assert engine.list_subscriptions(None) == []
