"""The Redis storage engine.

Layout (every key starts with ``{prefix}:``, a cluster hash tag, so one store's
keys share a slot and scripts may touch any of them):

=====================  ======  ===================================================
key                    type    holds
=====================  ======  ===================================================
``meta``               hash    ``layout``: the layout version (:data:`LAYOUT_VERSION`)
``ctr``                hash    id counters: ``agg``, ``event``, ``atype``, ``etype``, ``sub``
``atype`` / ``etype``  hash    type name -> id (``...:id``: id -> name)
``agg``                hash    aggregate id -> ``<type id>:<highest stored sequence>``
``akey``               hash    aggregate id -> natural key
``key``                hash    natural key -> ``<aggregate id>:<aggregate type id>``
``ev:<aggregate id>``  list    the aggregate's events in commit order
``log``                stream  the global log; entry id ``<global event id>-0``
``snap``               hash    aggregate id -> ``<sequence>:<state>`` (the latest)
``sub``                hash    subscription name -> id
``sub:<id>``           hash    a durable subscription: filter, cursor, lease, epoch
``sub:<id>:et``        set     the subscription's multi-type filter
=====================  ======  ===================================================

A transaction buffers its writes in the client and applies them at commit in one
``commit.lua`` call, which checks everything before its first write. Reads inside
a transaction overlay the buffer on what is stored.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, NamedTuple, NoReturn, TypeVar

import redis
from evercore.errors import (
    CommitOutcomeUnknownError,
    ConcurrencyError,
    ConfigurationError,
    ConstraintViolationError,
    NotFoundError,
    SchemaVersionError,
    SerializationError,
    StorageEngineError,
    SubscriptionLeaseLost,
)
from evercore.spi import MAX_KEY_LENGTH, StoreCounts, Transaction, validate_natural_key
from evercore.values import (
    START_BEGINNING,
    START_END,
    START_EVENT_ID,
    START_TIMESTAMP,
    IdNamePair,
    SerializedEvent,
    Snapshot,
    StorageEngineEvent,
    Subscription,
)
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from evercore_redis import _codec, _scripts
from evercore_redis._config import RedisConfig, parse_config

LAYOUT_VERSION = 1
"""The key layout this code reads and writes (``{prefix}:meta`` field ``layout``)."""

SCAN_BUDGET = 10_000
"""Log entries one server-side scan may look at before handing control back."""

logger = logging.getLogger("evercore_redis")

_T = TypeVar("_T")
_DRIVER_LOST = (RedisConnectionError, RedisTimeoutError)


def open_redis_engine(uri: str, **options: Any) -> RedisStorageEngine:
    """The backend factory: connect to the Redis at ``uri`` (see :class:`RedisStorageEngine`)."""
    return RedisStorageEngine(parse_config(uri, options))


class _Upsert(NamedTuple):
    """A subscription create-or-update buffered in a transaction."""

    id: int  # the stored id, or one reserved for a new subscription
    aggregate_type_id: int | None
    event_type_id: int | None
    aggregate_key: str | None
    start_from: str
    start_event_id: int
    start_timestamp: datetime | None
    cursor: str  # the initial cursor if created ("" = the last event id at commit)

    def args(self, name: str) -> tuple[object, ...]:
        """The nine ``commit.lua`` arguments of this upsert."""
        return (
            self.id, name, _codec.optional(self.aggregate_type_id),
            _codec.optional(self.event_type_id), _codec.optional(self.aggregate_key),
            self.start_from, self.start_event_id,
            "" if self.start_timestamp is None else _codec.to_iso(self.start_timestamp),
            self.cursor,
        )


class RedisTransaction:
    """A client-side buffer of one context's writes, applied atomically at commit."""

    __slots__ = (
        "_engine", "_finished", "claimed", "committed_subscription_ids", "event_keys", "events",
        "key_changes", "new_aggregates", "new_types", "released", "sequence_ceilings",
        "snapshots", "subscription_filters", "subscription_switches", "subscription_upserts",
    )

    def __init__(self, engine: RedisStorageEngine) -> None:
        self._engine = engine
        self._finished = False
        self.new_aggregates: dict[int, tuple[int, str | None]] = {}
        self.key_changes: dict[int, str] = {}
        self.claimed: dict[str, tuple[int, int]] = {}
        self.released: set[str] = set()
        self.events: list[StorageEngineEvent] = []
        self.event_keys: set[tuple[int, int]] = set()
        self.snapshots: dict[int, Snapshot] = {}
        # (kind, name) -> id reserved for a type this transaction registers
        self.new_types: dict[tuple[str, str], int] = {}
        # aggregate id -> highest sequence this transaction saw stored (or read past)
        self.sequence_ceilings: dict[int, int] = {}
        self.subscription_upserts: dict[str, _Upsert] = {}
        self.subscription_filters: list[tuple[int, int]] = []
        self.subscription_switches: dict[int, bool] = {}
        self.committed_subscription_ids: dict[int, int] = {}

    def commit(self) -> None:
        """Apply every buffered write in one atomic server-side step."""
        self.ensure_open()
        self._finished = True
        if (
            self.new_types or self.new_aggregates or self.key_changes or self.events
            or self.snapshots or self.subscription_upserts or self.subscription_filters
            or self.subscription_switches
        ):
            self._engine.apply(self)

    def rollback(self) -> None:
        """Discard the buffer; nothing of it was ever sent."""
        self._finished = True

    def ensure_open(self) -> None:
        """Refuse use after commit or rollback."""
        if self._finished:
            raise StorageEngineError("the Redis transaction is already committed or rolled back")

    def owned_by(self, engine: RedisStorageEngine) -> bool:
        """True when ``engine`` created this transaction."""
        return self._engine is engine


class RedisStorageEngine:
    """``evercore.StorageEngine`` on Redis (plus event wait, migrations, stats and
    write-and-commit).

    Thread-safe: redis-py's connection pool hands each call its own connection.
    """

    def __init__(self, config: RedisConfig) -> None:
        self._config = config
        self._base = config.base
        self._closed = False
        # redis-py's annotations cannot express decode_responses=True (every reply is a
        # str here), so the driver objects are typed Any rather than cast at each call.
        self._pool: Any
        self._client: Any
        try:
            self._pool = redis.ConnectionPool.from_url(
                config.driver_url,
                decode_responses=True,
                socket_timeout=config.socket_timeout,
                socket_connect_timeout=min(config.socket_timeout, 5.0),
                retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 2),
                max_connections=config.max_connections,
            )
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"bad Redis URI {config.redacted_url!r}: {self._config.scrub(str(exc))}"
            ) from None
        self._client = redis.Redis(connection_pool=self._pool)
        for command in ("XRANGE", "XREAD"):
            # Entries stay raw lists: no per-entry dict is built on the read path.
            self._client.set_response_callback(command, _raw_response)
        self._type_ids: dict[tuple[str, str], int] = {}
        self._event_type_names: dict[str, str] = {}
        self._epochs: dict[tuple[int, str], str] = {}
        self._subscription_ids: dict[str, int] = {}
        # aggregate id -> highest sequence this engine stored for it (bounded cache)
        self._known_tops: dict[int, int] = {}
        self._names_lock = threading.Lock()
        try:
            self._warn_about_persistence()  # also proves the server answers
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"RedisStorageEngine({self._config.redacted_url!r}, prefix={self._config.prefix!r})"

    # -- plumbing ---------------------------------------------------------------
    @property
    def prefix(self) -> str:
        """The key prefix of this store."""
        return self._config.prefix

    @property
    def max_key_length(self) -> int:
        """The longest natural key this engine stores (64)."""
        return MAX_KEY_LENGTH

    def _fail(self, action: str, exc: BaseException) -> NoReturn:
        raise StorageEngineError(
            f"Redis {action} failed on {self._config.redacted_url}: "
            f"{type(exc).__name__}: {self._config.scrub(str(exc))}"
        ) from exc

    @contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        if self._closed:
            raise StorageEngineError(f"Redis {action}: the engine is closed")
        try:
            yield
        except RedisError as exc:
            self._fail(action, exc)
        except UnicodeEncodeError as exc:
            _unencodable(action, exc)

    def _eval(self, script: str, *args: Any) -> Any:
        """Run a packaged script (by SHA, loading it on the server's first miss)."""
        lua = _scripts.load(script)
        with self._guard(script.replace("_", " ")):
            try:
                return self._client.evalsha(lua.sha, 0, self._base, *args)
            except NoScriptError:
                return self._client.eval(lua.source, 0, self._base, *args)

    def _tx(self, tx: Transaction | None) -> RedisTransaction | None:
        if tx is None:
            return None
        if not isinstance(tx, RedisTransaction) or not tx.owned_by(self):
            raise StorageEngineError(f"{tx!r} is not a transaction of this Redis engine")
        tx.ensure_open()
        return tx

    def _write(self, tx: Transaction | None, fn: Callable[[RedisTransaction], _T]) -> _T:
        """Run ``fn`` on the caller's transaction, or on a one-call transaction."""
        buffer = self._tx(tx)
        if buffer is not None:
            return fn(buffer)
        own = RedisTransaction(self)
        result = fn(own)
        own.commit()
        return result

    def _warn_about_persistence(self) -> None:
        """Log a warning for each server setting that can lose acknowledged contexts."""
        with self._guard("connect"):
            info = self._client.info("persistence")
            try:
                settings = {
                    **self._client.config_get("appendfsync"),
                    **self._client.config_get("maxmemory-policy"),
                }
            except RedisError:  # CONFIG may be renamed or forbidden on managed servers
                settings = {}
        where = self._config.redacted_url
        if str(info.get("aof_enabled", "0")) != "1":
            logger.warning(
                "Redis at %s has AOF off (appendonly no): acknowledged contexts can be lost "
                "on a crash or restart. Use appendonly yes with appendfsync always (nothing "
                "acknowledged is lost) or everysec (up to about a second lost).", where,
            )
        elif settings.get("appendfsync") == "no":
            logger.warning(
                "Redis at %s uses appendfsync no: the OS decides when the AOF reaches the "
                "disk, so a crash of the machine can drop acknowledged contexts", where,
            )
        policy = settings.get("maxmemory-policy", "noeviction")
        if policy != "noeviction":
            logger.warning(
                "Redis at %s has maxmemory-policy %s: when memory runs out it deletes keys, "
                "events included; use noeviction", where, policy,
            )

    # -- lifecycle --------------------------------------------------------------
    def get_transaction_info(self) -> RedisTransaction:
        """Begin a transaction (a client-side buffer)."""
        if self._closed:
            raise StorageEngineError("Redis transaction: the engine is closed")
        return RedisTransaction(self)

    def close(self) -> None:
        """Disconnect every pooled connection; idempotent."""
        if not self._closed:
            self._closed = True
            self._pool.disconnect()

    def drop_store(self) -> int:
        """Delete every key of this store (``{prefix}:*``, found with ``SCAN``, removed with
        ``UNLINK``); return how many were deleted. Other prefixes are untouched."""
        deleted = 0
        with self._guard("drop the store"):
            batch: list[str] = []
            for key in self._client.scan_iter(match=self._base + "*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += int(self._client.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(self._client.unlink(*batch))
        self._type_ids.clear()
        self._event_type_names = {}
        self._epochs.clear()
        self._subscription_ids.clear()
        return deleted

    def migrate(self) -> int:
        """Record (or check) the layout version; a newer one raises ``SchemaVersionError``."""
        with self._guard("migrate"):
            self._client.hsetnx(self._base + "meta", "layout", LAYOUT_VERSION)
            version = int(self._client.hget(self._base + "meta", "layout") or 0)
        if version > LAYOUT_VERSION:
            raise SchemaVersionError(
                f"Redis store {self._config.prefix!r} has layout version {version}; this "
                f"evercore-redis understands up to {LAYOUT_VERSION}"
            )
        return version

    # -- types ------------------------------------------------------------------
    def _type_id(self, tx: Transaction | None, kind: str, name: str) -> int:
        """A committed type's id (cached), else one registered now (autocommit) or
        reserved and registered at commit (in a transaction)."""
        cached = self._type_ids.get((kind, name))
        if cached is not None:
            return cached
        buffer = self._tx(tx)
        if buffer is None:
            cached = int(self._eval("type_id", kind, name))
        else:
            pending = buffer.new_types.get((kind, name))
            if pending is not None:
                return pending
            with self._guard(f"read a {kind}"):
                stored = self._client.hget(self._base + kind, name)
            if stored is None:
                reserved = self._allocate(kind)
                buffer.new_types[(kind, name)] = reserved
                return reserved
            cached = int(stored)
        self._type_ids[(kind, name)] = cached
        return cached

    def _allocate(self, counter: str) -> int:
        """A fresh id from a counter (a rolled-back transaction leaves a gap)."""
        with self._guard(f"allocate a {counter} id"):
            return int(self._client.hincrby(self._base + "ctr", counter, 1))

    def _same_type(self, kind: str, stored: int, wanted: int) -> bool:
        """Whether ``wanted`` names the stored type: equal, or an alias of it (an id
        reserved while a concurrent commit registered the same name)."""
        if stored == wanted:
            return True
        with self._guard(f"read a {kind} alias"):
            alias = self._client.hget(f"{self._base}{kind}:alias", str(wanted))
        return alias is not None and int(alias) == stored

    def get_event_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of an event type, registering the name if it is new (in ``tx``)."""
        return self._type_id(tx, "etype", name)

    def get_aggregate_type_id(self, tx: Transaction | None, name: str) -> int:
        """The id of an aggregate type, registering the name if it is new (in ``tx``)."""
        return self._type_id(tx, "atype", name)

    def _types(self, tx: Transaction | None, kind: str) -> list[IdNamePair]:
        buffer = self._tx(tx)
        with self._guard(f"read {kind}s"):
            names = {n: int(i) for n, i in self._client.hgetall(self._base + kind).items()}
        if buffer is not None:
            for (pending_kind, name), type_id in buffer.new_types.items():
                if pending_kind == kind:
                    names.setdefault(name, type_id)
        return sorted(IdNamePair(i, n) for n, i in names.items())

    def get_aggregate_types(self, tx: Transaction | None) -> list[IdNamePair]:
        """Every registered aggregate type (this transaction's own included), by id."""
        return self._types(tx, "atype")

    def get_event_types(self, tx: Transaction | None) -> list[IdNamePair]:
        """Every registered event type (this transaction's own included), by id."""
        return self._types(tx, "etype")

    def _refresh_type_names(self) -> None:
        with self._guard("read event types"):
            fresh = self._client.hgetall(self._base + "etype:id")
        with self._names_lock:
            self._event_type_names = {**self._event_type_names, **fresh}

    def _decode(self, decode: Callable[[Mapping[str, str]], list[SerializedEvent]]
                ) -> list[SerializedEvent]:
        """Run ``decode(event type names)``, reloading the names once if one is unknown
        (a type another process registered since this engine last looked)."""
        try:
            return decode(self._event_type_names)
        except KeyError:
            self._refresh_type_names()
        try:
            return decode(self._event_type_names)
        except KeyError as exc:
            raise StorageEngineError(f"a stored event names unknown event type id {exc}") from None

    # -- aggregates -------------------------------------------------------------
    def _aggregate(self, buffer: RedisTransaction | None, aggregate_id: int
                   ) -> tuple[int, str | None] | None:
        """(type id, natural key) of an aggregate as ``buffer`` sees it, or None."""
        if buffer is not None and aggregate_id in buffer.new_aggregates:
            return buffer.new_aggregates[aggregate_id]
        with self._guard("read an aggregate"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hget(self._base + "agg", str(aggregate_id))
            pipe.hget(self._base + "akey", str(aggregate_id))
            stored, key = pipe.execute()
        if stored is None:
            return None
        type_id = stored.partition(":")[0]  # "<type id>:<highest sequence>"
        if buffer is not None and aggregate_id in buffer.key_changes:
            key = buffer.key_changes[aggregate_id]
        return int(type_id), key

    def _key_holder(self, buffer: RedisTransaction | None, key: str) -> tuple[int, int] | None:
        """(aggregate id, type id) holding ``key`` as ``buffer`` sees it, or None."""
        if buffer is not None:
            if key in buffer.claimed:
                return buffer.claimed[key]
            if key in buffer.released:
                return None
        with self._guard("read a natural key"):
            holder = self._client.hget(self._base + "key", key)
        if holder is None:
            return None
        aggregate_id, _, type_id = holder.partition(":")
        return int(aggregate_id), int(type_id)

    def _create(self, buffer: RedisTransaction, type_id: int, key: str | None) -> int:
        if key is not None and self._key_holder(buffer, key) is not None:
            raise ConstraintViolationError(f"natural key {key!r} is already taken")
        aggregate_id = self._allocate("agg")
        buffer.new_aggregates[aggregate_id] = (type_id, key)
        if key is not None:
            buffer.claimed[key] = (aggregate_id, type_id)
            buffer.released.discard(key)
        return aggregate_id

    def new_aggregate(self, tx: Transaction | None, aggregate_type_id: int) -> int:
        """Create an aggregate without a natural key (its id is allocated at once)."""
        return self._write(tx, lambda b: self._create(b, aggregate_type_id, None))

    def new_aggregate_with_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> int:
        """Create an aggregate with a natural key; a taken key is a ``ConstraintViolationError``
        (checked now and again, atomically, at commit)."""
        validate_natural_key(natural_key, MAX_KEY_LENGTH)
        return self._write(tx, lambda b: self._create(b, aggregate_type_id, natural_key))

    def get_aggregate_by_id(
        self, tx: Transaction | None, aggregate_type_id: int, aggregate_id: int
    ) -> tuple[int, str | None]:
        """(id, natural key) of an aggregate of this type, else ``NotFoundError``."""
        found = self._aggregate(self._tx(tx), aggregate_id)
        if found is None or not self._same_type("atype", found[0], aggregate_type_id):
            raise NotFoundError(
                f"no aggregate with id {aggregate_id} and aggregate type id {aggregate_type_id}"
            )
        return aggregate_id, found[1]

    def get_aggregate_by_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> int:
        """The id of the aggregate of this type with this key, else ``NotFoundError``."""
        validate_natural_key(natural_key, MAX_KEY_LENGTH)
        holder = self._key_holder(self._tx(tx), natural_key)
        if holder is None or not self._same_type("atype", holder[1], aggregate_type_id):
            raise NotFoundError(
                f"no aggregate with natural key {natural_key!r} and aggregate type id "
                f"{aggregate_type_id}"
            )
        return holder[0]

    def get_or_create_aggregate_by_key(
        self, tx: Transaction | None, aggregate_type_id: int, natural_key: str
    ) -> tuple[bool, int]:
        """(created, id). A key held by an aggregate of another type is a
        ``ConstraintViolationError`` (keys are unique across types)."""
        validate_natural_key(natural_key, MAX_KEY_LENGTH)

        def get_or_create(buffer: RedisTransaction) -> tuple[bool, int]:
            holder = self._key_holder(buffer, natural_key)
            if holder is None:
                return True, self._create(buffer, aggregate_type_id, natural_key)
            if not self._same_type("atype", holder[1], aggregate_type_id):
                raise ConstraintViolationError(
                    f"natural key {natural_key!r} belongs to aggregate {holder[0]} of aggregate "
                    f"type id {holder[1]}, not {aggregate_type_id}"
                )
            return False, holder[0]

        return self._write(tx, get_or_create)

    def change_aggregate_natural_key(
        self, tx: Transaction | None, aggregate_id: int, natural_key: str
    ) -> None:
        """Give an aggregate a new natural key (a key another aggregate holds is a
        ``ConstraintViolationError``; an unknown aggregate a ``NotFoundError``)."""
        validate_natural_key(natural_key, MAX_KEY_LENGTH)

        def change(buffer: RedisTransaction) -> None:
            found = self._aggregate(buffer, aggregate_id)
            if found is None:
                raise NotFoundError(f"no aggregate with id {aggregate_id}")
            type_id, old_key = found
            holder = self._key_holder(buffer, natural_key)
            if holder is not None and holder[0] != aggregate_id:
                raise ConstraintViolationError(
                    f"natural key {natural_key!r} is already taken by aggregate {holder[0]}"
                )
            if aggregate_id in buffer.new_aggregates:
                buffer.new_aggregates[aggregate_id] = (type_id, natural_key)
            else:
                buffer.key_changes[aggregate_id] = natural_key
            if old_key is not None and old_key != natural_key:
                buffer.claimed.pop(old_key, None)
                buffer.released.add(old_key)
            buffer.claimed[natural_key] = (aggregate_id, type_id)
            buffer.released.discard(natural_key)

        self._write(tx, change)

    # -- events and snapshots ---------------------------------------------------
    def get_snapshot_for_aggregate(
        self, tx: Transaction | None, aggregate_id: int
    ) -> Snapshot | None:
        """The latest snapshot of an aggregate (this transaction's own first), or None."""
        buffer = self._tx(tx)
        if buffer is not None and aggregate_id in buffer.snapshots:
            return buffer.snapshots[aggregate_id]
        with self._guard("read a snapshot"):
            stored = self._client.hget(self._base + "snap", str(aggregate_id))
        return None if stored is None else _codec.decode_snapshot(aggregate_id, stored)

    def get_events_for_aggregate(
        self, tx: Transaction | None, aggregate_id: int, after_sequence: int
    ) -> list[SerializedEvent]:
        """The aggregate's events after ``after_sequence`` in sequence order, including
        this transaction's own (with ``event_id`` 0 until committed)."""
        buffer = self._tx(tx)
        events, top = self._stored_events(aggregate_id, max(after_sequence, 0))
        if buffer is None:
            return events
        buffer.sequence_ceilings[aggregate_id] = max(
            top, after_sequence, buffer.sequence_ceilings.get(aggregate_id, 0)
        )
        pending = [
            e for e in buffer.events
            if e.aggregate_id == aggregate_id and e.sequence > after_sequence
        ]
        if pending:
            events.extend(self._unsaved(buffer, pending))
            events.sort(key=lambda e: e.sequence)
        return events

    def _stored_events(self, aggregate_id: int, after: int) -> tuple[list[SerializedEvent], int]:
        """The stored events with sequence > ``after``, and the highest stored sequence.

        The list holds events in commit order. When the aggregate's sequences are
        1..top in order (the norm) its tail from index ``after`` is the answer, which
        the tail itself proves: contiguous from ``after + 1`` up to ``top``. Anything
        else (gaps, out-of-order writes) reads the whole list and sorts it.
        """
        key = f"{self._base}ev:{aggregate_id}"
        with self._guard("read events"):
            # No MULTI needed: a commit landing between the two replies makes ``top``
            # newer than the tail, which fails the proof below and takes the slow path.
            pipe = self._client.pipeline(transaction=False)
            pipe.lrange(key, after, -1)
            pipe.hget(self._base + "agg", str(aggregate_id))
            members, stored = pipe.execute()
        top = int(stored.partition(":")[2]) if stored else 0
        events = self._decode(lambda names: _codec.decode_events(members, names)) \
            if members else []
        if _is_tail(events, after, top):
            return events, top
        with self._guard("read events"):
            members = self._client.lrange(key, 0, -1)
        events = self._decode(lambda names: _codec.decode_events(members, names))
        return sorted((e for e in events if e.sequence > after), key=lambda e: e.sequence), top

    def _unsaved(
        self, buffer: RedisTransaction, pending: Sequence[StorageEngineEvent]
    ) -> list[SerializedEvent]:
        own = {str(i): n for (kind, n), i in buffer.new_types.items() if kind == "etype"}
        wanted = {str(e.event_type_id) for e in pending}
        if not wanted.issubset(own.keys() | self._event_type_names.keys()):
            self._refresh_type_names()
        names = {**self._event_type_names, **own}
        return [
            SerializedEvent(0, e.aggregate_id, names[str(e.event_type_id)], e.state, e.sequence,
                            e.reference, _codec.from_iso(_codec.to_iso(e.event_time)))
            for e in pending
        ]

    def write_state(
        self,
        tx: Transaction | None,
        events: Sequence[StorageEngineEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """Buffer events and snapshots (or store them at once without ``tx``). A
        duplicate (aggregate, sequence), here or at commit, raises ``ConcurrencyError``."""
        buffer = self._tx(tx)
        if buffer is not None:
            self._check_stored_sequences(buffer, events)
        self._write(tx, lambda b: _buffer_state(b, events, snapshots))

    def write_state_and_commit(
        self,
        tx: Transaction,
        events: Sequence[StorageEngineEvent],
        snapshots: Sequence[Snapshot],
    ) -> None:
        """``write_state(tx, events, snapshots)`` then ``tx.commit()``, without the early
        duplicate check: ``commit.lua`` runs right after and checks atomically anyway,
        so the batch costs one script call. On any error ``tx`` ends with nothing of it
        stored."""
        buffer = self._tx(tx)
        if buffer is None:  # the SPI always passes a transaction; refuse None plainly
            raise StorageEngineError("write_state_and_commit needs a transaction")
        try:
            _buffer_state(buffer, events, snapshots)
        except BaseException:
            buffer.rollback()
            raise
        buffer.commit()

    def _check_stored_sequences(
        self, buffer: RedisTransaction, events: Sequence[StorageEngineEvent]
    ) -> None:
        """Refuse now an event whose (aggregate, sequence) is already stored.

        Skipped for aggregates created in this transaction and for sequences above
        what this transaction read of the aggregate, or this engine last stored for it
        (the usual load-then-append flow and a writer appending to its own aggregates
        cost no round trip). Anything stored since by another writer is still caught,
        atomically, by ``commit.lua``: only the moment of the error differs.
        """
        ceilings, created, known = buffer.sequence_ceilings, buffer.new_aggregates, \
            self._known_tops
        doubtful: list[int] = []
        for event in events:
            ceiling = ceilings.get(event.aggregate_id)
            if ceiling is None:
                ceiling = known.get(event.aggregate_id)
            if event.aggregate_id not in created and (
                ceiling is None or event.sequence <= ceiling
            ):
                doubtful += (event.aggregate_id, event.sequence)
        if doubtful:
            found = self._eval("check_sequences", *doubtful)
            if found:
                raise ConcurrencyError(int(found[0]), int(found[1]))

    def apply(self, buffer: RedisTransaction) -> None:
        """Send a transaction's buffer to ``commit.lua`` (called by ``commit``)."""
        args: list[Any] = [
            self._base, len(buffer.new_types), len(buffer.new_aggregates),
            len(buffer.key_changes), len(buffer.subscription_upserts), len(buffer.events),
            len(buffer.snapshots), len(buffer.subscription_filters),
            len(buffer.subscription_switches),
        ]
        for (kind, name), type_id in buffer.new_types.items():
            args += (kind, type_id, name)
        for aggregate_id, (type_id, key) in buffer.new_aggregates.items():
            args += (aggregate_id, type_id, key or "")
        for aggregate_id, key in buffer.key_changes.items():
            args += (aggregate_id, key)
        for name, upsert in buffer.subscription_upserts.items():
            args += upsert.args(name)
        args += _codec.encode_events(buffer.events)
        for snapshot in buffer.snapshots.values():
            args += (snapshot.aggregate_id, snapshot.sequence, snapshot.state)
        for subscription_id, event_type_id in buffer.subscription_filters:
            args += (subscription_id, event_type_id)
        for subscription_id, active in buffer.subscription_switches.items():
            args += (subscription_id, "1" if active else "0")
        outcome = self._run_commit(args)
        if outcome[0] == "ok":
            self._remember_tops(buffer)
            ids = outcome[2:]
            buffer.committed_subscription_ids = {
                int(ids[i]): int(ids[i + 1]) for i in range(0, len(ids), 2)
            }
            return
        if outcome[0] == "nosub":
            raise NotFoundError(f"no subscription with id {outcome[1]}")
        if outcome[0] == "conflict":
            raise ConcurrencyError(int(outcome[1]), int(outcome[2]))
        if outcome[0] == "dupkey":
            raise ConstraintViolationError(f"natural key {outcome[1]!r} is already taken")
        if outcome[0] == "noagg":
            raise NotFoundError(f"no aggregate with id {outcome[1]}")
        raise ConstraintViolationError(f"aggregate id {outcome[1]} is already in use")

    def _remember_tops(self, buffer: RedisTransaction) -> None:
        known = self._known_tops
        if len(known) > 100_000:
            known.clear()
        for aggregate_id in buffer.new_aggregates:
            known.setdefault(aggregate_id, 0)
        for event in buffer.events:
            if event.sequence > known.get(event.aggregate_id, 0):
                known[event.aggregate_id] = event.sequence

    def _run_commit(self, args: list[Any]) -> Any:
        """Run ``commit.lua`` on one connection, without retries.

        A failure to connect means nothing was sent: ``StorageEngineError``. A
        connection lost after sending leaves the outcome unknown:
        ``CommitOutcomeUnknownError`` (a blind retry could apply the context twice).
        """
        if self._closed:
            raise StorageEngineError("Redis commit: the engine is closed")
        lua = _scripts.load("commit")
        try:
            conn = self._pool.get_connection()
        except RedisError as exc:
            self._fail("commit (connecting)", exc)
        try:
            try:
                conn.send_command("EVALSHA", lua.sha, 0, *args)
                return self._client.parse_response(conn, "EVALSHA")
            except NoScriptError:
                conn.send_command("EVAL", lua.source, 0, *args)
                return self._client.parse_response(conn, "EVAL")
        except _DRIVER_LOST as exc:
            conn.disconnect()
            raise CommitOutcomeUnknownError(
                f"the connection to Redis at {self._config.redacted_url} was lost during "
                f"commit ({type(exc).__name__}: {self._config.scrub(str(exc))}); the context "
                "may or may not be stored: reload and check before retrying"
            ) from exc
        except RedisError as exc:
            self._fail("commit", exc)
        except UnicodeEncodeError as exc:  # raised while packing: nothing was sent
            _unencodable("commit", exc)
        finally:
            self._pool.release(conn)

    # -- global log ---------------------------------------------------------------
    def get_max_event_id(self, tx: Transaction | None) -> int:
        """The highest committed global event id (0 when the log is empty)."""
        self._tx(tx)
        with self._guard("read the last event id"):
            return int(self._client.hget(self._base + "ctr", "event") or 0)

    def get_first_event_id_from_timestamp(self, tx: Transaction | None, ts: datetime) -> int:
        """The id of the first event with time >= ``ts`` (0 when none)."""
        self._tx(tx)
        return self._first_event_from(ts, self.get_max_event_id(None))

    def _first_event_from(self, ts: datetime, up_to: int) -> int:
        stored_ts, after = _codec.to_iso(ts), 0
        while after < up_to:
            found, after, done = self._eval(
                "first_from_time", stored_ts, after, up_to, SCAN_BUDGET
            )
            after = int(after)
            if int(found):
                return int(found)
            if int(done):
                break
        return 0

    def wait_for_events(self, after_event_id: int, timeout: float) -> None:
        """Block on the log stream (``XREAD BLOCK``) until an event with id >
        ``after_event_id`` exists or ``timeout`` seconds pass."""
        # Stay inside the socket timeout, or the blocked read would count as a lost link.
        block_ms = max(1, int(min(timeout, self._config.socket_timeout * 0.8) * 1000))
        with self._guard("wait for events"):
            self._client.xread(
                {self._base + "log": f"{after_event_id}-0"}, count=1, block=block_ms
            )

    # -- durable subscriptions ----------------------------------------------------
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

        Like every write, it is buffered in ``tx`` and applied at commit. The cursor
        is set once, on create, from ``start_from`` (see the SPI).
        """
        buffer = self._tx(tx)
        own = buffer if buffer is not None else RedisTransaction(self)
        stored = self._stored_subscription_id(name)
        pending = own.subscription_upserts.get(name)
        if pending is not None:
            subscription_id = pending.id
        elif stored is not None:
            subscription_id = stored
        else:
            subscription_id = self._allocate("sub")
        cursor = "0" if stored is not None or pending is not None else self._initial_cursor(
            name, start_from, start_event_id, start_timestamp
        )
        own.subscription_upserts[name] = _Upsert(
            subscription_id, aggregate_type_id, event_type_id, aggregate_key, start_from,
            start_event_id, start_timestamp, cursor,
        )
        if buffer is not None:
            return subscription_id
        own.commit()
        # A concurrent creator of the same name may have won: its id is the stored one.
        return own.committed_subscription_ids.get(subscription_id, subscription_id)

    def _stored_subscription_id(self, name: str) -> int | None:
        with self._guard("read a subscription"):
            stored = self._client.hget(self._base + "sub", name)
        return None if stored is None else int(stored)

    def _initial_cursor(self, name: str, start_from: str, start_event_id: int,
                        start_timestamp: datetime | None) -> str:
        """The cursor a new subscription starts at ("" = the last event id, read by
        ``commit.lua`` itself so that no commit slips in between)."""
        if start_from == START_BEGINNING:
            return "0"
        if start_from == START_END:
            return ""
        if start_from == START_EVENT_ID:
            return str(start_event_id)
        if start_from != START_TIMESTAMP or start_timestamp is None:
            raise ConfigurationError(
                f"subscription {name!r}: bad start {start_from!r} (timestamp {start_timestamp!r})"
            )
        # Read the last id before scanning: an event committed later gets a higher id
        # and is delivered, so none is skipped.
        up_to = self.get_max_event_id(None)
        first = self._first_event_from(start_timestamp, up_to)
        return str(first - 1 if first else up_to)

    def add_subscription_event_type(
        self, tx: Transaction | None, subscription_id: int, event_type_id: int
    ) -> None:
        """Add an event type to the subscription's multi-type filter (idempotent); an
        unknown subscription is a ``NotFoundError`` (at commit in a transaction)."""
        self._write(
            tx, lambda b: b.subscription_filters.append((subscription_id, event_type_id))
        )

    def set_subscription_active(
        self, tx: Transaction | None, subscription_id: int, active: bool
    ) -> None:
        """Switch a subscription on or off (an unknown one is a ``NotFoundError``)."""

        def switch(buffer: RedisTransaction) -> None:
            buffer.subscription_switches[subscription_id] = active

        self._write(tx, switch)

    def get_subscription_by_name(self, tx: Transaction | None, name: str) -> Subscription:
        """The subscription (as ``tx`` sees it) with ``event_type_ids`` filled, else
        ``NotFoundError``."""
        buffer = self._tx(tx)
        stored = self._stored_subscription_id(name)
        pending = None if buffer is None else buffer.subscription_upserts.get(name)
        if stored is not None:
            subscription = self._subscription(stored)
        elif pending is not None:
            cursor = pending.cursor or str(self.get_max_event_id(None))
            subscription = Subscription(pending.id, name, last_event_id=int(cursor))
        else:
            raise NotFoundError(f"no subscription named {name!r}")
        return subscription if buffer is None else _overlay(subscription, buffer)

    def _subscription(self, subscription_id: int) -> Subscription:
        key = f"{self._base}sub:{subscription_id}"
        with self._guard("read a subscription"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hgetall(key)
            pipe.smembers(key + ":et")
            fields, type_ids = pipe.execute()
        return _codec.decode_subscription(fields, subscription_id, list(type_ids))

    def _lease(self, mode: str, name: str, owner: str, lease_seconds: float) -> bool:
        subscription_id = self._subscription_ids.get(name)
        epoch = "" if subscription_id is None else self._epochs.get((subscription_id, owner), "")
        outcome = self._eval("lease", mode, name, owner, round(lease_seconds * 1e6), epoch)
        if int(outcome[0]) != 1:
            return False
        subscription_id = int(outcome[2])
        self._subscription_ids[name] = subscription_id
        if mode == "release":
            self._epochs.pop((subscription_id, owner), None)
        else:
            self._epochs[(subscription_id, owner)] = str(outcome[1])
        return True

    def claim_subscription(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float
    ) -> bool:
        """Take the lease if it is free, expired or ``owner``'s (Redis clock); each claim
        starts a new fencing epoch."""
        self._tx(tx)
        return self._lease("claim", name, owner, lease_seconds)

    def renew_subscription(
        self, tx: Transaction | None, name: str, owner: str, lease_seconds: float
    ) -> bool:
        """Extend the lease; only the owner of an unexpired lease at its epoch succeeds."""
        self._tx(tx)
        return self._lease("renew", name, owner, lease_seconds)

    def release_subscription(self, tx: Transaction | None, name: str, owner: str) -> None:
        """Give up the lease if ``owner`` holds it."""
        self._tx(tx)
        self._lease("release", name, owner, 0)

    def get_events_for_subscription(
        self, tx: Transaction | None, subscription: Subscription, limit: int
    ) -> list[SerializedEvent]:
        """Up to ``limit`` matching events after the cursor, in id order. Filters run
        in Redis (``read_filtered.lua``); ids are assigned at commit, in commit order,
        so a later commit never carries a lower id."""
        self._tx(tx)
        type_ids = subscription.event_type_ids or (
            () if subscription.event_type_id is None else (subscription.event_type_id,)
        )
        after = subscription.last_event_id
        if subscription.aggregate_type_id is None and subscription.aggregate_key is None \
                and not type_ids:
            with self._guard("read the log"):
                entries = self._client.xrange(
                    self._base + "log", f"{after + 1}-0", "+", count=limit
                )
        else:
            entries = self._read_filtered(subscription, type_ids, limit)
        if not entries:
            return []
        stored = _codec.entry_events(entries)
        return self._decode(lambda names: _codec.decode_events(stored, names))

    def _read_filtered(self, subscription: Subscription, type_ids: Sequence[int],
                       limit: int) -> list[Any]:
        entries: list[Any] = []
        after = subscription.last_event_id
        while len(entries) < limit:
            last, done, *found = self._eval(
                "read_filtered", after, limit - len(entries), SCAN_BUDGET,
                _codec.optional(subscription.aggregate_type_id),
                _codec.optional(subscription.aggregate_key), *type_ids,
            )
            entries += found
            after = int(last)
            if int(done):
                break
        return entries

    def advance_subscription_cursor(
        self,
        tx: Transaction | None,
        subscription_id: int,
        last_event_id: int,
        owner: str | None = None,
    ) -> None:
        """Move the cursor forward (a lower id is ignored). With ``owner``: only while it
        holds an unexpired lease at the epoch of its claim, else ``SubscriptionLeaseLost``."""
        self._tx(tx)
        epoch = "" if owner is None else self._epochs.get((subscription_id, owner), "")
        outcome = self._eval(
            "advance_cursor", subscription_id, last_event_id, owner or "", epoch
        )
        if outcome[0] == "notfound":
            raise NotFoundError(f"no subscription with id {subscription_id}")
        if outcome[0] == "lost":
            holder = outcome[1] or None
            raise SubscriptionLeaseLost(
                f"subscription {subscription_id}: owner {owner!r} no longer holds a live "
                f"lease (holder {holder!r}), so the cursor stays below {last_event_id}"
            )

    # -- stats ------------------------------------------------------------------
    def get_counts(self, tx: Transaction | None) -> StoreCounts:
        """How many aggregates, events and snapshots are stored."""
        self._tx(tx)
        with self._guard("count"):
            pipe = self._client.pipeline(transaction=False)
            pipe.hlen(self._base + "agg")
            pipe.xlen(self._base + "log")
            pipe.hlen(self._base + "snap")
            aggregates, events, snapshots = pipe.execute()
        return StoreCounts(int(aggregates), int(events), int(snapshots))

    def list_subscriptions(self, tx: Transaction | None) -> list[Subscription]:
        """Every durable subscription with its cursor and lease, by id."""
        self._tx(tx)
        with self._guard("read subscriptions"):
            ids = self._client.hvals(self._base + "sub")
        return [self._subscription(i) for i in sorted(int(i) for i in ids)]


def _raw_response(response: Any, **options: Any) -> Any:
    return response


def _unencodable(action: str, exc: UnicodeEncodeError) -> NoReturn:
    text = exc.object
    raise SerializationError(
        f"Redis {action}: text with {text[exc.start:exc.end]!r} at position {exc.start} "
        f"is not valid UTF-8 and cannot be stored (text starts {text[:40]!r})"
    ) from None


def _buffer_state(buffer: RedisTransaction, events: Sequence[StorageEngineEvent],
                  snapshots: Sequence[Snapshot]) -> None:
    """Add events and snapshots to ``buffer``; a (aggregate, sequence) already in it, or
    twice in ``events``, raises ``ConcurrencyError`` and adds nothing."""
    keys = buffer.event_keys
    fresh: set[tuple[int, int]] = set()
    for event in events:
        key = (event.aggregate_id, event.sequence)
        if key in keys or key in fresh:
            raise ConcurrencyError(*key)
        fresh.add(key)
    keys.update(fresh)
    buffer.events.extend(events)
    for snapshot in snapshots:
        held = buffer.snapshots.get(snapshot.aggregate_id)
        if held is None or snapshot.sequence >= held.sequence:
            buffer.snapshots[snapshot.aggregate_id] = snapshot


def _is_tail(events: Sequence[SerializedEvent], after: int, top: int) -> bool:
    """Whether ``events`` are exactly the sequences ``after + 1 .. top``, in order."""
    if not events:
        return top <= after
    if events[0].sequence != after + 1 or events[-1].sequence != top:
        return False
    return all(b.sequence == a.sequence + 1 for a, b in itertools.pairwise(events))


def _overlay(subscription: Subscription, buffer: RedisTransaction) -> Subscription:
    """``subscription`` with the changes ``buffer`` holds for it."""
    upsert = buffer.subscription_upserts.get(subscription.name)
    if upsert is not None:
        subscription = replace(
            subscription, aggregate_type_id=upsert.aggregate_type_id,
            event_type_id=upsert.event_type_id, aggregate_key=upsert.aggregate_key,
            start_from=upsert.start_from, start_event_id=upsert.start_event_id,
            start_timestamp=upsert.start_timestamp,
        )
    sid = subscription.id
    added = {t for s, t in buffer.subscription_filters if s == sid}
    if added:
        type_ids = tuple(sorted(added.union(subscription.event_type_ids)))
        subscription = replace(subscription, event_type_ids=type_ids)
    if sid in buffer.subscription_switches:
        subscription = replace(subscription, active=buffer.subscription_switches[sid])
    return subscription
