"""How events, snapshots and subscriptions are laid out in Redis, and back.

Times are stored as integer microseconds since the Unix epoch (exact, unlike a
float timestamp). A stream entry of the global log has the fields
``a`` (aggregate id), ``at`` (aggregate type id), ``t`` (event type id),
``s`` (sequence), ``ts`` (time), ``r`` (reference), ``d`` (state), always in that
order, and its entry id is ``<global event id>-0``. An aggregate's own event is a
sorted-set member scored by sequence: ``gid:seq:type:time:reflen:`` followed by the
reference and the state (``reflen`` counts characters, so the split is exact).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from evercore.values import SerializedEvent, Snapshot, StorageEngineEvent, Subscription

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // _MICROSECOND


def from_micros(micros: str | int) -> datetime:
    """The UTC datetime ``micros`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=int(micros))


def event_args(event: StorageEngineEvent) -> tuple[int, int, int, int, int, str, str]:
    """The seven ``commit.lua`` arguments of one event."""
    return (
        event.aggregate_id,
        event.sequence,
        event.event_type_id,
        to_micros(event.event_time),
        len(event.reference),
        event.reference,
        event.state,
    )


def decode_member(member: str, aggregate_id: int, type_names: Mapping[str, str]) -> SerializedEvent:
    """An aggregate's stored event (a sorted-set member) as a ``SerializedEvent``."""
    gid, seq, type_id, micros, ref_len, rest = member.split(":", 5)
    cut = int(ref_len)
    return SerializedEvent(
        int(gid), aggregate_id, type_names[type_id], rest[cut:], int(seq), rest[:cut],
        EPOCH + timedelta(microseconds=int(micros)),
    )


def decode_entries(
    entries: Sequence[Any], type_names: Mapping[str, str]
) -> list[SerializedEvent]:
    """Raw stream entries ``[id, [field, value, ...]]`` as ``SerializedEvent``\\ s."""
    return [
        SerializedEvent(
            int(entry_id[:-2]), int(f[1]), type_names[f[5]], f[13], int(f[7]), f[11],
            EPOCH + timedelta(microseconds=int(f[9])),
        )
        for entry_id, f in entries
    ]


def entry_type_ids(entries: Sequence[Any]) -> set[str]:
    """The event type ids (as stored strings) that raw stream entries mention."""
    return {f[5] for _, f in entries}


def member_type_ids(members: Sequence[str]) -> set[str]:
    """The event type ids (as stored strings) that sorted-set members mention."""
    return {m.split(":", 3)[2] for m in members}


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
        return None if value is None else from_micros(value)

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
        lease_expires_at=maybe_time("lease_expires_at"),
    )
