"""Parsing and validating a Redis store URI and its options."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from evercore.errors import ConfigurationError
from evercore.registry import redact_uri

DEFAULT_PREFIX = "evercore"
"""The key prefix when the URI has no ``?prefix=``."""

PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
"""Allowed key prefixes: letters, digits, ``_``, ``.`` and ``-``, at most 64 characters.

Nothing that Redis glob patterns (``SCAN MATCH``) or cluster hash tags treat
specially, so every key of a store is found, and only its keys, by ``{prefix}:*``.
"""

DEFAULT_SOCKET_TIMEOUT = 10.0
"""Seconds a command may take before the connection counts as lost."""

_OPTIONS = ("prefix", "socket_timeout", "max_connections")


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where and how to connect: the driver URL (our options removed) and the prefix."""

    driver_url: str = field(repr=False)
    prefix: str
    socket_timeout: float
    max_connections: int | None
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """The URI's password as written and decoded, to scrub from driver messages."""

    def scrub(self, message: str) -> str:
        """``message`` with the URI's password (if any) replaced by ``***``."""
        for secret in self.secrets:
            message = message.replace(secret, "***")
        return message

    @property
    def base(self) -> str:
        """What every key of the store starts with: the prefix as a cluster hash tag."""
        return "{" + self.prefix + "}:"

    @property
    def redacted_url(self) -> str:
        """The URL with any password hidden, for errors and logs."""
        return redact_uri(self.driver_url)


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` if it matches :data:`PREFIX_PATTERN`, else ``ConfigurationError``."""
    if not isinstance(prefix, str) or not PREFIX_PATTERN.fullmatch(prefix):
        raise ConfigurationError(
            f"invalid Redis key prefix {prefix!r}: use 1 to 64 letters, digits, '_', '.' "
            "or '-', not starting with '.' or '-'"
        )
    return prefix


def parse_config(uri: str, options: dict[str, Any]) -> RedisConfig:
    """Split ``uri`` and ``options`` into a :class:`RedisConfig`.

    ``prefix`` may come from the URI query or from ``options`` (not both with
    different values); other query parameters are left for redis-py. Unknown
    ``options`` are refused so that a misspelt option does not go unnoticed.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) for the redis backend: {', '.join(unknown)}; "
            f"supported: {', '.join(_OPTIONS)}"
        )
    try:
        parts = urlsplit(uri)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise ConfigurationError(f"malformed Redis URI {redact_uri(uri)!r}: {exc}") from None
    from_uri = [value for name, value in query if name == "prefix"]
    if len(from_uri) > 1:
        raise ConfigurationError(f"Redis URI {redact_uri(uri)!r} gives prefix more than once")
    prefix = options.get("prefix", from_uri[0] if from_uri else DEFAULT_PREFIX)
    if from_uri and "prefix" in options and options["prefix"] != from_uri[0]:
        raise ConfigurationError(
            f"prefix {options['prefix']!r} (option) contradicts prefix {from_uri[0]!r} "
            f"in the URI {redact_uri(uri)!r}"
        )
    rest = urlencode([(name, value) for name, value in query if name != "prefix"])
    timeout = float(options.get("socket_timeout", DEFAULT_SOCKET_TIMEOUT))
    if timeout <= 0:
        raise ConfigurationError(f"socket_timeout must be > 0, got {timeout}")
    max_connections = options.get("max_connections")
    if max_connections is not None and int(max_connections) < 2:
        raise ConfigurationError(f"max_connections must be >= 2, got {max_connections}")
    return RedisConfig(
        driver_url=parts._replace(query=rest).geturl(),
        prefix=validate_prefix(prefix),
        socket_timeout=timeout,
        max_connections=None if max_connections is None else int(max_connections),
        secrets=_secrets(parts.password),
    )


def _secrets(password: str | None) -> tuple[str, ...]:
    if not password:
        return ()
    return tuple({password, unquote(password)})
