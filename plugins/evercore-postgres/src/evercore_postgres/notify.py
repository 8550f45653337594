"""Wake subscription readers with LISTEN/NOTIFY, off the writers' commit path.

A ``NOTIFY`` inside a writing transaction makes every committing writer queue on
one cluster-wide lock (PostgreSQL serialises notifying commits, WAL flush
included). Writers here only set a flag; a :class:`Notifier` thread sends one
``NOTIFY`` per burst of commits from its own connection, in a transaction that
holds no transaction id and so commits without a WAL flush, and at most one per
``MIN_GAP`` seconds while commits keep coming. A :class:`Listener`
thread holds a ``LISTEN`` connection and counts what arrives; readers wait on
that count.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from evercore_postgres.errors import driver_message

log = logging.getLogger("evercore_postgres")

Connect = Callable[[], "psycopg.Connection[tuple[object, ...]]"]

_RETRY_DELAY = 0.5
"""Seconds between reconnection attempts of the notifier and listener threads."""

MIN_GAP = 0.005
"""Seconds the notifier waits after a ``NOTIFY`` before it sends the next one. A
writer of one-event contexts commits every few hundred microseconds; a ``NOTIFY``
for each (a thread switch and a round trip of its own) slowed it down by about a
fifth. Readers learn of a commit at most this much later (the first one after a
quiet spell goes out at once), far below any poll interval."""

_LISTEN_TICK = 0.2
"""How often (seconds) the listener looks at its stop flag while no notification comes."""


class Notifier:
    """Sends ``NOTIFY channel`` soon after :meth:`poke`, coalescing bursts."""

    def __init__(self, connect: Connect, channel: str, password: str | None) -> None:
        self._connect = connect
        self._statement = sql.SQL("NOTIFY {}").format(sql.Identifier(channel))
        self._password = password
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.min_gap = MIN_GAP

    def poke(self) -> None:
        """Ask for a notification (cheap: called on every commit that wrote events)."""
        if self._thread is None:
            self._start()
        self._wanted.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stopping:
                thread = threading.Thread(
                    target=self._run, name="evercore-postgres-notifier", daemon=True
                )
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        while True:
            self._wanted.wait()
            if self._stopping:
                break
            self._wanted.clear()
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                conn.execute(self._statement)
            except psycopg.Error as error:
                log.warning("evercore-postgres notifier: %s", driver_message(error, self._password))
                conn = None
                time.sleep(_RETRY_DELAY)
                continue
            if self.min_gap > 0:
                time.sleep(self.min_gap)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Stop the thread (idempotent)."""
        with self._start_lock:
            self._stopping = True
            thread = self._thread
        self._wanted.set()
        if thread is not None:
            thread.join()


class Listener:
    """Counts notifications on ``channel``; readers block in :meth:`wait` until it moves.

    The count also moves each time the ``LISTEN`` connection is (re)established,
    since notifications sent while it was down are lost.
    """

    def __init__(self, connect: Connect, channel: str, password: str | None) -> None:
        self._connect = connect
        self._statement = sql.SQL("LISTEN {}").format(sql.Identifier(channel))
        self._password = password
        self._changed = threading.Condition()
        self._count = 0
        self._seen = threading.local()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def wait(self, timeout: float) -> bool:
        """Block until a notification arrives that this thread has not yet waited
        past, or ``timeout`` seconds; True when one arrived."""
        with self._changed:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(
                    target=self._run, name="evercore-postgres-listener", daemon=True
                )
                self._thread.start()
            seen = getattr(self._seen, "count", None)
            if seen is None:
                seen = self._count
            arrived = self._changed.wait_for(lambda: self._count != seen, timeout)
            self._seen.count = self._count
            return arrived

    def _run(self) -> None:
        while not self._stopping:
            try:
                with self._connect() as conn:
                    conn.execute(self._statement)
                    # Whatever was sent before LISTEN took effect is lost: wake every
                    # waiter so that it reads once more (a spurious wake-up is allowed).
                    self._bump()
                    while not self._stopping:
                        # A notification that arrives while reconnecting is lost; the
                        # reader's poll interval covers that.
                        for _ in conn.notifies(timeout=_LISTEN_TICK, stop_after=1):
                            self._bump()
            except psycopg.Error as error:
                if self._stopping:
                    break
                log.warning("evercore-postgres listener: %s", driver_message(error, self._password))
                time.sleep(_RETRY_DELAY)

    def _bump(self) -> None:
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    def close(self) -> None:
        """Stop the thread (idempotent); it notices within a fraction of a second."""
        with self._changed:
            self._stopping = True
            thread = self._thread
            self._changed.notify_all()
        if thread is not None:
            thread.join()
