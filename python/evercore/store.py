"""``EventStore``: the entry point of the facade, and ``connect``.

    import evercore
    with evercore.connect("sqlite:///events.db") as store:
        with store.context() as ctx:
            ...

Every write context is one storage transaction: the events and snapshots it
captured are checked (sequence rules, before any I/O), serialized in one batch by
the Rust core and written together when the context's body returns; nothing is
written when it raises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast

from evercore import _kernels, limits
from evercore.context import EventStoreContext, EventStoreReadonlyContext, columns_of
from evercore.registry import InstalledBackend, get_registry, open_engine
from evercore.spi import (
    StorageEngine,
    SupportsMigrations,
    SupportsWriteAndCommit,
    Transaction,
)
from evercore.values import (
    SerializedEvent,
    Snapshot,
    StartFrom,
    SubscriptionFilter,
    SubscriptionOptions,
)

T = TypeVar("T")
log = logging.getLogger("evercore")

SubscriptionHandler = Callable[[list[SerializedEvent]], None]
"""Called with each batch of events a subscription delivers."""


class _TypeIdCache:
    """Type-name -> id maps shared by a store's contexts. Only ids whose transaction
    committed are put here (a rolled-back registration must not be remembered)."""

    def __init__(self) -> None:
        self.aggregate_types: dict[str, int] = {}
        self.event_types: dict[str, int] = {}
        self.lock = threading.Lock()


class TypeIds:
    """Type-id lookups for one transaction: the store's committed cache first, then the
    engine; ids learnt here reach the shared cache only through :meth:`publish`."""

    def __init__(self, cache: _TypeIdCache, engine: StorageEngine) -> None:
        self._cache = cache
        self._engine = engine
        self._new_aggregate_types: dict[str, int] = {}
        self._new_event_types: dict[str, int] = {}

    def aggregate_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of aggregate type ``name``, registering it in ``tx`` if it is new."""
        found = self._cache.aggregate_types.get(name)
        if found is None:
            found = self._new_aggregate_types.get(name)
        if found is None:
            found = self._engine.get_aggregate_type_id(tx, name)
            self._new_aggregate_types[name] = found
        return found

    def event_type_ids(self, tx: Transaction | None, names: Iterable[str]) -> dict[str, int]:
        """Ids of the event types ``names``, registering new ones in ``tx``."""
        known = self._cache.event_types
        result: dict[str, int] = {}
        for name in names:
            found = known.get(name)
            if found is None:
                found = self._new_event_types.get(name)
            if found is None:
                found = self._engine.get_event_type_id(tx, name)
                self._new_event_types[name] = found
            result[name] = found
        return result

    def publish(self) -> None:
        """Share the ids learnt here; call only after the transaction committed."""
        if self._new_aggregate_types or self._new_event_types:
            with self._cache.lock:
                self._cache.aggregate_types.update(self._new_aggregate_types)
                self._cache.event_types.update(self._new_event_types)


class EventStore:
    """An event store over one storage engine (Go ``EventStore``).

    Thread-safe: contexts may run on several threads at once, each in its own
    transaction.
    """

    def __init__(self, engine: StorageEngine) -> None:
        self.storage_engine = engine
        self._type_cache = _TypeIdCache()
        # Checked once: a runtime protocol check costs microseconds, per context.
        self._writes_and_commits = isinstance(engine, SupportsWriteAndCommit)

    def __repr__(self) -> str:
        return f"EventStore({self.storage_engine!r})"

    # -- lifecycle ------------------------------------------------------------
    def close(self) -> None:
        """Close the storage engine."""
        self.storage_engine.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def warmup(
        self, known_aggregate_types: Iterable[str] = (), known_event_types: Iterable[str] = ()
    ) -> None:
        """Register and cache the ids of these types up front, in one committed
        transaction, so that contexts do not look them up later."""
        tx = self.storage_engine.get_transaction_info()
        type_ids = self._type_ids()
        try:
            for name in known_aggregate_types:
                type_ids.aggregate_type_id(tx, name)
            type_ids.event_type_ids(tx, known_event_types)
        except BaseException:
            _rollback_quietly(tx)
            raise
        tx.commit()
        type_ids.publish()

    # -- contexts -------------------------------------------------------------
    @contextmanager
    def context(self) -> Iterator[EventStoreContext]:
        """A write context: ``with store.context() as ctx: ...``. Everything captured is
        written in one transaction when the block ends; nothing if it raises."""
        tx = self.storage_engine.get_transaction_info()
        type_ids = self._type_ids()
        ctx = EventStoreContext(self, tx, type_ids)
        try:
            yield ctx
            # With SupportsWriteAndCommit the engine commits here; if that fails it
            # has finished tx already, and the rollback below does nothing.
            committed = ctx._flush(commit=True)
        except BaseException:
            _rollback_quietly(tx)
            raise
        if not committed:
            tx.commit()
        type_ids.publish()

    @contextmanager
    def readonly_context(self) -> Iterator[EventStoreReadonlyContext]:
        """A read-only context: ``with store.readonly_context() as ctx: ...``."""
        tx = self.storage_engine.get_transaction_info()
        type_ids = self._type_ids()
        try:
            yield EventStoreReadonlyContext(self, tx, type_ids)
        except BaseException:
            _rollback_quietly(tx)
            raise
        # Committing (not rolling back) keeps the type names a lookup registered, so
        # their ids can be cached; a read-only context writes nothing else.
        tx.commit()
        type_ids.publish()

    def with_context(self, fn: Callable[[EventStoreContext], object]) -> None:
        """Run ``fn(ctx)`` in a write context (Go ``WithContext``)."""
        with self.context() as ctx:
            fn(ctx)

    def in_context(self, fn: Callable[[EventStoreContext], T]) -> T:
        """Run ``fn(ctx)`` in a write context and return its result (Go ``InContext``)."""
        with self.context() as ctx:
            return fn(ctx)

    def with_readonly_context(self, fn: Callable[[EventStoreReadonlyContext], object]) -> None:
        """Run ``fn(ctx)`` in a read-only context (Go ``WithReadonlyContext``)."""
        with self.readonly_context() as ctx:
            fn(ctx)

    def in_readonly_context(self, fn: Callable[[EventStoreReadonlyContext], T]) -> T:
        """Run ``fn(ctx)`` in a read-only context and return its result."""
        with self.readonly_context() as ctx:
            return fn(ctx)

    # -- writing --------------------------------------------------------------
    def save_state(
        self,
        tx: Transaction | None,
        events: Sequence[SerializedEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """Write serialized events and snapshots in ``tx`` (Go ``SaveState``).

        The events of each aggregate must be contiguous (``SequenceError`` otherwise,
        before any I/O). Type ids registered here are not cached, since the caller
        decides whether ``tx`` commits.
        """
        aggregate_ids, sequences, event_types, states, times, references = columns_of(events)
        self.write_captured(
            tx,
            TypeIds(self._type_cache, self.storage_engine),
            aggregate_ids=aggregate_ids,
            sequences=sequences,
            event_types=event_types,
            payloads=states,
            event_times=times,
            references=references,
            snapshots=snapshots,
            known_sequences={},
        )

    def write_captured(
        self,
        tx: Transaction | None,
        type_ids: TypeIds,
        *,
        aggregate_ids: Sequence[int],
        sequences: Sequence[int],
        event_types: Sequence[str],
        payloads: Sequence[object],
        event_times: Sequence[datetime],
        references: Sequence[str],
        snapshots: Sequence[Snapshot],
        known_sequences: Mapping[int, int],
        commit: bool = False,
    ) -> bool:
        """Check, serialize and write a batch given as columns (the path every context
        takes at commit). Sequence rules and the limits of :mod:`evercore.limits` are
        checked before the engine writes anything.

        With ``commit``, an engine with ``SupportsWriteAndCommit`` also commits ``tx``
        in the same call (on failure ``tx`` is finished); returns whether it did, so
        that the caller commits otherwise."""
        limits.check_context_batch(aggregate_ids, sequences, event_types, payloads, references)
        _kernels.validate_sequences(aggregate_ids, sequences, known_sequences)
        ids = type_ids.event_type_ids(tx, set(event_types))
        storage_events = _kernels.encode_events(
            aggregate_ids, sequences, event_types, payloads, event_times, references, ids
        )
        limits.check_encoded(storage_events, snapshots)
        if commit and tx is not None and self._writes_and_commits:
            engine = cast(SupportsWriteAndCommit, self.storage_engine)
            engine.write_state_and_commit(tx, storage_events, snapshots)
            return True
        self.storage_engine.write_state(tx, storage_events, snapshots)
        return False

    # -- subscriptions ----------------------------------------------------------
    def run_subscription(
        self,
        name: str,
        filter: SubscriptionFilter,
        start: StartFrom,
        options: SubscriptionOptions,
        handler: SubscriptionHandler,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        """Run a durable subscription: claim its lease and call ``handler`` with each
        batch (at-least-once) until ``stop`` is set. See :mod:`evercore.subscriptions`."""
        from evercore import subscriptions

        subscriptions.run_subscription(
            self.storage_engine, name, filter, start, options, handler, stop=stop
        )

    def run_ephemeral_subscription(
        self,
        filter: SubscriptionFilter,
        start: StartFrom,
        options: SubscriptionOptions,
        handler: SubscriptionHandler,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        """Follow the log with an in-process cursor (nothing stored) until ``stop`` is set."""
        from evercore import subscriptions

        subscriptions.run_ephemeral_subscription(
            self.storage_engine, filter, start, options, handler, stop=stop
        )

    def subscribe(self, *args: Any, **kwargs: Any) -> AsyncIterator[list[SerializedEvent]]:
        """The asyncio flavour: ``async for batch in store.subscribe(...)``; see
        :func:`evercore.subscriptions.subscribe` for the arguments."""
        from evercore import subscriptions

        return subscriptions.subscribe(self.storage_engine, *args, **kwargs)

    def _type_ids(self) -> TypeIds:
        return TypeIds(self._type_cache, self.storage_engine)


def _rollback_quietly(tx: Transaction) -> None:
    """Roll back while another exception propagates; that one matters more."""
    try:
        tx.rollback()
    except Exception:
        log.warning("rollback failed", exc_info=True)


def connect(uri: str, **options: Any) -> EventStore:
    """Open the store at ``uri`` with the backend registered for its scheme, applying
    pending schema migrations: ``memory://``, ``sqlite:///events.db``,
    ``postgresql://...``, ``redis://...``. Options go to the backend."""
    engine = open_engine(uri, **options)
    if isinstance(engine, SupportsMigrations):
        try:
            engine.migrate()
        except BaseException:
            engine.close()
            raise
    return EventStore(engine)


def backends() -> list[InstalledBackend]:
    """The installed backends (name, schemes, description, plugin, distribution)."""
    return get_registry().backends()


__all__ = ["EventStore", "SubscriptionHandler", "TypeIds", "backends", "connect"]
