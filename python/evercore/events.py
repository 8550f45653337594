"""Events: the ``EventState`` protocol, ``StateEvent``, the decorators and the decoder registry.

``@event`` and ``@state_event`` replace the Go code generator ``evercoregen``: they
name a class as an event type and register it so that stored events decode back
into instances of it.

* ``@event`` marks a class whose instances *are* events (they have ``event_type``
  and ``serialize()``); an aggregate handles them itself.
* ``@state_event`` marks a payload class whose fields are copied onto a
  ``StateAggregate``'s state; ``ctx.apply_event_to(agg, payload)`` wraps an
  instance in :class:`StateEvent` for you.
"""

from __future__ import annotations

import functools
import json
import threading
import typing
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, overload, runtime_checkable

from evercore import _kernels
from evercore._typed_json import converter_for
from evercore.errors import DecodeError
from evercore.values import SerializedEvent

T = TypeVar("T")
C = TypeVar("C", bound=type)


@runtime_checkable
class EventState(Protocol):
    """An event that knows its type name and serializes itself (Go ``EventState``)."""

    @property
    def event_type(self) -> str:
        """The registered name of the event type."""
        ...

    def serialize(self) -> str:
        """The event's state as text (JSON for evercore's own serializers)."""
        ...


EventDecoder = Callable[[SerializedEvent], "EventState | None"]
"""Maps a stored event to an event object, or None when it does not know the type."""


class StateEvent:
    """An event that carries a payload whose fields update a ``StateAggregate``'s state.

    ``event_type`` is the payload class's registered name: the class name unless
    ``@state_event(name=...)`` says otherwise.
    """

    __slots__ = ("payload",)

    def __init__(self, payload: object) -> None:
        self.payload = payload

    @property
    def event_type(self) -> str:
        """The payload class's registered event-type name."""
        cls = type(self.payload)
        return _state_event_names.get(cls) or event_type_name(cls)

    def serialize(self) -> str:
        """The payload as compact JSON."""
        return _kernels.dumps(self.payload, self.event_type)

    def __repr__(self) -> str:
        return f"StateEvent({self.payload!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StateEvent) and other.payload == self.payload

    __hash__ = None  # type: ignore[assignment]  # mutable payloads: not hashable


_lock = threading.Lock()
_event_classes: dict[str, type] = {}
_state_event_classes: dict[str, type] = {}
_state_event_names: dict[type, str] = {}
_decoders: list[EventDecoder] = []
_EVENT_NAME_ATTR = "__evercore_event_type__"
_generation = 0  # bumped on every registration: lets callers cache what they derive from it


def event_type_name(cls: type) -> str:
    """The registered event-type name of ``cls`` (its class name when not decorated)."""
    name: str = getattr(cls, _EVENT_NAME_ATTR, None) or cls.__name__
    return name


def _register(registry: dict[str, type], cls: type, name: str) -> None:
    global _generation
    with _lock:
        _generation += 1
        other = _event_classes.get(name) or _state_event_classes.get(name)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"event type name {name!r} is already registered by {other.__module__}."
                f"{other.__qualname__}; pass name=... to tell {cls.__qualname__} apart"
            )
        registry[name] = cls


@overload
def event(cls: C, /) -> C: ...
@overload
def event(*, name: str | None = None) -> Callable[[C], C]: ...
def event(cls: C | None = None, /, *, name: str | None = None) -> C | Callable[[C], C]:
    """Class decorator: instances of the class are events of type ``name`` (default: the
    class name). Adds ``event_type`` and a JSON ``serialize()`` unless the class defines
    them, and registers the class so stored events decode into it."""

    def decorate(target: C) -> C:
        type_name = name or target.__name__
        setattr(target, _EVENT_NAME_ATTR, type_name)
        if "event_type" not in target.__dict__:
            setattr(target, "event_type", type_name)  # noqa: B010 (a class decorator adds it)
        if "serialize" not in target.__dict__:
            setattr(target, "serialize", lambda self: _kernels.dumps(self, type_name))  # noqa: B010
        _register(_event_classes, target, type_name)
        return target

    return decorate(cls) if cls is not None else decorate


@overload
def state_event(cls: C, /) -> C: ...
@overload
def state_event(*, name: str | None = None) -> Callable[[C], C]: ...
def state_event(cls: C | None = None, /, *, name: str | None = None) -> C | Callable[[C], C]:
    """Class decorator: the class is a ``StateEvent`` payload of type ``name`` (default:
    the class name), registered so stored events decode into ``StateEvent(instance)``."""

    def decorate(target: C) -> C:
        type_name = name or target.__name__
        setattr(target, _EVENT_NAME_ATTR, type_name)
        _register(_state_event_classes, target, type_name)
        _state_event_names[target] = type_name
        return target

    return decorate(cls) if cls is not None else decorate


def state_event_name(cls: type) -> str | None:
    """The event-type name of a ``@state_event`` class, None for any other class."""
    return _state_event_names.get(cls)


def register_event_decoder(*decoders: EventDecoder) -> None:
    """Add decoders tried (in order, before the decorated classes) by :func:`decode_event`
    (Go ``RegisterEventDecoder``). A decoder returns None for types it does not know."""
    global _generation
    with _lock:
        _generation += 1
        _decoders.extend(decoders)


def decode_event(ev: SerializedEvent) -> tuple[bool, EventState]:
    """Decode a stored event: ``(is_state_event, event)`` (Go ``DecodeEvent``).

    Raises ``DecodeError`` naming the event type when no decoder or decorated class
    knows it, or when its state does not parse.
    """
    for decoder in _decoders:
        decoded = decoder(ev)
        if decoded is not None:
            return isinstance(decoded, StateEvent), decoded
    payload_class = _state_event_classes.get(ev.event_type)
    if payload_class is not None:
        return True, StateEvent(decode_json_as(payload_class, ev.state, ev.event_type))
    event_class = _event_classes.get(ev.event_type)
    if event_class is not None:
        custom = getattr(event_class, "deserialize", None)
        if callable(custom):
            return False, typing.cast(EventState, custom(ev.state))
        return False, typing.cast(EventState, decode_json_as(event_class, ev.state, ev.event_type))
    raise DecodeError(
        f"no decoder for event type {ev.event_type!r} (event {ev.event_id}, aggregate "
        f"{ev.aggregate_id}, sequence {ev.sequence}); decorate its class with "
        "@evercore.state_event or @evercore.event, or call register_event_decoder()"
    )


def state_payload_decoder(event_type: str) -> Callable[[str], object] | None:
    """For hot loops: a function decoding the stored state of a ``@state_event`` type
    straight into its payload (``DecodeError`` on bad text), or None when the type is
    not a state event or custom decoders are registered (they take precedence)."""
    payload_class = state_payload_class(event_type)
    if payload_class is None:
        return None
    return functools.partial(decode_json_as, payload_class, what=event_type)


def registry_generation() -> int:
    """A number that changes whenever an event class or decoder is registered."""
    return _generation


def state_payload_class(event_type: str) -> type | None:
    """The ``@state_event`` class stored events of ``event_type`` decode into, or None
    when the type is not a state event or custom decoders are registered (they take
    precedence, so the class alone does not say how the events decode)."""
    return None if _decoders else _state_event_classes.get(event_type)


def decode_json_as(cls: type[T], text: str, what: str) -> T:
    """Parse JSON ``text`` into an instance of ``cls`` (a dataclass, a pydantic model, a
    msgspec Struct, or a class taking the JSON object's keys as keyword arguments)."""
    try:
        decoded: T = text_decoder_for(cls)(text)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"cannot decode {what!r} as {cls.__qualname__}: {exc}") from exc
    return decoded


TextDecoder = Callable[[str], Any]
_text_decoders: dict[type, TextDecoder] = {}


def text_decoder_for(cls: type) -> TextDecoder:
    """A function parsing JSON text into ``cls``, built once per class. It raises the
    parser's own exceptions; :func:`decode_json_as` wraps them in ``DecodeError``."""
    found = _text_decoders.get(cls)
    if found is None:
        found = _text_decoders[cls] = _build_text_decoder(cls)
    return found


def _build_text_decoder(cls: type) -> TextDecoder:
    validate_json = getattr(cls, "model_validate_json", None)
    if validate_json is not None:  # pydantic
        return typing.cast(TextDecoder, validate_json)
    if hasattr(cls, "__struct_fields__"):  # msgspec
        import msgspec

        return msgspec.json.Decoder(cls).decode
    convert = converter_for(cls)
    if convert is None:
        return _loads
    return lambda text: convert(_loads(text))


# The C scanner behind json.loads; typeshed does not declare the attribute.
_scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads(text: str) -> Any:
    """``json.loads`` without its Python-level wrapper frames for the common case: text
    our serializers wrote (no surrounding whitespace)."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return json.loads(text)  # raises the parser's own, well-worded error
    return value if end == len(text) else json.loads(text)


__all__ = [
    "EventDecoder",
    "EventState",
    "StateEvent",
    "decode_event",
    "decode_json_as",
    "event",
    "event_type_name",
    "register_event_decoder",
    "registry_generation",
    "state_event",
    "state_event_name",
    "state_payload_class",
    "state_payload_decoder",
    "text_decoder_for",
]
