"""Options of the PostgreSQL engine, read from the URI query string and keyword arguments.

Engine options (``schema``, ``pool_size``, ``statement_timeout``, ``application_name``)
are removed from the URI before it reaches libpq; every other query parameter
(``sslmode``, ``connect_timeout``, ...) is passed through. Keyword arguments win
over the URI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from evercore.errors import ConfigurationError
from evercore.registry import redact_uri

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")

DEFAULT_SCHEMA = "evercore"
"""The schema the engine's tables live in unless ``schema`` says otherwise."""

DEFAULT_POOL_SIZE = 5
"""Connections per engine: enough for a few writer threads plus subscription readers."""

DEFAULT_APPLICATION_NAME = "evercore"
"""How the engine's connections show up in ``pg_stat_activity``."""

OPTION_NAMES = ("schema", "pool_size", "statement_timeout", "application_name")
"""The query parameters (and keyword arguments) the engine consumes itself."""


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """Validated engine options.

    ``statement_timeout`` is in seconds (0 = the server's default);
    ``conninfo`` is the libpq URI without the engine's own parameters and may hold a
    password: never show it, show ``redacted`` instead.
    """

    conninfo: str = field(repr=False)
    redacted: str
    schema: str = DEFAULT_SCHEMA
    pool_size: int = DEFAULT_POOL_SIZE
    statement_timeout: float = 0.0
    application_name: str = DEFAULT_APPLICATION_NAME

    @property
    def password(self) -> str | None:
        """The password in the URI, so that error texts can be scrubbed of it."""
        try:
            return urlsplit(self.conninfo).password
        except ValueError:
            return None

    def server_options(self) -> str:
        """The libpq ``options`` string: UTC session time zone and the statement timeout."""
        parts = ["-c TimeZone=UTC"]
        if self.statement_timeout > 0:
            parts.append(f"-c statement_timeout={round(self.statement_timeout * 1000)}")
        return " ".join(parts)


def validate_schema(name: object) -> str:
    """``name`` if it is a plain lower-case SQL identifier, else ``ConfigurationError``."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ConfigurationError(
            f"schema {name!r} is not a valid schema name: use 1-63 lower-case letters, "
            "digits and underscores, not starting with a digit"
        )
    return name


def _positive_int(name: str, value: object) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {value!r}") from None
    if number < 1:
        raise ConfigurationError(f"{name} must be >= 1, got {number}")
    return number


def _seconds(name: str, value: object) -> float:
    try:
        number = float(str(value))
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}") from None
    if not number >= 0 or number == float("inf"):
        raise ConfigurationError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return number


def parse_options(uri: str, **options: Any) -> PostgresOptions:
    """Split ``uri`` into the libpq URI and the engine options, merged with ``options``."""
    redacted = redact_uri(uri)
    try:
        parts = urlsplit(uri)
    except ValueError:
        raise ConfigurationError(f"malformed PostgreSQL URI {redacted!r}") from None
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigurationError(
            f"not a PostgreSQL URI: {redacted!r} (expected postgresql:// or postgres://)"
        )
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ConfigurationError(
            f"unknown PostgreSQL engine option(s) {', '.join(unknown)}; "
            f"known: {', '.join(OPTION_NAMES)}"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    merged: dict[str, Any] = {key: value for key, value in query if key in OPTION_NAMES}
    merged.update(options)
    passthrough = [(key, value) for key, value in query if key not in OPTION_NAMES]
    conninfo = parts._replace(scheme="postgresql", query=urlencode(passthrough)).geturl()
    application_name = str(merged.get("application_name", DEFAULT_APPLICATION_NAME))
    if len(application_name) > 63:
        raise ConfigurationError(
            f"application_name {application_name!r} is longer than 63 characters"
        )
    return PostgresOptions(
        conninfo=conninfo,
        redacted=redact_uri(conninfo),
        schema=validate_schema(merged.get("schema", DEFAULT_SCHEMA)),
        pool_size=_positive_int("pool_size", merged.get("pool_size", DEFAULT_POOL_SIZE)),
        statement_timeout=_seconds("statement_timeout", merged.get("statement_timeout", 0)),
        application_name=application_name,
    )
