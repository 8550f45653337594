"""Immutable value types shared by the facade, the SPI and every engine.

Field names are the snake_case forms of the Go field names. The types that exist
once per stored event or row (``SerializedEvent``, ``StorageEngineEvent``,
``Snapshot``, ``IdNamePair``) are ``NamedTuple``\\ s: immutable, slotted and about
three times cheaper to build than a frozen dataclass, which matters on read paths
that build a hundred thousand of them. The configuration-like types are frozen,
slotted dataclasses that validate their input.

All times are timezone-aware UTC ``datetime``\\ s with microsecond precision.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

START_BEGINNING = "beginning"
"""``StartFrom.kind``: deliver the whole log."""
START_END = "end"
"""``StartFrom.kind``: deliver only events stored after the subscription starts."""
START_EVENT_ID = "event_id"
"""``StartFrom.kind``: deliver events whose global id is greater than ``event_id``."""
START_TIMESTAMP = "timestamp"
"""``StartFrom.kind``: deliver from the first event whose time is >= ``timestamp``."""

_START_KINDS = (START_BEGINNING, START_END, START_EVENT_ID, START_TIMESTAMP)


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(timezone.utc)


class SerializedEvent(NamedTuple):
    """An event with its state serialized (Go ``SerializedEvent``).

    ``event_id`` is the global, strictly increasing id; it is 0 for an event that
    has not been stored yet.
    """

    event_id: int
    aggregate_id: int
    event_type: str
    state: str
    sequence: int
    reference: str
    event_time: datetime


class StorageEngineEvent(NamedTuple):
    """An event as an engine writes it: the event type resolved to its id."""

    aggregate_id: int
    sequence: int
    event_type_id: int
    state: str
    event_time: datetime
    reference: str


class Snapshot(NamedTuple):
    """An aggregate's state serialized at ``sequence``."""

    aggregate_id: int
    state: str
    sequence: int


class IdNamePair(NamedTuple):
    """A registered aggregate or event type."""

    id: int
    name: str


@dataclass(frozen=True, slots=True)
class AggregateState:
    """What it takes to rebuild an aggregate: its latest snapshot and the events after it."""

    aggregate_id: int
    natural_key: str | None
    snapshot: Snapshot | None
    events: list[SerializedEvent]


@dataclass(frozen=True, slots=True)
class StartFrom:
    """Where a subscription starts reading the first time it runs.

    Build it with :meth:`beginning`, :meth:`end`, :meth:`after_event` or :meth:`at_time`.
    """

    kind: str
    event_id: int = 0
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        if self.kind not in _START_KINDS:
            raise ValueError(
                f"unknown StartFrom kind {self.kind!r}; expected one of {_START_KINDS}"
            )
        needs_time = self.kind == START_TIMESTAMP
        if needs_time and (self.timestamp is None or self.timestamp.tzinfo is None):
            raise ValueError(
                f"StartFrom.at_time needs a timezone-aware datetime, got {self.timestamp!r}"
            )
        if self.event_id < 0:
            raise ValueError(f"StartFrom event_id must be >= 0, got {self.event_id}")

    @classmethod
    def beginning(cls) -> StartFrom:
        """Start from the first event in the log."""
        return cls(START_BEGINNING)

    @classmethod
    def end(cls) -> StartFrom:
        """Start after the last event stored when the subscription is first created."""
        return cls(START_END)

    @classmethod
    def after_event(cls, event_id: int) -> StartFrom:
        """Start with the events whose global id is greater than ``event_id``."""
        return cls(START_EVENT_ID, event_id=event_id)

    @classmethod
    def at_time(cls, timestamp: datetime) -> StartFrom:
        """Start with the first event whose time is at or after ``timestamp``."""
        return cls(START_TIMESTAMP, timestamp=timestamp)


@dataclass(frozen=True, slots=True)
class SubscriptionFilter:
    """Which events a subscription reads; an empty field matches everything."""

    aggregate_type: str | None = None
    event_types: tuple[str, ...] = ()
    aggregate_key: str | None = None

    def __post_init__(self) -> None:
        # Accept any iterable of names but store an immutable, hashable tuple.
        if isinstance(self.event_types, str):
            object.__setattr__(self, "event_types", (self.event_types,))
        else:
            object.__setattr__(self, "event_types", tuple(self.event_types))


def default_owner() -> str:
    """A lease owner name unique to this runner: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """How a subscription runner behaves (Go ``Options``).

    ``poll_interval`` and ``lease`` are in seconds. ``owner`` None gets a unique
    owner per runner (see :func:`default_owner`).
    """

    batch_size: int = 100
    poll_interval: float = 0.5
    lease: float = 15.0
    owner: str | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, got {self.poll_interval}")
        if self.lease <= 0:
            raise ValueError(f"lease must be > 0, got {self.lease}")


Options = SubscriptionOptions
"""Alias matching the Go name ``Options``."""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A durable (or, with ``id`` 0, ephemeral) reader over the global log.

    ``event_type_ids`` holds the ids of a multi-type filter; when it is non-empty
    it wins over ``event_type_id``. ``last_event_id`` is the cursor.
    """

    id: int
    name: str
    aggregate_type_id: int | None = None
    event_type_id: int | None = None
    event_type_ids: tuple[int, ...] = ()
    aggregate_key: str | None = None
    start_from: str = START_BEGINNING
    start_event_id: int = 0
    start_timestamp: datetime | None = None
    last_event_id: int = 0
    active: bool = True
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None


__all__ = [
    "START_BEGINNING",
    "START_END",
    "START_EVENT_ID",
    "START_TIMESTAMP",
    "AggregateState",
    "IdNamePair",
    "Options",
    "SerializedEvent",
    "Snapshot",
    "StartFrom",
    "StorageEngineEvent",
    "Subscription",
    "SubscriptionFilter",
    "SubscriptionOptions",
    "default_owner",
    "utc_now",
]
