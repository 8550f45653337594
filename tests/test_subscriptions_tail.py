"""``evercore tail``: argument parsing, the JSON lines, and following a SQLite store
in-process and as a real subprocess stopped by signals."""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from evercore.cli_tail import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_tail_parser,
    event_json,
    parse_start,
    run_tail,
    tail,
)
from evercore.engines.memory.engine import open_memory_engine
from evercore.engines.sqlite.engine import SqliteStorageEngine, open_sqlite_engine
from evercore.testing.subscriptions import write_aggregate
from evercore.values import (
    SerializedEvent,
    StartFrom,
    SubscriptionFilter,
    SubscriptionOptions,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="evercore")
    add_tail_parser(parser.add_subparsers())
    return parser.parse_args(["tail", *argv])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, SqliteStorageEngine]]:
    uri = f"sqlite:///{tmp_path}/tail.db"
    engine = open_sqlite_engine(uri)
    engine.migrate()
    yield uri, engine
    engine.close()


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


# -- arguments and output ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("beginning", StartFrom.beginning()),
        ("END", StartFrom.end()),
        ("42", StartFrom.after_event(41)),
        ("0", StartFrom.after_event(0)),
        ("2024-05-01T12:00:00Z", StartFrom.at_time(T0)),
        ("2024-05-01T12:00:00", StartFrom.at_time(T0)),
        ("2024-05-01T14:00:00+02:00", StartFrom.at_time(T0)),
        ("2024-05-01T12:00:00.000001z", StartFrom.at_time(T0 + timedelta(microseconds=1))),
    ],
)
def test_from_accepts_positions_ids_and_timestamps(text: str, expected: StartFrom) -> None:
    assert parse_start(text) == expected


def test_from_rejects_nonsense_naming_the_value() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="yesterday"):
        parse_start("yesterday")


def test_defaults_and_repeatable_event_type() -> None:
    args = parse("memory://", "--event-type", "Placed", "--event-type", "Paid")
    assert args.uri == "memory://"
    assert args.event_type == ["Placed", "Paid"]
    assert args.start == StartFrom.end()
    assert (args.batch_size, args.poll_interval) == (100, 0.5)
    assert args.handler is run_tail


@pytest.mark.parametrize("bad", [["--batch-size", "0"], ["--idle-exit", "-1"], ["--from", "x"]])
def test_bad_arguments_are_usage_errors(bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse("memory://", *bad)
    assert exited.value.code == 2


def test_event_json_embeds_json_state_and_keeps_other_text() -> None:
    event = SerializedEvent(7, 3, "Renamed", '{"name": "Zoë"}', 2, "req-1", T0)
    assert json.loads(event_json(event)) == {
        "event_id": 7,
        "aggregate_id": 3,
        "event_type": "Renamed",
        "sequence": 2,
        "event_time": "2024-05-01T12:00:00+00:00",
        "reference": "req-1",
        "state": {"name": "Zoë"},
    }
    assert json.loads(event_json(event._replace(state="not json")))["state"] == "not json"


# -- following in-process --------------------------------------------------------------------


def test_tail_follows_an_in_process_store_with_filters() -> None:
    engine = open_memory_engine("memory://")
    try:
        order = write_aggregate(engine, "Order", ["Placed", "Paid", "Shipped"], key="o-1")
        write_aggregate(engine, "User", ["Placed"])
        out = io.StringIO()
        stop = threading.Event()
        flt = SubscriptionFilter(aggregate_type="Order", event_types=("Placed", "Shipped"))
        options = SubscriptionOptions(poll_interval=0.02)
        follower = threading.Thread(
            target=tail,
            args=(engine, flt, StartFrom.beginning(), options, out),
            kwargs={"stop": stop},
        )
        follower.start()
        later = write_aggregate(engine, "Order", ["Placed", "Cancelled"])
        deadline = time.monotonic() + 10
        while len(out.getvalue().splitlines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        follower.join(10)
        assert not follower.is_alive()
    finally:
        engine.close()
    printed = lines(out.getvalue())
    assert [line["event_id"] for line in printed] == [
        order[0].event_id,
        order[2].event_id,
        later[0].event_id,
    ]


def test_run_tail_stops_after_max_events(
    store: tuple[str, SqliteStorageEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, engine = store
    events = write_aggregate(engine, "Order", ["Placed", "Paid", "Shipped"])
    assert run_tail(parse(uri, "--from", "beginning", "--max-events", "2")) == EXIT_OK
    assert [line["event_id"] for line in lines(capsys.readouterr().out)] == ids(events[:2])


def test_run_tail_filters_by_key_and_start(
    store: tuple[str, SqliteStorageEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, engine = store
    times = [T0 + timedelta(minutes=i) for i in range(3)]
    alice = write_aggregate(engine, "User", ["A", "B", "C"], key="alice", times=times)
    write_aggregate(engine, "User", ["A", "B", "C"], key="bob", times=times)
    args = parse(uri, "--key", "alice", "--from", times[1].isoformat(), "--idle-exit", "0.3")
    assert run_tail(args) == EXIT_OK
    assert [line["event_id"] for line in lines(capsys.readouterr().out)] == ids(alice[1:])
    by_id = parse(uri, "--from", str(alice[2].event_id), "--idle-exit", "0.3")
    assert run_tail(by_id) == EXIT_OK
    printed = lines(capsys.readouterr().out)
    assert printed[0]["event_id"] == alice[2].event_id


def test_run_tail_idle_exit_from_the_end_prints_nothing(
    store: tuple[str, SqliteStorageEngine], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, engine = store
    write_aggregate(engine, "Order", ["Placed"])
    started = time.monotonic()
    assert run_tail(parse(uri, "--idle-exit", "0.3", "--poll-interval", "0.05")) == EXIT_OK
    assert 0.3 <= time.monotonic() - started < 5
    assert capsys.readouterr().out == ""


def ids(events: list[SerializedEvent]) -> list[int]:
    return [event.event_id for event in events]


# -- the real command in a subprocess ----------------------------------------------------------

_CLI = "import sys; from evercore.cli import main; sys.exit(main())"


def read_lines(process: subprocess.Popen[str], count: int) -> list[dict[str, object]]:
    assert process.stdout is not None
    got: list[dict[str, object]] = []
    timer = threading.Timer(20, process.kill)  # never hang the suite on a stuck child
    timer.start()
    try:
        while len(got) < count:
            line = process.stdout.readline()
            assert line, f"tail ended early (exit {process.poll()})"
            got.append(json.loads(line))
    finally:
        timer.cancel()
    return got


@pytest.mark.parametrize(
    ("sig", "status"), [(signal.SIGTERM, EXIT_OK), (signal.SIGINT, EXIT_INTERRUPTED)]
)
def test_tail_subprocess_follows_and_stops_cleanly_on_signals(
    store: tuple[str, SqliteStorageEngine], sig: signal.Signals, status: int
) -> None:
    uri, engine = store
    first = write_aggregate(engine, "Order", ["Placed", "Paid"])
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI, "tail", uri, "--from", "beginning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert [line["event_id"] for line in read_lines(process, 2)] == ids(first)
        # Written by another process while the child follows the file.
        second = write_aggregate(engine, "Order", ["Shipped"])
        (line,) = read_lines(process, 1)
        assert line["event_id"] == second[0].event_id
        assert line["state"] == json.loads(second[0].state)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr


def test_tail_subprocess_exits_quietly_when_the_reader_goes_away(
    store: tuple[str, SqliteStorageEngine],
) -> None:
    uri, engine = store
    for _ in range(20):
        write_aggregate(engine, "Order", ["Placed"] * 100)
    process = subprocess.Popen(
        [sys.executable, "-c", _CLI, "tail", uri, "--from", "beginning", "--batch-size", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        read_lines(process, 1)
        assert process.stdout is not None
        process.stdout.close()  # like `evercore tail ... | head -1`
        assert process.wait(timeout=20) == EXIT_OK
        assert process.stderr is not None
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
