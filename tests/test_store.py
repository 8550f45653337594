"""Store-level behaviour through the facade, on the memory engine.

Also guards against the known defects of the Go original: type ids cached from a
rolled-back transaction, warmup leaving a transaction open, key changes of
aggregates created without a key, and a missing sequence check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import evercore
import pytest
from evercore import (
    ConcurrencyError,
    ConstraintViolationError,
    DecodeError,
    EventStateIsNotAStateEvent,
    EventStore,
    KeyTooLongError,
    NotFoundError,
    SequenceError,
    SerializationError,
    SerializedEvent,
    Snapshot,
    StateAggregate,
    StateEvent,
)


@evercore.state_event
@dataclass
class AccountOpened:
    owner: str
    balance: int = 0


@evercore.state_event(name="Deposited.v2")
@dataclass
class Deposited:
    balance: int | None = None
    memo: str | None = None


@dataclass
class Account:
    owner: str = ""
    balance: int = 0
    memo: str = ""
    tags: list[str] = field(default_factory=list)


class AccountAggregate(StateAggregate[Account]):
    pass


@evercore.event
@dataclass
class Frozen:
    reason: str


class FreezableAccount(StateAggregate[Account]):
    aggregate_type = "FreezableAccount"
    snapshot_frequency = 0

    def __init__(self) -> None:
        super().__init__()
        self.frozen_reason = ""

    def handle_other_events(self, event: evercore.EventState, event_time: datetime,
                            reference: str) -> None:
        if isinstance(event, Frozen):
            self.frozen_reason = event.reason
        else:
            super().handle_other_events(event, event_time, reference)


class Boom(Exception):
    pass


@pytest.fixture
def store() -> EventStore:
    with evercore.connect("memory://") as s:
        yield s


def open_account(store: EventStore, owner: str, key: str | None = None) -> int:
    def body(ctx: evercore.EventStoreContext) -> int:
        agg = AccountAggregate()
        if key is None:
            ctx.create_aggregate_into(agg)
        else:
            ctx.create_aggregate_with_key_into(agg, key)
        ctx.apply_event_to(agg, AccountOpened(owner=owner))
        return agg.id

    return store.in_context(body)


def load(store: EventStore, aggregate_id: int) -> AccountAggregate:
    agg = AccountAggregate()
    store.with_readonly_context(lambda ctx: ctx.load_state_into(agg, aggregate_id))
    return agg


def test_state_aggregate_defaults_follow_go() -> None:
    assert AccountAggregate.aggregate_type == "Account"
    assert AccountAggregate.snapshot_frequency == 10
    assert AccountAggregate().state == Account()
    assert StateEvent(Deposited(balance=1)).event_type == "Deposited.v2"
    assert StateEvent(AccountOpened("a")).event_type == "AccountOpened"


def test_write_then_load_round_trips_state_and_sequence(store: EventStore) -> None:
    aggregate_id = open_account(store, "ada")
    with store.context() as ctx:
        agg = AccountAggregate()
        ctx.load_state_into(agg, aggregate_id)
        ctx.apply_event_to(agg, Deposited(balance=40, memo="salary"), reference="ref-1")
    loaded = load(store, aggregate_id)
    assert loaded.id == aggregate_id
    assert loaded.sequence == 2
    assert loaded.state == Account(owner="ada", balance=40, memo="salary")


def test_copy_fields_skips_none_values(store: EventStore) -> None:
    aggregate_id = open_account(store, "bob")
    with store.context() as ctx:
        agg = AccountAggregate()
        ctx.load_state_into(agg, aggregate_id)
        ctx.apply_event_to(agg, Deposited(balance=5, memo="first"))
        ctx.apply_event_to(agg, Deposited(balance=None, memo="second"))
        assert agg.state.balance == 5
    assert load(store, aggregate_id).state == Account(owner="bob", balance=5, memo="second")


def test_exception_in_context_writes_nothing_and_propagates_unchanged(store: EventStore) -> None:
    aggregate_id = open_account(store, "carol")
    error = Boom("inside")
    with pytest.raises(Boom) as raised, store.context() as ctx:
        agg = AccountAggregate()
        ctx.load_state_into(agg, aggregate_id)
        ctx.apply_event_to(agg, Deposited(balance=99))
        ctx.create_aggregate_with_key_into(AccountAggregate(), "never-kept")
        raise error
    assert raised.value is error
    assert load(store, aggregate_id).sequence == 1
    with pytest.raises(NotFoundError):
        store.in_readonly_context(
            lambda ctx: ctx.load_aggregate_state_by_key("Account", "never-kept")
        )


def test_function_forms_return_values(store: EventStore) -> None:
    aggregate_id = open_account(store, "dan")
    state = store.in_readonly_context(lambda ctx: ctx.load_aggregate_state("Account", aggregate_id))
    assert state.aggregate_id == aggregate_id
    assert state.natural_key is None
    assert [e.event_type for e in state.events] == ["AccountOpened"]
    assert store.in_context(lambda ctx: 42) == 42


def test_snapshot_every_frequency_and_load_is_snapshot_plus_later_events(store: EventStore) -> None:
    aggregate_id = open_account(store, "erin")
    with store.context() as ctx:
        agg = AccountAggregate()
        ctx.load_state_into(agg, aggregate_id)
        for amount in range(1, 13):  # sequences 2..13: a snapshot at 10
            ctx.apply_event_to(agg, Deposited(balance=amount))
    state = store.in_readonly_context(lambda ctx: ctx.load_aggregate_state("Account", aggregate_id))
    assert state.snapshot is not None
    assert state.snapshot.sequence == 10
    assert [e.sequence for e in state.events] == [11, 12, 13]
    loaded = load(store, aggregate_id)
    assert loaded.sequence == 13
    assert loaded.state.balance == 12


def test_natural_keys_load_or_create_and_key_change(store: EventStore) -> None:
    with store.context() as ctx:
        first = AccountAggregate()
        assert ctx.load_or_create_aggregate(first, "acct-1") is True
        ctx.apply_event_to(first, AccountOpened(owner="fay"))
    with store.context() as ctx:
        again = AccountAggregate()
        assert ctx.load_or_create_aggregate(again, "acct-1") is False
        assert (again.id, again.sequence, again.state.owner) == (first.id, 1, "fay")
        ctx.change_aggregate_natural_key(again.id, "acct-renamed")
    by_key = AccountAggregate()
    store.with_readonly_context(lambda ctx: ctx.load_state_by_key_into(by_key, "acct-renamed"))
    assert by_key.id == first.id
    with pytest.raises(NotFoundError):
        store.with_readonly_context(lambda ctx: ctx.load_state_by_key_into(by_key, "acct-1"))


def test_key_change_of_aggregate_created_without_key(store: EventStore) -> None:
    aggregate_id = open_account(store, "gus")
    store.with_context(lambda ctx: ctx.change_aggregate_natural_key(aggregate_id, "gus-key"))
    state = store.in_readonly_context(
        lambda ctx: ctx.load_aggregate_state_by_key("Account", "gus-key")
    )
    assert state.aggregate_id == aggregate_id
    assert state.natural_key == "gus-key"


def test_duplicate_and_over_long_keys(store: EventStore) -> None:
    open_account(store, "hal", key="k" * 64)
    with pytest.raises(ConstraintViolationError, match="k" * 10):
        open_account(store, "hal2", key="k" * 64)
    with pytest.raises(KeyTooLongError, match="65 characters"):
        open_account(store, "ivy", key="x" * 65)


def test_wrong_aggregate_type_is_not_found(store: EventStore) -> None:
    aggregate_id = open_account(store, "jon")
    with pytest.raises(NotFoundError):
        store.in_readonly_context(lambda ctx: ctx.load_aggregate_state("Other", aggregate_id))


def test_sequence_error_for_non_contiguous_events_before_any_io(store: EventStore) -> None:
    aggregate_id = open_account(store, "kim")
    stamp = datetime(2024, 1, 1, tzinfo=timezone.utc)
    gap = SerializedEvent(0, aggregate_id, "Deposited.v2", '{"balance":1}', 3, "", stamp)
    with pytest.raises(SequenceError) as raised, store.context() as ctx:
        agg = AccountAggregate()
        ctx.load_state_into(agg, aggregate_id)
        ctx.publish(gap)  # the aggregate is at 1: 3 skips 2
    assert (raised.value.aggregate_id, raised.value.sequence) == (aggregate_id, 3)
    assert str(aggregate_id) in str(raised.value)
    assert load(store, aggregate_id).sequence == 1
    below_one = gap._replace(sequence=0)
    with pytest.raises(SequenceError, match="below 1"):
        store.with_context(lambda ctx: ctx.publish(below_one))


def test_stale_writer_gets_concurrency_error(store: EventStore) -> None:
    aggregate_id = open_account(store, "lea")
    first, second = AccountAggregate(), AccountAggregate()
    store.with_readonly_context(lambda ctx: ctx.load_state_into(first, aggregate_id))
    store.with_readonly_context(lambda ctx: ctx.load_state_into(second, aggregate_id))
    store.with_context(lambda ctx: ctx.apply_event_to(first, Deposited(balance=1)))
    with pytest.raises(ConcurrencyError) as raised:
        store.with_context(lambda ctx: ctx.apply_event_to(second, Deposited(balance=2)))
    assert (raised.value.aggregate_id, raised.value.sequence) == (aggregate_id, 2)
    assert load(store, aggregate_id).state.balance == 1


def test_rolled_back_type_ids_are_not_cached() -> None:
    store = evercore.connect("memory://")
    with pytest.raises(Boom), store.context() as ctx:
        ctx.new_aggregate_id("Ephemeral")
        raise Boom()
    # The engine never committed "Ephemeral"; a later context must register it anew
    # rather than trust an id cached from the rolled-back transaction.
    with store.context() as ctx:
        aggregate_id = ctx.new_aggregate_id("Ephemeral")
    registered = {p.name: p.id for p in store.storage_engine.get_aggregate_types(None)}
    assert "Ephemeral" in registered
    found = store.in_readonly_context(
        lambda ctx: ctx.load_aggregate_state("Ephemeral", aggregate_id)
    )
    assert found.aggregate_id == aggregate_id


def test_warmup_keeps_ids_and_leaves_no_transaction_open(store: EventStore) -> None:
    store.warmup(["Account", "Ledger"], ["AccountOpened", "Deposited.v2"])
    engine = store.storage_engine
    assert {"Account", "Ledger"} <= {p.name for p in engine.get_aggregate_types(None)}
    assert {"AccountOpened", "Deposited.v2"} <= {p.name for p in engine.get_event_types(None)}
    # A writer on another thread is not blocked by a transaction left open by warmup.
    done = threading.Event()
    threading.Thread(target=lambda: (open_account(store, "max"), done.set())).start()
    assert done.wait(5)


def test_handle_other_events_and_not_a_state_event(store: EventStore) -> None:
    with store.context() as ctx:
        agg = FreezableAccount()
        ctx.create_aggregate_into(agg)
        ctx.apply_event_to(agg, AccountOpened(owner="ned"))
        ctx.apply_event_to(agg, Frozen(reason="audit"))
        aggregate_id = agg.id
    loaded = FreezableAccount()
    store.with_readonly_context(lambda ctx: ctx.load_state_into(loaded, aggregate_id))
    assert (loaded.frozen_reason, loaded.state.owner, loaded.sequence) == ("audit", "ned", 2)
    with pytest.raises(EventStateIsNotAStateEvent, match="Frozen"), store.context() as ctx:
        plain = AccountAggregate()
        ctx.create_aggregate_into(plain)
        ctx.apply_event_to(plain, Frozen(reason="nope"))


def test_decode_event_and_custom_decoders() -> None:
    stamp = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    stored = SerializedEvent(7, 1, "Deposited.v2", '{"balance":3,"memo":null}', 2, "", stamp)
    is_state, decoded = evercore.decode_event(stored)
    assert is_state is True
    assert decoded == StateEvent(Deposited(balance=3, memo=None))

    @dataclass
    class Legacy:
        text: str
        event_type: str = "Legacy"

        def serialize(self) -> str:
            return self.text

    evercore.register_event_decoder(
        lambda ev: Legacy(ev.state) if ev.event_type == "Legacy" else None
    )
    is_state, legacy = evercore.decode_event(stored._replace(event_type="Legacy", state="raw"))
    assert (is_state, legacy) == (False, Legacy("raw"))
    with pytest.raises(DecodeError, match="NoSuchType"):
        evercore.decode_event(stored._replace(event_type="NoSuchType"))
    with pytest.raises(DecodeError, match=r"Deposited\.v2"):
        evercore.decode_event(stored._replace(state="{not json"))


def test_unserializable_payload_names_event_type_and_field(store: EventStore) -> None:
    @evercore.state_event
    @dataclass
    class Weird:
        balance: object = None

    with pytest.raises(SerializationError, match=r"Weird.*balance"), store.context() as ctx:
        agg = AccountAggregate()
        ctx.create_aggregate_into(agg)
        ctx.apply_event_to(agg, Weird(balance=object()))
    with pytest.raises(SerializationError, match="NaN"), store.context() as ctx:
        agg = AccountAggregate()
        ctx.create_aggregate_into(agg)
        ctx.apply_event_to(agg, Weird(balance=float("nan")))


def test_event_time_and_reference_round_trip(store: EventStore) -> None:
    stamp = datetime(2023, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=2)))
    with store.context() as ctx:
        agg = AccountAggregate()
        ctx.create_aggregate_into(agg)
        ctx.apply_event_to(agg, AccountOpened(owner="ola"), time=stamp, reference="r-9")
    state = store.in_readonly_context(lambda ctx: ctx.load_aggregate_state("Account", agg.id))
    (stored,) = state.events
    assert stored.event_time == stamp
    assert stored.event_time.tzinfo == timezone.utc
    assert stored.reference == "r-9"
    with pytest.raises(evercore.InvalidEventError, match="timezone"), store.context() as ctx:
        ctx.apply_event_to(agg, Deposited(balance=1), time=datetime(2024, 1, 1))
    bad_time = SerializedEvent(0, agg.id, "Deposited.v2", "{}", 2, "", "yesterday")  # type: ignore[arg-type]
    with pytest.raises(evercore.InvalidEventError, match="yesterday"), store.context() as ctx:
        ctx.publish(bad_time)
    with pytest.raises(evercore.InvalidEventError, match="neither"), store.context() as ctx:
        ctx.apply_event_to(agg, {"not": "an event"})


def test_save_state_writes_serialized_events_and_snapshots(store: EventStore) -> None:
    aggregate_id = store.in_context(lambda ctx: ctx.new_aggregate_id("Account"))
    stamp = datetime(2024, 1, 1, tzinfo=timezone.utc)
    events = [
        SerializedEvent(0, aggregate_id, "AccountOpened", '{"owner":"pia"}', 1, "", stamp),
        SerializedEvent(0, aggregate_id, "Deposited.v2", '{"balance":8}', 2, "", stamp),
    ]
    tx = store.storage_engine.get_transaction_info()
    store.save_state(tx, events, [Snapshot(aggregate_id, '{"owner":"pia","balance":8}', 2)])
    tx.commit()
    state = store.in_readonly_context(lambda ctx: ctx.load_aggregate_state("Account", aggregate_id))
    assert state.snapshot == Snapshot(aggregate_id, '{"owner":"pia","balance":8}', 2)
    assert load(store, aggregate_id).state.balance == 8


def test_frozen_and_pydantic_and_msgspec_states(store: EventStore) -> None:
    import msgspec
    import pydantic

    class PydState(pydantic.BaseModel):
        owner: str = ""
        balance: int = 0

    class StructState(msgspec.Struct):
        owner: str = ""
        balance: int = 0

    @dataclass(frozen=True)
    class FrozenState:
        owner: str = ""
        balance: int = 0

    class PydAgg(StateAggregate[PydState]):
        snapshot_frequency = 2

    class StructAgg(StateAggregate[StructState]):
        snapshot_frequency = 2

    class FrozenAgg(StateAggregate[FrozenState]):
        snapshot_frequency = 2

    for cls in (PydAgg, StructAgg, FrozenAgg):
        with store.context() as ctx:
            agg = cls()
            ctx.create_aggregate_into(agg)
            ctx.apply_event_to(agg, AccountOpened(owner="quinn"))
            ctx.apply_event_to(agg, Deposited(balance=11))
            ctx.apply_event_to(agg, Deposited(balance=12))
        loaded = cls()
        store.with_readonly_context(lambda ctx, a=loaded, i=agg.id: ctx.load_state_into(a, i))
        assert (loaded.state.owner, loaded.state.balance, loaded.sequence) == ("quinn", 12, 3)


def test_concurrent_contexts_on_one_aggregate_one_wins(store: EventStore) -> None:
    aggregate_id = open_account(store, "rae")
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def writer(amount: int) -> None:
        agg = AccountAggregate()
        try:
            with store.context() as ctx:
                ctx.load_state_into(agg, aggregate_id)
                barrier.wait(5)
                ctx.apply_event_to(agg, Deposited(balance=amount))
            outcomes.append("ok")
        except ConcurrencyError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "ok"]
    assert load(store, aggregate_id).sequence == 2


def test_loading_a_corrupt_state_event_raises_decode_error(store: EventStore) -> None:
    aggregate_id = open_account(store, "uma")
    stamp = datetime(2024, 1, 1, tzinfo=timezone.utc)
    corrupt = SerializedEvent(0, aggregate_id, "Deposited.v2", '{"balance": "many"', 2, "", stamp)
    store.with_context(lambda ctx: ctx.publish(corrupt))
    with pytest.raises(DecodeError, match=r"Deposited\.v2"):
        load(store, aggregate_id)
