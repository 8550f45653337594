"""Payload round trips: what the serializer writes, the decoder rebuilds."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from decimal import Decimal
from uuid import UUID

import pytest
from evercore import DecodeError, _kernels
from evercore.events import decode_json_as


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Line:
    sku: UUID
    price: Decimal
    colour: Colour


@dataclass
class Order:
    placed: datetime
    lines: list[Line]
    due: date | None = None
    cutoff: time | None = None
    totals: dict[str, Decimal] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    note: str | None = None


def test_typed_payload_round_trips_exactly() -> None:
    order = Order(
        placed=datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=timezone.utc),
        lines=[Line(UUID(int=7), Decimal("19.990"), Colour.BLUE)],
        due=date(2024, 3, 1),
        cutoff=time(17, 30),
        totals={"eur": Decimal("19.990")},
        tags=("gift", "rush"),
        note="ünïcode 🎉",
    )
    text = _kernels.dumps(order, "Order")
    assert decode_json_as(Order, text, "Order") == order


def test_unknown_keys_are_ignored_and_missing_ones_take_defaults() -> None:
    text = '{"placed":"2024-01-01T00:00:00Z","lines":[],"retired_field":1}'
    decoded = decode_json_as(Order, text, "Order")
    assert decoded.placed == datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert (decoded.lines, decoded.note, decoded.tags) == ([], None, ())


def test_undecodable_text_names_the_type() -> None:
    with pytest.raises(DecodeError, match="Order"):
        decode_json_as(Order, '{"placed": "not a time", "lines": []}', "Order")
    with pytest.raises(DecodeError, match="Order"):
        decode_json_as(Order, "[1, 2", "Order")
