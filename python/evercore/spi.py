"""The storage-engine SPI: what a backend plugin implements.

:class:`StorageEngine` is the snake_case form of the Go ``StorageEngine``
interface. ``tx`` is the object returned by :meth:`StorageEngine.get_transaction_info`
(it has ``commit()`` and ``rollback()``), or None for autocommit: each call is then
its own transaction.

Rules every engine meets (``evercore.testing`` checks each of them):

* a not-found or wrong-aggregate-type lookup raises ``NotFoundError``;
* a duplicate natural key raises ``ConstraintViolationError``;
* a key longer than ``max_key_length`` raises ``KeyTooLongError`` before any I/O;
* a second event with an existing (aggregate_id, sequence) raises
  ``ConcurrencyError`` and the whole transaction writes nothing;
* events read for a subscription carry their global ``event_id``, strictly
  increasing, and a reader never skips an event that commits after the reader
  has read past a lower id;
* multi-type filters (``Subscription.event_type_ids``) are applied in storage;
* lease expiry is judged by one clock (the database's where there is one);
* reads inside a transaction see that transaction's own writes;
* event ``state`` is opaque text stored and returned exactly as given;
* times round-trip exactly (microseconds), as timezone-aware UTC datetimes.

Optional capabilities are separate protocols (:class:`SupportsEventWait`,
:class:`SupportsMigrations`, :class:`SupportsStats`, :class:`SupportsWriteAndCommit`);
the facade checks for them with ``isinstance`` and falls back when an engine lacks one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, Protocol, runtime_checkable

from evercore.errors import InvalidKeyError, KeyTooLongError
from evercore.values import (
    IdNamePair,
    SerializedEvent,
    Snapshot,
    StorageEngineEvent,
    Subscription,
)

SPI_VERSION = 1
"""The version of this SPI; a backend spec states the version it implements."""

MAX_KEY_LENGTH = 64
"""The natural-key limit of every built-in engine (Go ``GetMaxKeyLength``)."""


def validate_natural_key(key: str, max_length: int) -> None:
    """Refuse, before any I/O, a natural key that no engine may store.

    Raises ``KeyTooLongError`` when ``key`` is longer than ``max_length`` and
    ``InvalidKeyError`` when it is not a ``str``, is empty, holds a NUL character or
    a lone surrogate (which no database can store as UTF-8).
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"natural key must be a str, got {type(key).__name__}: {key!r}")
    if len(key) > max_length:
        raise KeyTooLongError(key, max_length)
    if not key:
        raise InvalidKeyError("natural key must not be empty")
    if "\x00" in key:
        raise InvalidKeyError(f"natural key {key!r} contains a NUL character")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidKeyError(
            f"natural key {key!r} contains a lone surrogate and is not valid UTF-8"
        ) from None


@runtime_checkable
class Transaction(Protocol):
    """A storage transaction (Go ``StorageEngineTxInfo``)."""

    def commit(self) -> None:
        """Make every write of the transaction durable and visible."""

    def rollback(self) -> None:
        """Discard every write of the transaction."""


@runtime_checkable
class StorageEngine(Protocol):
    """A storage backend. Implementations must be safe to call from several threads."""

    @property
    def max_key_length(self) -> int:
        """The longest natural key this engine stores."""
        ...

    def get_transaction_info(self) -> Transaction:
        """Begin a transaction."""
        ...

    def close(self) -> None:
        """Release every resource (connections, files); idempotent."""
        ...

    # -- types -------------------------------------------------------------
    def get_event_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of an event type, registering the name if it is new."""
        ...

    def get_aggregate_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of an aggregate type, registering the name if it is new."""
        ...

    def get_aggregate_types(self, tx: Transaction | None) -> list[IdNamePair]:
        """Every registered aggregate type."""
        ...

    def get_event_types(self, tx: Transaction | None) -> list[IdNamePair]:
        """Every registered event type."""
        ...

    # -- aggregates ----------------------------------------------------------
    def new_aggregate(self, tx: Transaction | None, aggregate_type_id: int) -> int:
        """Create an aggregate without a natural key; return its id."""
        ...

    def new_aggregate_with_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> int:
        """Create an aggregate with a natural key; a duplicate key is a
        ``ConstraintViolationError``."""
        ...

    def get_aggregate_by_id(
        self, tx: Transaction | None, aggregate_type_id: int, aggregate_id: int
    ) -> tuple[int, str | None]:
        """(id, natural key or None) of an aggregate of this type, else ``NotFoundError``."""
        ...

    def get_aggregate_by_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> int:
        """The id of the aggregate of this type with this key, else ``NotFoundError``."""
        ...

    def get_or_create_aggregate_by_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> tuple[bool, int]:
        """(created, id): the existing aggregate with this key, or a new one."""
        ...

    def change_aggregate_natural_key(
        self, tx: Transaction | None, aggregate_id: int, natural_key: str
    ) -> None:
        """Give an aggregate (with or without a key) a new natural key."""
        ...

    # -- events and snapshots ------------------------------------------------
    def get_snapshot_for_aggregate(
        self, tx: Transaction | None, aggregate_id: int
    ) -> Snapshot | None:
        """The latest snapshot of an aggregate, or None."""
        ...

    def get_events_for_aggregate(
        self, tx: Transaction | None, aggregate_id: int, after_sequence: int
    ) -> list[SerializedEvent]:
        """The aggregate's events with sequence > ``after_sequence``, in sequence order."""
        ...

    def write_state(
        self,
        tx: Transaction | None,
        events: Sequence[StorageEngineEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """Store events and snapshots; a duplicate (aggregate, sequence) raises
        ``ConcurrencyError`` and nothing of the transaction is kept."""
        ...

    # -- durable subscriptions ----------------------------------------------
    def upsert_subscription(
        self,
        tx: Transaction | None,
        name: str,
        aggregate_type_id: int | None,
        event_type_id: int | None,
        aggregate_key: str | None,
        start_from: str,
        start_event_id: int,
        start_timestamp: datetime | None,
    ) -> int:
        """Create or update a subscription by name; return its id.

        On create the engine initialises the cursor (``last_event_id``) from
        ``start_from``, in the same transaction, exactly once: ``beginning`` -> 0;
        ``end`` -> the highest event id (never past an event that may still commit
        with a lower id); ``event_id`` -> ``start_event_id``; ``timestamp`` -> the
        first event id with time >= ``start_timestamp`` minus 1, or the highest id
        when there is none. An update changes the filter and start fields but keeps
        the cursor, the lease and ``active``.
        """
        ...

    def add_subscription_event_type(
        self, tx: Transaction | None, subscription_id: int, event_type_id: int
    ) -> None:
        """Add an event type to a subscription's multi-type filter (idempotent)."""
        ...

    def get_subscription_by_name(self, tx: Transaction | None, name: str) -> Subscription:
        """The subscription, with ``event_type_ids`` filled; else ``NotFoundError``."""
        ...

    def set_subscription_active(
        self, tx: Transaction | None, subscription_id: int, active: bool
    ) -> None:
        """Switch a subscription on or off."""
        ...

    def claim_subscription(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float
    ) -> bool:
        """Take the lease if it is free, expired or already ``owner``'s."""
        ...

    def renew_subscription(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float
    ) -> bool:
        """Extend the lease; only the current owner of an unexpired lease succeeds."""
        ...

    def release_subscription(self, tx: Transaction | None, name: str, owner: str) -> None:
        """Give up the lease if ``owner`` holds it."""
        ...

    def get_events_for_subscription(
        self, tx: Transaction | None, subscription: Subscription, limit: int
    ) -> list[SerializedEvent]:
        """Up to ``limit`` matching events with id > ``subscription.last_event_id``, in
        id order, never skipping one that commits later with a lower id."""
        ...

    def advance_subscription_cursor(
        self,
        tx: Transaction | None,
        subscription_id: int,
        last_event_id: int,
        owner: str | None = None,
    ) -> None:
        """Move the cursor forward (a lower id is ignored). With ``owner``, only while
        that owner holds an unexpired lease, else ``SubscriptionLeaseLost``."""
        ...

    def get_max_event_id(self, tx: Transaction | None) -> int:
        """The highest global event id, 0 when the log is empty."""
        ...

    def get_first_event_id_from_timestamp(self, tx: Transaction | None, ts: datetime) -> int:
        """The id of the first event with time >= ``ts`` (unfiltered), 0 when none."""
        ...


@runtime_checkable
class SupportsEventWait(Protocol):
    """Optional: an engine that can push (NOTIFY, blocking stream reads, a condition).

    Subscription runners call it when a read came back empty instead of sleeping a
    whole poll interval.
    """

    def wait_for_events(self, after_event_id: int, timeout: float) -> None:
        """Return as soon as an event with id > ``after_event_id`` may exist, or after
        ``timeout`` seconds. Spurious early returns are allowed; runners call it with
        short timeouts so that a stop request is seen promptly."""


@runtime_checkable
class SupportsMigrations(Protocol):
    """Optional: an engine with a versioned schema."""

    def migrate(self) -> int:
        """Apply pending migrations (safely if several processes do it at once) and
        return the schema version. A newer schema raises ``SchemaVersionError``."""


class StoreCounts(NamedTuple):
    """Sizes reported by ``evercore info``."""

    aggregates: int
    events: int
    snapshots: int


@runtime_checkable
class SupportsStats(Protocol):
    """Optional: an engine that can report its size and subscriptions cheaply."""

    def get_counts(self, tx: Transaction | None) -> StoreCounts:
        """How many aggregates, events and snapshots are stored."""

    def list_subscriptions(self, tx: Transaction | None) -> list[Subscription]:
        """Every durable subscription, with its cursor and lease."""


@runtime_checkable
class SupportsWriteAndCommit(Protocol):
    """Optional: an engine that can write a context's batch and commit in fewer round
    trips than ``write_state`` followed by ``commit`` (a network database that runs a
    lone statement as its own transaction, for instance).

    ``EventStore.context()`` uses it for the batch a context captured; without it the
    context calls ``write_state`` and then ``tx.commit()``.
    """

    def write_state_and_commit(
        self,
        tx: Transaction,
        events: Sequence[StorageEngineEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """The outcome of ``write_state(tx, events, snapshots)`` then ``tx.commit()``.

        On any error nothing of ``tx`` is kept (earlier writes included) and ``tx``
        is finished: a later ``rollback()`` does nothing and ``commit()`` raises
        ``StorageEngineError``. A duplicate (aggregate, sequence) raises
        ``ConcurrencyError``; a connection lost while the outcome cannot be known
        raises ``CommitOutcomeUnknownError``.
        """


__all__ = [
    "MAX_KEY_LENGTH",
    "SPI_VERSION",
    "StorageEngine",
    "StoreCounts",
    "SupportsEventWait",
    "SupportsMigrations",
    "SupportsStats",
    "SupportsWriteAndCommit",
    "Transaction",
    "validate_natural_key",
]
