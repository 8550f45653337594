"""Servers failing under load, on loopback only.

* Redis on a private port with ``appendonly yes`` / ``appendfsync always`` is
  SIGKILLed while a writer process commits contexts, then restarted on the same
  data directory: every acknowledged context is there, none is half-written.
* PostgreSQL connections of one store are terminated (``pg_terminate_backend``)
  while writer threads commit: the writers see typed errors, the pool recovers,
  nothing acknowledged is lost and nothing refused is stored.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import evercore
import psycopg
import pytest
from evercore import CommitOutcomeUnknownError, EventStore, StorageEngineError
from evercore.testing.reliability import TallyChanged, record_figures, tally_class

from tests.backends import POSTGRES_URI, drop_postgres_schema, unique_name
from tests.faults.harness import Worker
from tests.services import ensure_postgres

pytestmark = pytest.mark.timeout(180)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


@contextmanager
def private_redis(data_dir: Path) -> Iterator[tuple[int, list[subprocess.Popen[bytes]]]]:
    """(port, servers started) of a Redis with AOF fsynced on every write, in ``data_dir``;
    start more with :func:`start_redis`. Every server is killed on exit."""
    port = _free_port()
    servers: list[subprocess.Popen[bytes]] = []
    try:
        yield port, servers
    finally:
        for server in servers:
            if server.poll() is None:
                server.kill()
            server.wait(timeout=10)


def start_redis(port: int, data_dir: Path, servers: list[subprocess.Popen[bytes]]) -> None:
    """Start Redis on ``port`` over ``data_dir`` and wait until it answers."""
    servers.append(
        subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data_dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(data_dir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"private Redis on port {port} did not start")


@pytest.mark.redis
@pytest.mark.skipif(
    not Path(REDIS_SERVER).exists() and not os.environ.get("CI"),
    reason="redis-server is not installed (in CI this fails instead)",
)
def test_redis_killed_with_aof_always_keeps_acknowledged_contexts(tmp_path: Path) -> None:
    rounds, per_aggregate, acknowledged = 3, 20, set()
    with private_redis(tmp_path) as (port, servers):
        uri = f"redis://127.0.0.1:{port}/0?prefix=aof"
        start_redis(port, tmp_path, servers)
        with evercore.connect(uri) as store:
            ids = [store.in_context(lambda c: c.new_aggregate_id("aof.Tally")) for _ in range(2)]
        for run in range(rounds):
            with Worker("writer", uri, "aof.Tally", ids, f"r{run}", str(per_aggregate)) as writer:
                writer.wait_for("ACK", 5 + run)
                servers[-1].kill()  # SIGKILL: no shutdown, no final fsync
                servers[-1].wait(timeout=10)
                writer.kill()
                acknowledged |= {
                    line.split()[1] for line in writer.drain() if line.startswith("ACK")
                }
            start_redis(port, tmp_path, servers)
        with evercore.connect(uri) as store:
            stored = Counter(
                e.reference
                for aggregate_id in ids
                for e in store.storage_engine.get_events_for_aggregate(None, aggregate_id, 0)
            )
    half = {ref: n for ref, n in stored.items() if n != len(ids) * per_aggregate}
    assert not half, f"contexts stored in part after a crash: {half}"
    assert acknowledged <= set(stored), f"lost: {sorted(acknowledged - set(stored))}"
    record_figures(
        "SIGKILL Redis (AOF, appendfsync always), restart",
        "redis",
        operations=len(stored),
        faults=rounds,
        events_checked=sum(stored.values()),
        lost=0,
        duplicates=0,
    )


# ----------------------------------------------------------------- PostgreSQL --
@pytest.mark.postgres
def test_postgres_connections_terminated_under_load(tmp_path: Path) -> None:
    ensure_postgres()
    schema = unique_name("term")
    uri = f"{POSTGRES_URI}?schema={schema}&application_name={schema}"
    outcomes: dict[str, dict[str, str]] = {}
    try:
        with evercore.connect(uri) as store:
            terminations = _load_and_terminate(store, schema, outcomes)
            # The pool has replaced the terminated connections: a new context works.
            assert store.in_context(lambda ctx: ctx.new_aggregate_id("term.Tally")) > 0
            stored = Counter(
                e.reference
                for aggregate_id in outcomes
                for e in store.storage_engine.get_events_for_aggregate(None, int(aggregate_id), 0)
            )
    finally:
        drop_postgres_schema(schema)
    acknowledged = {ref for o in outcomes.values() for ref, kind in o.items() if kind == "ok"}
    refused = {ref for o in outcomes.values() for ref, kind in o.items() if kind == "error"}
    assert terminations > 0
    assert acknowledged <= set(stored), "an acknowledged context was lost"
    assert not refused & set(stored), "a context that raised a plain error was stored"
    record_figures(
        "PostgreSQL connections terminated under load",
        "postgres",
        operations=sum(len(o) for o in outcomes.values()),
        faults=terminations,
        typed_errors=len(refused)
        + sum(1 for o in outcomes.values() for kind in o.values() if kind == "unknown"),
        events_checked=sum(stored.values()),
        lost=0,
        duplicates=0,
    )


def _load_and_terminate(
    store: EventStore, application_name: str, outcomes: dict[str, dict[str, str]]
) -> int:
    """Three writer threads for about three seconds while the store's server
    connections are terminated every 0.3 s; returns how many were terminated. Each
    context's outcome is recorded as ok, error (typed, nothing stored) or unknown."""
    cls = tally_class("term.Tally")
    stop = threading.Event()
    failures: list[BaseException] = []

    def writer(number: int) -> None:
        aggregate_id = store.in_context(lambda ctx: ctx.new_aggregate_id("term.Tally"))
        seen: dict[str, str] = {}
        outcomes[str(aggregate_id)] = seen
        n = 0
        while not stop.is_set():
            reference = f"w{number}-{n}"
            n += 1
            try:
                with store.context() as ctx:
                    agg = cls()
                    ctx.load_state_into(agg, aggregate_id)
                    ctx.apply_event_to(agg, TallyChanged(amount=n), reference=reference)
                seen[reference] = "ok"
            except CommitOutcomeUnknownError:
                seen[reference] = "unknown"
            except StorageEngineError:
                seen[reference] = "error"
            except BaseException as exc:
                failures.append(exc)
                return

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    terminated = 0
    with psycopg.connect(POSTGRES_URI, autocommit=True) as admin:
        for _ in range(10):
            time.sleep(0.3)
            row = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (application_name,),
            ).fetchone()
            terminated += int(row[0]) if row else 0
    time.sleep(0.5)  # the pool reconnects; the writers keep going
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, f"untyped errors: {failures!r}"
    return terminated
