"""PostgreSQL engine behaviour beyond the shared conformance suites.

No skipped events under out-of-order commits (with the naive read as a control),
the write path's typed errors and atomicity, type-id caching across rollbacks,
migrations, options and LISTEN/NOTIFY wake-ups. Each test uses its own schema in
database ``test``; an unreachable server fails the tests, it never skips them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import evercore
import psycopg
import pytest
from evercore.errors import (
    ConcurrencyError,
    ConfigurationError,
    NotFoundError,
    SchemaVersionError,
    StorageEngineError,
)
from evercore.spi import StorageEngine, SupportsEventWait, SupportsMigrations, SupportsStats
from evercore.values import SerializedEvent, Snapshot, StorageEngineEvent, Subscription
from evercore_postgres import migrations
from evercore_postgres.engine import SMALL_BATCH, PostgresStorageEngine, open_postgres_engine
from evercore_postgres.horizon import Horizon, Observation
from evercore_postgres.testing import (
    TEST_SERVER,
    drop_schema,
    temporary_engine,
    temporary_schema_name,
    temporary_uri,
)
from psycopg import sql

from tests.services import ensure_postgres

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


@pytest.fixture(scope="module", autouse=True)
def _postgres_server() -> None:
    ensure_postgres()


@pytest.fixture
def engine() -> Iterator[PostgresStorageEngine]:
    with temporary_engine() as engine:
        yield engine


@pytest.fixture
def raw(engine: PostgresStorageEngine) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain autocommit connection on the engine's schema (a second, foreign writer)."""
    with psycopg.connect(TEST_SERVER, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(engine.options.schema)))
        yield conn


def _types(engine: StorageEngine) -> tuple[int, int]:
    return engine.get_aggregate_type_id(None, "Account"), engine.get_event_type_id(None, "Opened")


def _events(
    aggregate_id: int, event_type_id: int, first: int, count: int
) -> list[StorageEngineEvent]:
    return [
        StorageEngineEvent(aggregate_id, seq, event_type_id, f'{{"n":{seq}}}', NOW, f"ref-{seq}")
        for seq in range(first, first + count)
    ]


def _read_ids(engine: StorageEngine, after: int = 0) -> list[int]:
    reader = Subscription(id=0, name="reader", last_event_id=after)
    return [e.event_id for e in engine.get_events_for_subscription(None, reader, 1000)]


def _raw_insert(conn: psycopg.Connection[tuple[object, ...]], aggregate_id: int, seq: int) -> int:
    row = conn.execute(
        "INSERT INTO events (aggregate_id, sequence, event_type_id, state, event_time) "
        "VALUES (%s, %s, (SELECT min(id) FROM event_types), '{}', now()) RETURNING id",
        (aggregate_id, seq),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _naive_ids(conn: psycopg.Connection[tuple[object, ...]], after: int) -> list[int]:
    rows = conn.execute("SELECT id FROM events WHERE id > %s ORDER BY id", (after,))
    return [int(r[0]) for r in rows]


# -- no skipped events ---------------------------------------------------------------


def test_out_of_order_commit_is_not_skipped(
    engine: PostgresStorageEngine, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Writer A draws id N and commits after writer B commits N+1: the reader waits for
    N instead of moving past it, then delivers N and N+1 in order. The naive
    ``id > cursor`` read (the control) shows N+1 alone, so it would have skipped N."""
    type_id, event_type = _types(engine)
    first, second = engine.new_aggregate(None, type_id), engine.new_aggregate(None, type_id)
    engine.write_state(None, _events(first, event_type, 1, 1), [])
    [earlier] = _read_ids(engine)

    with psycopg.connect(TEST_SERVER) as slow:  # writer A, its transaction left open
        slow.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(engine.options.schema)))
        held = _raw_insert(slow, first, 2)
        committed = _raw_insert(raw, second, 1)  # writer B, autocommit
        assert committed > held

        assert _naive_ids(raw, earlier) == [committed]  # control: a naive reader skips `held`
        assert _read_ids(engine, earlier) == []  # never past the open writer's id
        slow.commit()

    assert _read_ids(engine, earlier) == [held, committed]


def test_rolled_back_hole_settles_once_the_writer_ends(
    engine: PostgresStorageEngine, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A rolled-back writer leaves a permanent hole: delivery stalls only while it runs."""
    type_id, event_type = _types(engine)
    first, second = engine.new_aggregate(None, type_id), engine.new_aggregate(None, type_id)
    tx = engine.get_transaction_info()
    engine.write_state(tx, _events(first, event_type, 1, 3), [])
    committed = _raw_insert(raw, second, 1)
    assert _read_ids(engine) == []
    tx.rollback()
    deadline = time.monotonic() + 5
    while (ids := _read_ids(engine)) == [] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ids == [committed]


def test_writer_whose_xid_is_newer_than_the_committer_is_not_skipped(
    engine: PostgresStorageEngine, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    """The committer took its transaction id *before* the open writer did, so the open
    writer's xid can lie above the reader snapshot's xmax (absent from its in-progress
    list). The reader must still wait for it."""
    type_id, _ = _types(engine)
    first, second = engine.new_aggregate(None, type_id), engine.new_aggregate(None, type_id)
    schema = sql.SQL("SET search_path TO {}").format(sql.Identifier(engine.options.schema))
    with psycopg.connect(TEST_SERVER) as early, psycopg.connect(TEST_SERVER) as late:
        early.execute(schema)
        late.execute(schema)
        early.execute("SELECT pg_current_xact_id()")  # older xid, draws its id last
        held = _raw_insert(late, first, 1)  # newer xid, draws the lower id
        committed = _raw_insert(early, second, 1)
        early.commit()
        assert committed > held
        assert _read_ids(engine) == []
        late.commit()
    assert _read_ids(engine) == [held, committed]


def _open_foreign_transaction(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> int:
    """Leave ``conn`` idle in a transaction that holds an xid from a write in ``schema``
    (another store); return that xid."""
    table = sql.Identifier(schema, "t")
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(table))
    conn.commit()
    conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(table))
    row = conn.execute("SELECT pg_current_xact_id_if_assigned()::text::bigint").fetchone()
    assert row is not None and row[0] is not None
    return int(row[0])


def _read_until(engine: StorageEngine, after: int, want: list[int]) -> list[int]:
    deadline = time.monotonic() + 5
    while (ids := _read_ids(engine, after)) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    return ids


def test_only_writers_of_this_store_hold_back_delivery_past_a_hole(
    engine: PostgresStorageEngine, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    """A transaction idle elsewhere on the server (holding an xid from a write in
    another schema, so the server-wide xmin stays behind it) does not delay delivery
    past a rolled-back hole; a writer of this store that is still open does, until
    it ends."""
    type_id, event_type = _types(engine)
    first, second = engine.new_aggregate(None, type_id), engine.new_aggregate(None, type_id)
    other = temporary_schema_name()
    own_schema = sql.SQL("SET search_path TO {}").format(sql.Identifier(engine.options.schema))
    with (
        psycopg.connect(TEST_SERVER, application_name=engine.options.schema) as idle,
        psycopg.connect(TEST_SERVER, application_name=engine.options.schema) as open_writer,
    ):
        try:
            idle_xid = _open_foreign_transaction(idle, other)
            rolled_back = engine.get_transaction_info()
            engine.write_state(rolled_back, _events(first, event_type, 1, 1), [])
            committed = _raw_insert(raw, second, 1)
            assert _read_ids(engine) == []  # its writer may still commit the hole
            rolled_back.rollback()
            xmin = raw.execute(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
            ).fetchone()
            assert xmin is not None and xmin[0] <= idle_xid  # control: an xmin rule would wait
            assert _read_until(engine, 0, [committed]) == [committed]

            rolled_back = engine.get_transaction_info()
            engine.write_state(rolled_back, _events(first, event_type, 1, 1), [])
            later = _raw_insert(raw, second, 2)
            open_writer.execute(own_schema)
            pending = _raw_insert(open_writer, first, 2)  # this store's writer, left open
            rolled_back.rollback()
            for _ in range(5):
                assert _read_ids(engine, committed) == []
                time.sleep(0.05)
            open_writer.commit()
            assert _read_until(engine, committed, [later, pending]) == [later, pending]
        finally:
            idle.rollback()
            drop_schema(other)


def test_writer_that_rolled_back_a_savepoint_still_holds_back_its_later_ids(
    engine: PostgresStorageEngine, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Rolling back a savepoint releases the writer lock taken inside it; the id
    default takes it again for every row, so an id drawn afterwards is waited for."""
    type_id, _ = _types(engine)
    first, second = engine.new_aggregate(None, type_id), engine.new_aggregate(None, type_id)
    with psycopg.connect(TEST_SERVER, application_name=engine.options.schema) as writer:
        writer.execute(
            sql.SQL("SET search_path TO {}").format(sql.Identifier(engine.options.schema))
        )
        writer.execute("SAVEPOINT s")
        _raw_insert(writer, first, 1)
        writer.execute("ROLLBACK TO SAVEPOINT s")
        held = _raw_insert(writer, first, 1)
        committed = _raw_insert(raw, second, 1)
        assert _read_ids(engine) == []
        writer.commit()
    assert _read_ids(engine) == [held, committed]


def test_concurrent_writers_with_delayed_commits_deliver_every_event_in_order(
    engine: PostgresStorageEngine,
) -> None:
    """Four writers hold their transactions open for random short times; a reader that
    keeps polling and advancing sees every committed event once, in increasing id order."""
    type_id, event_type = _types(engine)
    aggregates = [engine.new_aggregate(None, type_id) for _ in range(4)]
    done = threading.Event()

    def write(aggregate_id: int, pause: float) -> None:
        for seq in range(1, 26):
            tx = engine.get_transaction_info()
            engine.write_state(tx, _events(aggregate_id, event_type, seq, 1), [])
            time.sleep(pause * (seq % 3))
            tx.commit()

    writers = [
        threading.Thread(target=write, args=(aggregate_id, 0.002 * (i + 1)))
        for i, aggregate_id in enumerate(aggregates)
    ]
    delivered: list[int] = []

    def read() -> None:
        while True:
            finished = done.is_set()
            ids = _read_ids(engine, delivered[-1] if delivered else 0)
            delivered.extend(ids)
            if finished and not ids:
                return
            engine.wait_for_events(delivered[-1] if delivered else 0, 0.01)

    reader = threading.Thread(target=read)
    reader.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    done.set()
    reader.join(timeout=30)
    assert not reader.is_alive()
    with engine._conn(None, "test") as conn:
        stored = [int(r[0]) for r in conn.execute("SELECT id FROM events ORDER BY id")]
    assert len(stored) == 100
    assert delivered == stored


def test_start_from_end_and_max_event_id_stop_below_an_open_writer(
    engine: PostgresStorageEngine, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    """``end`` never starts past an event that may still commit with a lower id."""
    type_id, event_type = _types(engine)
    first, second = engine.new_aggregate(None, type_id), engine.new_aggregate(None, type_id)
    engine.write_state(None, _events(first, event_type, 1, 2), [])
    tx = engine.get_transaction_info()
    engine.write_state(tx, _events(first, event_type, 3, 1), [])
    _raw_insert(raw, second, 1)
    settled = engine.get_max_event_id(None)
    assert settled == 2
    sub_id = engine.upsert_subscription(None, "from-end", None, None, None, "end", 0, None)
    assert engine.get_subscription_by_name(None, "from-end").last_event_id == 2
    tx.commit()
    assert engine.get_max_event_id(None) == 4
    assert sub_id > 0


# -- write path -----------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, SMALL_BATCH + 1], ids=["insert", "copy"])
def test_duplicate_sequence_is_a_concurrency_error_and_writes_nothing(
    engine: PostgresStorageEngine, count: int
) -> None:
    type_id, event_type = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    engine.write_state(None, _events(aggregate_id, event_type, 1, 2), [])
    other = engine.new_aggregate(None, type_id)
    batch = _events(other, event_type, 1, count) + _events(aggregate_id, event_type, 2, 1)
    with pytest.raises(ConcurrencyError) as raised:
        engine.write_state(None, batch, [Snapshot(other, "{}", count)])
    assert (raised.value.aggregate_id, raised.value.sequence) == (aggregate_id, 2)
    assert engine.get_events_for_aggregate(None, other, 0) == []
    assert engine.get_snapshot_for_aggregate(None, other) is None


def test_concurrency_error_in_a_transaction_dooms_it(engine: PostgresStorageEngine) -> None:
    type_id, event_type = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    engine.write_state(None, _events(aggregate_id, event_type, 1, 1), [])
    tx = engine.get_transaction_info()
    fresh = engine.new_aggregate(tx, type_id)
    engine.write_state(tx, _events(fresh, event_type, 1, 1), [])
    with pytest.raises(ConcurrencyError):
        engine.write_state(tx, _events(aggregate_id, event_type, 1, 1), [])
    with pytest.raises(StorageEngineError, match="cannot commit after an error"):
        tx.commit()
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_id(None, type_id, fresh)


@pytest.mark.parametrize("count", [1, SMALL_BATCH + 1], ids=["insert", "copy"])
def test_missing_aggregate_or_event_type_is_not_found(
    engine: PostgresStorageEngine, count: int
) -> None:
    type_id, event_type = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    with pytest.raises(NotFoundError, match="aggregate 987654 does not exist"):
        engine.write_state(None, _events(987654, event_type, 1, count), [])
    with pytest.raises(NotFoundError, match="event type id 55555"):
        engine.write_state(None, _events(aggregate_id, 55555, 1, count), [])
    with pytest.raises(NotFoundError):
        engine.write_state(None, [], [Snapshot(987654, "{}", 1)])


def test_referenced_rows_cannot_be_deleted(
    engine: PostgresStorageEngine, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Integrity is checked per statement, so the referenced rows are protected instead."""
    type_id, event_type = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    engine.write_state(None, _events(aggregate_id, event_type, 1, 1), [])
    for statement in (
        "DELETE FROM aggregates",
        "DELETE FROM event_types",
        "UPDATE aggregates SET id = id + 1000",
        "TRUNCATE event_types CASCADE",
    ):
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            raw.execute(statement)


def test_events_round_trip_exactly_on_both_write_paths(engine: PostgresStorageEngine) -> None:
    type_id, event_type = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    naive = datetime(2030, 5, 6, 7, 8, 9, 1)
    odd_state = '{ "b" : 1,  "a":"é\\u0000\\n" }'
    small = [StorageEngineEvent(aggregate_id, 1, event_type, odd_state, naive, "r")]
    big = _events(aggregate_id, event_type, 2, SMALL_BATCH + 3)
    engine.write_state(None, small, [])
    snapshots = [Snapshot(aggregate_id, "s1", 3), Snapshot(aggregate_id, "s2", 5)]
    engine.write_state(None, big, snapshots)
    read = engine.get_events_for_aggregate(None, aggregate_id, 0)
    assert [e.sequence for e in read] == list(range(1, SMALL_BATCH + 5))
    assert read[0].state == odd_state
    assert read[0].event_time == naive.replace(tzinfo=timezone.utc)
    assert read[0].event_time.utcoffset() == timedelta(0)
    assert [(e.state, e.event_time, e.reference, e.event_type) for e in read[1:]] == [
        (e.state, e.event_time, e.reference, "Opened") for e in big
    ]
    assert engine.get_snapshot_for_aggregate(None, aggregate_id) == Snapshot(aggregate_id, "s2", 5)
    assert all(isinstance(e, SerializedEvent) and e.event_id > 0 for e in read)


def test_rolled_back_type_id_is_not_cached(engine: PostgresStorageEngine) -> None:
    """A type registered in a transaction that rolls back must not leave a cached id."""
    type_id = engine.get_aggregate_type_id(None, "Account")
    aggregate_id = engine.new_aggregate(None, type_id)
    tx = engine.get_transaction_info()
    doomed = engine.get_event_type_id(tx, "Doomed")
    assert engine.get_event_type_id(tx, "Doomed") == doomed  # reads its own registration
    tx.rollback()
    again = engine.get_event_type_id(None, "Doomed")
    assert again != doomed
    engine.write_state(None, _events(aggregate_id, again, 1, 1), [])
    assert engine.get_events_for_aggregate(None, aggregate_id, 0)[0].event_type == "Doomed"


def test_committed_type_id_is_cached(engine: PostgresStorageEngine) -> None:
    tx = engine.get_transaction_info()
    kept = engine.get_event_type_id(tx, "Kept")
    tx.commit()
    with engine._pool.connection() as conn:
        conn.execute("ALTER TABLE event_types RENAME TO event_types_moved")
    try:
        assert engine.get_event_type_id(None, "Kept") == kept  # answered from the cache
    finally:
        with engine._pool.connection() as conn:
            conn.execute("ALTER TABLE event_types_moved RENAME TO event_types")


# -- migrations -------------------------------------------------------------------------


def test_concurrent_migrations_do_not_race() -> None:
    schema = temporary_schema_name()
    engines = [open_postgres_engine(temporary_uri(schema)) for _ in range(4)]
    versions: list[int] = []
    try:
        threads = [
            threading.Thread(target=lambda e=e: versions.append(e.migrate())) for e in engines
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert versions == [migrations.LATEST_VERSION] * 4
        with engines[0]._pool.connection() as conn:
            rows = conn.execute("SELECT version FROM schema_version").fetchall()
        assert [r[0] for r in rows] == [v for v, _ in migrations.MIGRATIONS]
    finally:
        for engine in engines:
            engine.close()
        drop_schema(schema)


def test_newer_schema_refuses_to_open_and_to_migrate(engine: PostgresStorageEngine) -> None:
    newer = migrations.LATEST_VERSION + 1
    with engine._pool.connection() as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (newer,))
    uri = temporary_uri(engine.options.schema)
    with pytest.raises(SchemaVersionError, match=f"version {newer}"):
        open_postgres_engine(uri)
    with pytest.raises(SchemaVersionError):
        engine.migrate()


def test_connect_migrates_and_picks_the_backend_by_scheme() -> None:
    schema = temporary_schema_name()
    try:
        for scheme in ("postgresql", "postgres"):
            uri = temporary_uri(schema).replace("postgresql://", f"{scheme}://", 1)
            with evercore.connect(uri) as store:
                engine = store.storage_engine
                assert isinstance(engine, PostgresStorageEngine)
                assert isinstance(engine, SupportsMigrations)
                assert isinstance(engine, SupportsEventWait)
                assert isinstance(engine, SupportsStats)
                assert engine.get_counts(None).events == 0
    finally:
        drop_schema(schema)


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    ["Public", "1abc", "a-b", "a;drop table x", "", "x" * 64, 'a"b'],
)
def test_schema_must_be_a_plain_identifier(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        open_postgres_engine(TEST_SERVER, schema=bad)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("pool_size=0", "pool_size"),
        ("pool_size=x", "pool_size"),
        ("statement_timeout=-1", "statement_timeout"),
        ("statement_timeout=nan", "statement_timeout"),
    ],
)
def test_bad_options_are_configuration_errors(query: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        open_postgres_engine(f"{TEST_SERVER}?{query}")


def test_unknown_keyword_option_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="pool_sise"):
        open_postgres_engine(TEST_SERVER, pool_sise=3)


def test_uri_options_reach_the_server_and_kwargs_win() -> None:
    schema = temporary_schema_name()
    uri = f"{temporary_uri(schema)}&application_name=from_uri&pool_size=2&statement_timeout=0.2"
    engine = open_postgres_engine(uri, application_name="from_kwargs")
    try:
        engine.migrate()
        assert engine.options.pool_size == 2
        with engine._pool.connection() as conn:
            name = conn.execute("SHOW application_name").fetchone()
            assert name is not None and name[0] == "from_kwargs"
            path = conn.execute("SHOW search_path").fetchone()
            assert path is not None and path[0] == schema
        with (
            pytest.raises(StorageEngineError, match="statement timeout"),
            engine._conn(None, "sleep") as conn,
        ):
            conn.execute("SELECT pg_sleep(2)")
        assert engine.get_counts(None).events == 0  # the pool still works
    finally:
        engine.close()
        drop_schema(schema)


# -- notifications ----------------------------------------------------------------------


def test_a_commit_wakes_a_waiting_reader_promptly(engine: PostgresStorageEngine) -> None:
    type_id, event_type = _types(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    engine.wait_for_events(0, 0.05)  # starts the listener; this thread has now waited
    woke: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        engine.wait_for_events(0, 10.0)
        woke.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)  # the waiter is blocked by now
    engine.write_state(None, _events(aggregate_id, event_type, 1, 1), [])
    waiter.join(timeout=10)
    assert woke and woke[0] < 2.0


def test_close_stops_background_threads() -> None:
    with temporary_engine() as engine:
        type_id, event_type = _types(engine)
        aggregate_id = engine.new_aggregate(None, type_id)
        engine.write_state(None, _events(aggregate_id, event_type, 1, 1), [])
        engine.wait_for_events(0, 0.01)
        names = {t.name for t in threading.enumerate()}
        assert {"evercore-postgres-notifier", "evercore-postgres-listener"} <= names
    names = {t.name for t in threading.enumerate()}
    assert not names & {"evercore-postgres-notifier", "evercore-postgres-listener"}


# -- the settled horizon, as pure logic ---------------------------------------------------


def test_horizon_settles_a_contiguous_run_at_once() -> None:
    horizon = Horizon()
    assert horizon.observe(Observation(0, (1, 2, 3), 3)) is None
    assert horizon.settled == 3


def test_horizon_waits_until_the_writers_of_a_hole_release_the_lock() -> None:
    horizon = Horizon()
    assert horizon.observe(Observation(0, (1, 2, 4), 4)) == 4
    assert horizon.settled == 2
    horizon.add_hole(4, ("3/17", "5/2"))
    pending = horizon.pending
    assert pending is not None and horizon.waiting
    assert horizon.observe(Observation(2, (4,), 4, pending, released=False)) is None
    assert horizon.settled == 2  # one of the hole's writers still holds the lock
    assert horizon.observe(Observation(2, (4,), 4, None, released=True)) is None
    assert horizon.settled == 2  # a query that checked no writers settles nothing
    assert horizon.observe(Observation(2, (4,), 4, pending, released=True)) is None
    assert (horizon.settled, horizon.waiting) == (4, False)


def test_horizon_release_of_an_older_hole_does_not_settle_a_newer_one() -> None:
    horizon = Horizon()
    horizon.observe(Observation(0, (1, 3), 3))
    horizon.add_hole(3, ("3/17",))
    older = horizon.pending
    horizon.observe(Observation(1, (3,), 3, older, released=True))
    assert horizon.settled == 3
    horizon.observe(Observation(3, (5,), 5))
    horizon.add_hole(5, ("4/9",))
    assert horizon.observe(Observation(3, (5,), 5, older, released=True)) is None
    assert (horizon.settled, horizon.waiting) == (3, True)  # a slow query about the old hole


def test_horizon_hole_without_writers_settles_at_once() -> None:
    horizon = Horizon()
    assert horizon.observe(Observation(0, (1, 3), 3)) == 3
    horizon.add_hole(3, ())
    assert (horizon.settled, horizon.waiting) == (3, False)


def test_horizon_hole_filled_by_a_late_commit_settles_without_waiting() -> None:
    horizon = Horizon()
    horizon.observe(Observation(0, (1, 3), 3))
    horizon.add_hole(3, ("3/17",))
    assert horizon.observe(Observation(1, (2, 3, 4), 4)) is None
    assert (horizon.settled, horizon.waiting) == (4, False)


def test_horizon_never_moves_back_and_ignores_an_empty_log() -> None:
    horizon = Horizon()
    assert horizon.observe(Observation(0, (), None)) is None
    assert horizon.settled == 0
    horizon.observe(Observation(0, (1, 2), 2))
    horizon.observe(Observation(0, (1,), 1))  # an older, slower query
    assert horizon.settled == 2
