"""Each Rust kernel against its pure-Python twin on 100,000 events (goal: >= 5x).

Run: ``.venv/bin/pytest benches/bench_kernels.py --benchmark-timer time.process_time``
(about a minute; CPU time keeps the ratios fair on a busy machine). One
benchmark group per kernel, each with a ``rust`` and a ``twin`` row; the speed-up
of every kernel (twin median / Rust median, measured in this run) is printed at
the end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from evercore import _core, _pure
from evercore._typed_json import converter_for
from evercore.values import SerializedEvent, StorageEngineEvent

EVENTS = 100_000
AGGREGATES = 1_000
EVENT_TYPES = ("Deposited", "Withdrawn", "Renamed", "Closed")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclasses.dataclass
class Deposited:
    """A typical event payload: its JSON is about 150 bytes."""

    account: str
    amount: float
    currency: str
    note: str
    at: datetime
    tags: list[str]


@dataclasses.dataclass(frozen=True)
class Workload:
    """One batch of EVENTS events over AGGREGATES aggregates, as columns."""

    aggregate_ids: list[int]
    sequences: list[int]
    event_types: list[str]
    payloads: list[object]
    event_times: list[datetime]
    references: list[str]
    event_type_ids: dict[str, int]
    known: dict[int, int]
    events: list[StorageEngineEvent]
    aggregate_type_ids: list[int]
    event_type_id_column: list[int]
    stored: list[SerializedEvent]
    rows: list[tuple[int, int, int, str, int, str, int]]
    type_names: dict[int, str]


def build_workload() -> Workload:
    """Aggregates take turns (the hardest order for sequence checks)."""
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    aggregate_ids = [1 + i % AGGREGATES for i in range(EVENTS)]
    sequences = [1 + i // AGGREGATES for i in range(EVENTS)]
    event_types = [EVENT_TYPES[i % 7 % len(EVENT_TYPES)] for i in range(EVENTS)]
    times = [start + timedelta(microseconds=37 * i) for i in range(EVENTS)]
    payloads: list[object] = [
        Deposited(
            f"account-{i % AGGREGATES:05d}",
            i * 0.25,
            "EUR",
            "salary for November",
            times[i],
            ["payroll", "monthly"],
        )
        for i in range(EVENTS)
    ]
    references = [f"req-{i}" for i in range(EVENTS)]
    type_ids = {name: n + 1 for n, name in enumerate(EVENT_TYPES)}
    events = _pure.encode_events(
        aggregate_ids, sequences, event_types, payloads, times, references, type_ids
    )
    return Workload(
        aggregate_ids=aggregate_ids,
        sequences=sequences,
        event_types=event_types,
        payloads=payloads,
        event_times=times,
        references=references,
        event_type_ids=type_ids,
        known=dict.fromkeys(range(1, AGGREGATES + 1), 0),
        events=events,
        aggregate_type_ids=[1 + i % 3 for i in range(EVENTS)],
        event_type_id_column=[event.event_type_id for event in events],
        stored=[
            SerializedEvent(n, e.aggregate_id, name, e.state, e.sequence, e.reference, e.event_time)
            for n, (e, name) in enumerate(zip(events, event_types, strict=True), 1)
        ],
        rows=[
            (n, e.aggregate_id, e.event_type_id, e.state, e.sequence, e.reference,
             (e.event_time - EPOCH) // timedelta(microseconds=1))
            for n, e in enumerate(events, 1)
        ],
        type_names={number: name for name, number in type_ids.items()},
    )


@pytest.fixture(scope="module")
def workload() -> Workload:
    """Built once: the benchmarks time the kernels, not the set-up."""
    return build_workload()


FOLDED = [field.name for field in dataclasses.fields(Deposited)]

KERNELS: dict[str, Callable[[Any, Workload], object]] = {
    "validate_sequences": lambda k, w: k.validate_sequences(w.aggregate_ids, w.sequences, w.known),
    "serialize_payloads": lambda k, w: k.serialize_payloads(w.payloads, w.event_types),
    "encode_events": lambda k, w: k.encode_events(
        w.aggregate_ids,
        w.sequences,
        w.event_types,
        w.payloads,
        w.event_times,
        w.references,
        w.event_type_ids,
    ),
    "encode_copy_rows": lambda k, w: k.encode_copy_rows(w.events),
    "filter_events": lambda k, w: k.filter_events(
        w.aggregate_type_ids,
        w.aggregate_ids,
        w.event_type_id_column,
        start=0,
        limit=EVENTS,
        aggregate_type_id=2,
        aggregate_id=None,
        event_type_filter=frozenset({1, 3}),
    ),
    # Every event type decodes into Deposited, whose fields all reach the state; its
    # datetime is converted in every event, as decoding does.
    "fold_state_fields": lambda k, w: k.fold_state_fields(
        w.stored,
        dict.fromkeys(EVENT_TYPES, 0),
        [bytes([_pure.FIELD_COPIED] * len(FOLDED))],
        [[None] * len(FOLDED)],
        [[converter_for(datetime) if name == "at" else None for name in FOLDED]],
        FOLDED,
    ),
    "events_from_rows": lambda k, w: k.events_from_rows(w.rows, w.type_names),
    "dumps (one call per event)": lambda k, w: [k.dumps(p, "Deposited") for p in w.payloads],
}

IMPLEMENTATIONS = {"rust": _core, "twin": _pure}
_medians: dict[tuple[str, str], float] = {}


@pytest.fixture(scope="module", autouse=True)
def speedup_report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print each kernel's speed-up once every benchmark of the module has run."""
    yield
    # Teardown output is captured unless capturing is switched off around it.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        _write_report(request.config.get_terminal_writer())


def _write_report(writer: Any) -> None:
    """Write the measured ratios to the terminal."""
    writer.line()
    writer.line(f"Speed-up of the Rust kernels over their twins ({EVENTS:,} events, medians):")
    for kernel in KERNELS:
        rust, twin = _medians.get((kernel, "rust")), _medians.get((kernel, "twin"))
        if rust and twin:
            verdict = "ok" if twin / rust >= 5 else "BELOW the 5x goal"
            writer.line(f"  {kernel:28} {twin / rust:7.1f}x  ({verdict})")


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernel(benchmark: Any, workload: Workload, kernel: str, implementation: str) -> None:
    module = IMPLEMENTATIONS[implementation]
    run = KERNELS[kernel]
    benchmark.group = kernel
    rounds = 3 if implementation == "twin" else 7
    result = benchmark.pedantic(run, args=(module, workload), rounds=rounds, warmup_rounds=1)
    if implementation == "rust":
        # Both must compute the same thing for the ratio to mean anything.
        assert result == run(_pure, workload)
    _medians[(kernel, implementation)] = benchmark.stats.stats.median
