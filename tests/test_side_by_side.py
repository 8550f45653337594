"""``benches/side_by_side.py``: the cross-backend run cleans up after itself, and the
comparison modules' rows become the report (budget: a few seconds)."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
import redis
from evercore import bench

from tests.services import ensure_postgres, ensure_redis
from tests.throwaway import POSTGRES_BASE, REDIS_BASE

SCRIPT = Path(__file__).resolve().parent.parent / "benches" / "side_by_side.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("side_by_side_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _restore_imports(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The script puts bench folders on sys.path and imports modules: undo both."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("bench_"):
            del sys.modules[name]


def _leftovers() -> tuple[list[str], list[bytes]]:
    with psycopg.connect(POSTGRES_BASE) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'evercore\\_bench\\_%'"
        ).fetchall()
    client = redis.Redis.from_url(REDIS_BASE)
    keys = list(client.scan_iter(match="{evercore-bench-*", count=1000))
    client.close()
    return [r[0] for r in rows], keys


def test_cross_backend_runs_every_backend_and_leaves_nothing_behind() -> None:
    ensure_postgres()
    ensure_redis()
    side_by_side = _script()
    messages: list[str] = []
    report = side_by_side.cross_backend(200, POSTGRES_BASE, REDIS_BASE, messages.append)
    assert [t.label for t in report.targets] == ["memory", "sqlite", "postgresql", "redis"]
    assert messages == []
    catchups = {r.target: r.events for r in report.results if r.workload == "catchup"}
    # 200 ingested in batches, 20 one by one, a 1,000-event aggregate for rehydration
    assert catchups == dict.fromkeys(catchups, 1220) and len(catchups) == 4
    assert _leftovers() == ([], [])


def test_comparison_modules_become_the_report(tmp_path: Path) -> None:
    (tmp_path / "bench_good.py").write_text(
        textwrap.dedent(
            """
            def side_by_side(events):
                return [
                    {"workload": "ingest", "implementation": "evercore",
                     "events": events, "seconds": 1.0},
                    {"workload": "ingest", "implementation": "raw COPY",
                     "events": events, "seconds": 0.5, "goal": ">= 0.8x"},
                    {"workload": "ingest", "implementation": "eventsourcing",
                     "events": events, "seconds": 4.0, "goal": ">= 3x"},
                ]
            """
        )
    )
    (tmp_path / "bench_broken.py").write_text("def side_by_side(events):\n    1 / 0\n")
    (tmp_path / "bench_plain.py").write_text("def test_something():\n    pass\n")
    side_by_side = _script()
    outcomes = side_by_side.run_comparisons(1000, lambda message: None, tmp_path)
    assert set(outcomes) == {"good", "broken"}
    assert outcomes["broken"] == "ZeroDivisionError: division by zero"

    text = side_by_side.render_comparison("good", outcomes["good"])
    lines = text.splitlines()
    assert lines[4] == "| ingest | evercore | 1,000 | 1,000 |  |  |"
    assert lines[5] == "| ingest | raw COPY | 1,000 | 2,000 | 0.50x | >= 0.8x MISSED |"
    assert lines[6] == "| ingest | eventsourcing | 1,000 | 250 | 4.00x | >= 3x met |"

    target = bench.BenchTarget("memory", "memory://")
    result = bench.WorkloadResult("memory", "memory://", "catchup", "catch-up", 10, 1.0)
    report = bench.BenchReport(bench.BenchConfig(), (target,), (result,), bench.environment())
    page = side_by_side.render_results(report, outcomes, "python side_by_side.py", tmp_path)
    assert page.startswith("# Benchmark results\n\nProduced by `python side_by_side.py`")
    assert "| catch-up | 10 |" in page
    assert "### broken\n\nFailed: ZeroDivisionError: division by zero" in page
    assert text in page
    assert "Not in this run (no `side_by_side`; run them directly): `bench_plain.py`." in page


def test_comparison_modules_may_define_dataclasses(tmp_path: Path) -> None:
    (tmp_path / "bench_typed.py").write_text(
        textwrap.dedent(
            """
            from __future__ import annotations
            import dataclasses

            @dataclasses.dataclass
            class Row:
                events: int

            def side_by_side(events):
                row = Row(events)
                return [{"workload": "w", "implementation": "evercore",
                         "events": row.events, "seconds": 1.0}]
            """
        )
    )
    outcomes = _script().run_comparisons(10, lambda message: None, tmp_path)
    assert outcomes == {
        "typed": [{"workload": "w", "implementation": "evercore", "events": 10, "seconds": 1.0}]
    }
