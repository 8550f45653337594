"""Parsing of ``sqlite://`` URIs and engine options.

URIs follow SQLAlchemy's convention: ``sqlite:///relative.db``,
``sqlite:////absolute/path.db``, ``sqlite://:memory:`` (``sqlite://`` alone is also
an in-memory database, private to one engine). Options come from the query string
(``?synchronous=FULL&busy_timeout=5``) or as keyword arguments; a keyword wins over
the same option in the query string.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from evercore.errors import ConfigurationError
from evercore.registry import redact_uri

SCHEME_PREFIX = "sqlite://"
MEMORY = ":memory:"

SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
"""Values of ``PRAGMA synchronous``. NORMAL (the default) is durable against a
process crash in WAL mode; FULL also survives a power loss at some write cost."""

DEFAULT_BUSY_TIMEOUT = 5.0
DEFAULT_POOL_SIZE = 4
DEFAULT_CACHE_SIZE_KIB = 16384


@dataclass(frozen=True, slots=True)
class SqliteConfig:
    """Where the database lives and how connections to it are set up.

    ``path`` is None for an in-memory database. ``busy_timeout`` is in seconds: how
    long a writer waits for another connection's write lock before giving up.
    ``pool_size`` is how many idle connections are kept for reuse. ``cache_size``
    is SQLite's page cache per connection, in KiB.
    """

    path: str | None
    synchronous: str = "NORMAL"
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    pool_size: int = DEFAULT_POOL_SIZE
    cache_size: int = DEFAULT_CACHE_SIZE_KIB

    @property
    def label(self) -> str:
        """How errors name the database: its path, or ``:memory:``."""
        return self.path if self.path is not None else MEMORY


def parse_config(uri: str, options: Mapping[str, Any]) -> SqliteConfig:
    """The configuration that ``uri`` and keyword ``options`` describe.

    A malformed URI, an unknown option or a bad value is a ``ConfigurationError``
    naming it.
    """
    if not isinstance(uri, str) or not uri.lower().startswith(SCHEME_PREFIX):
        raise ConfigurationError(
            f"not a SQLite URI: {redact_uri(uri)!r}; expected sqlite:///relative.db, "
            "sqlite:////absolute/path.db or sqlite://:memory:"
        )
    rest, _, query = uri[len(SCHEME_PREFIX) :].partition("?")
    merged: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
    merged.update(options)
    unknown = sorted(set(merged) - set(_PARSERS))
    if unknown:
        raise ConfigurationError(
            f"unknown SQLite option {unknown[0]!r} in {redact_uri(uri)!r}; "
            f"known options: {', '.join(sorted(_PARSERS))}"
        )
    values: dict[str, Any] = {name: _PARSERS[name](name, value) for name, value in merged.items()}
    path = _parse_path(uri, rest)
    if path is None:
        # Nothing of an in-memory database survives the process: skip the fsyncs.
        values.setdefault("synchronous", "OFF")
    return SqliteConfig(path=path, **values)


def _parse_path(uri: str, rest: str) -> str | None:
    if rest in ("", MEMORY, "/" + MEMORY):
        return None
    if not rest.startswith("/") or rest == "/":
        raise ConfigurationError(
            f"malformed SQLite URI {redact_uri(uri)!r}: expected sqlite:///relative.db, "
            "sqlite:////absolute/path.db or sqlite://:memory: (no host part)"
        )
    # "sqlite:///x.db" -> "x.db" and "sqlite:////abs/x.db" -> "/abs/x.db".
    return unquote(rest[1:])


def _synchronous(name: str, value: Any) -> str:
    level = str(value).upper()
    if level not in SYNCHRONOUS_LEVELS:
        raise ConfigurationError(
            f"bad SQLite option {name}={value!r}; expected one of {', '.join(SYNCHRONOUS_LEVELS)}"
        )
    return level


def _seconds(name: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or isinstance(value, bool):
        raise ConfigurationError(
            f"bad SQLite option {name}={value!r}; expected a number of seconds >= 0"
        )
    return seconds


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or isinstance(value, (bool, float)):
        raise ConfigurationError(f"bad SQLite option {name}={value!r}; expected an integer >= 1")
    return number


_PARSERS: dict[str, Callable[[str, Any], Any]] = {
    "synchronous": _synchronous,
    "busy_timeout": _seconds,
    "pool_size": _positive_int,
    "cache_size": _positive_int,
}
