"""Aggregates: the ``Aggregate`` protocol and ``StateAggregate[T]``.

A ``StateAggregate`` keeps its state in one object (a dataclass, a pydantic model
or a msgspec Struct). Applying a ``StateEvent`` copies the payload's fields that
also exist on the state, skipping those whose value is None (Go ``CopyFields``);
a snapshot is the state as JSON.

    @dataclass
    class Account:
        owner: str = ""
        balance: int = 0

    class AccountAggregate(StateAggregate[Account]):
        snapshot_frequency = 50      # optional (default 10; 0 = never)
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from evercore import _kernels
from evercore.errors import EventStateIsNotAStateEvent
from evercore.events import EventState, StateEvent, decode_json_as
from evercore.values import Snapshot

T = TypeVar("T")

DEFAULT_SNAPSHOT_FREQUENCY = 10
"""Snapshot every this many events unless the aggregate says otherwise (as in Go)."""


@runtime_checkable
class Aggregate(Protocol):
    """What the store needs of an aggregate (Go ``Aggregate``)."""

    id: int
    sequence: int

    @property
    def aggregate_type(self) -> str:
        """The aggregate type's name."""
        ...

    @property
    def snapshot_frequency(self) -> int:
        """Take a snapshot every this many events; 0 = never."""
        ...

    def get_snapshot_state(self) -> str | None:
        """The state to store as a snapshot, or None for no snapshot."""
        ...

    def apply_event_state(self, event: EventState, event_time: datetime, reference: str) -> None:
        """Update the aggregate's state with one event."""
        ...

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the aggregate's state with a snapshot's."""
        ...


class StateAggregate(Generic[T]):
    """An aggregate whose state is one object of type ``T`` (Go ``StateAggregate[T]``).

    Subclass it as ``class Account(StateAggregate[AccountState])``. The
    ``aggregate_type`` defaults to the state class's name and ``snapshot_frequency``
    to 10; both can be overridden as class attributes. Events that are not
    ``StateEvent``\\ s go to :meth:`handle_other_events`.
    """

    state_type: ClassVar[type[Any]]
    aggregate_type: ClassVar[str]
    snapshot_frequency: ClassVar[int] = DEFAULT_SNAPSHOT_FREQUENCY

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        state_type = _generic_argument(cls)
        if state_type is not None:
            cls.state_type = state_type
            if "aggregate_type" not in cls.__dict__:
                cls.aggregate_type = state_type.__name__

    def __init__(self, state: T | None = None) -> None:
        if not hasattr(type(self), "state_type"):
            raise TypeError(
                f"{type(self).__name__} must subclass StateAggregate[StateClass] "
                "so that it knows its state class"
            )
        self.id = 0
        self.sequence = 0
        self.state: T = state if state is not None else self.state_type()

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(id={self.id}, sequence={self.sequence}, state={self.state!r})"

    def get_snapshot_state(self) -> str | None:
        """The state as compact JSON."""
        return _kernels.dumps(self.state, f"{self.aggregate_type} snapshot")

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the state with the snapshot's."""
        self.state = decode_json_as(
            self.state_type, snapshot.state, f"{self.aggregate_type} snapshot"
        )

    def apply_event_state(self, event: EventState, event_time: datetime, reference: str) -> None:
        """Copy a ``StateEvent``'s non-None fields onto the state; hand other events to
        :meth:`handle_other_events`."""
        if type(event) is StateEvent or isinstance(event, StateEvent):
            self.state = copy_fields(event.payload, self.state)
        else:
            self.handle_other_events(event, event_time, reference)

    def handle_other_events(self, event: EventState, event_time: datetime, reference: str) -> None:
        """Override to handle events that are not ``StateEvent``\\ s (Go ``HandleOtherEvents``)."""
        raise EventStateIsNotAStateEvent(
            f"{type(self).__name__} got event {event.event_type!r}, which is not a StateEvent; "
            "override handle_other_events to handle it"
        )


def _generic_argument(cls: type) -> type | None:
    for base in getattr(cls, "__orig_bases__", ()):
        if typing.get_origin(base) is StateAggregate:
            (argument,) = typing.get_args(base)
            return argument if isinstance(argument, type) else None
    return None


Copier = Callable[[Any, Any], bool]
_copiers: dict[tuple[type, type], Copier] = {}


def copy_fields(source: object, target: T) -> T:
    """Copy ``source``'s fields that ``target`` also has onto ``target``, skipping None
    values (Go ``CopyFields``). A frozen target is replaced; the result is returned."""
    key = (type(source), type(target))
    copier = _copiers.get(key)
    if copier is None:
        copier = _copiers[key] = _compile_copier(_shared_field_names(*key))
    try:
        copier(source, target)
    except (dataclasses.FrozenInstanceError, AttributeError, TypeError):
        changes = {
            name: value
            for name in _shared_field_names(*key)
            if (value := getattr(source, name)) is not None
        }
        replaced: T = _replace(target, changes) if changes else target
        return replaced
    return target


def _shared_field_names(source: type, target: type) -> tuple[str, ...]:
    target_fields = _field_names(target)
    return tuple(name for name in _field_names(source) if name in target_fields)


def _compile_copier(names: tuple[str, ...]) -> Copier:
    """A straight-line function copying ``names``: state events are applied once per
    stored event on every load, so this is a hot path (about 3x a generic loop)."""
    lines = ["def copy(source, target):"]
    for index, name in enumerate(names):
        if not name.isidentifier():
            raise TypeError(f"field name {name!r} is not an identifier")
        lines += [f"    v{index} = source.{name}", f"    if v{index} is not None:",
                  f"        target.{name} = v{index}"]
    lines.append("    return True")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # names are checked identifiers of the classes
    copier: Copier = namespace["copy"]
    return copier


def _replace(target: Any, changes: dict[str, Any]) -> Any:
    if dataclasses.is_dataclass(target) and not isinstance(target, type):
        return dataclasses.replace(target, **changes)
    model_copy = getattr(target, "model_copy", None)
    if callable(model_copy):  # a frozen pydantic model
        return model_copy(update=changes)
    import msgspec  # the only other kind of state whose setattr can fail

    return msgspec.structs.replace(target, **changes)


def _field_names(cls: type) -> frozenset[str]:
    if dataclasses.is_dataclass(cls):
        return frozenset(f.name for f in dataclasses.fields(cls))
    model_fields = getattr(cls, "model_fields", None)
    if isinstance(model_fields, dict):
        return frozenset(model_fields)
    struct_fields = getattr(cls, "__struct_fields__", None)
    if struct_fields is not None:
        return frozenset(struct_fields)
    return frozenset(typing.get_type_hints(cls))


__all__ = ["DEFAULT_SNAPSHOT_FREQUENCY", "Aggregate", "StateAggregate", "copy_fields"]
