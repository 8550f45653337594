"""Contexts: a unit of work over one storage transaction.

A write context (:class:`EventStoreContext`) captures the events and snapshots its
function produces and writes them all in one transaction when the function
returns; nothing is written when it raises. A read-only context
(:class:`EventStoreReadonlyContext`) only loads.

Contexts are created by :class:`evercore.EventStore`; do not build them yourself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from evercore._fold import fold_into
from evercore.aggregate import Aggregate, StateAggregate, copy_fields
from evercore.errors import InvalidEventError
from evercore.events import (
    EventState,
    StateEvent,
    decode_event,
    state_event_name,
    state_payload_decoder,
)
from evercore.values import AggregateState, SerializedEvent, Snapshot

_COPYING_APPLY = StateAggregate.apply_event_state

if TYPE_CHECKING:
    from evercore.spi import Transaction
    from evercore.store import EventStore, TypeIds


class EventStoreReadonlyContext:
    """Loads aggregates inside one transaction (Go ``EventStoreReadonlyContext``)."""

    def __init__(self, store: EventStore, tx: Transaction, type_ids: TypeIds) -> None:
        self._store = store
        self._engine = store.storage_engine
        self.transaction = tx
        self._type_ids = type_ids
        # Sequence each aggregate had when this context created or loaded it; the
        # sequence check of the captured events starts from it.
        self._known_sequences: dict[int, int] = {}

    def load_aggregate_state(self, aggregate_type: str, aggregate_id: int) -> AggregateState:
        """The latest snapshot and later events of an aggregate, by id.

        Raises ``NotFoundError`` when no aggregate of ``aggregate_type`` has this id.
        """
        type_id = self._type_ids.aggregate_type_id(self.transaction, aggregate_type)
        _, key = self._engine.get_aggregate_by_id(self.transaction, type_id, aggregate_id)
        return self._load_state(aggregate_id, key)

    def load_aggregate_state_by_key(self, aggregate_type: str, key: str) -> AggregateState:
        """The latest snapshot and later events of an aggregate, by natural key."""
        type_id = self._type_ids.aggregate_type_id(self.transaction, aggregate_type)
        aggregate_id = self._engine.get_aggregate_by_key(self.transaction, type_id, key)
        return self._load_state(aggregate_id, key)

    def load_state_into(self, agg: Aggregate, aggregate_id: int) -> None:
        """Rebuild ``agg`` from storage: its snapshot, then each later event."""
        self._apply_state(self.load_aggregate_state(agg.aggregate_type, aggregate_id), agg)

    def load_state_by_key_into(self, agg: Aggregate, key: str) -> None:
        """Rebuild ``agg`` from storage, finding it by natural key."""
        self._apply_state(self.load_aggregate_state_by_key(agg.aggregate_type, key), agg)

    def _load_state(self, aggregate_id: int, key: str | None) -> AggregateState:
        snapshot = self._engine.get_snapshot_for_aggregate(self.transaction, aggregate_id)
        after = snapshot.sequence if snapshot is not None else 0
        events = self._engine.get_events_for_aggregate(self.transaction, aggregate_id, after)
        return AggregateState(aggregate_id, key, snapshot, events)

    def _apply_state(self, state: AggregateState, agg: Aggregate) -> None:
        sequence = 0
        if state.snapshot is not None:
            agg.apply_snapshot(state.snapshot)
            sequence = state.snapshot.sequence
        if type(agg).apply_event_state is _COPYING_APPLY:
            _fold_state_events(agg, state.events)  # type: ignore[arg-type]
        else:
            apply = agg.apply_event_state
            for ev in state.events:
                apply(decode_event(ev)[1], ev.event_time, ev.reference)
        if state.events:
            sequence = state.events[-1].sequence
        agg.id = state.aggregate_id
        agg.sequence = sequence
        self._known_sequences[state.aggregate_id] = sequence


def _fold_state_events(agg: StateAggregate[object], events: Sequence[SerializedEvent]) -> None:
    """Rebuild a ``StateAggregate`` whose ``apply_event_state`` is not overridden: state
    events are decoded straight into their payload and copied onto the state, the
    same outcome as ``apply_event_state(StateEvent(payload))`` without the wrapper.
    The fold kernel does the whole run at once when the classes qualify (see
    :mod:`evercore._fold`); otherwise each event is decoded and copied in turn."""
    if not fold_into(agg, events):
        _fold_one_by_one(agg, events)


def _fold_one_by_one(agg: StateAggregate[object], events: Sequence[SerializedEvent]) -> None:
    """:func:`_fold_state_events` event by event: rehydration runs this once per stored
    event when the fold kernel does not apply."""
    decoders: dict[str, Callable[[str], object] | None] = {}
    for ev in events:
        event_type = ev.event_type
        if event_type not in decoders:
            decoders[event_type] = state_payload_decoder(event_type)
        decode = decoders[event_type]
        if decode is None:
            agg.apply_event_state(decode_event(ev)[1], ev.event_time, ev.reference)
        else:
            agg.state = copy_fields(decode(ev.state), agg.state)


class EventStoreContext(EventStoreReadonlyContext):
    """Loads, creates and changes aggregates; captured events are written on success
    (Go ``EventStoreContext``)."""

    def __init__(self, store: EventStore, tx: Transaction, type_ids: TypeIds) -> None:
        super().__init__(store, tx, type_ids)
        # Captured events, column by column: the batch kernels take columns.
        self._aggregate_ids: list[int] = []
        self._sequences: list[int] = []
        self._event_types: list[str] = []
        self._payloads: list[object] = []
        self._times: list[datetime] = []
        self._references: list[str] = []
        self._snapshots: list[Snapshot] = []

    # -- aggregates ---------------------------------------------------------
    def new_aggregate_id(self, aggregate_type: str) -> int:
        """Create an aggregate of ``aggregate_type`` without a natural key; return its id."""
        type_id = self._type_ids.aggregate_type_id(self.transaction, aggregate_type)
        aggregate_id = self._engine.new_aggregate(self.transaction, type_id)
        self._known_sequences[aggregate_id] = 0
        return aggregate_id

    def new_aggregate_id_with_key(self, aggregate_type: str, key: str) -> int:
        """Create an aggregate with a natural key; a taken key is a ``ConstraintViolationError``."""
        type_id = self._type_ids.aggregate_type_id(self.transaction, aggregate_type)
        aggregate_id = self._engine.new_aggregate_with_key(self.transaction, type_id, key)
        self._known_sequences[aggregate_id] = 0
        return aggregate_id

    def create_aggregate_into(self, agg: Aggregate) -> None:
        """Create a new aggregate of ``agg``'s type and give ``agg`` its id."""
        agg.id = self.new_aggregate_id(agg.aggregate_type)

    def create_aggregate_with_key_into(self, agg: Aggregate, key: str) -> None:
        """Create a new aggregate with a natural key and give ``agg`` its id."""
        agg.id = self.new_aggregate_id_with_key(agg.aggregate_type, key)

    def load_or_create_aggregate(self, agg: Aggregate, key: str) -> bool:
        """Load the aggregate with this key into ``agg``, or create it; True when created."""
        type_id = self._type_ids.aggregate_type_id(self.transaction, agg.aggregate_type)
        created, aggregate_id = self._engine.get_or_create_aggregate_by_key(
            self.transaction, type_id, key
        )
        if created:
            agg.id = aggregate_id
            self._known_sequences[aggregate_id] = 0
            return True
        self._apply_state(self._load_state(aggregate_id, key), agg)
        return False

    def change_aggregate_natural_key(self, aggregate_id: int, key: str) -> None:
        """Give an aggregate a new natural key (it may have had none)."""
        self._engine.change_aggregate_natural_key(self.transaction, aggregate_id, key)

    # -- events ---------------------------------------------------------------
    def apply_event_to(
        self,
        agg: Aggregate,
        event: EventState | object,
        time: datetime | None = None,
        reference: str = "",
    ) -> None:
        """Apply ``event`` to ``agg`` and capture it with the next sequence.

        ``event`` is an ``EventState``; an instance of a ``@state_event`` class is
        wrapped in ``StateEvent``. ``time`` None means now (UTC). Every
        ``snapshot_frequency`` events a snapshot of ``agg`` is captured too.
        """
        event_time = datetime.now(timezone.utc) if time is None else _utc(time)
        event_type = state_event_name(type(event))
        if event_type is not None and type(agg).apply_event_state is _COPYING_APPLY:
            # What StateAggregate.apply_event_state does with StateEvent(event), minus
            # the wrapper: this line runs once per event of every ingest.
            agg.state = copy_fields(event, agg.state)  # type: ignore[attr-defined]
            payload: object = event
        else:
            state, event_type, payload = _captured_form(event)
            agg.apply_event_state(state, event_time, reference)
        sequence = agg.sequence + 1
        agg.sequence = sequence
        self._aggregate_ids.append(agg.id)
        self._sequences.append(sequence)
        self._event_types.append(event_type)
        self._payloads.append(payload)
        self._times.append(event_time)
        self._references.append(reference)
        frequency = agg.snapshot_frequency
        if frequency > 0 and sequence % frequency == 0:
            snapshot_state = agg.get_snapshot_state()
            if snapshot_state is not None:
                self._snapshots.append(Snapshot(agg.id, snapshot_state, sequence))

    def publish(self, serialized_event: SerializedEvent) -> None:
        """Capture an already-serialized event as it is (Go ``Publish``)."""
        self._aggregate_ids.append(serialized_event.aggregate_id)
        self._sequences.append(serialized_event.sequence)
        self._event_types.append(serialized_event.event_type)
        self._payloads.append(serialized_event.state)
        self._times.append(_utc(serialized_event.event_time))
        self._references.append(serialized_event.reference)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Capture a snapshot to write with the context."""
        self._snapshots.append(snapshot)

    @property
    def captured_event_count(self) -> int:
        """How many events this context will write."""
        return len(self._aggregate_ids)

    def _flush(self, commit: bool = False) -> bool:
        """Write everything captured, in this context's transaction; with ``commit``,
        commit it too when the engine can do both in one call. True if it committed."""
        if not self._aggregate_ids and not self._snapshots:
            return False
        return self._store.write_captured(
            self.transaction,
            self._type_ids,
            aggregate_ids=self._aggregate_ids,
            sequences=self._sequences,
            event_types=self._event_types,
            payloads=self._payloads,
            event_times=self._times,
            references=self._references,
            snapshots=self._snapshots,
            known_sequences=self._known_sequences,
            commit=commit,
        )


def _captured_form(event: object) -> tuple[EventState, str, object]:
    """(the event to apply, its type name, what to capture). State-event payloads are
    captured as objects so that the kernel serializes the whole batch at commit."""
    name = state_event_name(type(event))
    if name is not None:
        return StateEvent(event), name, event
    if type(event) is StateEvent:
        return event, event.event_type, event.payload
    if isinstance(event, EventState):
        return event, event.event_type, event.serialize()
    raise InvalidEventError(
        f"cannot apply {event!r}: it is neither an EventState (event_type + serialize()) "
        "nor an instance of a @evercore.state_event class"
    )


def _utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidEventError(f"event time {value!r} is not a datetime")
    if value.tzinfo is None:
        raise InvalidEventError(
            f"event time {value!r} has no timezone; pass an aware datetime (UTC)"
        )
    return value if value.tzinfo is timezone.utc else value.astimezone(timezone.utc)


EventColumns = tuple[list[int], list[int], list[str], list[object], list[datetime], list[str]]
"""Captured events as (aggregate ids, sequences, event types, payloads, times, references)."""


def columns_of(events: Sequence[SerializedEvent]) -> EventColumns:
    """Split serialized events into the columns the batch kernels take."""
    return (
        [e.aggregate_id for e in events],
        [e.sequence for e in events],
        [e.event_type for e in events],
        [e.state for e in events],
        [_utc(e.event_time) for e in events],
        [e.reference for e in events],
    )
