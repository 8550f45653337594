"""Rebuilding typed objects from plain JSON data, the inverse of the payload serializer.

:func:`converter_for` builds, once per type, a function that turns the result of
``json.loads`` into that type; decoding a stored event is then one dict lookup and
one call. Rehydrating an aggregate decodes every event after its snapshot, so this
is a hot path: a converter does no type introspection at call time, and a
dataclass whose fields need no conversion is built straight from the parsed dict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import types
import typing
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any, Union
from uuid import UUID

Converter = Callable[[Any], Any]

_IDENTITY_TYPES: frozenset[Any] = frozenset({Any, object, str, int, bool, float, type(None)})
_cache: dict[Any, Converter | None] = {}
_lock = threading.Lock()


def from_json_value(tp: Any, value: Any) -> Any:
    """``value`` (plain JSON data) rebuilt as type ``tp``."""
    convert = converter_for(tp)
    return value if convert is None or value is None else convert(value)


def converter_for(tp: Any) -> Converter | None:
    """The converter for ``tp``, or None when JSON data already has that type."""
    try:
        return _cache[tp]
    except (KeyError, TypeError):  # TypeError: an unhashable annotation
        pass
    convert = _build(tp)
    with _lock, contextlib.suppress(TypeError):
        _cache[tp] = convert
    return convert


def _build(tp: Any) -> Converter | None:
    if tp in _IDENTITY_TYPES:
        return None
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        members = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return converter_for(members[0]) if len(members) == 1 else None
    if origin in (list, tuple, set, frozenset):
        return _collection_converter(origin, typing.get_args(tp))
    if origin is dict:
        args = typing.get_args(tp)
        return _dict_converter(converter_for(args[1]) if len(args) == 2 else None)
    if origin is not None or not isinstance(tp, type):
        return None  # Literal, Annotated and friends: keep the JSON value
    if dataclasses.is_dataclass(tp):
        return _dataclass_converter(tp)
    return _scalar_converter(tp)


def _nullable(convert: Converter) -> Converter:
    return lambda value: None if value is None else convert(value)


def _collection_converter(origin: type, args: tuple[Any, ...]) -> Converter | None:
    item = converter_for(args[0]) if (args and args[-1] is not Ellipsis) or len(args) == 2 else None
    if item is None:
        return None if origin is list else origin
    item = _nullable(item)
    return lambda value: origin(item(v) for v in value)


def _dict_converter(item: Converter | None) -> Converter | None:
    if item is None:
        return None
    item = _nullable(item)
    return lambda value: {key: item(v) for key, v in value.items()}


def _dataclass_converter(cls: type) -> Converter:
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    converters = {name: converter_for(hints.get(name, Any)) for name in fields}
    typed = {name: _nullable(c) for name, c in converters.items() if c is not None}
    known = frozenset(fields)

    def convert(value: dict[str, Any]) -> Any:
        if value.keys() <= known:
            if not typed:
                return cls(**value)
            kwargs = dict(value)
        else:  # keys this version of the class no longer has are ignored
            kwargs = {name: value[name] for name in fields if name in value}
        for name, field_converter in typed.items():
            if name in kwargs:
                kwargs[name] = field_converter(kwargs[name])
        return cls(**kwargs)

    return convert


def _parse_datetime(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _scalar_converter(tp: type) -> Converter | None:
    if tp is datetime:
        return _parse_datetime
    if tp is date:
        return date.fromisoformat
    if tp is time:
        return time.fromisoformat
    if tp in (UUID, Decimal) or issubclass(tp, Enum):
        return tp
    if tp in (dict, list):
        return None
    return lambda value: tp(**value) if isinstance(value, dict) else value
