"""Rehydrating a ``StateAggregate`` in one pass over its events' JSON.

Loading an aggregate decodes every stored event into its ``@state_event`` class and
copies the payload's non-None fields onto the state (``copy_fields``), event after
event. For plain dataclasses that outcome is decided by, per field, the last event
that gave it a value; the ``fold_state_fields`` kernel finds those by scanning the
JSON text once, and only the winning values are parsed. Anything the kernel does
not model exactly makes :func:`fold_into` answer False, and the caller folds event
by event as before: both ways leave the same state.

What qualifies (checked once per class): payload classes are stdlib dataclasses with
the generated ``__init__``, no ``__post_init__``, no ``InitVar``, ``ClassVar`` or
``init=False`` fields and no ``default_factory``; fields that need converting
(datetimes, enums, nested dataclasses: :mod:`evercore._typed_json`) are converted
in every event, as decoding would, and a value that fails sends the run to the
event-by-event path, which reports it. The state is a dataclass whose attributes
are set plainly, or a frozen dataclass with the generated ``__init__`` and no
``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import threading
import typing
from collections.abc import Sequence
from typing import Any

from evercore import _kernels, events
from evercore._pure import (
    FIELD_COPIED,
    FIELD_COPIED_WITH_DEFAULT,
    FIELD_IGNORED,
    FIELD_REQUIRED,
)
from evercore._typed_json import Converter, converter_for
from evercore.values import SerializedEvent


class _Plans:
    """The kernel's arguments for one state class: a plan per payload class seen.

    ``args`` is replaced as a whole when a plan is added, so a fold running on
    another thread always sees a consistent set."""

    def __init__(self, state_fields: frozenset[str]) -> None:
        self.state_fields = state_fields
        self.generation = events.registry_generation()
        self.args: _KernelArgs = ({}, [], [], [], [])
        self.unsupported: set[str] = set()

    def add(self, event_type: str) -> bool:
        """Plan events of ``event_type``; False when their class does not qualify."""
        plans, kinds, defaults, converters, fields = self.args
        if event_type in plans:
            return True
        payload_class = events.state_payload_class(event_type)
        spec = None if payload_class is None else _payload_spec(payload_class)
        if spec is None:
            self.unsupported.add(event_type)
            return False
        fields = fields + [name for name in spec if name not in fields]
        width = len(fields)
        kinds = [k + bytes(width - len(k)) for k in kinds]  # bytes(n): n times FIELD_IGNORED
        defaults = [[*d, *[None] * (width - len(d))] for d in defaults]
        converters = [[*c, *[None] * (width - len(c))] for c in converters]
        plan_kinds, plan_defaults = bytearray(width), list[object]([None] * width)
        plan_converters: list[Converter | None] = [None] * width
        for name, (default, convert) in spec.items():
            column = fields.index(name)
            plan_kinds[column] = self._kind(name, default)
            plan_defaults[column] = None if default is dataclasses.MISSING else default
            plan_converters[column] = convert
        self.args = (
            {**plans, event_type: len(kinds)},
            [*kinds, bytes(plan_kinds)],
            [*defaults, plan_defaults],
            [*converters, plan_converters],
            fields,
        )
        return True

    def _kind(self, name: str, default: object) -> int:
        required = default is dataclasses.MISSING
        if name in self.state_fields:
            return FIELD_COPIED if required else FIELD_COPIED_WITH_DEFAULT
        return FIELD_REQUIRED if required else FIELD_IGNORED


_KernelArgs = tuple[
    dict[str, int], list[bytes], list[list[object]], list[list[Converter | None]], list[str]
]
_lock = threading.Lock()
_plans: dict[type, _Plans | None] = {}


def fold_into(agg: Any, stored: Sequence[SerializedEvent]) -> bool:
    """Fold ``stored`` onto ``agg.state`` as event-by-event copying would; False (and
    ``agg`` untouched) when the events or the state's class do not qualify."""
    state = agg.state
    plans = _plans_for(type(state))
    if plans is None:
        return False
    while True:
        try:
            changes = _kernels.fold_state_fields(stored, *plans.args)
        except KeyError as unknown:
            event_type = unknown.args[0]
            if event_type in plans.unsupported:
                return False
            with _lock:
                if not plans.add(event_type):
                    return False
            continue
        break
    if changes is None:
        return False
    if changes:
        if _sets_plainly(type(state)):
            for name, value in changes.items():
                setattr(state, name, value)
        else:  # a frozen dataclass: copy_fields would replace it
            agg.state = dataclasses.replace(state, **changes)
    return True


def _plans_for(state_class: type) -> _Plans | None:
    plans = _plans.get(state_class)
    if plans is not None and plans.generation == events.registry_generation():
        return plans
    if plans is None and state_class in _plans:
        return None  # the class does not qualify (that never changes)
    fields = _state_fields(state_class)
    fresh = None if fields is None else _Plans(fields)
    with _lock:
        _plans[state_class] = fresh
    return fresh


def _state_fields(cls: type) -> frozenset[str] | None:
    """The field names of a state class the kernel's outcome can be applied to."""
    if not dataclasses.is_dataclass(cls):
        return None
    fields = dataclasses.fields(cls)
    if not _sets_plainly(cls) and not (
        cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
        and _plain_init(cls)
        and all(f.init for f in fields)
    ):
        return None
    return frozenset(f.name for f in fields)


def _payload_spec(cls: type) -> dict[str, tuple[object, Converter | None]] | None:
    """``{field: (default or MISSING, converter or None)}`` of a payload class whose
    decoding is ``cls(**json_object)`` after converting the fields' values, with
    nothing else going on; None otherwise."""
    if not (dataclasses.is_dataclass(cls) and _plain_init(cls)):
        return None
    fields = dataclasses.fields(cls)
    if len(fields) != len(cls.__dataclass_fields__):  # InitVar or ClassVar pseudo-fields
        return None
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: decode the slow way
        return None
    spec: dict[str, tuple[object, Converter | None]] = {}
    for field in fields:
        if not field.init or field.default_factory is not dataclasses.MISSING:
            return None
        spec[field.name] = (field.default, converter_for(hints.get(field.name, Any)))
    return spec


_OBJECT_SETATTR: object = object.__setattr__


def _sets_plainly(cls: type) -> bool:
    """True when setting an attribute of a ``cls`` instance only stores it."""
    return typing.cast(object, cls.__setattr__) is _OBJECT_SETATTR


def _plain_init(cls: type) -> bool:
    """True for a dataclass whose ``__init__`` is the generated one and which has no
    ``__post_init__``: building it only stores its arguments."""
    code = getattr(vars(cls).get("__init__"), "__code__", None)
    return (
        not hasattr(cls, "__post_init__")
        and cls.__dataclass_params__.init  # type: ignore[attr-defined]
        and code is not None
        and code.co_filename == "<string>"  # dataclasses compiles __init__ from a string
    )
