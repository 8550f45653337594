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
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from evercore.errors import SequenceError, SerializationError


def validate_sequences(
    aggregate_ids: Sequence[int], sequences: Sequence[int], known: Mapping[int, int]
) -> None:
    """Check a context's (aggregate id, sequence) pairs, in the order they were applied.

    Per aggregate the sequences must be contiguous, start right after ``known[id]``
    (the sequence the context created or loaded the aggregate at; an aggregate the
    context does not know may start anywhere >= 1), with none below 1.
    Raises ``SequenceError`` naming the first offending aggregate id and sequence.
    """
    if len(aggregate_ids) != len(sequences):
        raise ValueError(
            f"validate_sequences: {len(aggregate_ids)} aggregate ids but {len(sequences)} sequences"
        )
    last: dict[int, int] = {}
    for aggregate_id, sequence in zip(aggregate_ids, sequences):
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
    if len(payloads) != len(event_types):
        raise ValueError(
            f"serialize_payloads: {len(payloads)} payloads but {len(event_types)} event types"
        )
    return [
        payload if isinstance(payload, str) else dumps(payload, event_type)
        for payload, event_type in zip(payloads, event_types)
    ]


def dumps(payload: object, event_type: str = "") -> str:
    """Compact JSON of one payload (see :func:`to_json_value` for the supported types)."""
    value = to_json_value(payload, event_type, "$")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def format_datetime(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` suffix; a naive datetime is taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat() + "Z"


def to_json_value(value: Any, event_type: str, path: str) -> Any:
    """``value`` as plain JSON data. ``path`` (``$.field[0]``) locates it in errors.

    Supported: None, bool, int, float (finite), str, dict with str keys, list,
    tuple, dataclasses, datetimes (UTC ISO-8601), dates and times (ISO-8601),
    UUIDs and Decimals (as strings), Enums (their value), pydantic models
    (``model_dump(mode="json")``) and msgspec Structs (``msgspec.to_builtins``).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(
                f"event {event_type!r}: field {path} is {value!r}; NaN and Infinity "
                "are not valid JSON"
            )
        return float(value)
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (UUID, Decimal)):
        return str(value)
    if isinstance(value, Enum):
        return to_json_value(value.value, event_type, path)
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(
                    f"event {event_type!r}: field {path} has a key {key!r} of type "
                    f"{type(key).__name__}; JSON object keys must be str"
                )
            result[key] = to_json_value(item, event_type, f"{path}.{key}")
        return result
    if isinstance(value, (list, tuple)):
        return [to_json_value(item, event_type, f"{path}[{i}]") for i, item in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json_value(getattr(value, f.name), event_type, f"{path}.{f.name}")
            for f in dataclasses.fields(value)
        }
    dumped = _foreign_model_dump(value)
    if dumped is not None:
        return to_json_value(dumped, event_type, path)
    raise SerializationError(
        f"event {event_type!r}: field {path} has a value of type {type(value).__name__} "
        "that cannot be serialized to JSON"
    )


def _foreign_model_dump(value: Any) -> Any | None:
    """pydantic models and msgspec Structs dump themselves; anything else gives None."""
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump) and hasattr(type(value), "model_fields"):
        return model_dump(mode="json")
    if hasattr(type(value), "__struct_fields__"):
        import msgspec  # only reachable when the payload is a msgspec Struct

        return msgspec.to_builtins(value)
    return None
