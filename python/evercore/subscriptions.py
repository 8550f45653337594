"""Subscription runners: durable (leased and fenced), ephemeral, and asyncio.

Three ways to follow the global event log, all built on the storage SPI:

* :func:`run_subscription` — a durable, named subscription. Its cursor lives in
  storage, one runner at a time holds its lease, and delivery is at-least-once:
  the cursor moves only after the handler returned, so a batch whose handler
  raised (or whose runner died) is delivered again to the next runner.
* :func:`run_ephemeral_subscription` — the same pipeline with the cursor kept in
  this process (nothing is stored; a restart starts over from ``start``).
* :func:`subscribe` — an async iterator of batches for asyncio services, durable
  when given a ``name``, ephemeral otherwise.

Durable runners follow SPEC §7b: check that the subscription is active (else
``SubscriptionInactive``), claim the lease (else ``SubscriptionAlreadyOwned``),
read batches in global id order, advance the cursor *with the owner* after each
batch (the engine refuses a runner whose lease was taken over:
``SubscriptionLeaseLost``, and never moves a cursor backwards), renew the lease
about every third of its length from a background thread (so a slow handler does
not lose it; a failed renewal stops the runner with ``SubscriptionLeaseLost``
before it can advance), and release the lease on every exit.

Waiting: when a read comes back empty a runner waits up to ``poll_interval``
before reading again, in short slices so that a stop request (or a lost lease) is
seen within about :data:`IDLE_SLICE` seconds. An engine that can push
(``evercore.spi.SupportsEventWait``) is asked to wait instead of sleeping, and a
wake-up ends the wait early: plugin authors implement ``wait_for_events`` to make
subscriptions on their backend low-latency. ``wait_for_events(cursor, timeout)``
may return early whenever *any* event past the cursor may exist (the runner passes
its cursor; it does not know the ids of events its filter skips); wake-ups that
lead to empty reads are absorbed by a back-off, so a filtered runner does not spin
while unrelated events stream in.

Errors from the engine (a lost connection, say) propagate and stop the runner,
with the lease released when possible; run runners under a supervisor that
restarts them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import NamedTuple, Protocol

from evercore.errors import (
    ConfigurationError,
    SubscriptionAlreadyOwned,
    SubscriptionInactive,
    SubscriptionLeaseLost,
)
from evercore.spi import StorageEngine, SupportsEventWait
from evercore.values import (
    START_BEGINNING,
    START_END,
    START_EVENT_ID,
    SerializedEvent,
    StartFrom,
    Subscription,
    SubscriptionFilter,
    SubscriptionOptions,
    default_owner,
)

log = logging.getLogger(__name__)

Handler = Callable[[list[SerializedEvent]], object]
"""A batch handler: called with each non-empty batch; its return value is ignored."""

IDLE_SLICE = 0.1
"""Longest single wait (seconds) of an idle runner, which bounds how late it sees a
stop request or a lost lease."""

# The first floor between idle reads after a wake-up that found nothing (seconds).
_FIRST_BACKOFF = 0.01

# How long closing a runner waits for a lease renewal in flight.
_RENEWAL_JOIN_TIMEOUT = 1.0

# A wait that returns this much earlier than asked was a wake-up, not a timeout.
_WOKEN_FRACTION = 0.9


# -- filters and start positions --------------------------------------------------


class _TypeIds(NamedTuple):
    """A filter's type names resolved to ids, in the shape ``Subscription`` wants."""

    aggregate_type_id: int | None
    event_type_id: int | None
    event_type_ids: tuple[int, ...]

    @property
    def wanted_event_types(self) -> set[int]:
        """The event type ids this filter delivers (empty: every type)."""
        return _effective_event_types(self.event_type_id, self.event_type_ids)


def _effective_event_types(single: int | None, multi: tuple[int, ...]) -> set[int]:
    # SPEC: a non-empty multi-type list wins over the single event type.
    if multi:
        return set(multi)
    return set() if single is None else {single}


def _resolve_types(engine: StorageEngine, flt: SubscriptionFilter) -> _TypeIds:
    aggregate_type_id = (
        None
        if flt.aggregate_type is None
        else engine.get_aggregate_type_id(None, flt.aggregate_type)
    )
    ids = tuple(dict.fromkeys(engine.get_event_type_id(None, n) for n in flt.event_types))
    if len(ids) == 1:
        return _TypeIds(aggregate_type_id, ids[0], ())
    return _TypeIds(aggregate_type_id, None, ids)


def _start_cursor(engine: StorageEngine, start: StartFrom) -> int:
    """The cursor an ephemeral reader starts from (the same rule as ``upsert_subscription``)."""
    if start.kind == START_BEGINNING:
        return 0
    if start.kind == START_END:
        return engine.get_max_event_id(None)
    if start.kind == START_EVENT_ID:
        return start.event_id
    assert start.timestamp is not None  # StartFrom validates this
    first = engine.get_first_event_id_from_timestamp(None, start.timestamp)
    return first - 1 if first > 0 else engine.get_max_event_id(None)


# -- readers: one batch at a time, acknowledged explicitly --------------------------


class _Reader(Protocol):
    """A cursor over the log; the runners drive it (poll, then ack what they handled)."""

    @property
    def cursor(self) -> int:
        """The id of the last acknowledged event."""
        ...

    def poll(self) -> list[SerializedEvent]:
        """The next batch after the cursor (empty when caught up)."""
        ...

    def ack(self, last_event_id: int) -> None:
        """Move the cursor to ``last_event_id``: the batch up to it has been handled."""
        ...

    def interrupted(self) -> bool:
        """True when the reader must stop waiting because its next call will fail."""
        ...

    def close(self) -> None:
        """Release what the reader holds; never raises."""
        ...


class _EphemeralReader:
    """A cursor kept in this process only."""

    def __init__(
        self,
        engine: StorageEngine,
        flt: SubscriptionFilter,
        start: StartFrom,
        options: SubscriptionOptions,
    ) -> None:
        ids = _resolve_types(engine, flt)
        self._engine = engine
        self._limit = options.batch_size
        self._sub = Subscription(
            id=0,
            name="",
            aggregate_type_id=ids.aggregate_type_id,
            event_type_id=ids.event_type_id,
            event_type_ids=ids.event_type_ids,
            aggregate_key=flt.aggregate_key,
            start_from=start.kind,
            start_event_id=start.event_id,
            start_timestamp=start.timestamp,
            last_event_id=_start_cursor(engine, start),
        )

    @property
    def cursor(self) -> int:
        """The id of the last acknowledged event."""
        return self._sub.last_event_id

    def poll(self) -> list[SerializedEvent]:
        """The next batch after the cursor."""
        return self._engine.get_events_for_subscription(None, self._sub, self._limit)

    def ack(self, last_event_id: int) -> None:
        """Move the in-process cursor to ``last_event_id``."""
        self._sub = replace(self._sub, last_event_id=last_event_id)

    def interrupted(self) -> bool:
        """Never: nothing outside this process can invalidate the cursor."""
        return False

    def close(self) -> None:
        """Nothing to release."""


class _LeaseKeeper:
    """Renews a lease about every third of its length from a daemon thread.

    A thread (not the runner's loop) so that the lease survives a handler that runs
    longer than the lease. A refused renewal marks the lease lost for good. An engine
    error (a restart, a dropped connection) is retried every tenth of the lease for
    as long as the last confirmed lease has at least a third of its length left, so
    a blip does not stop the runner; past that the lease is lost too, since a runner
    must not trust a lease it could not confirm. Fencing in
    ``advance_subscription_cursor`` backs this up whatever the local clock says.
    """

    def __init__(self, engine: StorageEngine, name: str, owner: str, lease: float) -> None:
        self._engine = engine
        self._name = name
        self._owner = owner
        self._lease = lease
        self._halt = threading.Event()
        self._lost = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"evercore-lease:{name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        confirmed = time.monotonic()  # the claim confirmed it just before
        pause = self._lease / 3
        while not self._halt.wait(pause):
            sent = time.monotonic()  # the storage's new expiry is later than this
            try:
                renewed = self._engine.renew_subscription(
                    None, self._name, self._owner, self._lease
                )
            except Exception as exc:  # unconfirmed: retry while the lease surely runs
                self._error = exc
                if time.monotonic() - confirmed < self._lease * 2 / 3:
                    pause = self._lease / 10
                    continue
                renewed = False
            if not renewed:
                self._lost.set()
                return
            confirmed, pause, self._error = sent, self._lease / 3, None

    @property
    def lost(self) -> bool:
        """True once a renewal failed."""
        return self._lost.is_set()

    def check(self) -> None:
        """Raise ``SubscriptionLeaseLost`` if a renewal failed."""
        if self._lost.is_set():
            raise SubscriptionLeaseLost(
                f"runner {self._owner!r} could not renew its lease on subscription "
                f"{self._name!r}; another runner may own it now, so this one stops "
                "without moving the cursor"
            ) from self._error

    def stop(self) -> None:
        """Stop renewing, waiting a little for a renewal in flight.

        Not forever: a renewal stuck on a dead connection must not keep the runner
        from returning, and a renewal that lands after the release fails harmlessly.
        """
        self._halt.set()
        self._thread.join(_RENEWAL_JOIN_TIMEOUT)


class _DurableReader:
    """A named subscription whose cursor and lease live in storage."""

    def __init__(
        self,
        engine: StorageEngine,
        name: str,
        flt: SubscriptionFilter,
        start: StartFrom,
        options: SubscriptionOptions,
    ) -> None:
        self._engine = engine
        self._name = name
        self._limit = options.batch_size
        self._owner = options.owner or default_owner()
        self._sub = _ensure_subscription(engine, name, flt, start)
        if not self._sub.active:
            raise _inactive(name)
        if not engine.claim_subscription(None, name, self._owner, options.lease):
            raise _claim_refused(engine, name)
        try:
            self._keeper = _LeaseKeeper(engine, name, self._owner, options.lease)
        except BaseException:
            self._release()
            raise

    @property
    def cursor(self) -> int:
        """The stored cursor as of the last poll or ack."""
        return self._sub.last_event_id

    def poll(self) -> list[SerializedEvent]:
        """Re-read the subscription (active? cursor?) and the next batch after its cursor."""
        self._keeper.check()
        sub = self._engine.get_subscription_by_name(None, self._name)
        if not sub.active:
            raise _inactive(self._name)
        self._sub = sub
        return self._engine.get_events_for_subscription(None, sub, self._limit)

    def ack(self, last_event_id: int) -> None:
        """Advance the stored cursor, fenced by owner (``SubscriptionLeaseLost`` if refused)."""
        self._keeper.check()
        self._engine.advance_subscription_cursor(
            None, self._sub.id, last_event_id, owner=self._owner
        )
        self._sub = replace(self._sub, last_event_id=last_event_id)

    def interrupted(self) -> bool:
        """True once the lease could not be renewed."""
        return self._keeper.lost

    def close(self) -> None:
        """Stop renewing and release the lease."""
        self._keeper.stop()
        self._release()

    def _release(self) -> None:
        try:
            self._engine.release_subscription(None, self._name, self._owner)
        except Exception:
            # The lease expires by itself; raising here would hide the error (if any)
            # that ended the run.
            log.warning(
                "could not release the lease of %r on subscription %r",
                self._owner,
                self._name,
                exc_info=True,
            )


def _ensure_subscription(
    engine: StorageEngine, name: str, flt: SubscriptionFilter, start: StartFrom
) -> Subscription:
    """Create or update the subscription and return it as stored.

    One transaction, so that a runner already working on this subscription never
    reads a half-written filter (say, its event types cleared but not yet re-added),
    and so that a refused update leaves the stored subscription as it was.
    """
    ids = _resolve_types(engine, flt)
    tx = engine.get_transaction_info()
    try:
        sub_id = engine.upsert_subscription(
            tx,
            name,
            ids.aggregate_type_id,
            ids.event_type_id,
            flt.aggregate_key,
            start.kind,
            start.event_id,
            start.timestamp,
        )
        for event_type_id in ids.event_type_ids:
            engine.add_subscription_event_type(tx, sub_id, event_type_id)
        sub = engine.get_subscription_by_name(tx, name)
        _check_event_types(name, sub, ids, flt)
        tx.commit()
    except BaseException:
        tx.rollback()
        raise
    return sub


def _check_event_types(
    name: str, sub: Subscription, ids: _TypeIds, flt: SubscriptionFilter
) -> None:
    stored = _effective_event_types(sub.event_type_id, sub.event_type_ids)
    if stored != ids.wanted_event_types:
        # An engine whose upsert keeps the stored multi-type list can add event
        # types but not remove them; a narrower filter would silently keep
        # delivering the old types.
        raise ConfigurationError(
            f"subscription {name!r} already filters on event type ids {sorted(stored)}, "
            f"but this runner asks for {sorted(ids.wanted_event_types)} "
            f"(event types {list(flt.event_types)}); this engine cannot remove event types "
            "from a stored subscription, so use a new subscription name"
        )


def _inactive(name: str) -> SubscriptionInactive:
    return SubscriptionInactive(f"subscription {name!r} is switched off (inactive)")


def _claim_refused(engine: StorageEngine, name: str) -> Exception:
    # Engines may refuse to lease an inactive subscription: report what really happened.
    sub = engine.get_subscription_by_name(None, name)
    if not sub.active:
        return _inactive(name)
    until = sub.lease_expires_at.isoformat() if sub.lease_expires_at else "unknown"
    return SubscriptionAlreadyOwned(
        f"subscription {name!r} is leased by {sub.lease_owner!r} until {until}"
    )


# -- waiting while idle ------------------------------------------------------------


class _Pacer:
    """Spaces the reads of an idle runner.

    A push-capable engine wakes the runner when *some* event may exist past the
    cursor, but with a filter the new event may not match, and an engine still
    settling a hole in the ids may wake it before the event is readable. So a
    wake-up that led to an empty read doubles a floor (from :data:`_FIRST_BACKOFF`
    up to the poll interval) under which the next idle period may not end; any
    delivered batch resets it. Idle reads thus stay at most about two per poll
    interval, while a matching event is still seen within milliseconds.
    """

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self.floor = 0.0
        self._woken = False

    def read(self, delivered: bool) -> None:
        """Record the outcome of a read."""
        if delivered:
            self.floor = 0.0
        elif self._woken:
            self.floor = min(self.poll_interval, max(2 * self.floor, _FIRST_BACKOFF))
        self._woken = False

    def woken(self, idle_since: float) -> float:
        """Record a wake-up; return how much longer to wait before reading."""
        self._woken = True
        return max(0.0, self.floor - (time.monotonic() - idle_since))

    def slices(self) -> Iterator[float]:
        """Slices (seconds) that add up to one poll interval, measured as they are used."""
        deadline = time.monotonic() + self.poll_interval
        while (remaining := deadline - time.monotonic()) > 0:
            yield min(IDLE_SLICE, remaining)


def _waiter(engine: StorageEngine) -> SupportsEventWait | None:
    return engine if isinstance(engine, SupportsEventWait) else None


def _idle(engine: StorageEngine, reader: _Reader, pacer: _Pacer, stop: threading.Event) -> None:
    """Wait up to one poll interval for new events, a stop request or a lost lease."""
    waiter = _waiter(engine)
    idle_since = time.monotonic()
    for piece in pacer.slices():
        if stop.is_set() or reader.interrupted():
            return
        if waiter is None:
            stop.wait(piece)
            continue
        started = time.monotonic()
        waiter.wait_for_events(reader.cursor, piece)
        if time.monotonic() - started < piece * _WOKEN_FRACTION:
            stop.wait(pacer.woken(idle_since))
            return


async def _idle_async(
    engine: StorageEngine, reader: _Reader, pacer: _Pacer, worker: ThreadPoolExecutor
) -> None:
    """The asyncio form of :func:`_idle`: engine calls run on the reader's ``worker``;
    cancellation is the stop request."""
    loop = asyncio.get_running_loop()
    waiter = _waiter(engine)
    idle_since = time.monotonic()
    for piece in pacer.slices():
        if reader.interrupted():
            return
        if waiter is None:
            await asyncio.sleep(piece)
            continue
        started = time.monotonic()
        await loop.run_in_executor(worker, waiter.wait_for_events, reader.cursor, piece)
        if time.monotonic() - started < piece * _WOKEN_FRACTION:
            await asyncio.sleep(pacer.woken(idle_since))
            return


# -- the runners ----------------------------------------------------------------------


def _drive(
    engine: StorageEngine,
    reader: _Reader,
    handler: Handler,
    poll_interval: float,
    stop: threading.Event | None,
) -> None:
    stop = stop if stop is not None else threading.Event()
    pacer = _Pacer(poll_interval)
    try:
        while not stop.is_set():
            batch = reader.poll()
            pacer.read(bool(batch))
            if batch:
                last = batch[-1].event_id  # before the handler, which may mutate the list
                handler(batch)
                reader.ack(last)
            else:
                _idle(engine, reader, pacer, stop)
    finally:
        reader.close()


def run_subscription(
    engine: StorageEngine,
    name: str,
    filter: SubscriptionFilter,
    start: StartFrom,
    options: SubscriptionOptions,
    handler: Handler,
    *,
    stop: threading.Event | None = None,
) -> None:
    """Run the durable subscription ``name``, calling ``handler(batch)`` per batch.

    Creates the subscription (its cursor initialised from ``start``, once) or
    updates its filter, then claims its lease and delivers batches of up to
    ``options.batch_size`` matching events in global id order. Blocks until
    ``stop`` is set (then returns normally, within about :data:`IDLE_SLICE` seconds
    when idle, or after the batch in hand) or an error is raised:

    * ``SubscriptionAlreadyOwned``: another runner holds an unexpired lease;
    * ``SubscriptionInactive``: the subscription is, or was switched, off;
    * ``SubscriptionLeaseLost``: the lease could not be renewed or the cursor
      advance was refused (another runner took over); the batch in hand is not
      acknowledged;
    * ``ConfigurationError``: the stored subscription filters on event types that
      ``filter`` does not name (they cannot be removed);
    * whatever ``handler`` raised, unchanged, with the cursor unmoved so that the
      next runner gets the same batch again (at-least-once).

    The lease is released on every exit. It is renewed while ``handler`` runs, so a
    handler that never returns holds the subscription forever: give the handler's
    own I/O timeouts.
    """
    reader = _DurableReader(engine, name, filter, start, options)
    _drive(engine, reader, handler, options.poll_interval, stop)


def run_ephemeral_subscription(
    engine: StorageEngine,
    filter: SubscriptionFilter,
    start: StartFrom,
    options: SubscriptionOptions,
    handler: Handler,
    *,
    stop: threading.Event | None = None,
) -> None:
    """Follow the log with an in-process cursor, calling ``handler(batch)`` per batch.

    Nothing is stored: each run starts from ``start`` (``end`` is the highest event
    id when the run starts; a timestamp past every event also means the end).
    Filtering, including several event types, is done by the engine. Blocks until
    ``stop`` is set (then returns normally) or ``handler`` or the engine raises.
    """
    reader = _EphemeralReader(engine, filter, start, options)
    _drive(engine, reader, handler, options.poll_interval, stop)


async def subscribe(
    engine: StorageEngine,
    filter: SubscriptionFilter | None = None,
    start: StartFrom | None = None,
    options: SubscriptionOptions | None = None,
    *,
    name: str | None = None,
) -> AsyncGenerator[list[SerializedEvent], None]:
    """Batches of events as an async iterator (durable with ``name``, else ephemeral)::

        async with contextlib.aclosing(subscribe(engine, name="mailer")) as batches:
            async for batch in batches:
                await send(batch)

    Defaults: every event, from the beginning, default options.

    Acknowledgement: a batch is acknowledged (for a durable subscription, the
    stored cursor advances with the lease owner) when the consumer asks for the
    *next* batch. Leaving the loop in any way (``break``, an exception, task
    cancellation) leaves the batch in hand unacknowledged, so a durable
    subscription delivers it again (at-least-once). ``break`` therefore redelivers
    the last batch; process it fully before asking for more.

    The same errors as :func:`run_subscription` are raised from the ``async for``.
    Engine calls run in a private worker thread, never on the event loop; the
    lease is renewed from a thread too, so a slow consumer (even one that blocks the
    loop) keeps it. Cancel the task to stop; the lease is released when the
    iterator is closed, which ``contextlib.aclosing`` makes immediate (closing waits
    for the engine call in flight, a fraction of a second at most).
    """
    flt = filter if filter is not None else SubscriptionFilter()
    begin = start if start is not None else StartFrom.beginning()
    opts = options if options is not None else SubscriptionOptions()
    loop = asyncio.get_running_loop()
    # One worker: the reader's calls never overlap, and closing can wait for the one
    # call in flight before releasing the lease.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evercore-subscribe")
    opened: list[_Reader] = []

    def open_reader() -> _Reader:
        reader: _Reader = (
            _EphemeralReader(engine, flt, begin, opts)
            if name is None
            else _DurableReader(engine, name, flt, begin, opts)
        )
        opened.append(reader)  # so that closing finds it even if we were cancelled
        return reader

    pacer = _Pacer(opts.poll_interval)
    try:
        reader = await loop.run_in_executor(executor, open_reader)
        while True:
            batch = await loop.run_in_executor(executor, reader.poll)
            pacer.read(bool(batch))
            if not batch:
                await _idle_async(engine, reader, pacer, executor)
                continue
            last = batch[-1].event_id
            yield batch
            await loop.run_in_executor(executor, reader.ack, last)
    finally:
        # Synchronous on purpose: a cancelled or finalised generator may not await.
        executor.shutdown(wait=True, cancel_futures=True)
        for held in opened:
            held.close()


__all__ = [
    "IDLE_SLICE",
    "Handler",
    "run_ephemeral_subscription",
    "run_subscription",
    "subscribe",
]
