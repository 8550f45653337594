"""The Rust kernels (``evercore._core``) agree with their pure-Python twins
(``evercore._pure``): same results, same exception types, same messages.

Property tests draw random batches (empty ones, every Unicode plane, lone
surrogates, ints far beyond 64 bits, nested containers, NaN and infinities);
example tests pin the exact output of the cases people trip over. The binary
COPY data is checked against the real PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import enum
import gc
import json
import math
import os
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NamedTuple

import msgspec
import pydantic
import pytest
from evercore import _core, _kernels, _pure
from evercore.errors import SequenceError, SerializationError
from evercore.values import StorageEngineEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .services import POSTGRES_HOST, POSTGRES_PORT, ensure_postgres

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- payload types the serializers know -------------------------------------------


class Colour(enum.Enum):
    """An Enum whose values are serialized."""

    RED = "red"
    NESTED = (1, 2.5)


class Level(enum.IntEnum):
    """An IntEnum: serialized as the int it is."""

    LOW = 1


class Point(NamedTuple):
    """A NamedTuple: serialized as a list."""

    x: int
    y: float


@dataclasses.dataclass
class Moved:
    """A dataclass payload like the ones ``@state_event`` classes hold."""

    name: str
    at: datetime
    tags: list[str]
    extra: Any = None


@dataclasses.dataclass(frozen=True, slots=True)
class Slotted:
    """A frozen, slotted dataclass."""

    value: Any


class Model(pydantic.BaseModel):
    """A pydantic model (dumped with ``model_dump(mode="json")``)."""

    id: uuid.UUID
    amount: Decimal
    when: datetime


class Struct(msgspec.Struct):
    """A msgspec Struct (dumped with ``msgspec.to_builtins``)."""

    label: str
    count: int


class Unsupported:
    """No serializer knows this class."""


class Tag(str):
    """Subclasses of the built-in types take the kernel's slow path."""


class Count(int):
    """An int subclass: serialized as ``int(value)``."""


class Ratio(float):
    """A float subclass."""


class Stamp(datetime):
    """A datetime subclass."""


class Bag(dict):  # type: ignore[type-arg]
    """A dict subclass: read through ``items()`` like any Mapping."""


ZONES = [
    None,
    timezone.utc,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(-timedelta(hours=8)),
]

any_text = st.text(
    st.one_of(
        st.characters(codec=None, exclude_categories=()),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, exclude_categories=()),
        st.sampled_from('\x00\x1f\x7f"\\\u2028😀'),
    ),
    max_size=12,
)
"""Any code points: astral ones, control characters, JSON's specials and
(often enough to matter) lone surrogates."""

valid_text = st.text(st.characters(codec="utf-8"), max_size=12)

event_times = st.builds(
    lambda dt, zone: dt.replace(tzinfo=zone),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(ZONES),
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(),
    any_text,
    event_times,
    st.dates(),
    st.times(),
    st.uuids(),
    st.decimals(allow_nan=True),
    st.sampled_from([Colour.RED, Colour.NESTED, Level.LOW]),
    st.builds(Point, st.integers(), st.floats()),
    st.builds(Struct, valid_text, st.integers(-(2**63), 2**63 - 1)),
    st.builds(
        Model,
        id=st.uuids(),
        amount=st.decimals(allow_nan=False, allow_infinity=False, places=2),
        when=st.datetimes(timezones=st.sampled_from([timezone.utc])),
    ),
    st.just(Unsupported()),
    st.just({1, 2}),
    st.builds(Tag, any_text),
    st.builds(Count, st.integers(min_value=-(2**100), max_value=2**100)),
    st.builds(Ratio, st.floats()),
    st.builds(
        lambda dt: Stamp.fromisoformat(dt.isoformat()),
        event_times,
    ),
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Every container kind the serializers walk, and a few they refuse."""
    keys = st.one_of(any_text, st.integers(0, 3))
    return st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(valid_text, children, max_size=4),
        st.dictionaries(keys, children, max_size=3),
        st.dictionaries(valid_text, children, max_size=3).map(OrderedDict),
        st.dictionaries(valid_text, children, max_size=3).map(MappingProxyType),
        st.dictionaries(any_text, children, max_size=3).map(Bag),
        st.builds(Moved, valid_text, event_times, st.lists(valid_text, max_size=3), children),
        st.builds(Slotted, children),
    )


payloads = st.recursive(scalars, containers, max_leaves=12)


def outcome(kernel: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """A kernel's result, or the type and message of what it raised."""
    try:
        return ("returned", kernel(*args, **kwargs))
    except Exception as error:  # the comparison is the point
        return ("raised", type(error), str(error))


def assert_agree(name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """Run the kernel ``name`` and its twin on the same input; they must agree."""
    rust = outcome(getattr(_core, name), *args, **kwargs)
    twin = outcome(getattr(_pure, name), *args, **kwargs)
    assert rust == twin
    return rust


# -- serialization ----------------------------------------------------------------


@PROPERTY
@given(payload=payloads, event_type=any_text)
def test_dumps_agrees_with_twin(payload: Any, event_type: str) -> None:
    kind, *result = assert_agree("dumps", payload, event_type)
    if kind == "returned":
        assert json.loads(result[0]) is not None or result[0] == "null"


@PROPERTY
@given(batch=st.lists(st.tuples(st.one_of(payloads, any_text), valid_text), max_size=6))
def test_serialize_payloads_agrees_and_passes_str_through(batch: list[tuple[Any, str]]) -> None:
    payload_column = [payload for payload, _ in batch]
    event_types = [event_type for _, event_type in batch]
    kind, *result = assert_agree("serialize_payloads", payload_column, event_types)
    if kind == "returned":
        for payload, state in zip(payload_column, result[0], strict=True):
            if isinstance(payload, str):
                assert state is payload


@PROPERTY
@given(
    rows=st.lists(
        st.tuples(
            st.integers(1, 5),
            st.integers(1, 9),
            st.sampled_from(["A", "B", "C"]),
            st.one_of(payloads, valid_text),
            event_times,
            any_text,
        ),
        max_size=6,
    )
)
def test_encode_events_agrees_with_twin(rows: list[tuple[Any, ...]]) -> None:
    columns = [list(column) for column in zip(*rows, strict=True)] or [[]] * 6
    kind, *result = assert_agree("encode_events", *columns, {"A": 1, "B": 2})
    if kind == "returned":
        assert all(type(event) is StorageEngineEvent for event in result[0])


@PROPERTY
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_written_as_python_repr(value: float) -> None:
    assert _core.dumps(value) == repr(value) == _pure.dumps(value)


def test_encoded_events_of_plain_fields_are_left_out_of_the_garbage_collector() -> None:
    now = datetime.now(timezone.utc)
    plain, odd = _core.encode_events(
        [1, 1], [1, 2], ["A", "A"], [{}, {}], [now, now], ["", ["not", "a", "str"]], {"A": 1}
    )
    assert not gc.is_tracked(plain)  # no cycle can run through ints, strs and datetimes
    assert gc.is_tracked(odd)
    assert plain == StorageEngineEvent(1, 1, 1, "{}", now, "")
    assert hash(plain) == hash((1, 1, 1, "{}", now, ""))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (1e-07, "1e-07"),
        (0.0001, "0.0001"),
        (0.1, "0.1"),
        (-0.0, "-0.0"),
        (5e-324, "5e-324"),
        (2**64 + 1, "18446744073709551617"),
        (-(2**100), "-1267650600228229401496703205376"),
        ('\x00\x1f\x7f"\\é😀', '"\\u0000\\u001f\x7f\\"\\\\é😀"'),
        (
            datetime(2024, 2, 29, 23, 30, tzinfo=timezone(timedelta(hours=-1))),
            '"2024-03-01T00:30:00Z"',
        ),
        (datetime(1, 1, 1, 0, 0, 0, 7), '"0001-01-01T00:00:00.000007Z"'),
        (date(2024, 1, 2), '"2024-01-02"'),
        (Decimal("1.10"), '"1.10"'),
        (Colour.NESTED, "[1,2.5]"),
        (Level.LOW, "1"),
        (Point(1, 2.0), "[1,2.0]"),
    ],
)
def test_exact_json_text(value: Any, text: str) -> None:
    assert _core.dumps(value) == text
    assert _pure.dumps(value) == text


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"a": [1, math.nan]}, "event 'E': field $.a[1] is nan; NaN and Infinity"),
        ({"a": {"b": -math.inf}}, "event 'E': field $.a.b is -inf;"),
        ({"k": {3: 1}}, "event 'E': field $.k has a key 3 of type int;"),
        ({"s": ["ok", "\ud800"]}, "event 'E': field $.s[1] is a str with a lone surrogate"),
        ({"\udfff": 1}, "event 'E': field $ has a key '\\udfff' with a lone surrogate"),
        (
            Moved("n", datetime(2020, 1, 1), [], {1, 2}),
            "event 'E': field $.extra has a value of type set that cannot",
        ),
        ({"when": time(1, 2)}, None),
    ],
)
def test_serialization_errors_name_event_type_and_field(payload: Any, message: str | None) -> None:
    for kernel in (_core.dumps, _pure.dumps):
        if message is None:
            assert kernel(payload, "E") == '{"when":"01:02:00"}'
            continue
        with pytest.raises(SerializationError) as raised:
            kernel(payload, "E")
        assert str(raised.value).startswith(message)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_limit_is_256_levels_in_both() -> None:
    assert _core.MAX_NESTING == _pure.MAX_NESTING == 256
    assert assert_agree("dumps", nested(257)) == ("returned", "[" * 257 + "]" * 257)
    kind, error_type, message = assert_agree("dumps", nested(258), "deep")
    assert (kind, error_type) == ("raised", SerializationError)
    assert message.endswith("is nested more than 256 levels deep")


def test_cycles_and_very_deep_input_raise_instead_of_crashing() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    loop: dict[str, Any] = {}
    loop["self"] = loop
    for payload in (cycle, loop, nested(100_000)):
        with pytest.raises(SerializationError, match="nested more than 256 levels"):
            _core.dumps(payload, "E")


def test_a_failing_model_dump_is_a_serialization_error_with_its_cause() -> None:
    class Exploding(pydantic.BaseModel):
        def model_dump(self, **kwargs: Any) -> dict[str, Any]:
            raise KeyError("from model_dump")

    messages = []
    for kernel in (_core.dumps, _pure.dumps):
        with pytest.raises(SerializationError, match=r"'E': field \$\.x could not") as raised:
            kernel({"x": Exploding()}, "E")
        assert isinstance(raised.value.__cause__, KeyError)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]


@pytest.mark.parametrize(
    "payload",
    [
        {"at": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        [10**4300],
    ],
    ids=["datetime-below-utc-range", "datetime-above-utc-range", "int-over-digit-limit"],
)
def test_values_whose_conversion_fails_are_serialization_errors(payload: object) -> None:
    """Found by the atheris fuzzer: these leaked OverflowError / ValueError before."""
    outcomes = []
    for kernel in (_core.dumps, _pure.dumps):
        with pytest.raises(SerializationError, match="could not be serialized") as raised:
            kernel(payload, "T")
        outcomes.append((str(raised.value), type(raised.value.__cause__)))
    assert outcomes[0] == outcomes[1]


def test_dict_mutated_during_serialization_is_an_error_not_a_crash() -> None:
    payload: dict[str, Any] = {}

    class Grower(pydantic.BaseModel):
        def model_dump(self, **kwargs: Any) -> dict[str, Any]:
            payload["new"] = 1
            return {}

    payload["grow"] = Grower()
    with pytest.raises(RuntimeError, match="changed size during iteration"):
        _core.dumps(payload)


def test_length_mismatch_is_a_value_error() -> None:
    assert_agree("serialize_payloads", [1, 2], ["A"])
    with pytest.raises(ValueError, match=r"payloads=2, event_types=1"):
        _core.serialize_payloads([1, 2], ["A"])
    kind, error_type, _ = assert_agree(
        "encode_events", [1], [1], ["A"], [{}], [datetime.now(timezone.utc)], [], {"A": 1}
    )
    assert (kind, error_type) == ("raised", ValueError)


def test_unknown_event_type_is_a_key_error_after_payload_errors() -> None:
    now = datetime.now(timezone.utc)
    assert assert_agree("encode_events", [1], [1], ["X"], [{}], [now], [""], {})[1] is KeyError
    bad = assert_agree("encode_events", [1], [1], ["X"], [{"f": math.nan}], [now], [""], {})
    assert bad[1] is SerializationError


# -- sequence validation -------------------------------------------------------------


@PROPERTY
@given(
    pairs=st.lists(st.tuples(st.integers(1, 4), st.integers(-1, 6)), max_size=12),
    known=st.dictionaries(st.integers(1, 4), st.integers(0, 5), max_size=4),
)
def test_validate_sequences_agrees_with_twin(
    pairs: list[tuple[int, int]], known: dict[int, int]
) -> None:
    ids = [aggregate_id for aggregate_id, _ in pairs]
    sequences = [sequence for _, sequence in pairs]
    assert_agree("validate_sequences", ids, sequences, known)


@PROPERTY
@given(
    pairs=st.lists(
        st.tuples(
            st.one_of(st.integers(1, 3), st.just(True), st.just(2**70)),
            st.one_of(st.integers(1, 4), st.just(2**64), st.just(2.0)),
        ),
        max_size=8,
    ),
    known=st.dictionaries(st.integers(1, 3), st.one_of(st.integers(0, 3), st.just(2**65))),
)
def test_validate_sequences_agrees_on_bools_floats_and_big_ints(
    pairs: list[tuple[Any, Any]], known: dict[int, Any]
) -> None:
    ids = [aggregate_id for aggregate_id, _ in pairs]
    sequences = [sequence for _, sequence in pairs]
    assert_agree("validate_sequences", ids, sequences, known)


def test_sequence_error_carries_aggregate_and_sequence() -> None:
    for kernel in (_core.validate_sequences, _pure.validate_sequences):
        with pytest.raises(SequenceError) as raised:
            kernel((7, 7), (4, 6), MappingProxyType({7: 3}))
        assert (raised.value.aggregate_id, raised.value.sequence) == (7, 6)
        assert str(raised.value) == "aggregate 7: sequence 6 does not follow 4 (expected 5)"
        assert isinstance(raised.value, ValueError)


# -- binary COPY ------------------------------------------------------------------------

valid_copy_events = st.builds(
    StorageEngineEvent,
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.one_of(st.integers(-(2**63), 2**63 - 1), st.just(True)),
    valid_text,
    event_times,
    valid_text,
)

corruptions = st.tuples(
    st.integers(0, 5),
    st.sampled_from(
        [2**63, -(2**63) - 1, 1.0, None, "a\x00b", "\ud800", "\x00\udc00", date(2020, 1, 1)]
    ),
)


def corrupt(event: StorageEngineEvent, corruption: tuple[int, Any]) -> StorageEngineEvent:
    """``event`` with one field replaced by a value PostgreSQL would refuse (mostly)."""
    field, value = corruption
    return event._replace(**{event._fields[field]: value})


copy_events = st.one_of(valid_copy_events, st.builds(corrupt, valid_copy_events, corruptions))


@PROPERTY
@given(events=st.lists(copy_events, max_size=5))
def test_encode_copy_rows_agrees_with_twin(events: list[StorageEngineEvent]) -> None:
    assert_agree("encode_copy_rows", events)


def test_encode_copy_rows_of_nothing_is_header_and_trailer() -> None:
    expected = b"PGCOPY\n\xff\r\n\x00" + bytes(8) + b"\xff\xff"
    assert _core.encode_copy_rows([]) == _pure.encode_copy_rows([]) == expected


@pytest.fixture
def postgres_schema() -> Iterator[Any]:
    """A connection to the local PostgreSQL inside a schema of this test's own."""
    import psycopg

    ensure_postgres()
    schema = f"evercore_kernels_{os.getpid()}"
    with psycopg.connect(
        host=POSTGRES_HOST, port=POSTGRES_PORT, user="postgres", dbname="test", autocommit=True
    ) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
        try:
            connection.execute(f"SET search_path TO {schema}")
            yield connection
        finally:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.postgres
def test_copy_rows_round_trip_through_postgres(postgres_schema: Any) -> None:
    times = [
        datetime(2026, 11, 29, 18, 45, 48, 113094, tzinfo=timezone.utc),
        datetime(1999, 12, 31, 23, 59, 59, 999999),  # naive: UTC
        datetime(2024, 2, 29, 12, 0, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
        datetime(1, 1, 1, tzinfo=timezone.utc),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    ]
    events = [
        StorageEngineEvent(i + 1, 2**62 + i, -i, json.dumps({"é": "😀" * i}), t, f"ref-{i}")
        for i, t in enumerate(times)
    ]
    events.append(StorageEngineEvent(-(2**63), 2**63 - 1, 0, "", times[0], ""))
    data = _core.encode_copy_rows(events)
    assert data == _pure.encode_copy_rows(events)
    postgres_schema.execute(
        "CREATE TABLE events (aggregate_id int8, sequence int8, event_type_id int8, "
        "state text, event_time timestamptz, reference text)"
    )
    with postgres_schema.cursor() as cursor:
        with cursor.copy("COPY events FROM STDIN (FORMAT binary)") as copy:
            copy.write(data)
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.execute("SELECT * FROM events ORDER BY aggregate_id")
        stored = cursor.fetchall()
    expected = sorted(
        (
            e.aggregate_id,
            e.sequence,
            e.event_type_id,
            e.state,
            e.event_time if e.event_time.tzinfo else e.event_time.replace(tzinfo=timezone.utc),
            e.reference,
        )
        for e in events
    )
    assert stored == expected


# -- filtering --------------------------------------------------------------------------

type_ids = st.one_of(
    st.integers(-6, 5),  # CPython's small-int singletons (-5..256) and a neighbour
    st.sampled_from([255, 256, 257, 300, 2**40, -(2**40), 2**63 - 1, 2**70, True, 2.0]),
)
"""Ids on both sides of the small-int boundary, beyond i64, and ones equal to an
int without being one (True, 2.0), which the kernel hands to its twin."""


@PROPERTY
@given(
    log=st.lists(st.tuples(type_ids, type_ids, type_ids), max_size=30),
    start=st.integers(-1, 32),
    limit=st.integers(-1, 10),
    aggregate_type_id=st.one_of(st.none(), type_ids),
    aggregate_id=st.one_of(st.none(), type_ids),
    event_type_filter=st.one_of(st.none(), st.frozensets(type_ids, max_size=4)),
)
def test_filter_events_agrees_with_twin(
    log: list[tuple[int, int, int]],
    start: int,
    limit: int,
    aggregate_type_id: int | None,
    aggregate_id: int | None,
    event_type_filter: frozenset[int] | None,
) -> None:
    columns = [list(column) for column in zip(*log, strict=True)] or [[], [], []]
    assert_agree(
        "filter_events",
        *columns,
        start=start,
        limit=limit,
        aggregate_type_id=aggregate_type_id,
        aggregate_id=aggregate_id,
        event_type_filter=event_type_filter,
    )


def test_filter_events_with_huge_start_and_limit() -> None:
    columns = ([1, 1, 2], [5, 6, 5], [1, 2, 3])
    kwargs = {"aggregate_type_id": 1, "aggregate_id": None, "event_type_filter": None}
    assert assert_agree("filter_events", *columns, start=0, limit=2**80, **kwargs) == (
        "returned",
        [0, 1],
    )
    assert assert_agree("filter_events", *columns, start=2**80, limit=5, **kwargs)[1] == []
    assert assert_agree("filter_events", *columns, start=-(2**80), limit=5, **kwargs)[1] is (
        ValueError
    )


# -- rows to events -----------------------------------------------------------------------

FAST_US = 2**32 * 1_000_000
times_us = st.one_of(
    st.integers(-FAST_US + 1, FAST_US - 1),
    st.sampled_from([-FAST_US, FAST_US, 0, -1, 253_402_300_799_999_999, 2**63 - 1]),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([True, 1.5, None, 2**70]),
)
stored_rows = st.lists(
    st.one_of(
        st.tuples(
            st.integers(0, 2**63 - 1),
            st.integers(0, 2**63 - 1),
            st.sampled_from([1, 2, 3]),
            st.text(max_size=8),
            st.integers(1, 2**31),
            st.text(max_size=4),
            times_us,
        ),
        st.sampled_from([(1, 1, 1, "{}", 1, ""), [1, 1, 1, "{}", 1, "", 0]]),
    ),
    max_size=6,
)


@PROPERTY
@given(rows=stored_rows, names=st.sampled_from([{1: "A", 2: "B"}, {1: "A", 2: "B", 3: "C"}]))
def test_events_from_rows_agrees_with_twin(rows: list[Any], names: dict[int, str]) -> None:
    assert_agree("events_from_rows", rows, names)


def test_events_from_rows_reads_times_exactly() -> None:
    """Every microsecond near the fast path's edges and around the epoch."""
    edges = [0, 1, -1, 999_999, 1_000_000, FAST_US - 1, -FAST_US + 1, FAST_US, -FAST_US]
    rows = [(n, 1, 1, "{}", n + 1, "", us) for n, us in enumerate(edges)]
    kind, events = assert_agree("events_from_rows", rows, {1: "A"})
    assert kind == "returned"
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert [e.event_time for e in events] == [epoch + timedelta(microseconds=us) for us in edges]
    assert all(type(e).__name__ == "SerializedEvent" for e in events)


# -- the switch ---------------------------------------------------------------------------


def test_kernels_module_picks_rust_unless_pure_python_is_asked_for() -> None:
    expected = _pure if _kernels.PURE_PYTHON else _core
    for name in _kernels.__all__[1:]:
        assert getattr(_kernels, name) is getattr(expected, name)
