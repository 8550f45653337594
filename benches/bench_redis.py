"""The Redis engine against raw redis-py on the same payloads, in one run.

Run: ``.venv/bin/pytest benches/bench_redis.py`` (about three minutes; needs the local
Redis on 127.0.0.1:6379). Every store lives under its own ``evercore_t_<uuid>``
prefix and is deleted afterwards.

Workload: 100,000 events with ~150-byte JSON payloads over 1,000 aggregates
(aggregates take turns, 100 events each).

* ingest, contexts of 1,000 events (100 contexts; each touches all 1,000
  aggregates, or, "on 10 aggregates", 10 aggregates with 100 events each, as a bulk
  import does) and of 1 event (the first ``SINGLE_EVENTS`` events, one round trip
  each): the engine through a transaction
  (``write_state`` + ``commit``) and autocommit (``write_state(None, ...)``), against
  raw pipelined ``XADD`` and a raw Lua append that checks each aggregate's version
  before writing (the minimum an event store must do). Goal: >= 0.6x of raw Lua.
* rehydrate: every aggregate's events read back (1,000 reads), against raw
  ``LRANGE`` of the same lists without decoding.
* catch-up read: the whole log in pages of 1,000 (unfiltered, and filtered to one
  event type of four, server-side), against raw ``XRANGE`` paging of a raw stream
  holding the same events. Goal: >= 0.7x of raw ``XRANGE``.

The ratios (raw median / engine median, so higher is better for the engine) are
printed at the end. ``side_by_side(events)`` runs the same workloads once more, the
contenders interleaved round by round, for ``benches/side_by_side.py``.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from evercore.values import StorageEngineEvent, Subscription
from evercore_redis.engine import RedisStorageEngine, open_redis_engine
from evercore_redis.testing import fresh_prefix

from tests.services import REDIS_HOST, REDIS_PORT, ensure_redis

EVENTS = 100_000
AGGREGATES = 1_000
CONTEXT = 1_000
SINGLE_EVENTS = 20_000
EVENT_TYPES = ("Deposited", "Withdrawn", "Renamed", "Closed")
URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"

RAW_APPEND = """
-- KEYS: versions hash, stream. ARGV: per event aggregate, sequence, type, time, payload.
local ver = {}
for b = 1, #ARGV, 5 do
  local a = ARGV[b]
  local v = ver[a]
  if v == nil then v = tonumber(redis.call('HGET', KEYS[1], a) or '0') end
  if tonumber(ARGV[b + 1]) ~= v + 1 then return {'conflict', a} end
  ver[a] = v + 1
end
for b = 1, #ARGV, 5 do
  redis.call('XADD', KEYS[2], '*', 'a', ARGV[b], 's', ARGV[b + 1], 't', ARGV[b + 2],
    'ts', ARGV[b + 3], 'd', ARGV[b + 4])
end
for a, v in pairs(ver) do redis.call('HSET', KEYS[1], a, v) end
return {'ok'}
"""


@dataclass(frozen=True)
class Workload:
    """The events, as (aggregate number 0..999, sequence, type index, time, payload),
    spread evenly over ``aggregates`` aggregates."""

    rows: list[tuple[int, int, int, datetime, str]]
    aggregates: int = AGGREGATES

    def grouped(self) -> Workload:
        """The same events ordered by aggregate: a context of 1,000 events then covers
        10 aggregates with 100 events each (a bulk import) instead of 1,000 with one."""
        return Workload(sorted(self.rows, key=lambda row: (row[0], row[1])), self.aggregates)


def build_workload(events: int = EVENTS) -> Workload:
    """``events`` events (rounded down to a multiple of the aggregate count) over up to
    ``AGGREGATES`` aggregates, taking turns."""
    aggregates = max(1, min(AGGREGATES, events))
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows = []
    for i in range(events - events % aggregates):
        moment = start + timedelta(microseconds=37 * i)
        payload = json.dumps({
            "account": f"account-{i % aggregates:05d}", "amount": i * 0.25, "currency": "EUR",
            "note": "salary for November", "at": moment.isoformat(), "tags": ["payroll"],
        }, separators=(",", ":"))
        rows.append((i % aggregates, 1 + i // aggregates, i % 7 % 4, moment, payload))
    return Workload(rows, aggregates)


@pytest.fixture(scope="module")
def workload() -> Workload:
    ensure_redis()
    return build_workload()


class EngineStore:
    """A fresh engine store with the workload's aggregates and event types registered."""

    def __init__(self) -> None:
        self.engine: RedisStorageEngine = open_redis_engine(URL, prefix=fresh_prefix())
        self.engine.migrate()
        tx = self.engine.get_transaction_info()
        account = self.engine.get_aggregate_type_id(tx, "Account")
        self.aggregate_ids = [self.engine.new_aggregate(tx, account) for _ in range(AGGREGATES)]
        self.type_ids = [self.engine.get_event_type_id(tx, n) for n in EVENT_TYPES]
        tx.commit()

    def events(self, workload: Workload, start: int, stop: int) -> list[StorageEngineEvent]:
        ids, types = self.aggregate_ids, self.type_ids
        return [
            StorageEngineEvent(ids[a], seq, types[t], payload, moment, "")
            for a, seq, t, moment, payload in workload.rows[start:stop]
        ]

    def drop(self) -> None:
        self.engine.drop_store()
        self.engine.close()


class RawStore:
    """Raw redis-py on its own prefix: a versions hash, a stream, and the append script."""

    def __init__(self) -> None:
        # Any: redis-py's annotations cannot express decode_responses=True (replies are str).
        self.client: Any = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, decode_responses=True)
        self.prefix = "{" + fresh_prefix() + "}:"
        self.keys = [self.prefix + "versions", self.prefix + "log"]
        self.append = self.client.register_script(RAW_APPEND)

    def append_args(self, workload: Workload, start: int, stop: int) -> list[int | str]:
        args: list[int | str] = []
        for a, seq, t, moment, payload in workload.rows[start:stop]:
            args += (a, seq, t, int(moment.timestamp() * 1e6), payload)
        return args

    def xadd(self, workload: Workload, start: int, stop: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        for a, seq, t, moment, payload in workload.rows[start:stop]:
            pipe.xadd(self.keys[1], {"a": a, "s": seq, "t": t,
                                     "ts": int(moment.timestamp() * 1e6), "d": payload})
        pipe.execute()

    def drop(self) -> None:
        for key in self.client.scan_iter(match=self.prefix + "*"):
            self.client.unlink(key)
        self.client.close()


_medians: dict[tuple[str, str], float] = {}


def _timed(benchmark: Any, group: str, row: str, run: Callable[[Any], Any],
           make: Callable[[], Any], rounds: int) -> None:
    """Benchmark ``run(store)`` on a fresh store per round; drop every store."""
    stores: list[Any] = []

    def setup() -> tuple[tuple[Any], dict[str, Any]]:
        store = make()
        stores.append(store)
        return (store,), {}

    benchmark.group = group
    try:
        benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1)
    finally:
        for store in stores:
            store.drop()
    _medians[(group, row)] = benchmark.stats.stats.median


# -- ingest ------------------------------------------------------------------------------


def _ingest_tx(workload: Workload, size: int, count: int) -> Callable[[EngineStore], None]:
    def run(store: EngineStore) -> None:
        engine = store.engine
        for start in range(0, count, size):
            tx = engine.get_transaction_info()
            engine.write_state(tx, store.events(workload, start, start + size), [])
            tx.commit()
    return run


def _ingest_autocommit(workload: Workload, size: int,
                       count: int) -> Callable[[EngineStore], None]:
    def run(store: EngineStore) -> None:
        for start in range(0, count, size):
            store.engine.write_state(None, store.events(workload, start, start + size), [])
    return run


def _ingest_raw_lua(workload: Workload, size: int, count: int) -> Callable[[RawStore], None]:
    def run(store: RawStore) -> None:
        for start in range(0, count, size):
            outcome = store.append(keys=store.keys,
                                   args=store.append_args(workload, start, start + size))
            assert outcome == ["ok"]
    return run


def _ingest_raw_xadd(workload: Workload, size: int, count: int) -> Callable[[RawStore], None]:
    def run(store: RawStore) -> None:
        for start in range(0, count, size):
            store.xadd(workload, start, start + size)
    return run


INGEST_ROWS: dict[str, tuple[Callable[..., Callable[[Any], None]], Callable[[], Any]]] = {
    "engine tx": (_ingest_tx, EngineStore),
    "engine autocommit": (_ingest_autocommit, EngineStore),
    "raw Lua append": (_ingest_raw_lua, RawStore),
    "raw XADD pipeline": (_ingest_raw_xadd, RawStore),
}
INGEST_SHAPES = {
    # shape: (events per context, events, rounds, grouped by aggregate)
    "contexts of 1000": (CONTEXT, EVENTS, 5, False),
    "contexts of 1000 on 10 aggregates": (CONTEXT, EVENTS, 3, True),
    "contexts of 1": (1, SINGLE_EVENTS, 1, False),
}


def _shaped(workload: Workload, shape: str) -> tuple[Workload, int, int, int]:
    """(workload in the shape's order, context size, event count, rounds)."""
    size, count, rounds, grouped = INGEST_SHAPES[shape]
    return (workload.grouped() if grouped else workload), size, count, rounds


@pytest.mark.parametrize("row", list(INGEST_ROWS))
@pytest.mark.parametrize("shape", list(INGEST_SHAPES))
def test_ingest(benchmark: Any, workload: Workload, shape: str, row: str) -> None:
    shaped, size, count, rounds = _shaped(workload, shape)
    build, make = INGEST_ROWS[row]
    _timed(benchmark, f"ingest, {shape}", row, build(shaped, size, count), make, rounds)


# -- reads -------------------------------------------------------------------------------


@dataclass
class Loaded:
    """An engine store and a raw stream holding the whole workload."""

    engine: EngineStore
    raw: RawStore
    workload: Workload

    @property
    def aggregate_ids(self) -> list[int]:
        """The engine's ids of the aggregates that hold events."""
        return self.engine.aggregate_ids[:self.workload.aggregates]


@contextmanager
def loaded_stores(workload: Workload) -> Iterator[Loaded]:
    """Both stores with the whole workload in them (dropped on exit)."""
    engine, raw = EngineStore(), RawStore()
    try:
        count = len(workload.rows)
        _ingest_autocommit(workload, CONTEXT, count)(engine)
        _ingest_raw_xadd(workload, CONTEXT, count)(raw)
        yield Loaded(engine, raw, workload)
    finally:
        engine.drop()
        raw.drop()


@pytest.fixture(scope="module")
def loaded(workload: Workload) -> Iterator[Loaded]:
    with loaded_stores(workload) as stores:
        yield stores


def _read(benchmark: Any, group: str, row: str, run: Callable[[], int], rounds: int) -> None:
    benchmark.group = group
    count = benchmark.pedantic(run, rounds=rounds, warmup_rounds=1, iterations=1)
    _medians[(group, row)] = benchmark.stats.stats.median
    assert count > 0


def _rehydrate_engine(loaded: Loaded) -> Callable[[], int]:
    engine = loaded.engine.engine
    ids, each = loaded.aggregate_ids, len(loaded.workload.rows) // loaded.workload.aggregates

    def run() -> int:
        read = [engine.get_events_for_aggregate(None, a, 0) for a in ids]
        assert all(len(events) == each for events in read)
        return len(read)

    return run


def _rehydrate_raw(loaded: Loaded) -> Callable[[], int]:
    client = loaded.raw.client
    keys = [f"{{{loaded.engine.engine.prefix}}}:ev:{a}" for a in loaded.aggregate_ids]

    def run() -> int:
        return sum(len(client.lrange(key, 0, -1)) for key in keys)

    return run


def _catch_up(engine: RedisStorageEngine, **filters: Any) -> int:
    cursor, total = 0, 0
    while True:
        page = engine.get_events_for_subscription(
            None, Subscription(0, "bench", last_event_id=cursor, **filters), CONTEXT
        )
        if not page:
            return total
        total += len(page)
        cursor = page[-1].event_id


def _catch_up_raw(loaded: Loaded) -> Callable[[], int]:
    client, stream = loaded.raw.client, loaded.raw.keys[1]

    def run() -> int:
        start, total = "-", 0
        while True:
            page = client.xrange(stream, start, "+", count=CONTEXT)
            if not page:
                return total
            total += len(page)
            start = f"({page[-1][0]}"

    return run


_READS: dict[tuple[str, str], Callable[[Loaded], Callable[[], int]]] = {
    ("rehydrate 1000 aggregates", "engine"): _rehydrate_engine,
    ("rehydrate 1000 aggregates", "raw LRANGE"): _rehydrate_raw,
    ("catch-up read", "engine"): lambda loaded: lambda: _catch_up(loaded.engine.engine),
    ("catch-up read", "engine, one type of four"): lambda loaded: lambda: _catch_up(
        loaded.engine.engine, event_type_id=loaded.engine.type_ids[0]
    ),
    ("catch-up read", "raw XRANGE"): _catch_up_raw,
}


@pytest.mark.parametrize(("group", "row"), list(_READS))
def test_read(benchmark: Any, loaded: Loaded, group: str, row: str) -> None:
    rounds = 3 if group.startswith("rehydrate") else 5
    _read(benchmark, group, row, _READS[(group, row)](loaded), rounds)


GOALS = (
    ("ingest, contexts of 1000", "engine tx", "raw Lua append", 0.6),
    ("ingest, contexts of 1000", "engine autocommit", "raw Lua append", 0.6),
    ("ingest, contexts of 1000 on 10 aggregates", "engine tx", "raw Lua append", 0.6),
    ("ingest, contexts of 1", "engine tx", "raw Lua append", 0.6),
    ("ingest, contexts of 1", "engine autocommit", "raw Lua append", 0.6),
    ("ingest, contexts of 1000", "engine tx", "raw XADD pipeline", None),
    ("ingest, contexts of 1", "engine tx", "raw XADD pipeline", None),
    ("rehydrate 1000 aggregates", "engine", "raw LRANGE", None),
    ("catch-up read", "engine", "raw XRANGE", 0.7),
    ("catch-up read", "engine, one type of four", "raw XRANGE", None),
)
PAIRED_ROUNDS = 3
_paired: dict[tuple[str, str, str], float] = {}


def _alternate(engine_run: Callable[[], object], raw_run: Callable[[], object]) -> float:
    """Median of raw time / engine time over rounds that run one right after the
    other, so that both see the same load on a shared machine."""
    ratios = []
    for _ in range(PAIRED_ROUNDS):
        timings = []
        for run in (engine_run, raw_run):
            started = time.perf_counter()
            run()
            timings.append(time.perf_counter() - started)
        ratios.append(timings[1] / timings[0])
    return statistics.median(ratios)


def _on_fresh(make: Callable[[], Any], run: Callable[[Any], None]) -> Callable[[], None]:
    """``run`` on a fresh store (built and dropped outside the timing would be better,
    but both sides pay the same small set-up)."""

    def fresh() -> None:
        store = make()
        try:
            run(store)
        finally:
            store.drop()

    return fresh


def test_paired_ratios(workload: Workload, loaded: Loaded) -> None:
    """The goal ratios again, engine and baseline alternating round by round."""
    for group, row, baseline, _ in GOALS:
        if group.startswith("ingest"):
            shaped, size, count, _ = _shaped(workload, group.removeprefix("ingest, "))
            count = min(count, 5_000) if size == 1 else count
            (build, make), (raw_build, raw_make) = INGEST_ROWS[row], INGEST_ROWS[baseline]
            engine_run: Callable[[], object] = _on_fresh(make, build(shaped, size, count))
            raw_run: Callable[[], object] = _on_fresh(raw_make, raw_build(shaped, size, count))
        else:
            engine_run, raw_run = _READS[(group, row)](loaded), _READS[(group, baseline)](loaded)
        _paired[(group, row, baseline)] = _alternate(engine_run, raw_run)
    assert _paired


@pytest.fixture(scope="module", autouse=True)
def ratio_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print engine-versus-raw ratios once every benchmark of the module has run."""
    yield
    writer = request.config.get_terminal_writer()
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
        writer.line()
        writer.line("Redis engine vs raw redis-py: raw time / engine time (higher is better);")
        writer.line("'medians' compares the separate benchmarks above, 'paired' alternates")
        writer.line(f"engine and baseline round by round ({PAIRED_ROUNDS} rounds, median).")
        for group, row, baseline, goal in GOALS:
            engine, raw = _medians.get((group, row)), _medians.get((group, baseline))
            medians = f"{raw / engine:5.2f}x" if engine and raw else "    -"
            paired = _paired.get((group, row, baseline))
            shown = f"{paired:5.2f}x" if paired else "    -"
            verdict = "" if goal is None or paired is None else (
                f"  (goal {goal}x: {'ok' if paired >= goal else 'MISSED'})"
            )
            writer.line(
                f"  {group:41} {row:24} vs {baseline:17} medians {medians}  paired {shown}"
                f"{verdict}"
            )


# -- benches/side_by_side.py ---------------------------------------------------------------

Row = dict[str, Any]
SIDE_BY_SIDE_ROUNDS = 5  # more than the bench: the ingest ratios swing on a loaded machine
_LABELS = {
    "engine tx": "evercore",
    "engine": "evercore",
    "raw Lua append": "raw Lua append (same version check)",
    "raw XADD pipeline": "raw pipelined XADD",
    "raw LRANGE": "raw LRANGE (no decoding)",
    "raw XRANGE": "raw XRANGE paging",
}
_FILTERED = "catch-up read, one event type of four (engine filters in Redis; raw reads all)"


def _interleaved(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median seconds of each run over ``rounds`` rounds in which the runs take turns
    (after one warm-up round), so that a shared machine's load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds + 1):
        for name, run in runs.items():
            times[name].append(run())
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def _seconds(run: Callable[[], object]) -> Callable[[], float]:
    def once() -> float:
        started = time.perf_counter()
        run()
        return time.perf_counter() - started

    return once


def _seconds_on_fresh(make: Callable[[], Any], run: Callable[[Any], None]) -> Callable[[], float]:
    """Time ``run`` alone on a store made (and dropped) outside the timing."""

    def once() -> float:
        store = make()
        try:
            return _seconds(lambda: run(store))()
        finally:
            store.drop()

    return once


def _row(workload: str, row: str, events: int, seconds: float, goals_of: str = "") -> Row:
    """One figure; a baseline row carries the goal ``GOALS`` sets in group ``goals_of``."""
    entry: Row = {"workload": workload, "implementation": _LABELS[row], "events": events,
                  "seconds": seconds}  # fmt: skip
    goal = next((g for group, ours, base, g in GOALS
                 if (group, base) == (goals_of, row) and ours in ("engine tx", "engine") and g),
                None)
    if goal is not None:
        entry["goal"] = f">= {goal}x"
    return entry


def side_by_side(events: int) -> list[Row]:
    """The figures for ``benches/side_by_side.py``: each ingest shape with ``events``
    events (contexts of 1: a twentieth of them) on a fresh store per contender and
    round, then reads of the whole workload; median seconds of the timed part, one
    row per (workload, implementation). Ours is the engine through a transaction."""
    ensure_redis()
    workload = build_workload(events)
    count = len(workload.rows)
    rows: list[Row] = []
    contenders = ("engine tx", "raw Lua append", "raw XADD pipeline")
    for shape, (size, _, _, grouped) in INGEST_SHAPES.items():
        shaped = workload.grouped() if grouped else workload
        ingested = count if size > 1 else max(1, count // 20)
        runs = {
            row: _seconds_on_fresh(INGEST_ROWS[row][1], INGEST_ROWS[row][0](shaped, size, ingested))
            for row in contenders
        }
        group = f"ingest, {shape}"
        for row, seconds in _interleaved(runs, SIDE_BY_SIDE_ROUNDS).items():
            rows.append(_row(group, row, ingested, seconds, group))
    filtered: list[Row] = []
    with loaded_stores(workload) as loaded:
        for group in dict.fromkeys(group for group, _ in _READS):
            runs = {row: _seconds(build(loaded)) for (g, row), build in _READS.items()
                    if g == group}
            medians = _interleaved(runs, SIDE_BY_SIDE_ROUNDS)
            for row, seconds in medians.items():
                if row == "engine, one type of four":
                    # Compared with the same unfiltered raw read as in the bench above.
                    filtered += (_row(_FILTERED, "engine", count, seconds),
                                 _row(_FILTERED, "raw XRANGE", count, medians["raw XRANGE"]))
                else:
                    rows.append(_row(group, row, count, seconds, group))
    return rows + filtered
