"""The storage-engine conformance suite: every SPI test evercore runs on its own engines.

A backend author runs it against their engine by subclassing
:class:`StorageEngineConformance` in a pytest module and providing an ``engine``
fixture that yields a fresh, empty engine for each test::

    import pytest
    from evercore.testing import StorageEngineConformance
    from my_backend import open_my_engine

    class TestMyEngine(StorageEngineConformance):
        @pytest.fixture
        def engine(self):
            eng = open_my_engine("mydb://localhost/test_db")  # empty, migrated
            yield eng
            eng.close()  # and drop the test database or key prefix

pytest collects every ``test_*`` method on the subclass. The tests use the SPI
directly (no facade) and check each rule of ``evercore.spi``: type and aggregate
ids, natural keys (uniqueness across aggregate types, ``max_key_length``, invalid
keys), lookups (missing and wrong type raise ``NotFoundError``), events and
snapshots (latest snapshot wins, opaque ``state`` kept byte for byte, times
round-trip to the microsecond as aware UTC), transactions (rollback discards
everything, reads see the transaction's own writes and not other transactions'
uncommitted ones, a duplicate (aggregate, sequence) raises ``ConcurrencyError``
and writes nothing), durable subscriptions (cursor initialisation for each
``StartFrom`` kind, updates keep the cursor, leases with expiry and fencing) and
subscription reads (type, multi-type and key filters, paging, no gaps under
concurrent writers, max / first-event-id helpers).

Where the SPI docstrings are silent, the suite pins down these choices (the Go
engines' behaviour where they agree with each other, else the stricter one):

* natural keys are unique across aggregate types; ``get_or_create_aggregate_by_key``
  with a key held by another type raises ``ConstraintViolationError``;
* changing the key of a missing aggregate, and writing an event for one, raise
  ``NotFoundError`` naming the id;
* the latest snapshot is the one with the highest sequence;
* events read by aggregate carry their global ``event_id`` too;
* ``claim_subscription`` refuses an inactive subscription, and succeeds for the
  owner already holding the lease (as the SPI says; Go refuses it);
* ``rollback()`` after ``commit()`` is harmless (the Go ``defer tx.Rollback()`` idiom);
* once ``commit()`` (or an autocommit call) returns, every read sees its writes,
  subscription reads and ``get_max_event_id`` included.

Requirements on the engine under test beyond the SPI: it must be safe to use from
several threads (two tests race 8 writers), and each test needs about a second at
most on a local database; the lease tests sleep a few tenths of a second.
Optional capabilities (``SupportsEventWait``, ``SupportsStats``,
``SupportsWriteAndCommit``) are tested when the engine has them and reported as
skipped otherwise.

To override a test that cannot apply to your backend, redefine it in your
subclass; please say why in its docstring.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import pytest

from evercore.errors import (
    ERROR_CONSTRAINT_VIOLATION,
    ERROR_NOT_FOUND,
    ConcurrencyError,
    ConstraintViolationError,
    InvalidKeyError,
    KeyTooLongError,
    NotFoundError,
    StorageEngineError,
    SubscriptionLeaseLost,
)
from evercore.spi import (
    StorageEngine,
    SupportsEventWait,
    SupportsStats,
    SupportsWriteAndCommit,
    Transaction,
)
from evercore.values import (
    START_BEGINNING,
    START_END,
    START_EVENT_ID,
    START_TIMESTAMP,
    SerializedEvent,
    Snapshot,
    StorageEngineEvent,
    Subscription,
)

T0 = datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=timezone.utc)
"""The time of the first event the tests write; later ones add microseconds."""

OPAQUE_STATES = (
    '{"b":1,"a":2}',
    '{ "a" : 1 ,\n\t"b": [1,2 ,3] }  ',
    '{"n":1.0,"m":1e3,"big":12345678901234567890}',
    '{"s":"caf\\u00e9 \\ud83d\\ude00"}',
    '{"s":"café 😀 𝄞 中文 \u2028\u2029"}',
    '{"a":1,"a":2}',
    '{action: "created"}',
    '"just a string"',
    "null",
    "",
)
"""Event and snapshot states an engine must return exactly as written."""


class _Types(NamedTuple):
    """Type ids registered by :func:`_register_types`."""

    user: int
    profile: int
    user_created: int
    user_updated: int
    profile_created: int


def _register_types(engine: StorageEngine) -> _Types:
    with _transaction(engine) as tx:
        return _Types(
            engine.get_aggregate_type_id(tx, "user"),
            engine.get_aggregate_type_id(tx, "profile"),
            engine.get_event_type_id(tx, "user_created"),
            engine.get_event_type_id(tx, "user_updated"),
            engine.get_event_type_id(tx, "profile_created"),
        )


@contextmanager
def _transaction(engine: StorageEngine) -> Iterator[Transaction]:
    """A transaction committed when the block succeeds, rolled back when it raises."""
    tx = engine.get_transaction_info()
    try:
        yield tx
    except BaseException:
        tx.rollback()
        raise
    tx.commit()


def _event(
    aggregate_id: int,
    sequence: int,
    event_type_id: int,
    state: str | None = None,
    event_time: datetime | None = None,
    reference: str = "conformance",
) -> StorageEngineEvent:
    return StorageEngineEvent(
        aggregate_id,
        sequence,
        event_type_id,
        f'{{"seq":{sequence}}}' if state is None else state,
        T0 + timedelta(microseconds=sequence) if event_time is None else event_time,
        reference,
    )


def _new_with_events(
    engine: StorageEngine, type_id: int, event_type_ids: Sequence[int], key: str | None = None
) -> int:
    """Create an aggregate and commit one event per entry of ``event_type_ids``."""
    with _transaction(engine) as tx:
        if key is None:
            aggregate_id = engine.new_aggregate(tx, type_id)
        else:
            aggregate_id = engine.new_aggregate_with_key(tx, type_id, key)
        events = [_event(aggregate_id, i, et) for i, et in enumerate(event_type_ids, start=1)]
        engine.write_state(tx, events, [])
    return aggregate_id


def _reader(**fields: Any) -> Subscription:
    """An ephemeral (not stored) subscription, as the facade builds for ephemeral runs."""
    return Subscription(id=0, name="conformance-ephemeral", **fields)


def _read_all(engine: StorageEngine, subscription: Subscription) -> list[SerializedEvent]:
    """Every event the subscription reads from its cursor on, paging by 1000."""
    events: list[SerializedEvent] = []
    cursor = subscription.last_event_id
    while True:
        batch = engine.get_events_for_subscription(None, _with_cursor(subscription, cursor), 1000)
        if not batch:
            return events
        events.extend(batch)
        cursor = batch[-1].event_id


def _with_cursor(subscription: Subscription, cursor: int) -> Subscription:
    return replace(subscription, last_event_id=cursor)


def _aggregate_missing(engine: StorageEngine, type_id: int, aggregate_id: int) -> bool:
    try:
        engine.get_aggregate_by_id(None, type_id, aggregate_id)
    except NotFoundError:
        return True
    return False


def _key_free(engine: StorageEngine, type_id: int, key: str) -> bool:
    try:
        engine.get_aggregate_by_key(None, type_id, key)
    except NotFoundError:
        return True
    return False


def _as_written(event: StorageEngineEvent, event_type: str) -> tuple[object, ...]:
    """The fields of a read event that must equal what was written (all but the id)."""
    return (
        event.aggregate_id,
        event_type,
        event.state,
        event.sequence,
        event.reference,
        event.event_time,
    )


def _as_read(event: SerializedEvent) -> tuple[object, ...]:
    return (
        event.aggregate_id,
        event.event_type,
        event.state,
        event.sequence,
        event.reference,
        event.event_time,
    )


def _writes_and_commits(engine: StorageEngine) -> SupportsWriteAndCommit:
    if not isinstance(engine, SupportsWriteAndCommit):
        pytest.skip("the engine does not implement SupportsWriteAndCommit")
    return engine


def _assert_finished(tx: Transaction) -> None:
    """``tx`` has ended: rolling back does nothing, committing is refused."""
    tx.rollback()
    with pytest.raises(StorageEngineError):
        tx.commit()
    tx.rollback()


WRITE_AND_COMMIT_SHAPES = {
    "one-event": (1, False),
    "few-events-and-a-snapshot": (3, True),
    "many-events": (100, False),
    "many-events-and-a-snapshot": (100, True),
    "a-snapshot-only": (0, True),
}
"""Batches of (events, with a snapshot) for ``write_state_and_commit``: engines may
write each shape differently (one statement or several)."""


class StorageEngineConformance:
    """Mix-in of pytest tests for one :class:`evercore.spi.StorageEngine`.

    Subclass it as ``Test<Something>`` and override the ``engine`` fixture to yield a
    fresh, empty engine (and clean it up afterwards).
    """

    @pytest.fixture
    def engine(self) -> Iterator[StorageEngine]:
        """Override in the subclass: yield a fresh, empty engine per test."""
        raise NotImplementedError(
            f"{type(self).__name__} must define an `engine` fixture yielding a fresh engine"
        )
        yield  # pragma: no cover - makes this a generator fixture like the overrides

    # ------------------------------------------------------------------ engine --
    def test_engine_satisfies_the_protocol(self, engine: StorageEngine) -> None:
        assert isinstance(engine, StorageEngine)
        tx = engine.get_transaction_info()
        assert isinstance(tx, Transaction)
        tx.rollback()
        assert engine.max_key_length >= 1

    def test_rollback_after_commit_keeps_the_commit(self, engine: StorageEngine) -> None:
        tx = engine.get_transaction_info()
        type_id = engine.get_aggregate_type_id(tx, "user")
        aggregate_id = engine.new_aggregate(tx, type_id)
        tx.commit()
        tx.rollback()  # the Go idiom `defer tx.Rollback()` after a commit
        assert engine.get_aggregate_by_id(None, type_id, aggregate_id) == (aggregate_id, None)

    # ------------------------------------------------------------------- types --
    def test_aggregate_type_ids_are_stable_and_distinct(self, engine: StorageEngine) -> None:
        user = engine.get_aggregate_type_id(None, "user")
        profile = engine.get_aggregate_type_id(None, "profile")
        assert user != profile
        assert engine.get_aggregate_type_id(None, "user") == user
        with _transaction(engine) as tx:
            assert engine.get_aggregate_type_id(tx, "profile") == profile
        assert {(p.id, p.name) for p in engine.get_aggregate_types(None)} == {
            (user, "user"),
            (profile, "profile"),
        }

    def test_event_type_ids_are_stable_and_distinct(self, engine: StorageEngine) -> None:
        names = ["user_created", "user_updated", "profile_created"]
        ids = [engine.get_event_type_id(None, name) for name in names]
        assert len(set(ids)) == 3
        with _transaction(engine) as tx:
            assert [engine.get_event_type_id(tx, name) for name in names] == ids
        assert {(p.id, p.name) for p in engine.get_event_types(None)} == set(
            zip(ids, names, strict=True)
        )

    def test_aggregate_and_event_types_are_separate_namespaces(self, engine: StorageEngine) -> None:
        engine.get_aggregate_type_id(None, "same")
        engine.get_event_type_id(None, "same")
        assert [p.name for p in engine.get_aggregate_types(None)] == ["same"]
        assert [p.name for p in engine.get_event_types(None)] == ["same"]

    def test_types_registered_in_a_rolled_back_transaction_do_not_exist(
        self, engine: StorageEngine
    ) -> None:
        tx = engine.get_transaction_info()
        engine.get_aggregate_type_id(tx, "ghost_aggregate")
        engine.get_event_type_id(tx, "ghost_event")
        assert "ghost_aggregate" in {p.name for p in engine.get_aggregate_types(tx)}
        assert "ghost_event" in {p.name for p in engine.get_event_types(tx)}
        tx.rollback()
        assert engine.get_aggregate_types(None) == []
        assert engine.get_event_types(None) == []

    # -------------------------------------------------------------- aggregates --
    def test_new_aggregate_without_key(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        with _transaction(engine) as tx:
            first = engine.new_aggregate(tx, types.user)
            second = engine.new_aggregate(tx, types.user)
        assert first > 0 and second > 0 and first != second
        assert engine.get_aggregate_by_id(None, types.user, first) == (first, None)
        assert engine.get_aggregate_by_id(None, types.user, second) == (second, None)

    def test_new_aggregate_with_key_is_found_by_id_and_by_key(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        with _transaction(engine) as tx:
            aggregate_id = engine.new_aggregate_with_key(tx, types.user, "chavez")
        assert aggregate_id > 0
        assert engine.get_aggregate_by_id(None, types.user, aggregate_id) == (
            aggregate_id,
            "chavez",
        )
        assert engine.get_aggregate_by_key(None, types.user, "chavez") == aggregate_id

    def test_autocommit_creates_aggregates(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        plain = engine.new_aggregate(None, types.user)
        keyed = engine.new_aggregate_with_key(None, types.user, "auto")
        assert engine.get_aggregate_by_id(None, types.user, plain) == (plain, None)
        assert engine.get_aggregate_by_key(None, types.user, "auto") == keyed

    def test_duplicate_key_is_a_constraint_violation(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        original = engine.new_aggregate_with_key(None, types.user, "chavez")
        for type_id in (types.user, types.profile):  # keys are unique across types
            with (
                pytest.raises(ConstraintViolationError, match="chavez") as caught,
                _transaction(engine) as tx,
            ):
                engine.new_aggregate_with_key(tx, type_id, "chavez")
            assert caught.value.error_type == ERROR_CONSTRAINT_VIOLATION
            assert not isinstance(caught.value, ConcurrencyError)
        assert engine.get_aggregate_by_key(None, types.user, "chavez") == original

    def test_key_of_maximum_length_is_stored(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        limit = engine.max_key_length
        for key in ("K" * limit, "é" * limit, "😀" * limit):
            aggregate_id = engine.new_aggregate_with_key(None, types.user, key)
            assert engine.get_aggregate_by_key(None, types.user, key) == aggregate_id
            assert engine.get_aggregate_by_id(None, types.user, aggregate_id)[1] == key

    def test_key_too_long_is_refused_everywhere(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        existing = engine.new_aggregate_with_key(None, types.user, "short")
        too_long = "K" * (engine.max_key_length + 1)
        with _transaction(engine) as tx:
            with pytest.raises(KeyTooLongError):
                engine.new_aggregate_with_key(tx, types.user, too_long)
            with pytest.raises(KeyTooLongError):
                engine.get_or_create_aggregate_by_key(tx, types.user, too_long)
            with pytest.raises(KeyTooLongError):
                engine.change_aggregate_natural_key(tx, existing, too_long)
        assert engine.get_aggregate_by_id(None, types.user, existing) == (existing, "short")
        assert _key_free(engine, types.user, "K" * engine.max_key_length)

    @pytest.mark.parametrize("key", ["", "nul\x00inside", "lone\ud800surrogate"])
    def test_invalid_key_is_refused_everywhere(self, engine: StorageEngine, key: str) -> None:
        types = _register_types(engine)
        existing = engine.new_aggregate_with_key(None, types.user, "valid")
        with _transaction(engine) as tx:
            with pytest.raises(InvalidKeyError):
                engine.new_aggregate_with_key(tx, types.user, key)
            with pytest.raises(InvalidKeyError):
                engine.get_or_create_aggregate_by_key(tx, types.user, key)
            with pytest.raises(InvalidKeyError):
                engine.change_aggregate_natural_key(tx, existing, key)
        assert engine.get_aggregate_by_id(None, types.user, existing) == (existing, "valid")

    def test_missing_aggregate_id_is_not_found(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        with pytest.raises(NotFoundError, match="99999999") as caught:
            engine.get_aggregate_by_id(None, types.user, 99999999)
        assert caught.value.error_type == ERROR_NOT_FOUND

    def test_aggregate_id_of_another_type_is_not_found(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate(None, types.user)
        with pytest.raises(NotFoundError):
            engine.get_aggregate_by_id(None, types.profile, aggregate_id)

    def test_missing_key_is_not_found(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        with pytest.raises(NotFoundError, match="jjjkkkooo") as caught:
            engine.get_aggregate_by_key(None, types.user, "jjjkkkooo")
        assert caught.value.error_type == ERROR_NOT_FOUND

    def test_key_of_another_type_is_not_found(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        engine.new_aggregate_with_key(None, types.user, "chavez")
        with pytest.raises(NotFoundError):
            engine.get_aggregate_by_key(None, types.profile, "chavez")

    def test_get_or_create_creates_then_finds(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        with _transaction(engine) as tx:
            created, aggregate_id = engine.get_or_create_aggregate_by_key(tx, types.user, "k1")
            assert created and aggregate_id > 0
            assert engine.get_or_create_aggregate_by_key(tx, types.user, "k1") == (
                False,
                aggregate_id,
            )
        assert engine.get_or_create_aggregate_by_key(None, types.user, "k1") == (
            False,
            aggregate_id,
        )
        assert engine.get_aggregate_by_id(None, types.user, aggregate_id) == (aggregate_id, "k1")

    def test_get_or_create_with_maximum_length_key(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        key = "L" * engine.max_key_length
        created, aggregate_id = engine.get_or_create_aggregate_by_key(None, types.user, key)
        assert created
        assert engine.get_aggregate_by_key(None, types.user, key) == aggregate_id

    def test_get_or_create_with_a_key_of_another_type_is_refused(
        self, engine: StorageEngine
    ) -> None:
        types = _register_types(engine)
        owner = engine.new_aggregate_with_key(None, types.user, "shared")
        with pytest.raises(ConstraintViolationError, match="shared"), _transaction(engine) as tx:
            engine.get_or_create_aggregate_by_key(tx, types.profile, "shared")
        assert engine.get_aggregate_by_key(None, types.user, "shared") == owner

    # ------------------------------------------------------------ key changes --
    def test_change_natural_key(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate_with_key(None, types.user, "old")
        with _transaction(engine) as tx:
            engine.change_aggregate_natural_key(tx, aggregate_id, "new")
            assert engine.get_aggregate_by_key(tx, types.user, "new") == aggregate_id
        assert engine.get_aggregate_by_key(None, types.user, "new") == aggregate_id
        assert engine.get_aggregate_by_id(None, types.user, aggregate_id) == (aggregate_id, "new")
        assert _key_free(engine, types.user, "old")
        # The old key is free for another aggregate.
        other = engine.new_aggregate_with_key(None, types.user, "old")
        assert engine.get_aggregate_by_key(None, types.user, "old") == other

    def test_change_natural_key_of_aggregate_created_without_one(
        self, engine: StorageEngine
    ) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate(None, types.user)
        engine.change_aggregate_natural_key(None, aggregate_id, "given-later")
        assert engine.get_aggregate_by_key(None, types.user, "given-later") == aggregate_id
        assert engine.get_aggregate_by_id(None, types.user, aggregate_id) == (
            aggregate_id,
            "given-later",
        )

    def test_change_natural_key_to_its_current_key(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate_with_key(None, types.user, "same")
        engine.change_aggregate_natural_key(None, aggregate_id, "same")
        assert engine.get_aggregate_by_key(None, types.user, "same") == aggregate_id

    def test_change_natural_key_to_a_taken_key_is_refused(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        first = engine.new_aggregate_with_key(None, types.user, "first")
        second = engine.new_aggregate_with_key(None, types.user, "second")
        with pytest.raises(ConstraintViolationError, match="first"), _transaction(engine) as tx:
            engine.change_aggregate_natural_key(tx, second, "first")
        assert engine.get_aggregate_by_key(None, types.user, "first") == first
        assert engine.get_aggregate_by_key(None, types.user, "second") == second

    def test_change_natural_key_of_missing_aggregate_is_not_found(
        self, engine: StorageEngine
    ) -> None:
        _register_types(engine)
        with pytest.raises(NotFoundError, match="99999999"), _transaction(engine) as tx:
            engine.change_aggregate_natural_key(tx, 99999999, "nobody")

    # ------------------------------------------------------ events, snapshots --
    def test_write_state_then_read_events_and_snapshot(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate(None, types.user)
        events = [
            _event(aggregate_id, 1, types.user_created, reference="test_suite"),
            _event(aggregate_id, 2, types.user_updated, reference="test_suite"),
        ]
        snapshots = [Snapshot(aggregate_id, "{initial}", 1), Snapshot(aggregate_id, "{two}", 2)]
        with _transaction(engine) as tx:
            engine.write_state(tx, events, snapshots)
        read = engine.get_events_for_aggregate(None, aggregate_id, 0)
        assert [_as_read(e) for e in read] == [
            _as_written(events[0], "user_created"),
            _as_written(events[1], "user_updated"),
        ]
        assert 0 < read[0].event_id < read[1].event_id
        assert engine.get_snapshot_for_aggregate(None, aggregate_id) == snapshots[1]

    def test_latest_snapshot_wins_across_commits(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = _new_with_events(engine, types.user, [types.user_created] * 3)
        engine.write_state(None, [], [Snapshot(aggregate_id, "at-1", 1)])
        engine.write_state(None, [], [Snapshot(aggregate_id, "at-3", 3)])
        assert engine.get_snapshot_for_aggregate(None, aggregate_id) == Snapshot(
            aggregate_id, "at-3", 3
        )

    def test_missing_snapshot_is_none(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = _new_with_events(engine, types.user, [types.user_created])
        assert engine.get_snapshot_for_aggregate(None, aggregate_id) is None
        assert engine.get_snapshot_for_aggregate(None, 99999999) is None

    def test_events_after_a_sequence(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = _new_with_events(engine, types.user, [types.user_created] * 5)
        assert [e.sequence for e in engine.get_events_for_aggregate(None, aggregate_id, 0)] == [
            1,
            2,
            3,
            4,
            5,
        ]
        assert [e.sequence for e in engine.get_events_for_aggregate(None, aggregate_id, 3)] == [
            4,
            5,
        ]
        assert engine.get_events_for_aggregate(None, aggregate_id, 5) == []

    def test_aggregate_without_events_has_none(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate(None, types.user)
        assert engine.get_events_for_aggregate(None, aggregate_id, 0) == []

    def test_events_of_interleaved_aggregates_stay_apart(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        first = engine.new_aggregate(None, types.user)
        second = engine.new_aggregate(None, types.profile)
        for sequence in (1, 2, 3):
            engine.write_state(
                None,
                [
                    _event(first, sequence, types.user_created, state=f"first-{sequence}"),
                    _event(second, sequence, types.profile_created, state=f"second-{sequence}"),
                ],
                [],
            )
        assert [e.state for e in engine.get_events_for_aggregate(None, first, 0)] == [
            "first-1",
            "first-2",
            "first-3",
        ]
        assert [e.state for e in engine.get_events_for_aggregate(None, second, 1)] == [
            "second-2",
            "second-3",
        ]

    def test_snapshot_and_events_after_it_rebuild_an_aggregate(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = _new_with_events(engine, types.user, [types.user_created] * 4)
        engine.write_state(None, [_event(aggregate_id, 5, types.user_updated)], [
            Snapshot(aggregate_id, "state-at-3", 3)
        ])  # fmt: skip
        snapshot = engine.get_snapshot_for_aggregate(None, aggregate_id)
        assert snapshot is not None and snapshot.sequence == 3
        after = engine.get_events_for_aggregate(None, aggregate_id, snapshot.sequence)
        assert [e.sequence for e in after] == [4, 5]

    def test_state_and_reference_are_stored_byte_exact(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate(None, types.user)
        reference = "ref ✓ 😀 \t end "
        events = [
            _event(aggregate_id, i, types.user_created, state=state, reference=reference)
            for i, state in enumerate(OPAQUE_STATES, start=1)
        ]
        engine.write_state(None, events, [Snapshot(aggregate_id, OPAQUE_STATES[1], 2)])
        read = engine.get_events_for_aggregate(None, aggregate_id, 0)
        assert [e.state for e in read] == list(OPAQUE_STATES)
        assert {e.reference for e in read} == {reference}
        via_log = _read_all(engine, _reader())
        assert [e.state for e in via_log] == list(OPAQUE_STATES)
        snapshot = engine.get_snapshot_for_aggregate(None, aggregate_id)
        assert snapshot is not None and snapshot.state == OPAQUE_STATES[1]
        for state in OPAQUE_STATES:
            engine.write_state(None, [], [Snapshot(aggregate_id, state, 100)])
            snapshot = engine.get_snapshot_for_aggregate(None, aggregate_id)
            assert snapshot is not None and snapshot.state == state

    def test_event_times_round_trip_exactly_as_aware_utc(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate(None, types.user)
        plus_five_thirty = timezone(timedelta(hours=5, minutes=30))
        written = [
            datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone.utc),
            datetime(1999, 12, 31, 0, 0, 0, 1, tzinfo=timezone.utc),
            datetime(2024, 6, 1, 12, 0, 0, 500001, tzinfo=plus_five_thirty),
            datetime(2038, 1, 19, 3, 14, 8, 654321, tzinfo=timezone.utc),
        ]
        engine.write_state(
            None,
            [
                _event(aggregate_id, i, types.user_created, event_time=moment)
                for i, moment in enumerate(written, start=1)
            ],
            [],
        )
        for read in (
            engine.get_events_for_aggregate(None, aggregate_id, 0),
            _read_all(engine, _reader()),
        ):
            assert [e.event_time for e in read] == written
            for event in read:
                assert event.event_time.utcoffset() == timedelta(0)
                assert event.event_time.tzinfo is not None

    def test_event_ids_increase_across_commits(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        first = _new_with_events(engine, types.user, [types.user_created] * 2)
        second = _new_with_events(engine, types.user, [types.user_created] * 2)
        ids = [e.event_id for e in engine.get_events_for_aggregate(None, first, 0)]
        ids += [e.event_id for e in engine.get_events_for_aggregate(None, second, 0)]
        assert ids == sorted(ids) and len(set(ids)) == 4 and ids[0] > 0
        assert [e.event_id for e in _read_all(engine, _reader())] == ids

    def test_event_for_a_missing_aggregate_is_not_found(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        good = engine.new_aggregate(None, types.user)
        with pytest.raises(NotFoundError, match="99999999"), _transaction(engine) as tx:
            engine.write_state(
                tx,
                [_event(good, 1, types.user_created), _event(99999999, 1, types.user_created)],
                [],
            )
        assert engine.get_events_for_aggregate(None, good, 0) == []
        assert engine.get_max_event_id(None) == 0

    def test_writing_nothing_is_harmless(self, engine: StorageEngine) -> None:
        with _transaction(engine) as tx:
            engine.write_state(tx, [], [])
        engine.write_state(None, [], [])
        assert engine.get_max_event_id(None) == 0

    # ------------------------------------------------------------ transactions --
    def test_rollback_discards_every_write(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        existing = _new_with_events(engine, types.user, [types.user_created], key="kept")
        tx = engine.get_transaction_info()
        new_type = engine.get_aggregate_type_id(tx, "rolled_back_type")
        new_event_type = engine.get_event_type_id(tx, "rolled_back_event")
        plain = engine.new_aggregate(tx, types.user)
        keyed = engine.new_aggregate_with_key(tx, types.user, "ghost")
        _, created = engine.get_or_create_aggregate_by_key(tx, new_type, "ghost-2")
        engine.change_aggregate_natural_key(tx, existing, "renamed")
        engine.write_state(
            tx,
            [
                _event(existing, 2, types.user_updated),
                _event(plain, 1, new_event_type),
                _event(keyed, 1, types.user_created),
            ],
            [Snapshot(existing, "rolled back", 2), Snapshot(plain, "rolled back", 1)],
        )
        tx.rollback()
        for aggregate_id in (plain, keyed):
            assert _aggregate_missing(engine, types.user, aggregate_id)
            assert engine.get_events_for_aggregate(None, aggregate_id, 0) == []
            assert engine.get_snapshot_for_aggregate(None, aggregate_id) is None
        assert _aggregate_missing(engine, new_type, created)
        assert _key_free(engine, types.user, "ghost")
        assert _key_free(engine, types.user, "renamed")
        assert engine.get_aggregate_by_key(None, types.user, "kept") == existing
        assert [e.sequence for e in engine.get_events_for_aggregate(None, existing, 0)] == [1]
        assert engine.get_snapshot_for_aggregate(None, existing) is None
        assert "rolled_back_type" not in {p.name for p in engine.get_aggregate_types(None)}
        assert "rolled_back_event" not in {p.name for p in engine.get_event_types(None)}
        assert engine.get_max_event_id(None) == 1

    def test_reads_in_a_transaction_see_its_own_writes(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        existing = engine.new_aggregate_with_key(None, types.user, "before")
        with _transaction(engine) as tx:
            new_type = engine.get_aggregate_type_id(tx, "fresh_type")
            assert (new_type, "fresh_type") in engine.get_aggregate_types(tx)
            keyed = engine.new_aggregate_with_key(tx, new_type, "fresh")
            assert engine.get_aggregate_by_id(tx, new_type, keyed) == (keyed, "fresh")
            assert engine.get_aggregate_by_key(tx, new_type, "fresh") == keyed
            assert engine.get_or_create_aggregate_by_key(tx, new_type, "fresh") == (False, keyed)
            engine.change_aggregate_natural_key(tx, existing, "after")
            assert engine.get_aggregate_by_key(tx, types.user, "after") == existing
            with pytest.raises(NotFoundError):
                engine.get_aggregate_by_key(tx, types.user, "before")
            engine.write_state(
                tx,
                [_event(keyed, 1, types.user_created), _event(keyed, 2, types.user_updated)],
                [Snapshot(keyed, "snap", 1)],
            )
            seen = engine.get_events_for_aggregate(tx, keyed, 0)
            assert [(e.sequence, e.event_type) for e in seen] == [
                (1, "user_created"),
                (2, "user_updated"),
            ]
            assert engine.get_snapshot_for_aggregate(tx, keyed) == Snapshot(keyed, "snap", 1)
        assert len(engine.get_events_for_aggregate(None, keyed, 0)) == 2

    def test_uncommitted_writes_are_invisible_outside_the_transaction(
        self, engine: StorageEngine
    ) -> None:
        types = _register_types(engine)
        existing = engine.new_aggregate_with_key(None, types.user, "visible")
        tx = engine.get_transaction_info()
        try:
            hidden = engine.new_aggregate_with_key(tx, types.user, "hidden")
            engine.change_aggregate_natural_key(tx, existing, "renamed")
            engine.write_state(
                tx, [_event(existing, 1, types.user_created)], [Snapshot(existing, "s", 1)]
            )
            assert _aggregate_missing(engine, types.user, hidden)
            assert _key_free(engine, types.user, "hidden")
            assert engine.get_aggregate_by_key(None, types.user, "visible") == existing
            assert engine.get_events_for_aggregate(None, existing, 0) == []
            assert engine.get_snapshot_for_aggregate(None, existing) is None
            assert engine.get_events_for_subscription(None, _reader(), 10) == []
            assert engine.get_max_event_id(None) == 0
            tx.commit()
        except BaseException:
            tx.rollback()
            raise
        assert engine.get_aggregate_by_key(None, types.user, "renamed") == existing
        assert len(_read_all(engine, _reader())) == 1

    # ------------------------------------------------------------- concurrency --
    def test_duplicate_of_a_committed_sequence_writes_nothing(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        target = _new_with_events(engine, types.user, [types.user_created] * 3)
        tx = engine.get_transaction_info()
        try:
            bystander = engine.new_aggregate_with_key(tx, types.user, "bystander")
            engine.write_state(tx, [_event(bystander, 1, types.user_created)], [])
            with pytest.raises(ConcurrencyError) as caught:
                engine.write_state(
                    tx,
                    [_event(target, 4, types.user_updated), _event(target, 2, types.user_updated)],
                    [Snapshot(target, "never", 4)],
                )
        finally:
            tx.rollback()
        error = caught.value
        assert (error.aggregate_id, error.sequence) == (target, 2)
        assert error.error_type == ERROR_CONSTRAINT_VIOLATION
        assert isinstance(error, ConstraintViolationError)
        assert [e.sequence for e in engine.get_events_for_aggregate(None, target, 0)] == [1, 2, 3]
        assert engine.get_snapshot_for_aggregate(None, target) is None
        assert _key_free(engine, types.user, "bystander")
        assert engine.get_max_event_id(None) == 3

    @pytest.mark.parametrize("duplicate_of", ["committed", "batch"])
    @pytest.mark.parametrize("autocommit", [False, True], ids=["tx", "autocommit"])
    def test_duplicate_as_last_of_a_batch_of_100_writes_nothing(
        self, engine: StorageEngine, duplicate_of: str, autocommit: bool
    ) -> None:
        types = _register_types(engine)
        target = _new_with_events(engine, types.user, [types.user_created] * 5)
        other = engine.new_aggregate(None, types.profile)
        batch = [_event(other, 1, types.profile_created)]
        batch += [_event(target, sequence, types.user_updated) for sequence in range(6, 104)]
        duplicate = 3 if duplicate_of == "committed" else 50
        batch.append(_event(target, duplicate, types.user_updated))
        assert len(batch) == 100
        with pytest.raises(ConcurrencyError) as caught:
            if autocommit:
                engine.write_state(None, batch, [Snapshot(target, "never", 103)])
            else:
                with _transaction(engine) as tx:
                    engine.write_state(tx, batch, [Snapshot(target, "never", 103)])
        assert (caught.value.aggregate_id, caught.value.sequence) == (target, duplicate)
        assert len(engine.get_events_for_aggregate(None, target, 0)) == 5
        assert engine.get_events_for_aggregate(None, other, 0) == []
        assert engine.get_snapshot_for_aggregate(None, target) is None
        assert engine.get_max_event_id(None) == 5

    def test_duplicate_of_an_earlier_write_of_the_same_transaction(
        self, engine: StorageEngine
    ) -> None:
        types = _register_types(engine)
        target = engine.new_aggregate(None, types.user)
        with pytest.raises(ConcurrencyError) as caught, _transaction(engine) as tx:
            engine.write_state(tx, [_event(target, 1, types.user_created)], [])
            engine.write_state(tx, [_event(target, 1, types.user_updated)], [])
        assert (caught.value.aggregate_id, caught.value.sequence) == (target, 1)
        assert engine.get_events_for_aggregate(None, target, 0) == []

    def test_racing_appends_exactly_one_wins(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        target = _new_with_events(engine, types.user, [types.user_created] * 3)
        writers = 8
        barrier = threading.Barrier(writers)
        outcomes: list[object] = [None] * writers
        privates = [0] * writers

        def attempt(index: int) -> None:
            barrier.wait(timeout=30)
            tx = engine.get_transaction_info()
            try:
                privates[index] = engine.new_aggregate(tx, types.profile)
                engine.write_state(
                    tx,
                    [
                        _event(target, 4, types.user_updated, state=f"writer-{index}"),
                        _event(privates[index], 1, types.profile_created),
                    ],
                    [Snapshot(privates[index], f"writer-{index}", 1)],
                )
                tx.commit()
                outcomes[index] = "won"
            except BaseException as error:  # reported below, in the test thread
                tx.rollback()
                outcomes[index] = error

        threads = [threading.Thread(target=attempt, args=(i,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a writer hung"
        winners = [i for i, outcome in enumerate(outcomes) if outcome == "won"]
        losers = [o for o in outcomes if o != "won"]
        assert len(winners) == 1, outcomes
        assert all(isinstance(o, ConcurrencyError) for o in losers), losers
        assert all((o.aggregate_id, o.sequence) == (target, 4) for o in losers)  # type: ignore[attr-defined]
        events = engine.get_events_for_aggregate(None, target, 0)
        assert [e.sequence for e in events] == [1, 2, 3, 4]
        assert events[3].state == f"writer-{winners[0]}"
        for index in range(writers):
            if index == winners[0]:
                assert len(engine.get_events_for_aggregate(None, privates[index], 0)) == 1
                continue
            if privates[index]:
                assert _aggregate_missing(engine, types.profile, privates[index])
                assert engine.get_events_for_aggregate(None, privates[index], 0) == []
                assert engine.get_snapshot_for_aggregate(None, privates[index]) is None
        assert engine.get_max_event_id(None) == 5

    def test_reader_sees_every_event_once_under_concurrent_writers(
        self, engine: StorageEngine
    ) -> None:
        types = _register_types(engine)
        writers, commits = 4, 40
        aggregates = [engine.new_aggregate(None, types.user) for _ in range(writers)]
        written: list[tuple[int, int]] = []
        failures: list[BaseException] = []
        lock = threading.Lock()

        def write(aggregate_id: int) -> None:
            sequence = 0
            try:
                for commit in range(commits):
                    batch = []
                    for _ in range(1 + commit % 3):
                        sequence += 1
                        batch.append(_event(aggregate_id, sequence, types.user_created))
                    with _transaction(engine) as tx:
                        engine.write_state(tx, batch, [])
                    with lock:
                        written.extend((e.aggregate_id, e.sequence) for e in batch)
            except BaseException as error:  # reported in the test thread
                failures.append(error)

        threads = [threading.Thread(target=write, args=(a,)) for a in aggregates]
        for thread in threads:
            thread.start()
        seen: list[SerializedEvent] = []
        cursor = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            writers_done = not any(thread.is_alive() for thread in threads)
            batch = engine.get_events_for_subscription(None, _reader(last_event_id=cursor), 7)
            assert len(batch) <= 7
            for event in batch:
                assert event.event_id > cursor, "event ids must strictly increase"
                cursor = event.event_id
            seen.extend(batch)
            if writers_done and not batch:
                break
        for thread in threads:
            thread.join(timeout=5)
        assert not failures, failures
        assert sorted((e.aggregate_id, e.sequence) for e in seen) == sorted(written)
        assert len(seen) == writers * sum(1 + c % 3 for c in range(commits))
        assert [e.event_id for e in seen] == [e.event_id for e in _read_all(engine, _reader())]

    def test_reader_does_not_skip_an_event_that_commits_later_with_a_lower_id(
        self, engine: StorageEngine
    ) -> None:
        """The slow writer starts first (where ids come from a sequence it holds the
        lower id); a reader that reads the fast writer's event meanwhile must still
        get the slow writer's event once it commits."""
        types = _register_types(engine)
        slow_aggregate = engine.new_aggregate(None, types.user)
        fast_aggregate = engine.new_aggregate(None, types.user)
        slow = engine.get_transaction_info()
        failures: list[BaseException] = []

        def fast_writer() -> None:
            try:
                with _transaction(engine) as tx:
                    engine.write_state(tx, [_event(fast_aggregate, 1, types.user_created)], [])
            except BaseException as error:  # reported in the test thread
                failures.append(error)

        fast = threading.Thread(target=fast_writer)
        try:
            engine.write_state(slow, [_event(slow_aggregate, 1, types.user_created)], [])
            fast.start()
            fast.join(timeout=0.5)  # an engine that serialises writers keeps it waiting
            seen = engine.get_events_for_subscription(None, _reader(), 100)
            cursor = seen[-1].event_id if seen else 0
            slow.commit()
        except BaseException:
            slow.rollback()
            raise
        finally:
            fast.join(timeout=30)
        assert not failures, failures
        seen += _read_all(engine, _reader(last_event_id=cursor))
        assert sorted(e.aggregate_id for e in seen) == sorted([slow_aggregate, fast_aggregate])
        assert [e.event_id for e in seen] == sorted({e.event_id for e in seen})

    # --------------------------------------------------- subscription records --
    def test_upsert_creates_a_subscription(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        subscription_id = engine.upsert_subscription(
            None, "single", types.user, types.user_created, None, START_BEGINNING, 0, None
        )
        subscription = engine.get_subscription_by_name(None, "single")
        assert subscription.id == subscription_id and subscription_id > 0
        assert subscription.name == "single"
        assert subscription.aggregate_type_id == types.user
        assert subscription.event_type_id == types.user_created
        assert subscription.event_type_ids == ()
        assert subscription.aggregate_key is None
        assert subscription.start_from == START_BEGINNING
        assert subscription.last_event_id == 0
        assert subscription.active
        assert subscription.lease_owner is None and subscription.lease_expires_at is None

    def test_missing_subscription_is_not_found(self, engine: StorageEngine) -> None:
        with pytest.raises(NotFoundError, match="nope") as caught:
            engine.get_subscription_by_name(None, "nope")
        assert caught.value.error_type == ERROR_NOT_FOUND

    def test_upsert_initialises_the_cursor_for_each_start_kind(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate(None, types.user)
        times = [T0, T0 + timedelta(seconds=10), T0 + timedelta(seconds=5), T0]
        engine.write_state(
            None,
            [
                _event(aggregate_id, i, types.user_created, event_time=moment)
                for i, moment in enumerate(times, start=1)
            ],
            [],
        )
        ids = [e.event_id for e in engine.get_events_for_aggregate(None, aggregate_id, 0)]
        cases = [
            (START_BEGINNING, 0, None, 0),
            (START_END, 0, None, ids[-1]),
            (START_EVENT_ID, ids[1], None, ids[1]),
            (START_TIMESTAMP, 0, T0 + timedelta(seconds=6), ids[1] - 1),
            (START_TIMESTAMP, 0, T0 + timedelta(seconds=10), ids[1] - 1),
            (START_TIMESTAMP, 0, T0 - timedelta(days=1), ids[0] - 1),
            (START_TIMESTAMP, 0, T0 + timedelta(days=1), ids[-1]),
        ]
        for number, (kind, start_id, start_time, cursor) in enumerate(cases):
            name = f"start-{number}"
            engine.upsert_subscription(None, name, None, None, None, kind, start_id, start_time)
            subscription = engine.get_subscription_by_name(None, name)
            assert subscription.last_event_id == cursor, (kind, start_time)
            assert subscription.start_from == kind
            assert subscription.start_event_id == start_id
            assert subscription.start_timestamp == start_time

    def test_start_end_on_an_empty_log_starts_at_zero(self, engine: StorageEngine) -> None:
        engine.upsert_subscription(None, "end", None, None, None, START_END, 0, None)
        assert engine.get_subscription_by_name(None, "end").last_event_id == 0

    def test_upsert_of_an_existing_name_keeps_cursor_lease_and_active(
        self, engine: StorageEngine
    ) -> None:
        types = _register_types(engine)
        _new_with_events(engine, types.user, [types.user_created] * 3, key="who")
        first_id = engine.upsert_subscription(
            None, "evolving", None, None, None, START_BEGINNING, 0, None
        )
        engine.advance_subscription_cursor(None, first_id, 2)
        assert engine.claim_subscription(None, "evolving", "owner-1", 30.0)
        engine.set_subscription_active(None, first_id, False)
        second_id = engine.upsert_subscription(
            None, "evolving", types.user, types.user_updated, "who", START_END, 7, None
        )
        assert second_id == first_id
        subscription = engine.get_subscription_by_name(None, "evolving")
        assert subscription.last_event_id == 2
        assert subscription.lease_owner == "owner-1"
        assert not subscription.active
        assert subscription.aggregate_type_id == types.user
        assert subscription.event_type_id == types.user_updated
        assert subscription.aggregate_key == "who"
        assert (subscription.start_from, subscription.start_event_id) == (START_END, 7)

    def test_subscription_ids_are_distinct(self, engine: StorageEngine) -> None:
        ids = {
            engine.upsert_subscription(None, f"s{i}", None, None, None, START_BEGINNING, 0, None)
            for i in range(3)
        }
        assert len(ids) == 3

    def test_upsert_in_a_rolled_back_transaction_does_not_exist(
        self, engine: StorageEngine
    ) -> None:
        tx = engine.get_transaction_info()
        engine.upsert_subscription(tx, "ghost", None, None, None, START_BEGINNING, 0, None)
        assert engine.get_subscription_by_name(tx, "ghost").name == "ghost"
        tx.rollback()
        with pytest.raises(NotFoundError):
            engine.get_subscription_by_name(None, "ghost")

    def test_add_subscription_event_type_fills_event_type_ids(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        subscription_id = engine.upsert_subscription(
            None, "multi", types.user, None, None, START_BEGINNING, 0, None
        )
        engine.add_subscription_event_type(None, subscription_id, types.user_updated)
        engine.add_subscription_event_type(None, subscription_id, types.user_created)
        engine.add_subscription_event_type(None, subscription_id, types.user_created)
        subscription = engine.get_subscription_by_name(None, "multi")
        assert sorted(subscription.event_type_ids) == sorted(
            [types.user_created, types.user_updated]
        )

    def test_set_subscription_active(self, engine: StorageEngine) -> None:
        subscription_id = engine.upsert_subscription(
            None, "switch", None, None, None, START_BEGINNING, 0, None
        )
        engine.set_subscription_active(None, subscription_id, False)
        assert not engine.get_subscription_by_name(None, "switch").active
        engine.set_subscription_active(None, subscription_id, True)
        assert engine.get_subscription_by_name(None, "switch").active

    def test_claim_is_refused_while_inactive(self, engine: StorageEngine) -> None:
        """As in Go: only an active subscription can be claimed."""
        subscription_id = engine.upsert_subscription(
            None, "switch", None, None, None, START_BEGINNING, 0, None
        )
        engine.set_subscription_active(None, subscription_id, False)
        assert not engine.claim_subscription(None, "switch", "owner", 30.0)
        assert engine.get_subscription_by_name(None, "switch").lease_owner is None
        engine.set_subscription_active(None, subscription_id, True)
        assert engine.claim_subscription(None, "switch", "owner", 30.0)

    # ------------------------------------------------------------------ leases --
    def test_lease_lifecycle(self, engine: StorageEngine) -> None:
        engine.upsert_subscription(None, "leased", None, None, None, START_BEGINNING, 0, None)
        before = datetime.now(timezone.utc)
        assert engine.claim_subscription(None, "leased", "owner1", 30.0)
        held = engine.get_subscription_by_name(None, "leased")
        assert held.lease_owner == "owner1"
        assert held.lease_expires_at is not None
        assert held.lease_expires_at.utcoffset() == timedelta(0)
        assert (
            before + timedelta(seconds=25)
            < held.lease_expires_at
            < datetime.now(timezone.utc) + timedelta(seconds=35)
        )
        assert engine.claim_subscription(None, "leased", "owner1", 30.0), "owner re-claims"
        assert not engine.claim_subscription(None, "leased", "owner2", 30.0)
        assert not engine.renew_subscription(None, "leased", "owner2", 30.0)
        assert engine.renew_subscription(None, "leased", "owner1", 60.0)
        renewed = engine.get_subscription_by_name(None, "leased").lease_expires_at
        assert renewed is not None and renewed > held.lease_expires_at
        engine.release_subscription(None, "leased", "owner2")  # not the owner: no effect
        assert engine.get_subscription_by_name(None, "leased").lease_owner == "owner1"
        engine.release_subscription(None, "leased", "owner1")
        released = engine.get_subscription_by_name(None, "leased")
        assert released.lease_owner is None
        assert not engine.renew_subscription(None, "leased", "owner1", 30.0)
        assert engine.claim_subscription(None, "leased", "owner2", 30.0)
        assert engine.get_subscription_by_name(None, "leased").lease_owner == "owner2"

    def test_expired_lease_is_taken_over_and_fences_the_old_owner(
        self, engine: StorageEngine
    ) -> None:
        subscription_id = engine.upsert_subscription(
            None, "expiring", None, None, None, START_BEGINNING, 0, None
        )
        assert engine.claim_subscription(None, "expiring", "owner1", 0.2)
        engine.advance_subscription_cursor(None, subscription_id, 1, owner="owner1")
        assert not engine.claim_subscription(None, "expiring", "owner2", 0.2)
        time.sleep(0.35)
        assert not engine.renew_subscription(None, "expiring", "owner1", 30.0)
        with pytest.raises(SubscriptionLeaseLost):
            engine.advance_subscription_cursor(None, subscription_id, 2, owner="owner1")
        assert engine.claim_subscription(None, "expiring", "owner2", 30.0)
        with pytest.raises(SubscriptionLeaseLost):
            engine.advance_subscription_cursor(None, subscription_id, 3, owner="owner1")
        assert not engine.renew_subscription(None, "expiring", "owner1", 30.0)
        engine.advance_subscription_cursor(None, subscription_id, 4, owner="owner2")
        subscription = engine.get_subscription_by_name(None, "expiring")
        assert subscription.last_event_id == 4
        assert subscription.lease_owner == "owner2"

    def test_advance_with_an_owner_needs_the_lease(self, engine: StorageEngine) -> None:
        subscription_id = engine.upsert_subscription(
            None, "fenced", None, None, None, START_BEGINNING, 0, None
        )
        with pytest.raises(SubscriptionLeaseLost):
            engine.advance_subscription_cursor(None, subscription_id, 5, owner="nobody")
        assert engine.claim_subscription(None, "fenced", "owner1", 30.0)
        with pytest.raises(SubscriptionLeaseLost):
            engine.advance_subscription_cursor(None, subscription_id, 5, owner="owner2")
        engine.release_subscription(None, "fenced", "owner1")
        with pytest.raises(SubscriptionLeaseLost):
            engine.advance_subscription_cursor(None, subscription_id, 5, owner="owner1")
        assert engine.get_subscription_by_name(None, "fenced").last_event_id == 0

    def test_cursor_only_moves_forward(self, engine: StorageEngine) -> None:
        subscription_id = engine.upsert_subscription(
            None, "cursor", None, None, None, START_BEGINNING, 0, None
        )
        engine.advance_subscription_cursor(None, subscription_id, 10)
        engine.advance_subscription_cursor(None, subscription_id, 4)
        assert engine.get_subscription_by_name(None, "cursor").last_event_id == 10
        assert engine.claim_subscription(None, "cursor", "owner", 30.0)
        engine.advance_subscription_cursor(None, subscription_id, 3, owner="owner")
        assert engine.get_subscription_by_name(None, "cursor").last_event_id == 10
        engine.advance_subscription_cursor(None, subscription_id, 12, owner="owner")
        assert engine.get_subscription_by_name(None, "cursor").last_event_id == 12

    # ---------------------------------------------------- subscription reads --
    def test_durable_single_type_read_then_advance(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        _new_with_events(engine, types.user, [types.user_created, types.user_updated])
        _new_with_events(engine, types.profile, [types.profile_created])
        _new_with_events(engine, types.user, [types.user_created])
        engine.upsert_subscription(
            None, "single", types.user, types.user_created, None, START_BEGINNING, 0, None
        )
        subscription = engine.get_subscription_by_name(None, "single")
        events = engine.get_events_for_subscription(None, subscription, 100)
        assert [e.event_type for e in events] == ["user_created", "user_created"]
        engine.advance_subscription_cursor(None, subscription.id, events[-1].event_id)
        subscription = engine.get_subscription_by_name(None, "single")
        assert engine.get_events_for_subscription(None, subscription, 100) == []

    def test_unfiltered_read_returns_the_whole_log_in_order(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        first = _new_with_events(engine, types.user, [types.user_created] * 2)
        second = _new_with_events(engine, types.profile, [types.profile_created])
        events = _read_all(engine, _reader())
        assert [(e.aggregate_id, e.sequence) for e in events] == [
            (first, 1),
            (first, 2),
            (second, 1),
        ]
        expected = engine.get_events_for_aggregate(None, first, 0)
        expected += engine.get_events_for_aggregate(None, second, 0)
        assert events == expected

    def test_aggregate_type_filter(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        _new_with_events(engine, types.user, [types.user_created])
        profile = _new_with_events(engine, types.profile, [types.profile_created] * 2)
        events = _read_all(engine, _reader(aggregate_type_id=types.profile))
        assert {e.aggregate_id for e in events} == {profile} and len(events) == 2

    def test_multi_type_filter_wins_over_single_type(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        _new_with_events(
            engine, types.user, [types.user_created, types.user_updated, types.user_created]
        )
        _new_with_events(engine, types.profile, [types.profile_created])
        reader = _reader(
            event_type_id=types.profile_created,
            event_type_ids=(types.user_created, types.user_updated),
        )
        assert [e.event_type for e in _read_all(engine, reader)] == [
            "user_created",
            "user_updated",
            "user_created",
        ]
        subscription_id = engine.upsert_subscription(
            None, "multi", types.user, types.profile_created, None, START_BEGINNING, 0, None
        )
        engine.add_subscription_event_type(None, subscription_id, types.user_created)
        engine.add_subscription_event_type(None, subscription_id, types.user_updated)
        durable = engine.get_subscription_by_name(None, "multi")
        assert {e.event_type for e in _read_all(engine, durable)} == {
            "user_created",
            "user_updated",
        }

    def test_aggregate_key_filter_follows_key_changes(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        chavez = _new_with_events(engine, types.user, [types.user_created] * 2, key="chavez")
        _new_with_events(engine, types.user, [types.user_created], key="other")
        unkeyed = _new_with_events(engine, types.user, [types.user_created])
        engine.upsert_subscription(None, "by-key", None, None, "chavez", START_BEGINNING, 0, None)
        by_key = engine.get_subscription_by_name(None, "by-key")
        events = _read_all(engine, by_key)
        assert [(e.aggregate_id, e.sequence) for e in events] == [(chavez, 1), (chavez, 2)]
        assert _read_all(engine, _reader(aggregate_key="nobody")) == []
        engine.change_aggregate_natural_key(None, chavez, "renamed")
        engine.change_aggregate_natural_key(None, unkeyed, "chavez")
        assert [e.aggregate_id for e in _read_all(engine, by_key)] == [unkeyed]
        renamed = _read_all(engine, _reader(aggregate_key="renamed"))
        assert [e.aggregate_id for e in renamed] == [chavez, chavez]

    def test_filters_combine(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        keyed = _new_with_events(
            engine, types.user, [types.user_created, types.user_updated], key="both"
        )
        _new_with_events(engine, types.user, [types.user_created, types.user_updated])
        reader = _reader(
            aggregate_type_id=types.user, event_type_id=types.user_updated, aggregate_key="both"
        )
        assert [(e.aggregate_id, e.sequence) for e in _read_all(engine, reader)] == [(keyed, 2)]
        wrong_type = _reader(aggregate_type_id=types.profile, aggregate_key="both")
        assert _read_all(engine, wrong_type) == []

    @pytest.mark.parametrize("filtered", [False, True], ids=["unfiltered", "filtered"])
    def test_paging_with_limit(self, engine: StorageEngine, filtered: bool) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate(None, types.user)
        event_types = [types.user_created, types.user_updated] * 25
        engine.write_state(
            None,
            [_event(aggregate_id, i, et) for i, et in enumerate(event_types, start=1)],
            [],
        )
        reader = _reader(event_type_id=types.user_updated) if filtered else _reader()
        expected = [e for e in engine.get_events_for_aggregate(None, aggregate_id, 0)]
        if filtered:
            expected = [e for e in expected if e.event_type == "user_updated"]
        pages = []
        cursor = 0
        while True:
            page = engine.get_events_for_subscription(None, _with_cursor(reader, cursor), 10)
            if not page:
                break
            assert len(page) <= 10
            pages.append(len(page))
            cursor = page[-1].event_id
        assert sum(pages) == len(expected)
        assert pages == [10] * (len(expected) // 10) + (
            [len(expected) % 10] * (len(expected) % 10 > 0)
        )
        assert engine.get_events_for_subscription(None, reader, 1) == expected[:1]
        start = expected[4].event_id
        assert (
            engine.get_events_for_subscription(None, _with_cursor(reader, start), 3)
            == expected[5:8]
        )

    # ------------------------------------------------------------- log helpers --
    def test_max_and_first_event_id_on_an_empty_log(self, engine: StorageEngine) -> None:
        assert engine.get_max_event_id(None) == 0
        assert engine.get_first_event_id_from_timestamp(None, T0) == 0
        assert engine.get_events_for_subscription(None, _reader(), 10) == []

    def test_max_and_first_event_id(self, engine: StorageEngine) -> None:
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate(None, types.user)
        # Event times need not follow ids: the first id whose time is >= ts counts.
        times = [T0 + timedelta(seconds=10), T0 + timedelta(seconds=5), T0 + timedelta(seconds=12)]
        engine.write_state(
            None,
            [
                _event(aggregate_id, i, types.user_created, event_time=moment)
                for i, moment in enumerate(times, start=1)
            ],
            [],
        )
        ids = [e.event_id for e in engine.get_events_for_aggregate(None, aggregate_id, 0)]
        assert engine.get_max_event_id(None) == ids[-1]
        first = engine.get_first_event_id_from_timestamp
        assert first(None, T0) == ids[0]
        assert first(None, T0 + timedelta(seconds=5)) == ids[0]
        assert first(None, T0 + timedelta(seconds=10)) == ids[0]
        assert first(None, T0 + timedelta(seconds=10, microseconds=1)) == ids[2]
        assert first(None, T0 + timedelta(seconds=12)) == ids[2]
        assert first(None, T0 + timedelta(seconds=12, microseconds=1)) == 0
        tokyo = timezone(timedelta(hours=9))
        assert first(None, (T0 + timedelta(seconds=11)).astimezone(tokyo)) == ids[2]

    # ---------------------------------------------------- optional capabilities --
    def test_wait_for_events_wakes_on_commit(self, engine: StorageEngine) -> None:
        if not isinstance(engine, SupportsEventWait):
            pytest.skip("the engine does not implement SupportsEventWait")
        types = _register_types(engine)
        aggregate_id = engine.new_aggregate(None, types.user)
        engine.wait_for_events(0, 0.05)  # nothing to wait for: returns after the timeout
        timer = threading.Timer(
            0.1, engine.write_state, (None, [_event(aggregate_id, 1, types.user_created)], [])
        )
        started = time.monotonic()
        timer.start()
        try:
            # Early returns are allowed, so wait in a loop; a wait that ignores the
            # commit would sleep the whole 10 s and fail the bound below.
            while engine.get_max_event_id(None) == 0 and time.monotonic() - started < 5.0:
                engine.wait_for_events(0, 10.0)
        finally:
            timer.join()
        assert time.monotonic() - started < 5.0
        assert engine.get_max_event_id(None) == 1

    def test_stats_count_what_is_stored(self, engine: StorageEngine) -> None:
        if not isinstance(engine, SupportsStats):
            pytest.skip("the engine does not implement SupportsStats")
        assert tuple(engine.get_counts(None)) == (0, 0, 0)
        assert engine.list_subscriptions(None) == []
        types = _register_types(engine)
        aggregate_id = _new_with_events(engine, types.user, [types.user_created] * 3)
        engine.new_aggregate(None, types.user)
        engine.write_state(None, [], [Snapshot(aggregate_id, "s", 3)])
        engine.upsert_subscription(None, "listed", None, None, None, START_BEGINNING, 0, None)
        counts = engine.get_counts(None)
        assert (counts.aggregates, counts.events, counts.snapshots) == (2, 3, 1)
        assert [s.name for s in engine.list_subscriptions(None)] == ["listed"]

    @pytest.mark.parametrize("shape", list(WRITE_AND_COMMIT_SHAPES))
    @pytest.mark.parametrize("earlier_statement", [False, True], ids=["fresh-tx", "begun-tx"])
    def test_write_and_commit_is_visible_to_other_transactions(
        self, engine: StorageEngine, shape: str, earlier_statement: bool
    ) -> None:
        capable = _writes_and_commits(engine)
        types = _register_types(engine)
        target = _new_with_events(engine, types.user, [types.user_created])
        count, with_snapshot = WRITE_AND_COMMIT_SHAPES[shape]
        events = [_event(target, s, types.user_updated) for s in range(2, count + 2)]
        snapshots = [Snapshot(target, "snap", count + 1)] if with_snapshot else []
        tx = engine.get_transaction_info()
        created = None
        if earlier_statement:
            created = engine.new_aggregate_with_key(tx, types.user, "alongside")
        capable.write_state_and_commit(tx, events, snapshots)
        _assert_finished(tx)
        stored = engine.get_events_for_aggregate(None, target, 0)
        assert [e.sequence for e in stored] == list(range(1, count + 2))
        assert [_as_read(e) for e in stored[1:]] == [_as_written(e, "user_updated") for e in events]
        expected = Snapshot(target, "snap", count + 1) if with_snapshot else None
        assert engine.get_snapshot_for_aggregate(None, target) == expected
        assert [e.event_id for e in _read_all(engine, _reader())] == [e.event_id for e in stored]
        assert engine.get_max_event_id(None) == stored[-1].event_id
        if created is not None:
            assert engine.get_aggregate_by_key(None, types.user, "alongside") == created

    def test_write_and_commit_of_nothing_commits_earlier_statements(
        self, engine: StorageEngine
    ) -> None:
        capable = _writes_and_commits(engine)
        types = _register_types(engine)
        tx = engine.get_transaction_info()
        created = engine.new_aggregate_with_key(tx, types.user, "kept")
        capable.write_state_and_commit(tx, [], [])
        _assert_finished(tx)
        assert engine.get_aggregate_by_key(None, types.user, "kept") == created
        assert engine.get_max_event_id(None) == 0

    @pytest.mark.parametrize("shape", ["one-event", "few-events-and-a-snapshot", "many-events"])
    @pytest.mark.parametrize("earlier_statement", [False, True], ids=["fresh-tx", "begun-tx"])
    def test_write_and_commit_of_a_duplicate_writes_nothing(
        self, engine: StorageEngine, shape: str, earlier_statement: bool
    ) -> None:
        capable = _writes_and_commits(engine)
        types = _register_types(engine)
        target = _new_with_events(engine, types.user, [types.user_created] * 3)
        count, with_snapshot = WRITE_AND_COMMIT_SHAPES[shape]
        # The duplicate (sequence 2, committed earlier) comes last in the batch.
        events = [_event(target, s, types.user_updated) for s in range(4, count + 3)]
        events.append(_event(target, 2, types.user_updated))
        snapshots = [Snapshot(target, "never", count + 3)] if with_snapshot else []
        tx = engine.get_transaction_info()
        if earlier_statement:
            engine.new_aggregate_with_key(tx, types.user, "rolled-back")
            engine.change_aggregate_natural_key(tx, target, "renamed")
        with pytest.raises(ConcurrencyError) as caught:
            capable.write_state_and_commit(tx, events, snapshots)
        _assert_finished(tx)
        assert (caught.value.aggregate_id, caught.value.sequence) == (target, 2)
        assert [e.sequence for e in engine.get_events_for_aggregate(None, target, 0)] == [1, 2, 3]
        assert engine.get_snapshot_for_aggregate(None, target) is None
        assert _key_free(engine, types.user, "rolled-back")
        assert _key_free(engine, types.user, "renamed")
        assert engine.get_max_event_id(None) == 3

    def test_write_and_commit_for_a_missing_aggregate_writes_nothing(
        self, engine: StorageEngine
    ) -> None:
        capable = _writes_and_commits(engine)
        types = _register_types(engine)
        tx = engine.get_transaction_info()
        with pytest.raises(NotFoundError, match="99999999"):
            capable.write_state_and_commit(tx, [_event(99999999, 1, types.user_created)], [])
        _assert_finished(tx)
        assert engine.get_max_event_id(None) == 0
        # The engine is still usable: the next transaction writes normally.
        target = _new_with_events(engine, types.user, [types.user_created])
        assert len(engine.get_events_for_aggregate(None, target, 0)) == 1


__all__ = ["OPAQUE_STATES", "WRITE_AND_COMMIT_SHAPES", "StorageEngineConformance"]
