"""Run every side-by-side comparison in one run and write the figures the README shows.

    .venv/bin/python benches/side_by_side.py                  # 100,000 events (slow)
    .venv/bin/python benches/side_by_side.py --events 20000   # quicker
    (or: make bench-all)

Part 1 runs the standard ``evercore bench`` workloads (:mod:`evercore.bench`) on every
installed backend in turn: memory, a temporary SQLite file, and, when their plugins
are installed and their servers answer, PostgreSQL in a throwaway schema and Redis
under a throwaway key prefix (both removed afterwards).

Part 2 runs each backend's comparison against raw drivers and other libraries. A
module ``benches/bench_<backend>.py`` takes part by defining::

    def side_by_side(events: int) -> list[dict[str, object]]

returning one dict per measurement, with the keys

* ``"workload"`` (str): what was measured, e.g. ``"ingest, contexts of 1,000"``;
  rows with the same workload are compared with each other;
* ``"implementation"`` (str): ``"evercore"`` for ours, else what it is, e.g.
  ``"raw psycopg binary COPY"`` or ``"eventsourcing 9.5.6"``;
* ``"events"`` (int) and ``"seconds"`` (float): the timed part only;
* ``"goal"`` (str, optional, on a non-evercore row): the target for evercore's
  events/s over this row's, as ``">= 0.8x"``; the report says whether it was met.

``events`` is the ingest size (the backend issues use 100,000 over 1,000
aggregates, ~150-byte payloads: :func:`evercore.bench.make_event` makes them). The
function runs everything in this one process, against its own throwaway schema,
database or key prefix, and cleans up after itself. Each module's figures are
compared only with each other, never across machines or runs.

The report goes to ``benches/RESULTS.md`` (``--output``), and as JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
import socket
import sys
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from evercore import bench
from evercore.registry import get_registry, redact_uri

HERE = Path(__file__).resolve().parent
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"

Row = dict[str, Any]


# -- part 1: evercore bench on every backend ---------------------------------------------


def _reachable(uri: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), 2.0):
            return True
    except OSError:
        return False


@contextmanager
def _postgres_target(base: str) -> Iterator[bench.BenchTarget]:
    import psycopg
    from psycopg import sql

    schema = f"evercore_bench_{uuid.uuid4().hex[:8]}"
    try:
        yield bench.BenchTarget("postgresql", f"{base}?schema={schema}")
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def _redis_target(base: str) -> Iterator[bench.BenchTarget]:
    import redis

    prefix = f"evercore-bench-{uuid.uuid4().hex[:8]}"
    try:
        yield bench.BenchTarget("redis", f"{base}?prefix={prefix}")
    finally:
        client = redis.Redis.from_url(base)
        try:
            keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
            for start in range(0, len(keys), 1000):
                client.delete(*keys[start : start + 1000])
        finally:
            client.close()


def _server_targets(
    stack: ExitStack, postgres: str, redis_uri: str, log: Callable[[str], None]
) -> list[bench.BenchTarget]:
    schemes = set(get_registry().schemes())
    wanted = [
        ("postgresql", postgres, _postgres_target),
        ("redis", redis_uri, _redis_target),
    ]
    targets = []
    for scheme, base, make in wanted:
        if scheme not in schemes:
            log(f"skipping {scheme}: its plugin is not installed")
        elif not _reachable(base):
            log(f"skipping {scheme}: {redact_uri(base)} does not answer")
        else:
            targets.append(stack.enter_context(make(base)))
    return targets


def cross_backend(
    events: int, postgres: str, redis_uri: str, log: Callable[[str], None]
) -> bench.BenchReport:
    """The standard workloads on every installed, reachable backend, in one run."""
    config = bench.BenchConfig(
        events=events,
        aggregates=1_000,
        single_events=max(events // 10, 1),
        concurrent_events=max(events // 20, 1),
    )
    with ExitStack() as stack:
        targets = stack.enter_context(bench.default_targets())
        targets += _server_targets(stack, postgres, redis_uri, log)
        return bench.run_bench(targets, config, progress=sys.stderr)


# -- part 2: each backend against raw drivers and other libraries -------------------------


def _load(path: Path) -> ModuleType:
    # Imported by its plain name from its own folder, as ``python benches/bench_x.py``
    # would see it, so that worker processes it spawns can import it again (spawned
    # children inherit sys.path); the repository root makes ``tests.services`` and
    # friends importable.
    for folder in (str(path.parent), str(HERE.parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    return importlib.import_module(path.stem)


_GOAL = re.compile(r"^\s*>=\s*([0-9.]+)\s*x\s*$")


def _goal_verdict(goal: str | None, ratio: float | None) -> str:
    match = _GOAL.match(goal or "")
    if match is None or ratio is None:
        return goal or ""
    return f"{goal} {'met' if ratio >= float(match.group(1)) else 'MISSED'}"


def render_comparison(name: str, rows: Sequence[Row]) -> str:
    """One backend's comparison as Markdown: per workload, each implementation's events/s
    and evercore's events/s over it."""
    lines = [
        f"### {name}",
        "",
        "| workload | implementation | events | events/s | evercore ÷ this | goal |",
        "|---|---|---:|---:|---:|---|",
    ]
    for workload in dict.fromkeys(str(r["workload"]) for r in rows):
        group = [r for r in rows if r["workload"] == workload]
        ours = next((r for r in group if r["implementation"] == "evercore"), None)
        ours_eps = _eps(ours) if ours is not None else None
        for row in group:
            eps = _eps(row)
            mine = row is ours
            ratio = ours_eps / eps if ours_eps is not None and eps > 0 and not mine else None
            lines.append(
                f"| {workload} | {row['implementation']} | {int(row['events']):,} | {eps:,.0f} | "
                f"{'' if ratio is None else bench.format_ratio(ratio)} | "
                f"{'' if mine else _goal_verdict(row.get('goal'), ratio)} |"
            )
    return "\n".join(lines)


def _eps(row: Row) -> float:
    seconds = float(row["seconds"])
    return int(row["events"]) / seconds if seconds > 0 else 0.0


def run_comparisons(
    events: int, log: Callable[[str], None], directory: Path = HERE
) -> dict[str, list[Row] | str]:
    """Each ``bench_<backend>.py`` module's rows, or the one-line reason it failed (the
    others still run). Modules without ``side_by_side`` are left out."""
    outcomes: dict[str, list[Row] | str] = {}
    for path in sorted(directory.glob("bench_*.py")):
        name = path.stem.removeprefix("bench_")
        try:
            compare = getattr(_load(path), "side_by_side", None)
            if not callable(compare):
                continue
            log(f"running the {name} comparison ({events:,} events)")
            outcomes[name] = list(compare(events))
        except Exception as exc:  # one backend's failure must not lose the others' figures
            traceback.print_exc()
            outcomes[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return outcomes


# -- the report ----------------------------------------------------------------------------


def render_results(
    report: bench.BenchReport,
    comparisons: dict[str, list[Row] | str],
    command: str,
    directory: Path = HERE,
) -> str:
    """The whole RESULTS.md."""
    parts = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` in one run on one machine; compare figures only within "
        "this file.",
        "",
        "## Backends side by side (`evercore bench` workloads)",
        "",
        bench.render_markdown(report),
        "## Each backend against raw drivers and other libraries",
        "",
    ]
    if not comparisons:
        parts += ["(no `benches/bench_<backend>.py` defines `side_by_side` yet)", ""]
    for name, outcome in comparisons.items():
        if isinstance(outcome, str):
            parts += [f"### {name}", "", f"Failed: {outcome}", ""]
        else:
            parts += [render_comparison(name, outcome), ""]
    others = [
        f"`{path.name}`"
        for path in sorted(directory.glob("bench_*.py"))
        if path.stem.removeprefix("bench_") not in comparisons
    ]
    if others:
        parts += [
            f"Not in this run (no `side_by_side`; run them directly): {', '.join(others)}.",
            "",
        ]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """Run both parts; write the Markdown report (and JSON if asked)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="ingest size per backend")
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"), help="Markdown report")
    parser.add_argument("--json", help="also write every figure as JSON to this file")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="server for part 1")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="server for part 1")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f"side_by_side: {message}", file=sys.stderr)

    command = " ".join(["python benches/side_by_side.py", *map(shlex.quote, argv or sys.argv[1:])])
    report = cross_backend(args.events, args.postgres, args.redis, log)
    print(bench.render_text(report))
    comparisons = run_comparisons(args.events, log)
    Path(args.output).write_text(render_results(report, comparisons, command), encoding="utf-8")
    log(f"wrote {args.output}")
    if args.json:
        document = {"backends": json.loads(bench.render_json(report)), "comparisons": comparisons}
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 1 if any(isinstance(o, str) for o in comparisons.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
