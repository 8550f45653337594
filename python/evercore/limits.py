"""The documented limits on what a write context may store, and their checks.

Every limit here is enforced by :meth:`evercore.EventStore.write_captured` (the
path every context and ``save_state`` take) before anything reaches the storage
engine, so a hostile or mistaken input fails fast, with a typed error naming the
value, and the same way on every backend:

=============================  ==============  =====================================
limit                          value           error
=============================  ==============  =====================================
natural key                    64 characters   ``KeyTooLongError`` (engines, before I/O)
natural key content            no NUL, no      ``InvalidKeyError``
                               lone surrogate
event payload (state)          1 MiB UTF-8     ``LimitExceededError``
snapshot state                 16 MiB UTF-8    ``LimitExceededError``
events per context             50,000          ``LimitExceededError``
JSON nesting of a payload      256 levels      ``SerializationError`` (no ``RecursionError``)
NaN / Infinity in a payload    refused         ``SerializationError``
event type name                1-255 chars     ``LimitExceededError``
reference                      4,096 chars     ``LimitExceededError``
aggregate ids and sequences    int, 64-bit     ``LimitExceededError``
reference type                 str             ``LimitExceededError``
text (state, type, reference)  no NUL, no      ``LimitExceededError``
                               lone surrogate
=============================  ==============  =====================================

Why these values: 64 is the Go library's key limit; 1 MiB per event keeps any
single event well inside every backend's request size (Redis's proto-max-bulk-len
is 512 MiB, but a Lua commit holds the whole batch in memory at once); 50,000
events per context bounds a transaction's memory on every backend (about ten times
the largest batch the benchmark writes). NUL and lone surrogates are refused
everywhere because PostgreSQL's ``text`` and UTF-8 itself cannot hold them, and an
engine-specific failure halfway through a batch is what these checks prevent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from evercore._pure import MAX_NESTING
from evercore.errors import LimitExceededError
from evercore.spi import MAX_KEY_LENGTH
from evercore.values import Snapshot, StorageEngineEvent

MAX_PAYLOAD_BYTES = 1 << 20
"""Largest event state, in UTF-8 bytes (1 MiB)."""

MAX_SNAPSHOT_BYTES = 16 << 20
"""Largest snapshot state, in UTF-8 bytes (16 MiB)."""

MAX_EVENTS_PER_CONTEXT = 50_000
"""Most events one context (one transaction) may write."""

MAX_JSON_NESTING = MAX_NESTING
"""Deepest nesting of a payload the serializer accepts (containers, Enum values and
model dumps each count one level); deeper input is a ``SerializationError``."""

MAX_TYPE_NAME_LENGTH = 255
"""Longest event type name, in characters."""

MAX_REFERENCE_LENGTH = 4096
"""Longest event reference, in characters."""

MAX_INT64 = 2**63 - 1
"""Largest aggregate id or sequence: every backend stores them as signed 64-bit integers."""


def _shown(text: str) -> str:
    """``text`` short enough for an error message, still recognisable."""
    return repr(text) if len(text) <= 80 else repr(text[:60]) + f"... ({len(text)} characters)"


def _refuse_unstorable(text: str, what: str) -> None:
    """A NUL character or a lone surrogate cannot be stored by every backend."""
    if "\x00" in text:
        raise LimitExceededError(f"{what} {_shown(text)} contains a NUL character")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise LimitExceededError(
                f"{what} {_shown(text)} contains a lone surrogate and is not valid UTF-8"
            ) from None


def _utf8_size_over(text: str, limit: int) -> int | None:
    """The UTF-8 size of ``text`` when it exceeds ``limit``, else None (cheap when short:
    a character takes at most 4 bytes, so short text needs no encoding)."""
    if len(text) * 4 <= limit:
        return None
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else None


def _check_int64(values: Sequence[int], what: str) -> None:
    """Refuse a column with a value that is not an ``int`` in the signed 64-bit range
    (``set(map(type, ...))``, ``max`` and ``min`` are C loops: cheap next to a write)."""
    if not values:
        return
    if set(map(type, values)) != {int}:
        bad = next(v for v in values if type(v) is not int)
        raise LimitExceededError(f"{what} {bad!r} is a {type(bad).__name__}, not an int")
    if max(values) > MAX_INT64 or min(values) < -MAX_INT64 - 1:
        bad = next(v for v in values if not -MAX_INT64 - 1 <= v <= MAX_INT64)
        raise LimitExceededError(f"{what} {bad} does not fit in a signed 64-bit integer")


def check_context_batch(
    aggregate_ids: Sequence[int],
    sequences: Sequence[int],
    event_types: Iterable[str],
    payloads: Sequence[object],
    references: Sequence[str],
) -> None:
    """Refuse a batch whose size, ids, type names, references or pre-serialized
    (``str``) payloads break a limit. Runs before any I/O; ``payloads`` that are
    objects are checked after serialization by :func:`check_encoded`."""
    count = len(payloads)
    if count > MAX_EVENTS_PER_CONTEXT:
        raise LimitExceededError(
            f"a context may write at most {MAX_EVENTS_PER_CONTEXT:,} events; "
            f"this one captured {count:,}"
        )
    _check_int64(aggregate_ids, "aggregate id")
    _check_int64(sequences, "sequence")
    for name in set(event_types):
        if not isinstance(name, str) or not 0 < len(name) <= MAX_TYPE_NAME_LENGTH:
            raise LimitExceededError(
                f"event type name {name!r} must be a str of 1 to {MAX_TYPE_NAME_LENGTH} characters"
            )
        _refuse_unstorable(name, "event type name")
    for reference in references:
        if type(reference) is not str:
            raise LimitExceededError(
                f"reference {reference!r} is a {type(reference).__name__}, not a str"
            )
        if reference:
            if len(reference) > MAX_REFERENCE_LENGTH:
                raise LimitExceededError(
                    f"reference {_shown(reference)} is {len(reference):,} characters long; "
                    f"the maximum is {MAX_REFERENCE_LENGTH:,}"
                )
            _refuse_unstorable(reference, "reference")
    for payload in payloads:
        if type(payload) is str:
            _refuse_unstorable(payload, "event state")


def check_encoded(events: Sequence[StorageEngineEvent], snapshots: Sequence[Snapshot]) -> None:
    """Refuse serialized event states and snapshots over their size limits (and
    snapshot text that no backend can store). Runs before the engine is called."""
    for event in events:
        size = _utf8_size_over(event.state, MAX_PAYLOAD_BYTES)
        if size is not None:
            raise LimitExceededError(
                f"event (aggregate {event.aggregate_id}, sequence {event.sequence}) has a "
                f"state of {size:,} bytes; the maximum is {MAX_PAYLOAD_BYTES:,} (1 MiB)"
            )
    _check_int64([s.aggregate_id for s in snapshots], "snapshot aggregate id")
    _check_int64([s.sequence for s in snapshots], "snapshot sequence")
    for snapshot in snapshots:
        size = _utf8_size_over(snapshot.state, MAX_SNAPSHOT_BYTES)
        if size is not None:
            raise LimitExceededError(
                f"snapshot (aggregate {snapshot.aggregate_id}, sequence {snapshot.sequence}) "
                f"has a state of {size:,} bytes; the maximum is {MAX_SNAPSHOT_BYTES:,} (16 MiB)"
            )
        _refuse_unstorable(snapshot.state, "snapshot state")


__all__ = [
    "MAX_EVENTS_PER_CONTEXT",
    "MAX_INT64",
    "MAX_JSON_NESTING",
    "MAX_KEY_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_REFERENCE_LENGTH",
    "MAX_SNAPSHOT_BYTES",
    "MAX_TYPE_NAME_LENGTH",
    "LimitExceededError",
    "check_context_batch",
    "check_encoded",
]
