"""The in-memory storage engine (``memory://``): thread-safe, transactional, indexed.

Committed data lives behind one lock. A :class:`MemoryTransaction` buffers every
write (types, aggregates, key changes, events, snapshots, subscription changes)
and applies all of it atomically on ``commit()``; ``rollback()`` drops the buffer.
Reads inside a transaction see the committed data overlaid with its own writes.

Storage: the global log is a set of parallel column lists (an event's id is its
position + 1), extended by whole transactions; ``SerializedEvent`` values are
built when read. Indexes: each aggregate's log positions in sequence order (loads
bisect to the snapshot), its highest sequence, natural keys in a dict, and the
latest snapshot per aggregate. Ids are assigned at commit under the lock, so the
log never has gaps and subscription reads jump straight to the cursor.

Write path: ``write_state`` transposes a batch into columns once and checks it
per aggregate with the sequence kernel (a batch that runs on from the stored
sequences cannot hold a duplicate); only other batches take the exact per-event
check. The commit appends with C-level iterators, never a Python loop per event
unless the batch was out of order.
"""

from __future__ import annotations

import itertools
import threading
import time
from bisect import bisect_left, bisect_right, insort
from collections import ChainMap, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from operator import attrgetter, itemgetter
from typing import Any, NamedTuple

from evercore import _kernels
from evercore._kernels import filter_events
from evercore.errors import (
    ConcurrencyError,
    ConfigurationError,
    ConstraintViolationError,
    NotFoundError,
    SequenceError,
    StorageEngineError,
    SubscriptionLeaseLost,
)
from evercore.registry import redact_uri
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

_START_KINDS = (START_BEGINNING, START_END, START_EVENT_ID, START_TIMESTAMP)


def open_memory_engine(uri: str, **options: Any) -> MemoryStorageEngine:
    """Open a fresh, empty engine for ``memory://`` (which takes no options)."""
    if options:
        raise ConfigurationError(f"memory:// takes no options; got {', '.join(sorted(options))}")
    if uri.rstrip("/") not in ("memory:", "memory:/"):
        raise ConfigurationError(f"the memory engine's URI is 'memory://', got {redact_uri(uri)!r}")
    return MemoryStorageEngine()


def _utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    if moment.tzinfo is timezone.utc:
        return moment
    return moment.astimezone(timezone.utc)


def _keep_latest(snapshots: dict[int, Snapshot], snapshot: Snapshot) -> None:
    """Store ``snapshot`` unless one with a higher sequence is kept for its aggregate."""
    kept = snapshots.get(snapshot.aggregate_id)
    if kept is None or snapshot.sequence >= kept.sequence:
        snapshots[snapshot.aggregate_id] = snapshot


def _now() -> datetime:
    """The one clock leases are judged by."""
    return datetime.fromtimestamp(time.time(), timezone.utc)


class _Aggregate(NamedTuple):
    type_id: int
    key: str | None


class _TypeTable:
    """Registered names of one kind (aggregate or event types).

    An id is reserved for a name the first time any transaction asks for it and is
    kept even if that transaction rolls back, so concurrent transactions that
    register the same name agree on its id and never conflict at commit.
    """

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self._reserved: dict[str, int] = {}
        self._reserved_names: dict[int, str] = {}
        self._counter = itertools.count(1)

    def reserve(self, name: str) -> int:
        """The id ``name`` gets (caller holds the engine lock)."""
        type_id = self._reserved.get(name)
        if type_id is None:
            type_id = self._reserved[name] = next(self._counter)
            self._reserved_names[type_id] = name
        return type_id

    def name_of(self, type_id: int, pending: dict[str, int]) -> str | None:
        """The name of a registered id, or of one registered by a transaction's ``pending``."""
        name = self.names.get(type_id)
        if name is None:
            name = self._reserved_names.get(type_id)
            if name is None or pending.get(name) != type_id:
                return None
        return name

    def add(self, name: str, type_id: int) -> None:
        """Make a reserved name registered."""
        self.ids[name] = type_id
        self.names[type_id] = name


_SEQUENCE = attrgetter("sequence")
_TZINFO = attrgetter("tzinfo")
_TYPE_ID = attrgetter("type_id")
_PLUS_ONE: Callable[[int], int] = (1).__add__
"""Position -> event id."""

# Builds a SerializedEvent from a row without calling its Python-level __new__ (a
# NamedTuple is a tuple), which is most of the cost of making one.
_new_event: Callable[[type[SerializedEvent], Iterable[object]], SerializedEvent] = tuple.__new__


def _follows(
    aggregate_ids: Sequence[int], sequences: Sequence[int], last: Mapping[int, int]
) -> bool:
    """True when each aggregate's sequences in the batch run on without a gap from
    ``last[aggregate]`` (from anywhere >= 1 for an aggregate missing in ``last``).

    Such a batch holds no duplicate, so the exact per-event check can be skipped; the
    sequence kernel decides it in one pass, and every batch the facade writes passes.
    """
    try:
        # Looked up when called, as the facade does, so that a benchmark can swap in
        # the twin without re-importing the engine.
        _kernels.validate_sequences(aggregate_ids, sequences, last)
    except SequenceError:
        return False
    return True


def _gather(column: list[Any], positions: Sequence[int]) -> Sequence[Any]:
    """The items of ``column`` at ``positions`` (a C-level gather for a list of them)."""
    if isinstance(positions, range) and positions.step == 1:
        return column[positions.start : positions.stop]
    if len(positions) == 1:
        return (column[positions[0]],)
    return itemgetter(*positions)(column) if positions else ()


class _Batch(NamedTuple):
    """The events of one ``write_state`` call, transposed into columns."""

    aggregate_ids: tuple[int, ...]
    sequences: tuple[int, ...]
    event_type_ids: tuple[int, ...]
    states: tuple[str, ...]
    times: tuple[datetime, ...]
    references: tuple[str, ...]

    @classmethod
    def of(cls, events: Sequence[StorageEngineEvent]) -> _Batch:
        """Transpose ``events`` (at C speed) with every time made aware UTC."""
        batch = cls(*zip(*events, strict=True))
        if set(map(_TZINFO, batch.times)) != {timezone.utc}:
            batch = batch._replace(times=tuple(map(_utc, batch.times)))
        return batch


class _Columns:
    """Events as parallel lists in ``StorageEngineEvent`` field order, filled by whole
    batches. Atoms in lists rather than an object per event: cheaper to fill, and
    nothing per event for the garbage collector to walk (NamedTuples stay tracked)."""

    __slots__ = ("aggregate_ids", "event_type_ids", "references", "sequences", "states", "times")

    def __init__(self) -> None:
        self.aggregate_ids: list[int] = []
        self.sequences: list[int] = []
        self.event_type_ids: list[int] = []
        self.states: list[str] = []
        self.times: list[datetime] = []
        self.references: list[str] = []

    def __len__(self) -> int:
        return len(self.aggregate_ids)

    def extend(self, events: _Batch | _Columns) -> None:
        self.aggregate_ids.extend(events.aggregate_ids)
        self.sequences.extend(events.sequences)
        self.event_type_ids.extend(events.event_type_ids)
        self.states.extend(events.states)
        self.times.extend(events.times)
        self.references.extend(events.references)

    def read(
        self,
        positions: Sequence[int],
        event_ids: Iterable[int],
        event_type: Callable[[int], str],
    ) -> list[SerializedEvent]:
        """The events at ``positions`` as ``SerializedEvent``\\ s, built at C speed."""
        rows = zip(
            event_ids,
            _gather(self.aggregate_ids, positions),
            map(event_type, _gather(self.event_type_ids, positions)),
            _gather(self.states, positions),
            _gather(self.sequences, positions),
            _gather(self.references, positions),
            _gather(self.times, positions),
            strict=False,  # event_ids may be endless (repeat(0))
        )
        return list(map(_new_event, itertools.repeat(SerializedEvent), rows))


class _Log:
    """The global log in columns (position = event id - 1): the events themselves and
    the columns the filter kernel reads."""

    def __init__(self) -> None:
        self.columns = _Columns()
        self.aggregate_type_ids: list[int] = []
        # Events already built by a read (None until then): a commit builds none, and
        # an event read again (a reloaded aggregate, another subscriber) is not rebuilt.
        self.built: list[SerializedEvent | None] = []
        # Per commit: where its events end, and the running maximum of event_time
        # through it. That maximum never decreases, so bisecting it finds the commit
        # holding the first event at or after a time even though event times are not
        # ordered; per commit rather than per event keeps commits cheap.
        self.commit_ends: list[int] = []
        self.max_times: list[datetime] = []

    def extend(self, columns: _Columns, aggregate_type_ids: Iterable[int]) -> None:
        self.columns.extend(columns)
        self.aggregate_type_ids.extend(aggregate_type_ids)
        self.built.extend(itertools.repeat(None, len(columns)))
        latest = max(columns.times)
        self.max_times.append(max(latest, self.max_times[-1]) if self.max_times else latest)
        self.commit_ends.append(self.max_id)

    @property
    def max_id(self) -> int:
        return len(self.columns)

    def read(
        self, positions: Sequence[int], event_types: Mapping[int, str]
    ) -> list[SerializedEvent]:
        """The committed events at ``positions`` (caller holds the engine lock)."""
        built = _gather(self.built, positions)
        if all(built):  # every one built before (an event is a non-empty tuple)
            return list(built)
        events = self.columns.read(positions, map(_PLUS_ONE, positions), event_types.__getitem__)
        if isinstance(positions, range):
            self.built[positions.start : positions.stop] = events
        else:
            for position, event in zip(positions, events, strict=True):
                self.built[position] = event
        return events

    def first_id_at(self, moment: datetime) -> int:
        """The id of the first event with time >= ``moment``, 0 when none."""
        commit = bisect_left(self.max_times, moment)
        if commit == len(self.max_times):
            return 0
        # Every event of the earlier commits is before ``moment``; this one holds one
        # at or after it.
        times = self.columns.times
        start = self.commit_ends[commit - 1] if commit else 0
        return next(p for p in range(start, self.commit_ends[commit]) if times[p] >= moment) + 1


@dataclass
class _SubscriptionRecord:
    """A stored subscription; mutated only under the engine lock."""

    id: int
    name: str
    aggregate_type_id: int | None
    event_type_id: int | None
    aggregate_key: str | None
    start_from: str
    start_event_id: int
    start_timestamp: datetime | None
    last_event_id: int
    active: bool = True
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    event_type_ids: set[int] = field(default_factory=set)

    def held_by(self, owner: str, now: datetime) -> bool:
        """True while ``owner`` holds an unexpired lease."""
        return (
            self.lease_owner == owner
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )

    def lease_free(self, now: datetime) -> bool:
        return self.lease_expires_at is None or self.lease_expires_at <= now

    def value(self) -> Subscription:
        return Subscription(
            id=self.id,
            name=self.name,
            aggregate_type_id=self.aggregate_type_id,
            event_type_id=self.event_type_id,
            event_type_ids=tuple(sorted(self.event_type_ids)),
            aggregate_key=self.aggregate_key,
            start_from=self.start_from,
            start_event_id=self.start_event_id,
            start_timestamp=self.start_timestamp,
            last_event_id=self.last_event_id,
            active=self.active,
            lease_owner=self.lease_owner,
            lease_expires_at=self.lease_expires_at,
        )


class _Subscriptions:
    """The subscription table (copied whole by a transaction that changes it: it is small)."""

    def __init__(self) -> None:
        self.by_name: dict[str, _SubscriptionRecord] = {}
        self.by_id: dict[int, _SubscriptionRecord] = {}

    def add(self, record: _SubscriptionRecord) -> None:
        self.by_name[record.name] = record
        self.by_id[record.id] = record

    def get_by_id(self, subscription_id: int) -> _SubscriptionRecord:
        record = self.by_id.get(subscription_id)
        if record is None:
            raise NotFoundError(f"subscription id {subscription_id} not found")
        return record

    def copy(self) -> _Subscriptions:
        clone = _Subscriptions()
        for record in self.by_id.values():
            clone.add(replace(record, event_type_ids=set(record.event_type_ids)))
        return clone


_SubscriptionOp = Callable[[_Subscriptions], object]
"""A subscription change, run under the lock; a transaction replays it at commit."""


class MemoryTransaction:
    """A transaction of :class:`MemoryStorageEngine`: a private buffer of writes.

    Use it from one thread at a time. ``commit()`` applies everything atomically or
    raises and applies nothing; ``rollback()`` (idempotent, also after ``commit()``)
    discards the buffer. Once finished it cannot be used again.
    """

    def __init__(self, engine: MemoryStorageEngine) -> None:
        self.engine = engine
        self.finished = False
        self.failure: Exception | None = None
        self.pending_types: dict[_TypeTable, dict[str, int]] = {}
        self.aggregates: dict[int, _Aggregate] = {}
        self.keys: dict[str, int | None] = {}  # None: the key was given up
        self.columns = _Columns()
        # The highest sequence per aggregate this transaction has seen stored or wrote.
        self.last_sequences: dict[int, int] = {}
        # True while every batch ran on from the stored sequences (see ``_follows``).
        self.in_order = True
        # The log's length when the first event was checked: if it is unchanged at
        # commit, nothing was committed meanwhile and the check still holds.
        self.checked_at: int | None = None
        self.snapshots: list[Snapshot] = []
        # Buffer positions per aggregate, built only when a read in the transaction
        # needs them (the facade never reads its own buffered events).
        self._positions: dict[int, list[int]] = {}
        self._indexed = 0
        self.subscriptions: _Subscriptions | None = None
        self.subscription_ops: list[tuple[_SubscriptionOp, object]] = []

    def pending(self, table: _TypeTable) -> dict[str, int]:
        """The names this transaction registered in ``table``."""
        return self.pending_types.setdefault(table, {})

    def positions_of(self, aggregate_id: int) -> list[int]:
        """Where ``aggregate_id``'s buffered events are in ``columns``, in write order."""
        aggregate_ids = self.columns.aggregate_ids
        for position in range(self._indexed, len(aggregate_ids)):
            self._positions.setdefault(aggregate_ids[position], []).append(position)
        self._indexed = len(aggregate_ids)
        return self._positions.get(aggregate_id, [])

    def commit(self) -> None:
        """Apply every buffered write atomically; on error nothing is applied."""
        if self.finished:
            raise StorageEngineError("memory transaction is already finished")
        self.finished = True
        if self.failure is not None:
            raise StorageEngineError(
                "memory transaction cannot commit after an error; nothing was written"
            ) from self.failure
        self.engine._commit(self)

    def rollback(self) -> None:
        """Discard every buffered write."""
        self.finished = True
        self.columns = _Columns()
        self.snapshots.clear()
        self.subscription_ops.clear()


class MemoryStorageEngine:
    """An in-process :class:`evercore.spi.StorageEngine`; also ``SupportsEventWait``
    and ``SupportsStats``. Not durable: everything is lost on ``close()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._aggregate_types = _TypeTable()
        self._event_types = _TypeTable()
        self._aggregate_ids = itertools.count(1)
        self._subscription_ids = itertools.count(1)
        self._aggregates: dict[int, _Aggregate] = {}
        self._keys: dict[str, int] = {}
        # Each aggregate's committed events (log positions, in sequence order) and its
        # highest sequence.
        self._by_aggregate: defaultdict[int, list[int]] = defaultdict(list)
        self._last_sequences: dict[int, int] = {}
        self._snapshots: dict[int, Snapshot] = {}
        self._log = _Log()
        self._subscriptions = _Subscriptions()
        self._closed = False

    # -- engine ----------------------------------------------------------------
    @property
    def max_key_length(self) -> int:
        """The longest natural key stored (64, as every built-in engine)."""
        return MAX_KEY_LENGTH

    def get_transaction_info(self) -> MemoryTransaction:
        """Begin a transaction."""
        return MemoryTransaction(self)

    def close(self) -> None:
        """Wake any waiter; the data stays readable until the engine is dropped."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _tx(self, tx: Transaction | None) -> MemoryTransaction | None:
        if tx is None:
            return None
        if not isinstance(tx, MemoryTransaction) or tx.engine is not self:
            raise StorageEngineError(f"{tx!r} is not a transaction of this memory engine")
        if tx.finished:
            raise StorageEngineError("memory transaction is already finished")
        return tx

    @contextmanager
    def _writing(self, tx: Transaction | None) -> Iterator[MemoryTransaction]:
        """The caller's transaction, or one that commits on success (autocommit)."""
        own = self._tx(tx)
        if own is not None:
            yield own
            return
        auto = MemoryTransaction(self)
        try:
            yield auto
        except BaseException:
            auto.rollback()
            raise
        auto.commit()

    # -- types -----------------------------------------------------------------
    def _type_id(self, tx: Transaction | None, table: _TypeTable, name: str) -> int:
        own = self._tx(tx)
        with self._lock:
            found = table.ids.get(name)
            if found is not None:
                return found
            type_id = table.reserve(name)
            if own is None:
                table.add(name, type_id)
                return type_id
        own.pending(table)[name] = type_id
        return type_id

    def _type_list(self, tx: Transaction | None, table: _TypeTable) -> list[IdNamePair]:
        own = self._tx(tx)
        with self._lock:
            names = dict(table.ids)
        if own is not None:
            names.update(own.pending(table))
        return sorted(IdNamePair(type_id, name) for name, type_id in names.items())

    def get_event_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of an event type, registering the name if it is new."""
        return self._type_id(tx, self._event_types, name)

    def get_aggregate_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of an aggregate type, registering the name if it is new."""
        return self._type_id(tx, self._aggregate_types, name)

    def get_aggregate_types(self, tx: Transaction | None) -> list[IdNamePair]:
        """Every registered aggregate type, by id."""
        return self._type_list(tx, self._aggregate_types)

    def get_event_types(self, tx: Transaction | None) -> list[IdNamePair]:
        """Every registered event type, by id."""
        return self._type_list(tx, self._event_types)

    # -- aggregates --------------------------------------------------------------
    def _aggregate(self, own: MemoryTransaction | None, aggregate_id: int) -> _Aggregate | None:
        """The aggregate as ``own`` sees it (caller holds the lock)."""
        if own is not None and aggregate_id in own.aggregates:
            return own.aggregates[aggregate_id]
        return self._aggregates.get(aggregate_id)

    def _key_owner(self, own: MemoryTransaction | None, key: str) -> int | None:
        """The id of the aggregate holding ``key`` as ``own`` sees it (caller holds the lock)."""
        if own is not None and key in own.keys:
            return own.keys[key]
        return self._keys.get(key)

    def _create(self, own: MemoryTransaction, type_id: int, key: str | None) -> int:
        """Buffer a new aggregate (caller holds the lock and has checked the key is free)."""
        if self._aggregate_types.name_of(type_id, own.pending(self._aggregate_types)) is None:
            raise NotFoundError(f"aggregate type id {type_id} is not registered")
        aggregate_id = next(self._aggregate_ids)
        own.aggregates[aggregate_id] = _Aggregate(type_id, key)
        if key is not None:
            own.keys[key] = aggregate_id
        return aggregate_id

    def new_aggregate(self, tx: Transaction | None, aggregate_type_id: int) -> int:
        """Create an aggregate without a natural key; return its id."""
        with self._writing(tx) as own, self._lock:
            return self._create(own, aggregate_type_id, None)

    def new_aggregate_with_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> int:
        """Create an aggregate with a natural key; a taken key is a ``ConstraintViolationError``."""
        validate_natural_key(natural_key, self.max_key_length)
        with self._writing(tx) as own, self._lock:
            owner = self._key_owner(own, natural_key)
            if owner is not None:
                raise ConstraintViolationError(
                    f"natural key {natural_key!r} is already used by aggregate {owner}"
                )
            return self._create(own, aggregate_type_id, natural_key)

    def get_aggregate_by_id(
        self, tx: Transaction | None, aggregate_type_id: int, aggregate_id: int
    ) -> tuple[int, str | None]:
        """(id, natural key or None) of an aggregate of this type, else ``NotFoundError``."""
        own = self._tx(tx)
        with self._lock:
            found = self._aggregate(own, aggregate_id)
        if found is None or found.type_id != aggregate_type_id:
            raise NotFoundError(
                f"no aggregate {aggregate_id} of aggregate type id {aggregate_type_id}"
            )
        return aggregate_id, found.key

    def get_aggregate_by_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> int:
        """The id of the aggregate of this type with this key, else ``NotFoundError``."""
        validate_natural_key(natural_key, self.max_key_length)
        own = self._tx(tx)
        with self._lock:
            owner = self._key_owner(own, natural_key)
            found = None if owner is None else self._aggregate(own, owner)
        if owner is None or found is None or found.type_id != aggregate_type_id:
            raise NotFoundError(
                f"no aggregate with natural key {natural_key!r} of aggregate type id "
                f"{aggregate_type_id}"
            )
        return owner

    def get_or_create_aggregate_by_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> tuple[bool, int]:
        """(created, id). A key held by an aggregate of another type is a
        ``ConstraintViolationError`` (keys are unique across types)."""
        validate_natural_key(natural_key, self.max_key_length)
        with self._writing(tx) as own, self._lock:
            owner = self._key_owner(own, natural_key)
            if owner is None:
                return True, self._create(own, aggregate_type_id, natural_key)
            found = self._aggregate(own, owner)
            if found is not None and found.type_id != aggregate_type_id:
                raise ConstraintViolationError(
                    f"natural key {natural_key!r} is used by aggregate {owner} of aggregate "
                    f"type id {found.type_id}, not {aggregate_type_id}"
                )
            return False, owner

    def change_aggregate_natural_key(
        self, tx: Transaction | None, aggregate_id: int, natural_key: str
    ) -> None:
        """Give an aggregate (with or without a key) a new natural key."""
        validate_natural_key(natural_key, self.max_key_length)
        with self._writing(tx) as own, self._lock:
            found = self._aggregate(own, aggregate_id)
            if found is None:
                raise NotFoundError(f"aggregate {aggregate_id} not found")
            if found.key == natural_key:
                return
            owner = self._key_owner(own, natural_key)
            if owner is not None:
                raise ConstraintViolationError(
                    f"natural key {natural_key!r} is already used by aggregate {owner}"
                )
            own.aggregates[aggregate_id] = found._replace(key=natural_key)
            if found.key is not None:
                own.keys[found.key] = None
            own.keys[natural_key] = aggregate_id

    # -- events and snapshots ----------------------------------------------------
    def get_snapshot_for_aggregate(
        self, tx: Transaction | None, aggregate_id: int
    ) -> Snapshot | None:
        """The snapshot with the highest sequence (the later one on a tie), or None."""
        own = self._tx(tx)
        with self._lock:
            latest = self._snapshots.get(aggregate_id)
        for snapshot in () if own is None else own.snapshots:
            if snapshot.aggregate_id == aggregate_id and (
                latest is None or snapshot.sequence >= latest.sequence
            ):
                latest = snapshot
        return latest

    def get_events_for_aggregate(
        self, tx: Transaction | None, aggregate_id: int, after_sequence: int
    ) -> list[SerializedEvent]:
        """The aggregate's events with sequence > ``after_sequence``, in sequence order.

        Only this aggregate's index is read. Events buffered by ``tx`` have
        ``event_id`` 0 (ids are given at commit)."""
        own = self._tx(tx)
        with self._lock:
            log = self._log
            stored = self._by_aggregate.get(aggregate_id, [])
            after = bisect_right(stored, after_sequence, key=log.columns.sequences.__getitem__)
            events = log.read(stored[after:], self._event_types.names)
            if own is None or not own.columns:
                return events
            pending = own.pending(self._event_types)
            names = self._event_types.names | {type_id: n for n, type_id in pending.items()}
        mine = own.columns.read(
            own.positions_of(aggregate_id), itertools.repeat(0), names.__getitem__
        )
        mine = [event for event in mine if event.sequence > after_sequence]
        if mine:
            events.extend(mine)
            events.sort(key=_SEQUENCE)
        return events

    def _stored_has(self, aggregate_id: int, sequence: int) -> bool:
        """True when the sequence is committed (caller holds the lock)."""
        stored = self._by_aggregate.get(aggregate_id)
        if not stored:
            return False
        sequences = self._log.columns.sequences
        at = bisect_left(stored, sequence, key=sequences.__getitem__)
        return at < len(stored) and sequences[stored[at]] == sequence

    def _missing_aggregates(self, own: MemoryTransaction, aggregate_ids: Iterable[int]) -> set[int]:
        """The ids among ``aggregate_ids`` that ``own`` does not see (caller holds the lock).

        Intersecting a dict's keys with a set walks the smaller side, so this costs
        the batch's distinct ids, not the store's size."""
        missing = set(aggregate_ids)
        missing -= self._aggregates.keys() & missing
        if missing:
            missing -= own.aggregates.keys() & missing
        return missing

    def _check_batch(self, own: MemoryTransaction, batch: _Batch) -> bool:
        """Refuse a batch naming an unknown aggregate or event type, or repeating a
        stored, buffered or its own (aggregate, sequence); True when it runs on from
        the stored sequences (see ``_follows``). Caller holds the lock."""
        missing = self._missing_aggregates(own, batch.aggregate_ids)
        if missing:
            aggregate_id, sequence = next(
                pair
                for pair in zip(batch.aggregate_ids, batch.sequences, strict=True)
                if pair[0] in missing
            )
            raise NotFoundError(f"aggregate {aggregate_id} not found (event sequence {sequence})")
        event_types = own.pending(self._event_types)
        for event_type_id in set(batch.event_type_ids):
            if self._event_types.name_of(event_type_id, event_types) is None:
                raise NotFoundError(f"event type id {event_type_id} is not registered")
        seen = own.last_sequences
        last = ChainMap(seen, self._last_sequences) if seen else self._last_sequences
        if _follows(batch.aggregate_ids, batch.sequences, last):
            return True
        written: set[tuple[int, int]] = set()
        for slot in zip(batch.aggregate_ids, batch.sequences, strict=True):
            if slot in written or self._stored_has(*slot) or self._buffered_has(own, *slot):
                raise ConcurrencyError(*slot)
            written.add(slot)
        return False

    def _buffered_has(self, own: MemoryTransaction, aggregate_id: int, sequence: int) -> bool:
        sequences = own.columns.sequences
        return any(sequences[p] == sequence for p in own.positions_of(aggregate_id))

    def write_state(
        self,
        tx: Transaction | None,
        events: Sequence[StorageEngineEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """Buffer events and snapshots; a duplicate (aggregate, sequence) raises
        ``ConcurrencyError`` and dooms the transaction (nothing of it is kept)."""
        batch = _Batch.of(events) if events else None
        with self._writing(tx) as own, self._lock:
            try:
                in_order = batch is None or self._check_batch(own, batch)
                self._check_snapshots(own, snapshots)
            except (ConcurrencyError, NotFoundError) as error:
                own.failure = error
                raise
            if batch is not None:
                self._buffer(own, batch, in_order)
            own.snapshots.extend(snapshots)

    def _check_snapshots(self, own: MemoryTransaction, snapshots: Sequence[Snapshot]) -> None:
        missing = self._missing_aggregates(own, (s.aggregate_id for s in snapshots))
        if missing:
            raise NotFoundError(f"snapshot for aggregate {min(missing)}, which does not exist")

    def _buffer(self, own: MemoryTransaction, batch: _Batch, in_order: bool) -> None:
        """Add a checked batch to ``own`` (caller holds the lock)."""
        if own.checked_at is None:
            own.checked_at = self._log.max_id
        own.columns.extend(batch)
        seen = own.last_sequences
        if in_order:
            # Each aggregate's last sequence in the batch is its highest.
            seen.update(zip(batch.aggregate_ids, batch.sequences, strict=True))
            return
        own.in_order = False
        for aggregate_id, sequence in zip(batch.aggregate_ids, batch.sequences, strict=True):
            before = seen.get(aggregate_id, self._last_sequences.get(aggregate_id, sequence))
            seen[aggregate_id] = max(before, sequence)

    # -- commit ------------------------------------------------------------------
    def _commit(self, own: MemoryTransaction) -> None:
        """Apply a transaction atomically: check everything, then change everything."""
        with self._changed:
            self._check_keys(own)
            in_order = self._recheck_events(own)
            subscriptions = self._replay_subscription_ops(own)
            for table, names in own.pending_types.items():
                for name, type_id in names.items():
                    table.add(name, type_id)
            self._apply_aggregates(own)
            if own.columns:
                self._apply_events(own.columns, in_order)
                self._changed.notify_all()
            for snapshot in own.snapshots:
                _keep_latest(self._snapshots, snapshot)
            if subscriptions is not None:
                self._subscriptions = subscriptions

    def _recheck_events(self, own: MemoryTransaction) -> bool:
        """Refuse ``own``'s events if one was committed by another transaction since it
        was checked; True when they run on from the committed sequences."""
        if own.checked_at is None or own.checked_at == self._log.max_id:
            return own.in_order
        columns = own.columns
        if own.in_order and _follows(
            columns.aggregate_ids, columns.sequences, self._last_sequences
        ):
            return True
        for slot in zip(columns.aggregate_ids, columns.sequences, strict=True):
            if self._stored_has(*slot):
                raise ConcurrencyError(*slot)
        return False

    def _check_keys(self, own: MemoryTransaction) -> None:
        """Refuse a key another transaction took since ``own`` saw it free."""
        for aggregate_id, aggregate in own.aggregates.items():
            if aggregate.key is None:
                continue
            holder = self._keys.get(aggregate.key)
            moved_away = holder in own.aggregates and own.aggregates[holder].key != aggregate.key
            if holder is not None and holder != aggregate_id and not moved_away:
                raise ConstraintViolationError(
                    f"natural key {aggregate.key!r} was taken by aggregate {holder} "
                    "in a concurrent transaction"
                )

    def _apply_aggregates(self, own: MemoryTransaction) -> None:
        for aggregate_id, aggregate in own.aggregates.items():
            before = self._aggregates.get(aggregate_id)
            # Drop the old key unless a concurrent change already handed it on.
            if (
                before is not None
                and before.key is not None
                and (self._keys.get(before.key) == aggregate_id)
            ):
                del self._keys[before.key]
            self._aggregates[aggregate_id] = aggregate
        for aggregate_id, aggregate in own.aggregates.items():
            if aggregate.key is not None:
                self._keys[aggregate.key] = aggregate_id

    def _apply_events(self, columns: _Columns, in_order: bool) -> None:
        """Append a transaction's events to the log and the per-aggregate index.

        The per-event work runs in C-level iterators (map, zip, accumulate) rather
        than a Python loop: this is the whole cost of ingest in the engine."""
        log = self._log
        start = log.max_id
        aggregates = map(self._aggregates.__getitem__, columns.aggregate_ids)
        log.extend(columns, map(_TYPE_ID, aggregates))
        positions = range(start, log.max_id)
        if in_order:
            # Every event follows its aggregate's stored ones: append each position to
            # its aggregate's list (consumed by a zero-length deque, at C speed).
            lists = map(self._by_aggregate.__getitem__, columns.aggregate_ids)
            deque(map(list.append, lists, positions), maxlen=0)
            self._last_sequences.update(zip(columns.aggregate_ids, columns.sequences, strict=True))
            return
        sequence_of = log.columns.sequences.__getitem__
        last = self._last_sequences
        for aggregate_id, sequence, position in zip(
            columns.aggregate_ids, columns.sequences, positions, strict=True
        ):
            insort(self._by_aggregate[aggregate_id], position, key=sequence_of)
            last[aggregate_id] = max(last.get(aggregate_id, sequence), sequence)

    def _replay_subscription_ops(self, own: MemoryTransaction) -> _Subscriptions | None:
        """The subscription table after replaying ``own``'s changes on the committed one.

        A change whose outcome differs from what the transaction saw (a lease taken
        meanwhile, a name created concurrently) fails the commit.
        """
        if not own.subscription_ops:
            return None
        table = self._subscriptions.copy()
        for op, seen in own.subscription_ops:
            if op(table) != seen:
                raise StorageEngineError(
                    "memory transaction conflict: a subscription it changed was changed "
                    "concurrently; nothing was written"
                )
        return table

    # -- durable subscriptions ---------------------------------------------------
    def _subscription_op(self, tx: Transaction | None, op: _SubscriptionOp) -> object:
        own = self._tx(tx)
        with self._lock:
            if own is None:
                return op(self._subscriptions)
            if own.subscriptions is None:
                own.subscriptions = self._subscriptions.copy()
            result = op(own.subscriptions)
        own.subscription_ops.append((op, result))
        return result

    def _table(self, own: MemoryTransaction | None) -> _Subscriptions:
        """The subscription table as ``own`` sees it (caller holds the lock)."""
        if own is not None and own.subscriptions is not None:
            return own.subscriptions
        return self._subscriptions

    def _initial_cursor(
        self, start_from: str, start_event_id: int, start_timestamp: datetime | None
    ) -> int:
        """The cursor a new subscription starts at (caller holds the lock)."""
        if start_from == START_BEGINNING:
            return 0
        if start_from == START_EVENT_ID:
            return start_event_id
        if start_from == START_TIMESTAMP and start_timestamp is not None:
            first = self._log.first_id_at(_utc(start_timestamp))
            if first:
                return first - 1
        return self._log.max_id

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
        """Create (cursor initialised from ``start_from``) or update (cursor, lease and
        ``active`` kept) a subscription by name; return its id."""
        if start_from not in _START_KINDS:
            raise ValueError(f"unknown start_from {start_from!r}; expected one of {_START_KINDS}")
        if start_from == START_TIMESTAMP and start_timestamp is None:
            raise ValueError(f"subscription {name!r}: start_from 'timestamp' needs a timestamp")
        if aggregate_key is not None:
            validate_natural_key(aggregate_key, self.max_key_length)
        stamp = None if start_timestamp is None else _utc(start_timestamp)
        new_id = next(self._subscription_ids)

        def upsert(table: _Subscriptions) -> int:
            record = table.by_name.get(name)
            if record is None:
                cursor = self._initial_cursor(start_from, start_event_id, stamp)
                record = _SubscriptionRecord(
                    new_id, name, aggregate_type_id, event_type_id, aggregate_key,
                    start_from, start_event_id, stamp, cursor,
                )  # fmt: skip
                table.add(record)
                return new_id
            record.aggregate_type_id = aggregate_type_id
            record.event_type_id = event_type_id
            record.aggregate_key = aggregate_key
            record.start_from = start_from
            record.start_event_id = start_event_id
            record.start_timestamp = stamp
            return record.id

        result = self._subscription_op(tx, upsert)
        assert isinstance(result, int)
        return result

    def add_subscription_event_type(
        self, tx: Transaction | None, subscription_id: int, event_type_id: int
    ) -> None:
        """Add an event type to a subscription's multi-type filter (idempotent)."""

        def add(table: _Subscriptions) -> None:
            table.get_by_id(subscription_id).event_type_ids.add(event_type_id)

        self._subscription_op(tx, add)

    def get_subscription_by_name(self, tx: Transaction | None, name: str) -> Subscription:
        """The subscription with ``event_type_ids`` filled; else ``NotFoundError``."""
        own = self._tx(tx)
        with self._lock:
            record = self._table(own).by_name.get(name)
            if record is None:
                raise NotFoundError(f"subscription {name!r} not found")
            return record.value()

    def set_subscription_active(
        self, tx: Transaction | None, subscription_id: int, active: bool
    ) -> None:
        """Switch a subscription on or off."""

        def set_active(table: _Subscriptions) -> None:
            table.get_by_id(subscription_id).active = active

        self._subscription_op(tx, set_active)

    def claim_subscription(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float
    ) -> bool:
        """Take the lease if the subscription is active and the lease is free,
        expired or already ``owner``'s; False otherwise (also when it does not exist)."""

        def claim(table: _Subscriptions) -> bool:
            record = table.by_name.get(name)
            now = _now()
            if record is None or not record.active:
                return False
            if record.lease_owner != owner and not record.lease_free(now):
                return False
            record.lease_owner = owner
            record.lease_expires_at = now + timedelta(seconds=lease_seconds)
            return True

        return bool(self._subscription_op(tx, claim))

    def renew_subscription(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float
    ) -> bool:
        """Extend the lease; only the owner of an unexpired lease succeeds. ``active`` is
        not checked: a runner learns that it was switched off from its next poll."""

        def renew(table: _Subscriptions) -> bool:
            record = table.by_name.get(name)
            now = _now()
            if record is None or not record.held_by(owner, now):
                return False
            record.lease_expires_at = now + timedelta(seconds=lease_seconds)
            return True

        return bool(self._subscription_op(tx, renew))

    def release_subscription(self, tx: Transaction | None, name: str, owner: str) -> None:
        """Give up the lease if ``owner`` holds it."""

        def release(table: _Subscriptions) -> None:
            record = table.by_name.get(name)
            if record is not None and record.lease_owner == owner:
                record.lease_owner = None
                record.lease_expires_at = None

        self._subscription_op(tx, release)

    def advance_subscription_cursor(
        self,
        tx: Transaction | None,
        subscription_id: int,
        last_event_id: int,
        owner: str | None = None,
    ) -> None:
        """Move the cursor forward (a lower id is ignored); with ``owner``, only while it
        holds an unexpired lease, else ``SubscriptionLeaseLost``."""

        def advance(table: _Subscriptions) -> None:
            record = table.get_by_id(subscription_id)
            if owner is not None and not record.held_by(owner, _now()):
                raise SubscriptionLeaseLost(
                    f"subscription {record.name!r}: {owner!r} does not hold the lease "
                    f"(held by {record.lease_owner!r} until {record.lease_expires_at})"
                )
            record.last_event_id = max(record.last_event_id, last_event_id)

        self._subscription_op(tx, advance)

    def get_events_for_subscription(
        self, tx: Transaction | None, subscription: Subscription, limit: int
    ) -> list[SerializedEvent]:
        """Up to ``limit`` committed matching events with id > ``last_event_id``, in id
        order. Filtering runs in the ``filter_events`` kernel over the column lists."""
        own = self._tx(tx)
        if limit < 1:
            return []
        if subscription.event_type_ids:
            event_types: frozenset[int] | None = frozenset(subscription.event_type_ids)
        elif subscription.event_type_id is not None:
            event_types = frozenset((subscription.event_type_id,))
        else:
            event_types = None
        start = max(subscription.last_event_id, 0)
        with self._lock:
            aggregate_id = None
            if subscription.aggregate_key is not None:
                aggregate_id = self._key_owner(own, subscription.aggregate_key)
                if aggregate_id is None:
                    return []
            log = self._log
            names = self._event_types.names
            unfiltered = aggregate_id is None and subscription.aggregate_type_id is None
            if unfiltered and event_types is None:
                return log.read(range(start, min(start + limit, log.max_id)), names)
            positions = filter_events(
                log.aggregate_type_ids,
                log.columns.aggregate_ids,
                log.columns.event_type_ids,
                start=start,
                limit=limit,
                aggregate_type_id=subscription.aggregate_type_id,
                aggregate_id=aggregate_id,
                event_type_filter=event_types,
            )
            return log.read(positions, names)

    def get_max_event_id(self, tx: Transaction | None) -> int:
        """The highest committed event id, 0 when the log is empty."""
        self._tx(tx)
        with self._lock:
            return self._log.max_id

    def get_first_event_id_from_timestamp(self, tx: Transaction | None, ts: datetime) -> int:
        """The id of the first event with time >= ``ts`` (unfiltered), 0 when none."""
        self._tx(tx)
        with self._lock:
            return self._log.first_id_at(_utc(ts))

    # -- optional capabilities ---------------------------------------------------
    def wait_for_events(self, after_event_id: int, timeout: float) -> None:
        """Return once an event with id > ``after_event_id`` is committed, the engine is
        closed, or ``timeout`` seconds passed."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._log.max_id > after_event_id or self._closed, timeout
            )

    def get_counts(self, tx: Transaction | None) -> StoreCounts:
        """Committed aggregates, events and snapshots (the latest one per aggregate is kept)."""
        self._tx(tx)
        with self._lock:
            return StoreCounts(len(self._aggregates), self._log.max_id, len(self._snapshots))

    def list_subscriptions(self, tx: Transaction | None) -> list[Subscription]:
        """Every durable subscription, by id."""
        own = self._tx(tx)
        with self._lock:
            table = self._table(own)
            return [table.by_id[i].value() for i in sorted(table.by_id)]


__all__ = ["MemoryStorageEngine", "MemoryTransaction", "open_memory_engine"]
