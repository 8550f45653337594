"""Fuzz targets: the Rust kernels (through ``evercore._kernels``, checked against their
pure-Python twins) and every decoder. Run one with::

    python -m tests.fuzz.targets TARGET [libFuzzer flags, e.g. -max_total_time=10]

Allowed outcomes are a result or an ``evercore.errors.EvercoreError``; besides that only
the exceptions a contract names are accepted (see :data:`DIGIT_LIMIT` and the
``ValueError`` of the column kernels for unequal columns or a negative ``start``).
Any other exception, a Rust panic
(``pyo3_runtime.PanicException``, a ``BaseException``), a crash or a hang is a failure.

atheris instruments the Python code of ``evercore`` (the twins, the facade, the
decoders) for coverage feedback; the Rust extension itself is not instrumented, so
its coverage is steered through the pure twin it is compared with.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, datetime, time, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["evercore"]):
    import evercore
    from evercore import _kernels, _pure
    from evercore.errors import DecodeError, EvercoreError
    from evercore.events import StateEvent, decode_json_as
    from evercore.values import SerializedEvent, StorageEngineEvent

import msgspec
import pydantic

from tests.fuzz import TARGET_NAMES
from tests.fuzz.inputs import Values

DIGIT_LIMIT = "integer string conversion"
"""A ``ValueError`` with this text is CPython's 4300-digit limit on int-to-str conversion
(``sys.set_int_max_str_digits``): both twins let it through from ``dumps`` of a huge
int, like ``json.dumps`` does, as the limit is a process-wide setting of the caller's.
When a payload also holds another fault, which of the two is reported first differs:
the Rust kernel formats each int as it meets it, the twin only at the end."""

Outcome = tuple[str, object]


def outcome(call: Callable[[], object], value_error_allowed: bool = False) -> Outcome:
    """What ``call`` did: its result, the type and message of an evercore error, or the
    label of an accepted exception (see :func:`accepted`)."""
    try:
        return "result", call()
    except EvercoreError as error:
        return type(error).__name__, str(error)
    except Exception as error:
        label = accepted(error, value_error_allowed)
        if label is None:
            raise
        return label, type(error).__name__


def accepted(error: Exception, value_error_allowed: bool) -> str | None:
    """The label of an exception outside ``evercore.errors`` that is accepted, else None.

    ``value_error_allowed``: the kernel's contract names a ``ValueError`` for these
    arguments (columns of different lengths, a negative ``start``)."""
    if isinstance(error, ValueError) and DIGIT_LIMIT in str(error):
        return DIGIT_LIMIT
    if isinstance(error, ValueError) and value_error_allowed:
        return "ValueError"
    return None


def same(kernel: Outcome, twin: Outcome, what: str) -> None:
    """The Rust kernel and its pure twin did the same thing (or both refused the payload,
    one of them for the int digit limit: see :data:`DIGIT_LIMIT`)."""
    if kernel == twin:
        return
    refused = {kernel[0], twin[0]} - {"result"}
    if DIGIT_LIMIT in refused and len(refused) == 2:
        return
    raise AssertionError(f"{what}: Rust kernel {kernel!r} != pure twin {twin!r}")


# ----------------------------------------------------------------- kernels --
def fuzz_dumps(data: bytes) -> None:
    """``dumps`` of any payload."""
    values = Values(data)
    payload, event_type = values.payload(), values.text()
    same(
        outcome(lambda: _kernels.dumps(payload, event_type)),
        outcome(lambda: _pure.dumps(payload, event_type)),
        "dumps",
    )


def fuzz_serialize(data: bytes) -> None:
    """``serialize_payloads`` and ``encode_events`` of a batch (str payloads pass through)."""
    values = Values(data, budget=60)
    count = values.small_int(0, 4)
    payloads = [
        values.text() if values.fdp.ConsumeBool() else values.payload() for _ in range(count)
    ]
    types_ = [values.text(4) for _ in range(count + values.small_int(0, 1))]
    differ = len(types_) != count
    same(
        outcome(lambda: _kernels.serialize_payloads(payloads, types_), differ),
        outcome(lambda: _pure.serialize_payloads(payloads, types_), differ),
        "serialize_payloads",
    )
    columns = (
        list(range(1, count + 1)),
        [values.integer() for _ in range(count)],
        types_[:count],
        payloads,
        [values.datetime() for _ in range(count)],
        [values.text() for _ in range(count)],
        {name: values.integer() for name in types_},
    )
    same(
        outcome(lambda: _kernels.encode_events(*columns)),
        outcome(lambda: _pure.encode_events(*columns)),
        "encode_events",
    )


def fuzz_sequences(data: bytes) -> None:
    """``validate_sequences`` of any (aggregate id, sequence) pairs."""
    values = Values(data)
    count = values.small_int(0, 8)
    ids = [
        values.integer() if values.fdp.ConsumeBool() else values.small_int(1, 3)
        for _ in range(count)
    ]
    sequences = [values.integer() for _ in range(count + values.small_int(0, 1))]
    known = {values.small_int(1, 3): values.integer() for _ in range(values.small_int(0, 3))}
    differ = len(sequences) != count
    same(
        outcome(lambda: _kernels.validate_sequences(ids, sequences, known), differ),
        outcome(lambda: _pure.validate_sequences(ids, sequences, known), differ),
        "validate_sequences",
    )


def fuzz_copy_rows(data: bytes) -> None:
    """``encode_copy_rows`` of events with any field values, wrong types included."""
    values = Values(data)
    events = [
        StorageEngineEvent(
            values.integer(),
            values.integer(),
            values.integer() if values.fdp.ConsumeBool() else values.scalar(),  # type: ignore[arg-type]
            values.text(),
            values.datetime() if values.fdp.ConsumeBool() else values.scalar(),  # type: ignore[arg-type]
            values.text() if values.fdp.ConsumeBool() else values.scalar(),  # type: ignore[arg-type]
        )
        for _ in range(values.small_int(0, 4))
    ]
    same(
        outcome(lambda: _kernels.encode_copy_rows(events)),
        outcome(lambda: _pure.encode_copy_rows(events)),
        "encode_copy_rows",
    )


def fuzz_filter(data: bytes) -> None:
    """``filter_events`` of any columnar log and criteria."""
    values = Values(data)
    count = values.small_int(0, 10)
    columns = [[values.small_int(0, 3) for _ in range(count)] for _ in range(3)]
    if values.fdp.ConsumeBool():
        columns[values.small_int(0, 2)].append(1)
    differ = len({len(column) for column in columns}) > 1
    criteria: dict[str, Any] = {
        "start": values.integer() if values.fdp.ConsumeBool() else values.small_int(-2, 12),
        "limit": values.integer() if values.fdp.ConsumeBool() else values.small_int(-1, 12),
        "aggregate_type_id": values.pick((None, 0, 1, 2, 2**70)),
        "aggregate_id": values.pick((None, 0, 1, 3)),
        "event_type_filter": values.pick((None, frozenset(), frozenset({1}), {0, 2}, {2**70})),
    }
    refused = differ or criteria["start"] < 0
    same(
        outcome(lambda: _kernels.filter_events(*columns, **criteria), refused),
        outcome(lambda: _pure.filter_events(*columns, **criteria), refused),
        "filter_events",
    )


FOLD_FIELDS = ("name", "amount", "memo", "value", "a")


def fuzz_fold(data: bytes) -> None:
    """``fold_state_fields`` of events with any state under any plans."""
    values = Values(data, budget=60)
    plan_count = values.small_int(1, 3)
    kinds = [
        bytes(values.small_int(0, 3) for _ in FOLD_FIELDS) for _ in range(plan_count)
    ]
    defaults = [[values.pick((None, "", 0, "x")) for _ in FOLD_FIELDS] for _ in kinds]
    converters = [[values.pick((None, None, str, str.upper)) for _ in FOLD_FIELDS] for _ in kinds]
    events = [
        SerializedEvent(n, 1, f"T{values.small_int(0, plan_count - 1)}",
                        values.json_text(FOLD_FIELDS), n, "", datetime.now(timezone.utc))
        for n in range(values.small_int(0, 4))
    ]  # fmt: skip
    plans = {f"T{n}": n for n in range(plan_count)}
    fields = list(FOLD_FIELDS)

    def folded(kernel: Callable[..., dict[str, object] | None]) -> Outcome:
        # json.dumps: NaN does not equal itself, its text does
        return outcome(
            lambda: json.dumps(kernel(events, plans, kinds, defaults, converters, fields))
        )

    same(folded(_kernels.fold_state_fields), folded(_pure.fold_state_fields), "fold_state_fields")


def fuzz_rows(data: bytes) -> None:
    """``events_from_rows`` of rows with any values. Bad rows raise what the Python
    loop raises (KeyError, TypeError, ValueError, OverflowError): both must agree."""
    values = Values(data)

    def row() -> tuple[object, ...]:
        picked = [values.integer() if values.fdp.ConsumeBool() else values.scalar()
                  for _ in range(values.small_int(6, 8))]  # fmt: skip
        return tuple(picked)

    rows = [row() for _ in range(values.small_int(0, 4))]
    names = {values.small_int(-3, 12): values.text() for _ in range(values.small_int(0, 3))}

    def run(kernel: Callable[..., object]) -> tuple[object, ...]:
        try:
            return ("result", kernel(rows, names))
        except Exception as error:  # the comparison is the point
            # args, not str(): a huge int in a KeyError has no str (digit limit)
            return (type(error).__name__, error.args)

    rust, twin = run(_kernels.events_from_rows), run(_pure.events_from_rows)
    if rust != twin:
        shown = [(outcome[0], type(outcome[1]).__name__) for outcome in (rust, twin)]
        raise AssertionError(f"events_from_rows: Rust kernel {shown[0]} != pure twin {shown[1]}")


# ---------------------------------------------------------------- decoders --
class Shade(Enum):
    """An Enum field of a typed payload."""

    LIGHT = "light"
    DARK = 2


@dataclass
class Inner:
    """A nested dataclass field."""

    when: datetime
    ident: UUID | None = None


@dataclass
class Typed:
    """A dataclass with a field of every type ``decode_json_as`` converts."""

    count: int = 0
    ratio: float = 0.0
    name: str | None = None
    when: datetime | None = None
    day: date | None = None
    at: time | None = None
    ident: UUID | None = None
    amount: Decimal | None = None
    shade: Shade | None = None
    tags: list[str] = field(default_factory=list)
    pairs: tuple[int, ...] = ()
    unique: frozenset[int] = frozenset()
    scores: dict[str, float] = field(default_factory=dict)
    inner: Inner | None = None
    inners: list[Inner] = field(default_factory=list)
    by_name: dict[str, Inner] = field(default_factory=dict)


@evercore.state_event(name="fuzz.atheris.Typed")
@dataclass
class TypedState(Typed):
    """``Typed`` as a state-event payload."""


@evercore.event(name="fuzz.atheris.TypedEvent")
@dataclass
class TypedEvent(Typed):
    """``Typed`` as an event class."""


@evercore.state_event(name="fuzz.atheris.Pydantic")
class PydanticState(pydantic.BaseModel):
    """A pydantic state payload."""

    count: int = 0
    when: datetime | None = None
    tags: list[str] = []
    inner: dict[str, Decimal] | None = None


@evercore.state_event(name="fuzz.atheris.Msgspec")
class MsgspecState(msgspec.Struct):
    """A msgspec state payload."""

    count: int = 0
    when: datetime | None = None
    tags: list[str] = []
    ident: UUID | None = None


DECODED: dict[str, type] = {
    "fuzz.atheris.Typed": TypedState,
    "fuzz.atheris.TypedEvent": TypedEvent,
    "fuzz.atheris.Pydantic": PydanticState,
    "fuzz.atheris.Msgspec": MsgspecState,
}
FIELDS: dict[type, tuple[str, ...]] = {
    Typed: tuple(f.name for f in fields(Typed)),
    PydanticState: tuple(PydanticState.model_fields),
    MsgspecState: MsgspecState.__struct_fields__,
}


def field_names(cls: type) -> tuple[str, ...]:
    """The JSON keys ``cls`` reads."""
    return FIELDS[Typed] if issubclass(cls, Typed) else FIELDS[cls]


def fuzz_decode_event(data: bytes) -> None:
    """``decode_event`` of a stored event of a registered (or unknown) type with any state."""
    values = Values(data)
    event_type = values.pick([*DECODED, values.text()])
    cls = DECODED.get(event_type)
    state = values.json_text(field_names(cls) if cls else ())
    # Stored ids and sequences are int8, so no huge ints here (their repr has a digit limit).
    ids = [int(values.fdp.ConsumeInt(8)) for _ in range(3)]
    stored = SerializedEvent(
        ids[0], ids[1], event_type, state, ids[2], values.text(), datetime.now(timezone.utc)
    )
    try:
        is_state, decoded = evercore.decode_event(stored)
    except DecodeError as error:
        if repr(event_type) not in str(error):
            raise AssertionError(f"{error!r} does not name {event_type!r}") from error
        return
    assert cls is not None, f"{event_type!r} is not registered, yet it decoded to {decoded!r}"
    got = decoded.payload if isinstance(decoded, StateEvent) else decoded
    assert is_state == isinstance(decoded, StateEvent) and isinstance(got, cls), (is_state, decoded)


def fuzz_decode_json_as(data: bytes) -> None:
    """``decode_json_as`` of any text into a typed dataclass, pydantic model or msgspec Struct."""
    values = Values(data)
    cls: type = values.pick((Typed, PydanticState, MsgspecState))
    try:
        decoded: object = decode_json_as(cls, values.json_text(field_names(cls)), "fuzzed")
    except DecodeError:
        return
    assert isinstance(decoded, cls), decoded


TARGETS: dict[str, Callable[[bytes], None]] = {
    "dumps": fuzz_dumps,
    "serialize": fuzz_serialize,
    "sequences": fuzz_sequences,
    "copy_rows": fuzz_copy_rows,
    "filter": fuzz_filter,
    "fold": fuzz_fold,
    "rows": fuzz_rows,
    "decode_event": fuzz_decode_event,
    "decode_json_as": fuzz_decode_json_as,
}


assert tuple(TARGETS) == TARGET_NAMES, "tests.fuzz.TARGET_NAMES lists every target"


def main(argv: list[str]) -> None:
    """Fuzz ``argv[1]`` with libFuzzer flags ``argv[2:]`` (exits non-zero on a failure)."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.targets {{{','.join(TARGETS)}}} [libFuzzer flags]")
    atheris.Setup([argv[0], *argv[2:]], TARGETS[argv[1]])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
