"""The SQLite engine against raw ``sqlite3`` and the ``eventsourcing`` library.

Workloads (SPEC issue 5), each measured in the same run for every contender:

* ingest: 100,000 events of about 150 bytes of JSON over 1,000 aggregates, in 100
  contexts (transactions) of 1,000 events; each context creates 10 aggregates and
  appends 100 events to each, into a fresh database file.
* rehydrate: load one aggregate of 1,000 events, decode each event and fold it into
  the aggregate's state.
* catch-up: read the whole log (101,000 events) in pages of 1,000 and decode each.

Contenders:

* ``evercore``: the facade (``store.context()``, ``StateAggregate``,
  ``apply_event_to``; ``load_state_into``) on ``sqlite:///`` for ingest and
  rehydrate; the engine's ``get_events_for_subscription`` pages for catch-up (with
  ``json.loads`` like the raw side, and with ``evercore.decode_event`` into the
  payload dataclass). ``evercore engine`` rows call ``write_state`` with events
  already serialized: the engine's own cost.
* ``raw sqlite3``: the same schema and pragmas (WAL, synchronous=NORMAL, 16 MiB
  cache, foreign keys on), ``json.dumps`` of a dict per event and one
  ``executemany`` per context in ``BEGIN IMMEDIATE``/``COMMIT``; a plain keyset
  ``SELECT`` plus ``json.loads`` (and, for rehydrate, ``dict.update`` per event).
* ``eventsourcing``: ``Application`` with ``PERSISTENCE_MODULE=eventsourcing.sqlite``
  (its own pragmas: WAL, SQLite's default synchronous), the same payload fields,
  ``app.save`` per context, ``repository.get`` and ``select_notifications`` +
  ``mapper.to_domain_event``.

Run ``.venv/bin/python benches/bench_sqlite.py`` (about two minutes): rounds of the
contenders are interleaved, so that the load of a shared machine hits them alike,
and the ratios of the medians are printed. ``.venv/bin/pytest benches/bench_sqlite.py``
runs the same workloads under pytest-benchmark and prints the ratios at the end.

One interleaved run (2026-11-29, the 2-core shared build machine; ratios are
theirs / ours, higher is better for evercore):

=========  =====================================  ==============================  =====
workload   evercore                               against                         ratio
=========  =====================================  ==============================  =====
ingest     facade (87,000 events/s)               raw: json.dumps + executemany   1.12x
ingest     facade                                 raw: ready rows (213,000/s)     0.41x
ingest     engine, serialized events (168,000/s)  raw: ready rows                 0.79x
ingest     facade                                 eventsourcing (19,000/s)        4.60x
rehydrate  facade: load, decode, apply            raw: SELECT, json, dict.update  0.18x
rehydrate  engine read + json + dict.update       raw: SELECT, json, dict.update  0.73x
rehydrate  facade                                 eventsourcing                   1.67x
catch-up   engine pages + json.loads              raw keyset SELECT + json.loads  0.83x
catch-up   engine pages + json.loads              eventsourcing                   2.47x
catch-up   engine pages + decode_event            raw keyset SELECT + json.loads  0.18x
=========  =====================================  ==============================  =====

The facade's share of rehydrate and of ``decode_event`` is its JSON-to-dataclass
decoding (``evercore.events.decode_json_as``, about 19 us of the 22 us per event).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import evercore
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate as EsAggregate
from eventsourcing.domain import event as es_event
from evercore import StateAggregate, StorageEngineEvent, Subscription, decode_event
from evercore.engines.sqlite import _schema
from evercore.engines.sqlite.engine import SqliteStorageEngine

EVENTS = 100_000
CONTEXT_EVENTS = 1_000
AGGREGATES_PER_CONTEXT = 10
EVENTS_PER_AGGREGATE = CONTEXT_EVENTS // AGGREGATES_PER_CONTEXT
CONTEXTS = EVENTS // CONTEXT_EVENTS
BIG_AGGREGATE_EVENTS = 1_000
PAGE = 1_000
AT = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
TAGS = ("payroll", "monthly")
NOTE = "salary for November"
RAW_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA cache_size = -16384",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA foreign_keys = ON",
)


@evercore.state_event(name="Deposited")
@dataclasses.dataclass
class Deposited:
    """The event payload; its JSON is about 150 bytes."""

    account: str
    amount: float
    currency: str
    note: str
    at: datetime
    tags: list[str]


@dataclasses.dataclass
class Account:
    """The aggregate's state."""

    account: str = ""
    amount: float = 0.0
    currency: str = ""
    note: str = ""
    at: datetime | None = None
    tags: list[str] = dataclasses.field(default_factory=list)


class AccountAggregate(StateAggregate[Account]):
    """An account, without snapshots (``eventsourcing`` takes none by default)."""

    snapshot_frequency = 0


class EsAccount(EsAggregate):
    """The same account in ``eventsourcing``: created by one event, then deposits."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.amount = 0.0

    @es_event("Deposited")
    def deposit(
        self, amount: float, currency: str, note: str, at: datetime, tags: list[str]
    ) -> None:
        self.amount = amount
        self.currency = currency
        self.note = note
        self.at = at
        self.tags = tags


def _account_name(context_number: int, a: int) -> str:
    return f"account-{context_number * AGGREGATES_PER_CONTEXT + a:05d}"


# -- the three stores -------------------------------------------------------------------------
class Stores:
    """A scratch directory: the loaded stores, and one round's fresh databases."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="evercore-bench-sqlite-"))
        self.count = 0

    def fresh_path(self, name: str, scratch: bool = False) -> Path:
        """A path for a new database file (``scratch``: removed by :meth:`clear_scratch`)."""
        self.count += 1
        folder = self.folder / "scratch" if scratch else self.folder
        folder.mkdir(exist_ok=True)
        return folder / f"{name}-{self.count}.db"

    def clear_scratch(self) -> None:
        shutil.rmtree(self.folder / "scratch", ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def open_evercore(path: Path) -> evercore.EventStore:
    return evercore.connect(f"sqlite:///{path}")


def open_raw(path: Path) -> sqlite3.Connection:
    """A plain connection with the engine's schema and pragmas."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in RAW_PRAGMAS:
        conn.execute(pragma)
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone():
        for statement in _schema.migrations()[0].statements:
            conn.execute(statement)
        conn.execute("INSERT INTO aggregate_types (name) VALUES ('Account')")
        conn.execute("INSERT INTO event_types (name) VALUES ('Deposited')")
    return conn


def open_eventsourcing(path: Path) -> Application:
    return Application(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )


# -- ingest -------------------------------------------------------------------------------------
def ingest_evercore(store: evercore.EventStore, contexts: int = CONTEXTS) -> None:
    """The workload through the facade, one context per 1,000 events."""
    for context_number in range(contexts):
        with store.context() as ctx:
            for a in range(AGGREGATES_PER_CONTEXT):
                agg = AccountAggregate()
                ctx.create_aggregate_into(agg)
                name = _account_name(context_number, a)
                for i in range(EVENTS_PER_AGGREGATE):
                    ctx.apply_event_to(agg, Deposited(name, i * 0.25, "EUR", NOTE, AT, list(TAGS)))


def ingest_engine(engine: SqliteStorageEngine, batches: list[list[StorageEngineEvent]]) -> None:
    """Pre-serialized events straight into the engine: its own share of the cost."""
    type_id = engine.get_aggregate_type_id(None, "Account")
    assert engine.get_event_type_id(None, "Deposited") == batches[0][0].event_type_id
    for batch in batches:
        tx = engine.get_transaction_info()
        for _ in range(AGGREGATES_PER_CONTEXT):
            engine.new_aggregate(tx, type_id)
        engine.write_state(tx, batch, [])
        tx.commit()


def serialized_batches(contexts: int = CONTEXTS) -> list[list[StorageEngineEvent]]:
    """The workload as the facade hands it to the engine (aggregate ids 1..1000)."""
    batches = []
    for context_number in range(contexts):
        batch = []
        for a in range(AGGREGATES_PER_CONTEXT):
            aggregate_id = context_number * AGGREGATES_PER_CONTEXT + a + 1
            for i in range(EVENTS_PER_AGGREGATE):
                payload = _raw_payload(_account_name(context_number, a), i)
                batch.append(StorageEngineEvent(aggregate_id, i + 1, 1, payload, AT, ""))
        batches.append(batch)
    return batches


def _raw_payload(name: str, i: int) -> str:
    return json.dumps(
        {
            "account": name,
            "amount": i * 0.25,
            "currency": "EUR",
            "note": NOTE,
            "at": AT.isoformat(),
            "tags": list(TAGS),
        }
    )


_RAW_INSERT = (
    "INSERT INTO events (aggregate_id, sequence, event_type_id, state, event_time, reference) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def ingest_raw(conn: sqlite3.Connection, contexts: int = CONTEXTS) -> None:
    """The same work by hand: aggregates, then one executemany per context."""
    for context_number in range(contexts):
        conn.execute("BEGIN IMMEDIATE")
        rows = []
        for a in range(AGGREGATES_PER_CONTEXT):
            aggregate_id = conn.execute(
                "INSERT INTO aggregates (aggregate_type_id) VALUES (1)"
            ).lastrowid
            name = _account_name(context_number, a)
            for i in range(EVENTS_PER_AGGREGATE):
                rows.append(
                    (aggregate_id, i + 1, 1, _raw_payload(name, i), time.time_ns() // 1000, "")
                )
        conn.executemany(_RAW_INSERT, rows)
        conn.execute("COMMIT")


def raw_rows(batches: list[list[StorageEngineEvent]]) -> list[list[tuple[Any, ...]]]:
    """The workload as ready-made rows (payloads serialized, times in microseconds)."""
    at_us = (AT - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    return [[(e.aggregate_id, e.sequence, 1, e.state, at_us, "") for e in b] for b in batches]


def ingest_raw_rows(conn: sqlite3.Connection, rows: list[list[tuple[Any, ...]]]) -> None:
    """Ready-made rows by hand: the aggregates, then one executemany per context."""
    for batch in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO aggregates (aggregate_type_id) VALUES (1)",
            [()] * AGGREGATES_PER_CONTEXT,
        )
        conn.executemany(_RAW_INSERT, batch)
        conn.execute("COMMIT")


def ingest_eventsourcing(app: Application, contexts: int = CONTEXTS) -> None:
    """The same workload: 10 new aggregates of 100 events saved together per context."""
    for context_number in range(contexts):
        accounts = []
        for a in range(AGGREGATES_PER_CONTEXT):
            account = EsAccount(_account_name(context_number, a))
            for i in range(EVENTS_PER_AGGREGATE - 1):  # the creation is the first event
                account.deposit(i * 0.25, "EUR", NOTE, AT, list(TAGS))
            accounts.append(account)
        app.save(*accounts)


# -- loaded stores for the read workloads ------------------------------------------------------
@dataclasses.dataclass
class Loaded:
    """The three stores holding the ingest workload plus one aggregate of 1,000 events."""

    store: evercore.EventStore
    big_id: int
    raw: sqlite3.Connection
    raw_big_id: int
    app: Application
    es_big_id: Any


def load_all(stores: Stores, contexts: int = CONTEXTS) -> Loaded:
    store = open_evercore(stores.fresh_path("evercore"))
    ingest_evercore(store, contexts)
    with store.context() as ctx:
        agg = AccountAggregate()
        ctx.create_aggregate_into(agg)
        for i in range(BIG_AGGREGATE_EVENTS):
            ctx.apply_event_to(agg, Deposited("big", i * 0.25, "EUR", NOTE, AT, list(TAGS)))
    raw = open_raw(stores.fresh_path("raw"))
    ingest_raw(raw, contexts)
    raw.execute("BEGIN IMMEDIATE")
    raw_big_id = raw.execute("INSERT INTO aggregates (aggregate_type_id) VALUES (1)").lastrowid
    raw.executemany(
        "INSERT INTO events (aggregate_id, sequence, event_type_id, state, event_time, "
        "reference) VALUES (?, ?, 1, ?, 0, '')",
        [(raw_big_id, i + 1, _raw_payload("big", i)) for i in range(BIG_AGGREGATE_EVENTS)],
    )
    raw.execute("COMMIT")
    app = open_eventsourcing(stores.fresh_path("eventsourcing"))
    ingest_eventsourcing(app, contexts)
    big = EsAccount("big")
    for i in range(BIG_AGGREGATE_EVENTS - 1):
        big.deposit(i * 0.25, "EUR", NOTE, AT, list(TAGS))
    app.save(big)
    assert raw_big_id is not None
    return Loaded(store, agg.id, raw, raw_big_id, app, big.id)


def rehydrate_evercore(loaded: Loaded) -> Any:
    with loaded.store.readonly_context() as ctx:
        agg = AccountAggregate()
        ctx.load_state_into(agg, loaded.big_id)
    assert agg.sequence == BIG_AGGREGATE_EVENTS
    return agg.state


def rehydrate_raw(loaded: Loaded) -> Any:
    rows = loaded.raw.execute(
        "SELECT sequence, event_type_id, state FROM events WHERE aggregate_id = ? "
        "ORDER BY sequence",
        (loaded.raw_big_id,),
    ).fetchall()
    state: dict[str, Any] = {}
    for _sequence, _type_id, text in rows:
        state.update(json.loads(text))
    assert len(rows) == BIG_AGGREGATE_EVENTS
    return state


def rehydrate_engine(loaded: Loaded) -> Any:
    """The engine's read plus the raw side's decoding and folding: its own share."""
    events = loaded.store.storage_engine.get_events_for_aggregate(None, loaded.big_id, 0)
    state: dict[str, Any] = {}
    for ev in events:
        state.update(json.loads(ev.state))
    assert len(events) == BIG_AGGREGATE_EVENTS
    return state


def rehydrate_eventsourcing(loaded: Loaded) -> Any:
    account = loaded.app.repository.get(loaded.es_big_id)
    assert account.version == BIG_AGGREGATE_EVENTS
    return account


def catch_up_evercore(loaded: Loaded, decode: Callable[[Any], Any]) -> int:
    engine = loaded.store.storage_engine
    cursor, count = 0, 0
    while True:
        page = engine.get_events_for_subscription(
            None, Subscription(id=0, name="bench", last_event_id=cursor), PAGE
        )
        if not page:
            return count
        for ev in page:
            decode(ev)
        count += len(page)
        cursor = page[-1].event_id


def catch_up_evercore_json(loaded: Loaded) -> int:
    return catch_up_evercore(loaded, lambda ev: json.loads(ev.state))


def catch_up_evercore_decoded(loaded: Loaded) -> int:
    return catch_up_evercore(loaded, decode_event)


def catch_up_raw(loaded: Loaded) -> int:
    cursor, count = 0, 0
    while True:
        page = loaded.raw.execute(
            "SELECT id, aggregate_id, event_type_id, state, sequence, reference, event_time "
            "FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (cursor, PAGE),
        ).fetchall()
        if not page:
            return count
        for row in page:
            json.loads(row[3])
        count += len(page)
        cursor = page[-1][0]


def catch_up_eventsourcing(loaded: Loaded) -> int:
    recorder, mapper = loaded.app.recorder, loaded.app.mapper
    cursor, count = 0, 0
    while True:
        page = recorder.select_notifications(cursor, PAGE, inclusive_of_start=False)
        if not page:
            return count
        for notification in page:
            mapper.to_domain_event(notification)
        count += len(page)
        cursor = page[-1].id


# -- what is measured ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    """One contender on one workload: ``prepare`` (untimed) returns what ``run`` takes."""

    group: str
    row: str
    prepare: Callable[[], Any]
    run: Callable[[Any], Any]


def run_once(case: Case, stores: Stores) -> float:
    """Seconds one run of ``case`` takes (preparing and cleaning up untimed)."""
    argument = case.prepare()
    started = time.perf_counter()
    case.run(argument)
    elapsed = time.perf_counter() - started
    if case.group == "ingest":
        argument.close()
        stores.clear_scratch()
    return elapsed


def cases(
    stores: Stores,
    loaded: Loaded | None,
    batches: list[list[StorageEngineEvent]],
    contexts: int = CONTEXTS,
) -> list[Case]:
    """Every measurement; the read cases need ``loaded`` (made with as many contexts)."""

    rows = raw_rows(batches)

    def fresh_engine() -> SqliteStorageEngine:
        store = open_evercore(stores.fresh_path("engine", scratch=True))
        engine = store.storage_engine
        assert isinstance(engine, SqliteStorageEngine)
        return engine

    found = [
        Case("ingest", "evercore", lambda: open_evercore(stores.fresh_path("ec", scratch=True)),
             lambda store: ingest_evercore(store, contexts)),
        Case("ingest", "evercore engine", fresh_engine, lambda e: ingest_engine(e, batches)),
        Case("ingest", "raw sqlite3", lambda: open_raw(stores.fresh_path("raw", scratch=True)),
             lambda conn: ingest_raw(conn, contexts)),
        Case("ingest", "raw sqlite3 ready rows",
             lambda: open_raw(stores.fresh_path("rows", scratch=True)),
             lambda conn: ingest_raw_rows(conn, rows)),
        Case("ingest", "eventsourcing",
             lambda: open_eventsourcing(stores.fresh_path("es", scratch=True)),
             lambda app: ingest_eventsourcing(app, contexts)),
    ]  # fmt: skip
    if loaded is not None:
        found += [
            Case("rehydrate", "evercore", lambda: loaded, rehydrate_evercore),
            Case("rehydrate", "evercore engine + json.loads", lambda: loaded, rehydrate_engine),
            Case("rehydrate", "raw sqlite3", lambda: loaded, rehydrate_raw),
            Case("rehydrate", "eventsourcing", lambda: loaded, rehydrate_eventsourcing),
            Case("catch-up", "evercore + json.loads", lambda: loaded, catch_up_evercore_json),
            Case("catch-up", "evercore + decode_event", lambda: loaded, catch_up_evercore_decoded),
            Case("catch-up", "raw sqlite3 + json.loads", lambda: loaded, catch_up_raw),
            Case("catch-up", "eventsourcing", lambda: loaded, catch_up_eventsourcing),
        ]
    return found


RATIOS = (
    # (group, ours, theirs, goal): the goal is theirs-median / ours-median >= goal.
    ("ingest", "evercore", "raw sqlite3", 0.7),
    ("ingest", "evercore", "raw sqlite3 ready rows", None),
    ("ingest", "evercore engine", "raw sqlite3 ready rows", None),
    ("ingest", "evercore", "eventsourcing", 3.0),
    ("rehydrate", "evercore", "raw sqlite3", 0.5),
    ("rehydrate", "evercore engine + json.loads", "raw sqlite3", None),
    ("rehydrate", "evercore", "eventsourcing", 5.0),
    ("catch-up", "evercore + json.loads", "raw sqlite3 + json.loads", 0.7),
    ("catch-up", "evercore + decode_event", "raw sqlite3 + json.loads", None),
    ("catch-up", "evercore + json.loads", "eventsourcing", None),
    ("catch-up", "evercore + decode_event", "eventsourcing", None),
)


def _sizes(events: int) -> dict[str, int]:
    """Events each group's timed part handles."""
    return {"ingest": events, "rehydrate": BIG_AGGREGATE_EVENTS, "catch-up": events + 1_000}


def report_lines(medians: dict[tuple[str, str], float]) -> list[str]:
    """Throughputs and the ratios the goals are stated in (higher is better for us)."""
    sizes = _sizes(EVENTS)
    lines = ["SQLite benchmark (medians of one run):"]
    for (group, row), seconds in medians.items():
        rate = sizes[group] / seconds
        lines.append(f"  {group:10} {row:30} {seconds * 1000:9.1f} ms {rate:12,.0f} events/s")
    for group, ours, theirs, goal in RATIOS:
        mine, other = medians.get((group, ours)), medians.get((group, theirs))
        if mine and other:
            target = f"(goal >= {goal}x)" if goal else ""
            lines.append(f"  {group:10} {ours} vs {theirs}: {other / mine:5.2f}x {target}")
    return lines


# -- pytest-benchmark ---------------------------------------------------------------------------
_medians: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module")
def stores() -> Iterator[Stores]:
    made = Stores()
    yield made
    made.remove()


@pytest.fixture(scope="module")
def loaded(stores: Stores) -> Loaded:
    return load_all(stores)


@pytest.fixture(scope="module")
def batches() -> list[list[StorageEngineEvent]]:
    return serialized_batches()


@pytest.fixture(scope="module", autouse=True)
def ratio_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the ratios once every benchmark of the module has run."""
    yield
    writer = request.config.get_terminal_writer()
    writer.line()
    for line in report_lines(_medians):
        writer.line(line)


_NAMES = [
    ("ingest", "evercore"),
    ("ingest", "evercore engine"),
    ("ingest", "raw sqlite3"),
    ("ingest", "raw sqlite3 ready rows"),
    ("ingest", "eventsourcing"),
    ("rehydrate", "evercore"),
    ("rehydrate", "evercore engine + json.loads"),
    ("rehydrate", "raw sqlite3"),
    ("rehydrate", "eventsourcing"),
    ("catch-up", "evercore + json.loads"),
    ("catch-up", "evercore + decode_event"),
    ("catch-up", "raw sqlite3 + json.loads"),
    ("catch-up", "eventsourcing"),
]


@pytest.mark.parametrize(("group", "row"), _NAMES, ids=[f"{g}: {r}" for g, r in _NAMES])
def test_sqlite(
    benchmark: Any,
    stores: Stores,
    loaded: Loaded,
    batches: list[list[StorageEngineEvent]],
    group: str,
    row: str,
) -> None:
    (case,) = [c for c in cases(stores, loaded, batches) if (c.group, c.row) == (group, row)]
    benchmark.group = f"sqlite {group}"
    rounds = 3 if group == "ingest" else 15

    opened: list[Any] = []

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        opened.append(case.prepare())
        return (opened[-1],), {}

    benchmark.pedantic(case.run, setup=setup, rounds=rounds, warmup_rounds=1)
    _medians[(group, row)] = benchmark.stats.stats.median
    if group == "ingest":
        for handle in opened:
            handle.close()
        stores.clear_scratch()


# -- script mode: interleaved rounds -------------------------------------------------------------
def measure_interleaved(
    rounds: dict[str, int], contexts: int = CONTEXTS
) -> dict[tuple[str, str], float]:
    """Median seconds per case, running one round of every case of a group in turn."""
    stores = Stores()
    try:
        loaded = load_all(stores, contexts)
        all_cases = cases(stores, loaded, serialized_batches(contexts), contexts)
        times: dict[tuple[str, str], list[float]] = {(c.group, c.row): [] for c in all_cases}
        for group, count in rounds.items():
            group_cases = [c for c in all_cases if c.group == group]
            for case in group_cases:  # warm-up
                run_once(case, stores)
            for _ in range(count):
                for case in group_cases:
                    times[(case.group, case.row)].append(run_once(case, stores))
        return {key: statistics.median(values) for key, values in times.items()}
    finally:
        stores.remove()


def side_by_side(events: int) -> list[dict[str, object]]:
    """The figures for ``benches/side_by_side.py``: ``events`` events in contexts of
    1,000 (rounded down, at least one context), interleaved rounds, one row per
    (workload, implementation), goals on the rows they are stated against."""
    contexts = max(1, events // CONTEXT_EVENTS)
    medians = measure_interleaved({"ingest": 3, "rehydrate": 21, "catch-up": 5}, contexts)
    sizes = _sizes(contexts * CONTEXT_EVENTS)
    # The row the goals are stated for is the one the report calls "evercore".
    ours = {"ingest": "evercore", "rehydrate": "evercore", "catch-up": "evercore + json.loads"}
    goals = {(group, theirs): goal for group, mine, theirs, goal in RATIOS
             if mine == ours[group] and goal}  # fmt: skip
    rows: list[dict[str, object]] = []
    for (group, row), seconds in medians.items():
        shown = "evercore" if row == ours[group] else row
        entry: dict[str, object] = {"workload": group, "implementation": shown,
                                    "events": sizes[group], "seconds": seconds}  # fmt: skip
        if (group, row) in goals:
            entry["goal"] = f">= {goals[(group, row)]}x"
        rows.append(entry)
    return rows


def main() -> None:
    rounds = {"ingest": int(os.environ.get("BENCH_INGEST_ROUNDS", "5")), "rehydrate": 41,
              "catch-up": 9}  # fmt: skip
    print("\n".join(report_lines(measure_interleaved(rounds))))


if __name__ == "__main__":
    sys.exit(main())
