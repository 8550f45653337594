"""SQLite engine: URIs and options, bad files, pragmas and schema migrations."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import evercore
import pytest
from evercore.engines.sqlite import _schema
from evercore.engines.sqlite._config import parse_config
from evercore.engines.sqlite.engine import SqliteStorageEngine, open_sqlite_engine
from evercore.errors import ConfigurationError, SchemaVersionError, StorageEngineError
from evercore.registry import open_engine


def _uri(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
def engine(db_path: Path) -> Iterator[SqliteStorageEngine]:
    engine = open_sqlite_engine(_uri(db_path))
    engine.migrate()
    yield engine
    engine.close()


def _pragma(engine: SqliteStorageEngine, name: str) -> object:
    tx = engine.get_transaction_info()
    try:
        return tx.reader().execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        tx.rollback()


# -- URIs and options -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("sqlite:///events.db", "events.db"),
        ("sqlite:///sub/dir/events.db", "sub/dir/events.db"),
        ("sqlite:////var/data/events.db", "/var/data/events.db"),
        ("SQLite:///events.db", "events.db"),
        ("sqlite:///with%20space.db", "with space.db"),
        ("sqlite://:memory:", None),
        ("sqlite:///:memory:", None),
        ("sqlite://", None),
        ("sqlite://:memory:?busy_timeout=1", None),
    ],
)
def test_uri_paths_follow_sqlalchemy(uri: str, path: str | None) -> None:
    assert parse_config(uri, {}).path == path


@pytest.mark.parametrize("uri", ["sqlite://host/events.db", "sqlite:///", "sqlite:events.db"])
def test_malformed_uri_is_named(uri: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config(uri, {})
    assert uri in str(caught.value)


def test_options_from_query_and_keywords() -> None:
    config = parse_config("sqlite:///e.db?synchronous=full&busy_timeout=2.5&pool_size=2", {})
    assert (config.synchronous, config.busy_timeout, config.pool_size) == ("FULL", 2.5, 2)
    config = parse_config("sqlite:///e.db?synchronous=FULL", {"synchronous": "extra"})
    assert config.synchronous == "EXTRA", "a keyword wins over the query string"
    assert parse_config("sqlite:///e.db", {"cache_size": 1024}).cache_size == 1024


def test_defaults_are_durable_for_files_and_fast_for_memory() -> None:
    on_file = parse_config("sqlite:///e.db", {})
    assert (on_file.synchronous, on_file.busy_timeout) == ("NORMAL", 5.0)
    assert parse_config("sqlite://:memory:", {}).synchronous == "OFF"
    assert parse_config("sqlite://:memory:?synchronous=FULL", {}).synchronous == "FULL"


@pytest.mark.parametrize(
    ("uri", "options", "named"),
    [
        ("sqlite:///e.db?journal=wal", {}, "journal"),
        ("sqlite:///e.db", {"timeout": 3}, "timeout"),
        ("sqlite:///e.db?synchronous=sometimes", {}, "sometimes"),
        ("sqlite:///e.db?busy_timeout=-1", {}, "busy_timeout"),
        ("sqlite:///e.db?busy_timeout=soon", {}, "soon"),
        ("sqlite:///e.db", {"pool_size": 0}, "pool_size"),
        ("sqlite:///e.db", {"cache_size": 1.5}, "cache_size"),
    ],
)
def test_unknown_option_or_bad_value_is_named(
    uri: str, options: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        open_sqlite_engine(uri, **options)


def test_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = open_sqlite_engine("sqlite:///relative.db")
    engine.migrate()
    engine.close()
    assert (tmp_path / "relative.db").is_file()


def test_registry_and_connect_open_and_migrate(db_path: Path) -> None:
    engine = open_engine(_uri(db_path))
    assert isinstance(engine, SqliteStorageEngine)
    engine.close()
    with evercore.connect(_uri(db_path)) as store:
        assert isinstance(store.storage_engine, SqliteStorageEngine)
        assert store.storage_engine.get_max_event_id(None) == 0
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == 1


def test_pragmas_are_applied(db_path: Path) -> None:
    engine = open_sqlite_engine(_uri(db_path), synchronous="FULL", busy_timeout=1.5)
    try:
        engine.migrate()  # creates the file
        assert _pragma(engine, "journal_mode") == "wal"
        assert _pragma(engine, "synchronous") == 2  # FULL
        assert _pragma(engine, "busy_timeout") == 1500
        assert _pragma(engine, "foreign_keys") == 1
    finally:
        engine.close()
    default = open_sqlite_engine(_uri(db_path))
    try:
        assert _pragma(default, "synchronous") == 1  # NORMAL
    finally:
        default.close()


def test_opening_a_missing_file_does_not_create_it(db_path: Path) -> None:
    engine = open_sqlite_engine(_uri(db_path))
    try:
        with pytest.raises(StorageEngineError, match="does not exist") as caught:
            engine.get_max_event_id(None)
        assert str(db_path) in str(caught.value)
        assert not db_path.exists()
        assert engine.migrate() >= 1
        assert db_path.exists() and engine.get_max_event_id(None) == 0
        assert _pragma(engine, "journal_mode") == "wal"
    finally:
        engine.close()


# -- bad files ----------------------------------------------------------------------------
def test_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "events.db"
    with pytest.raises(StorageEngineError, match="does not exist") as caught:
        open_sqlite_engine(_uri(path))
    assert str(path) in str(caught.value)
    assert not path.parent.exists()


def test_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 200)
    with pytest.raises(StorageEngineError, match="not a SQLite database") as caught:
        open_sqlite_engine(_uri(path))
    assert str(path) in str(caught.value)
    assert path.read_text().startswith("these are my notes"), "the file is left alone"


def test_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(StorageEngineError, match="directory") as caught:
        open_sqlite_engine(_uri(tmp_path))
    assert str(tmp_path) in str(caught.value)


@contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Make ``path`` read-only for this process: mode 0444, and for root (who may
    write any file) the immutable attribute as well."""
    path.chmod(0o444)
    immutable = os.geteuid() == 0
    if immutable:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.skip(f"running as root without chattr +i: {made.stderr!r}")
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o644)


def test_read_only_file_is_named(db_path: Path) -> None:
    engine = open_sqlite_engine(_uri(db_path))
    engine.migrate()
    engine.close()
    with _read_only(db_path), pytest.raises(StorageEngineError, match="read-only") as caught:
        open_sqlite_engine(_uri(db_path))
    assert str(db_path) in str(caught.value)


# -- migrations ---------------------------------------------------------------------------
def test_migrate_creates_the_schema_once(db_path: Path) -> None:
    engine = open_sqlite_engine(_uri(db_path))
    try:
        with pytest.raises(StorageEngineError, match="migrate"):
            engine.get_max_event_id(None)  # no schema yet: the error says what to do
        assert engine.migrate() == _schema.latest_version() == 1
        assert engine.migrate() == 1
    finally:
        engine.close()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"events", "aggregates", "snapshots", "subscriptions"} <= tables


def test_concurrent_migrations_apply_each_version_once(db_path: Path) -> None:
    engines = [open_sqlite_engine(_uri(db_path)) for _ in range(4)]
    results: list[int] = []
    threads = [threading.Thread(target=lambda e=e: results.append(e.migrate())) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        engine.close()
    assert results == [1, 1, 1, 1]
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == 1


def test_newer_schema_is_refused_naming_both_versions(
    engine: SqliteStorageEngine, db_path: Path
) -> None:
    with sqlite3.connect(db_path) as raw:
        raw.execute("INSERT INTO schema_migrations VALUES (7, 0)")
    with pytest.raises(SchemaVersionError) as caught:
        engine.migrate()
    with pytest.raises(SchemaVersionError) as at_open:
        open_sqlite_engine(_uri(db_path))
    for error in (caught.value, at_open.value):
        assert "version 7" in str(error) and "version 1" in str(error)
        assert str(db_path) in str(error)


def test_failed_migration_leaves_nothing_behind(
    engine: SqliteStorageEngine, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _schema.Migration(
        2, "0002_broken.sql", ("CREATE TABLE half_done (id INTEGER)", "THIS IS NOT SQL")
    )
    shipped = _schema.migrations()
    monkeypatch.setattr(_schema, "migrations", lambda: (*shipped, broken))
    with pytest.raises(StorageEngineError, match="syntax error"):
        engine.migrate()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == 1
        assert (
            raw.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
        )


def test_split_statements_keeps_triggers_and_strings_whole() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');

    CREATE TRIGGER t_ins AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d';
    END;
    """
    statements = _schema.split_statements(script)
    assert len(statements) == 2
    assert statements[0].startswith("CREATE TABLE") and "'a;b'" in statements[0]
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")


def test_shipped_migrations_are_numbered_from_one() -> None:
    assert [m.version for m in _schema.migrations()] == [1]
    assert _schema.migrations()[0].name == "0001_initial.sql"


def test_malformed_uri_error_hides_the_password() -> None:
    from evercore.engines.sqlite.engine import open_sqlite_engine
    from evercore.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        open_sqlite_engine("sqlite://user:sup3rsecret@host/x.db")
    assert "sup3rsecret" not in str(raised.value)
    assert "***" in str(raised.value)
