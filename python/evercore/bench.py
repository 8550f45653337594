"""The standard benchmark workloads behind ``evercore bench``, and their reports.

Each workload runs through the public facade (``evercore.connect``, contexts,
``StateAggregate``), the way an application uses the store, on every target in
turn within one run, so the figures of one report are comparable. Payloads are
about 150 bytes of JSON. The ingest and rehydrate aggregates never snapshot
(``snapshot_frequency = 0``) so that rehydration really replays every event; the
hot aggregates of the concurrent workload snapshot every 10 events, as hot
aggregates in an application would.

Workloads (keys as used by ``--workload`` and in the JSON report):

``ingest_batch``
    ``events`` events over ``aggregates`` aggregates, ``batch`` events per context.
``ingest_single``
    ``single_events`` events, one event per context (one transaction each).
``rehydrate``
    load one aggregate of ``rehydrate_events`` events into a fresh
    ``StateAggregate``, repeatedly (setup not timed).
``catchup``
    read the whole log in pages of ``page_size`` through the engine's
    ``get_events_for_subscription``, as a subscription catching up does.
``concurrent``
    ``threads`` threads append ``concurrent_events`` events to ``hot_aggregates``
    aggregates (load, apply, commit), retrying on ``ConcurrencyError``.

``benches/side_by_side.py`` reuses :func:`run_bench` and the renderers.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import IO, Any

import evercore
from evercore.errors import ConcurrencyError, ConfigurationError, EvercoreError
from evercore.registry import get_registry, redact_uri
from evercore.spi import StorageEngine, SupportsStats
from evercore.values import Subscription

# -- the benchmark's domain -------------------------------------------------------


@evercore.state_event(name="BenchDeposited")
@dataclass
class BenchDeposited:
    """The benchmark's event: about 150 bytes once serialized."""

    account: str
    amount: int
    currency: str
    memo: str


@dataclass
class BenchAccountState:
    """The state the benchmark's aggregates fold their events into."""

    account: str = ""
    amount: int = 0
    currency: str = ""
    memo: str = ""


class BenchAccount(evercore.StateAggregate[BenchAccountState]):
    """The benchmark's aggregate; it never snapshots so that a load replays every event."""

    aggregate_type = "BenchAccount"
    snapshot_frequency = 0


class HotBenchAccount(BenchAccount):
    """A benchmark aggregate under contention: it snapshots, as a hot aggregate should,
    so each retry loads a snapshot and a few events rather than the whole history."""

    snapshot_frequency = 10


_MEMO = "benchmark payload " * 5  # pads the JSON payload to about 150 bytes


def make_event(n: int) -> BenchDeposited:
    """The ``n``-th benchmark event (deterministic, about 150 bytes as JSON)."""
    return BenchDeposited(
        account=f"acct-{n % 100_000:06d}", amount=n * 7 % 100_000, currency="EUR", memo=_MEMO
    )


# -- configuration and results -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Sizes of the standard workloads."""

    events: int = 10_000
    aggregates: int = 100
    batch: int = 1_000
    single_events: int = 1_000
    rehydrate_events: int = 1_000
    concurrent_events: int = 1_000
    threads: int = 4
    hot_aggregates: int = 4
    page_size: int = 1_000

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ConfigurationError(f"bench option {name} must be >= 1, got {value}")


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one timed workload did: events handled, wall time, conflicts retried."""

    events: int
    seconds: float
    retries: int = 0


@dataclass(frozen=True, slots=True)
class WorkloadResult:
    """One workload on one target."""

    target: str
    uri: str
    workload: str
    title: str
    events: int
    seconds: float
    retries: int = 0

    @property
    def events_per_second(self) -> float:
        """Throughput; 0 when the workload took no measurable time."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class BenchTarget:
    """A store to benchmark: a column label and its URI (kept out of reports unredacted)."""

    label: str
    uri: str = field(repr=False)
    temporary: bool = False

    @property
    def display_uri(self) -> str:
        """The URI with any password hidden."""
        return redact_uri(self.uri)


@dataclass(frozen=True, slots=True)
class BenchReport:
    """Every result of one run, with the configuration and the machine it ran on."""

    config: BenchConfig
    targets: tuple[BenchTarget, ...]
    results: tuple[WorkloadResult, ...]
    environment: dict[str, str]

    def ratio(self, result: WorkloadResult) -> float | None:
        """``result``'s throughput over the first target's on the same workload."""
        first = self.targets[0].label
        for other in self.results:
            if other.workload == result.workload and other.target == first:
                base = other.events_per_second
                return result.events_per_second / base if base > 0 else None
        return None


# -- progress ------------------------------------------------------------------------


class ProgressBar:
    """A dependency-free progress bar drawn in place on a terminal.

    On a stream that is not a terminal it draws nothing while running and writes a
    single summary line when finished, so logs stay readable.
    """

    def __init__(self, label: str, total: int, stream: IO[str] | None, width: int = 24) -> None:
        self._label = label
        self._total = max(total, 1)
        self._stream = stream
        self._width = width
        self._done = 0
        self._started = time.perf_counter()
        self._last_draw = 0.0
        self._live = stream is not None and stream.isatty()
        self._lock = threading.Lock()

    def advance(self, count: int = 1) -> None:
        """Record ``count`` more units done; redraws at most ten times a second."""
        with self._lock:
            self._done += count
            now = time.perf_counter()
            if self._live and (now - self._last_draw >= 0.1 or self._done >= self._total):
                self._last_draw = now
                self._draw(now)

    def finish(self, summary: str) -> None:
        """Replace the bar with ``summary``."""
        if self._stream is None:
            return
        clear = "\r\x1b[2K" if self._live else ""
        self._stream.write(f"{clear}{self._label}  {summary}\n")
        self._stream.flush()

    def _draw(self, now: float) -> None:
        assert self._stream is not None
        fraction = min(self._done / self._total, 1.0)
        filled = int(fraction * self._width)
        rate = self._done / max(now - self._started, 1e-9)
        bar = "#" * filled + "-" * (self._width - filled)
        self._stream.write(f"\r{self._label}  [{bar}] {fraction:4.0%}  {rate:,.0f}/s")
        self._stream.flush()


Tick = Callable[[int], None]
"""Reports progress from inside a workload (units done since the last call)."""


# -- workloads -----------------------------------------------------------------------


def _create_accounts(
    store: evercore.EventStore, count: int, kind: type[BenchAccount] = BenchAccount
) -> list[BenchAccount]:
    def create(ctx: evercore.EventStoreContext) -> list[BenchAccount]:
        accounts = [kind() for _ in range(count)]
        for account in accounts:
            ctx.create_aggregate_into(account)
        return accounts

    return store.in_context(create)


def _append_round_robin(
    store: evercore.EventStore,
    accounts: Sequence[BenchAccount],
    total: int,
    per_context: int,
    tick: Tick,
) -> None:
    for start in range(0, total, per_context):
        end = min(start + per_context, total)
        with store.context() as ctx:
            for n in range(start, end):
                ctx.apply_event_to(accounts[n % len(accounts)], make_event(n))
        tick(end - start)


def _timed(run: Callable[[], int]) -> Measurement:
    started = time.perf_counter()
    events = run()
    return Measurement(events, time.perf_counter() - started)


def ingest_batch(store: evercore.EventStore, config: BenchConfig, tick: Tick) -> Measurement:
    """Ingest ``events`` events in contexts of ``batch`` events."""
    accounts = _create_accounts(store, config.aggregates)

    def run() -> int:
        _append_round_robin(store, accounts, config.events, config.batch, tick)
        return config.events

    return _timed(run)


def ingest_single(store: evercore.EventStore, config: BenchConfig, tick: Tick) -> Measurement:
    """Ingest ``single_events`` events, one context (one transaction) each."""
    accounts = _create_accounts(store, config.aggregates)

    def run() -> int:
        _append_round_robin(store, accounts, config.single_events, 1, tick)
        return config.single_events

    return _timed(run)


def rehydrate(store: evercore.EventStore, config: BenchConfig, tick: Tick) -> Measurement:
    """Load one aggregate of ``rehydrate_events`` events, enough times to total at least
    ``events`` events replayed (and at least three times)."""
    (account,) = _create_accounts(store, 1)
    _append_round_robin(store, [account], config.rehydrate_events, config.batch, lambda _: None)
    rounds = max(3, config.events // config.rehydrate_events)

    def load(ctx: evercore.EventStoreReadonlyContext) -> BenchAccount:
        fresh = BenchAccount()
        ctx.load_state_into(fresh, account.id)
        return fresh

    def run() -> int:
        for _ in range(rounds):
            loaded = store.in_readonly_context(load)
            if loaded.sequence != config.rehydrate_events:
                raise EvercoreError(
                    f"rehydrate: aggregate {account.id} loaded at sequence {loaded.sequence}, "
                    f"expected {config.rehydrate_events}"
                )
            tick(config.rehydrate_events)
        return rounds * config.rehydrate_events

    return _timed(run)


def catchup(store: evercore.EventStore, config: BenchConfig, tick: Tick) -> Measurement:
    """Read the whole global log in pages of ``page_size``, as a catching-up subscriber;
    fail if the read delivers fewer events than the store holds."""
    engine = store.storage_engine

    def run() -> int:
        cursor = Subscription(id=0, name="evercore-bench-catchup")
        read = 0
        while page := engine.get_events_for_subscription(None, cursor, config.page_size):
            if page[0].event_id <= cursor.last_event_id:
                raise EvercoreError(
                    f"catchup: event id {page[0].event_id} read after cursor {cursor.last_event_id}"
                )
            read += len(page)
            cursor = replace(cursor, last_event_id=page[-1].event_id)
            tick(len(page))
        return read

    measured = _timed(run)
    # Only a count is exact: the highest id also counts ids of rolled-back writes.
    stored = engine.get_counts(None).events if isinstance(engine, SupportsStats) else 0
    if measured.events < stored:
        # A read that stops short would make the figure meaningless; say so instead.
        raise EvercoreError(
            f"catchup: the log holds {stored:,} events but a subscription read delivered "
            f"only {measured.events:,} (is a reader held back, e.g. by a long-open "
            "transaction on the server?)"
        )
    return measured


def concurrent(store: evercore.EventStore, config: BenchConfig, tick: Tick) -> Measurement:
    """``threads`` threads append to ``hot_aggregates`` aggregates, retrying on conflicts."""
    ids = [
        account.id for account in _create_accounts(store, config.hot_aggregates, HotBenchAccount)
    ]
    retries = [0] * config.threads
    errors: list[BaseException] = []

    def append(ctx: evercore.EventStoreContext, aggregate_id: int, n: int) -> None:
        account = HotBenchAccount()
        ctx.load_state_into(account, aggregate_id)
        ctx.apply_event_to(account, make_event(n))

    def worker(index: int) -> None:
        # Each thread picks aggregates at random (seeded: runs are repeatable), so
        # threads collide on the same aggregate as often as chance has it.
        pick = random.Random(index).choice
        try:
            for n in range(index, config.concurrent_events, config.threads):
                aggregate_id = pick(ids)
                while True:
                    try:
                        store.in_context(lambda ctx: append(ctx, aggregate_id, n))  # noqa: B023
                        break
                    except ConcurrencyError:
                        retries[index] += 1
                tick(1)
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(config.threads)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise errors[0]
    return Measurement(config.concurrent_events, seconds, sum(retries))


@dataclass(frozen=True, slots=True)
class Workload:
    """A named, timed workload; ``title`` may use the config's fields (``{batch:,}``)."""

    key: str
    title: str
    size: Callable[[evercore.EventStore, BenchConfig], int]
    run: Callable[[evercore.EventStore, BenchConfig, Tick], Measurement]

    def describe(self, config: BenchConfig) -> str:
        """The title with the configuration filled in."""
        return self.title.format(**asdict(config))


WORKLOADS: tuple[Workload, ...] = (
    Workload("ingest_batch", "ingest, contexts of {batch:,}", lambda s, c: c.events, ingest_batch),
    Workload("ingest_single", "ingest, contexts of 1", lambda s, c: c.single_events, ingest_single),
    Workload(
        "rehydrate",
        "rehydrate {rehydrate_events:,}-event aggregate",
        lambda s, c: max(3, c.events // c.rehydrate_events) * c.rehydrate_events,
        rehydrate,
    ),
    Workload(
        "catchup",
        "catch-up read, pages of {page_size:,}",
        lambda s, c: s.storage_engine.get_max_event_id(None),
        catchup,
    ),
    Workload(
        "concurrent",
        "{threads} threads on {hot_aggregates} hot aggregates",
        lambda s, c: c.concurrent_events,
        concurrent,
    ),
)
"""The standard workloads, in the order they run (catch-up reads what the others wrote)."""

WORKLOAD_KEYS = tuple(w.key for w in WORKLOADS)
"""The names ``--workload`` accepts."""


# -- running -------------------------------------------------------------------------


@contextmanager
def default_targets() -> Iterator[list[BenchTarget]]:
    """The embedded defaults: memory and a temporary SQLite file (deleted afterwards)."""
    directory = tempfile.mkdtemp(prefix="evercore-bench-")
    try:
        path = os.path.join(directory, "bench.db")
        yield [
            BenchTarget("memory", "memory://"),
            BenchTarget("sqlite", f"sqlite:///{path}", temporary=True),
        ]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def targets_for(uris: Sequence[str]) -> list[BenchTarget]:
    """Targets for user-given URIs, labelled by backend name (numbered if repeated)."""
    registry = get_registry()
    names = [registry.for_uri(uri).name for uri in uris]
    return [
        BenchTarget(f"{name} #{names[:i].count(name) + 1}" if names.count(name) > 1 else name, uri)
        for i, (name, uri) in enumerate(zip(names, uris, strict=True))
    ]


def _stored_events(engine: StorageEngine) -> int:
    # A count is exact; the highest id may lag behind writers still in flight (PostgreSQL).
    if isinstance(engine, SupportsStats):
        return engine.get_counts(None).events
    return engine.get_max_event_id(None)


def _check_empty(store: evercore.EventStore, target: BenchTarget) -> None:
    existing = _stored_events(store.storage_engine)
    if existing:
        raise ConfigurationError(
            f"{target.display_uri} already holds events ({existing:,}); the benchmark "
            "writes events it never deletes, so point it at an empty store (a throwaway "
            "database, schema or key prefix) or pass --yes to write there anyway"
        )


def run_bench(
    targets: Sequence[BenchTarget],
    config: BenchConfig,
    workloads: Sequence[Workload] = WORKLOADS,
    progress: IO[str] | None = None,
    allow_non_empty: bool = False,
) -> BenchReport:
    """Run ``workloads`` on each target in turn; return every measurement.

    Each store must be empty unless ``allow_non_empty`` (every target is checked
    before any workload runs). Progress goes to ``progress`` (None: silent).
    """
    if not targets:
        raise ConfigurationError("nothing to benchmark: no store URI given")
    stores = []
    try:
        for target in targets:
            stores.append(evercore.connect(target.uri))
            if not allow_non_empty:
                _check_empty(stores[-1], target)
        results = [
            _run_one(target, store, workload, config, progress)
            for target, store in zip(targets, stores, strict=True)
            for workload in workloads
        ]
    finally:
        for store in stores:
            store.close()
    return BenchReport(config, tuple(targets), tuple(results), environment())


def _run_one(
    target: BenchTarget,
    store: evercore.EventStore,
    workload: Workload,
    config: BenchConfig,
    progress: IO[str] | None,
) -> WorkloadResult:
    label = f"{target.label:<12} {workload.describe(config):<38}"
    bar = ProgressBar(label, workload.size(store, config), progress)
    measured = workload.run(store, config, bar.advance)
    result = WorkloadResult(
        target.label,
        target.display_uri,
        workload.key,
        workload.describe(config),
        measured.events,
        measured.seconds,
        measured.retries,
    )
    bar.finish(f"{result.events:>9,} events  {result.events_per_second:>12,.0f} events/s")
    return result


def environment() -> dict[str, str]:
    """Where the figures were measured: Python, platform, CPUs, kernels in use."""
    from evercore import _kernels

    try:
        from importlib.metadata import version

        evercore_version = version("evercore")
    except Exception:  # not installed as a distribution (e.g. a source checkout)
        evercore_version = "unknown"
    return {
        "evercore": evercore_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count() or 0),
        "kernels": "pure-python" if _kernels.PURE_PYTHON else "rust",
    }


# -- reports -------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table; the first column is left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        parts = [first.ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(rest, widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def _comparison(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: one row per workload, one events/s column per target."""
    first = report.targets[0].label
    headers = ["workload", *(f"{t.label} events/s" for t in report.targets)]
    rows: list[list[str]] = []
    for title in dict.fromkeys(r.title for r in report.results):
        by_target = {r.target: r for r in report.results if r.title == title}
        row = [title]
        for target in report.targets:
            result = by_target.get(target.label)
            if result is None:
                row.append("-")
                continue
            cell = f"{result.events_per_second:,.0f}"
            ratio = report.ratio(result)
            if target.label != first and ratio is not None:
                cell += f" ({format_ratio(ratio)})"
            row.append(cell)
        rows.append(row)
    return headers, rows


def format_ratio(ratio: float) -> str:
    """``1.23x``; two significant figures below 0.1 so that small ratios stay readable."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def render_text(report: BenchReport) -> str:
    """The comparison table for a terminal, with the URIs and the ratio basis."""
    headers, rows = _comparison(report)
    legend = [f"  {t.label}: {t.display_uri}{_temporary(t)}" for t in report.targets]
    notes = []
    if len(report.targets) > 1:
        notes.append(f"(x) = events/s relative to {report.targets[0].label}")
    notes += _retries(report)
    return "\n".join([format_table(headers, rows), "", *notes, *legend])


def _retries(report: BenchReport) -> list[str]:
    """A note on conflicts retried, when a workload had any."""
    counts = [f"{r.target} {r.retries:,}" for r in report.results if r.workload == "concurrent"]
    if not any(r.retries for r in report.results):
        return []
    return [f"conflicts retried in the concurrent workload: {', '.join(counts)}"]


def _temporary(target: BenchTarget) -> str:
    return " (temporary, removed after the run)" if target.temporary else ""


def render_markdown(report: BenchReport, command: str | None = None) -> str:
    """The comparison table as Markdown, with how and where it was measured."""
    headers, rows = _comparison(report)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" + "---:|" * (len(headers) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    env = ", ".join(f"{k} {v}" for k, v in report.environment.items())
    footer = [f"Measured in one run ({env})."]
    if len(report.targets) > 1:
        footer.append(f"Ratios are events/s relative to {report.targets[0].label}.")
    footer += [f"{note[0].upper()}{note[1:]}." for note in _retries(report)]
    if command:
        footer.append(f"Command: `{command}`")
    stores = ", ".join(f"{t.label} = `{t.display_uri}`{_temporary(t)}" for t in report.targets)
    return "\n".join([*lines, "", *footer, f"Stores: {stores}.", ""])


def render_json(report: BenchReport) -> str:
    """The whole report as JSON (configuration, environment, one record per result)."""
    records = [
        {
            **asdict(result),
            "events_per_second": result.events_per_second,
            "ratio_to_first": report.ratio(result),
        }
        for result in report.results
    ]
    document = {
        "config": asdict(report.config),
        "environment": report.environment,
        "targets": [{"label": t.label, "uri": t.display_uri} for t in report.targets],
        "results": records,
    }
    return json.dumps(document, indent=2) + "\n"


def render_plot(report: BenchReport, path: str) -> None:
    """Save a grouped bar chart of events/s (log scale) to ``path``; needs matplotlib."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        raise ConfigurationError(
            f"--plot {path} needs matplotlib: pip install 'evercore[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only: never needs a display
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    titles = list(dict.fromkeys(r.title for r in report.results))
    width = 0.8 / len(report.targets)
    figure, axes = pyplot.subplots(figsize=(max(6.0, 1.6 * len(titles)), 4.5))
    for index, target in enumerate(report.targets):
        eps = {r.title: r.events_per_second for r in report.results if r.target == target.label}
        offset = (index - (len(report.targets) - 1) / 2) * width
        positions = [i + offset for i in range(len(titles))]
        values = [eps.get(t, 0.0) for t in titles]
        bars = axes.bar(positions, values, width, label=target.label)
        axes.bar_label(bars, labels=[_compact(v) for v in values], fontsize=7, padding=2)
    axes.set_xticks(range(len(titles)), titles, rotation=20, ha="right")
    axes.set_yscale("log")
    axes.set_ylabel("events/s (log scale)")
    axes.set_title("evercore bench")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def _compact(value: float) -> str:
    """``value`` in three significant figures with a k/M suffix (bar labels)."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` (``-`` means standard output)."""
    if path == "-":
        sys.stdout.write(text)
        return
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


__all__ = [
    "WORKLOADS",
    "WORKLOAD_KEYS",
    "BenchAccount",
    "BenchAccountState",
    "BenchConfig",
    "BenchDeposited",
    "BenchReport",
    "BenchTarget",
    "HotBenchAccount",
    "Measurement",
    "ProgressBar",
    "Workload",
    "WorkloadResult",
    "catchup",
    "concurrent",
    "default_targets",
    "environment",
    "format_ratio",
    "format_table",
    "ingest_batch",
    "ingest_single",
    "make_event",
    "rehydrate",
    "render_json",
    "render_markdown",
    "render_plot",
    "render_text",
    "run_bench",
    "targets_for",
    "write_text",
]
