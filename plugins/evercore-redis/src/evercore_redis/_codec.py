"""How events, snapshots and subscriptions are laid out in Redis, and back.

An event is stored as one string, ``gid:aggregate id:seq:type:reflen:`` then its
time as a 32-character UTC ISO-8601 string (``2026-01-02T03:04:05.123456+00:00``:
it needs no delimiter and compares as a string), then the reference, then the
state (``reflen`` counts characters, so the split is exact whatever the text
holds). The client sends it without the ``gid:`` (assigned by ``commit.lua``);
the aggregate's list (in commit order) holds it, and so does the field
``e`` of the log stream entry ``<gid>-0``, next to ``at`` (the aggregate type id,
for server-side filters). One string per event keeps the arguments, the script
and the client's parsing cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from evercore.values import SerializedEvent, Snapshot, StorageEngineEvent, Subscription

TIME_LENGTH = 32
"""Characters of a stored time: ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``."""

_UTC = timezone.utc
_new_event: Callable[..., SerializedEvent] = tuple.__new__  # skips NamedTuple's __new__
_from_iso = datetime.fromisoformat
_second_prefixes: dict[tuple[int, int, int, int], str] = {}


def _second_prefix(moment: datetime) -> str:
    """The ISO text of the whole second of ``moment`` (in UTC, or naive), cached:
    ``datetime.isoformat`` costs more than the rest of an event's encoding."""
    key = (moment.toordinal(), moment.hour, moment.minute, moment.second)
    prefix = _second_prefixes.get(key)
    if prefix is None:
        if len(_second_prefixes) > 4096:
            _second_prefixes.clear()
        prefix = moment.replace(microsecond=0, tzinfo=None).isoformat()
        _second_prefixes[key] = prefix
    return prefix


def to_iso(moment: datetime) -> str:
    """``moment`` in UTC (naive is UTC) as the fixed-length ISO-8601 text stored for times."""
    if moment.tzinfo is not None and moment.tzinfo is not _UTC:
        moment = moment.astimezone(_UTC)
    return f"{_second_prefix(moment)}.{moment.microsecond:06d}+00:00"


def from_iso(text: str) -> datetime:
    """A stored time as an aware UTC datetime."""
    return _from_iso(text)


def encode_events(events: Iterable[StorageEngineEvent]) -> list[str]:
    """The ``commit.lua`` arguments of events (their stored form without ``gid:``).

    One loop with the second-prefix cache inlined: this runs once per event
    written, and a function call per event is a measurable share of a commit.
    """
    prefixes = _second_prefixes
    encoded: list[str] = []
    append = encoded.append
    for aggregate_id, sequence, type_id, state, moment, reference in events:
        if moment.tzinfo is not _UTC and moment.tzinfo is not None:
            moment = moment.astimezone(_UTC)
        prefix = prefixes.get(
            (moment.toordinal(), moment.hour, moment.minute, moment.second)
        ) or _second_prefix(moment)
        append(f"{aggregate_id}:{sequence}:{type_id}:{len(reference)}:"
               f"{prefix}.{moment.microsecond:06d}+00:00{reference}{state}")
    return encoded


def decode_events(stored: Sequence[str], type_names: Mapping[str, str]) -> list[SerializedEvent]:
    """Stored events (aggregate list members or the ``e`` fields of log entries);
    ``KeyError`` names an event type id missing from ``type_names``."""
    events: list[SerializedEvent] = []
    append = events.append
    for text in stored:
        gid, aggregate_id, seq, type_id, ref_len, tail = text.split(":", 5)
        cut = int(ref_len)
        body = tail[TIME_LENGTH:]
        append(_new_event(SerializedEvent, (
            int(gid), int(aggregate_id), type_names[type_id], body[cut:] if cut else body,
            int(seq), body[:cut], _from_iso(tail[:TIME_LENGTH]),
        )))
    return events


def entry_events(entries: Sequence[Any]) -> list[str]:
    """The stored events of raw log entries ``[id, ["at", type, "e", event]]``."""
    return [fields[3] for _, fields in entries]


def decode_snapshot(aggregate_id: int, stored: str) -> Snapshot:
    """A stored ``seq:state`` snapshot value as a ``Snapshot``."""
    seq, state = stored.split(":", 1)
    return Snapshot(aggregate_id, state, int(seq))


def optional(value: object) -> str:
    """A nullable argument for a script: ``""`` stands for None."""
    return "" if value is None else str(value)


def decode_subscription(fields: Mapping[str, str], subscription_id: int,
                        event_type_ids: Sequence[str]) -> Subscription:
    """A subscription hash (and its multi-type set) as a ``Subscription``."""

    def maybe_int(name: str) -> int | None:
        value = fields.get(name)
        return None if value is None else int(value)

    def maybe_time(name: str) -> datetime | None:
        value = fields.get(name)
        return None if value is None else from_iso(value)

    return Subscription(
        id=subscription_id,
        name=fields["name"],
        aggregate_type_id=maybe_int("aggregate_type_id"),
        event_type_id=maybe_int("event_type_id"),
        event_type_ids=tuple(sorted(int(t) for t in event_type_ids)),
        aggregate_key=fields.get("aggregate_key"),
        start_from=fields["start_from"],
        start_event_id=int(fields.get("start_event_id", "0")),
        start_timestamp=maybe_time("start_timestamp"),
        last_event_id=int(fields.get("last_event_id", "0")),
        active=fields.get("active") == "1",
        lease_owner=fields.get("lease_owner"),
        lease_expires_at=_lease_time(fields.get("lease_expires_at")),
    )


def _lease_time(micros: str | None) -> datetime | None:
    # Leases are judged in Lua with the server's TIME, so they are kept in microseconds.
    if micros is None:
        return None
    seconds, fraction = divmod(int(micros), 1_000_000)
    return datetime.fromtimestamp(seconds, _UTC).replace(microsecond=fraction)
