"""The PostgreSQL engine against raw psycopg and the ``eventsourcing`` library, in one run.

Run ``.venv/bin/python benches/bench_postgres.py`` (about two minutes; needs the local
PostgreSQL on 127.0.0.1:5432, database ``test``). Every contender writes into its own
throw-away schema (``evercore_b_<uuid>``), dropped afterwards; the raw contenders use
the evercore schema (migrated the same way), so the table, its indexes and its
integrity checks are the same. Rounds of the contenders are interleaved so that the
load of a shared machine hits them alike; the medians' ratios are printed
(``theirs / ours``: higher is better for evercore). ``side_by_side(events)`` gives
the same figures to ``benches/side_by_side.py``.

Workloads (issue 6), events of about 150 bytes of JSON (:func:`evercore.bench.make_event`):

* ingest, contexts of 1,000: ``EVENTS`` events over 1,000 aggregates, each context
  creates 10 aggregates and appends 100 events to each, into a fresh schema.
  ``raw psycopg binary COPY`` does the same by hand: ``INSERT`` of 10 aggregates,
  ``json.dumps`` per event, binary ``COPY ... write_row``, in one transaction.
* ingest, contexts of 1 event: ``SINGLE`` contexts (``store.context()``, the
  facade's whole path) appending to aggregates held in memory, so each context
  sends only its batch: one autocommit statement (``SupportsWriteAndCommit``);
  raw: one autocommit prepared ``INSERT`` per event (the fastest single append
  there is).
* rehydrate: load one aggregate of 1,000 and of 10,000 events into a
  ``StateAggregate``; raw: a keyset ``SELECT``, ``json.loads`` and ``dict.update``.
  ``evercore engine + json.loads`` reads through the engine and decodes like the
  raw side: the engine's own share of the cost.
* catch-up: the whole log in pages of 1,000, each event decoded with ``json.loads``;
  raw: keyset ``SELECT ... WHERE id > %s ORDER BY id LIMIT 1000``.
* contention: two processes append ``CONTENDED`` events to the same 10 aggregates
  (load, apply, commit; a conflict is retried); raw: ``SELECT max(sequence)`` then
  ``INSERT`` in one transaction, retried on a unique violation.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import evercore
import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate as EsAggregate
from eventsourcing.domain import event as es_event
from eventsourcing.persistence import RecordConflictError
from evercore.bench import BenchAccount, make_event
from evercore.errors import ConcurrencyError
from evercore.values import StorageEngineEvent, Subscription
from evercore_postgres.testing import TEST_SERVER, drop_schema, temporary_uri
from psycopg import sql

EVENTS = int(os.environ.get("BENCH_POSTGRES_EVENTS", "100000"))
CONTEXT_EVENTS = 1_000
AGGREGATES_PER_CONTEXT = 10
EVENTS_PER_AGGREGATE = CONTEXT_EVENTS // AGGREGATES_PER_CONTEXT
SINGLE = 1_000
BIG = (1_000, 10_000)
PAGE = 1_000
CONTENDED = 600
AT = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)

Row = dict[str, Any]


def _schema() -> str:
    return f"evercore_b_{uuid.uuid4().hex}"


def _payload(n: int) -> dict[str, Any]:
    return asdict(make_event(n))


class EsAccount(EsAggregate):
    """The benchmark account in ``eventsourcing``: created, then deposits."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.amount = 0

    @es_event("BenchDeposited")
    def deposit(self, account: str, amount: int, currency: str, memo: str) -> None:
        self.account, self.amount, self.currency, self.memo = account, amount, currency, memo


# -- the three contenders' stores ------------------------------------------------------------
@dataclass
class Stores:
    """One schema per contender (ingest rounds get fresh ones); all dropped at the end."""

    schemas: list[str]

    def new(self) -> str:
        self.schemas.append(_schema())
        return self.schemas[-1]

    def evercore(self) -> evercore.EventStore:
        return evercore.connect(temporary_uri(self.new()))

    def raw(self) -> psycopg.Connection[tuple[Any, ...]]:
        """A raw connection on a schema migrated by evercore, types registered."""
        schema = self.new()
        with evercore.connect(temporary_uri(schema)) as store:
            store.warmup(["BenchAccount"], ["BenchDeposited"])
        conn = psycopg.connect(TEST_SERVER, autocommit=True)
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        return conn

    def eventsourcing(self) -> Application:
        schema = self.new()
        with psycopg.connect(TEST_SERVER, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        return _eventsourcing_app(schema)

    def drop_scratch(self) -> None:
        """Drop every schema but the three loaded ones (the first three made)."""
        for schema in self.schemas[3:]:
            drop_schema(schema)
        del self.schemas[3:]

    def drop(self) -> None:
        for schema in self.schemas:
            drop_schema(schema)
        self.schemas.clear()


@contextmanager
def stores() -> Iterator[Stores]:
    made = Stores([])
    try:
        yield made
    finally:
        made.drop()


def _eventsourcing_app(schema: str, create_table: bool = True) -> Application:
    return Application(
        env={
            "CREATE_TABLE": "y" if create_table else "n",
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": "test",
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": "5432",
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
            "POSTGRES_SCHEMA": schema,
        }
    )


# -- ingest ------------------------------------------------------------------------------------
def ingest_evercore(store: evercore.EventStore, events: int = EVENTS) -> None:
    for context_number in range(events // CONTEXT_EVENTS):
        with store.context() as ctx:
            for a in range(AGGREGATES_PER_CONTEXT):
                account = BenchAccount()
                ctx.create_aggregate_into(account)
                first = (context_number * AGGREGATES_PER_CONTEXT + a) * EVENTS_PER_AGGREGATE
                for n in range(first, first + EVENTS_PER_AGGREGATE):
                    ctx.apply_event_to(account, make_event(n))


_COPY = (
    "COPY events (aggregate_id, sequence, event_type_id, state, event_time, reference) "
    "FROM STDIN (FORMAT binary)"
)
_COPY_TYPES = ("int8", "int8", "int8", "text", "timestamptz", "text")


def ingest_raw(conn: psycopg.Connection[tuple[Any, ...]], events: int = EVENTS) -> None:
    for context_number in range(events // CONTEXT_EVENTS):
        with conn.transaction():
            ids = [
                row[0]
                for row in conn.execute(
                    "INSERT INTO aggregates (aggregate_type_id) "
                    "SELECT 1 FROM generate_series(1, %s) RETURNING id",
                    (AGGREGATES_PER_CONTEXT,),
                )
            ]
            with conn.cursor().copy(_COPY) as copy:
                copy.set_types(_COPY_TYPES)
                for a, aggregate_id in enumerate(ids):
                    first = (context_number * AGGREGATES_PER_CONTEXT + a) * EVENTS_PER_AGGREGATE
                    for seq, n in enumerate(range(first, first + EVENTS_PER_AGGREGATE), 1):
                        copy.write_row((aggregate_id, seq, 1, json.dumps(_payload(n)), AT, ""))


def ingest_eventsourcing(app: Application, events: int = EVENTS) -> None:
    for context_number in range(events // CONTEXT_EVENTS):
        accounts = []
        for a in range(AGGREGATES_PER_CONTEXT):
            first = (context_number * AGGREGATES_PER_CONTEXT + a) * EVENTS_PER_AGGREGATE
            account = EsAccount(f"acct-{first:06d}")
            for n in range(first + 1, first + EVENTS_PER_AGGREGATE):  # creation is event 1
                account.deposit(**_payload(n))
            accounts.append(account)
        app.save(*accounts)


# -- single-event contexts ---------------------------------------------------------------------
def single_evercore(prepared: tuple[evercore.EventStore, list[BenchAccount]]) -> None:
    store, accounts = prepared
    for n in range(SINGLE):
        with store.context() as ctx:
            ctx.apply_event_to(accounts[n % len(accounts)], make_event(n))


def prepare_single_evercore(store: evercore.EventStore) -> tuple[evercore.EventStore, Any]:
    def create(ctx: evercore.EventStoreContext) -> list[BenchAccount]:
        accounts = [BenchAccount() for _ in range(100)]
        for account in accounts:
            ctx.create_aggregate_into(account)
        return accounts

    return store, store.in_context(create)


_INSERT_ONE = (
    "INSERT INTO events (aggregate_id, sequence, event_type_id, state, event_time, reference) "
    "VALUES (%s, %s, 1, %s, %s, '')"
)


def prepare_single_raw(conn: psycopg.Connection[tuple[Any, ...]]) -> Any:
    ids = [
        row[0]
        for row in conn.execute(
            "INSERT INTO aggregates (aggregate_type_id) SELECT 1 FROM generate_series(1, 100) "
            "RETURNING id"
        )
    ]
    sequences = dict.fromkeys(ids, 0)
    return conn, ids, sequences


def single_raw(prepared: Any) -> None:
    conn, ids, sequences = prepared
    for n in range(SINGLE):
        aggregate_id = ids[n % len(ids)]
        sequences[aggregate_id] += 1
        state = json.dumps(_payload(n))
        conn.execute(_INSERT_ONE, (aggregate_id, sequences[aggregate_id], state, AT), prepare=True)


def prepare_single_eventsourcing(app: Application) -> Any:
    accounts = [EsAccount(f"acct-{i:06d}") for i in range(100)]
    app.save(*accounts)
    return app, accounts


def single_eventsourcing(prepared: Any) -> None:
    app, accounts = prepared
    for n in range(SINGLE):
        account = accounts[n % len(accounts)]
        account.deposit(**_payload(n))
        app.save(account)


# -- loaded stores for the read workloads -------------------------------------------------------
@dataclass
class Loaded:
    """The three stores holding the ingest workload plus one aggregate per ``BIG`` size."""

    store: evercore.EventStore
    big_ids: dict[int, int]
    raw: psycopg.Connection[tuple[Any, ...]]
    raw_big_ids: dict[int, int]
    app: Application
    es_big_ids: dict[int, Any]


def load_all(made: Stores, events: int) -> Loaded:
    store = made.evercore()
    ingest_evercore(store, events)
    raw = made.raw()
    ingest_raw(raw, events)
    app = made.eventsourcing()
    ingest_eventsourcing(app, events)
    loaded = Loaded(store, {}, raw, {}, app, {})
    for size in BIG:
        with store.context() as ctx:
            account = BenchAccount()
            ctx.create_aggregate_into(account)
            for n in range(size):
                ctx.apply_event_to(account, make_event(n))
        loaded.big_ids[size] = account.id
        row = raw.execute("INSERT INTO aggregates (aggregate_type_id) VALUES (1) RETURNING id")
        loaded.raw_big_ids[size] = raw_id = row.fetchone()[0]  # type: ignore[index]
        with raw.cursor().copy(_COPY) as copy:
            copy.set_types(_COPY_TYPES)
            for n in range(size):
                copy.write_row((raw_id, n + 1, 1, json.dumps(_payload(n)), AT, ""))
        es_account = EsAccount("big")
        for n in range(1, size):
            es_account.deposit(**_payload(n))
        app.save(es_account)
        loaded.es_big_ids[size] = es_account.id
    return loaded


def rehydrate_evercore(loaded: Loaded, size: int) -> None:
    with loaded.store.readonly_context() as ctx:
        account = BenchAccount()
        ctx.load_state_into(account, loaded.big_ids[size])
    assert account.sequence == size


def rehydrate_engine(loaded: Loaded, size: int) -> None:
    """The engine's read plus the raw side's decoding and folding: the engine's share."""
    engine = loaded.store.storage_engine
    state: dict[str, Any] = {}
    events = engine.get_events_for_aggregate(None, loaded.big_ids[size], 0)
    for event in events:
        state.update(json.loads(event.state))
    assert len(events) == size


def rehydrate_raw(loaded: Loaded, size: int) -> None:
    rows = loaded.raw.execute(
        "SELECT sequence, event_type_id, state FROM events WHERE aggregate_id = %s "
        "ORDER BY sequence",
        (loaded.raw_big_ids[size],),
    ).fetchall()
    state: dict[str, Any] = {}
    for _sequence, _type_id, text in rows:
        state.update(json.loads(text))
    assert len(rows) == size


def rehydrate_eventsourcing(loaded: Loaded, size: int) -> None:
    account = loaded.app.repository.get(loaded.es_big_ids[size])
    assert account.version == size


def catch_up_evercore(loaded: Loaded) -> int:
    engine = loaded.store.storage_engine
    cursor, count = 0, 0
    while page := engine.get_events_for_subscription(
        None, Subscription(id=0, name="bench", last_event_id=cursor), PAGE
    ):
        for event in page:
            json.loads(event.state)
        count += len(page)
        cursor = page[-1].event_id
    return count


def catch_up_raw(loaded: Loaded) -> int:
    cursor, count = 0, 0
    while page := loaded.raw.execute(
        "SELECT id, aggregate_id, event_type_id, state, sequence, reference, event_time "
        "FROM events WHERE id > %s ORDER BY id LIMIT %s",
        (cursor, PAGE),
    ).fetchall():
        for row in page:
            json.loads(row[3])
        count += len(page)
        cursor = page[-1][0]
    return count


def catch_up_eventsourcing(loaded: Loaded) -> int:
    recorder, mapper = loaded.app.recorder, loaded.app.mapper
    cursor, count = 0, 0
    while page := recorder.select_notifications(cursor, PAGE, inclusive_of_start=False):
        for notification in page:
            mapper.to_domain_event(notification)
        count += len(page)
        cursor = page[-1].id
    return count


# -- two processes on the same 10 aggregates --------------------------------------------------
def _contend_evercore(uri: str, ids: list[Any], offset: int, ready: Any) -> int:
    retries = 0
    pick = random.Random(offset).choice  # seeded: repeatable, and both hit every aggregate
    with evercore.connect(uri) as store:
        ready.wait()
        for n in range(offset, CONTENDED, 2):
            aggregate_id = pick(ids)

            def append(ctx: evercore.EventStoreContext) -> None:
                account = BenchAccount()
                ctx.load_state_into(account, aggregate_id)  # noqa: B023
                ctx.apply_event_to(account, make_event(n))  # noqa: B023

            while True:
                try:
                    store.in_context(append)
                    break
                except ConcurrencyError:
                    retries += 1
    return retries


def _contend_raw(schema: str, ids: list[Any], offset: int, ready: Any) -> int:
    """Read the aggregate's last sequence, insert the next; a unique violation retries."""
    retries = 0
    pick = random.Random(offset).choice
    with psycopg.connect(TEST_SERVER, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        ready.wait()
        for n in range(offset, CONTENDED, 2):
            aggregate_id = pick(ids)
            while True:
                try:
                    with conn.transaction():
                        row = conn.execute(
                            "SELECT coalesce(max(sequence), 0) FROM events WHERE aggregate_id = %s",
                            (aggregate_id,),
                        ).fetchone()
                        assert row is not None
                        state = json.dumps(_payload(n))
                        conn.execute(_INSERT_ONE, (aggregate_id, row[0] + 1, state, AT))
                    break
                except psycopg.errors.UniqueViolation:
                    retries += 1
    return retries


def _contend_eventsourcing(schema: str, ids: list[Any], offset: int, ready: Any) -> int:
    retries = 0
    pick = random.Random(offset).choice
    app = _eventsourcing_app(schema, create_table=False)  # both at once would collide
    ready.wait()
    for n in range(offset, CONTENDED, 2):
        account_id = pick(ids)
        while True:
            try:
                account = app.repository.get(account_id)
                account.deposit(**_payload(n))
                app.save(account)
                break
            except RecordConflictError:
                retries += 1
    app.close()
    return retries


_CONTENDERS: dict[str, Callable[[str, list[Any], int, Any], int]] = {
    "evercore": _contend_evercore,
    "raw psycopg": _contend_raw,
    "eventsourcing": _contend_eventsourcing,
}


def _contend(kind: str, target: str, ids: list[Any], offset: int, ready: Any, out: Any) -> None:
    out.put(_CONTENDERS[kind](target, ids, offset, ready))


def contention(made: Stores) -> dict[str, tuple[float, int]]:
    """Per contender: seconds for two processes (started together once both are
    connected) to append ``CONTENDED`` events to 10 shared aggregates, and how many
    conflicts they retried."""
    uri = temporary_uri(made.new())
    with evercore.connect(uri) as store:
        _, accounts = prepare_single_evercore(store)
    raw_conn = made.raw()
    raw_schema = made.schemas[-1]
    raw_ids = prepare_single_raw(raw_conn)[1]
    raw_conn.close()
    app = made.eventsourcing()
    es_accounts = [EsAccount(f"acct-{i:06d}") for i in range(10)]
    app.save(*es_accounts)
    app.close()
    targets = {
        "evercore": (uri, [a.id for a in accounts[:10]]),
        "raw psycopg": (raw_schema, raw_ids[:10]),
        "eventsourcing": (made.schemas[-1], [a.id for a in es_accounts]),
    }
    return {kind: _race(kind, *target) for kind, target in targets.items()}


def _race(kind: str, target: str, ids: list[Any]) -> tuple[float, int]:
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    workers = [
        context.Process(target=_contend, args=(kind, target, ids, i, ready, results))
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    time.sleep(3)  # both connect and import before the clock starts
    started = time.perf_counter()
    ready.set()
    retries = sum(results.get(timeout=300) for _ in workers)
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.join()
    return seconds, retries


def notify_cost(made: Stores, rounds: int = 3) -> tuple[float, float]:
    """Commits/s of 4 writer threads (one event per transaction) as the engine sends
    notifications (a notifier thread) and with ``pg_notify`` inside each transaction."""
    store = made.evercore()
    engine = store.storage_engine
    type_id = engine.get_aggregate_type_id(None, "BenchAccount")
    event_type = engine.get_event_type_id(None, "BenchDeposited")
    per_thread = 150

    def run(in_transaction: bool) -> float:
        aggregates = [engine.new_aggregate(None, type_id) for _ in range(4)]

        def write(aggregate_id: int) -> None:
            for sequence in range(1, per_thread + 1):
                tx = engine.get_transaction_info()
                event = StorageEngineEvent(aggregate_id, sequence, event_type, "{}", AT, "")
                engine.write_state(tx, [event], [])
                if in_transaction:
                    tx.conn.execute("SELECT pg_notify('bench', '')")  # type: ignore[attr-defined]
                tx.commit()

        threads = [threading.Thread(target=write, args=(a,)) for a in aggregates]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return 4 * per_thread / (time.perf_counter() - started)

    ours, inside = [], []
    for _ in range(rounds):
        ours.append(run(False))
        inside.append(run(True))
    store.close()
    return statistics.median(ours), statistics.median(inside)


# -- what is measured ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One contender on one workload: ``prepare`` (untimed) gives what ``run`` takes."""

    group: str
    row: str
    events: int
    prepare: Callable[[], Any]
    run: Callable[[Any], Any]


def cases(made: Stores, loaded: Loaded, events: int) -> list[Case]:
    found = [
        Case("ingest 1,000", "evercore", events, made.evercore,
             lambda s: ingest_evercore(s, events)),
        Case("ingest 1,000", "raw psycopg binary COPY", events, made.raw,
             lambda c: ingest_raw(c, events)),
        Case("ingest 1,000", "eventsourcing", events, made.eventsourcing,
             lambda a: ingest_eventsourcing(a, events)),
        Case("ingest 1", "evercore", SINGLE,
             lambda: prepare_single_evercore(made.evercore()), single_evercore),
        Case("ingest 1", "raw psycopg INSERT", SINGLE,
             lambda: prepare_single_raw(made.raw()), single_raw),
        Case("ingest 1", "eventsourcing", SINGLE,
             lambda: prepare_single_eventsourcing(made.eventsourcing()), single_eventsourcing),
        Case("catch-up", "evercore", 0, lambda: loaded, catch_up_evercore),
        Case("catch-up", "raw psycopg keyset SELECT", 0, lambda: loaded, catch_up_raw),
        Case("catch-up", "eventsourcing", 0, lambda: loaded, catch_up_eventsourcing),
    ]  # fmt: skip
    for size in BIG:
        group = f"rehydrate {size:,}"
        found += [
            Case(group, "evercore", size, lambda: loaded,
                 lambda ld, s=size: rehydrate_evercore(ld, s)),
            Case(group, "evercore engine + json.loads", size, lambda: loaded,
                 lambda ld, s=size: rehydrate_engine(ld, s)),
            Case(group, "raw psycopg SELECT", size, lambda: loaded,
                 lambda ld, s=size: rehydrate_raw(ld, s)),
            Case(group, "eventsourcing", size, lambda: loaded,
                 lambda ld, s=size: rehydrate_eventsourcing(ld, s)),
        ]  # fmt: skip
    return found


GOALS = {
    # (group, theirs): the goal for theirs-median / evercore-median
    ("ingest 1,000", "raw psycopg binary COPY"): 0.8,
    ("ingest 1,000", "eventsourcing"): 3.0,
    ("ingest 1", "raw psycopg INSERT"): 0.7,
    ("ingest 1", "eventsourcing"): 2.0,
    ("catch-up", "raw psycopg keyset SELECT"): 0.7,
    ("rehydrate 1,000", "raw psycopg SELECT"): 0.5,
    ("rehydrate 1,000", "eventsourcing"): 5.0,
    ("rehydrate 10,000", "raw psycopg SELECT"): 0.5,
    ("rehydrate 10,000", "eventsourcing"): 5.0,
}
ROUNDS = {"ingest 1,000": 3, "ingest 1": 3, "catch-up": 5, "rehydrate 1,000": 21,
          "rehydrate 10,000": 9}  # fmt: skip


def _close(handle: Any) -> None:
    if isinstance(handle, tuple):
        handle = handle[0]
    if hasattr(handle, "close"):
        handle.close()


def run_once(case: Case) -> float:
    argument = case.prepare()
    started = time.perf_counter()
    case.run(argument)
    elapsed = time.perf_counter() - started
    if case.group.startswith("ingest"):
        _close(argument)
    return elapsed


@dataclass(frozen=True)
class Extra:
    """Figures without a contender: contention (seconds, retries) and the cost of a
    NOTIFY in every transaction (commits/s without, with)."""

    contention: dict[str, tuple[float, int]]
    notify: tuple[float, float]


def measure(events: int = EVENTS) -> tuple[dict[tuple[str, str], float], dict[str, int], Extra]:
    """Median seconds per (group, row), events per group, and the contention figure."""
    with stores() as made:
        loaded = load_all(made, events)
        all_cases = cases(made, loaded, events)
        times: dict[tuple[str, str], list[float]] = {(c.group, c.row): [] for c in all_cases}
        sizes = {c.group: c.events or events + sum(BIG) for c in all_cases}
        for group, count in ROUNDS.items():
            group_cases = [c for c in all_cases if c.group == group]
            for _ in range(count + 1):  # the first round warms up
                for case in group_cases:
                    times[(case.group, case.row)].append(run_once(case))
                if group.startswith("ingest"):
                    made.drop_scratch()
        extra = Extra(contention(made), notify_cost(made))
        medians = {key: statistics.median(values[1:]) for key, values in times.items()}
        _close(loaded.store)
        loaded.raw.close()
        return medians, sizes, extra


def report_lines(
    medians: dict[tuple[str, str], float], sizes: dict[str, int], extra: Extra
) -> list[str]:
    lines = ["PostgreSQL benchmark (medians of one run, same server, same schema):"]
    for (group, row), seconds in medians.items():
        rate = sizes[group] / seconds
        lines.append(f"  {group:17} {row:27} {seconds * 1000:9.1f} ms {rate:11,.0f} events/s")
    for (group, row), seconds in medians.items():
        if row.startswith("evercore"):
            continue
        ratio = seconds / medians[(group, "evercore")]
        goal = GOALS.get((group, row))
        verdict = (
            "" if goal is None else f"(goal >= {goal}x: {'met' if ratio >= goal else 'MISSED'})"
        )
        lines.append(f"  {group:17} evercore vs {row:27} {ratio:6.2f}x {verdict}")
    for size in BIG:
        group = f"rehydrate {size:,}"
        share = (
            medians[(group, "raw psycopg SELECT")]
            / medians[(group, "evercore engine + json.loads")]
        )
        lines.append(
            f"  {group:17} evercore engine + json.loads vs raw psycopg SELECT {share:6.2f}x"
        )
    for kind, (seconds, retries) in extra.contention.items():
        lines.append(
            f"  contention, 2 processes, {CONTENDED} events on 10 aggregates: {kind:13} "
            f"{CONTENDED / seconds:7,.0f} events/s, {retries} conflicts retried"
        )
    ours, inside = extra.notify
    lines.append(
        f"  notify: 4 writer threads, 1 event per commit: {ours:,.0f} commits/s with the "
        f"notifier thread, {inside:,.0f} with NOTIFY in each transaction ({ours / inside:.2f}x)"
    )
    return lines


def side_by_side(events: int) -> list[Row]:
    """The figures for ``benches/side_by_side.py`` (one row per measurement)."""
    medians, sizes, extra = measure(events)
    rows: list[Row] = []
    for (group, row), seconds in medians.items():
        entry: Row = {"workload": group, "implementation": row, "events": sizes[group],
                      "seconds": seconds}  # fmt: skip
        goal = GOALS.get((group, row))
        if goal is not None:
            entry["goal"] = f">= {goal}x"
        rows.append(entry)
    for kind, (seconds, _) in extra.contention.items():
        rows.append({"workload": "contention, 2 processes on 10 aggregates",
                     "implementation": kind, "events": CONTENDED, "seconds": seconds})  # fmt: skip
    return rows


# -- pytest-benchmark ---------------------------------------------------------------------------
def test_postgres_side_by_side(benchmark: Any, request: pytest.FixtureRequest) -> None:
    """The whole comparison once (pedantic, one round): the ratios are printed."""
    result: list[Any] = []
    benchmark.pedantic(lambda: result.append(measure()), rounds=1, iterations=1)
    writer = request.config.get_terminal_writer()
    for line in report_lines(*result[0]):
        writer.line(line)


def main() -> int:
    started = time.perf_counter()
    print("\n".join(report_lines(*measure())))
    print(f"  ({time.perf_counter() - started:.0f} s in all; command: "
          f"{' '.join([os.path.basename(sys.executable), *sys.argv])})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
