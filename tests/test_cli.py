"""The ``evercore`` command line: help, exit codes, one-line errors, and each command
against real stores (memory in-process, SQLite files). Budget: under 30 seconds."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import evercore
import pytest
from evercore import bench, cli
from evercore.engines.memory.engine import open_memory_engine

from tests.throwaway import postgres_uri, redis_uri

EVERCORE = str(Path(sys.executable).with_name("evercore"))
TINY = ["--events", "1000", "--aggregates", "10", "--batch", "250", "--no-progress"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``evercore argv...`` in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse exits for --help and usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def sqlite_uri(tmp_path: Path, name: str = "events.db") -> str:
    return f"sqlite:///{tmp_path / name}"


# -- help and usage -----------------------------------------------------------------------


def test_console_script_help_lists_commands_and_exit_codes() -> None:
    done = subprocess.run([EVERCORE, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("backends", "migrate", "info", "bench"):
        assert command in done.stdout
    assert "exit status" in done.stdout and "130" in done.stdout


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        ("backends", "installed plugins"),
        ("migrate", "schema migrations"),
        ("info", "durable subscription"),
        ("bench", "comparison"),
    ],
)
def test_each_command_has_help(
    capsys: pytest.CaptureFixture[str], command: str, phrase: str
) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == cli.EXIT_OK
    assert f"usage: evercore {command}" in out
    assert phrase in out
    assert "exit status" in out


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert code == cli.EXIT_USAGE
    assert "usage: evercore" in err and out == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["migrate"], "the following arguments are required: URI"),
        (["bench", "--events", "0"], "must be >= 1, got 0"),
        (["bench", "--events", "lots"], "expected a whole number, got 'lots'"),
        (["bench", "--workload", "nap"], "invalid choice: 'nap'"),
    ],
)
def test_usage_errors_exit_2_naming_the_problem(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == cli.EXIT_USAGE
    assert message in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert code == cli.EXIT_OK
    assert out.strip() == f"evercore {evercore.__version__}"


# -- errors -----------------------------------------------------------------------------------


def test_error_is_one_line_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "info", "nosuchdb://somewhere/x")
    assert code == cli.EXIT_ERROR
    assert out == ""
    assert err.startswith("evercore: error: no backend is installed for URI scheme 'nosuchdb'")
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("position", ["before", "after"])
def test_debug_adds_the_traceback(capsys: pytest.CaptureFixture[str], position: str) -> None:
    argv = ["info", "nosuchdb://x"]
    argv = ["--debug", *argv] if position == "before" else [*argv, "--debug"]
    code, _, err = run(capsys, *argv)
    assert code == cli.EXIT_ERROR
    assert "Traceback (most recent call last)" in err
    assert "UnknownBackendError" in err
    assert err.rstrip().endswith(
        "evercore: error: no backend is installed for URI scheme "
        "'nosuchdb'; installed schemes: " + ", ".join(evercore.registry.get_registry().schemes())
    )


def test_malformed_uri_is_an_error_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "migrate", "events.db")
    assert code == cli.EXIT_ERROR
    assert "malformed store URI 'events.db'" in err


def test_describe_error_hides_passwords_and_names_foreign_errors() -> None:
    uri = "postgresql://app:hunter2@db.example/prod"
    exc = OSError(f"could not reach {uri}\n  (password hunter2 rejected)")
    text = cli.describe_error(exc, [uri])
    assert "hunter2" not in text
    assert (
        text == "OSError: could not reach postgresql://app:***@db.example/prod "
        "(password *** rejected)"
    )
    assert "\n" not in text
    encoded = "postgresql://app:p%40ss%3Aword@db/prod"
    decoded = cli.describe_error(OSError("auth failed for p@ss:word"), [encoded])
    assert decoded == "OSError: auth failed for ***"


def test_a_failing_store_never_shows_the_uri_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # SQLite cannot create a file in a directory that does not exist; the URI carries a
    # password that must not reach the output even though the engine sees the URI.
    uri = f"sqlite://user:sup3rsecret@/{tmp_path}/missing/dir/x.db"
    code, out, err = run(capsys, "--debug", "migrate", uri)
    assert code == cli.EXIT_ERROR
    assert "evercore: error:" in err
    assert "Traceback" in err
    assert "sup3rsecret" not in err  # not even in the --debug traceback
    assert "sup3rsecret" not in out


# -- backends ---------------------------------------------------------------------------------


def test_backends_table_lists_builtins_with_distribution_and_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "backends")
    assert code == cli.EXIT_OK
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "SCHEMES", "DISTRIBUTION", "DESCRIPTION"]
    by_name = {row.split()[0]: re.split(r"\s{2,}", row) for row in rows}
    version = evercore.__version__
    assert by_name["sqlite"][1:3] == ["sqlite://", f"evercore {version}"]
    assert by_name["memory"][1:3] == ["memory://", f"evercore {version}"]
    installed = {b.spec.name for b in evercore.backends()}
    assert set(by_name) == installed


def test_backends_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "backends", "--json")
    assert code == cli.EXIT_OK
    records = {r["name"]: r for r in json.loads(out)}
    assert records["sqlite"]["schemes"] == ["sqlite"]
    assert records["sqlite"]["plugin"] == "evercore.engines.sqlite"
    assert records["memory"]["distribution"] == "evercore"
    assert records["memory"]["version"] == evercore.__version__
    assert all(r["description"] for r in records.values())


# -- migrate and info -------------------------------------------------------------------------


def test_migrate_sqlite_is_repeatable(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    code, first, _ = run(capsys, "migrate", uri)
    assert code == cli.EXIT_OK
    assert first.startswith(f"{uri}: sqlite schema at version ")
    version = int(first.rsplit(" ", 1)[1])
    assert version >= 1
    assert run(capsys, "migrate", uri)[1] == first
    assert (tmp_path / "events.db").exists()


def test_migrate_memory_says_there_is_nothing_to_migrate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "migrate", "memory://")
    assert code == cli.EXIT_OK
    assert "memory backend has no versioned schema" in out


def _populate(uri: str) -> None:
    """Three aggregates of two events each, and a subscription whose cursor is at 4."""
    store = evercore.connect(uri)
    try:
        with store.context() as ctx:
            for _ in range(3):
                account = bench.BenchAccount()
                ctx.create_aggregate_into(account)
                ctx.apply_event_to(account, bench.make_event(1))
                ctx.apply_event_to(account, bench.make_event(2))
        engine = store.storage_engine
        engine.upsert_subscription(None, "projector", None, None, None, "beginning", 0, None)
        subscription = engine.get_subscription_by_name(None, "projector")
        assert engine.claim_subscription(None, "projector", "worker-7", 30.0)
        engine.advance_subscription_cursor(None, subscription.id, 4, owner="worker-7")
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store of each durable backend (a namespace of its own on the servers)."""
    if request.param == "sqlite":
        yield sqlite_uri(tmp_path)
        return
    make = postgres_uri if request.param == "postgresql" else redis_uri
    with make("cli") as uri:
        yield uri


def test_info_reports_counts_types_and_subscription_lag(
    capsys: pytest.CaptureFixture[str], store_uri: str
) -> None:
    uri = store_uri
    _populate(uri)
    code, out, _ = run(capsys, "info", uri, "--json")
    assert code == cli.EXIT_OK
    info = json.loads(out)
    assert info["uri"] == uri
    last = info["max_event_id"]
    # PostgreSQL reports the highest id no reader can skip past: lower (after a short
    # wait) while any transaction elsewhere in the database that began earlier is open.
    assert last == 6 or (uri.startswith("postgresql:") and 0 <= last < 6)
    assert "BenchAccount" in info["aggregate_types"]
    assert "BenchDeposited" in info["event_types"]
    assert (info["aggregates"], info["events"], info["snapshots"]) == (3, 6, 0)
    (sub,) = info["subscriptions"]
    assert sub["name"] == "projector"
    assert (sub["cursor"], sub["lag"], sub["lease_owner"]) == (4, max(last - 4, 0), "worker-7")
    assert sub["active"] is True
    assert sub["lease_expires_at"] is not None

    code, text, _ = run(capsys, "info", uri)
    assert code == cli.EXIT_OK
    assert f"store:            {uri}" in text
    assert f"last event id:    {last}" in text or uri.startswith("postgresql:")
    assert "BenchDeposited" in text


def test_info_on_a_store_never_created_says_how_to_create_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    uri = sqlite_uri(tmp_path, "new.db")
    code, out, err = run(capsys, "info", uri)
    assert code == cli.EXIT_ERROR
    assert out == ""
    assert err.startswith("evercore: error: ")
    assert err.rstrip().endswith(f"(if the store is new, create it first: evercore migrate {uri})")
    assert not (tmp_path / "new.db").exists()  # looking did not create it


def test_store_info_uses_stats_when_the_engine_has_them() -> None:
    engine = open_memory_engine("memory://")
    try:
        type_id = engine.get_aggregate_type_id(None, "Thing")
        engine.new_aggregate(None, type_id)
        info = cli.store_info(engine)
    finally:
        engine.close()
    assert (info["aggregates"], info["events"], info["snapshots"]) == (1, 0, 0)
    assert info["aggregate_types"] == ["Thing"]
    assert info["subscriptions"] == []
    text = cli.format_info("memory://", info)
    assert "aggregates:       1" in text
    assert "subscriptions:    (none)" in text


def test_format_info_without_stats_says_what_is_unknown() -> None:
    info = {
        "aggregates": None,
        "events": None,
        "snapshots": None,
        "max_event_id": 12,
        "aggregate_types": [],
        "event_types": ["E"],
        "subscriptions": None,
    }
    text = cli.format_info("x://", info)
    assert "events:           n/a (backend does not report it)" in text
    assert "subscriptions:    n/a (backend does not report them)" in text
    assert "last event id:    12" in text


# -- bench ------------------------------------------------------------------------------------


def test_bench_default_compares_memory_and_temporary_sqlite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    markdown_path = tmp_path / "report.md"
    code, out, err = run(
        capsys, "bench", *TINY, "--json", str(report_path), "--markdown", str(markdown_path)
    )
    assert code == cli.EXIT_OK, err
    header = out.splitlines()[0]
    assert header.split("  ")[0] == "workload"
    assert "memory events/s" in header and "sqlite events/s" in header
    assert "(x) = events/s relative to memory" in out

    report = json.loads(report_path.read_text())
    results = report["results"]
    assert [r["target"] for r in results] == ["memory"] * 5 + ["sqlite"] * 5
    assert [r["workload"] for r in results[:5]] == list(bench.WORKLOAD_KEYS)
    by_key = {(r["target"], r["workload"]): r for r in results}
    for target in ("memory", "sqlite"):
        assert by_key[(target, "ingest_batch")]["events"] == 1000
        assert by_key[(target, "ingest_single")]["events"] == 100
        assert by_key[(target, "rehydrate")]["events"] == 3000
        # catch-up reads everything written before it: both ingests and the rehydrated one
        assert by_key[(target, "catchup")]["events"] == 1000 + 100 + 1000
        assert by_key[(target, "concurrent")]["events"] == 100
        assert all(r["events_per_second"] > 0 for r in results if r["target"] == target)
    assert by_key[("memory", "ingest_batch")]["ratio_to_first"] == 1.0
    sqlite_row = by_key[("sqlite", "ingest_batch")]
    memory_eps = by_key[("memory", "ingest_batch")]["events_per_second"]
    assert sqlite_row["ratio_to_first"] == pytest.approx(
        sqlite_row["events_per_second"] / memory_eps
    )
    # the temporary SQLite file is gone once the run is over
    assert not os.path.exists(report["targets"][1]["uri"].removeprefix("sqlite:///"))

    markdown = markdown_path.read_text()
    assert markdown.startswith("| workload | memory events/s | sqlite events/s |\n|---|---:|---:|")
    assert "Command: `evercore bench --events 1000" in markdown


def test_bench_refuses_a_store_that_holds_events_unless_yes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    uri = sqlite_uri(tmp_path)
    _populate(uri)
    code, out, err = run(capsys, "bench", uri, *TINY, "--workload", "ingest_batch")
    assert code == cli.EXIT_ERROR
    assert "already holds events (6)" in err
    assert "--yes" in err
    assert out == ""

    code, out, err = run(capsys, "bench", uri, *TINY, "--workload", "ingest_batch", "--yes")
    assert code == cli.EXIT_OK, err
    assert "ingest, contexts of 250" in out
    assert f"evercore: note: the benchmark's data stays in {uri}" in err


def test_bench_json_to_stdout_replaces_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "bench", "memory://", *TINY, "--workload", "rehydrate", "--json", "-"
    )
    assert code == cli.EXIT_OK
    (result,) = json.loads(out)["results"]
    assert result["workload"] == "rehydrate"
    assert result["uri"] == "memory://"


def test_bench_reports_hide_passwords(tmp_path: Path) -> None:
    target = bench.BenchTarget("pg", "postgresql://app:hunter2@127.0.0.1/db")
    result = bench.WorkloadResult("pg", target.display_uri, "catchup", "catch-up", 10, 1.0)
    report = bench.BenchReport(bench.BenchConfig(), (target,), (result,), bench.environment())
    for text in (
        bench.render_text(report),
        bench.render_markdown(report),
        bench.render_json(report),
        repr(target),
    ):
        assert "hunter2" not in text
    assert "postgresql://app:***@127.0.0.1/db" in bench.render_text(report)


def test_bench_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    argv = ["bench", "memory://", *TINY, "--workload", "ingest_batch", "--plot", str(png)]
    code, out, err = run(capsys, *argv)
    if importlib.util.find_spec("matplotlib") is None:
        # refused before any workload runs, with the install command
        assert code == cli.EXIT_ERROR
        assert "needs matplotlib: pip install 'evercore[plot]'" in err
        assert out == "" and not png.exists()
    else:
        assert code == cli.EXIT_OK, err
        assert png.read_bytes().startswith(b"\x89PNG")


def test_progress_bar_draws_in_place_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = bench.ProgressBar("sqlite  ingest", 10, stream, width=10)
    bar.advance(10)
    bar.finish("10 events")
    text = stream.getvalue()
    assert "\rsqlite  ingest  [##########] 100%" in text
    assert text.endswith("\r\x1b[2Ksqlite  ingest  10 events\n")


def test_progress_bar_writes_one_line_per_workload_when_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = bench.ProgressBar("memory  rehydrate", 1000, stream)
    for _ in range(10):
        bar.advance(100)
    bar.finish("1,000 events")
    assert stream.getvalue() == "memory  rehydrate  1,000 events\n"


def test_bench_config_refuses_nonpositive_sizes() -> None:
    with pytest.raises(evercore.ConfigurationError, match="bench option page_size must be >= 1"):
        bench.BenchConfig(page_size=0)


# -- tail (the command comes from evercore.cli_tail; this checks the wiring) -------------


def test_tail_is_wired_into_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    uri = sqlite_uri(tmp_path)
    _populate(uri)
    code, out, err = run(capsys, "tail", uri, "--from", "beginning", "--max-events", "2")
    assert code == cli.EXIT_OK, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(e["event_id"], e["event_type"]) for e in lines] == [
        (1, "BenchDeposited"),
        (2, "BenchDeposited"),
    ]
    code, _, err = run(capsys, "tail", "nosuchdb://x", "--debug")
    assert code == cli.EXIT_ERROR
    assert "Traceback" in err and "evercore: error: no backend is installed" in err


def test_bench_reports_name_the_conflicts_retried() -> None:
    targets = (bench.BenchTarget("a", "memory://"), bench.BenchTarget("b", "memory://"))
    results = (
        bench.WorkloadResult("a", "memory://", "concurrent", "hot", 100, 1.0, retries=0),
        bench.WorkloadResult("b", "memory://", "concurrent", "hot", 100, 2.0, retries=7),
    )
    report = bench.BenchReport(bench.BenchConfig(), targets, results, bench.environment())
    assert "conflicts retried in the concurrent workload: a 0, b 7" in bench.render_text(report)
    assert "Conflicts retried in the concurrent workload: a 0, b 7." in bench.render_markdown(
        report
    )
    assert "| hot | 100 | 50 (0.50x) |" in bench.render_markdown(report)
