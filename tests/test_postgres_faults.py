"""Faults and secrets on the PostgreSQL engine.

Connections terminated under load (``pg_terminate_backend``), and a private server
(its own data directory and port) restarted under load, surface as typed
``StorageEngineError``s, the pool recovers, no event is lost or stored twice, and a
durable subscription restarted after the failure resumes from its cursor. A URI's
password never appears in an error, a traceback, a log line or a repr.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import evercore
import pytest
from evercore.errors import (
    CommitOutcomeUnknownError,
    StorageEngineError,
    SubscriptionLeaseLost,
)
from evercore.values import (
    SerializedEvent,
    StartFrom,
    StorageEngineEvent,
    SubscriptionFilter,
    SubscriptionOptions,
    utc_now,
)
from evercore_postgres.engine import PostgresStorageEngine, open_postgres_engine
from evercore_postgres.testing import (
    TEST_SERVER,
    drop_schema,
    temporary_engine,
    terminate_sessions,
)

from tests.services import ensure_postgres

pytestmark = pytest.mark.postgres

PASSWORD = "s3cr3t-Pa55word"
ENCODED = quote(PASSWORD + "@:/", safe="")  # as a URI must spell "s3cr3t-Pa55word@:/"


@pytest.fixture(scope="module", autouse=True)
def _postgres_server() -> None:
    ensure_postgres()


class _PrivateServer:
    """A PostgreSQL cluster of its own (temporary data directory, free port), so that
    restarting it disturbs nobody else on the machine."""

    def __init__(self) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not binaries:
            raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
        self.bin = Path(binaries[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="evercore-pg-"))
        self.data = self.root / "data"
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.uri = f"postgresql://postgres@127.0.0.1:{self.port}/postgres?schema=evercore"
        # The server refuses to run as root: run it as the postgres user then.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            shutil.chown(self.root, "postgres")

    def _run(self, program: str, *args: str) -> None:
        command = [*self.as_owner, str(self.bin / program), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--no-sync")  # fmt: skip
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w",
                  "-o", options, "start")  # fmt: skip

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-m", "fast",
                  "-w", "restart")  # fmt: skip

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_server() -> Iterator[_PrivateServer]:
    server = _PrivateServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def engine() -> Iterator[PostgresStorageEngine]:
    with temporary_engine(pool_size=4) as engine:
        yield engine




class _Writer:
    """Appends one event per transaction to its aggregate, retrying what failed."""

    def __init__(self, engine: PostgresStorageEngine, aggregate_id: int, event_type: int) -> None:
        self.engine = engine
        self.aggregate_id = aggregate_id
        self.event_type = event_type
        self.stored: list[int] = []  # sequences known to be committed
        self.unknown: list[int] = []  # sequences whose commit outcome was unknown
        self.errors: list[Exception] = []

    def run(self, stop: threading.Event) -> None:
        sequence = 1
        while not stop.is_set():
            event = StorageEngineEvent(
                self.aggregate_id, sequence, self.event_type, f'{{"n":{sequence}}}',
                utc_now(), "",
            )  # fmt: skip
            try:
                tx = self.engine.get_transaction_info()
                try:
                    self.engine.write_state(tx, [event], [])
                except BaseException:
                    tx.rollback()
                    raise
                tx.commit()
            except CommitOutcomeUnknownError as error:
                self.errors.append(error)
                self.unknown.append(sequence)
                sequence = self._stored_sequence() + 1
                continue
            except StorageEngineError as error:
                self.errors.append(error)
                time.sleep(0.005)
                continue
            self.stored.append(sequence)
            sequence += 1

    def _stored_sequence(self) -> int:
        while True:
            try:
                events = self.engine.get_events_for_aggregate(None, self.aggregate_id, 0)
                return events[-1].sequence if events else 0
            except StorageEngineError as error:
                self.errors.append(error)


def _lose_nothing_under(engine: PostgresStorageEngine, fault: Callable[[], None]) -> None:
    """Run three writers and a durable subscription (restarted whenever it fails) on
    ``engine`` while ``fault()`` runs three times; then check that errors were typed,
    writing went on, nothing acknowledged was lost, nothing refused was stored, and the
    subscription delivered every stored event."""
    type_id = engine.get_aggregate_type_id(None, "Account")
    event_type = engine.get_event_type_id(None, "Deposited")
    writers = [_Writer(engine, engine.new_aggregate(None, type_id), event_type) for _ in range(3)]
    stop_writing, stop_reading = threading.Event(), threading.Event()
    delivered: list[SerializedEvent] = []
    reader_errors: list[Exception] = []
    store = evercore.EventStore(engine)
    options = SubscriptionOptions(batch_size=50, poll_interval=0.05, lease=2.0, owner="fault-test")

    def read() -> None:
        while not stop_reading.is_set():
            try:
                store.run_subscription(
                    "audit", SubscriptionFilter(), StartFrom.beginning(), options,
                    delivered.extend, stop=stop_reading,
                )  # fmt: skip
            except (StorageEngineError, SubscriptionLeaseLost) as error:
                # An application restarts its runner, which resumes from the cursor; a
                # lease lost to a restart longer than the lease is one such error.
                reader_errors.append(error)
                time.sleep(0.02)

    threads = [threading.Thread(target=w.run, args=(stop_writing,)) for w in writers]
    threads.append(threading.Thread(target=read))
    for thread in threads:
        thread.start()
    for _ in range(3):
        time.sleep(0.6)
        fault()
    time.sleep(0.6)
    stop_writing.set()
    for thread in threads[:-1]:
        thread.join(timeout=30)

    stored_ids = {e.event_id for w in writers for e in _all_events(engine, w.aggregate_id)}
    deadline = time.monotonic() + 30
    while not stored_ids <= {e.event_id for e in delivered} and time.monotonic() < deadline:
        time.sleep(0.05)
    stop_reading.set()
    threads[-1].join(timeout=30)

    errors = [e for w in writers for e in w.errors] + reader_errors
    assert errors, "the faults must surface as errors"
    assert all(isinstance(e, StorageEngineError) for e in errors)
    for writer in writers:
        sequences = [e.sequence for e in _all_events(engine, writer.aggregate_id)]
        assert sequences == list(range(1, len(sequences) + 1))  # no hole, no duplicate
        assert set(writer.stored) <= set(sequences)  # nothing acknowledged was lost
        assert set(sequences) <= set(writer.stored) | set(writer.unknown)
        assert len(writer.stored) > 10  # the pool recovered and writing went on
    delivered_ids = [e.event_id for e in delivered]
    assert set(delivered_ids) == stored_ids  # the subscription missed nothing
    assert _increasing_per_run(delivered_ids)
    assert engine.get_subscription_by_name(None, "audit").last_event_id == max(stored_ids)


def test_terminated_connections_under_load_lose_nothing(engine: PostgresStorageEngine) -> None:
    terminated: list[int] = []
    _lose_nothing_under(
        engine, lambda: terminated.append(terminate_sessions(engine.options.application_name))
    )
    assert sum(terminated) >= 3


def test_server_restarts_under_load_lose_nothing(private_server: _PrivateServer) -> None:
    """A private PostgreSQL (its own data directory and port) restarted three times."""
    engine = open_postgres_engine(private_server.uri, pool_size=4)
    try:
        engine.migrate()
        _lose_nothing_under(engine, private_server.restart)
    finally:
        engine.close()


def _all_events(engine: PostgresStorageEngine, aggregate_id: int) -> list[SerializedEvent]:
    return engine.get_events_for_aggregate(None, aggregate_id, 0)


def _increasing_per_run(ids: list[int]) -> bool:
    """Strictly increasing, except that a restarted runner may redeliver from its cursor
    (at-least-once): a step back never goes below an id already delivered twice."""
    seen: set[int] = set()
    for previous, current in itertools.pairwise(ids):
        if current <= previous and current not in (seen | {previous}):
            return False
        seen.add(previous)
    return True


# -- secrets --------------------------------------------------------------------------


def _everything_shown(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + str(error)


@pytest.mark.parametrize(
    "uri",
    [
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test?connect_timeout=2",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/no_such_database_evercore",
        f"postgres://no_such_role_evercore:{PASSWORD}@127.0.0.1:5432/test",
        f"postgresql://postgres:{ENCODED}@127.0.0.1:1/test?connect_timeout=2",
    ],
    ids=["wrong-port", "wrong-database", "wrong-user", "percent-encoded"],
)
def test_connection_errors_never_show_the_password(
    uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StorageEngineError) as raised:
        evercore.connect(uri)
    shown = _everything_shown(raised.value)
    assert PASSWORD not in shown
    assert ENCODED not in shown
    assert "***" in str(raised.value)  # the redacted URI names the server
    assert PASSWORD not in caplog.text


def test_repr_and_runtime_errors_never_show_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    schema = "evercore_t_secret_" + str(int(time.time() * 1000))
    # The local server trusts 127.0.0.1, so this password is accepted and ignored.
    uri = TEST_SERVER.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    engine = open_postgres_engine(f"{uri}?schema={schema}&application_name={schema}")
    try:
        engine.migrate()
        tx = engine.get_transaction_info()
        for shown in (repr(engine), str(engine), repr(engine.options), repr(tx)):
            assert PASSWORD not in shown
        terminate_sessions(schema)
        with pytest.raises(StorageEngineError) as raised:
            engine.get_aggregate_types(tx)
        tx.rollback()
        assert PASSWORD not in _everything_shown(raised.value)
        assert engine.get_aggregate_types(None) == []  # idle connections are replaced unseen
    finally:
        engine.close()
        drop_schema(schema)
    assert PASSWORD not in caplog.text
