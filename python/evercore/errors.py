"""The one error hierarchy of evercore.

Every error the library raises on purpose derives from :class:`EvercoreError`.
Storage problems derive from :class:`StorageEngineError`, which carries the Go
library's ``error_type`` (``"not_found"``, ``"constraint_violation"`` or None) and
chains the driver's exception as ``__cause__``.

Messages name the bad value; they never contain a password from a URI.
"""

from __future__ import annotations

ERROR_NOT_FOUND = "not_found"
"""``StorageEngineError.error_type`` of a lookup that found nothing (Go ``ErrorNotFound``)."""

ERROR_CONSTRAINT_VIOLATION = "constraint_violation"
"""``StorageEngineError.error_type`` of a uniqueness violation (Go
``ErrorTypeConstraintViolation``)."""


class EvercoreError(Exception):
    """Base class of every error raised by evercore."""


class StorageEngineError(EvercoreError):
    """A storage engine failed; ``error_type`` classifies it (Go ``StorageEngineError``)."""

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type


class NotFoundError(StorageEngineError):
    """A lookup by id or key found nothing (or found an aggregate of another type)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ERROR_NOT_FOUND)


class ConstraintViolationError(StorageEngineError):
    """A write broke a uniqueness rule, such as a duplicate natural key."""

    def __init__(self, message: str) -> None:
        super().__init__(message, ERROR_CONSTRAINT_VIOLATION)


class ConcurrencyError(ConstraintViolationError):
    """Another writer already stored this (aggregate, sequence): reload and retry.

    The transaction that raised it wrote nothing.
    """

    def __init__(self, aggregate_id: int, sequence: int, message: str | None = None) -> None:
        super().__init__(
            message
            or f"concurrency conflict: aggregate {aggregate_id} already has an event "
            f"with sequence {sequence}"
        )
        self.aggregate_id = aggregate_id
        self.sequence = sequence


class CommitOutcomeUnknownError(StorageEngineError):
    """The connection was lost after COMMIT was sent: the context may or may not be stored.

    Do not blindly retry: reload the aggregate and check whether its events are there.
    """


class SchemaVersionError(StorageEngineError):
    """The database's schema is newer than this version of the code understands."""


class KeyTooLongError(EvercoreError, ValueError):
    """A natural key is longer than the engine's ``max_key_length`` (Go
    ``ErrorKeyExceedsMaximumLength``)."""

    def __init__(self, key: str, max_length: int) -> None:
        shown = key if len(key) <= 80 else key[:77] + "..."
        super().__init__(
            f"natural key {shown!r} is {len(key)} characters long; the maximum is {max_length}"
        )
        self.key = key
        self.max_length = max_length


class InvalidKeyError(EvercoreError, ValueError):
    """A natural key that no engine may store (empty, NUL bytes, lone surrogates)."""


class LimitExceededError(EvercoreError, ValueError):
    """An input breaks a documented limit of :mod:`evercore.limits` (payload size,
    events per context, name or reference length, text or a type no backend can
    store). Raised before anything is written."""


class InvalidEventError(EvercoreError, ValueError):
    """An event's time is not a timezone-aware ``datetime``, or the object applied is
    not an event at all. Raised when the event is captured, before any I/O."""


class EventStateIsNotAStateEvent(EvercoreError):
    """A ``StateAggregate`` got an event that is not a ``StateEvent`` and has no
    ``handle_other_events`` (Go ``ErrEventStateIsNotAStateEvent``)."""


class SubscriptionAlreadyOwned(EvercoreError):
    """Another runner holds an unexpired lease on this subscription."""


class SubscriptionInactive(EvercoreError):
    """The subscription has been switched off."""


class SubscriptionLeaseLost(EvercoreError):
    """This runner no longer holds the subscription's lease, so it may not move the cursor."""


class SequenceError(EvercoreError, ValueError):
    """A context's events for one aggregate are not contiguous from its known sequence + 1
    (or a sequence is below 1). Raised before any I/O."""

    def __init__(self, aggregate_id: int, sequence: int, message: str) -> None:
        super().__init__(message)
        self.aggregate_id = aggregate_id
        self.sequence = sequence


class UnknownBackendError(EvercoreError, LookupError):
    """No installed plugin handles this URI scheme."""


class ConfigurationError(EvercoreError, ValueError):
    """A malformed URI or a bad option (schema name, key prefix, pool size, ...)."""


class DecodeError(EvercoreError, ValueError):
    """A stored event or snapshot could not be decoded into its Python class."""


class SerializationError(EvercoreError, ValueError):
    """A payload could not be serialized to JSON (names the event type and the field)."""


__all__ = [
    "ERROR_CONSTRAINT_VIOLATION",
    "ERROR_NOT_FOUND",
    "CommitOutcomeUnknownError",
    "ConcurrencyError",
    "ConfigurationError",
    "ConstraintViolationError",
    "DecodeError",
    "EventStateIsNotAStateEvent",
    "EvercoreError",
    "InvalidEventError",
    "InvalidKeyError",
    "KeyTooLongError",
    "LimitExceededError",
    "NotFoundError",
    "SchemaVersionError",
    "SequenceError",
    "SerializationError",
    "StorageEngineError",
    "SubscriptionAlreadyOwned",
    "SubscriptionInactive",
    "SubscriptionLeaseLost",
    "UnknownBackendError",
]
