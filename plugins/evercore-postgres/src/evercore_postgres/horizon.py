"""The settled horizon: the highest event id below which no event can still appear.

Event ids come from a sequence, so a writer that draws id 7 may commit after a
writer that drew id 8. A reader that moved its cursor past 8 as soon as it saw it
would skip 7 forever. Readers therefore only deliver ids up to the *settled
horizon* ``W``: every id <= ``W`` is either visible or will never exist (its
writer rolled back or failed).

How ``W`` advances, without any global write lock and without waiting for
transactions that cannot write to this store:

* Every writer holds the store's shared *writer lock* (a transaction-scoped
  advisory lock keyed by the store) before it draws an event id (the ``CASE`` in
  the ``events.id`` default). Shared locks do not contend with each other.
* The horizon query lists the visible ids above ``W`` (a window of them). A
  contiguous run ``W+1 .. P`` is settled at once: ``W = P``.
* A hole below a visible id ``L`` (the largest visible id) means a writer drew the
  missing id before ``L`` was drawn, so before the query's snapshot, so it took
  the writer lock before that. The reader then lists the transactions holding the
  lock (once per hole, after that snapshot): the hole's writer is among them or
  has already ended. A writer that takes the lock later draws ids above ``L``
  (the sequence is monotonic, ``CACHE 1``) and cannot fill the hole. Once none of
  the listed transactions holds the lock any more, every id <= ``L`` is settled:
  ``W = L``. PostgreSQL makes a commit visible before it releases the
  transaction's locks, so every later snapshot sees what they committed.

Only this store's writers (same database and schema) delay delivery: a rolled-back
one settles as soon as it ends, a long-open one only delays. An idle transaction
elsewhere on the server does not. The state is per process and only ever moves
forward.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

WINDOW = 10_000
"""How many visible ids above ``W`` one horizon query lists."""


@dataclass(frozen=True, slots=True, eq=False)
class PendingHole:
    """Every id <= ``upto`` is settled once none of ``writers`` (virtual transaction
    ids) holds the writer lock. Compared by identity: each hole is its own wait."""

    upto: int
    writers: tuple[str, ...]
    since: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True)
class Observation:
    """What one horizon query saw.

    ``ids`` are the visible ids above ``after`` (the horizon the query was given),
    ascending, at most :data:`WINDOW` of them; ``max_id`` is the largest visible id
    (None when the log is empty), both from one snapshot. ``checked`` is the pending
    hole whose writers the query looked for (None if none was pending), and
    ``released`` is True when none of them still held the writer lock.
    """

    after: int
    ids: tuple[int, ...]
    max_id: int | None
    checked: PendingHole | None = None
    released: bool = False


class Horizon:
    """The process-wide settled horizon of one store; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled = 0
        self._pending: PendingHole | None = None

    @property
    def settled(self) -> int:
        """The settled horizon (0 until something settles)."""
        return self._settled

    @property
    def waiting(self) -> bool:
        """True while a hole waits for this store's writers to end."""
        return self._pending is not None

    @property
    def pending(self) -> PendingHole | None:
        """The hole waiting for its writers, if any."""
        return self._pending

    def recheck_after(self, timeout: float) -> float:
        """How long a reader may wait before looking at a pending hole again: 10 ms
        at first, a tenth of the hole's age later (a long-open transaction is not
        polled a hundred times a second), never more than ``timeout``."""
        pending = self._pending
        if pending is None:
            return timeout
        return min(timeout, max(0.01, (time.monotonic() - pending.since) / 10))

    def observe(self, seen: Observation) -> int | None:
        """Fold in an observation. When ids up to the largest visible one are not all
        settled and nothing is pending, return that id: the caller then lists the
        writer lock's holders and calls :meth:`add_hole`. Else return None.

        Also taken when the window was full without a hole, so that a process
        starting on a long log jumps to its end instead of walking all of it.
        """
        with self._lock:
            pending = self._pending
            if pending is not None and seen.checked is pending and seen.released:
                self._advance(pending.upto)
            if seen.after <= self._settled:
                self._advance(self._contiguous_end(seen))
            if seen.max_id is None or self._settled >= seen.max_id or self._pending is not None:
                return None
            return seen.max_id

    def add_hole(self, upto: int, writers: tuple[str, ...]) -> None:
        """Record that ids <= ``upto`` settle once none of ``writers`` (listed after
        the snapshot that saw the hole) holds the writer lock; at once if none does."""
        with self._lock:
            if not writers:
                self._advance(upto)
            elif self._pending is None and upto > self._settled:
                self._pending = PendingHole(upto, writers)

    def _contiguous_end(self, seen: Observation) -> int:
        """The end of the run of consecutive ids right after the settled horizon."""
        end = self._settled
        for event_id in seen.ids:
            if event_id <= end:
                continue
            if event_id != end + 1:
                break
            end = event_id
        return end

    def _advance(self, upto: int) -> None:
        self._settled = max(self._settled, upto)
        if self._pending is not None and self._pending.upto <= self._settled:
            self._pending = None
