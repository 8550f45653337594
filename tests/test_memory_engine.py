"""The memory engine: the engine conformance suite plus memory-only checks."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import evercore.engines.memory.engine as memory_module
import pytest
from evercore._kernels import filter_events
from evercore.engines.memory.engine import (
    MemoryStorageEngine,
    MemoryTransaction,
    open_memory_engine,
)
from evercore.errors import (
    ConcurrencyError,
    ConfigurationError,
    ConstraintViolationError,
    NotFoundError,
    StorageEngineError,
    SubscriptionLeaseLost,
)
from evercore.registry import open_engine
from evercore.testing import StorageEngineConformance
from evercore.values import START_BEGINNING, SerializedEvent, StorageEngineEvent, Subscription
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)


class TestMemoryEngine(StorageEngineConformance):
    """Every SPI rule, on ``memory://``."""

    @pytest.fixture
    def engine(self) -> Iterator[MemoryStorageEngine]:
        engine = open_memory_engine("memory://")
        yield engine
        engine.close()


@pytest.fixture
def engine() -> Iterator[MemoryStorageEngine]:
    engine = open_memory_engine("memory://")
    yield engine
    engine.close()


def _event(aggregate_id: int, sequence: int, event_type_id: int) -> StorageEngineEvent:
    return StorageEngineEvent(aggregate_id, sequence, event_type_id, "{}", T0, "")


def _setup(engine: MemoryStorageEngine) -> tuple[int, int]:
    return engine.get_aggregate_type_id(None, "user"), engine.get_event_type_id(None, "created")


# -- opening ------------------------------------------------------------------------
def test_registry_opens_memory_uris() -> None:
    engine = open_engine("memory://")
    assert isinstance(engine, MemoryStorageEngine)
    engine.close()


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigurationError, match="pool_size"):
        open_memory_engine("memory://", pool_size=3)


def test_uri_with_a_path_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="memory://somewhere"):
        open_memory_engine("memory://somewhere")


# -- indexes ------------------------------------------------------------------------
class _SpyColumn(list[Any]):
    """Stands in for a column of the global log: records the positions read;
    iterating or slicing it fails the test."""

    def __init__(self, data: list[Any]) -> None:
        super().__init__(data)
        self.read: set[int] = set()

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, int):
            raise AssertionError(f"a log column was sliced ({index!r})")
        self.read.add(index)
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[Any]:
        raise AssertionError("a log column was scanned")


class _SpyDict(dict[int, Any]):
    """Records every key looked up; iterating it fails the test."""

    def __init__(self, data: dict[int, Any]) -> None:
        super().__init__(data)
        self.looked_up: set[int] = set()

    def get(self, key: int, default: Any = None) -> Any:
        self.looked_up.add(key)
        return super().get(key, default)

    def __getitem__(self, key: int) -> Any:
        self.looked_up.add(key)
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[int]:
        raise AssertionError("the per-aggregate index was scanned")

    def values(self) -> Any:
        raise AssertionError("the per-aggregate index was scanned")

    def items(self) -> Any:
        raise AssertionError("the per-aggregate index was scanned")


def test_loading_an_aggregate_reads_only_its_own_events(engine: MemoryStorageEngine) -> None:
    type_id, event_type_id = _setup(engine)
    aggregates = [engine.new_aggregate(None, type_id) for _ in range(20)]
    for aggregate_id in aggregates:
        engine.write_state(None, [_event(aggregate_id, s, event_type_id) for s in (1, 2, 3)], [])
    target = aggregates[7]
    targets_positions = {i for i, a in enumerate(engine._log.columns.aggregate_ids) if a == target}
    spy = _SpyDict(engine._by_aggregate)
    engine._by_aggregate = spy  # type: ignore[assignment]
    columns = engine._log.columns
    spied = {name: _SpyColumn(getattr(columns, name)) for name in columns.__slots__}
    for name, column in spied.items():
        setattr(columns, name, column)
    engine._log.aggregate_type_ids = _SpyColumn(engine._log.aggregate_type_ids)
    events = engine.get_events_for_aggregate(None, target, 1)
    assert [(e.aggregate_id, e.sequence) for e in events] == [(target, 2), (target, 3)]
    assert engine.get_snapshot_for_aggregate(None, target) is None
    assert spy.looked_up == {target}
    assert spied["states"].read == {e.event_id - 1 for e in events}
    for column in (*spied.values(), engine._log.aggregate_type_ids):
        assert column.read <= targets_positions


def test_out_of_order_sequences_are_kept_in_sequence_order(engine: MemoryStorageEngine) -> None:
    type_id, event_type_id = _setup(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    engine.write_state(None, [_event(aggregate_id, 5, event_type_id)], [])
    engine.write_state(None, [_event(aggregate_id, 2, event_type_id)], [])
    engine.write_state(None, [_event(aggregate_id, 3, event_type_id)], [])
    read = engine.get_events_for_aggregate(None, aggregate_id, 2)
    assert [e.sequence for e in read] == [3, 5]
    with pytest.raises(ConcurrencyError):
        engine.write_state(None, [_event(aggregate_id, 3, event_type_id)], [])


def test_filtered_subscription_reads_go_through_the_kernel(
    engine: MemoryStorageEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    type_id, event_type_id = _setup(engine)
    aggregate_id = engine.new_aggregate(None, type_id)
    engine.write_state(None, [_event(aggregate_id, s, event_type_id) for s in (1, 2, 3)], [])
    calls: list[dict[str, Any]] = []

    def spy(*args: Any, **kwargs: Any) -> list[int]:
        calls.append(kwargs)
        return filter_events(*args, **kwargs)

    monkeypatch.setattr(memory_module, "filter_events", spy)
    reader = Subscription(id=0, name="", event_type_ids=(event_type_id,), last_event_id=1)
    assert [e.sequence for e in engine.get_events_for_subscription(None, reader, 1)] == [2]
    assert calls == [
        {
            "start": 1,
            "limit": 1,
            "aggregate_type_id": None,
            "aggregate_id": None,
            "event_type_filter": frozenset({event_type_id}),
        }
    ]


# -- transactions racing at commit ---------------------------------------------------
def test_second_commit_of_a_racing_sequence_fails_and_applies_nothing(
    engine: MemoryStorageEngine,
) -> None:
    type_id, event_type_id = _setup(engine)
    target = engine.new_aggregate(None, type_id)
    first, second = engine.get_transaction_info(), engine.get_transaction_info()
    engine.write_state(first, [_event(target, 1, event_type_id)], [])
    bystander = engine.new_aggregate_with_key(second, type_id, "bystander")
    engine.write_state(second, [_event(target, 1, event_type_id)], [])
    first.commit()
    with pytest.raises(ConcurrencyError) as caught:
        second.commit()
    second.rollback()
    assert (caught.value.aggregate_id, caught.value.sequence) == (target, 1)
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_id(None, type_id, bystander)
    assert engine.get_max_event_id(None) == 1


def test_second_commit_of_a_racing_key_fails_and_applies_nothing(
    engine: MemoryStorageEngine,
) -> None:
    type_id, _ = _setup(engine)
    first, second = engine.get_transaction_info(), engine.get_transaction_info()
    winner = engine.new_aggregate_with_key(first, type_id, "contested")
    loser = engine.new_aggregate_with_key(second, type_id, "contested")
    first.commit()
    with pytest.raises(ConstraintViolationError, match="contested"):
        second.commit()
    assert engine.get_aggregate_by_key(None, type_id, "contested") == winner
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_id(None, type_id, loser)


def test_key_swap_in_one_transaction(engine: MemoryStorageEngine) -> None:
    type_id, _ = _setup(engine)
    a = engine.new_aggregate_with_key(None, type_id, "a")
    b = engine.new_aggregate_with_key(None, type_id, "b")
    tx = engine.get_transaction_info()
    engine.change_aggregate_natural_key(tx, a, "tmp")
    engine.change_aggregate_natural_key(tx, b, "a")
    engine.change_aggregate_natural_key(tx, a, "b")
    tx.commit()
    assert engine.get_aggregate_by_key(None, type_id, "a") == b
    assert engine.get_aggregate_by_key(None, type_id, "b") == a
    with pytest.raises(NotFoundError):
        engine.get_aggregate_by_key(None, type_id, "tmp")


def test_concurrent_registrations_of_a_type_agree(engine: MemoryStorageEngine) -> None:
    first, second = engine.get_transaction_info(), engine.get_transaction_info()
    assert engine.get_event_type_id(first, "new") == engine.get_event_type_id(second, "new")
    first.commit()
    second.commit()
    assert [p.name for p in engine.get_event_types(None)] == ["new"]


def test_lease_taken_meanwhile_fails_the_commit(engine: MemoryStorageEngine) -> None:
    engine.upsert_subscription(None, "sub", None, None, None, START_BEGINNING, 0, None)
    tx = engine.get_transaction_info()
    assert engine.claim_subscription(tx, "sub", "mine", 30.0)
    assert engine.claim_subscription(None, "sub", "theirs", 30.0)
    with pytest.raises(StorageEngineError, match="conflict"):
        tx.commit()
    assert engine.get_subscription_by_name(None, "sub").lease_owner == "theirs"


def test_cursor_advance_is_fenced_again_at_commit(engine: MemoryStorageEngine) -> None:
    subscription_id = engine.upsert_subscription(
        None, "sub", None, None, None, START_BEGINNING, 0, None
    )
    assert engine.claim_subscription(None, "sub", "mine", 30.0)
    tx = engine.get_transaction_info()
    engine.advance_subscription_cursor(tx, subscription_id, 9, owner="mine")
    engine.release_subscription(None, "sub", "mine")
    assert engine.claim_subscription(None, "sub", "theirs", 30.0)
    with pytest.raises(SubscriptionLeaseLost):
        tx.commit()
    assert engine.get_subscription_by_name(None, "sub").last_event_id == 0


# -- transaction lifecycle -----------------------------------------------------------
def test_a_transaction_doomed_by_a_duplicate_cannot_commit(engine: MemoryStorageEngine) -> None:
    type_id, event_type_id = _setup(engine)
    target = engine.new_aggregate(None, type_id)
    engine.write_state(None, [_event(target, 1, event_type_id)], [])
    tx = engine.get_transaction_info()
    engine.write_state(tx, [_event(target, 2, event_type_id)], [])
    with pytest.raises(ConcurrencyError):
        engine.write_state(tx, [_event(target, 1, event_type_id)], [])
    with pytest.raises(StorageEngineError, match="nothing was written"):
        tx.commit()
    assert engine.get_max_event_id(None) == 1


def test_a_finished_transaction_cannot_be_used(engine: MemoryStorageEngine) -> None:
    tx = engine.get_transaction_info()
    tx.commit()
    with pytest.raises(StorageEngineError, match="finished"):
        engine.get_aggregate_type_id(tx, "late")
    with pytest.raises(StorageEngineError, match="finished"):
        tx.commit()
    tx.rollback()


def test_a_foreign_transaction_is_refused(engine: MemoryStorageEngine) -> None:
    other = open_memory_engine("memory://")
    with pytest.raises(StorageEngineError, match="not a transaction of this"):
        engine.get_aggregate_types(other.get_transaction_info())


def test_close_wakes_a_waiter(engine: MemoryStorageEngine) -> None:
    woke = threading.Event()

    def wait() -> None:
        engine.wait_for_events(0, 30.0)
        woke.set()

    waiter = threading.Thread(target=wait)
    waiter.start()
    engine.close()
    assert woke.wait(5.0)
    waiter.join()


# -- the write path against a model --------------------------------------------------
_Run = tuple[int, int, int, bool]  # aggregate number, first sequence, length, backwards
_Round = tuple[list[list[_Run]], list[list[_Run]], bool]  # two transactions' batches; order


class _WritePathModel:
    """The engine's write rules, spelt out: a pair (aggregate, sequence) may be stored
    once; a batch repeating a stored, buffered or its own pair is refused naming the
    first such pair, and so is a commit whose buffer holds a pair stored meanwhile."""

    def __init__(self, engine: MemoryStorageEngine, seconds: list[int]) -> None:
        self.engine = engine
        type_id, self.event_type_id = _setup(engine)
        self.aggregates = [engine.new_aggregate(None, type_id) for _ in range(3)]
        self.clock = itertools.cycle([T0 + timedelta(seconds=s) for s in seconds])
        self.log: list[StorageEngineEvent] = []  # committed, in commit order
        self.states = itertools.count()

    def batch(self, runs: list[_Run]) -> list[StorageEngineEvent]:
        """Contiguous runs take the engine's fast path; backward runs, gaps and
        repeats its exact check."""
        events = []
        for number, first, length, backwards in runs:
            sequences = range(first, first + length)
            for sequence in reversed(sequences) if backwards else sequences:
                state = str(next(self.states))
                aggregate_id = self.aggregates[number - 1]
                events.append(
                    StorageEngineEvent(
                        aggregate_id, sequence, self.event_type_id, state, next(self.clock), ""
                    )
                )
        return events

    def write(
        self, tx: MemoryTransaction, buffer: list[StorageEngineEvent], runs: list[_Run]
    ) -> bool:
        """Write a batch into ``tx``; False when it is (rightly) refused."""
        events = self.batch(runs)
        clash = _first_clash(events, [*self.log, *buffer])
        if clash is None:
            self.engine.write_state(tx, events, [])
            buffer += events
            return True
        with pytest.raises(ConcurrencyError) as caught:
            self.engine.write_state(tx, events, [])
        assert (caught.value.aggregate_id, caught.value.sequence) == clash
        return False

    def commit(self, tx: MemoryTransaction, buffer: list[StorageEngineEvent]) -> None:
        """Commit ``tx``, or see it refused when another commit took one of its pairs."""
        for aggregate_id in self.aggregates:
            seen = self.engine.get_events_for_aggregate(tx, aggregate_id, 0)
            assert _rows(seen) == _sorted_rows([*self.log, *buffer], aggregate_id)
        stored = {(e.aggregate_id, e.sequence) for e in self.log}
        clash = next(((e.aggregate_id, e.sequence) for e in buffer if e[:2] in stored), None)
        if clash is None:
            tx.commit()
            self.log += buffer
            return
        with pytest.raises(ConcurrencyError) as caught:
            tx.commit()
        assert (caught.value.aggregate_id, caught.value.sequence) == clash

    def play(self, first: list[list[_Run]], second: list[list[_Run]], swap: bool) -> None:
        """Two transactions write their batches, then commit in either order."""
        txs = [self.engine.get_transaction_info(), self.engine.get_transaction_info()]
        buffers: list[list[StorageEngineEvent]] = [[], []]
        doomed = [False, False]
        for which, batches in enumerate((first, second)):
            doomed[which] = not all(self.write(txs[which], buffers[which], b) for b in batches)
        for which in (1, 0) if swap else (0, 1):
            if doomed[which]:
                txs[which].rollback()
            else:
                self.commit(txs[which], buffers[which])

    def check_reads(self) -> None:
        """Every read path returns exactly the committed events."""
        everything = self.engine.get_events_for_subscription(
            None, Subscription(id=0, name=""), 10**4
        )
        assert [(e.aggregate_id, e.sequence, e.state, e.event_time) for e in everything] == [
            (e.aggregate_id, e.sequence, e.state, e.event_time) for e in self.log
        ]
        assert [e.event_id for e in everything] == list(range(1, len(self.log) + 1))
        for aggregate_id in self.aggregates:
            for after in (0, 2, 5):
                read = self.engine.get_events_for_aggregate(None, aggregate_id, after)
                expected = [r for r in _sorted_rows(self.log, aggregate_id) if r[0] > after]
                assert _rows(read) == expected
        for second in (0, 7, 20, 41):
            moment = T0 + timedelta(seconds=second)
            first = next((i for i, e in enumerate(self.log, 1) if e.event_time >= moment), 0)
            assert self.engine.get_first_event_id_from_timestamp(None, moment) == first


def _first_clash(
    events: list[StorageEngineEvent], stored: list[StorageEngineEvent]
) -> tuple[int, int] | None:
    """The first pair of ``events`` already stored or earlier in the batch."""
    seen = {(e.aggregate_id, e.sequence) for e in stored}
    for event in events:
        pair = (event.aggregate_id, event.sequence)
        if pair in seen:
            return pair
        seen.add(pair)
    return None


def _rows(events: list[SerializedEvent]) -> list[tuple[int, str]]:
    return [(e.sequence, e.state) for e in events]


def _sorted_rows(events: list[StorageEngineEvent], aggregate_id: int) -> list[tuple[int, str]]:
    """An aggregate's events by sequence; on a tie (a transaction's own copy of a pair
    committed meanwhile, refused at its commit) the committed one first."""
    rows = [(e.sequence, e.state) for e in events if e.aggregate_id == aggregate_id]
    return sorted(rows, key=lambda row: row[0])


_runs = st.lists(
    st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 4), st.booleans()),
    min_size=1,
    max_size=3,
)
_batches = st.lists(_runs, min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(
    rounds=st.lists(st.tuples(_batches, _batches, st.booleans()), min_size=1, max_size=4),
    seconds=st.lists(st.integers(0, 40), min_size=1, max_size=50),
)
def test_write_path_matches_a_model(rounds: list[_Round], seconds: list[int]) -> None:
    """Random batches (runs forward and backward, gaps, repeats) from pairs of
    concurrent transactions: every refusal names the right pair, and every read path
    returns exactly what was committed, in order."""
    model = _WritePathModel(open_memory_engine("memory://"), seconds)
    for first, second, swap in rounds:
        model.play(first, second, swap)
    model.check_reads()
