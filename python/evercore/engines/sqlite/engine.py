"""The SQLite storage engine: durable, embedded, standard library only.

Open it with ``evercore.connect("sqlite:///events.db")`` (or ``open_sqlite_engine``
directly); ``sqlite://:memory:`` is a private database deleted on ``close()``. The
file runs in WAL mode with ``synchronous=NORMAL`` unless told otherwise
(``?synchronous=FULL`` survives power loss too). Several threads and several
processes may use one file: each transaction owns a pooled connection, writers take
SQLite's single write lock with ``BEGIN IMMEDIATE`` at their first write and wait up
to ``busy_timeout`` seconds for it (see :mod:`evercore.engines.sqlite._connections`).

Options (query string or keyword): ``synchronous`` (OFF, NORMAL, FULL, EXTRA),
``busy_timeout`` (seconds, default 5), ``pool_size`` (idle connections kept,
default 4), ``cache_size`` (page cache per connection in KiB, default 16384). An
in-memory database defaults to ``synchronous=OFF``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from evercore import _kernels
from evercore.engines.sqlite import _schema
from evercore.engines.sqlite._config import SqliteConfig, parse_config
from evercore.engines.sqlite._connections import (
    ConnectionPool,
    SqliteTransaction,
    check_path,
    translate,
)
from evercore.errors import (
    ConcurrencyError,
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

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_MICROSECOND = timedelta(microseconds=1)
_TD = timedelta

_NOW_US = "(CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) * 1000)"
"""SQLite's clock in microseconds since the epoch (millisecond resolution). Leases
are judged by it alone, so every process on the file agrees on expiry."""

_WAIT_POLL = 0.025
"""How often ``wait_for_events`` looks for other processes' events, in seconds."""

_EVENT_COLUMNS = (
    "e.id, e.aggregate_id, e.event_type_id, e.state, e.sequence, e.reference, e.event_time"
)

_INSERT_EVENT = (
    "INSERT INTO events (aggregate_id, sequence, event_type_id, state, event_time, reference) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_INSERT_SNAPSHOT = (
    "INSERT OR REPLACE INTO snapshots (aggregate_id, state, sequence) VALUES (?, ?, ?)"
)
_SELECT_AGGREGATE_EVENTS = (
    f"SELECT {_EVENT_COLUMNS} FROM events AS e "
    "WHERE e.aggregate_id = ? AND e.sequence > ? ORDER BY e.sequence"
)
_SELECT_SUBSCRIPTION = (
    "SELECT id, name, aggregate_type_id, event_type_id, aggregate_key, start_from, "
    "start_event_id, start_timestamp, last_event_id, active, lease_owner, lease_expires_at, "
    "(SELECT group_concat(event_type_id) FROM ("
    " SELECT event_type_id FROM subscription_event_types"
    " WHERE subscription_id = subscriptions.id ORDER BY event_type_id)) "
    "FROM subscriptions"
)
_TYPE_TABLES = {"aggregate": "aggregate_types", "event": "event_types"}
_START_KINDS = (START_BEGINNING, START_END, START_EVENT_ID, START_TIMESTAMP)


def open_sqlite_engine(uri: str, **options: Any) -> SqliteStorageEngine:
    """Open the SQLite database at ``uri`` (the ``sqlite`` plugin's factory).

    The schema is not migrated here (``evercore.connect`` and ``evercore migrate``
    do that), but a database written by a newer evercore is refused at once with
    ``SchemaVersionError``.
    """
    return SqliteStorageEngine(parse_config(uri, options))


class SqliteStorageEngine:
    """``evercore.StorageEngine`` on a SQLite file (or ``:memory:``), with
    ``SupportsMigrations``, ``SupportsStats`` and ``SupportsEventWait``.

    Safe to share between threads; several processes may open the same file.
    """

    def __init__(self, config: SqliteConfig) -> None:
        self.config = config
        if config.path is None:
            file_path = _temporary_database()
            self._remove_temporary: weakref.finalize[[str], SqliteStorageEngine] | None = (
                weakref.finalize(self, _remove_database_files, file_path)
            )
        else:
            check_path(config.path)
            file_path = config.path
            self._remove_temporary = None
        # Opening does not create the file (`evercore info` on a typo must not leave
        # an empty database behind); migrate() does.
        exists = os.path.exists(file_path)
        self._pool = ConnectionPool(config, file_path, create=exists)
        self._events_cond = threading.Condition()
        self._events_generation = 0
        # Event type names by id, as committed: names are never changed or removed,
        # so the map only grows (replaced whole, never mutated, so readers need no lock).
        self._event_type_names: dict[int, str] = {}
        try:
            if exists:
                self._prepare_file()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteStorageEngine({self.config.label!r})"

    @property
    def max_key_length(self) -> int:
        """The longest natural key stored (64)."""
        return MAX_KEY_LENGTH

    # -- lifecycle ------------------------------------------------------------
    def get_transaction_info(self) -> SqliteTransaction:
        """Begin a transaction. It takes no lock until its first write."""
        return SqliteTransaction(self._pool, self.config, self._notify_events)

    def close(self) -> None:
        """Close every connection (and delete an in-memory database); idempotent.
        Transactions still open on a file keep working until they finish."""
        self._pool.close()
        if self._remove_temporary is not None:
            self._remove_temporary()

    def migrate(self) -> int:
        """Apply pending schema migrations under the write lock (safe when several
        processes migrate at once); return the schema version. Creates the file."""
        if not self._pool.creates:
            self._pool.allow_create()
            self._prepare_file()
        with self._using(None, "migrating the schema") as tx:
            return _schema.apply_pending(tx.writer(), self.config.label)

    # -- types ----------------------------------------------------------------
    def get_event_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of event type ``name``, registering it if new."""
        return self._type_id(tx, "event", name)

    def get_aggregate_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of aggregate type ``name``, registering it if new."""
        return self._type_id(tx, "aggregate", name)

    def get_aggregate_types(self, tx: Transaction | None) -> list[IdNamePair]:
        """Every registered aggregate type, by id."""
        return self._types(tx, "aggregate")

    def get_event_types(self, tx: Transaction | None) -> list[IdNamePair]:
        """Every registered event type, by id."""
        return self._types(tx, "event")

    def _type_id(self, tx: Transaction | None, kind: str, name: str) -> int:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind} type name must be a non-empty str, got {name!r}")
        select = f"SELECT id FROM {_TYPE_TABLES[kind]} WHERE name = ?"
        with self._using(tx, f"looking up {kind} type {name!r}") as t:
            row = t.reader().execute(select, (name,)).fetchone()
            if row is not None:
                return int(row[0])
            # Another process may have registered it since the read: look again
            # under the write lock before inserting.
            conn = t.writer()
            row = conn.execute(select, (name,)).fetchone()
            if row is not None:
                return int(row[0])
            cursor = conn.execute(f"INSERT INTO {_TYPE_TABLES[kind]} (name) VALUES (?)", (name,))
            return _last_id(cursor)

    def _types(self, tx: Transaction | None, kind: str) -> list[IdNamePair]:
        with self._using(tx, f"listing {kind} types") as t:
            rows = t.reader().execute(f"SELECT id, name FROM {_TYPE_TABLES[kind]} ORDER BY id")
            return list(map(IdNamePair._make, rows))

    # -- aggregates -------------------------------------------------------------
    def new_aggregate(self, tx: Transaction | None, aggregate_type_id: int) -> int:
        """Create an aggregate without a natural key."""
        with self._using(tx, "creating an aggregate") as t:
            return self._insert_aggregate(t.writer(), aggregate_type_id, None)

    def new_aggregate_with_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> int:
        """Create an aggregate with a natural key (unique across all types)."""
        validate_natural_key(natural_key, MAX_KEY_LENGTH)
        with self._using(tx, f"creating an aggregate with key {natural_key!r}") as t:
            return self._insert_aggregate(t.writer(), aggregate_type_id, natural_key)

    def get_aggregate_by_id(
        self, tx: Transaction | None, aggregate_type_id: int, aggregate_id: int
    ) -> tuple[int, str | None]:
        """(id, natural key) of aggregate ``aggregate_id`` of this type."""
        with self._using(tx, f"reading aggregate {aggregate_id}") as t:
            row = (
                t.reader()
                .execute(
                    "SELECT aggregate_type_id, natural_key FROM aggregates WHERE id = ?",
                    (aggregate_id,),
                )
                .fetchone()
            )
        if row is None:
            raise NotFoundError(f"no aggregate with id {aggregate_id}")
        if row[0] != aggregate_type_id:
            raise NotFoundError(
                f"aggregate {aggregate_id} has aggregate type id {row[0]}, not {aggregate_type_id}"
            )
        return aggregate_id, row[1]

    def get_aggregate_by_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> int:
        """The id of the aggregate of this type with this natural key."""
        validate_natural_key(natural_key, MAX_KEY_LENGTH)
        with self._using(tx, f"reading aggregate with key {natural_key!r}") as t:
            found = self._find_by_key(t.reader(), natural_key)
        if found is None or found[1] != aggregate_type_id:
            raise NotFoundError(
                f"no aggregate of aggregate type id {aggregate_type_id} has key {natural_key!r}"
            )
        return found[0]

    def get_or_create_aggregate_by_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> tuple[bool, int]:
        """(created, id): the aggregate with this key, created if there is none. A key
        taken by an aggregate of another type is a ``ConstraintViolationError``."""
        validate_natural_key(natural_key, MAX_KEY_LENGTH)
        with self._using(tx, f"getting or creating aggregate {natural_key!r}") as t:
            found = self._find_by_key(t.reader(), natural_key)
            if found is None:
                # Look again under the write lock: another process may have created it.
                conn = t.writer()
                found = self._find_by_key(conn, natural_key)
                if found is None:
                    return True, self._insert_aggregate(conn, aggregate_type_id, natural_key)
        aggregate_id, type_id = found
        if type_id != aggregate_type_id:
            raise ConstraintViolationError(
                f"natural key {natural_key!r} belongs to aggregate {aggregate_id} of aggregate "
                f"type id {type_id}, not {aggregate_type_id}"
            )
        return False, aggregate_id

    def change_aggregate_natural_key(
        self, tx: Transaction | None, aggregate_id: int, natural_key: str
    ) -> None:
        """Give aggregate ``aggregate_id`` the natural key ``natural_key``."""
        validate_natural_key(natural_key, MAX_KEY_LENGTH)
        with self._using(tx, f"changing the key of aggregate {aggregate_id}") as t:
            conn = t.writer()
            try:
                cursor = conn.execute(
                    "UPDATE aggregates SET natural_key = ? WHERE id = ?",
                    (natural_key, aggregate_id),
                )
            except sqlite3.IntegrityError as exc:
                raise self._duplicate_key(conn, natural_key) from exc
        if cursor.rowcount == 0:
            raise NotFoundError(f"no aggregate with id {aggregate_id}")

    @staticmethod
    def _find_by_key(conn: sqlite3.Connection, natural_key: str) -> tuple[int, int] | None:
        row = conn.execute(
            "SELECT id, aggregate_type_id FROM aggregates WHERE natural_key = ?", (natural_key,)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def _insert_aggregate(
        self, conn: sqlite3.Connection, aggregate_type_id: int, natural_key: str | None
    ) -> int:
        try:
            cursor = conn.execute(
                "INSERT INTO aggregates (aggregate_type_id, natural_key) VALUES (?, ?)",
                (aggregate_type_id, natural_key),
            )
        except sqlite3.IntegrityError as exc:
            if "FOREIGN KEY" in str(exc):
                raise NotFoundError(f"no aggregate type with id {aggregate_type_id}") from exc
            assert natural_key is not None
            raise self._duplicate_key(conn, natural_key) from exc
        return _last_id(cursor)

    def _duplicate_key(self, conn: sqlite3.Connection, natural_key: str) -> StorageEngineError:
        found = self._find_by_key(conn, natural_key)
        owner = f" by aggregate {found[0]}" if found else ""
        return ConstraintViolationError(f"natural key {natural_key!r} is already used{owner}")

    # -- events and snapshots -----------------------------------------------------
    def get_snapshot_for_aggregate(
        self, tx: Transaction | None, aggregate_id: int
    ) -> Snapshot | None:
        """The snapshot with the highest sequence, or None."""
        with self._using(tx, f"reading the snapshot of aggregate {aggregate_id}") as t:
            row = (
                t.reader()
                .execute(
                    "SELECT state, sequence FROM snapshots WHERE aggregate_id = ? "
                    "ORDER BY sequence DESC LIMIT 1",
                    (aggregate_id,),
                )
                .fetchone()
            )
        return None if row is None else Snapshot(aggregate_id, row[0], row[1])

    def get_events_for_aggregate(
        self, tx: Transaction | None, aggregate_id: int, after_sequence: int
    ) -> list[SerializedEvent]:
        """The aggregate's events after ``after_sequence``, in sequence order."""
        with self._using(tx, f"reading the events of aggregate {aggregate_id}") as t:
            conn = t.reader()
            rows = conn.execute(_SELECT_AGGREGATE_EVENTS, (aggregate_id, after_sequence))
            return self._events(t, conn, rows.fetchall())

    def write_state(
        self,
        tx: Transaction | None,
        events: Sequence[StorageEngineEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """Insert events (one ``executemany``) and snapshots. A duplicate (aggregate,
        sequence) raises ``ConcurrencyError`` and rolls the whole transaction back."""
        if not events and not snapshots:
            return
        rows = _event_rows(events)
        with self._using(tx, "writing events") as t:
            conn = t.writer()
            before = conn.total_changes
            try:
                if rows:
                    conn.executemany(_INSERT_EVENT, rows)
                    t.wrote_events = True
                if snapshots:
                    conn.executemany(_INSERT_SNAPSHOT, snapshots)
            except sqlite3.Error as exc:
                # executemany stops at the failing row; the rows before it were
                # inserted one change each, which locates it.
                error = _write_error(conn, exc, events, conn.total_changes - before, self.config)
                t.abort(f"write_state failed: {error}")
                raise error from exc

    # -- durable subscriptions ------------------------------------------------------
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
        """Create or update subscription ``name``; on create the cursor starts from
        ``start_from``. An update replaces the filter (and clears the multi-type
        filter, which the caller adds again) but keeps cursor, lease and ``active``."""
        if start_from not in _START_KINDS:
            raise ValueError(f"unknown start_from {start_from!r}; expected one of {_START_KINDS}")
        if start_from == START_TIMESTAMP and start_timestamp is None:
            raise ValueError(f"subscription {name!r} starts from a timestamp but has none")
        start_us = None if start_timestamp is None else _to_us(start_timestamp)
        with self._using(tx, f"saving subscription {name!r}") as t:
            conn = t.writer()
            row = conn.execute("SELECT id FROM subscriptions WHERE name = ?", (name,)).fetchone()
            params = (
                aggregate_type_id,
                event_type_id,
                aggregate_key,
                start_from,
                start_event_id,
                start_us,
            )
            if row is not None:
                conn.execute(
                    "UPDATE subscriptions SET aggregate_type_id = ?, event_type_id = ?, "
                    "aggregate_key = ?, start_from = ?, start_event_id = ?, "
                    "start_timestamp = ? WHERE id = ?",
                    (*params, row[0]),
                )
                conn.execute(
                    "DELETE FROM subscription_event_types WHERE subscription_id = ?", (row[0],)
                )
                return int(row[0])
            cursor = _initial_cursor(conn, start_from, start_event_id, start_us)
            inserted = conn.execute(
                "INSERT INTO subscriptions (aggregate_type_id, event_type_id, aggregate_key, "
                "start_from, start_event_id, start_timestamp, name, last_event_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (*params, name, cursor),
            )
            return _last_id(inserted)

    def add_subscription_event_type(
        self, tx: Transaction | None, subscription_id: int, event_type_id: int
    ) -> None:
        """Add ``event_type_id`` to the subscription's multi-type filter (idempotent)."""
        with self._using(tx, f"adding an event type to subscription {subscription_id}") as t:
            conn = t.writer()
            self._require_subscription(conn, subscription_id)
            conn.execute(
                "INSERT OR IGNORE INTO subscription_event_types (subscription_id, event_type_id) "
                "VALUES (?, ?)",
                (subscription_id, event_type_id),
            )

    def get_subscription_by_name(self, tx: Transaction | None, name: str) -> Subscription:
        """The subscription called ``name``, with ``event_type_ids`` filled."""
        with self._using(tx, f"reading subscription {name!r}") as t:
            row = t.reader().execute(f"{_SELECT_SUBSCRIPTION} WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no subscription named {name!r}")
        return _subscription_from_row(row)

    def set_subscription_active(
        self, tx: Transaction | None, subscription_id: int, active: bool
    ) -> None:
        """Switch subscription ``subscription_id`` on or off."""
        with self._using(tx, f"switching subscription {subscription_id}") as t:
            cursor = t.writer().execute(
                "UPDATE subscriptions SET active = ? WHERE id = ?", (bool(active), subscription_id)
            )
        if cursor.rowcount == 0:
            raise NotFoundError(f"no subscription with id {subscription_id}")

    def claim_subscription(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float
    ) -> bool:
        """Take the lease of an active subscription if it is free, expired or already
        ``owner``'s (as in Go, a switched-off subscription cannot be claimed)."""
        return self._update_lease(
            tx,
            name,
            owner,
            lease_seconds,
            "active = 1 AND (lease_owner IS NULL OR lease_owner = :owner "
            f"OR lease_expires_at IS NULL OR lease_expires_at <= {_NOW_US})",
        )

    def renew_subscription(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float
    ) -> bool:
        """Extend the lease; only the owner of an unexpired lease succeeds."""
        return self._update_lease(
            tx,
            name,
            owner,
            lease_seconds,
            f"lease_owner = :owner AND lease_expires_at > {_NOW_US}",
        )

    def release_subscription(self, tx: Transaction | None, name: str, owner: str) -> None:
        """Give up the lease if ``owner`` holds it."""
        with self._using(tx, f"releasing subscription {name!r}") as t:
            t.writer().execute(
                "UPDATE subscriptions SET lease_owner = NULL, lease_expires_at = NULL "
                "WHERE name = ? AND lease_owner = ?",
                (name, owner),
            )

    def _update_lease(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float, condition: str
    ) -> bool:
        params = {"name": name, "owner": owner, "lease": round(lease_seconds * 1_000_000)}
        with self._using(tx, f"taking the lease of subscription {name!r}") as t:
            cursor = t.writer().execute(
                "UPDATE subscriptions SET lease_owner = :owner, "
                f"lease_expires_at = {_NOW_US} + :lease WHERE name = :name AND ({condition})",
                params,
            )
        return cursor.rowcount == 1

    def get_events_for_subscription(
        self, tx: Transaction | None, subscription: Subscription, limit: int
    ) -> list[SerializedEvent]:
        """Up to ``limit`` matching events after the cursor, in id order. Filters run
        in SQLite; ids are gap-free, so nothing committed later can have a lower id."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        type_ids = subscription.event_type_ids or (
            () if subscription.event_type_id is None else (subscription.event_type_id,)
        )
        sql = _subscription_events_sql(
            subscription.aggregate_type_id is not None,
            subscription.aggregate_key is not None,
            len(type_ids),
        )
        params = [subscription.last_event_id]
        if subscription.aggregate_type_id is not None:
            params.append(subscription.aggregate_type_id)
        if subscription.aggregate_key is not None:
            params.append(subscription.aggregate_key)  # type: ignore[arg-type]
        params.extend(type_ids)
        params.append(limit)
        with self._using(tx, f"reading events for subscription {subscription.name!r}") as t:
            conn = t.reader()
            return self._events(t, conn, conn.execute(sql, params).fetchall())

    def advance_subscription_cursor(
        self,
        tx: Transaction | None,
        subscription_id: int,
        last_event_id: int,
        owner: str | None = None,
    ) -> None:
        """Move the cursor forward (never back). With ``owner``, only while that owner
        holds an unexpired lease, else ``SubscriptionLeaseLost``."""
        sql = "UPDATE subscriptions SET last_event_id = MAX(last_event_id, ?) WHERE id = ?"
        params: tuple[object, ...] = (last_event_id, subscription_id)
        if owner is not None:
            sql += f" AND lease_owner = ? AND lease_expires_at > {_NOW_US}"
            params += (owner,)
        with self._using(tx, f"advancing subscription {subscription_id}") as t:
            conn = t.writer()
            if conn.execute(sql, params).rowcount == 1:
                return
            holder = self._require_subscription(conn, subscription_id)
        raise SubscriptionLeaseLost(
            f"subscription {subscription_id}: {owner!r} does not hold an unexpired lease "
            f"(lease owner: {holder!r}); the cursor was not moved"
        )

    @staticmethod
    def _require_subscription(conn: sqlite3.Connection, subscription_id: int) -> str | None:
        """The lease owner of the subscription; ``NotFoundError`` when there is none."""
        row = conn.execute(
            "SELECT lease_owner FROM subscriptions WHERE id = ?", (subscription_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no subscription with id {subscription_id}")
        return row[0]  # type: ignore[no-any-return]

    def get_max_event_id(self, tx: Transaction | None) -> int:
        """The highest event id, 0 when there are no events."""
        with self._using(tx, "reading the highest event id") as t:
            return _max_event_id(t.reader())

    def get_first_event_id_from_timestamp(self, tx: Transaction | None, ts: datetime) -> int:
        """The first event id (over all events) with time >= ``ts``, 0 when none."""
        with self._using(tx, "looking up an event by time") as t:
            return _first_event_id_at(t.reader(), _to_us(ts))

    # -- optional capabilities ------------------------------------------------------
    def wait_for_events(self, after_event_id: int, timeout: float) -> None:
        """Return once an event with id > ``after_event_id`` exists, or after
        ``timeout`` seconds. Commits in this process wake waiters at once; other
        processes' commits are noticed by polling every 25 ms."""
        deadline = time.monotonic() + timeout
        while True:
            with self._events_cond:
                generation = self._events_generation
            if self.get_max_event_id(None) > after_event_id:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with self._events_cond:
                if self._events_generation == generation:
                    self._events_cond.wait(min(remaining, _WAIT_POLL))

    def get_counts(self, tx: Transaction | None) -> StoreCounts:
        """How many aggregates, events and snapshots are stored."""
        with self._using(tx, "counting rows") as t:
            row = (
                t.reader()
                .execute(
                    "SELECT (SELECT COUNT(*) FROM aggregates), (SELECT COUNT(*) FROM events), "
                    "(SELECT COUNT(*) FROM snapshots)"
                )
                .fetchone()
            )
        return StoreCounts(*row)

    def list_subscriptions(self, tx: Transaction | None) -> list[Subscription]:
        """Every durable subscription, by id."""
        with self._using(tx, "listing subscriptions") as t:
            rows = t.reader().execute(f"{_SELECT_SUBSCRIPTION} ORDER BY id").fetchall()
        return [_subscription_from_row(row) for row in rows]

    # -- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _using(self, tx: Transaction | None, doing: str) -> Iterator[SqliteTransaction]:
        """The caller's transaction, or one of our own committed on success; SQLite
        errors become ``StorageEngineError``\\ s that say what was being done."""
        try:
            if tx is None:
                own = self.get_transaction_info()
                try:
                    yield own
                except BaseException:
                    own.rollback()
                    raise
                own.commit()
            elif isinstance(tx, SqliteTransaction):
                yield tx
            else:
                raise TypeError(
                    f"tx must come from this engine's get_transaction_info(), got {tx!r}"
                )
        except sqlite3.Error as exc:
            raise translate(exc, self.config, doing) from exc

    def _prepare_file(self) -> None:
        """Switch the file to WAL and refuse a schema newer than this code."""
        conn = self._pool.acquire()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            _schema.check_not_newer(_schema.current_version(conn), self.config.label)
        except sqlite3.Error as exc:
            raise translate(exc, self.config, "opening the database") from exc
        finally:
            self._pool.release(conn)

    def _events(
        self, t: SqliteTransaction, conn: sqlite3.Connection, rows: list[Any]
    ) -> list[SerializedEvent]:
        """Rows to events, naming types from the cache; an unknown id (a type
        registered since, maybe by another process) reloads the names."""
        try:
            return _kernels.events_from_rows(rows, self._event_type_names)
        except KeyError:
            names = dict(conn.execute("SELECT id, name FROM event_types").fetchall())
            # Inside a write transaction the names may include uncommitted ones, whose
            # ids a rollback would hand out again: use them, but do not keep them.
            if not t.writing:
                self._event_type_names = names
            return _kernels.events_from_rows(rows, names)

    def _notify_events(self) -> None:
        with self._events_cond:
            self._events_generation += 1
            self._events_cond.notify_all()


def _temporary_database() -> str:
    """A new, empty file standing in for ``:memory:``.

    One in-memory SQLite database lives in one connection, which would serialise
    every transaction of every thread and let a transaction's uncommitted writes be
    seen by all; a private temporary file in WAL mode (with ``synchronous=OFF``)
    behaves exactly like a file database and is deleted on ``close()`` or at exit.
    """
    fd, path = tempfile.mkstemp(prefix="evercore-memory-", suffix=".db")
    os.close(fd)
    return path


def _remove_database_files(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def _last_id(cursor: sqlite3.Cursor) -> int:
    rowid = cursor.lastrowid
    assert rowid is not None
    return rowid


def _to_us(value: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    return (value - _EPOCH) // _MICROSECOND


def _event_rows(events: Sequence[StorageEngineEvent]) -> list[tuple[Any, ...]]:
    """The rows ``_INSERT_EVENT`` takes (the time as microseconds)."""
    try:
        return [
            (aggregate_id, sequence, type_id, state, (when - _EPOCH) // _MICROSECOND, reference)
            for aggregate_id, sequence, type_id, state, when, reference in events
        ]
    except TypeError:
        # Only a naive or non-datetime time gets here: take the careful path.
        return [(e[0], e[1], e[2], e[3], _to_us(e[4]), e[5]) for e in events]


def _from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + _TD(0, 0, us)


def _write_error(
    conn: sqlite3.Connection,
    exc: sqlite3.Error,
    events: Sequence[StorageEngineEvent],
    failed: int,
    config: SqliteConfig,
) -> StorageEngineError:
    """What a failed ``write_state`` raises, naming the event at index ``failed``."""
    if not isinstance(exc, sqlite3.IntegrityError) or failed >= len(events):
        return translate(exc, config, "writing events; the transaction was rolled back")
    event = events[failed]
    if "events.aggregate_id, events.sequence" in str(exc):
        return ConcurrencyError(event.aggregate_id, event.sequence)
    if "FOREIGN KEY" in str(exc):
        if _exists(conn, "aggregates", event.aggregate_id):
            return NotFoundError(
                f"cannot write event {event.sequence} of aggregate {event.aggregate_id}: "
                f"no event type with id {event.event_type_id}"
            )
        return NotFoundError(
            f"cannot write event {event.sequence}: no aggregate with id {event.aggregate_id}"
        )
    return StorageEngineError(
        f"cannot write event {event.sequence} of aggregate {event.aggregate_id} "
        f"to {config.label}: {exc}"
    )


def _exists(conn: sqlite3.Connection, table: str, row_id: int) -> bool:
    return conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is not None


def _max_event_id(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])


def _first_event_id_at(conn: sqlite3.Connection, us: int) -> int:
    # Times need not rise with ids, so this walks the log in id order and stops at
    # the first match: no index to maintain on the write path for a rare lookup.
    row = conn.execute(
        "SELECT id FROM events WHERE event_time >= ? ORDER BY id LIMIT 1", (us,)
    ).fetchone()
    return 0 if row is None else int(row[0])


def _initial_cursor(
    conn: sqlite3.Connection, start_from: str, start_event_id: int, start_us: int | None
) -> int:
    """Where a new subscription's cursor starts. Called under the write lock, so no
    event with a lower id than the current highest can still commit."""
    if start_from == START_BEGINNING:
        return 0
    if start_from == START_EVENT_ID:
        return start_event_id
    if start_from == START_TIMESTAMP and start_us is not None:
        first = _first_event_id_at(conn, start_us)
        if first:
            return first - 1
    return _max_event_id(conn)  # START_END, or no event at or after the timestamp


@lru_cache(maxsize=64)
def _subscription_events_sql(by_aggregate_type: bool, by_key: bool, type_count: int) -> str:
    joins = ""
    where = ["e.id > ?"]
    if by_aggregate_type or by_key:
        joins = "JOIN aggregates AS a ON a.id = e.aggregate_id "
    if by_aggregate_type:
        where.append("a.aggregate_type_id = ?")
    if by_key:
        where.append("a.natural_key = ?")
    if type_count:
        where.append(f"e.event_type_id IN ({', '.join('?' * type_count)})")
    return (
        f"SELECT {_EVENT_COLUMNS} FROM events AS e {joins}"
        f"WHERE {' AND '.join(where)} ORDER BY e.id LIMIT ?"
    )


def _subscription_from_row(row: Any) -> Subscription:
    type_ids = row[12]
    return Subscription(
        id=row[0],
        name=row[1],
        aggregate_type_id=row[2],
        event_type_id=row[3],
        event_type_ids=tuple(int(i) for i in type_ids.split(",")) if type_ids else (),
        aggregate_key=row[4],
        start_from=row[5],
        start_event_id=row[6],
        start_timestamp=_from_us(row[7]),
        last_event_id=row[8],
        active=bool(row[9]),
        lease_owner=row[10],
        lease_expires_at=_from_us(row[11]),
    )
