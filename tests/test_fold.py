"""Rehydration by the fold kernel (``evercore._fold``) leaves exactly the state that
decoding and copying event by event leaves.

Three layers: the Rust kernel agrees with its pure twin on random and broken JSON;
``fold_into`` agrees with the event-by-event fold on random histories of several
payload classes (defaults, nulls, missing and extra keys, mutable and frozen states);
and classes the kernel does not model are left to the event-by-event fold.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import InitVar, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest
from evercore import StateAggregate, _core, _pure, events, state_event
from evercore._fold import fold_into
from evercore.context import _fold_one_by_one
from evercore.errors import DecodeError
from evercore.events import register_event_decoder
from evercore.values import SerializedEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.fixture(autouse=True)
def no_custom_decoders(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoders registered by other test modules would take precedence over the event
    classes (and switch the kernel off); this module starts without any."""
    monkeypatch.setattr(events, "_decoders", [])
    monkeypatch.setattr(events, "_generation", events.registry_generation() + 1)


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AT = datetime(2026, 11, 29, tzinfo=timezone.utc)


def stored(event_type: str, states: list[str]) -> list[SerializedEvent]:
    return [
        SerializedEvent(n, 1, event_type, text, n, "", AT) for n, text in enumerate(states, 1)
    ]


# -- the kernel against its twin ---------------------------------------------------------

FIELDS = ["name", "amount", "memo", "tags"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
documents = st.dictionaries(st.sampled_from([*FIELDS, "other", "n\u00e4me"]), json_values)


@st.composite
def texts(draw: st.DrawFn) -> str:
    """JSON as our serializer writes it, as other writers might (spaces, escaped keys,
    NaN), and broken: cut, spliced or random."""
    text = json.dumps(draw(documents), ensure_ascii=draw(st.booleans()))
    match draw(st.integers(0, 5)):
        case 0:
            return text
        case 1:
            return text.replace('"name"', '"n\\u0061me"').replace(":", " : ")
        case 2:
            cut = draw(st.integers(0, len(text)))
            return text[:cut] + draw(st.text(max_size=3)) + text[cut + 1 :]
        case 3:
            return f" {text}\n"
        case 4:
            return draw(st.sampled_from(["[]", '"x"', "1", "{", '{"name":1,}', '{"name":01}']))
        case _:
            return draw(st.text(max_size=12))


def shout(value: Any) -> str:
    """A converter that fails (AttributeError) on anything but a str."""
    return str(value.upper())


def columns(values: Any) -> Any:
    return st.lists(values, min_size=len(FIELDS), max_size=len(FIELDS))


plans = st.lists(
    st.tuples(
        columns(st.integers(0, 3)).map(bytes),
        columns(st.sampled_from([None, "", 0, "dflt"])),
        columns(st.sampled_from([None, None, str, shout])),
    ),
    min_size=1,
    max_size=3,
)


def canonical(result: dict[str, object] | None) -> str:
    """Comparable form (NaN is not equal to itself)."""
    return json.dumps(result, sort_keys=True, default=repr)


@PROPERTY
@given(plan_list=plans, history=st.lists(st.tuples(st.integers(0, 2), texts()), max_size=6))
def test_kernel_agrees_with_twin(
    plan_list: list[tuple[bytes, list[object], list[Any]]], history: list[tuple[int, str]]
) -> None:
    types = {f"T{n}": n for n in range(len(plan_list))}
    events = [
        SerializedEvent(n, 1, f"T{plan % len(plan_list)}", text, n, "", AT)
        for n, (plan, text) in enumerate(history, 1)
    ]
    kinds, defaults, converters = (list(column) for column in zip(*plan_list, strict=True))
    rust = _core.fold_state_fields(events, types, kinds, defaults, converters, FIELDS)
    twin = _pure.fold_state_fields(events, types, kinds, defaults, converters, FIELDS)
    assert canonical(rust) == canonical(twin)


@pytest.mark.parametrize(
    "text",
    [
        '{"name":NaN,"amount":-Infinity}',
        '{"name":"\\ud800","amount":[1,{"a":[]}],"name":null}',
        '{"amount":1' + "0" * 600 + "}",
        '{"amount":' + "[" * 256 + "]" * 256 + "}",
        '{"amount":' + "[" * 255 + "]" * 255 + "}",
        '{"amount":1,"name":"\ud800"}',
        '{"amount":1.5E+3}',
        "\ufeff{}",
    ],
)
def test_kernel_agrees_with_twin_at_the_edges(text: str) -> None:
    args = (
        stored("T", [text]),
        {"T": 0},
        [bytes([2, 1, 0, 0])],
        [["x", None, None, None]],
        [[None, None, None, shout]],
    )
    assert canonical(_core.fold_state_fields(*args, FIELDS)) == canonical(
        _pure.fold_state_fields(*args, FIELDS)
    )


def test_an_unknown_event_type_is_a_key_error_in_both() -> None:
    for kernel in (_core.fold_state_fields, _pure.fold_state_fields):
        with pytest.raises(KeyError, match="Unknown"):
            kernel(stored("Unknown", ["{}"]), {}, [], [], [], [])


@pytest.mark.parametrize(
    ("kinds", "defaults", "converters"),
    [
        ([b"\x01"], [[None, None]], [[None]]),
        ([b"\x09"], [[None]], [[None]]),
        ([b"\x01", b"\x01"], [[None]], [[None]]),
        ([b"\x01"], [[None]], []),
    ],
)
def test_malformed_plans_are_value_errors_in_both(
    kinds: list[bytes], defaults: Any, converters: Any
) -> None:
    for kernel in (_core.fold_state_fields, _pure.fold_state_fields):
        with pytest.raises(ValueError):
            kernel(stored("T", ["{}"]), {"T": 0}, kinds, defaults, converters, ["name"])


# -- fold_into against the event-by-event fold --------------------------------------------


@state_event(name="FoldStamped")
@dataclass
class Stamped:
    """Fields JSON does not give as they are: converted in every event."""

    at: datetime
    amount: int | None = None



@state_event(name="FoldOpened")
@dataclass
class Opened:
    """Required fields, one the state lacks."""

    name: str
    amount: int
    branch: str


@state_event(name="FoldChanged")
@dataclass
class Changed:
    """Fields with defaults, None and not."""

    amount: int | None = None
    memo: str = "(none)"
    note: Any = None


@state_event(name="FoldTagged")
@dataclass(frozen=True)
class Tagged:
    """A frozen payload with a nested value."""

    tags: list[str] | None = None
    name: str | None = None


@dataclass
class Account:
    name: str = ""
    at: datetime | None = None
    amount: int = 0
    memo: str = ""
    tags: list[str] | None = None
    note: Any = None


@dataclass(frozen=True)
class FrozenAccount:
    name: str = ""
    at: datetime | None = None
    amount: int = 0
    memo: str = ""
    tags: list[str] | None = None


class MutableAggregate(StateAggregate[Account]):
    """Folds onto a mutable dataclass."""


class FrozenAggregate(StateAggregate[FrozenAccount]):
    """Folds by replacing a frozen dataclass."""


payload_states = st.one_of(
    st.fixed_dictionaries(
        {"name": st.text(max_size=4), "amount": st.integers(), "branch": st.text(max_size=2)},
        optional={"extra": st.integers()},
    ).map(lambda d: ("FoldOpened", d)),
    st.fixed_dictionaries(
        {},
        optional={
            "amount": st.none() | st.integers(),
            "memo": st.none() | st.text(max_size=3),
            "note": json_values,
        },
    ).map(lambda d: ("FoldChanged", d)),
    st.fixed_dictionaries(
        {},
        optional={
            "tags": st.none() | st.lists(st.text(max_size=2), max_size=2),
            "name": st.none() | st.text(max_size=3),
        },
    ).map(lambda d: ("FoldTagged", d)),
    st.fixed_dictionaries(
        {"at": st.datetimes(timezones=st.just(timezone.utc)).map(datetime.isoformat)},
        optional={"amount": st.none() | st.integers()},
    ).map(lambda d: ("FoldStamped", d)),
)


@PROPERTY
@given(history=st.lists(payload_states, max_size=8), frozen=st.booleans())
def test_fold_into_leaves_the_state_the_one_by_one_fold_leaves(
    history: list[tuple[str, dict[str, Any]]], frozen: bool
) -> None:
    events = [
        SerializedEvent(n, 1, event_type, json.dumps(state), n, "", AT)
        for n, (event_type, state) in enumerate(history, 1)
    ]
    cls = FrozenAggregate if frozen else MutableAggregate
    fast, slow = cls(), cls()
    assert fold_into(fast, events)
    _fold_one_by_one(slow, events)  # type: ignore[arg-type]
    assert type(fast.state) is type(slow.state)
    assert canonical(dataclasses.asdict(fast.state)) == canonical(dataclasses.asdict(slow.state))


@pytest.mark.parametrize(
    ("event_type", "text"),
    [
        ("FoldOpened", '{"name":"a","amount":1}'),
        ("FoldOpened", '{"name":"a","amount":1,"branch":"b"'),
        ("FoldOpened", "[]"),
        ("FoldStamped", '{"at":"yesterday"}'),
        ("FoldStamped", '{"at":7}'),
    ],
)
def test_what_does_not_decode_is_left_to_the_one_by_one_fold(event_type: str, text: str) -> None:
    """A missing required field, broken JSON or a value that does not convert, even
    in an event whose value a later one replaces: the one-by-one fold reports it."""
    history = stored(event_type, [text]) + stored("FoldStamped", ['{"at":"2026-01-01T00:00"}'])
    agg = MutableAggregate()
    assert not fold_into(agg, history)
    assert agg.state == Account()
    with pytest.raises(DecodeError, match=event_type):
        _fold_one_by_one(agg, history)  # type: ignore[arg-type]



@state_event(name="FoldChecked")
@dataclass
class Checked:
    """``__post_init__`` may change or refuse values."""

    amount: int

    def __post_init__(self) -> None:
        self.amount = abs(self.amount)


@state_event(name="FoldListed")
@dataclass
class Listed:
    """A ``default_factory`` gives each instance its own object."""

    tags: list[str] = field(default_factory=list)


@state_event(name="FoldInit")
@dataclass
class CustomInit:
    """A hand-written ``__init__``."""

    amount: int

    def __init__(self, amount: int) -> None:
        self.amount = amount * 2


@state_event(name="FoldInitVar")
@dataclass
class WithInitVar:
    """An ``InitVar`` is an argument, not a field."""

    amount: int
    scale: InitVar[int] = 1


@pytest.mark.parametrize(
    ("event_type", "text"),
    [
        ("FoldChecked", '{"amount":-3}'),
        ("FoldListed", "{}"),
        ("FoldInit", '{"amount":2}'),
        ("FoldInitVar", '{"amount":2}'),
        ("NotAStateEvent", "{}"),
    ],
)
def test_payload_classes_the_kernel_does_not_model_fold_one_by_one(
    event_type: str, text: str
) -> None:
    agg = MutableAggregate()
    assert not fold_into(agg, stored("FoldChanged", ['{"amount":1}']) + stored(event_type, [text]))
    assert agg.state == Account()


@dataclass
class Audited:
    amount: int = 0

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)
        object.__setattr__(self, "touched", True)


class AuditedAggregate(StateAggregate[Audited]):
    """A state whose attribute setting does more than store."""


def test_a_state_with_its_own_setattr_folds_one_by_one() -> None:
    assert not fold_into(AuditedAggregate(), stored("FoldChanged", ['{"amount":1}']))


def test_registered_decoders_take_precedence_over_the_kernel() -> None:
    agg = MutableAggregate()
    assert fold_into(agg, stored("FoldChanged", ['{"amount":1}']))
    register_event_decoder(lambda ev: None)  # into this test's own list (see the fixture)
    assert not fold_into(MutableAggregate(), stored("FoldChanged", ['{"amount":1}']))


def test_the_store_rehydrates_through_the_kernel_to_the_same_state() -> None:
    import evercore

    with evercore.connect("memory://") as store:
        with store.context() as ctx:
            account = MutableAggregate()
            ctx.create_aggregate_into(account)
            ctx.apply_event_to(account, Opened("a", 1, "b"))
            ctx.apply_event_to(account, Changed(amount=None, memo="m"))
            ctx.apply_event_to(account, Tagged(tags=["x"]))
        with store.readonly_context() as ctx:
            loaded = MutableAggregate()
            ctx.load_state_into(loaded, account.id)
    assert loaded.state == account.state == Account("a", None, 1, "m", ["x"], None)
    assert loaded.sequence == 3
    assert dataclasses.asdict(loaded.state) == dataclasses.asdict(account.state)
