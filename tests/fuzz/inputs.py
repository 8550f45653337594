"""Python values built from fuzzer bytes: payloads of every kind, columns, times, JSON text.

Everything reads from an ``atheris.FuzzedDataProvider`` so that libFuzzer's mutations
of the bytes steer the shape of the values (the kind of each node, the sizes, the
edge values), not just their contents.
"""

from __future__ import annotations

import enum
import json
import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any
from uuid import UUID

import atheris  # type: ignore[import-untyped]
import msgspec
import pydantic
from evercore._pure import MAX_NESTING


class Kind(enum.Enum):
    """Enum values of every sort, unserializable ones included."""

    NUMBER = 1
    TEXT = "text"
    NESTED = (1, ("a", None))
    NAN = math.nan
    RAW = b"raw"


class Level(enum.IntEnum):
    """An Enum that is also an int: either rule may claim it, and both twins must agree."""

    LOW = 1
    HIGH = 2**70


class Colour(str, enum.Enum):
    """An Enum that is also a str."""

    RED = "red"
    SURROGATE = "\ud800"


class Tag(str):
    """A str subclass."""


class Count(int):
    """An int subclass."""


class Ratio(float):
    """A float subclass."""


@dataclass
class Box:
    """A dataclass payload holding anything."""

    value: Any
    label: str = ""


class Model(pydantic.BaseModel):
    """A pydantic payload holding anything (its own JSON dump may refuse it)."""

    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    value: Any = None


class Struct(msgspec.Struct):
    """A msgspec payload holding anything (``to_builtins`` may refuse it)."""

    value: Any = None


INT8_EDGES = (0, 1, -1, 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, 2**70)
DIGIT_LIMIT_EDGES = (10**4299, 10**4300, -(10**4300))
"""Around CPython's 4300-digit limit on int-to-str conversion."""
SPECIAL_DECIMALS = ("NaN", "sNaN", "-Infinity", "-0", "1E+999999", "1E-999999")
SPECIAL_TEXT = ("", "\x00", "\ud800", "a\udfffb", '"', "\\", "\u2028", "😀", "é" * 3)


class Values:
    """Draws values from fuzzer bytes; ``budget`` bounds the nodes of one payload."""

    def __init__(self, data: bytes, budget: int = 40) -> None:
        self.fdp = atheris.FuzzedDataProvider(data)
        self.budget = budget
        """True once a payload holds a pydantic model or a msgspec Struct."""

    # --------------------------------------------------------------- scalars --
    def small_int(self, low: int = -3, high: int = 12) -> int:
        """An int in ``[low, high]``."""
        return int(self.fdp.ConsumeIntInRange(low, high))

    def pick(self, options: tuple[Any, ...] | list[Any]) -> Any:
        """One of ``options``."""
        return options[self.small_int(0, len(options) - 1)]

    def integer(self, huge: bool = True) -> int:
        """An int of any size: small, int8 edges, 1 to 10 random bytes, or (when ``huge``)
        near the digit limit."""
        choice = self.small_int(0, 3 if huge else 2)
        if choice == 0:
            return self.small_int(-3, 12)
        if choice == 1:
            return int(self.pick(INT8_EDGES))
        if choice == 2:
            return int(self.fdp.ConsumeInt(self.small_int(1, 10)))
        return int(self.pick(DIGIT_LIMIT_EDGES))

    def text(self, max_length: int = 12) -> str:
        """Text with NULs, lone surrogates and non-ASCII likely."""
        if self.fdp.ConsumeBool():
            return str(self.pick(SPECIAL_TEXT))
        return str(self.fdp.ConsumeUnicode(self.small_int(0, max_length)))

    def timezone(self) -> tzinfo | None:
        """None (naive), UTC, or any whole-minute offset."""
        choice = self.small_int(0, 2)
        if choice == 0:
            return None
        if choice == 1:
            return timezone.utc
        return timezone(timedelta(minutes=self.small_int(-1439, 1439)))

    def datetime(self) -> datetime:
        """Any datetime, year 1 and year 9999 (overflow on conversion to UTC) included."""
        return datetime(
            self.small_int(1, 9999),
            self.small_int(1, 12),
            self.small_int(1, 28),
            self.small_int(0, 23),
            self.small_int(0, 59),
            self.small_int(0, 59),
            self.small_int(0, 999_999),
            tzinfo=self.timezone(),
        )

    def decimal(self) -> Decimal:
        """A finite Decimal of any exponent, or a special one (NaN, sNaN, infinities)."""
        if self.fdp.ConsumeBool():
            return Decimal(self.pick(SPECIAL_DECIMALS))
        return Decimal(self.integer()).scaleb(self.small_int(-30, 30))

    def scalar(self) -> object:
        """A leaf value: JSON-able, JSON-able only by convention, or not at all."""
        makers: tuple[Callable[[], object], ...] = (
            lambda: None,
            self.fdp.ConsumeBool,
            self.integer,
            self.fdp.ConsumeFloat,  # NaN and infinities included
            self.text,
            lambda: self.fdp.ConsumeBytes(self.small_int(0, 4)),
            self.datetime,
            lambda: self.datetime().date(),
            lambda: self.datetime().timetz(),
            lambda: UUID(bytes=self.fdp.ConsumeBytes(16).ljust(16, b"\x00")),
            self.decimal,
            lambda: self.pick(list(Kind) + list(Level) + list(Colour)),
            lambda: Tag(self.text()),
            lambda: Count(self.integer()),
            lambda: Ratio(self.fdp.ConsumeFloat()),
            lambda: self.pick((object(), 1j, {1, 2}, frozenset(), range(2), ..., type)),
        )
        return self.pick(makers)()

    # ------------------------------------------------------------ containers --
    def payload(self) -> object:
        """A payload of any shape: nested containers, models, cycles, nesting past the limit."""
        self.budget -= 1
        if self.budget <= 0 or self.fdp.ConsumeProbability() < 0.4:
            return self.scalar()
        makers: tuple[Callable[[], object], ...] = (
            lambda: self.items(),
            lambda: tuple(self.items()),
            lambda: {self.text(4): item for item in self.items()},
            lambda: {self.pick((1, None, True, ("t",), 1.5)): self.payload()},
            lambda: types.MappingProxyType({self.text(4): self.payload()}),
            lambda: Box(self.payload(), self.text()),
            lambda: self.foreign(Model),
            lambda: self.foreign(Struct),
            self.deep,
            self.cycle,
        )
        return self.pick(makers)()

    def items(self) -> list[object]:
        """Up to four payloads."""
        return [self.payload() for _ in range(self.small_int(0, 4))]

    def foreign(self, cls: type[Model] | type[Struct]) -> object:
        """A pydantic model or msgspec Struct holding any payload."""
        return cls(value=self.payload())

    def deep(self) -> object:
        """Lists nested around :data:`MAX_NESTING` levels deep."""
        value: object = self.scalar()
        for _ in range(self.small_int(MAX_NESTING - 3, MAX_NESTING + 3)):
            value = [value]
        return value

    def cycle(self) -> object:
        """A list or dict that contains itself."""
        if self.fdp.ConsumeBool():
            looped: list[object] = [self.scalar()]
            looped.append(looped)
            return looped
        mapping: dict[str, object] = {}
        mapping[self.text(4)] = mapping
        return mapping

    # ------------------------------------------------------------ JSON text --
    def json_value(self, depth: int = 0) -> object:
        """Plain JSON data (NaN, Infinity and huge ints included) for near-valid JSON text."""
        choice = self.small_int(0, 7) if depth < 4 else self.small_int(0, 4)
        if choice == 0:
            return None
        if choice == 1:
            return self.fdp.ConsumeBool()
        if choice == 2:
            return self.integer(huge=False)  # json.dumps cannot render the huge ones
        if choice == 3:
            return self.fdp.ConsumeFloat()
        if choice == 4:
            return self.pick((self.text(), self.datetime().isoformat(), str(self.decimal())))
        if choice == 5:
            return [self.json_value(depth + 1) for _ in range(self.small_int(0, 3))]
        return {self.text(6): self.json_value(depth + 1) for _ in range(self.small_int(0, 3))}

    def json_text(self, fields: tuple[str, ...] = ()) -> str:
        """Text for a decoder: raw garbage, any JSON, an object with (some of) ``fields``,
        or brackets nested deeper than any parser's recursion limit."""
        choice = self.small_int(0, 4)
        if choice == 0:
            return str(self.fdp.ConsumeUnicode(self.small_int(0, 64)))
        if choice == 4:  # past CPython's 4300-digit limit on str-to-int conversion
            return "[" + "9" * self.small_int(4290, 4310) + "]"
        if choice == 1:
            return json.dumps(self.json_value(), ensure_ascii=self.fdp.ConsumeBool())
        if choice == 2:
            chosen = {name: self.json_value(1) for name in fields if self.fdp.ConsumeBool()}
            return json.dumps(chosen, ensure_ascii=False)
        opener = self.pick(("[", '{"value":', '{"a":['))
        return str(opener) * self.small_int(1, 100_000)
