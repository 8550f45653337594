"""The PostgreSQL storage engine (psycopg 3 + psycopg_pool).

Open it with ``evercore.connect("postgresql://user@host/db?schema=app")`` (which also
migrates) or :func:`open_postgres_engine`. Every table lives in one schema, reached
through the connections' ``search_path``; no SQL is built from unchecked strings.

Write path: one context is one transaction; its events go in one binary ``COPY``
(encoded by the ``encode_copy_rows`` kernel), or for a handful of events one
``INSERT ... SELECT FROM unnest(...)`` that also carries the snapshots. Subscription
reads never pass the settled horizon (see :mod:`evercore_postgres.horizon`), so no
event that commits late with a lower id is skipped.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import psycopg
import psycopg_pool
from evercore import _kernels
from evercore.errors import (
    CommitOutcomeUnknownError,
    ConstraintViolationError,
    NotFoundError,
    StorageEngineError,
    SubscriptionLeaseLost,
)
from evercore.spi import MAX_KEY_LENGTH, StoreCounts, Transaction, validate_natural_key
from evercore.values import (
    START_BEGINNING,
    START_END,
    START_EVENT_ID,
    START_TIMESTAMP,
    IdNamePair,
    SerializedEvent,
    Snapshot,
    StorageEngineEvent,
    Subscription,
)
from psycopg import sql

from evercore_postgres import migrations
from evercore_postgres.config import PostgresOptions, parse_options
from evercore_postgres.errors import translate
from evercore_postgres.horizon import WINDOW, Horizon, Observation
from evercore_postgres.notify import Listener, Notifier

if TYPE_CHECKING:
    from typing_extensions import LiteralString

Conn = psycopg.Connection[tuple[Any, ...]]
Query = str | sql.Composed
Params = tuple[Any, ...] | dict[str, Any]

SMALL_BATCH = 8
"""Up to this many events go in one ``INSERT ... unnest`` (one round trip, snapshots
included); more go in a binary ``COPY``, which is faster per row but costs an extra
round trip."""

_TYPE_RETRIES = 5
"""Attempts of an insert-or-select whose conflicting row was committed by a
concurrent transaction after this statement's snapshot was taken."""

_SETTLE_WAIT = 2.0
"""Seconds ``get_max_event_id`` and a new ``end`` subscription wait for a hole to settle."""

_START_KINDS = (START_BEGINNING, START_END, START_EVENT_ID, START_TIMESTAMP)

_EVENT_COLUMNS = "id, aggregate_id, event_type_id, state, sequence, reference, event_time"
_COPY_EVENTS = (
    "COPY events (aggregate_id, sequence, event_type_id, state, event_time, reference) "
    "FROM STDIN (FORMAT binary)"
)
_INSERT_EVENT = (
    "INSERT INTO events (aggregate_id, sequence, event_type_id, state, event_time, reference) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)
_INSERT_EVENTS = (
    "INSERT INTO events (aggregate_id, sequence, event_type_id, state, event_time, reference) "
    "SELECT * FROM unnest(%(a)s::bigint[], %(s)s::bigint[], %(t)s::bigint[], %(st)s::text[], "
    "%(tm)s::timestamptz[], %(r)s::text[])"
)
_UPSERT_SNAPSHOTS = (
    "INSERT INTO snapshots (aggregate_id, sequence, state) "
    "SELECT * FROM unnest(%(sa)s::bigint[], %(ss)s::bigint[], %(sst)s::text[]) "
    "ON CONFLICT (aggregate_id) DO UPDATE SET sequence = EXCLUDED.sequence, "
    "state = EXCLUDED.state WHERE snapshots.sequence <= EXCLUDED.sequence"
)
_SUBSCRIPTION_COLUMNS = (
    "id, name, aggregate_type_id, event_type_id, "
    "ARRAY(SELECT event_type_id FROM subscription_event_types x "
    "WHERE x.subscription_id = s.id ORDER BY 1), aggregate_key, start_from, start_event_id, "
    "start_timestamp, last_event_id, active, lease_owner, lease_expires_at"
)
_HORIZON = (
    "SELECT (SELECT max(id) FROM events), "
    "ARRAY(SELECT id FROM events WHERE id > %(after)s ORDER BY id LIMIT %(window)s), "
    # Reading pg_locks briefly takes every lock-table partition: only while a hole waits.
    # A prepared transaction (pid null) holds on: PREPARE hands its lock to a new holder.
    "CASE WHEN cardinality(%(writers)s::text[]) > 0 THEN NOT EXISTS (SELECT FROM event_writers "
    "WHERE virtualtransaction = ANY(%(writers)s::text[]) OR pid IS NULL) END"
)
_WRITERS = "SELECT ARRAY(SELECT virtualtransaction FROM event_writers)"


def open_postgres_engine(uri: str, **options: Any) -> PostgresStorageEngine:
    """The backend factory: open (without migrating) the store at ``uri``.

    Options (URI query parameters or keyword arguments): ``schema`` (default
    ``evercore``), ``pool_size`` (default 5), ``statement_timeout`` (seconds, default
    none) and ``application_name`` (default ``evercore``).
    """
    return PostgresStorageEngine(parse_options(uri, **options))


class PostgresTransaction:
    """A transaction on one pooled connection; use it from one thread at a time.

    ``commit()`` after an error inside the transaction raises (nothing was written);
    ``rollback()`` is idempotent. Type ids the transaction registered are cached by
    the engine only once it commits.
    """

    def __init__(self, engine: PostgresStorageEngine, conn: Conn) -> None:
        self.engine = engine
        self.conn = conn
        self.finished = False
        self.begun = False  # BEGIN goes out with the first statement
        self.failure: Exception | None = None
        self.wrote_events = False
        self.new_event_types: dict[str, int] = {}
        self.new_aggregate_types: dict[str, int] = {}

    def __repr__(self) -> str:
        state = "finished" if self.finished else "open"
        return f"<PostgresTransaction {state} on {self.engine!r}>"

    def commit(self) -> None:
        """Commit; a lost connection during COMMIT is ``CommitOutcomeUnknownError``."""
        if self.finished:
            raise StorageEngineError("PostgreSQL transaction is already finished")
        if self.failure is not None:
            self.rollback()
            raise StorageEngineError(
                "PostgreSQL transaction cannot commit after an error; nothing was written"
            ) from self.failure
        try:
            if self.begun:
                self.conn.execute("COMMIT")
        except psycopg.Error as error:
            broken = self.conn.broken
            self._finish()
            if broken:
                raise CommitOutcomeUnknownError(
                    "PostgreSQL: the connection was lost while committing; the "
                    "transaction may or may not be stored"
                ) from error
            raise translate(error, "commit", self.engine.options.password) from error
        self.engine._committed(self)
        self._finish()

    def rollback(self) -> None:
        """Discard every write (idempotent; a lost connection has discarded them already)."""
        if self.finished:
            return
        # A lost connection needs no ROLLBACK: the server discarded the transaction.
        if self.begun:
            with contextlib.suppress(psycopg.Error):
                self.conn.execute("ROLLBACK")
        if self.wrote_events:
            self.engine._notifier.poke()  # a reader may be waiting for this hole
        self._finish()

    def _finish(self) -> None:
        self.finished = True
        self.engine._pool.putconn(self.conn)


class PostgresStorageEngine:
    """:class:`evercore.spi.StorageEngine` on PostgreSQL; also ``SupportsMigrations``,
    ``SupportsEventWait`` and ``SupportsStats``. Thread-safe."""

    def __init__(self, options: PostgresOptions) -> None:
        self.options = options
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": options.application_name,
            "options": options.server_options(),
        }
        self._search_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(options.schema))
        with self._direct_connection("connect") as conn:
            version = migrations.current_version(conn, options.schema)
        migrations.refuse_newer(version, options.schema)
        self._pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
            options.conninfo,
            min_size=1,
            max_size=options.pool_size,
            kwargs=self._connect_kwargs,
            configure=self._configure,
            check=_check_idle_connection,
            name=f"evercore-{options.schema}",
            open=True,
        )
        channel = f"evercore.{options.schema}"
        self._notifier = Notifier(self._connect, channel, options.password)
        self._listener = Listener(self._connect, channel, options.password)
        self._horizon = Horizon()
        self._event_type_ids: dict[str, int] = {}
        self._event_type_names: dict[int, str] = {}
        self._aggregate_type_ids: dict[str, int] = {}
        self._read_sql: dict[tuple[bool, bool, bool], sql.Composed] = {}
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"PostgresStorageEngine(uri={self.options.redacted!r}, "
            f"schema={self.options.schema!r}, pool_size={self.options.pool_size})"
        )

    # -- connections -------------------------------------------------------------
    def _configure(self, conn: Conn) -> None:
        conn.execute(self._search_path)

    def _connect(self) -> Conn:
        """A dedicated connection (not pooled), configured like the pooled ones."""
        conn = psycopg.connect(self.options.conninfo, **self._connect_kwargs)
        self._configure(conn)
        return conn

    @contextmanager
    def _direct_connection(self, action: str) -> Iterator[Conn]:
        try:
            with self._connect() as conn:
                yield conn
        except psycopg.Error as error:
            raise self._error(error, f"{action} to {self.options.redacted}") from error

    def _error(self, error: Exception, action: str) -> StorageEngineError:
        return translate(error, action, self.options.password)

    def _own(self, tx: Transaction | None) -> PostgresTransaction | None:
        if tx is None:
            return None
        if not isinstance(tx, PostgresTransaction) or tx.engine is not self:
            raise StorageEngineError(f"{tx!r} is not a transaction of {self!r}")
        if tx.finished:
            raise StorageEngineError("PostgreSQL transaction is already finished")
        return tx

    @contextmanager
    def _conn(self, tx: Transaction | None, action: str) -> Iterator[Conn]:
        """``tx``'s connection (sending ``BEGIN`` on its first use), or a pooled
        autocommit one; driver errors become evercore errors (and doom ``tx``)."""
        own = self._own(tx)
        try:
            if own is None:
                with self._pool.connection() as conn:
                    yield conn
            else:
                if not own.begun:
                    own.begun = True
                    own.conn.execute("BEGIN")
                yield own.conn
        except (psycopg.Error, psycopg_pool.PoolTimeout) as error:
            translated = self._error(error, action)
            if own is not None:
                own.failure = translated
            raise translated from error

    @contextmanager
    def _atomic(self, tx: Transaction | None, action: str) -> Iterator[Conn]:
        """Like :meth:`_conn`, inside a transaction of its own when ``tx`` is None."""
        with self._conn(tx, action) as conn:
            if tx is not None:
                yield conn
            else:
                with conn.transaction():
                    yield conn

    # -- engine ------------------------------------------------------------------
    @property
    def max_key_length(self) -> int:
        """The longest natural key stored (64)."""
        return MAX_KEY_LENGTH

    def get_transaction_info(self) -> PostgresTransaction:
        """Take a connection from the pool for a transaction; ``BEGIN`` is sent just
        before its first statement (a transaction that runs none costs no round trip).

        Measured: pipelining ``BEGIN`` with the first statement, or sending both in
        one simple query, saves a round trip but costs as much in psycopg's Python
        code, so neither is done."""
        try:
            return PostgresTransaction(self, self._pool.getconn())
        except psycopg_pool.PoolTimeout as error:
            raise self._error(error, "begin a transaction") from error

    def close(self) -> None:
        """Stop the notification threads and close every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._notifier.close()
        self._listener.close()
        self._pool.close()

    def migrate(self) -> int:
        """Apply pending migrations under an advisory lock; return the schema version."""
        with self._conn(None, "migrate the schema") as conn:
            return migrations.migrate(conn, self.options.schema)

    def _committed(self, tx: PostgresTransaction) -> None:
        """Publish what a committed transaction registered, and wake readers."""
        self._event_type_ids.update(tx.new_event_types)
        self._aggregate_type_ids.update(tx.new_aggregate_types)
        if tx.wrote_events:
            self._notifier.poke()

    # -- types -------------------------------------------------------------------
    def _type_id(
        self,
        tx: Transaction | None,
        table: LiteralString,
        name: str,
        cache: dict[str, int],
        pending: str,
    ) -> int:
        cached = cache.get(name)
        if cached is not None:
            return cached
        own = self._own(tx)
        if own is not None:
            mine = cast(dict[str, int], getattr(own, pending)).get(name)
            if mine is not None:
                return mine
        if not isinstance(name, str) or not name:
            raise ValueError(f"a type name must be a non-empty str, got {name!r}")
        query = (
            f"WITH ins AS (INSERT INTO {table} (name) VALUES (%(n)s) "
            "ON CONFLICT (name) DO NOTHING RETURNING id) "
            f"SELECT id, true FROM ins UNION ALL SELECT id, false FROM {table} WHERE name = %(n)s"
        )
        with self._conn(tx, f"register {table} name {name!r}") as conn:
            for _ in range(_TYPE_RETRIES):
                row = conn.execute(query, {"n": name}).fetchone()
                if row is not None:
                    break
            else:
                raise StorageEngineError(f"PostgreSQL: could not register {table} name {name!r}")
        type_id, created = int(row[0]), bool(row[1])
        if created and own is not None:
            cast(dict[str, int], getattr(own, pending))[name] = type_id
        else:
            cache[name] = type_id
        return type_id

    def get_event_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of an event type, registering the name if it is new."""
        type_id = self._type_id(tx, "event_types", name, self._event_type_ids, "new_event_types")
        self._event_type_names[type_id] = name  # ids are never reused: always safe to keep
        return type_id

    def get_aggregate_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of an aggregate type, registering the name if it is new."""
        return self._type_id(
            tx, "aggregate_types", name, self._aggregate_type_ids, "new_aggregate_types"
        )

    def _pairs(self, tx: Transaction | None, table: LiteralString) -> list[IdNamePair]:
        with self._conn(tx, f"list {table}") as conn:
            rows = conn.execute(f"SELECT id, name FROM {table} ORDER BY id").fetchall()
        return [IdNamePair(int(i), str(n)) for i, n in rows]

    def get_aggregate_types(self, tx: Transaction | None) -> list[IdNamePair]:
        """Every registered aggregate type, by id."""
        return self._pairs(tx, "aggregate_types")

    def get_event_types(self, tx: Transaction | None) -> list[IdNamePair]:
        """Every registered event type, by id."""
        pairs = self._pairs(tx, "event_types")
        self._event_type_names.update(pairs)
        return pairs

    def _event_type_name(self, conn: Conn, type_id: int) -> str:
        name = self._event_type_names.get(type_id)
        if name is None:
            rows = conn.execute("SELECT id, name FROM event_types").fetchall()
            self._event_type_names.update((int(i), str(n)) for i, n in rows)
            name = self._event_type_names.get(type_id)
            if name is None:
                raise StorageEngineError(f"PostgreSQL: event type id {type_id} has no name")
        return name

    # -- aggregates ----------------------------------------------------------------
    def new_aggregate(self, tx: Transaction | None, aggregate_type_id: int) -> int:
        """Create an aggregate without a natural key; return its id."""
        with self._conn(tx, f"create an aggregate of type id {aggregate_type_id}") as conn:
            row = conn.execute(
                "INSERT INTO aggregates (aggregate_type_id) VALUES (%s) RETURNING id",
                (aggregate_type_id,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def new_aggregate_with_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> int:
        """Create an aggregate with a natural key (unique across aggregate types)."""
        validate_natural_key(natural_key, self.max_key_length)
        action = f"create an aggregate with natural key {natural_key!r}"
        with self._conn(tx, action) as conn:
            row = conn.execute(
                "INSERT INTO aggregates (aggregate_type_id, natural_key) VALUES (%s, %s) "
                "RETURNING id",
                (aggregate_type_id, natural_key),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def get_aggregate_by_id(
        self, tx: Transaction | None, aggregate_type_id: int, aggregate_id: int
    ) -> tuple[int, str | None]:
        """(id, natural key or None) of an aggregate of this type, else ``NotFoundError``."""
        with self._conn(tx, f"load aggregate {aggregate_id}") as conn:
            row = conn.execute(
                "SELECT natural_key FROM aggregates WHERE id = %s AND aggregate_type_id = %s",
                (aggregate_id, aggregate_type_id),
            ).fetchone()
        if row is None:
            raise NotFoundError(
                f"no aggregate {aggregate_id} of aggregate type id {aggregate_type_id}"
            )
        return aggregate_id, row[0]

    def get_aggregate_by_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> int:
        """The id of the aggregate of this type with this key, else ``NotFoundError``."""
        validate_natural_key(natural_key, self.max_key_length)
        with self._conn(tx, f"look up natural key {natural_key!r}") as conn:
            row = conn.execute(
                "SELECT id FROM aggregates WHERE natural_key = %s AND aggregate_type_id = %s",
                (natural_key, aggregate_type_id),
            ).fetchone()
        if row is None:
            raise NotFoundError(
                f"no aggregate with natural key {natural_key!r} of aggregate type id "
                f"{aggregate_type_id}"
            )
        return int(row[0])

    def get_or_create_aggregate_by_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> tuple[bool, int]:
        """(created, id). A key held by an aggregate of another type is a
        ``ConstraintViolationError`` (keys are unique across types)."""
        validate_natural_key(natural_key, self.max_key_length)
        query = (
            "WITH ins AS (INSERT INTO aggregates (aggregate_type_id, natural_key) "
            "VALUES (%(t)s, %(k)s) ON CONFLICT (natural_key) DO NOTHING "
            "RETURNING id, aggregate_type_id) "
            "SELECT id, aggregate_type_id, true FROM ins UNION ALL "
            "SELECT id, aggregate_type_id, false FROM aggregates WHERE natural_key = %(k)s"
        )
        with self._conn(tx, f"get or create natural key {natural_key!r}") as conn:
            for _ in range(_TYPE_RETRIES):
                row = conn.execute(query, {"t": aggregate_type_id, "k": natural_key}).fetchone()
                if row is not None:
                    break
            else:
                raise StorageEngineError(
                    f"PostgreSQL: could not get or create natural key {natural_key!r}"
                )
        aggregate_id, type_id, created = int(row[0]), int(row[1]), bool(row[2])
        if type_id != aggregate_type_id:
            raise ConstraintViolationError(
                f"natural key {natural_key!r} is used by aggregate {aggregate_id} of aggregate "
                f"type id {type_id}, not {aggregate_type_id}"
            )
        return created, aggregate_id

    def change_aggregate_natural_key(
        self, tx: Transaction | None, aggregate_id: int, natural_key: str
    ) -> None:
        """Give an aggregate (with or without a key) a new natural key."""
        validate_natural_key(natural_key, self.max_key_length)
        action = f"change the natural key of aggregate {aggregate_id} to {natural_key!r}"
        with self._conn(tx, action) as conn:
            cur = conn.execute(
                "UPDATE aggregates SET natural_key = %s WHERE id = %s", (natural_key, aggregate_id)
            )
        if cur.rowcount == 0:
            raise NotFoundError(f"aggregate {aggregate_id} not found")

    # -- events and snapshots ------------------------------------------------------
    def get_snapshot_for_aggregate(
        self, tx: Transaction | None, aggregate_id: int
    ) -> Snapshot | None:
        """The latest snapshot of an aggregate, or None."""
        with self._conn(tx, f"load the snapshot of aggregate {aggregate_id}") as conn:
            row = conn.execute(
                "SELECT state, sequence FROM snapshots WHERE aggregate_id = %s", (aggregate_id,)
            ).fetchone()
        return None if row is None else Snapshot(aggregate_id, row[0], row[1])

    def get_events_for_aggregate(
        self, tx: Transaction | None, aggregate_id: int, after_sequence: int
    ) -> list[SerializedEvent]:
        """The aggregate's events with sequence > ``after_sequence``, in sequence order."""
        query = (
            f"SELECT {_EVENT_COLUMNS} FROM events "
            "WHERE aggregate_id = %s AND sequence > %s ORDER BY sequence"
        )
        with self._conn(tx, f"load the events of aggregate {aggregate_id}") as conn:
            return self._read_events(conn, query, (aggregate_id, after_sequence))

    def _read_events(self, conn: Conn, query: Query, params: Params) -> list[SerializedEvent]:
        """Events read with ``_EVENT_COLUMNS``. Binary results parse faster (times
        above all), and the tuples are built without ``SerializedEvent.__new__``'s
        Python frame: together about a third of a 10,000-event read."""
        rows = conn.cursor(binary=True).execute(query, params).fetchall()
        names = self._event_type_names
        if not all(row[2] in names for row in rows):
            for row in rows:  # a type registered by another process: learn its name
                self._event_type_name(conn, row[2])
        make = tuple.__new__
        return [
            make(SerializedEvent, (i, a, names[t], s, q, r, tm)) for i, a, t, s, q, r, tm in rows
        ]

    def write_state(
        self,
        tx: Transaction | None,
        events: Sequence[StorageEngineEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """Store events and snapshots in one transaction: one round trip for a few
        events (snapshots included), else one binary COPY plus one for the snapshots.

        A duplicate (aggregate, sequence) raises ``ConcurrencyError`` naming both; a
        missing aggregate or event type raises ``NotFoundError``; nothing is kept.
        """
        if events or snapshots:
            self._write(tx, _Batch(events, snapshots))

    def _write(self, tx: Transaction | None, batch: _Batch) -> None:
        connection = self._conn if batch.single_statement else self._atomic
        with connection(tx, batch.action) as conn:
            batch.run(conn)
        own = self._own(tx)
        if own is not None:
            own.wrote_events = own.wrote_events or bool(batch.events)
        elif batch.events:
            self._notifier.poke()

    def write_state_and_commit(
        self,
        tx: Transaction,
        events: Sequence[StorageEngineEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """``write_state`` then ``commit``, in one round trip when ``tx`` has sent
        nothing yet and the batch is one statement (a few events and their snapshots,
        or a COPY without snapshots): the statement then runs as its own transaction
        on the autocommit connection, without ``BEGIN`` and ``COMMIT``. It still
        draws its event ids after taking its transaction id and the writer lock (the
        column default), which subscription readers rely on.

        A lost connection during that statement is ``CommitOutcomeUnknownError`` (it
        was the commit). On any error nothing of ``tx`` is kept and ``tx`` is finished.
        """
        own = self._own(tx)
        if own is None:
            raise StorageEngineError("write_state_and_commit needs a transaction, not None")
        try:
            # After an error the transaction is doomed: commit() below refuses it.
            if own.failure is None and (events or snapshots):
                batch = _Batch(events, snapshots)
                if not own.begun and batch.single_statement:
                    self._write_autocommit(own, batch)
                    return
                self._write(own, batch)
        except BaseException:
            own.rollback()  # does nothing once the transaction is finished
            raise
        own.commit()

    def _write_autocommit(self, tx: PostgresTransaction, batch: _Batch) -> None:
        """Run ``batch`` (one statement) as a transaction of its own and finish ``tx``."""
        try:
            batch.run(tx.conn)
        except psycopg.Error as error:
            broken = tx.conn.broken
            tx._finish()  # the statement's own transaction has ended: nothing to roll back
            if broken:
                raise CommitOutcomeUnknownError(
                    f"PostgreSQL: the connection was lost while committing ({batch.action}); "
                    "the transaction may or may not be stored"
                ) from error
            raise self._error(error, batch.action) from error
        tx.wrote_events = bool(batch.events)
        self._committed(tx)
        tx._finish()

    # -- subscriptions ------------------------------------------------------------
    def _settle(self, conn: Conn) -> int:
        """Advance and return the settled horizon (see :mod:`evercore_postgres.horizon`)."""
        for _ in range(4):
            after, pending = self._horizon.settled, self._horizon.pending
            writers = [] if pending is None else list(pending.writers)
            row = conn.execute(
                _HORIZON, {"after": after, "window": WINDOW, "writers": writers}
            ).fetchone()
            assert row is not None
            max_id, ids, released = row
            hole = self._horizon.observe(
                Observation(after, tuple(ids), max_id, pending, bool(released))
            )
            if hole is not None:
                holders = conn.execute(_WRITERS).fetchone()
                assert holders is not None
                self._horizon.add_hole(hole, tuple(holders[0]))
            elif len(ids) < WINDOW:
                break
        return self._horizon.settled

    def _settle_patiently(self, conn: Conn) -> int:
        """The settled horizon, waiting up to ``_SETTLE_WAIT`` for a hole to settle."""
        deadline = time.monotonic() + _SETTLE_WAIT
        settled = self._settle(conn)
        while self._horizon.waiting and time.monotonic() < deadline:
            time.sleep(0.005)
            settled = self._settle(conn)
        return settled

    def settled_event_id(self) -> int:
        """The highest id below which no event can still appear (delivery limit)."""
        with self._conn(None, "compute the settled event id") as conn:
            return self._settle(conn)

    def _initial_cursor(
        self, conn: Conn, start_from: str, start_event_id: int, start_timestamp: datetime | None
    ) -> int:
        if start_from == START_BEGINNING:
            return 0
        if start_from == START_EVENT_ID:
            return start_event_id
        if start_from == START_TIMESTAMP and start_timestamp is not None:
            first = self._first_event_id_at(conn, start_timestamp)
            if first:
                return first - 1
        with self._conn(None, "compute the settled event id") as fresh:
            return self._settle_patiently(fresh)

    def upsert_subscription(
        self,
        tx: Transaction | None,
        name: str,
        aggregate_type_id: int | None,
        event_type_id: int | None,
        aggregate_key: str | None,
        start_from: str,
        start_event_id: int,
        start_timestamp: datetime | None,
    ) -> int:
        """Create (cursor initialised from ``start_from``: ``end`` is the settled
        horizon) or update (cursor, lease and ``active`` kept) a subscription."""
        if start_from not in _START_KINDS:
            raise ValueError(f"unknown start_from {start_from!r}; expected one of {_START_KINDS}")
        if start_from == START_TIMESTAMP and start_timestamp is None:
            raise ValueError(f"subscription {name!r}: start_from 'timestamp' needs a timestamp")
        if aggregate_key is not None:
            validate_natural_key(aggregate_key, self.max_key_length)
        with self._conn(tx, f"upsert subscription {name!r}") as conn:
            exists = conn.execute("SELECT id FROM subscriptions WHERE name = %s", (name,))
            cursor = 0 if exists.fetchone() else self._initial_cursor(
                conn, start_from, start_event_id, start_timestamp
            )  # fmt: skip
            row = conn.execute(
                "INSERT INTO subscriptions (name, aggregate_type_id, event_type_id, "
                "aggregate_key, start_from, start_event_id, start_timestamp, last_event_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "aggregate_type_id = EXCLUDED.aggregate_type_id, "
                "event_type_id = EXCLUDED.event_type_id, aggregate_key = EXCLUDED.aggregate_key, "
                "start_from = EXCLUDED.start_from, start_event_id = EXCLUDED.start_event_id, "
                "start_timestamp = EXCLUDED.start_timestamp, updated_at = now() RETURNING id",
                (name, aggregate_type_id, event_type_id, aggregate_key, start_from,
                 start_event_id, start_timestamp, cursor),
            ).fetchone()  # fmt: skip
        assert row is not None
        return int(row[0])

    def add_subscription_event_type(
        self, tx: Transaction | None, subscription_id: int, event_type_id: int
    ) -> None:
        """Add an event type to a subscription's multi-type filter (idempotent)."""
        action = f"add event type id {event_type_id} to subscription id {subscription_id}"
        with self._conn(tx, action) as conn:
            conn.execute(
                "INSERT INTO subscription_event_types (subscription_id, event_type_id) "
                "VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (subscription_id, event_type_id),
            )

    def get_subscription_by_name(self, tx: Transaction | None, name: str) -> Subscription:
        """The subscription with ``event_type_ids`` filled; else ``NotFoundError``."""
        with self._conn(tx, f"load subscription {name!r}") as conn:
            row = conn.execute(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE name = %s", (name,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"subscription {name!r} not found")
        return _subscription(row)

    def list_subscriptions(self, tx: Transaction | None) -> list[Subscription]:
        """Every durable subscription, with its cursor and lease, by id."""
        with self._conn(tx, "list subscriptions") as conn:
            rows = conn.execute(
                f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions s ORDER BY id"
            ).fetchall()
        return [_subscription(row) for row in rows]

    def set_subscription_active(
        self, tx: Transaction | None, subscription_id: int, active: bool
    ) -> None:
        """Switch a subscription on or off."""
        with self._conn(tx, f"set subscription id {subscription_id} active={active}") as conn:
            cur = conn.execute(
                "UPDATE subscriptions SET active = %s, updated_at = now() WHERE id = %s",
                (active, subscription_id),
            )
        if cur.rowcount == 0:
            raise NotFoundError(f"subscription id {subscription_id} not found")

    def _lease_update(
        self, tx: Transaction | None, action: str, query: LiteralString, params: dict[str, Any]
    ) -> bool:
        with self._conn(tx, action) as conn:
            return conn.execute(query, params).rowcount == 1

    def claim_subscription(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float
    ) -> bool:
        """Take the lease if the subscription is active and the lease is free, expired
        or already ``owner``'s (judged by the database clock)."""
        return self._lease_update(
            tx,
            f"claim subscription {name!r}",
            "UPDATE subscriptions SET lease_owner = %(o)s, "
            "lease_expires_at = clock_timestamp() + %(l)s * interval '1 second', "
            "updated_at = now() WHERE name = %(n)s AND active AND (lease_owner IS NULL "
            "OR lease_owner = %(o)s OR lease_expires_at IS NULL "
            "OR lease_expires_at <= clock_timestamp())",
            {"o": owner, "l": lease_seconds, "n": name},
        )

    def renew_subscription(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float
    ) -> bool:
        """Extend the lease; only the owner of an unexpired lease succeeds."""
        return self._lease_update(
            tx,
            f"renew subscription {name!r}",
            "UPDATE subscriptions SET "
            "lease_expires_at = clock_timestamp() + %(l)s * interval '1 second', "
            "updated_at = now() WHERE name = %(n)s AND lease_owner = %(o)s "
            "AND lease_expires_at > clock_timestamp()",
            {"o": owner, "l": lease_seconds, "n": name},
        )

    def release_subscription(self, tx: Transaction | None, name: str, owner: str) -> None:
        """Give up the lease if ``owner`` holds it."""
        self._lease_update(
            tx,
            f"release subscription {name!r}",
            "UPDATE subscriptions SET lease_owner = NULL, lease_expires_at = NULL, "
            "updated_at = now() WHERE name = %(n)s AND lease_owner = %(o)s",
            {"o": owner, "n": name},
        )

    def advance_subscription_cursor(
        self,
        tx: Transaction | None,
        subscription_id: int,
        last_event_id: int,
        owner: str | None = None,
    ) -> None:
        """Move the cursor forward (a lower id is ignored); with ``owner``, only while it
        holds an unexpired lease (database clock), else ``SubscriptionLeaseLost``."""
        fence = "" if owner is None else (
            " AND lease_owner = %(o)s AND lease_expires_at > clock_timestamp()"
        )  # fmt: skip
        with self._conn(tx, f"advance subscription id {subscription_id}") as conn:
            cur = conn.execute(
                "UPDATE subscriptions SET last_event_id = greatest(last_event_id, %(e)s), "
                f"updated_at = now() WHERE id = %(i)s{fence}",
                {"e": last_event_id, "i": subscription_id, "o": owner},
            )
            if cur.rowcount == 1:
                return
            row = conn.execute(
                "SELECT name, lease_owner, lease_expires_at FROM subscriptions WHERE id = %s",
                (subscription_id,),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"subscription id {subscription_id} not found")
        raise SubscriptionLeaseLost(
            f"subscription {row[0]!r}: {owner!r} does not hold the lease "
            f"(held by {row[1]!r} until {row[2]})"
        )

    def _read_query(self, by_type: bool, by_key: bool, by_event_types: bool) -> sql.Composed:
        shape = (by_type, by_key, by_event_types)
        query = self._read_sql.get(shape)
        if query is None:
            where = [sql.SQL("e.id > %(after)s AND e.id <= %(upto)s")]
            if by_type:
                where.append(sql.SQL("a.aggregate_type_id = %(atype)s"))
            if by_key:
                where.append(sql.SQL(
                    "e.aggregate_id = (SELECT id FROM aggregates WHERE natural_key = %(key)s)"
                ))  # fmt: skip
            if by_event_types:
                where.append(sql.SQL("e.event_type_id = ANY(%(etypes)s)"))
            join = "JOIN aggregates a ON a.id = e.aggregate_id " if by_type else ""
            columns = ", ".join(f"e.{c.strip()}" for c in _EVENT_COLUMNS.split(","))
            query = (
                sql.SQL(f"SELECT {columns} FROM events e {join}WHERE ")
                + sql.SQL(" AND ").join(where)
                + sql.SQL(" ORDER BY e.id LIMIT %(limit)s")
            )
            self._read_sql[shape] = query
        return query

    def get_events_for_subscription(
        self, tx: Transaction | None, subscription: Subscription, limit: int
    ) -> list[SerializedEvent]:
        """Up to ``limit`` matching events with id > ``last_event_id``, in id order, all
        at or below the settled horizon, so none that commits later is skipped."""
        if limit < 1:
            return []
        event_types = subscription.event_type_ids or (
            () if subscription.event_type_id is None else (subscription.event_type_id,)
        )
        query = self._read_query(
            subscription.aggregate_type_id is not None,
            subscription.aggregate_key is not None,
            bool(event_types),
        )
        params: dict[str, Any] = {
            "after": subscription.last_event_id,
            "atype": subscription.aggregate_type_id,
            "key": subscription.aggregate_key,
            "etypes": list(event_types),
            "limit": limit,
        }
        with self._conn(None, f"read events for subscription {subscription.name!r}") as conn:
            upto = params["upto"] = self._settle(conn)
            if upto <= subscription.last_event_id:
                return []
            if tx is None:
                return self._read_events(conn, query, params)
        with self._conn(tx, f"read events for subscription {subscription.name!r}") as conn:
            return self._read_events(conn, query, params)

    def get_max_event_id(self, tx: Transaction | None) -> int:
        """The highest event id below which no event can still appear: in a quiet
        store the highest id (0 when empty). While a writer that drew a lower id is
        still running, it waits up to two seconds for it, then answers the lower,
        safe id, so a reader that starts from here never skips an event."""
        self._own(tx)
        with self._conn(None, "read the highest event id") as conn:
            return self._settle_patiently(conn)

    def _first_event_id_at(self, conn: Conn, ts: datetime) -> int:
        row = conn.execute("SELECT min(id) FROM events WHERE event_time >= %s", (ts,)).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def get_first_event_id_from_timestamp(self, tx: Transaction | None, ts: datetime) -> int:
        """The id of the first event with time >= ``ts`` (unfiltered), 0 when none."""
        with self._conn(tx, f"find the first event at {ts.isoformat()}") as conn:
            return self._first_event_id_at(conn, ts)

    # -- optional capabilities ----------------------------------------------------
    def wait_for_events(self, after_event_id: int, timeout: float) -> None:
        """Return when a NOTIFY arrives (or arrived since this thread last waited) or
        after ``timeout``; sooner while a hole is settling (a writer that rolled back
        or died sends nothing)."""
        self._listener.wait(self._horizon.recheck_after(timeout))

    def get_counts(self, tx: Transaction | None) -> StoreCounts:
        """How many aggregates, events and snapshots are stored."""
        with self._conn(tx, "count rows") as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM aggregates), (SELECT count(*) FROM events), "
                "(SELECT count(*) FROM snapshots)"
            ).fetchone()
        assert row is not None
        return StoreCounts(int(row[0]), int(row[1]), int(row[2]))


class _Batch:
    """The statements that write one batch of events and snapshots."""

    __slots__ = ("action", "copy_data", "events", "single_statement", "snapshot_params")

    def __init__(self, events: Sequence[StorageEngineEvent], snapshots: Sequence[Snapshot]):
        latest: dict[int, Snapshot] = {}
        for snapshot in snapshots:
            kept = latest.get(snapshot.aggregate_id)
            if kept is None or snapshot.sequence >= kept.sequence:
                latest[snapshot.aggregate_id] = snapshot
        self.events = events
        self.snapshot_params: dict[str, list[Any]] | None = {
            "sa": [s.aggregate_id for s in latest.values()],
            "ss": [s.sequence for s in latest.values()],
            "sst": [s.state for s in latest.values()],
        } if latest else None  # fmt: skip
        self.copy_data = _kernels.encode_copy_rows(events) if len(events) > SMALL_BATCH else None
        self.single_statement = self.copy_data is None or not latest
        self.action = f"write {len(events)} event(s) and {len(latest)} snapshot(s)"

    def run(self, conn: Conn) -> None:
        """Send the statements on ``conn`` (inside a transaction unless there is one)."""
        events, snapshot_params = self.events, self.snapshot_params
        if self.copy_data is not None:
            with conn.cursor().copy(_COPY_EVENTS) as copy:
                copy.write(self.copy_data)
            if snapshot_params is not None:
                conn.execute(_UPSERT_SNAPSHOTS, snapshot_params)
        elif len(events) == 1 and snapshot_params is None:
            # Scalars adapt faster than one-element arrays: the single-event context.
            conn.execute(_INSERT_EVENT, events[0])
        else:
            conn.execute(
                _small_write_sql(bool(events), snapshot_params is not None),
                {**_event_params(events), **(snapshot_params or {})},
            )


def _check_idle_connection(conn: Conn) -> None:
    """Pool check at checkout: an idle connection has nothing to read unless the server
    ended it (then it sent an error and closed the socket) or sent a notice. Only
    then pay a round trip to find out; a dead connection raises and the pool
    replaces it, so a restart or ``pg_terminate_backend`` costs no failed call."""
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        conn.execute("")


def _small_write_sql(events: bool, snapshots: bool) -> LiteralString:
    """One statement writing a small batch of events and the snapshots together."""
    if events and snapshots:
        return f"WITH ev AS ({_INSERT_EVENTS}) {_UPSERT_SNAPSHOTS}"
    return _INSERT_EVENTS if events else _UPSERT_SNAPSHOTS


def _event_params(events: Sequence[StorageEngineEvent]) -> dict[str, list[Any]]:
    return {
        "a": [e.aggregate_id for e in events],
        "s": [e.sequence for e in events],
        "t": [e.event_type_id for e in events],
        "st": [e.state for e in events],
        "tm": [e.event_time for e in events],
        "r": [e.reference for e in events],
    }


def _subscription(row: tuple[Any, ...]) -> Subscription:
    return Subscription(
        id=row[0],
        name=row[1],
        aggregate_type_id=row[2],
        event_type_id=row[3],
        event_type_ids=tuple(row[4]),
        aggregate_key=row[5],
        start_from=row[6],
        start_event_id=row[7],
        start_timestamp=row[8],
        last_event_id=row[9],
        active=row[10],
        lease_owner=row[11],
        lease_expires_at=row[12],
    )
