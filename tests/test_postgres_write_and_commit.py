"""PostgreSQL's ``write_state_and_commit``: a context's batch written as one
autocommit statement, against the local server.

The conformance suite checks the outcome of every batch shape; these tests check
what only the one-statement path can get wrong: a writer whose statement is its own
transaction still holds back subscription readers while it runs, a connection cut
during that statement is ``CommitOutcomeUnknownError`` (it was the commit), and a
transaction already doomed by an error keeps nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import evercore
import psycopg
import pytest
from evercore import CommitOutcomeUnknownError, EventStore, StateAggregate
from evercore.errors import ConstraintViolationError, StorageEngineError
from evercore.values import StorageEngineEvent, Subscription, utc_now
from evercore_postgres.engine import PostgresStorageEngine
from evercore_postgres.testing import (
    TEST_SERVER,
    drop_schema,
    temporary_engine,
    temporary_uri,
    terminate_sessions,
)
from psycopg import sql

from tests.faults.harness import CuttingProxy
from tests.services import ensure_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

_INSERT_MARKER = b"INSERT INTO events"
"""Text of the single-event statement, sent with each execution until psycopg
prepares it (after a few on one connection; the tests stay below that)."""


@pytest.fixture(scope="module", autouse=True)
def _postgres_server() -> None:
    ensure_postgres()


@pytest.fixture
def engine() -> Iterator[PostgresStorageEngine]:
    with temporary_engine() as engine:
        yield engine


def _event(aggregate_id: int, sequence: int, event_type_id: int) -> StorageEngineEvent:
    return StorageEngineEvent(
        aggregate_id, sequence, event_type_id, f'{{"n":{sequence}}}', utc_now(), ""
    )


def _read_ids(engine: PostgresStorageEngine) -> list[int]:
    reader = Subscription(id=0, name="reader", last_event_id=0)
    return [e.event_id for e in engine.get_events_for_subscription(None, reader, 1000)]


def _wait_until_blocked(schema: str) -> None:
    """Until a session of the engine waits for a lock (the unique index check)."""
    deadline = time.monotonic() + 10
    with psycopg.connect(TEST_SERVER, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND wait_event_type = 'Lock'",
                (schema,),
            ).fetchone()
            if row is not None and row[0] > 0:
                return
            time.sleep(0.01)
    raise AssertionError("the writer never blocked")


def test_a_running_autocommit_writer_holds_back_readers(engine: PostgresStorageEngine) -> None:
    """Writer A's statement draws id a, then waits on the unique index for C (an open
    transaction that wrote the same (aggregate, sequence) first, with id c < a).
    Writer B commits id b > a meanwhile. The reader delivers nothing past c while C
    and A run (the naive ``id > cursor`` read, the control, shows b alone), then a
    and b in order once C rolled back and A committed."""
    schema = engine.options.schema
    type_id = engine.get_aggregate_type_id(None, "Account")
    event_type = engine.get_event_type_id(None, "Opened")
    first, second = engine.new_aggregate(None, type_id), engine.new_aggregate(None, type_id)
    blocker = engine.get_transaction_info()
    engine.write_state(blocker, [_event(first, 1, event_type)], [])

    errors: list[BaseException] = []

    def write_a() -> None:
        try:
            tx = engine.get_transaction_info()
            engine.write_state_and_commit(tx, [_event(first, 1, event_type)], [])
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    writer_a = threading.Thread(target=write_a)
    writer_a.start()
    try:
        _wait_until_blocked(schema)
        engine.write_state_and_commit(
            engine.get_transaction_info(), [_event(second, 1, event_type)], []
        )
        with psycopg.connect(TEST_SERVER, autocommit=True) as naive:
            naive.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            committed = [int(r[0]) for r in naive.execute("SELECT id FROM events ORDER BY id")]
        assert len(committed) == 1  # control: a naive reader would deliver b alone now
        assert _read_ids(engine) == []  # never past the ids of the open writers
    finally:
        blocker.rollback()
        writer_a.join(timeout=30)
    assert errors == []
    [a] = [e.event_id for e in engine.get_events_for_aggregate(None, first, 0)]
    [b] = committed
    assert a < b
    deadline = time.monotonic() + 10
    while (ids := _read_ids(engine)) != [a, b] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ids == [a, b]


def test_a_doomed_transaction_keeps_nothing(engine: PostgresStorageEngine) -> None:
    type_id = engine.get_aggregate_type_id(None, "Account")
    event_type = engine.get_event_type_id(None, "Opened")
    target = engine.new_aggregate(None, type_id)
    engine.new_aggregate_with_key(None, type_id, "taken")
    tx = engine.get_transaction_info()
    engine.new_aggregate_with_key(tx, type_id, "rolled-back")
    with pytest.raises(ConstraintViolationError):
        engine.new_aggregate_with_key(tx, type_id, "taken")
    with pytest.raises(StorageEngineError, match="cannot commit after an error"):
        engine.write_state_and_commit(tx, [_event(target, 1, event_type)], [])
    tx.rollback()
    with pytest.raises(StorageEngineError, match="already finished"):
        tx.commit()
    assert engine.get_events_for_aggregate(None, target, 0) == []
    assert engine.get_counts(None).aggregates == 2


def test_none_is_not_a_transaction(engine: PostgresStorageEngine) -> None:
    with pytest.raises(StorageEngineError, match="needs a transaction"):
        engine.write_state_and_commit(None, [], [])  # type: ignore[arg-type]


@evercore.state_event(name="wac.Counted")
@dataclass
class Counted:
    n: int = 0


@dataclass
class Counter:
    n: int = 0


class CounterAggregate(StateAggregate[Counter]):
    aggregate_type = "wac.Counter"


def test_connection_cut_during_a_one_statement_context_is_outcome_unknown() -> None:
    """The proxy forwards the single-event INSERT, then cuts the connection before
    the answer: as that statement was the commit, the context raises
    ``CommitOutcomeUnknownError``, and the event is stored exactly once (it would be
    absent had a ``BEGIN`` gone first). The next context works on a new connection."""
    schema = f"evercore_t_cut_{time.monotonic_ns()}"
    proxy = CuttingProxy(5432, marker=_INSERT_MARKER)
    uri = temporary_uri(schema, f"postgresql://postgres@127.0.0.1:{proxy.port}/test")
    try:
        with evercore.connect(f"{uri}&sslmode=disable&application_name={schema}") as store:
            _cut_one_insert(store, proxy)
    finally:
        proxy.close()
        drop_schema(schema)


def _cut_one_insert(store: EventStore, proxy: CuttingProxy) -> None:
    counter = CounterAggregate()
    store.with_context(lambda ctx: ctx.create_aggregate_into(counter))
    for n, cut in enumerate((False, True, False), start=1):
        proxy.cut_on_commit = cut
        # The aggregate stays in memory: the context sends nothing before its batch.
        try:
            with store.context() as ctx:
                ctx.apply_event_to(counter, Counted(n=n), reference=f"event {n}")
        except CommitOutcomeUnknownError as error:
            assert cut, error
            assert "may or may not" in str(error)
        else:
            assert not cut, "the statement was not cut"
    assert proxy.cuts == 1
    events = store.storage_engine.get_events_for_aggregate(None, counter.id, 0)
    assert [(e.sequence, e.reference) for e in events] == [(n, f"event {n}") for n in (1, 2, 3)]




def test_terminated_connections_under_one_statement_contexts_lose_nothing(
    engine: PostgresStorageEngine,
) -> None:
    """Three writers of one-event contexts (aggregates held in memory, so each context
    is one autocommit statement) while every connection of the engine is terminated
    five times: what was acknowledged is stored, what failed with a plain error is
    not, only ``CommitOutcomeUnknownError`` leaves the outcome open, and each
    aggregate's sequences stay contiguous."""
    store = EventStore(engine)
    stop = threading.Event()
    outcomes: dict[int, dict[str, str]] = {}
    failures: list[BaseException] = []

    def load(ctx: evercore.EventStoreReadonlyContext, aggregate_id: int) -> CounterAggregate:
        counter = CounterAggregate()
        ctx.load_state_into(counter, aggregate_id)
        return counter

    def reload(aggregate_id: int) -> CounterAggregate:
        while True:
            try:
                return store.in_readonly_context(lambda ctx: load(ctx, aggregate_id))
            except StorageEngineError:
                time.sleep(0.01)

    def writer(number: int) -> None:
        counter = CounterAggregate()
        store.with_context(lambda ctx: ctx.create_aggregate_into(counter))
        seen = outcomes[counter.id] = {}
        n = 0
        while not stop.is_set():
            n += 1
            reference = f"w{number}-{n}"
            try:
                with store.context() as ctx:
                    ctx.apply_event_to(counter, Counted(n=n), reference=reference)
                seen[reference] = "ok"
                continue
            except CommitOutcomeUnknownError:
                seen[reference] = "unknown"
            except StorageEngineError:
                seen[reference] = "error"
            except BaseException as error:  # reported by the assertion below
                failures.append(error)
                return
            counter = reload(counter.id)  # the failed event moved it on in memory

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    terminated = 0
    for _ in range(5):
        time.sleep(0.3)
        terminated += terminate_sessions(engine.options.application_name)
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert failures == []
    assert terminated >= 5
    assert len(outcomes) == 3
    for aggregate_id, seen in outcomes.items():
        events = engine.get_events_for_aggregate(None, aggregate_id, 0)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        stored = [e.reference for e in events]
        assert len(stored) == len(set(stored))  # nothing stored twice
        assert {r for r, o in seen.items() if o == "ok"} <= set(stored)  # nothing lost
        assert not {r for r, o in seen.items() if o == "error"} & set(stored)
        assert sum(o == "ok" for o in seen.values()) > 10  # writing went on
    assert any(o != "ok" for seen in outcomes.values() for o in seen.values())
