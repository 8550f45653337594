"""Translate psycopg errors into evercore's error hierarchy, without leaking secrets."""

from __future__ import annotations

import re
from urllib.parse import unquote

import psycopg
import psycopg.errors
import psycopg_pool
from evercore.errors import (
    ConcurrencyError,
    ConstraintViolationError,
    NotFoundError,
    StorageEngineError,
)

EVENTS_UNIQUE_CONSTRAINT = "events_aggregate_sequence"
"""The constraint a second event with an existing (aggregate, sequence) breaks."""

_KEY_PAIR = re.compile(r"\((-?\d+), ?(-?\d+)\)")


def scrub(text: str, password: str | None) -> str:
    """``text`` with ``password`` (as written in the URI, and percent-decoded) replaced
    by ``***``: driver messages may quote a conninfo."""
    if password:
        for form in {password, unquote(password)}:
            text = text.replace(form, "***")
    return text


def driver_message(error: BaseException, password: str | None) -> str:
    """The first line of a driver error, scrubbed of the password."""
    text = str(error).strip().splitlines()
    return scrub(text[0] if text else type(error).__name__, password)


def translate(error: Exception, action: str, password: str | None) -> StorageEngineError:
    """The evercore error for a psycopg (or pool) ``error`` raised while doing ``action``.

    A duplicate (aggregate, sequence) becomes ``ConcurrencyError`` with both values
    parsed from the server's detail; other unique violations become
    ``ConstraintViolationError``; a missing referenced row becomes ``NotFoundError``;
    everything else (lost connections, timeouts, pool exhaustion) is a plain
    ``StorageEngineError``. The caller chains ``error`` as ``__cause__``.
    """
    message = f"PostgreSQL: failed to {action}: {driver_message(error, password)}"
    if isinstance(error, psycopg.errors.UniqueViolation):
        diag = error.diag
        if diag.constraint_name == EVENTS_UNIQUE_CONSTRAINT:
            found = _KEY_PAIR.search(diag.message_detail or "")
            if found is not None:
                return ConcurrencyError(int(found.group(1)), int(found.group(2)))
        detail = scrub(diag.message_detail or "", password)
        return ConstraintViolationError(f"{message} ({detail})" if detail else message)
    if isinstance(error, psycopg.errors.ForeignKeyViolation):
        return NotFoundError(message)
    if isinstance(error, psycopg_pool.PoolTimeout):
        return StorageEngineError(
            f"PostgreSQL: failed to {action}: no connection available from the pool "
            f"({driver_message(error, password)})"
        )
    return StorageEngineError(message)
