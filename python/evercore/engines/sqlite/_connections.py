"""Connections, transactions and error translation for the SQLite engine.

A transaction owns one connection from a small pool for its whole life, so it may
move between threads (the facade's contexts and subscription runners do) without
relying on thread-local state. Connections run in autocommit mode
(``isolation_level=None``); the engine issues ``BEGIN IMMEDIATE`` itself, lazily, at
the transaction's first write:

* reads before the first write run as single statements and take no lock, so
  read-only contexts never block writers or each other (WAL);
* a transaction that writes takes the write lock up front instead of upgrading a
  read lock, the upgrade being what deadlocks (``SQLITE_BUSY`` with no retry) when
  two deferred transactions both try it;
* a stale read is still caught: writing an event whose (aggregate, sequence)
  exists fails the UNIQUE rule and becomes ``ConcurrencyError``.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable

from evercore.engines.sqlite._config import SqliteConfig
from evercore.errors import StorageEngineError

_FIRST_PAUSE = 0.0001
_LONGEST_PAUSE = 0.002


def is_busy(exc: sqlite3.Error) -> bool:
    """True for SQLITE_BUSY / SQLITE_LOCKED: another connection holds a lock."""
    text = str(exc)
    return (
        "database is locked" in text
        or "database table is locked" in text
        or ("busy" in text.lower() and isinstance(exc, sqlite3.OperationalError))
    )


def translate(exc: sqlite3.Error, config: SqliteConfig, doing: str) -> StorageEngineError:
    """A ``StorageEngineError`` that says what failed, on which database, and why."""
    label = config.label
    text = str(exc)
    if is_busy(exc):
        message = (
            f"SQLite database {label} is locked: another connection held the write lock "
            f"for longer than the busy timeout ({config.busy_timeout:g} s) while {doing}"
        )
    elif "file is not a database" in text:
        message = f"{label} is not a SQLite database (while {doing})"
    elif "readonly database" in text:
        message = f"SQLite database {label} is read-only: cannot write while {doing}"
    elif "no such table" in text:
        message = (
            f"SQLite database {label} has no evercore schema ({text}) while {doing}: "
            "run engine.migrate() or `evercore migrate URI` first (evercore.connect does)"
        )
    elif "unable to open database file" in text:
        message = f"cannot open SQLite database {label} while {doing}: {text}"
    else:
        message = f"SQLite error on {label} while {doing}: {text}"
    return StorageEngineError(message)


def check_path(path: str) -> None:
    """Refuse, with a message naming it, a path SQLite could not use as a database."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise StorageEngineError(
            f"cannot open SQLite database {path}: directory {folder} does not exist"
        )
    if os.path.isdir(path):
        raise StorageEngineError(f"cannot open SQLite database {path}: it is a directory")
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        raise StorageEngineError(
            f"cannot open SQLite database {path}: the file is read-only (or unreadable) for "
            "this user; evercore needs read and write access (WAL mode writes even to read)"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StorageEngineError(
            f"cannot open SQLite database {path}: directory {folder} is not writable "
            "(SQLite creates its -wal and -shm files there)"
        )


def begin_immediate(conn: sqlite3.Connection, config: SqliteConfig) -> None:
    """Take the write lock, waiting up to the busy timeout, then raise clearly.

    SQLite's own busy handler sleeps 1, 2, 5, ... up to 100 ms between attempts, so
    a process that commits and begins again at once keeps the lock while the
    others sleep: writers starve, and under steady load fail after the timeout.
    Here SQLite does not wait (``busy_timeout`` 0 for this statement) and retries
    come every 0.1-2 ms with jitter, so waiting writers get their turn.
    """
    deadline = time.monotonic() + config.busy_timeout
    pause = _FIRST_PAUSE
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise translate(exc, config, "beginning a write transaction") from exc
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, _LONGEST_PAUSE)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {round(config.busy_timeout * 1000)}")


class ConnectionPool:
    """Idle connections to the database file at ``file_path``, kept for reuse.

    Any number may be open at once; at most ``config.pool_size`` idle ones are kept.
    Until :meth:`allow_create`, a missing file is an error rather than created.
    """

    def __init__(self, config: SqliteConfig, file_path: str, create: bool) -> None:
        self._config = config
        self._file_path = file_path
        self._create = create
        self._idle: list[sqlite3.Connection] = []
        # Reentrant: the garbage collector may finalise an abandoned transaction
        # (which releases its connection) while this thread holds the lock.
        self._lock = threading.RLock()
        self._closed = False

    def acquire(self) -> sqlite3.Connection:
        """A connection for the caller's exclusive use until :meth:`release`."""
        with self._lock:
            if self._closed:
                raise StorageEngineError(f"the SQLite engine for {self._config.label} is closed")
            if self._idle:
                return self._idle.pop()
        return self._connect()

    @property
    def creates(self) -> bool:
        """True when a connection may create the database file."""
        return self._create

    def allow_create(self) -> None:
        """Let the next connection create the database file if it does not exist."""
        self._create = True

    def release(self, conn: sqlite3.Connection) -> None:
        """Give a connection back (it must not be inside a transaction)."""
        with self._lock:
            if not self._closed and len(self._idle) < self._config.pool_size:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection; connections in use close when released."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        config = self._config
        if not self._create and not os.path.exists(self._file_path):
            raise StorageEngineError(
                f"SQLite database {config.label} does not exist (opening a store does not "
                "create it; migrating it does, and evercore.connect migrates)"
            )
        try:
            conn = sqlite3.connect(
                self._file_path,
                timeout=config.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
        except sqlite3.Error as exc:
            raise translate(exc, config, "connecting") from exc
        try:
            conn.execute(f"PRAGMA synchronous = {config.synchronous}")
            conn.execute(f"PRAGMA cache_size = -{config.cache_size}")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            conn.close()
            raise translate(exc, config, "setting up a connection") from exc
        return conn


class SqliteTransaction:
    """A transaction of :class:`~evercore.engines.sqlite.engine.SqliteStorageEngine`
    (from ``get_transaction_info()``).

    It holds one pooled connection until ``commit()`` or ``rollback()``. A failed
    ``write_state`` rolls the whole transaction back at once (nothing of it is
    kept); ``commit()`` then raises and ``rollback()`` does nothing. Do not use one
    transaction from two threads at the same time.
    """

    __slots__ = ("_aborted", "_config", "_conn", "_on_events", "_pool", "_writing", "wrote_events")

    def __init__(
        self, pool: ConnectionPool, config: SqliteConfig, on_events: Callable[[], None]
    ) -> None:
        self._pool = pool
        self._config = config
        self._on_events = on_events
        self._conn: sqlite3.Connection | None = pool.acquire()
        self._writing = False
        self._aborted: str | None = None
        self.wrote_events = False
        """Set by the engine when events were inserted, to wake waiters on commit."""

    @property
    def writing(self) -> bool:
        """True while the transaction holds the write lock (it has written)."""
        return self._writing

    def reader(self) -> sqlite3.Connection:
        """The connection, for reads (inside the write transaction once one began)."""
        conn = self._conn
        if conn is None:
            raise self._finished_error()
        return conn

    def writer(self) -> sqlite3.Connection:
        """The connection with the write lock held (taken on the first call)."""
        conn = self.reader()
        if not self._writing:
            begin_immediate(conn, self._config)
            self._writing = True
        return conn

    def commit(self) -> None:
        """Make the transaction's writes durable and visible, and release it."""
        conn = self.reader()
        try:
            if self._writing:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self.abort(f"COMMIT failed: {exc}")
            raise translate(exc, self._config, "committing") from exc
        self._writing = False
        self._release()
        if self.wrote_events:
            self._on_events()

    def rollback(self) -> None:
        """Discard the transaction's writes and release it; a no-op once finished."""
        if self._conn is not None:
            self.abort("rolled back")

    def abort(self, reason: str) -> None:
        """Roll back now; later use of this transaction raises, naming ``reason``."""
        conn = self._conn
        if conn is None:
            return
        self._aborted = reason
        try:
            if self._writing:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            # Some failures (I/O, full disk) already rolled the transaction back.
            pass
        self._writing = False
        self._release()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)

    def _finished_error(self) -> StorageEngineError:
        why = self._aborted or "committed"
        return StorageEngineError(
            f"this SQLite transaction on {self._config.label} is finished ({why}); "
            "start a new one with get_transaction_info()"
        )

    def __del__(self) -> None:
        # An abandoned transaction must not keep its connection or the write lock.
        # (At interpreter exit the pool may be half torn down: nothing to report then.)
        if getattr(self, "_conn", None) is not None:
            with contextlib.suppress(Exception):
                self.abort("abandoned")
