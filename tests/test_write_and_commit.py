"""``EventStore.context()`` and the optional ``SupportsWriteAndCommit`` capability.

The engines here wrap the memory engine and record which SPI calls the facade
makes: one offers ``write_state_and_commit`` (done the plain way, as the SPI
defines its outcome), the other does not. PostgreSQL's own implementation is
covered by the conformance suite and ``tests/test_postgres_write_and_commit.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import evercore
import pytest
from evercore import ConcurrencyError, EventStore, Snapshot, StateAggregate
from evercore.engines.memory.engine import MemoryStorageEngine
from evercore.spi import SupportsWriteAndCommit, Transaction
from evercore.values import StorageEngineEvent


@evercore.state_event(name="wac.Opened")
@dataclass
class Opened:
    owner: str


@evercore.state_event(name="wac.Renamed")
@dataclass
class Renamed:
    owner: str


@dataclass
class Holder:
    owner: str = ""


class HolderAggregate(StateAggregate[Holder]):
    aggregate_type = "wac.Holder"


class Recording:
    """The memory engine, recording the writing calls it receives."""

    def __init__(self) -> None:
        self.inner = MemoryStorageEngine()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get_transaction_info(self) -> Transaction:
        tx = self.inner.get_transaction_info()
        self.calls.append("begin")
        return tx

    def write_state(
        self,
        tx: Transaction | None,
        events: Sequence[StorageEngineEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        self.calls.append("write_state")
        self.inner.write_state(tx, events, snapshots)


class RecordingWithWriteAndCommit(Recording):
    """Also offers ``write_state_and_commit``, with the outcome the SPI defines."""

    def write_state_and_commit(
        self,
        tx: Transaction,
        events: Sequence[StorageEngineEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        self.calls.append("write_state_and_commit")
        try:
            self.inner.write_state(tx, events, snapshots)
        except BaseException:
            tx.rollback()
            raise
        tx.commit()


def _open(store: EventStore, owner: str) -> int:
    def body(ctx: evercore.EventStoreContext) -> int:
        agg = HolderAggregate()
        ctx.create_aggregate_into(agg)
        ctx.apply_event_to(agg, Opened(owner=owner))
        return agg.id

    return store.in_context(body)


def _load(store: EventStore, aggregate_id: int) -> HolderAggregate:
    agg = HolderAggregate()
    store.with_readonly_context(lambda ctx: ctx.load_state_into(agg, aggregate_id))
    return agg


def test_the_capability_is_recognised() -> None:
    assert isinstance(RecordingWithWriteAndCommit(), SupportsWriteAndCommit)
    assert not isinstance(Recording(), SupportsWriteAndCommit)
    assert not isinstance(MemoryStorageEngine(), SupportsWriteAndCommit)


@pytest.mark.parametrize(
    ("engine_class", "write_call"),
    [(RecordingWithWriteAndCommit, "write_state_and_commit"), (Recording, "write_state")],
    ids=["capable", "plain"],
)
def test_a_context_writes_its_batch_with_the_capability_when_present(
    engine_class: type[Recording], write_call: str
) -> None:
    engine = engine_class()
    store = EventStore(engine)
    aggregate_id = _open(store, "ada")
    agg = _load(store, aggregate_id)
    engine.calls.clear()
    with store.context() as ctx:
        ctx.apply_event_to(agg, Renamed(owner="grace"))
    assert engine.calls == ["begin", write_call]
    loaded = _load(store, aggregate_id)
    assert (loaded.sequence, loaded.state.owner) == (2, "grace")


def test_a_context_that_captured_nothing_just_commits() -> None:
    engine = RecordingWithWriteAndCommit()
    store = EventStore(engine)
    with store.context() as ctx:
        aggregate_id = ctx.new_aggregate_id("wac.Holder")
    assert engine.calls == ["begin"]
    assert _load(store, aggregate_id).id == aggregate_id


def test_snapshots_alone_go_through_the_capability() -> None:
    engine = RecordingWithWriteAndCommit()
    store = EventStore(engine)
    aggregate_id = _open(store, "ada")
    engine.calls.clear()
    with store.context() as ctx:
        ctx.save_snapshot(Snapshot(aggregate_id, '{"owner":"ada"}', 1))
    assert engine.calls == ["begin", "write_state_and_commit"]
    assert engine.inner.get_snapshot_for_aggregate(None, aggregate_id) == Snapshot(
        aggregate_id, '{"owner":"ada"}', 1
    )


def test_save_state_never_commits_even_with_the_capability() -> None:
    engine = RecordingWithWriteAndCommit()
    store = EventStore(engine)
    aggregate_id = _open(store, "ada")
    stored = engine.inner.get_events_for_aggregate(None, aggregate_id, 0)
    engine.calls.clear()

    class Abandon(Exception):
        pass

    with pytest.raises(Abandon), store.context() as ctx:
        later = stored[0]._replace(sequence=2, reference="by save_state")
        store.save_state(ctx.transaction, [later], [])
        raise Abandon
    assert engine.calls == ["begin", "write_state"]
    assert len(engine.inner.get_events_for_aggregate(None, aggregate_id, 0)) == 1


def test_a_failed_write_and_commit_keeps_nothing_and_caches_no_type_id() -> None:
    engine = RecordingWithWriteAndCommit()
    store = EventStore(engine)
    aggregate_id = _open(store, "ada")
    stale, current = _load(store, aggregate_id), _load(store, aggregate_id)
    with store.context() as ctx:
        ctx.apply_event_to(current, Opened(owner="first"))

    @evercore.state_event(name="wac.FirstSeenInAFailedContext")
    @dataclass
    class FirstSeen:
        owner: str

    engine.calls.clear()
    with pytest.raises(ConcurrencyError) as raised, store.context() as ctx:
        ctx.new_aggregate_id("wac.Holder")
        ctx.apply_event_to(stale, FirstSeen(owner="lost"))
    assert (raised.value.aggregate_id, raised.value.sequence) == (aggregate_id, 2)
    assert engine.calls == ["begin", "write_state_and_commit"]
    assert "wac.FirstSeenInAFailedContext" not in {p.name for p in engine.get_event_types(None)}
    assert engine.get_counts(None).aggregates == 1  # the new aggregate was rolled back
    assert [e.sequence for e in engine.get_events_for_aggregate(None, aggregate_id, 0)] == [1, 2]
    # The id registered by the failed context was not cached: using the type again
    # registers it anew, and the event reads back under its name.
    with store.context() as ctx:
        ctx.apply_event_to(current, FirstSeen(owner="kept"))
    events = engine.get_events_for_aggregate(None, aggregate_id, 0)
    assert events[-1].event_type == "wac.FirstSeenInAFailedContext"
