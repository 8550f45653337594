"""SQLite engine: several processes on one file, and a writer killed mid-context.

Workers are spawned (not forked) processes that open the file themselves, as
separate programs would.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evercore.engines.sqlite.engine import open_sqlite_engine
from evercore.errors import ConcurrencyError
from evercore.values import StorageEngineEvent, Subscription

T0 = datetime(2025, 6, 7, 8, 9, 10, 111213, tzinfo=timezone.utc)
WRITERS = 4
CONTEXTS = 60
EVENTS_PER_CONTEXT = 8
ROUNDS = 6


def _uri(path: Path) -> str:
    return f"sqlite:///{path}"


def _event(aggregate_id: int, sequence: int, type_id: int, state: str) -> StorageEngineEvent:
    return StorageEngineEvent(aggregate_id, sequence, type_id, state, T0, "")


def _prepared(path: Path) -> tuple[int, int]:
    engine = open_sqlite_engine(_uri(path))
    engine.migrate()
    types = engine.get_aggregate_type_id(None, "order"), engine.get_event_type_id(None, "placed")
    engine.close()
    return types


# -- worker processes (module level so that spawn can import them) ---------------------------
def _write_contexts(uri: str, worker: int, type_id: int, event_type: int, barrier: Any) -> None:
    engine = open_sqlite_engine(uri)
    barrier.wait(60)  # start together, so that the writers really contend
    for context in range(CONTEXTS):
        tx = engine.get_transaction_info()
        aggregate_id = engine.new_aggregate(tx, type_id)
        state = f'{{"worker":{worker},"context":{context}}}'
        events = [
            _event(aggregate_id, s, event_type, state) for s in range(1, EVENTS_PER_CONTEXT + 1)
        ]
        engine.write_state(tx, events, [])
        tx.commit()
        time.sleep(0.001)  # the application's own work between contexts
    engine.close()


def _race(
    uri: str, worker: int, aggregate_id: int, event_type: int, barrier: Any, results: Any
) -> None:
    engine = open_sqlite_engine(uri)
    for round_ in range(ROUNDS):
        tx = engine.get_transaction_info()
        sequence = len(engine.get_events_for_aggregate(tx, aggregate_id, 0)) + 1
        barrier.wait(30)  # everyone has read the same sequence: now all append it
        try:
            engine.write_state(tx, [_event(aggregate_id, sequence, event_type, str(worker))], [])
            tx.commit()
            results.put((round_, worker, "won", sequence))
        except ConcurrencyError as exc:
            tx.rollback()
            results.put((round_, worker, "conflict", exc.sequence))
        barrier.wait(30)
    engine.close()


def _run_workers(target: Any, args_of: Any) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=args_of(w)) for w in range(WRITERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * WRITERS


# -- tests ----------------------------------------------------------------------------------
def test_processes_writing_one_file_get_gap_free_ids_and_whole_contexts(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    type_id, event_type = _prepared(path)
    reader = open_sqlite_engine(_uri(path))
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WRITERS)
    processes = [
        context.Process(target=_write_contexts, args=(_uri(path), w, type_id, event_type, barrier))
        for w in range(WRITERS)
    ]
    for process in processes:
        process.start()
    # Follow the log while the writers run, as a subscription would: a gap (an id
    # skipped because a lower one committed later) would be missing for good.
    seen: list[int] = []
    total = WRITERS * CONTEXTS * EVENTS_PER_CONTEXT
    deadline = time.monotonic() + 120
    while len(seen) < total and time.monotonic() < deadline:
        cursor = Subscription(id=0, name="follower", last_event_id=seen[-1] if seen else 0)
        batch = reader.get_events_for_subscription(None, cursor, 50)
        seen.extend(e.event_id for e in batch)
        if not batch:
            time.sleep(0.005)
    for process in processes:
        process.join(120)
    assert [p.exitcode for p in processes] == [0] * WRITERS
    assert seen == list(range(1, total + 1))
    log = reader.get_events_for_subscription(None, Subscription(id=0, name="all"), total + 1)
    reader.close()
    assert len(log) == total
    # One writer at a time: every context's events are one block of consecutive ids.
    for start in range(0, total, EVENTS_PER_CONTEXT):
        block = log[start : start + EVENTS_PER_CONTEXT]
        assert len({(e.aggregate_id, e.state) for e in block}) == 1
        assert [e.sequence for e in block] == list(range(1, EVENTS_PER_CONTEXT + 1))
    assert len({e.state for e in log}) == WRITERS * CONTEXTS
    # The writers did overlap: their contexts interleave in the log.
    workers = [e.state.split(",")[0] for e in log[::EVENTS_PER_CONTEXT]]
    switches = sum(1 for a, b in itertools.pairwise(workers) if a != b)
    assert switches > WRITERS, workers


def test_racing_processes_on_one_aggregate_get_concurrency_errors(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    type_id, event_type = _prepared(path)
    engine = open_sqlite_engine(_uri(path))
    aggregate_id = engine.new_aggregate(None, type_id)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(WRITERS), context.Queue()
    _run_workers(_race, lambda w: (_uri(path), w, aggregate_id, event_type, barrier, results))
    outcomes = [results.get(timeout=10) for _ in range(WRITERS * ROUNDS)]
    for round_ in range(ROUNDS):
        this_round = [o for o in outcomes if o[0] == round_]
        # Everyone appended the same sequence: exactly one wins, the rest conflict on it.
        assert sorted(o[2] for o in this_round) == ["conflict"] * (WRITERS - 1) + ["won"]
        assert {o[3] for o in this_round} == {round_ + 1}
    stored = engine.get_events_for_aggregate(None, aggregate_id, 0)
    engine.close()
    assert [e.sequence for e in stored] == list(range(1, ROUNDS + 1))
    winners = {o[3]: str(o[1]) for o in outcomes if o[2] == "won"}
    assert [e.state for e in stored] == [winners[s] for s in range(1, ROUNDS + 1)]


_BIG_CONTEXT = """
import sys, time
from datetime import datetime, timezone
from evercore.engines.sqlite.engine import open_sqlite_engine
from evercore.values import StorageEngineEvent

path, commit = sys.argv[1], sys.argv[2] == "commit"
engine = open_sqlite_engine("sqlite:///" + path, cache_size=256)
type_id = engine.get_aggregate_type_id(None, "order")
event_type = engine.get_event_type_id(None, "placed")
tx = engine.get_transaction_info()
aggregate_id = engine.new_aggregate(tx, type_id)
now = datetime.now(timezone.utc)
payload = '{"line":"' + "x" * 150 + '"}'
events = [
    StorageEngineEvent(aggregate_id, s, event_type, payload, now, "")
    for s in range(1, 300_001)
]
print("writing", flush=True)
engine.write_state(tx, events, [])
if commit:
    tx.commit()
    print("committed", flush=True)
else:
    print("written", flush=True)
time.sleep(60)
"""


def _start_big_context(path: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _BIG_CONTEXT, str(path), mode],
        stdout=subprocess.PIPE,
        text=True,
    )


def _wal_size(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


def _check_after_crash(path: Path, expected_events: int) -> None:
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    engine = open_sqlite_engine(_uri(path))
    try:
        assert engine.get_counts(None).events == expected_events
        assert engine.get_max_event_id(None) == expected_events
        # The store goes on: the next event gets the next id, no gap left behind.
        type_id = engine.get_aggregate_type_id(None, "order")
        event_type = engine.get_event_type_id(None, "placed")
        aggregate_id = engine.new_aggregate(None, type_id)
        engine.write_state(None, [_event(aggregate_id, 1, event_type, "{}")], [])
        assert engine.get_max_event_id(None) == expected_events + 1
    finally:
        engine.close()


def test_sigkill_in_the_middle_of_a_large_context_keeps_none_of_it(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    _prepared(path)
    child = _start_big_context(path, "keep-open")
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "writing"
    start_size = _wal_size(path)
    # Kill once uncommitted pages have spilled into the WAL: mid-insert.
    deadline = time.monotonic() + 60
    while _wal_size(path) < start_size + 4_000_000 and time.monotonic() < deadline:
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    assert child.returncode == -signal.SIGKILL
    assert _wal_size(path) > start_size + 4_000_000, "the kill came before the context was written"
    assert child.stdout.read() == "", "the kill came after write_state returned"
    _check_after_crash(path, expected_events=0)


def test_sigkill_right_after_commit_keeps_the_whole_context(tmp_path: Path) -> None:
    path = tmp_path / "committed.db"
    _prepared(path)
    child = _start_big_context(path, "commit")
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "writing"
    assert child.stdout.readline().strip() == "committed"
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    _check_after_crash(path, expected_events=300_000)
