"""Reliability suites: a model-based test and concurrency stress, for any backend.

Like :class:`evercore.testing.StorageEngineConformance`, each suite is a mix-in of
pytest tests; subclass it and provide an ``engine`` fixture that yields a fresh,
empty engine per test (and cleans it up)::

    import pytest
    from evercore.testing import ConcurrencyStress, ModelBasedReliability

    class TestMyEngineReliability(ModelBasedReliability, ConcurrencyStress):
        @pytest.fixture
        def engine(self):
            eng = open_my_engine("mydb://localhost/test_db")
            yield eng
            eng.close()

:class:`MultiProcessStress` also needs an ``engine_uri`` fixture: a URI (with any
options in its query string) that every writer process opens on its own.

:class:`ModelBasedReliability` drives the facade (``EventStore(engine)``) with
hypothesis: random sequences of contexts (aggregates created with and without
natural keys, keys of 64 and 65 characters, invalid and duplicate keys, appends
with the right and the wrong sequence, stale aggregates, multi-aggregate contexts
that raise, snapshots, key changes) and polls of durable subscriptions with and
without acknowledgement, comparing every outcome and every read with a plain
in-memory reference model. It runs ``EVERCORE_RELIABILITY_EXAMPLES`` examples
(default 200) of up to ``EVERCORE_RELIABILITY_STEPS`` steps (default 12).

Figures: when ``EVERCORE_RELIABILITY_FIGURES`` names a JSON file, each test adds
what it did (operations, faults, events checked, lost, duplicates) to it; see
:func:`record_figures`.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from evercore import _kernels
from evercore.aggregate import StateAggregate
from evercore.context import EventStoreContext
from evercore.errors import (
    ConcurrencyError,
    ConstraintViolationError,
    InvalidKeyError,
    KeyTooLongError,
    LimitExceededError,
    NotFoundError,
    SequenceError,
    SerializationError,
)
from evercore.events import StateEvent, event_type_name, state_event
from evercore.spi import StorageEngine
from evercore.store import EventStore, connect
from evercore.values import (
    START_BEGINNING,
    SerializedEvent,
    Snapshot,
    StartFrom,
    SubscriptionFilter,
    SubscriptionOptions,
)

FIGURES_ENV = "EVERCORE_RELIABILITY_FIGURES"
"""Environment variable naming the JSON file the suites add their figures to."""


# --------------------------------------------------------------------- figures --
def record_figures(test: str, backend: str, **figures: int | float | str) -> None:
    """Add one test's figures to the JSON file named by ``EVERCORE_RELIABILITY_FIGURES``
    (nothing happens when it is unset). Entries are keyed by test and backend, so the
    file always holds the last run of each."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    with _figures_lock:
        try:
            with open(path, encoding="utf-8") as handle:
                data: dict[str, Any] = json.load(handle)
        except (OSError, ValueError):
            data = {}
        entry = {"test": test, "backend": backend, **figures}
        entry["recorded_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        data[f"{test} [{backend}]"] = entry
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)


_figures_lock = threading.Lock()


def backend_label(engine: StorageEngine) -> str:
    """How figures name a backend: the engine's class name without ``StorageEngine``."""
    name = type(engine).__name__
    return name.replace("StorageEngine", "").replace("Engine", "").lower() or name


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


# ------------------------------------------------------------- the aggregate --
@dataclass
class Tally:
    """The state of the aggregate the suites write: a number and a note."""

    amount: int = 0
    note: str = ""


@state_event(name="evercore.testing.TallyChanged")
@dataclass
class TallyChanged:
    """Sets the amount and, when given, the note."""

    amount: int | None = None
    note: str | None = None


@state_event(name="evercore.testing.TallyNoted")
@dataclass
class TallyNoted:
    """Sets only the note."""

    note: str | None = None


CHANGED = event_type_name(TallyChanged)
NOTED = event_type_name(TallyNoted)


class TallyAggregate(StateAggregate[Tally]):
    """A ``StateAggregate`` that snapshots every 4 events, so that runs cross snapshots."""

    snapshot_frequency = 4


def tally_class(aggregate_type: str) -> type[TallyAggregate]:
    """A ``TallyAggregate`` subclass of its own aggregate type (one per model example,
    so that examples sharing one engine never see each other's aggregates)."""
    return type("TallyAggregate", (TallyAggregate,), {"aggregate_type": aggregate_type})


# ------------------------------------------------------------ reference model --
@dataclass(frozen=True)
class ModelEvent:
    """An event as the model expects to read it back."""

    aggregate_id: int
    sequence: int
    event_type: str
    state: str
    reference: str
    event_time: datetime
    changes: tuple[tuple[str, Any], ...]

    def as_read(self) -> tuple[object, ...]:
        """The fields a read must return exactly (times in UTC)."""
        return (
            self.aggregate_id,
            self.sequence,
            self.event_type,
            self.state,
            self.reference,
            self.event_time,
            timedelta(0),
        )


def read_fields(event: SerializedEvent) -> tuple[object, ...]:
    """The fields of a stored event compared with :meth:`ModelEvent.as_read`."""
    return (
        event.aggregate_id,
        event.sequence,
        event.event_type,
        event.state,
        event.reference,
        event.event_time,
        event.event_time.utcoffset(),
    )


@dataclass
class ModelAggregate:
    """What the reference model knows of one aggregate."""

    id: int
    key: str | None
    events: list[ModelEvent] = field(default_factory=list)
    snapshots: dict[int, str] = field(default_factory=dict)

    @property
    def sequence(self) -> int:
        """The sequence of the last stored event (0 when none)."""
        return self.events[-1].sequence if self.events else 0

    def state_at(self, sequence: int) -> Tally:
        """The state after the events up to ``sequence`` (StateAggregate's fold)."""
        state = Tally()
        for event in self.events:
            if event.sequence > sequence:
                break
            for name, value in event.changes:
                setattr(state, name, value)
        return state

    def latest_snapshot(self) -> Snapshot | None:
        """The snapshot with the highest sequence."""
        if not self.snapshots:
            return None
        sequence = max(self.snapshots)
        return Snapshot(self.id, self.snapshots[sequence], sequence)


@dataclass
class ModelSubscription:
    """A durable subscription: its filter and how far the model has acknowledged."""

    name: str
    event_types: frozenset[str] | None
    owner: str
    acknowledged: int = 0
    last_event_id: int = 0


class InjectedFailure(Exception):
    """Raised inside a context on purpose: nothing of that context may be written."""


# ------------------------------------------------------------------ strategies --
_TIMEZONES = (timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8)))
_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
EVENT_TIMES = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.sampled_from(_TIMEZONES),
)
KEY_KINDS = st.sampled_from(
    ["none", "k0", "k1", "k2", "long64", "long65", "nul", "surrogate", "none", "k0"]
)
"""Which natural key a rule uses; short names repeat so duplicates are common."""


@st.composite
def payloads(draw: st.DrawFn) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """(event type, field changes) of one event."""
    note = draw(st.none() | _TEXT)
    if draw(st.booleans()):
        amount = draw(st.integers(-(10**12), 10**12))
        changes = (("amount", amount),) + ((("note", note),) if note is not None else ())
        return CHANGED, changes
    return NOTED, (("note", note),) if note is not None else ()


def render_state(event_type: str, changes: tuple[tuple[str, Any], ...], style: int) -> str:
    """JSON text of an event in one of several spellings; engines must keep it exactly."""
    values = dict(changes)
    if event_type == CHANGED:
        values.setdefault("amount", None)
    values.setdefault("note", None)
    if style == 0:
        return _kernels.dumps(values, event_type)
    if style == 1:
        return json.dumps(values, indent=1, ensure_ascii=True)
    return " " + json.dumps(values, separators=(" ,", " : "), ensure_ascii=False) + "\n"


# ------------------------------------------------------------------ the machine --
@dataclass
class ModelFigures:
    """What a model run did, summed over its examples."""

    examples: int = 0
    steps: int = 0
    contexts_committed: int = 0
    contexts_refused: int = 0
    events_written: int = 0
    events_checked: int = 0
    polls: int = 0


class StoreMachine(RuleBasedStateMachine):
    """Random contexts through the facade, compared with :class:`ModelAggregate`\\ s.

    Built once per hypothesis example over the shared ``engine``; everything it
    creates is named under a fresh namespace (aggregate type, natural keys,
    subscriptions), so examples do not see each other's data.
    """

    engine: ClassVar[StorageEngine]
    figures: ClassVar[ModelFigures]
    max_aggregates: ClassVar[int] = 6
    delivery_timeout: ClassVar[float] = 5.0

    def __init__(self) -> None:
        super().__init__()
        self.store = EventStore(self.engine)
        self.ns = f"m{uuid.uuid4().hex[:10]}"
        self.aggregate_type = f"{self.ns}.Tally"
        self.cls = tally_class(self.aggregate_type)
        self.aggregates: dict[int, ModelAggregate] = {}
        self.keys: dict[str, int] = {}
        self.dropped_keys: set[str] = set()
        self.log: list[ModelEvent] = []
        self.subscriptions: list[ModelSubscription] = []
        # Copies of aggregates as they were after each write of this machine: the
        # latest is current, older ones are stale (a second writer's view).
        self.handles: dict[int, list[TallyAggregate]] = {}
        self.dirty: set[int] = set()
        self.figures.examples += 1

    # -- helpers ---------------------------------------------------------------
    def key_for(self, kind: str) -> str | None:
        """The natural key a :data:`KEY_KINDS` name stands for in this example."""
        if kind == "none":
            return None
        if kind == "long64":
            return (self.ns + ":").ljust(64, "x")
        if kind == "long65":
            return (self.ns + ":").ljust(65, "y")
        if kind == "nul":
            return f"{self.ns}:nul\x00key"
        if kind == "surrogate":
            return f"{self.ns}:lone\ud800"
        return f"{self.ns}:{kind}"

    @staticmethod
    def key_error(key: str) -> type[Exception] | None:
        """The error the key itself earns, before any lookup."""
        if len(key) > 64:
            return KeyTooLongError
        if "\x00" in key or "\ud800" in key:
            return InvalidKeyError
        return None

    def pick(self, index: int) -> ModelAggregate:
        """The aggregate number ``index`` (modulo how many there are)."""
        ids = sorted(self.aggregates)
        return self.aggregates[ids[index % len(ids)]]

    def run_context(
        self, expected: type[Exception] | None, body: Callable[[EventStoreContext], None]
    ) -> bool:
        """Run ``body`` in a write context; True when it committed. When ``expected``
        is an error class, the context must fail with exactly that kind of error."""
        self.figures.steps += 1
        try:
            with self.store.context() as ctx:
                body(ctx)
        except Exception as exc:
            if expected is None or not _is_expected(exc, expected):
                raise AssertionError(f"expected {_name(expected)}, got {exc!r}") from exc
            self.figures.contexts_refused += 1
            return False
        if expected is not None:
            raise AssertionError(f"expected {_name(expected)}, but the context committed")
        self.figures.contexts_committed += 1
        return True

    def capture(
        self, agg: TallyAggregate, pending: list[ModelEvent]
    ) -> Callable[[EventStoreContext, str, tuple[tuple[str, Any], ...], datetime, str], None]:
        """A function that applies one event to ``agg`` and notes what the model expects."""

        def apply(
            ctx: EventStoreContext,
            event_type: str,
            changes: tuple[tuple[str, Any], ...],
            when: datetime,
            reference: str,
        ) -> None:
            payload = (
                TallyChanged(**dict(changes))
                if event_type == CHANGED
                else TallyNoted(**dict(changes))
            )
            ctx.apply_event_to(agg, payload, when, reference)
            pending.append(
                ModelEvent(
                    agg.id,
                    agg.sequence,
                    event_type,
                    _kernels.dumps(payload, event_type),
                    reference,
                    when.astimezone(timezone.utc),
                    tuple((n, v) for n, v in changes if v is not None),
                )
            )

        return apply

    def commit_events(self, pending: Sequence[ModelEvent], applied: bool = True) -> None:
        """Record committed events, and the snapshots StateAggregate takes every 4 events
        when they were ``applied`` to an aggregate (not published as they are)."""
        for event in pending:
            model = self.aggregates[event.aggregate_id]
            model.events.append(event)
            self.log.append(event)
            if applied and event.sequence % TallyAggregate.snapshot_frequency == 0:
                state = model.state_at(event.sequence)
                model.snapshots[event.sequence] = _kernels.dumps(state, "snapshot")
            self.dirty.add(event.aggregate_id)
        self.figures.events_written += len(pending)

    def keep_handle(self, agg: TallyAggregate) -> None:
        """Remember a copy of ``agg`` as it is now (at most four per aggregate)."""
        kept = self.handles.setdefault(agg.id, [])
        kept.append(copy.deepcopy(agg))
        del kept[:-4]

    def handle(self, aggregate_id: int, age: int) -> TallyAggregate | None:
        """A copy of the kept aggregate ``age`` writes old (the oldest kept if fewer)."""
        kept = self.handles.get(aggregate_id)
        if not kept:
            return None
        return copy.deepcopy(kept[-1 - min(age, len(kept) - 1)])

    def forget_handles(self, aggregate_id: int) -> None:
        """After a published gap an old copy could fill the gap instead of conflicting;
        the model keeps sequences contiguous after each gap, so it drops them."""
        self.handles.pop(aggregate_id, None)

    # -- setup -------------------------------------------------------------------
    @initialize()
    def create_subscriptions(self) -> None:
        """Two durable subscriptions over this example's aggregates: every event, and
        only ``TallyNoted`` (a multi-type filter applied in storage)."""
        engine = self.engine
        type_id = engine.get_aggregate_type_id(None, self.aggregate_type)
        noted = engine.get_event_type_id(None, NOTED)
        for suffix, event_types in (("all", None), ("noted", frozenset({NOTED}))):
            name = f"{self.ns}.{suffix}"
            sub_id = engine.upsert_subscription(
                None, name, type_id, None, None, START_BEGINNING, 0, None
            )
            if event_types is not None:
                engine.add_subscription_event_type(None, sub_id, noted)
            owner = f"{name}.owner"
            assert engine.claim_subscription(None, name, owner, 600.0)
            self.subscriptions.append(ModelSubscription(name, event_types, owner))

    # -- rules ---------------------------------------------------------------------
    @precondition(lambda self: len(self.aggregates) < self.max_aggregates)
    @rule(
        kind=KEY_KINDS,
        how=st.sampled_from(["create", "load_or_create"]),
        events=st.lists(st.tuples(payloads(), EVENT_TIMES, _TEXT), max_size=3),
    )
    def create(
        self, kind: str, how: str, events: list[tuple[tuple[str, Any], datetime, str]]
    ) -> None:
        """Create an aggregate (with or without a key) and apply a few events to it."""
        key = self.key_for(kind)
        expected = None if key is None else self.key_error(key)
        existing = None if key is None else self.keys.get(key)
        if expected is None and existing is not None and how == "create":
            expected = ConstraintViolationError
        if existing is not None and how == "load_or_create":
            return self.append_via("load_or_create", existing, events, key=key)
        agg = self.cls()
        pending: list[ModelEvent] = []
        apply = self.capture(agg, pending)

        def body(ctx: EventStoreContext) -> None:
            if key is None:
                ctx.create_aggregate_into(agg)
            elif how == "create":
                ctx.create_aggregate_with_key_into(agg, key)
            else:
                assert ctx.load_or_create_aggregate(agg, key) is True
            for (event_type, changes), when, reference in events:
                apply(ctx, event_type, changes, when, reference)

        if self.run_context(expected, body):
            assert agg.id > 0 and agg.id not in self.aggregates
            self.aggregates[agg.id] = ModelAggregate(agg.id, key)
            if key is not None:
                self.keys[key] = agg.id
                self.dropped_keys.discard(key)
            self.commit_events(pending)
            self.keep_handle(agg)
            self.dirty.add(agg.id)
        return None

    @precondition(lambda self: self.aggregates)
    @rule(
        index=st.integers(0, 99),
        how=st.sampled_from(["load", "handle"]),
        age=st.integers(0, 3),
        events=st.lists(st.tuples(payloads(), EVENT_TIMES, _TEXT), min_size=1, max_size=4),
    )
    def append(
        self, index: int, how: str, age: int, events: list[tuple[tuple[str, Any], datetime, str]]
    ) -> None:
        """Append events after loading the aggregate, or through a kept copy of it that
        may be stale (then a ``ConcurrencyError`` with nothing written)."""
        self.append_via(how, self.pick(index).id, events, age=age)

    def append_via(
        self,
        how: str,
        aggregate_id: int,
        events: list[tuple[tuple[str, Any], datetime, str]],
        key: str | None = None,
        age: int = 0,
    ) -> None:
        """Append ``events`` to an existing aggregate, reached as ``how`` says."""
        model = self.aggregates[aggregate_id]
        handle = self.handle(aggregate_id, age)
        if how == "handle" and handle is None:
            how = "load"
        agg = handle if how == "handle" and handle is not None else self.cls()
        stale = how == "handle" and agg.sequence != model.sequence
        expected = ConcurrencyError if stale and events else None
        pending: list[ModelEvent] = []
        apply = self.capture(agg, pending)

        def body(ctx: EventStoreContext) -> None:
            if how == "load":
                ctx.load_state_into(agg, aggregate_id)
                self.check_loaded(agg, model)
            elif how == "load_or_create":
                assert key is not None
                assert ctx.load_or_create_aggregate(agg, key) is False
                self.check_loaded(agg, model)
            for (event_type, changes), when, reference in events:
                apply(ctx, event_type, changes, when, reference)

        if self.run_context(expected, body):
            self.commit_events(pending)
            self.keep_handle(agg)

    @precondition(lambda self: self.aggregates)
    @rule(
        index=st.integers(0, 99),
        delta=st.sampled_from([1, 1, 1, 0, -1, -5, 2]),
        loaded=st.booleans(),
        event=st.tuples(payloads(), EVENT_TIMES, _TEXT, st.integers(0, 2)),
    )
    def publish(
        self,
        index: int,
        delta: int,
        loaded: bool,
        event: tuple[tuple[str, tuple[tuple[str, Any], ...]], datetime, str, int],
    ) -> None:
        """``ctx.publish`` a serialized event: ``delta`` 1 is the next sequence, 2 leaves
        a gap, 0 and below name a taken sequence (the last, the one before...).

        In a context that loaded the aggregate anything but the next sequence is a
        ``SequenceError`` before any I/O; otherwise a taken sequence is a
        ``ConcurrencyError``, a sequence below 1 a ``SequenceError``, and a gap is
        stored as given (a context that does not know the aggregate may start
        anywhere, as ``Publish`` in Go). The model never fills a gap later, so each
        aggregate's events stay in sequence order in the log.
        """
        (event_type, changes), when, reference, style = event
        model = self.pick(index)
        taken = [e.sequence for e in model.events]
        if delta <= 0 and taken:
            sequence = taken[max(0, len(taken) - 1 + delta)]
        else:
            sequence = model.sequence + delta
        state = render_state(event_type, changes, style)
        expected: type[Exception] | None = None
        if sequence < 1 or (loaded and sequence != model.sequence + 1):
            expected = SequenceError
        elif sequence in taken:
            expected = ConcurrencyError
        serialized = SerializedEvent(0, model.id, event_type, state, sequence, reference, when)

        def body(ctx: EventStoreContext) -> None:
            if loaded:
                ctx.load_state_into(self.cls(), model.id)
            ctx.publish(serialized)

        if self.run_context(expected, body):
            changes = tuple((n, v) for n, v in changes if v is not None)
            utc = when.astimezone(timezone.utc)
            event_model = ModelEvent(model.id, sequence, event_type, state, reference, utc, changes)
            self.commit_events([event_model], applied=False)
            self.forget_handles(model.id)

    @precondition(lambda self: len(self.aggregates) >= 2)
    @rule(
        indexes=st.lists(st.integers(0, 99), min_size=2, max_size=3),
        failure=st.sampled_from(["raise", "raise", "stale", "none"]),
        new_key=KEY_KINDS,
        changes=payloads(),
    )
    def multi(
        self,
        indexes: list[int],
        failure: str,
        new_key: str,
        changes: tuple[str, tuple[tuple[str, Any], ...]],
    ) -> None:
        """One context over several aggregates (and a new one). With an injected
        exception or a stale aggregate inside, nothing of it may be written."""
        targets = list(dict.fromkeys(self.pick(i).id for i in indexes))
        key = self.key_for(new_key)
        if key is not None and (self.key_error(key) or key in self.keys):
            key = None
        if failure == "stale" and not any(self.is_stale(t) for t in targets):
            failure = "raise"
        expected: type[Exception] | None = {
            "raise": InjectedFailure,
            "stale": ConcurrencyError,
            "none": None,
        }[failure]
        pending: list[ModelEvent] = []
        created = self.cls()
        event_type, payload_changes = changes
        when = datetime(2024, 1, 1, tzinfo=timezone.utc)

        used: list[TallyAggregate] = [created]

        def body(ctx: EventStoreContext) -> None:
            for aggregate_id in targets:
                oldest = self.handle(aggregate_id, 3)
                if failure == "stale" and oldest is not None and self.is_stale(aggregate_id):
                    agg = oldest
                else:
                    agg = self.cls()
                    ctx.load_state_into(agg, aggregate_id)
                used.append(agg)
                self.capture(agg, pending)(ctx, event_type, payload_changes, when, "multi")
            if key is None:
                ctx.create_aggregate_into(created)
            else:
                ctx.create_aggregate_with_key_into(created, key)
            self.capture(created, pending)(ctx, event_type, payload_changes, when, "multi")
            if failure == "raise":
                raise InjectedFailure("injected failure after capturing events")

        if self.run_context(expected, body):
            self.aggregates[created.id] = ModelAggregate(created.id, key)
            if key is not None:
                self.keys[key] = created.id
                self.dropped_keys.discard(key)
            self.commit_events(pending)
            for agg in used:
                self.keep_handle(agg)
        elif key is not None:
            # The key of the aggregate that was never created must still be free.
            self.dropped_keys.add(key)
        self.dirty.update(targets)

    def is_stale(self, aggregate_id: int) -> bool:
        """True when the oldest kept copy of the aggregate is behind storage."""
        oldest = self.handle(aggregate_id, 3)
        model = self.aggregates[aggregate_id]
        return oldest is not None and oldest.sequence != model.sequence

    @precondition(lambda self: any(m.sequence > 0 for m in self.aggregates.values()))
    @rule(index=st.integers(0, 99), back=st.integers(0, 6))
    def snapshot(self, index: int, back: int) -> None:
        """Save a snapshot at the current sequence or an older one (the highest wins)."""
        candidates = [m for m in self.aggregates.values() if m.sequence > 0]
        model = candidates[index % len(candidates)]
        sequences = [e.sequence for e in model.events if e.sequence not in model.snapshots]
        if not sequences:
            return
        sequence = sequences[max(0, len(sequences) - 1 - back)]
        state = _kernels.dumps(model.state_at(sequence), "snapshot")

        def body(ctx: EventStoreContext) -> None:
            ctx.save_snapshot(Snapshot(model.id, state, sequence))

        self.run_context(None, body)
        model.snapshots[sequence] = state
        self.dirty.add(model.id)

    @precondition(lambda self: self.aggregates)
    @rule(index=st.integers(0, 99), kind=KEY_KINDS.filter(lambda k: k != "none"))
    def change_key(self, index: int, kind: str) -> None:
        """Give an aggregate a new natural key (its own key again is a no-op)."""
        model = self.pick(index)
        key = self.key_for(kind)
        assert key is not None
        expected = self.key_error(key)
        holder = self.keys.get(key)
        if expected is None and holder is not None and holder != model.id:
            expected = ConstraintViolationError

        def body(ctx: EventStoreContext) -> None:
            ctx.change_aggregate_natural_key(model.id, key)

        if self.run_context(expected, body):
            if model.key is not None and model.key != key:
                del self.keys[model.key]
                self.dropped_keys.add(model.key)
            model.key = key
            self.keys[key] = model.id
            self.dropped_keys.discard(key)
        self.dirty.add(model.id)

    @rule(index=st.integers(0, 1), limit=st.integers(1, 5), ack=st.booleans())
    def poll(self, index: int, limit: int, ack: bool) -> None:
        """Read a batch of a durable subscription; acknowledge it (advance the cursor)
        or not (the next poll must deliver the same events again).

        An engine may hold back events it cannot yet prove gap-free (a batch may be a
        prefix of what is committed), but every committed event must be delivered
        within :attr:`delivery_timeout` seconds.
        """
        model = self.subscriptions[index]
        engine = self.engine
        subscription = engine.get_subscription_by_name(None, model.name)
        assert subscription.last_event_id == model.last_event_id
        matching = [
            e for e in self.log if model.event_types is None or e.event_type in model.event_types
        ]
        expected = [e.as_read() for e in matching[model.acknowledged : model.acknowledged + limit]]
        deadline = time.monotonic() + self.delivery_timeout
        while True:
            batch = engine.get_events_for_subscription(None, subscription, limit)
            self.figures.polls += 1
            read = [read_fields(e) for e in batch]
            _same(read, expected[: len(read)], model.name)
            if len(read) == len(expected) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        _same(read, expected, f"{model.name} after {self.delivery_timeout} s")
        ids = [e.event_id for e in batch]
        assert ids == sorted(set(ids)) and all(i > model.last_event_id for i in ids)
        self.figures.events_checked += len(batch)
        if not (ack and batch):
            return
        engine.advance_subscription_cursor(None, subscription.id, ids[-1], model.owner)
        # Moving a cursor back is ignored, with or without an owner.
        engine.advance_subscription_cursor(None, subscription.id, model.last_event_id)
        model.acknowledged += len(batch)
        model.last_event_id = ids[-1]
        after = engine.get_subscription_by_name(None, model.name)
        assert after.last_event_id == ids[-1]

    # -- checks ---------------------------------------------------------------------
    def check_loaded(self, agg: TallyAggregate, model: ModelAggregate) -> None:
        """A loaded aggregate has the model's id, sequence and state."""
        assert (agg.id, agg.sequence) == (model.id, model.sequence)
        assert agg.state == model.state_at(model.sequence)

    def check_aggregate(self, model: ModelAggregate) -> None:
        """Storage holds exactly what the model expects of one aggregate."""
        with self.store.readonly_context() as ctx:
            state = ctx.load_aggregate_state(self.aggregate_type, model.id)
            snapshot = model.latest_snapshot()
            assert state.natural_key == model.key
            assert state.snapshot == snapshot
            after = snapshot.sequence if snapshot is not None else 0
            expected = [e.as_read() for e in model.events if e.sequence > after]
            _same([read_fields(e) for e in state.events], expected, f"aggregate {model.id}")
            self.figures.events_checked += len(state.events)
            if model.key is not None:
                by_key = ctx.load_aggregate_state_by_key(self.aggregate_type, model.key)
                assert by_key.aggregate_id == model.id
            agg = self.cls()
            ctx.load_state_into(agg, model.id)
            self.check_loaded(agg, model)

    def check_dropped_keys(self) -> None:
        """Keys given up (or never committed) are found nowhere."""
        engine = self.engine
        type_id = engine.get_aggregate_type_id(None, self.aggregate_type)
        for key in self.dropped_keys:
            with pytest.raises(NotFoundError):
                engine.get_aggregate_by_key(None, type_id, key)

    @invariant()
    def storage_matches_model(self) -> None:
        """After each step, every aggregate the step touched reads back as modelled."""
        for aggregate_id in sorted(self.dirty):
            self.check_aggregate(self.aggregates[aggregate_id])
        self.dirty.clear()

    def teardown(self) -> None:
        """At the end of an example: a full check of every aggregate and key."""
        for model in self.aggregates.values():
            self.check_aggregate(model)
        self.check_dropped_keys()
        for model_sub in self.subscriptions:
            self.engine.release_subscription(None, model_sub.name, model_sub.owner)


def _is_expected(exc: Exception, expected: type[Exception]) -> bool:
    # A ConcurrencyError is a ConstraintViolationError; a duplicate key must not be one.
    if isinstance(exc, ConcurrencyError) and expected is not ConcurrencyError:
        return False
    return isinstance(exc, expected)


def _same(actual: object, expected: object, what: str) -> None:
    if actual != expected:
        raise AssertionError(f"{what}: read {actual!r}, the model expects {expected!r}")


def _name(expected: type[Exception] | None) -> str:
    return "success" if expected is None else expected.__name__


def model_settings(examples: int = 200, steps: int = 12) -> settings:
    """Hypothesis settings of the model test: ``examples`` examples of at most ``steps``
    steps, unless ``EVERCORE_RELIABILITY_EXAMPLES`` / ``EVERCORE_RELIABILITY_STEPS``
    say otherwise."""
    return settings(
        max_examples=_env_int("EVERCORE_RELIABILITY_EXAMPLES", examples),
        stateful_step_count=_env_int("EVERCORE_RELIABILITY_STEPS", steps),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
    )


class _EngineFixture:
    """The ``engine`` fixture every suite needs; subclasses override it."""

    @pytest.fixture
    def engine(self) -> Iterator[StorageEngine]:
        """Override in the subclass: yield a fresh, empty engine per test."""
        raise NotImplementedError(
            f"{type(self).__name__} must define an `engine` fixture yielding a fresh engine"
        )
        yield  # pragma: no cover - makes this a generator fixture like the overrides


class ModelBasedReliability(_EngineFixture):
    """Mix-in: the facade on ``engine`` behaves exactly like the reference model.

    ``examples`` and ``steps`` size the run (a soak subclass raises them); the
    environment variables of :func:`model_settings` override both.
    """

    examples: ClassVar[int] = 200
    steps: ClassVar[int] = 12

    def test_model_based_contexts_and_subscriptions(self, engine: StorageEngine) -> None:
        figures = ModelFigures()
        machine = type(
            "StoreMachineOnEngine", (StoreMachine,), {"engine": engine, "figures": figures}
        )
        started = time.monotonic()
        run_state_machine_as_test(machine, settings=model_settings(self.examples, self.steps))
        record_figures(
            "model-based contexts and subscriptions"
            + (f" (soak, {self.examples} x {self.steps})" if self.examples > 200 else ""),
            backend_label(engine),
            examples=figures.examples,
            operations=figures.steps + figures.polls,
            contexts_committed=figures.contexts_committed,
            contexts_refused=figures.contexts_refused,
            events_written=figures.events_written,
            events_checked=figures.events_checked,
            lost=0,
            duplicates=0,
            seconds=round(time.monotonic() - started, 1),
        )


# ------------------------------------------------------------ concurrency stress --
def _append_with_retry(store: EventStore, cls: type[TallyAggregate], aggregate_id: int) -> int:
    """Read-modify-append one event the optimistic way: load the aggregate in one
    context, write from the loaded copy in another, and on ``ConcurrencyError`` reload
    and try again. Returns how many conflicts it met."""
    conflicts = 0
    while True:
        agg = cls()
        with store.readonly_context() as reading:
            reading.load_state_into(agg, aggregate_id)
        time.sleep(random.random() / 1000)  # widen the race window a little
        try:
            with store.context() as ctx:
                ctx.apply_event_to(agg, TallyChanged(amount=agg.state.amount + 1))
        except ConcurrencyError:
            conflicts += 1
            continue
        return conflicts


def check_tallies(
    store: EventStore, cls: type[TallyAggregate], acknowledged: dict[int, int]
) -> int:
    """Each aggregate holds exactly its acknowledged appends as sequences 1..N, and its
    amount is N (no append was based on a stale read). Returns the events checked."""
    checked = 0
    for aggregate_id, count in acknowledged.items():
        events = store.storage_engine.get_events_for_aggregate(None, aggregate_id, 0)
        assert [e.sequence for e in events] == list(range(1, count + 1)), aggregate_id
        agg = cls()
        with store.readonly_context() as ctx:
            ctx.load_state_into(agg, aggregate_id)
        assert agg.state.amount == count, "an append was based on a stale read"
        checked += len(events)
    return checked


def append_from_process(
    uri: str, aggregate_type: str, ids: list[int], appends: int, start_at: float, seed: int
) -> tuple[dict[int, int], int]:
    """A process doing ``appends`` read-modify-appends on the shared aggregates ``ids``
    (starting at wall-clock time ``start_at``, so that processes overlap). Returns the
    acknowledged appends per aggregate and the conflicts met."""
    rng = random.Random(seed)
    cls = tally_class(aggregate_type)
    acknowledged = dict.fromkeys(ids, 0)
    conflicts = 0
    with connect(uri) as store:
        time.sleep(max(0.0, start_at - time.time()))
        for _ in range(appends):
            aggregate_id = rng.choice(ids)
            conflicts += _append_with_retry(store, cls, aggregate_id)
            acknowledged[aggregate_id] += 1
    return acknowledged, conflicts


class ConcurrencyStress(_EngineFixture):
    """Mix-in: several threads read-modify-append the same few aggregates."""

    threads: ClassVar[int] = 4
    aggregates: ClassVar[int] = 3
    appends_per_thread: ClassVar[int] = 100

    def test_read_modify_append_from_threads_loses_nothing(self, engine: StorageEngine) -> None:
        """Final sequences are 1..N without gap or duplicate, N is the number of
        acknowledged appends, each append saw the previous one (amount == N), and the
        threads really raced (conflicts > 0)."""
        store = EventStore(engine)
        cls = tally_class(f"stress{uuid.uuid4().hex[:8]}.Tally")
        ids = [
            store.in_context(lambda ctx: ctx.new_aggregate_id(cls.aggregate_type))
            for _ in range(self.aggregates)
        ]
        acknowledged = {aggregate_id: 0 for aggregate_id in ids}
        conflicts = 0
        lock = threading.Lock()
        start = threading.Barrier(self.threads)
        errors: list[BaseException] = []

        def worker(seed: int) -> None:
            nonlocal conflicts
            rng = random.Random(seed)
            start.wait()
            try:
                for _ in range(self.appends_per_thread):
                    aggregate_id = rng.choice(ids)
                    met = _append_with_retry(store, cls, aggregate_id)
                    with lock:
                        acknowledged[aggregate_id] += 1
                        conflicts += met
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        started = time.monotonic()
        workers = [threading.Thread(target=worker, args=(n,)) for n in range(self.threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(timeout=120)
        assert not any(t.is_alive() for t in workers), "a worker is still running after 120 s"
        assert not errors, errors
        checked = check_tallies(store, cls, acknowledged)
        assert sum(acknowledged.values()) == self.threads * self.appends_per_thread
        assert conflicts > 0, "the writers never conflicted: the test did not race"
        record_figures(
            "threads read-modify-append",
            backend_label(engine),
            operations=self.threads * self.appends_per_thread + conflicts,
            conflicts=conflicts,
            events_checked=checked,
            lost=0,
            duplicates=0,
            seconds=round(time.monotonic() - started, 1),
        )


def write_from_process(
    uri: str, aggregate_type: str, contexts: int, seed: int
) -> list[tuple[int, int]]:
    """A writer process: open the store at ``uri`` and run ``contexts`` contexts, each
    appending one to three events to one or two of its own aggregates (new ones now and
    then). Returns the acknowledged (aggregate id, sequence) pairs."""
    rng = random.Random(seed)
    cls = tally_class(aggregate_type)
    acknowledged: list[tuple[int, int]] = []
    with connect(uri) as store:
        mine: list[int] = []
        for n in range(contexts):
            pending: list[tuple[int, int]] = []
            with store.context() as ctx:
                if not mine or rng.random() < 0.2:
                    mine.append(ctx.new_aggregate_id(aggregate_type))
                for aggregate_id in rng.sample(mine, min(len(mine), rng.choice((1, 2)))):
                    agg = cls()
                    ctx.load_state_into(agg, aggregate_id)
                    for _ in range(rng.randint(1, 3)):
                        ctx.apply_event_to(agg, TallyChanged(amount=n, note=f"p{seed}"))
                        pending.append((aggregate_id, agg.sequence))
            acknowledged.extend(pending)
    return acknowledged


class MultiProcessStress(_EngineFixture):
    """Mix-in: writer processes append while a durable subscription reads small batches.

    Needs an ``engine_uri`` fixture besides ``engine``: a URI of the same store that
    each writer process opens itself. Not for per-process backends such as memory.
    """

    processes: ClassVar[int] = 3
    contexts_per_process: ClassVar[int] = 150
    batch_size: ClassVar[int] = 7
    appends_per_process: ClassVar[int] = 60

    @pytest.fixture
    def engine_uri(self) -> str:
        """Override in the subclass: the URI of the store ``engine`` is open on."""
        raise NotImplementedError(f"{type(self).__name__} must define an `engine_uri` fixture")

    def test_read_modify_append_from_processes_loses_nothing(
        self, engine: StorageEngine, engine_uri: str
    ) -> None:
        """Processes (each with its own engine on the store) race read-modify-append on
        three shared aggregates: sequences 1..N, N = acknowledged, no lost update,
        conflicts > 0."""
        store = EventStore(engine)
        cls = tally_class(f"mpstress{uuid.uuid4().hex[:8]}.Tally")
        with store.context() as ctx:
            ids = [ctx.new_aggregate_id(cls.aggregate_type) for _ in range(3)]
        started = time.monotonic()
        start_at = time.time() + 3.0  # after every process has started and connected
        with multiprocessing.get_context("spawn").Pool(self.processes) as pool:
            results = pool.starmap(
                append_from_process,
                [
                    (engine_uri, cls.aggregate_type, ids, self.appends_per_process, start_at, n)
                    for n in range(self.processes)
                ],
            )
        acknowledged = dict.fromkeys(ids, 0)
        for per_aggregate, _ in results:
            for aggregate_id, count in per_aggregate.items():
                acknowledged[aggregate_id] += count
        conflicts = sum(met for _, met in results)
        checked = check_tallies(store, cls, acknowledged)
        assert sum(acknowledged.values()) == self.processes * self.appends_per_process
        assert conflicts > 0, "the processes never conflicted: the test did not race"
        record_figures(
            "processes read-modify-append",
            backend_label(engine),
            operations=self.processes * self.appends_per_process + conflicts,
            processes=self.processes,
            conflicts=conflicts,
            events_checked=checked,
            lost=0,
            duplicates=0,
            seconds=round(time.monotonic() - started, 1),
        )

    def test_writer_processes_and_a_subscriber(
        self, engine: StorageEngine, engine_uri: str
    ) -> None:
        """Delivered equals stored, no duplicates (the handler never fails), and each
        aggregate's events arrive in sequence order."""
        store = EventStore(engine)
        aggregate_type = f"mp{uuid.uuid4().hex[:8]}.Tally"
        delivered: list[SerializedEvent] = []
        stop = threading.Event()
        failures: list[BaseException] = []

        def handler(batch: list[SerializedEvent]) -> None:
            assert len(batch) <= self.batch_size
            delivered.extend(batch)

        def subscriber() -> None:
            try:
                store.run_subscription(
                    f"{aggregate_type}.reader",
                    SubscriptionFilter(aggregate_type=aggregate_type),
                    StartFrom.beginning(),
                    SubscriptionOptions(batch_size=self.batch_size, poll_interval=0.05, lease=30),
                    handler,
                    stop=stop,
                )
            except BaseException as exc:
                failures.append(exc)

        started = time.monotonic()
        reader = threading.Thread(target=subscriber)
        reader.start()
        spawn = multiprocessing.get_context("spawn")
        try:
            with spawn.Pool(self.processes) as pool:
                reports = pool.starmap(
                    write_from_process,
                    [
                        (engine_uri, aggregate_type, self.contexts_per_process, seed)
                        for seed in range(self.processes)
                    ],
                )
            stored = sorted(pair for report in reports for pair in report)
            deadline = time.monotonic() + 60
            while len(delivered) < len(stored) and time.monotonic() < deadline and not failures:
                time.sleep(0.05)
            time.sleep(0.2)  # anything delivered beyond the stored events shows up too
        finally:
            stop.set()
            reader.join(timeout=30)
        assert not failures, failures
        ids = [e.event_id for e in delivered]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), "duplicate or unordered delivery"
        pairs = [(e.aggregate_id, e.sequence) for e in delivered]
        assert sorted(pairs) == stored, "delivered differs from what the writers acknowledged"
        by_aggregate: dict[int, list[int]] = {}
        for aggregate_id, sequence in pairs:
            by_aggregate.setdefault(aggregate_id, []).append(sequence)
        for aggregate_id, sequences in by_aggregate.items():
            assert sequences == list(range(1, len(sequences) + 1)), aggregate_id
            stored_events = engine.get_events_for_aggregate(None, aggregate_id, 0)
            assert [e.sequence for e in stored_events] == sequences
        record_figures(
            "writer processes + subscriber",
            backend_label(engine),
            operations=self.processes * self.contexts_per_process,
            processes=self.processes,
            batch_size=self.batch_size,
            events_checked=len(delivered),
            lost=0,
            duplicates=0,
            seconds=round(time.monotonic() - started, 1),
        )


# ------------------------------------------------------------------ hostile input --
HOSTILE_INPUT = "hostile input refused before any write"
"""The figures of :class:`HostileInputRefusal` are recorded as ``"<this>: <kind>"``."""


class RecordingEngine:
    """Wraps an engine and counts ``write_state`` calls, to prove a refusal came
    before the engine was asked to write anything."""

    def __init__(self, engine: StorageEngine) -> None:
        self.engine = engine
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    @property
    def max_key_length(self) -> int:
        """The wrapped engine's key limit."""
        return self.engine.max_key_length

    def write_state(self, tx: Any, events: Sequence[Any], snapshots: Sequence[Any]) -> None:
        """Count the call, then write."""
        self.writes += 1
        self.engine.write_state(tx, events, snapshots)


@dataclass
class Note:
    """A payload with one free-form value, for hostile payloads."""

    value: Any = None


def _nested(depth: int) -> list[Any]:
    """A list nested ``depth`` levels deep, built without recursion."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def _create_with_key(ctx: EventStoreContext, key: Any) -> int:
    return ctx.new_aggregate_id_with_key("Hostile", key)


def _load_or_create(ctx: EventStoreContext, key: Any) -> bool:
    return ctx.load_or_create_aggregate(tally_class("Hostile")(), key)


def _change_key(ctx: EventStoreContext, aggregate_id: int, key: Any) -> None:
    ctx.change_aggregate_natural_key(aggregate_id, key)


def _publish(ctx: EventStoreContext, event: SerializedEvent) -> None:
    ctx.publish(event)


def _apply_loaded(ctx: EventStoreContext, aggregate_id: int, payload: object) -> None:
    agg = tally_class("Hostile")()
    ctx.load_state_into(agg, aggregate_id)
    ctx.apply_event_to(agg, StateEvent(payload))


class HostileInputRefusal(_EngineFixture):
    """Mix-in: hostile or mistaken input is refused with a typed error naming the value,
    before the engine writes anything, and valid input at each limit is accepted."""

    def _setup(self, engine: StorageEngine) -> tuple[EventStore, RecordingEngine, int]:
        recorder = RecordingEngine(engine)
        store = EventStore(recorder)
        aggregate_id = store.in_context(lambda ctx: ctx.new_aggregate_id("Hostile"))
        recorder.writes = 0
        return store, recorder, aggregate_id

    def _refused(
        self,
        store: EventStore,
        recorder: RecordingEngine,
        error: type[Exception],
        body: Callable[[EventStoreContext], object],
        names: str = "",
    ) -> Exception:
        """Run ``body`` in a context; it must raise ``error`` (mentioning ``names``)
        without a single ``write_state`` call."""
        with pytest.raises(error) as caught, store.context() as ctx:
            body(ctx)
        assert recorder.writes == 0, "the engine was asked to write"
        assert names in str(caught.value), f"{caught.value} does not name {names!r}"
        return caught.value

    def _record(self, engine: StorageEngine, kind: str, tried: int) -> None:
        record_figures(
            f"{HOSTILE_INPUT}: {kind}",
            backend_label(engine),
            operations=tried,
            refused=tried,
            written=0,
            lost=0,
        )

    def test_bad_natural_keys_are_refused(self, engine: StorageEngine) -> None:
        store, recorder, aggregate_id = self._setup(engine)
        bad: list[tuple[object, type[Exception], str]] = [
            ("k" * 65, KeyTooLongError, "k" * 60),
            ("é" * 65, KeyTooLongError, "é" * 60),
            ("x" * 1_000_000, KeyTooLongError, "x" * 60),
            ("nul\x00key", InvalidKeyError, "nul"),
            ("lone\ud800", InvalidKeyError, "lone"),
            ("", InvalidKeyError, "empty"),
            (b"bytes-key", InvalidKeyError, "bytes"),
        ]
        tried = 0
        for key, error, names in bad:
            actions: list[Callable[[EventStoreContext], object]] = [
                partial(_create_with_key, key=key),
                partial(_load_or_create, key=key),
                partial(_change_key, aggregate_id=aggregate_id, key=key),
            ]
            for action in actions:
                self._refused(store, recorder, error, action, names)
                tried += 1
        with store.readonly_context() as ctx:
            assert ctx.load_aggregate_state("Hostile", aggregate_id).natural_key is None
        self._record(engine, "keys", tried)

    def test_keys_at_the_limit_are_accepted(self, engine: StorageEngine) -> None:
        store, _, _ = self._setup(engine)
        for key in ("k" * 64, "é" * 64, "日" * 64, "🙂" * 64):
            created = store.in_context(partial(_create_with_key, key=key))
            with store.readonly_context() as ctx:
                assert ctx.load_aggregate_state_by_key("Hostile", key).aggregate_id == created

    def test_oversized_payloads_are_refused(self, engine: StorageEngine) -> None:
        from evercore import limits

        store, recorder, aggregate_id = self._setup(engine)
        over = limits.MAX_PAYLOAD_BYTES + 1
        when = datetime(2024, 1, 1, tzinfo=timezone.utc)
        big = SerializedEvent(0, aggregate_id, "Note", '"' + "x" * (over - 2) + '"', 1, "", when)
        self._refused(store, recorder, LimitExceededError, lambda c: c.publish(big), f"{over:,}")
        wide = SerializedEvent(0, aggregate_id, "Note", '"' + "é" * (over // 2) + '"', 1, "", when)
        self._refused(store, recorder, LimitExceededError, lambda c: c.publish(wide), "bytes")

        huge_object = partial(_apply_loaded, aggregate_id=aggregate_id, payload=Note("y" * over))
        self._refused(store, recorder, LimitExceededError, huge_object, "sequence 1")
        snapshot = Snapshot(aggregate_id, "s" * (limits.MAX_SNAPSHOT_BYTES + 1), 1)
        self._refused(store, recorder, LimitExceededError, lambda c: c.save_snapshot(snapshot))
        self._record(engine, "oversized payloads", 4)

    def test_a_payload_of_exactly_the_limit_is_stored_exactly(self, engine: StorageEngine) -> None:
        from evercore import limits

        store, _, aggregate_id = self._setup(engine)
        state = '"' + "é" * ((limits.MAX_PAYLOAD_BYTES - 2) // 2) + '"'
        assert len(state.encode()) == limits.MAX_PAYLOAD_BYTES
        when = datetime(2024, 1, 1, tzinfo=timezone.utc)
        store.with_context(
            lambda c: c.publish(SerializedEvent(0, aggregate_id, "Note", state, 1, "", when))
        )
        (stored,) = engine.get_events_for_aggregate(None, aggregate_id, 0)
        assert stored.state == state

    def test_deep_nesting_and_cycles_are_refused_without_recursion_error(
        self, engine: StorageEngine
    ) -> None:
        from evercore import limits

        store, recorder, aggregate_id = self._setup(engine)
        cycle: list[Any] = []
        cycle.append(cycle)
        hostile = [_nested(limits.MAX_JSON_NESTING + 10), _nested(200_000), cycle]
        for value in hostile:
            apply = partial(_apply_loaded, aggregate_id=aggregate_id, payload=Note(value))
            error = self._refused(store, recorder, SerializationError, apply, "nested")
            assert not isinstance(error, RecursionError)
        fine = Note(_nested(limits.MAX_JSON_NESTING - 10))
        store.with_context(partial(_apply_loaded, aggregate_id=aggregate_id, payload=fine))
        self._record(engine, "deep or cyclic payloads", len(hostile))

    def test_nan_and_infinity_are_refused(self, engine: StorageEngine) -> None:
        store, recorder, aggregate_id = self._setup(engine)
        values = [float("nan"), float("inf"), float("-inf"), {"deep": [1.0, float("nan")]}]
        for value in values:
            self._refused(
                store,
                recorder,
                SerializationError,
                partial(_apply_loaded, aggregate_id=aggregate_id, payload=Note(value)),
                "$.value",
            )
        self._record(engine, "NaN and Infinity", len(values))

    def test_batches_over_the_limit_are_refused(self, engine: StorageEngine) -> None:
        from evercore import limits

        store, recorder, aggregate_id = self._setup(engine)
        when = datetime(2024, 1, 1, tzinfo=timezone.utc)
        count = limits.MAX_EVENTS_PER_CONTEXT + 1

        def flood(ctx: EventStoreContext) -> None:
            for sequence in range(1, count + 1):
                ctx.publish(SerializedEvent(0, aggregate_id, "Note", "{}", sequence, "", when))

        self._refused(store, recorder, LimitExceededError, flood, f"{count:,}")
        assert engine.get_events_for_aggregate(None, aggregate_id, 0) == []
        self._record(engine, "batch over the limit", 1)

    def test_text_no_backend_can_store_is_refused(self, engine: StorageEngine) -> None:
        from evercore import limits

        store, recorder, aggregate_id = self._setup(engine)
        when = datetime(2024, 1, 1, tzinfo=timezone.utc)

        def event(**fields: Any) -> SerializedEvent:
            base = SerializedEvent(0, aggregate_id, "Note", "{}", 1, "", when)
            return base._replace(**fields)

        bad = [
            (event(state='{"a":"\x00"}'), "NUL"),
            (event(state='"\udc80"'), "surrogate"),
            (event(reference="ref\x00"), "NUL"),
            (event(reference="r" * (limits.MAX_REFERENCE_LENGTH + 1)), "4,096"),
            (event(event_type=""), "''"),
            (event(event_type="T" * (limits.MAX_TYPE_NAME_LENGTH + 1)), "255"),
            (event(event_type="Type\x00"), "NUL"),
            (event(event_type="Type\ud800"), "surrogate"),
        ]
        for hostile, names in bad:
            self._refused(
                store, recorder, LimitExceededError, partial(_publish, event=hostile), names
            )
        assert engine.get_events_for_aggregate(None, aggregate_id, 0) == []
        self._record(engine, "unstorable text", len(bad))

    def test_ids_sequences_and_references_of_the_wrong_type_or_range_are_refused(
        self, engine: StorageEngine
    ) -> None:
        store, recorder, aggregate_id = self._setup(engine)
        when = datetime(2024, 1, 1, tzinfo=timezone.utc)
        base = SerializedEvent(0, aggregate_id, "Note", "{}", 1, "", when)
        # Wrong types on purpose: what a caller without a type checker may pass.
        bad: list[tuple[SerializedEvent, str]] = [
            (base._replace(sequence=2**63), "64-bit"),
            (base._replace(aggregate_id=2**70), "64-bit"),
            (base._replace(aggregate_id=-(2**63) - 1), "64-bit"),
            (base._replace(sequence=1.5), "1.5"),  # type: ignore[arg-type]
            (base._replace(sequence="1"), "'1'"),  # type: ignore[arg-type]
            (base._replace(sequence=True), "True"),
            (base._replace(aggregate_id=None), "None"),  # type: ignore[arg-type]
            (base._replace(reference=None), "None"),  # type: ignore[arg-type]
            (base._replace(reference=b"ref"), "b'ref'"),  # type: ignore[arg-type]
        ]
        for hostile, names in bad:
            self._refused(
                store, recorder, LimitExceededError, partial(_publish, event=hostile), names
            )
        snapshot = Snapshot(aggregate_id, "{}", 2**64)
        self._refused(store, recorder, LimitExceededError, lambda c: c.save_snapshot(snapshot))
        self._record(engine, "ids, sequences, references of a wrong type or range", len(bad) + 1)
