"""The whole ingest path on the memory engine, with the Rust core and with the
pure-Python twins, and the ``eventsourcing`` library's in-memory (POPO)
persistence on the same workload, measured in the same run.

Workload: 100,000 events of about 150 bytes of JSON each, over 1,000 aggregates,
written by 100 contexts (transactions) of 1,000 events: each context creates 10
aggregates and applies 100 events to each (the user builds each event's payload
object, as an application does). No snapshots, as ``eventsourcing`` takes none
by default.

Run ``.venv/bin/python benches/bench_ingest.py`` (about two minutes): it
interleaves the runners' rounds, times them in CPU time (fair on a busy machine),
prints the ratios and a cProfile summary of the Rust-core run. Under pytest-benchmark:
``.venv/bin/pytest benches/bench_ingest.py --benchmark-timer time.process_time``;
the ratios are printed at the end.

The twins are switched in by rebinding the kernels of :mod:`evercore._kernels`
(and the memory engine's imported ``filter_events``), which is what
``EVERCORE_PURE_PYTHON=1`` does at import time: every call site on this path reads
the kernel from ``evercore._kernels`` when it runs. As a check on that swap, the
pure-Python ingest also runs in a subprocess started with ``EVERCORE_PURE_PYTHON=1``
(the switch itself), timed there with the same clock; both ratios are printed.
"""

from __future__ import annotations

import contextlib
import cProfile
import dataclasses
import importlib
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

import evercore
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate as EsAggregate
from eventsourcing.domain import event as es_event
from evercore import StateAggregate, _core, _kernels, _pure

EVENTS = 100_000
CONTEXT_EVENTS = 1_000
AGGREGATES_PER_CONTEXT = 10
EVENTS_PER_AGGREGATE = CONTEXT_EVENTS // AGGREGATES_PER_CONTEXT
CONTEXTS = EVENTS // CONTEXT_EVENTS
AT = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
TAGS = ("payroll", "monthly")


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
    """An account, without snapshots (like the ``eventsourcing`` side)."""

    snapshot_frequency = 0


def ingest_evercore(store: evercore.EventStore) -> None:
    """Write the workload through the facade, one context per 1,000 events."""
    for context_number in range(CONTEXTS):
        with store.context() as ctx:
            for a in range(AGGREGATES_PER_CONTEXT):
                agg = AccountAggregate()
                ctx.create_aggregate_into(agg)
                name = f"account-{context_number * AGGREGATES_PER_CONTEXT + a:05d}"
                for i in range(EVENTS_PER_AGGREGATE):
                    payload = Deposited(
                        name, i * 0.25, "EUR", "salary for November", AT, list(TAGS)
                    )
                    ctx.apply_event_to(agg, payload)


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


def ingest_eventsourcing(app: Application) -> None:
    """The same workload: 10 new aggregates of 100 events saved together per context."""
    for context_number in range(CONTEXTS):
        accounts = []
        for a in range(AGGREGATES_PER_CONTEXT):
            account = EsAccount(f"account-{context_number * AGGREGATES_PER_CONTEXT + a:05d}")
            for i in range(EVENTS_PER_AGGREGATE - 1):  # the creation is the first event
                account.deposit(i * 0.25, "EUR", "salary for November", AT, list(TAGS))
            accounts.append(account)
        app.save(*accounts)


@contextlib.contextmanager
def kernels(kind: str) -> Iterator[None]:
    """Run the block on the Rust kernels ("rust") or on their twins ("pure")."""
    from evercore.engines.memory import engine as memory_engine

    source = _core if kind == "rust" else _pure
    names = [name for name in _kernels.__all__ if name != "PURE_PYTHON"]
    saved = {name: getattr(_kernels, name) for name in names}
    saved_flag, saved_filter = _kernels.PURE_PYTHON, memory_engine.filter_events
    try:
        for name in names:
            setattr(_kernels, name, getattr(source, name))
        _kernels.PURE_PYTHON = kind == "pure"
        memory_engine.filter_events = source.filter_events
        yield
    finally:
        for name, kernel in saved.items():
            setattr(_kernels, name, kernel)
        _kernels.PURE_PYTHON, memory_engine.filter_events = saved_flag, saved_filter


def run_evercore(kind: str) -> evercore.EventStore:
    """One full ingest into a fresh memory store; returns the store."""
    with kernels(kind):
        store = evercore.connect("memory://")
        ingest_evercore(store)
        return store


def run_eventsourcing() -> Application:
    """One full ingest into a fresh ``eventsourcing`` application (POPO persistence)."""
    app = Application()
    ingest_eventsourcing(app)
    return app


RUNNERS: dict[str, Callable[[], object]] = {
    "evercore memory, Rust core": lambda: run_evercore("rust"),
    "evercore memory, pure Python": lambda: run_evercore("pure"),
    "eventsourcing POPO": run_eventsourcing,
}
_medians: dict[str, float] = {}

PURE_SUBPROCESS = "evercore memory, pure (subprocess)"
"""The row of the pure-Python ingest run under ``EVERCORE_PURE_PYTHON=1`` in a subprocess."""


def run_pure_in_subprocess(rounds: int, timer: str) -> list[float]:
    """Seconds of ``rounds`` ingests (after a warm-up) in a fresh interpreter started
    with ``EVERCORE_PURE_PYTHON=1``, timed there with ``timer`` ("module.function")."""
    completed = subprocess.run(
        [sys.executable, __file__, "--pure-child", str(rounds), timer],
        env={**os.environ, "EVERCORE_PURE_PYTHON": "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the pure-Python subprocess failed:\n{completed.stderr}")
    times: list[float] = json.loads(completed.stdout)
    return times


def pure_child(rounds: int, timer_name: str) -> None:
    """The subprocess: ingest on the kernels chosen at import and print the times as JSON."""
    if not _kernels.PURE_PYTHON or _kernels.encode_events is not _pure.encode_events:
        raise SystemExit("EVERCORE_PURE_PYTHON=1 did not switch the kernels to the twins")
    module, _, name = timer_name.rpartition(".")
    timer: Callable[[], float] = getattr(importlib.import_module(module), name)
    times = []
    for round_number in range(rounds + 1):  # the first is a warm-up
        start = timer()
        store = evercore.connect("memory://")
        ingest_evercore(store)
        elapsed = timer() - start
        assert store.storage_engine.get_max_event_id(None) == EVENTS
        store.close()
        if round_number:
            times.append(elapsed)
    print(json.dumps(times))


def report_lines(medians: dict[str, float]) -> list[str]:
    """Throughputs and the three ratios the project's goals are stated in."""
    lines = [f"Ingest of {EVENTS:,} events (medians):"]
    for name, seconds in medians.items():
        lines.append(f"  {name:32} {EVENTS / seconds:12,.0f} events/s")
    rust = medians.get("evercore memory, Rust core")
    pure = medians.get("evercore memory, pure Python")
    other = medians.get("eventsourcing POPO")
    if rust and pure:
        lines.append(f"  Rust core vs pure Python:           {pure / rust:5.2f}x  (goal >= 2x)")
    if rust and other:
        lines.append(f"  evercore (Rust) vs eventsourcing:   {other / rust:5.2f}x  (goal >= 5x)")
    pure_subprocess = medians.get(PURE_SUBPROCESS)
    if rust and pure_subprocess:
        lines.append(
            f"  Rust core vs pure (subprocess):     {pure_subprocess / rust:5.2f}x  (goal >= 2x)"
        )
    return lines


@pytest.fixture(scope="module", autouse=True)
def ratio_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the ratios once every benchmark of the module has run."""
    yield
    # Teardown output is captured unless capturing is switched off around it.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        _write_report(request.config.get_terminal_writer())


def _write_report(writer: Any) -> None:
    """Write the measured ratios to the terminal."""
    writer.line()
    for line in report_lines(_medians):
        writer.line(line)


@pytest.mark.parametrize("name", list(RUNNERS))
def test_ingest(benchmark: Any, name: str) -> None:
    benchmark.group = "ingest 100,000 events"
    result = benchmark.pedantic(RUNNERS[name], rounds=3, warmup_rounds=1)
    if isinstance(result, evercore.EventStore):
        assert result.storage_engine.get_max_event_id(None) == EVENTS
        result.close()
    _medians[name] = benchmark.stats.stats.median


def test_ingest_pure_in_a_subprocess(request: pytest.FixtureRequest) -> None:
    """The pure-Python row again, under the real switch; timed in the child with the
    clock pytest-benchmark uses, so that the ratio compares like with like."""
    timer = str(request.config.getoption("benchmark_timer"))
    _medians[PURE_SUBPROCESS] = statistics.median(run_pure_in_subprocess(3, timer))


def main(rounds: int = 5) -> None:
    """Measure every runner and profile the Rust-core run.

    Rounds of the three runners are interleaved and timed in CPU time, so that
    other load on the machine skews them alike; the medians are reported.
    """
    times: dict[str, list[float]] = {name: [] for name in RUNNERS}
    for runner in RUNNERS.values():
        runner()  # warm-up
    for _ in range(rounds):
        for name, runner in RUNNERS.items():
            start = time.process_time()
            runner()
            times[name].append(time.process_time() - start)
    times[PURE_SUBPROCESS] = run_pure_in_subprocess(rounds, "time.process_time")
    print("\n".join(report_lines({name: statistics.median(t) for name, t in times.items()})))
    profile = cProfile.Profile()
    profile.runcall(run_evercore, "rust")
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(15)
    print(out.getvalue())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pure-child"]:
        pure_child(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(main())
