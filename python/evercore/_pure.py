"""Pure-Python reference twins of the Rust kernels in ``evercore._core``.

Each function here has the same signature and the same observable behaviour
(results and exceptions) as its kernel. They serve the property tests that
compare the two, ``EVERCORE_PURE_PYTHON=1`` runs, and the benchmarks that
measure the kernels' speed-up. Do not optimise them at the cost of clarity.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from evercore.errors import SequenceError, SerializationError
from evercore.values import SerializedEvent, StorageEngineEvent

MAX_NESTING = 256
"""Deepest nesting a payload may have: each container, Enum value and model dump
is one level. Deeper input (often a cycle) is a ``SerializationError``, not a crash."""


def validate_sequences(
    aggregate_ids: Sequence[int], sequences: Sequence[int], known: Mapping[int, int]
) -> None:
    """Check a context's (aggregate id, sequence) pairs, in the order they were applied.

    Per aggregate the sequences must be contiguous, start right after ``known[id]``
    (the sequence the context created or loaded the aggregate at; an aggregate the
    context does not know may start anywhere >= 1), with none below 1.
    Raises ``SequenceError`` naming the first offending aggregate id and sequence.
    """
    _check_lengths("validate_sequences", aggregate_ids=aggregate_ids, sequences=sequences)
    last: dict[int, int] = {}
    for aggregate_id, sequence in zip(aggregate_ids, sequences, strict=True):
        if sequence < 1:
            raise SequenceError(
                aggregate_id, sequence, f"aggregate {aggregate_id}: sequence {sequence} is below 1"
            )
        previous = last.get(aggregate_id)
        if previous is None:
            previous = known.get(aggregate_id)
        if previous is not None and sequence != previous + 1:
            raise SequenceError(
                aggregate_id,
                sequence,
                f"aggregate {aggregate_id}: sequence {sequence} does not follow "
                f"{previous} (expected {previous + 1})",
            )
        last[aggregate_id] = sequence


def filter_events(
    aggregate_type_ids: Sequence[int],
    aggregate_ids: Sequence[int],
    event_type_ids: Sequence[int],
    *,
    start: int,
    limit: int,
    aggregate_type_id: int | None,
    aggregate_id: int | None,
    event_type_filter: frozenset[int] | None,
) -> list[int]:
    """Positions of the events a subscription reads, from a columnar log.

    The three columns are parallel (one entry per event, in global id order).
    Scans positions ``start, start + 1, ...`` and returns, in ascending order, at
    most ``limit`` positions ``i`` where every filter that is not None matches:
    ``aggregate_type_ids[i] == aggregate_type_id``, ``aggregate_ids[i] ==
    aggregate_id`` (a natural-key filter resolved to the aggregate's id) and
    ``event_type_ids[i] in event_type_filter``. A ``limit`` below 1 or a
    ``start`` past the end gives ``[]``; a negative ``start`` is a ``ValueError``.
    """
    if not len(aggregate_type_ids) == len(aggregate_ids) == len(event_type_ids):
        raise ValueError(
            f"filter_events: columns differ in length ({len(aggregate_type_ids)}, "
            f"{len(aggregate_ids)}, {len(event_type_ids)})"
        )
    if start < 0:
        raise ValueError(f"filter_events: start must be >= 0, got {start}")
    positions: list[int] = []
    if limit < 1:
        return positions
    for i in range(start, len(aggregate_ids)):
        if aggregate_type_id is not None and aggregate_type_ids[i] != aggregate_type_id:
            continue
        if aggregate_id is not None and aggregate_ids[i] != aggregate_id:
            continue
        if event_type_filter is not None and event_type_ids[i] not in event_type_filter:
            continue
        positions.append(i)
        if len(positions) == limit:
            break
    return positions


def serialize_payloads(payloads: Sequence[object], event_types: Sequence[str]) -> list[str]:
    """JSON text for each payload; a ``str`` payload is already-serialized JSON and
    passes through unchanged. ``event_types[i]`` names payload ``i`` in errors."""
    _check_lengths("serialize_payloads", payloads=payloads, event_types=event_types)
    return [
        payload if isinstance(payload, str) else dumps(payload, event_type)
        for payload, event_type in zip(payloads, event_types, strict=True)
    ]


def encode_events(
    aggregate_ids: Sequence[int],
    sequences: Sequence[int],
    event_types: Sequence[str],
    payloads: Sequence[object],
    event_times: Sequence[datetime],
    references: Sequence[str],
    event_type_ids: Mapping[str, int],
) -> list[StorageEngineEvent]:
    """Serialize a batch given as columns and build the events an engine writes.

    Payloads are serialized as by :func:`serialize_payloads` (all of them first, so
    a bad payload is reported before an unknown event type); ``event_type_ids``
    resolves each event type (a missing one is a ``KeyError``).
    """
    _check_lengths(
        "encode_events",
        aggregate_ids=aggregate_ids,
        sequences=sequences,
        event_types=event_types,
        payloads=payloads,
        event_times=event_times,
        references=references,
    )
    states = serialize_payloads(payloads, event_types)
    return [
        StorageEngineEvent(aggregate_id, sequence, event_type_ids[event_type], state, time_, ref)
        for aggregate_id, sequence, event_type, state, time_, ref in zip(
            aggregate_ids, sequences, event_types, states, event_times, references, strict=True
        )
    ]


def _check_lengths(kernel: str, **columns: Sequence[object]) -> None:
    """Raise ``ValueError`` unless every column has the same length."""
    lengths = {name: len(column) for name, column in columns.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{name}={length}" for name, length in lengths.items())
        raise ValueError(f"{kernel}: columns differ in length ({shown})")


def dumps(payload: object, event_type: str = "") -> str:
    """Compact JSON of one payload (see :func:`to_json_value` for the supported types)."""
    value = to_json_value(payload, event_type, "$")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def format_datetime(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix; a naive datetime is taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat() + "Z"


def to_json_value(value: Any, event_type: str, path: str, depth: int = 0) -> Any:
    """``value`` as plain JSON data. ``path`` (``$.field[0]``) locates it in errors.

    Supported: None, bool, int, float (finite), str (valid Unicode: no lone
    surrogates), dict with str keys, list, tuple, dataclasses, datetimes (UTC
    ISO-8601), dates and times (ISO-8601), UUIDs and Decimals (as strings), Enums
    (their value), pydantic models (``model_dump(mode="json")``) and msgspec
    Structs (``msgspec.to_builtins``). ``depth`` counts the levels above ``value``;
    past :data:`MAX_NESTING` the payload is refused.
    """
    if depth > MAX_NESTING:
        raise SerializationError(
            f"event {event_type!r}: field {path} is nested more than {MAX_NESTING} levels deep"
        )
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        if not _is_utf8_encodable(value):
            raise SerializationError(
                f"event {event_type!r}: field {path} is a str with a lone surrogate, "
                "which cannot be encoded as UTF-8"
            )
        return value
    if isinstance(value, int):
        return _checked_int(int(value), event_type, path)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(
                f"event {event_type!r}: field {path} is {value!r}; NaN and Infinity "
                "are not valid JSON"
            )
        return float(value)
    if isinstance(value, datetime):
        try:
            return format_datetime(value)
        except Exception as exc:  # e.g. OverflowError: out of range once in UTC
            raise _failed(event_type, path, exc) from exc
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, Enum):
        return to_json_value(value.value, event_type, path, depth + 1)
    if isinstance(value, Mapping):
        return _mapping_to_json(value, event_type, path, depth)
    if isinstance(value, (list, tuple)):
        return [
            to_json_value(item, event_type, f"{path}[{i}]", depth + 1)
            for i, item in enumerate(value)
        ]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json_value(getattr(value, f.name), event_type, f"{path}.{f.name}", depth + 1)
            for f in dataclasses.fields(value)
        }
    try:
        dumped = _foreign_model_dump(value)
    except Exception as exc:  # the model's own dumper refused a value
        raise _failed(event_type, path, exc) from exc
    if dumped is not None:
        return to_json_value(dumped, event_type, path, depth + 1)
    raise SerializationError(
        f"event {event_type!r}: field {path} has a value of type {type(value).__name__} "
        "that cannot be serialized to JSON"
    )


def _mapping_to_json(
    value: Mapping[Any, Any], event_type: str, path: str, depth: int
) -> dict[str, Any]:
    """A mapping's items as JSON data; every key must be a UTF-8-encodable str."""
    result = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise SerializationError(
                f"event {event_type!r}: field {path} has a key {key!r} of type "
                f"{type(key).__name__}; JSON object keys must be str"
            )
        if not _is_utf8_encodable(key):
            raise SerializationError(
                f"event {event_type!r}: field {path} has a key {key!r} with a lone "
                "surrogate, which cannot be encoded as UTF-8"
            )
        result[key] = to_json_value(item, event_type, f"{path}.{key}", depth + 1)
    return result


def _is_utf8_encodable(text: str) -> bool:
    """False for a str holding a lone surrogate (which no database or wire accepts)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _failed(event_type: str, path: str, exc: BaseException) -> SerializationError:
    """A value whose own conversion raised (a model's dumper, a datetime's shift to UTC,
    an int beyond Python's digit limit): named like every other serialization error."""
    return SerializationError(
        f"event {event_type!r}: field {path} could not be serialized "
        f"({type(exc).__name__}: {exc})"
    )


def _checked_int(value: int, event_type: str, path: str) -> int:
    """``value``, once it is known to convert to text (CPython refuses ints longer than
    ``sys.get_int_max_str_digits()`` digits; the bit-length test keeps this cheap)."""
    limit = sys.get_int_max_str_digits()
    if limit and value.bit_length() > 3 * limit:
        try:
            str(value)
        except ValueError as exc:
            raise _failed(event_type, path, exc) from exc
    return value


def _foreign_model_dump(value: Any) -> Any | None:
    """pydantic models and msgspec Structs dump themselves; anything else gives None."""
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and hasattr(type(value), "model_fields"):
        return model_dump(mode="json")
    if hasattr(type(value), "__struct_fields__"):
        import msgspec  # only reachable when the payload is a msgspec Struct

        return msgspec.to_builtins(value)
    return None


_PG_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_PG_COPY_TRAILER = struct.pack(">h", -1)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_ONE_MICROSECOND = timedelta(microseconds=1)
_INT8_MIN, _INT8_MAX = -(2**63), 2**63 - 1
_MAX_FIELD_BYTES = 2**30 - 1
"""PostgreSQL's limit on one field (``MaxAllocSize``)."""


def encode_copy_rows(events: Sequence[StorageEngineEvent]) -> bytes:
    """PostgreSQL binary ``COPY ... FROM STDIN (FORMAT binary)`` data (header, rows,
    trailer) for the columns ``(aggregate_id int8, sequence int8, event_type_id int8,
    state text, event_time timestamptz, reference text)``.

    A naive ``event_time`` is taken as UTC. A value PostgreSQL would refuse (an int
    outside int8, text with a NUL or a lone surrogate, a time that is not a
    datetime) raises ``SerializationError`` naming the event and the field.
    """
    parts = [_PG_COPY_HEADER]
    for event in events:
        where = f"event (aggregate {event.aggregate_id!r}, sequence {event.sequence!r})"
        parts.append(b"\x00\x06")
        for field in ("aggregate_id", "sequence", "event_type_id"):
            parts.append(b"\x00\x00\x00\x08" + _int8(getattr(event, field), where, field))
        parts.append(_copy_text(event.state, where, "state"))
        parts.append(b"\x00\x00\x00\x08" + _pg_timestamp(event.event_time, where))
        parts.append(_copy_text(event.reference, where, "reference"))
    parts.append(_PG_COPY_TRAILER)
    return b"".join(parts)


def _int8(value: int, where: str, field: str) -> bytes:
    """``value`` as a big-endian int8."""
    if not isinstance(value, int) or not _INT8_MIN <= value <= _INT8_MAX:
        raise SerializationError(f"{where}: {field} {value!r} is not an int8 integer")
    return struct.pack(">q", value)


def _copy_text(value: str, where: str, field: str) -> bytes:
    """A text field: its length then its UTF-8 bytes."""
    if not isinstance(value, str):
        raise SerializationError(f"{where}: {field} is a {type(value).__name__}, not a str")
    if "\x00" in value:
        raise SerializationError(f"{where}: {field} contains a NUL character")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError:
        raise SerializationError(
            f"{where}: {field} contains a lone surrogate, which cannot be encoded as UTF-8"
        ) from None
    if len(data) > _MAX_FIELD_BYTES:
        raise SerializationError(f"{where}: {field} is longer than PostgreSQL's 1 GB field limit")
    return struct.pack(">i", len(data)) + data


def _pg_timestamp(value: datetime, where: str) -> bytes:
    """A timestamptz: microseconds since 2000-01-01 UTC (a naive time is UTC)."""
    if not isinstance(value, datetime):
        raise SerializationError(f"{where}: event_time is a {type(value).__name__}, not a datetime")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return struct.pack(">q", (value - _PG_EPOCH) // _ONE_MICROSECOND)


# -- rehydration: the field-by-field fold -------------------------------------------------

FIELD_IGNORED, FIELD_COPIED, FIELD_COPIED_WITH_DEFAULT, FIELD_REQUIRED = 0, 1, 2, 3
"""How a payload class treats a tracked field (one byte per field in a plan's kinds):
not one of its fields; required and copied; copied, its default when absent; required
but not copied (the state lacks it)."""

MAX_NUMBER_LENGTH = 600
"""Longest number literal the fold reads (CPython may refuse ints of 640+ digits)."""


class _Declined(Exception):
    """The fold gives up on these events: the caller decodes them one by one."""


def _bounded_number(parse: Any) -> Any:
    def parse_bounded(token: str) -> Any:
        if len(token) > MAX_NUMBER_LENGTH:
            raise _Declined
        return parse(token)

    return parse_bounded


_fold_decoder = json.JSONDecoder(parse_int=_bounded_number(int), parse_float=_bounded_number(float))


def _too_deep(value: Any, level: int) -> bool:
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return level > MAX_NESTING or any(_too_deep(child, level + 1) for child in children)


def fold_state_fields(
    events: Sequence[Any],
    plans: Mapping[str, int],
    kinds: Sequence[bytes],
    defaults: Sequence[Sequence[object]],
    converters: Sequence[Sequence[Callable[[Any], object] | None]],
    fields: Sequence[str],
) -> dict[str, object] | None:
    """Per field, the value of the last event that gave it one: what copying each
    decoded payload's non-None fields onto a state, event after event, leaves there.

    ``plans[event.event_type]`` numbers the event's payload class; ``kinds[plan][i]``
    says how that class treats ``fields[i]`` (``FIELD_*``), ``defaults[plan][i]`` is
    its default and ``converters[plan][i]`` (or None) turns its JSON value into the
    field's type; every non-null value is converted, as decoding would. Returns the
    changes, or None (declined) when a state is not JSON that ``json.loads``
    accepts, is not an object, nests deeper than :data:`MAX_NESTING`, holds a number
    longer than :data:`MAX_NUMBER_LENGTH`, lacks a required field, is not an
    encodable ``str``, or a converter raises an ``Exception``. An unknown event type
    is a ``KeyError``.
    """
    if not len(kinds) == len(defaults) == len(converters):
        raise ValueError("fold_state_fields: kinds, defaults and converters differ in length")
    widths = {len(fields)} | {len(k) for k in kinds} | {len(d) for d in defaults}
    if len(widths | {len(c) for c in converters}) > 1:
        raise ValueError("fold_state_fields: a plan does not cover every field")
    for code in (code for plan in kinds for code in plan if code > FIELD_REQUIRED):
        raise ValueError(f"unknown field kind {code}")
    changes: dict[str, object] = {}
    for event in events:
        plan = plans[event.event_type]
        if plan >= len(kinds):
            raise ValueError(f"no plan {plan}")
        state = event.state
        if not isinstance(state, str) or not _is_utf8_encodable(state):
            return None
        try:
            document = _fold_decoder.decode(state)
        except (ValueError, RecursionError, _Declined):
            return None
        if not isinstance(document, dict) or _too_deep(document, 1):
            return None
        columns = zip(fields, kinds[plan], defaults[plan], converters[plan], strict=True)
        for name, kind, default, convert in columns:
            value: object = document.get(name)
            if convert is not None and value is not None:
                try:
                    value = convert(value)
                except Exception:
                    return None
            if kind == FIELD_IGNORED:
                continue
            if name not in document:
                if kind != FIELD_COPIED_WITH_DEFAULT:
                    return None
                value = default
            if kind != FIELD_REQUIRED and value is not None:
                changes[name] = value
    return {name: changes[name] for name in fields if name in changes}  # in field order


# -- reads: rows to events -----------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FAST_US = 2**32 * 1_000_000


def events_from_rows(rows: Sequence[Sequence[Any]], names: Mapping[int, str]) -> list[Any]:
    """``SerializedEvent``\\ s from ``(id, aggregate_id, event_type_id, state, sequence,
    reference, event_time_us)`` rows (times in microseconds since the epoch, UTC),
    naming types through ``names`` (``KeyError`` for an id it lacks).

    ``tuple.__new__`` skips the NamedTuple's Python-level ``__new__``, and
    ``fromtimestamp`` is about twice as fast as epoch + timedelta. It is exact for
    |us| < 2**32 s (1833-2106): the quotient us / 1e6 is then within 0.48 us of the
    true value, which ``fromtimestamp`` rounds to the nearest microsecond.
    """
    new, kind, fts, utc, limit = tuple.__new__, SerializedEvent, datetime.fromtimestamp, \
        timezone.utc, _FAST_US  # fmt: skip
    return [
        new(
            kind,
            (
                event_id,
                aggregate_id,
                names[type_id],
                state,
                sequence,
                reference,
                fts(us / 1e6, utc) if -limit < us < limit else _EPOCH + timedelta(0, 0, us),
            ),
        )
        for event_id, aggregate_id, type_id, state, sequence, reference, us in rows
    ]
