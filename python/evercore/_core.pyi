"""Typed stubs of ``evercore._core``, the Rust kernels (see ``rust/evercore-py``).

Each function has a pure-Python twin of the same name in :mod:`evercore._pure`
with the same signature, results and exceptions; import them through
:mod:`evercore._kernels`, which picks one or the other.
"""

from collections.abc import Callable, Mapping, Sequence, Set
from datetime import datetime
from typing import Any

from evercore.values import SerializedEvent, StorageEngineEvent

__version__: str
"""Version of the Rust kernels."""

MAX_NESTING: int
"""Deepest nesting a payload may have (256): each container, Enum value and model
dump is one level; deeper input raises ``SerializationError``."""

def validate_sequences(
    aggregate_ids: Sequence[int], sequences: Sequence[int], known: Mapping[int, int]
) -> None:
    """Check a context's (aggregate id, sequence) pairs, in the order applied.

    Per aggregate: contiguous, starting right after ``known[id]`` when the context
    knows the aggregate, none below 1. Raises ``SequenceError`` naming the first
    offending aggregate id and sequence; ``ValueError`` if the lengths differ.
    """

def dumps(payload: object, event_type: str = "") -> str:
    """Compact JSON of one payload, byte-identical to ``json.dumps(...,
    ensure_ascii=False, separators=(",", ":"))`` of the twin's plain data.

    Supported: None, bool, int (any size), finite float (Python's ``repr``), str
    without lone surrogates, dict/Mapping with str keys, list, tuple, dataclass,
    datetime (``...Z`` UTC; naive is UTC), date and time (ISO-8601), UUID and
    Decimal (str), Enum (its value), pydantic models (``model_dump(mode="json")``)
    and msgspec Structs (``msgspec.to_builtins``). Anything else, NaN, infinities,
    lone surrogates and nesting deeper than :data:`MAX_NESTING` raise
    ``SerializationError`` naming ``event_type`` and the field path (``$.a[0]``).
    """

def serialize_payloads(payloads: Sequence[object], event_types: Sequence[str]) -> list[str]:
    """:func:`dumps` of each payload, ``event_types[i]`` naming payload ``i`` in
    errors; a ``str`` payload is already JSON and is returned unchanged."""

def encode_events(
    aggregate_ids: Sequence[int],
    sequences: Sequence[int],
    event_types: Sequence[str],
    payloads: Sequence[object],
    event_times: Sequence[datetime],
    references: Sequence[str],
    event_type_ids: Mapping[str, int],
) -> list[StorageEngineEvent]:
    """Serialize a batch given as columns (all payloads first, as
    :func:`serialize_payloads`) and build the ``StorageEngineEvent`` of each
    event, resolving its type through ``event_type_ids`` (``KeyError`` if missing).
    """

def encode_copy_rows(events: Sequence[StorageEngineEvent]) -> bytes:
    """PostgreSQL binary COPY data (header, rows, trailer) for the columns
    ``(aggregate_id int8, sequence int8, event_type_id int8, state text,
    event_time timestamptz, reference text)``; a naive time is UTC. A value
    PostgreSQL would refuse raises ``SerializationError`` naming event and field."""

def filter_events(
    aggregate_type_ids: Sequence[int],
    aggregate_ids: Sequence[int],
    event_type_ids: Sequence[int],
    *,
    start: int,
    limit: int,
    aggregate_type_id: int | None,
    aggregate_id: int | None,
    event_type_filter: Set[int] | None,
) -> list[int]:
    """Ascending positions ``i >= start`` (at most ``limit``) of a columnar log
    where every criterion that is not None matches (``event_type_ids[i] in
    event_type_filter``); a negative ``start`` is a ``ValueError``."""

def fold_state_fields(
    events: Sequence[SerializedEvent],
    plans: Mapping[str, int],
    kinds: Sequence[bytes],
    defaults: Sequence[Sequence[object]],
    converters: Sequence[Sequence[Callable[[Any], object] | None]],
    fields: Sequence[str],
) -> dict[str, object] | None:
    """Per field, the value of the last event that gave it one: what copying each
    decoded payload's non-None fields onto a state, event after event, leaves there
    (the fold of a ``StateAggregate``), found by scanning each event's JSON once and
    parsing only the winning values with ``json.loads``.

    ``plans[event.event_type]`` numbers the event's payload class (an unknown type is
    a ``KeyError``); ``kinds[plan][i]`` says how that class treats ``fields[i]`` (the
    ``FIELD_*`` codes of :mod:`evercore._pure`), ``defaults[plan][i]`` is its default
    and ``converters[plan][i]`` (or None) turns its JSON value into the field's type:
    every non-null value is converted, as decoding would. Returns None (declined:
    decode event by event) when a state is not JSON that ``json.loads`` accepts, is
    not an object, nests deeper than :data:`MAX_NESTING`, holds a number longer than
    600 characters, lacks a required field, is not a ``str`` encodable as UTF-8, or a
    converter raises an ``Exception``.
    """

def events_from_rows(
    rows: Sequence[Sequence[Any]], names: Mapping[int, str]
) -> list[SerializedEvent]:
    """``SerializedEvent``\\ s from ``(id, aggregate_id, event_type_id, state,
    sequence, reference, event_time_us)`` rows (microseconds since the epoch, UTC),
    naming types through ``names`` (``KeyError`` for an id it lacks)."""
