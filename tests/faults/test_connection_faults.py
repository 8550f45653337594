"""Connections cut and refused, on loopback only.

* A proxy in front of PostgreSQL cuts the connection right after forwarding COMMIT:
  the caller gets ``CommitOutcomeUnknownError`` (never a silent success or a silent
  duplicate), can find out by reloading, and the pool recovers.
* With a password in a PostgreSQL or Redis URI, failures (nothing listening, refused
  authentication, the server gone mid-use) never show the password: not in an
  exception message, a traceback, a log record, a ``repr`` or ``evercore info``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import evercore
import pytest
from evercore import CommitOutcomeUnknownError, EventStore, EvercoreError
from evercore.testing.reliability import TallyChanged, record_figures, tally_class

from tests.backends import (
    POSTGRES_URI,
    delete_redis_prefix,
    drop_postgres_schema,
    open_migrated,
    unique_name,
)
from tests.faults.harness import ROOT, CuttingProxy
from tests.services import ensure_postgres, ensure_redis

pytestmark = pytest.mark.timeout(120)


@contextmanager
def proxied_postgres(password: str = "") -> Iterator[tuple[CuttingProxy, str, str]]:
    """(proxy, URI through the proxy, schema) of a fresh schema; dropped afterwards."""
    ensure_postgres()
    proxy = CuttingProxy(5432, postgres=True)
    schema = unique_name("cut")
    secret = f":{password}" if password else ""
    try:
        yield (
            proxy,
            f"postgresql://postgres{secret}@127.0.0.1:{proxy.port}/test?sslmode=disable&schema={schema}",
            schema,
        )
    finally:
        proxy.close()
        drop_postgres_schema(schema)


# ------------------------------------------------------------ commit outcome --
@pytest.mark.postgres
def test_connection_cut_after_commit_is_outcome_unknown() -> None:
    with proxied_postgres() as (proxy, uri, schema), evercore.connect(uri) as store:
        # The server got COMMIT, so the event is there exactly once; the pool replaced
        # the broken connection.
        _cut_one_commit(store, proxy, f"{POSTGRES_URI}?schema={schema}")
    record_figures(
        "connection cut after COMMIT (proxy)",
        "postgres",
        operations=3,
        faults=1,
        outcome_unknown_raised=1,
        events_checked=3,
        lost=0,
        duplicates=0,
    )


@pytest.mark.redis
def test_redis_connection_cut_during_commit_is_outcome_unknown() -> None:
    from evercore_redis import _scripts

    ensure_redis()
    commit_sha = _scripts.load("commit").sha.encode()
    proxy = CuttingProxy(6379, marker=commit_sha)
    prefix = unique_name("cut")
    try:
        with evercore.connect(f"redis://127.0.0.1:{proxy.port}/0?prefix={prefix}") as store:
            _cut_one_commit(store, proxy, f"redis://127.0.0.1:6379/0?prefix={prefix}")
    finally:
        proxy.close()
        delete_redis_prefix(prefix)
    record_figures(
        "connection cut during commit (proxy)",
        "redis",
        operations=3,
        faults=1,
        outcome_unknown_raised=1,
        events_checked=3,
        lost=0,
        duplicates=0,
    )


def _cut_one_commit(store: EventStore, proxy: CuttingProxy, direct_uri: str) -> None:
    """Append once normally, once with the connection cut after the commit was sent
    (``CommitOutcomeUnknownError``; reloading shows it stored exactly once), and once
    more after (the engine recovered)."""
    cls = tally_class("cut.Tally")
    aggregate_id = store.in_context(lambda ctx: ctx.new_aggregate_id("cut.Tally"))
    for reference in ("before", "in-doubt", "after"):
        proxy.cut_on_commit = reference == "in-doubt"
        try:
            with store.context() as ctx:
                agg = cls()
                ctx.load_state_into(agg, aggregate_id)
                ctx.apply_event_to(agg, TallyChanged(amount=1), reference=reference)
        except CommitOutcomeUnknownError as exc:
            assert reference == "in-doubt", exc
            assert "may or may not" in str(exc)
        else:
            assert reference != "in-doubt", "the commit was not cut"
    assert proxy.cuts == 1
    checker = open_migrated(direct_uri)
    try:
        events = checker.get_events_for_aggregate(None, aggregate_id, 0)
    finally:
        checker.close()
    assert [e.reference for e in events] == ["before", "in-doubt", "after"]


# --------------------------------------------------------------------- secrets --
def _secret() -> str:
    return f"pw-{uuid.uuid4().hex}"


def _failures_postgres(secret: str) -> Iterator[tuple[str, Callable[[], object]]]:
    yield (
        "nothing listening",
        lambda: evercore.connect(f"postgresql://postgres:{secret}@127.0.0.1:1/test"),
    )
    yield (
        "unknown role",
        lambda: evercore.connect(f"postgresql://nosuchrole:{secret}@127.0.0.1:5432/test?schema=x"),
    )

    def server_gone() -> None:
        with proxied_postgres(secret) as (proxy, uri, _):
            store = evercore.connect(uri)
            try:
                assert secret not in repr(store) + repr(store.storage_engine)
                with store.context() as ctx:  # holds a connection, then loses it
                    proxy.close()
                    ctx.new_aggregate_id("gone")
            finally:
                store.close()

    yield "server gone", server_gone


def _failures_redis(secret: str) -> Iterator[tuple[str, Callable[[], object]]]:
    yield "nothing listening", lambda: evercore.connect(f"redis://:{secret}@127.0.0.1:1/0")
    yield "refused auth", lambda: evercore.connect(f"redis://nosuchuser:{secret}@127.0.0.1:6379/0")

    def server_gone() -> None:
        proxy = CuttingProxy(6379)
        prefix = unique_name("gone")
        store = evercore.connect(f"redis://:{secret}@127.0.0.1:{proxy.port}/0?prefix={prefix}")
        try:
            assert secret not in repr(store) + repr(store.storage_engine)
            with store.context() as ctx:
                proxy.close()
                ctx.new_aggregate_id("gone")
        finally:
            store.close()
            delete_redis_prefix(prefix)

    yield "server gone", server_gone


def _evercore(subcommand: str, uri: str) -> subprocess.CompletedProcess[str]:
    command = "import sys, evercore.cli; sys.exit(evercore.cli.main())"
    return subprocess.run(
        [sys.executable, "-c", command, subcommand, uri],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@contextmanager
def _reachable_postgres(secret: str) -> Iterator[str]:
    """A URI with ``secret`` as password of a fresh schema on the local server (trust
    authentication ignores the password); the schema is dropped afterwards."""
    ensure_postgres()
    schema = unique_name("secret")
    try:
        yield f"postgresql://postgres:{secret}@127.0.0.1:5432/test?schema={schema}"
    finally:
        drop_postgres_schema(schema)


@contextmanager
def _reachable_redis(secret: str) -> Iterator[str]:
    """A URI with ``secret`` as password for the local Redis (whose default user takes
    any password); the prefix's keys are deleted afterwards."""
    ensure_redis()
    prefix = unique_name("secret")
    try:
        yield f"redis://:{secret}@127.0.0.1:6379/0?prefix={prefix}"
    finally:
        delete_redis_prefix(prefix)


@pytest.mark.parametrize(
    ("backend", "failures", "reachable", "scheme"),
    [
        pytest.param(
            "postgres",
            _failures_postgres,
            _reachable_postgres,
            "postgres",
            marks=pytest.mark.postgres,
            id="postgresql",
        ),
        pytest.param(
            "redis", _failures_redis, _reachable_redis, "redis", marks=pytest.mark.redis, id="redis"
        ),
    ],
)
def test_passwords_never_leak_from_failures(
    backend: str,
    failures: Callable[[str], Iterator[tuple[str, Callable[[], object]]]],
    reachable: Callable[[str], AbstractContextManager[str]],
    scheme: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = _secret()
    caplog.set_level(logging.DEBUG)
    forced = 0
    for what, action in failures(secret):
        with pytest.raises(EvercoreError) as caught:
            action()
        forced += 1
        assert_no_secret(caught.value, secret, what)
    assert secret not in caplog.text, "a log record shows the password"
    for record in caplog.records:
        assert secret not in repr(record.args) + str(record.exc_info)
    failed = _evercore("info", f"{scheme}://u:{secret}@127.0.0.1:1/0")
    assert failed.returncode != 0
    assert secret not in failed.stdout + failed.stderr, "evercore info shows the password"
    with reachable(secret) as uri:  # the server ignores the password: both succeed
        migrated = _evercore("migrate", uri)
        shown = _evercore("info", uri)
    for run in (migrated, shown):
        assert run.returncode == 0, run.stderr
        assert secret not in run.stdout + run.stderr, f"evercore {run.args[3]} shows it"
    assert "***" in shown.stdout
    record_figures(
        "password in URI never leaks",
        backend,
        operations=forced + 1,
        faults=forced + 1,
        leaks=0,
    )


def assert_no_secret(error: BaseException, secret: str, what: str) -> None:
    """``secret`` is in no message, repr or traceback of ``error`` or its causes."""
    import traceback

    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    chain: BaseException | None = error
    while chain is not None:
        text += repr(chain) + str(chain) + repr(chain.args)
        chain = chain.__cause__ or chain.__context__
    assert secret not in text, f"{what}: the password leaks from {error!r}"
