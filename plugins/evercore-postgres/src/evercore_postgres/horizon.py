"""The settled horizon: the highest event id below which no event can still appear.

Event ids come from a sequence, so a writer that draws id 7 may commit after a
writer that drew id 8. A reader that moved its cursor past 8 as soon as it saw it
would skip 7 forever. Readers therefore only deliver ids up to the *settled
horizon* ``W``: every id <= ``W`` is either visible or will never exist (its
writer rolled back or failed).

How ``W`` advances, without any global write lock:

* Every writer holds its transaction id before it draws an event id (the ``CASE``
  in the ``events.id`` default).
* The horizon query lists the visible ids above ``W`` (a window of them). A
  contiguous run ``W+1 .. P`` is settled at once: ``W = P``.
* A hole below a visible id ``L`` (the largest visible id) means a writer drew the
  missing id before ``L`` was drawn, so before the query's snapshot, so it held its
  transaction id before the reader asks for a fresh transaction id ``B``
  (``pg_current_xact_id()``, once per hole). Once a later snapshot's ``xmin`` is
  >= ``B`` every transaction older than ``B`` has ended, so every id <= ``L`` is
  settled: ``W = L``.

``B`` is needed because a snapshot's ``xmax`` is only "latest completed xid + 1":
a running writer whose xid is above it is absent from the snapshot's in-progress
list, so "``xmin`` passed the ``xmax`` of the snapshot that saw the hole" alone
would be unsound.

A long-open transaction only delays delivery; a rolled-back one settles as soon
as it ends. The state is per process and only ever moves forward.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

WINDOW = 10_000
"""How many visible ids above ``W`` one horizon query lists."""


@dataclass(frozen=True, slots=True)
class Observation:
    """What one horizon query saw, all from one snapshot.

    ``ids`` are the visible ids above the ``after`` the query was given, ascending,
    at most :data:`WINDOW` of them; ``max_id`` is the largest visible id (None when
    the log is empty); ``xmin`` the snapshot's oldest running transaction id.
    """

    after: int | None
    ids: tuple[int, ...]
    max_id: int | None
    xmin: int


@dataclass(frozen=True, slots=True)
class PendingHole:
    """Every id <= ``upto`` is settled once a snapshot's xmin reaches ``bound``."""

    upto: int
    bound: int


class Horizon:
    """The process-wide settled horizon of one store; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settled: int | None = None
        self._pending: PendingHole | None = None

    @property
    def settled(self) -> int | None:
        """The settled horizon, None until the first observation settles."""
        return self._settled

    @property
    def waiting(self) -> bool:
        """True while a hole waits for older transactions to end."""
        return self._pending is not None

    def query_after(self) -> int | None:
        """The ``after`` to give the next horizon query (None: only ask for the maximum)."""
        return self._settled

    def observe(self, seen: Observation) -> int | None:
        """Fold in an observation; return the upper id of a new hole that needs a
        transaction-id bound (then call :meth:`add_hole`), else None."""
        with self._lock:
            pending = self._pending
            if pending is not None and seen.xmin >= pending.bound:
                self._advance(pending.upto)
                self._pending = None
            if seen.after is not None and seen.after <= (self._settled or 0):
                self._advance(self._contiguous_end(seen))
            if seen.max_id is None:
                # Empty log: nothing visible can be skipped; ids start above 0.
                self._advance(0)
                return None
            settled = self._settled
            if settled is not None and settled >= seen.max_id:
                return None
            if self._pending is not None:
                return None
            window_full = seen.after is not None and len(seen.ids) >= WINDOW
            if window_full and settled is not None and settled >= seen.ids[-1]:
                return None  # contiguous so far: keep walking before declaring a hole
            return seen.max_id

    def add_hole(self, upto: int, bound: int) -> None:
        """Record that ids <= ``upto`` settle once a snapshot's xmin reaches ``bound``."""
        with self._lock:
            if self._pending is None and (self._settled is None or upto > self._settled):
                self._pending = PendingHole(upto, bound)

    def _contiguous_end(self, seen: Observation) -> int:
        """The end of the run of consecutive ids right after the settled horizon."""
        end = self._settled or 0
        for event_id in seen.ids:
            if event_id <= end:
                continue
            if event_id != end + 1:
                break
            end = event_id
        return end

    def _advance(self, upto: int) -> None:
        if self._settled is None or upto > self._settled:
            self._settled = upto
        if self._pending is not None and self._pending.upto <= (self._settled or 0):
            self._pending = None
