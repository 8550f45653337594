"""Hostile and mistaken input, refused before any I/O with a typed error naming the
value: on every backend through the facade, and for URIs and backend options."""

from __future__ import annotations

import contextlib
import json
import os
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import evercore
import msgspec
import pydantic
import pytest
from evercore import _core, _pure
from evercore.errors import (
    ConfigurationError,
    DecodeError,
    EvercoreError,
    UnknownBackendError,
)
from evercore.events import decode_json_as
from evercore.testing.reliability import (
    CHANGED,
    NOTED,
    HostileInputRefusal,
    Note,
    Tally,
    TallyChanged,
    record_figures,
)
from evercore.values import SerializedEvent, StorageEngineEvent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.backends import engine_fixture


class TestHostileInput(HostileInputRefusal):
    """Keys, payloads, nesting, NaN, batch size and unstorable text, per backend."""

    engine = engine_fixture()


# ----------------------------------------------------------------------- URIs --
# Port 1 on the loopback refuses connections: a URI that reached any I/O would fail
# with a connection error (StorageEngineError), not with ConfigurationError.
NO_SERVER_PG = "postgresql://user:hunter2secret@127.0.0.1:1/test"
NO_SERVER_REDIS = "redis://:hunter2secret@127.0.0.1:1/0"


@pytest.mark.parametrize(
    ("uri", "error", "names"),
    [
        ("nosuch://somewhere", UnknownBackendError, "'nosuch'"),
        ("no-scheme-at-all", ConfigurationError, "no-scheme-at-all"),
        ("", ConfigurationError, "''"),
        ("sqlite:/one-slash.db", ConfigurationError, "sqlite:/one-slash.db"),
        ("memory://somewhere", ConfigurationError, "memory://somewhere"),
        ("sqlite:///x.db?bogus=1", ConfigurationError, "bogus"),
        ("sqlite:///x.db?synchronous=MAYBE", ConfigurationError, "MAYBE"),
        ("sqlite:///x.db?busy_timeout=-1", ConfigurationError, "busy_timeout"),
    ],
)
def test_bad_uris_are_refused_with_a_typed_error(
    uri: str, error: type[Exception], names: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a relative SQLite path that slipped through lands here
    with pytest.raises(error) as caught:
        evercore.connect(uri)
    assert names in str(caught.value)
    assert list(tmp_path.iterdir()) == [], "a file was created for a refused URI"


@pytest.mark.parametrize("uri", ["postgresql://u:p@[::1/db", "://no-scheme"])
def test_malformed_uris_are_configuration_errors(uri: str) -> None:
    with pytest.raises(ConfigurationError):
        evercore.connect(uri)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "schema",
    ["x;drop table events", "Upper", "1starts_with_digit", "a" * 64, "", "sp ace", 'quo"te', "ünï"],
)
def test_postgres_schema_names_must_be_plain_identifiers(schema: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        evercore.connect(f"{NO_SERVER_PG}?schema={quote(schema)}")
    assert repr(schema) in str(caught.value)
    with pytest.raises(ConfigurationError):
        evercore.connect(NO_SERVER_PG, schema=schema)


@pytest.mark.redis
@pytest.mark.parametrize("prefix", ["a b", "*", "{x}", "", "-lead", ".lead", "a" * 65, "k:ey", "ü"])
def test_redis_prefixes_must_be_plain_names(prefix: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        evercore.connect(f"{NO_SERVER_REDIS}?prefix={quote(prefix)}")
    assert repr(prefix) in str(caught.value)


@pytest.mark.parametrize(
    "uri",
    [NO_SERVER_PG, NO_SERVER_REDIS, NO_SERVER_PG + "?schema=x;y", "nosuch://u:hunter2secret@h"],
)
def test_refused_uris_never_show_the_password(uri: str) -> None:
    with pytest.raises(EvercoreError) as caught:
        evercore.connect(uri)
    assert_no_secret(caught.value, "hunter2secret")


def assert_no_secret(error: BaseException, secret: str) -> None:
    """The secret is in no message, repr or traceback of ``error`` and its causes."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    chain: BaseException | None = error
    while chain is not None:
        text += repr(chain) + str(chain) + repr(chain.args)
        chain = chain.__cause__ or chain.__context__
    assert secret not in text


# --------------------------------------------------------------- decoder fuzz --
def fuzz_settings(examples: int) -> settings:
    """``examples`` hypothesis examples (``EVERCORE_FUZZ_EXAMPLES`` overrides), no deadline."""
    return settings(
        max_examples=int(os.environ.get("EVERCORE_FUZZ_EXAMPLES", str(examples))),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )


FUZZ = fuzz_settings(150)

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)
"""JSON-like values, NaN, Infinity and huge integers included."""

HOSTILE_TEXT = st.one_of(
    st.text(),
    JSON_VALUES.map(lambda v: json.dumps(v, allow_nan=True)),
    st.integers(1, 100_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 100_000).map(lambda n: '{"note":' * n + "1" + "}" * n),
    st.sampled_from(['{"amount": NaN}', '{"amount": 1e999}', '{"note": "\\ud800"}', "\x00", "{"]),
)
"""Text an event's state might hold: garbage, near-JSON, very deep nesting."""


@evercore.state_event(name="reliability.fuzz.Pydantic")
class PydanticPayload(pydantic.BaseModel):
    note: str | None = None
    amount: int | None = None


@evercore.state_event(name="reliability.fuzz.Msgspec")
class MsgspecPayload(msgspec.Struct):
    note: str | None = None
    amount: int | None = None


@evercore.event(name="reliability.fuzz.Plain")
@dataclass
class PlainEvent:
    items: list[int] = field(default_factory=list)
    when: datetime | None = None


DECODED_TYPES = [
    CHANGED,
    NOTED,
    "reliability.fuzz.Pydantic",
    "reliability.fuzz.Msgspec",
    "reliability.fuzz.Plain",
    "reliability.fuzz.Unknown",
]


@FUZZ
@given(event_type=st.sampled_from(DECODED_TYPES), state=HOSTILE_TEXT)
def test_decode_event_raises_only_decode_errors(event_type: str, state: str) -> None:
    event = SerializedEvent(1, 1, event_type, state, 1, "", datetime.now(timezone.utc))
    try:
        evercore.decode_event(event)
    except DecodeError as exc:
        assert event_type in str(exc)


@FUZZ
@given(
    cls=st.sampled_from([Tally, TallyChanged, PydanticPayload, MsgspecPayload, PlainEvent]),
    text=HOSTILE_TEXT,
)
def test_decode_json_as_raises_only_decode_errors(cls: type, text: str) -> None:
    with contextlib.suppress(DecodeError):
        decode_json_as(cls, text, "fuzzed")


# ---------------------------------------------------------------- kernel fuzz --
KERNELS = [pytest.param(_core, id="rust"), pytest.param(_pure, id="pure-python")]
PAYLOADS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary(max_size=4)
    | st.datetimes()
    | st.uuids()
    | st.decimals(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), children, max_size=4)
        | st.frozensets(st.integers(), max_size=3)
        | st.builds(Note, children)
    ),
    max_leaves=25,
)
"""Payloads of every kind, serializable or not (bytes, sets, int keys, NaN...)."""
INTS = st.integers(-(2**70), 2**70)
TEXTS = st.text(max_size=8)  # lone surrogates and NUL included
TIMES = st.datetimes(timezones=st.none() | st.just(timezone.utc))


def _fuzz_kernel(call: Callable[[], object], tally: Counter[str]) -> None:
    """The kernel returns, or raises an evercore error: never anything else."""
    tally["inputs"] += 1
    try:
        call()
    except EvercoreError:
        tally["refused"] += 1


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernels_refuse_hostile_input_with_evercore_errors_only(kernel: Any) -> None:
    fuzz_kernels(kernel, fuzz_settings(150))


@pytest.mark.slow
@pytest.mark.parametrize("kernel", KERNELS)
def test_kernels_soak(kernel: Any) -> None:
    """Opt-in (``-m slow``): 5,000 examples per kernel."""
    fuzz_kernels(kernel, fuzz_settings(5000), "soak")


def fuzz_kernels(kernel: Any, fuzz: settings, label: str = "") -> None:
    """Every kernel on hostile input: it returns or raises an evercore error."""
    tally: Counter[str] = Counter()
    kernel_id = ("rust" if kernel is _core else "pure-python") + (f" {label}" if label else "")

    @fuzz
    @given(payload=PAYLOADS, event_type=TEXTS)
    def dumps(payload: object, event_type: str) -> None:
        _fuzz_kernel(lambda: kernel.dumps(payload, event_type), tally)

    @fuzz
    @given(
        rows=st.lists(st.tuples(INTS, INTS), max_size=8),
        known=st.dictionaries(INTS, INTS, max_size=3),
    )
    def sequences(rows: list[tuple[int, int]], known: dict[int, int]) -> None:
        ids = [r[0] for r in rows]
        _fuzz_kernel(lambda: kernel.validate_sequences(ids, [r[1] for r in rows], known), tally)

    @fuzz
    @given(rows=st.lists(st.tuples(INTS, INTS, INTS, TEXTS, TIMES, TEXTS), max_size=5))
    def copy_rows(rows: list[tuple[int, int, int, str, datetime, str]]) -> None:
        events = [StorageEngineEvent(*row) for row in rows]
        _fuzz_kernel(lambda: kernel.encode_copy_rows(events), tally)

    @fuzz
    @given(payloads=st.lists(st.tuples(PAYLOADS | TEXTS, TEXTS, TIMES, TEXTS), max_size=5))
    def encode(payloads: list[tuple[object, str, datetime, str]]) -> None:
        n = len(payloads)
        types = [p[1] for p in payloads]
        _fuzz_kernel(
            lambda: kernel.encode_events(
                list(range(1, n + 1)),
                [1] * n,
                types,
                [p[0] for p in payloads],
                [p[2] for p in payloads],
                [p[3] for p in payloads],
                {t: 1 for t in types},
            ),
            tally,
        )

    for fuzz in (dumps, sequences, copy_rows, encode):
        fuzz()
    record_figures(
        "kernel fuzz (dumps, validate_sequences, encode_events, encode_copy_rows)",
        kernel_id,
        operations=tally["inputs"],
        refused=tally["refused"],
        crashes=0,
    )


def test_reliability_md_states_the_enforced_limits() -> None:
    """The limits table of RELIABILITY.md says what evercore.limits enforces."""
    from evercore import limits

    text = (Path(__file__).resolve().parent.parent / "RELIABILITY.md").read_text(encoding="utf-8")
    stated = [
        f"| natural key | {limits.MAX_KEY_LENGTH} characters |",
        f"| event state (payload) | {limits.MAX_PAYLOAD_BYTES >> 20} MiB of UTF-8 |",
        f"| snapshot state | {limits.MAX_SNAPSHOT_BYTES >> 20} MiB of UTF-8 |",
        f"| events per context | {limits.MAX_EVENTS_PER_CONTEXT:,} |",
        f"| JSON nesting of a payload | {limits.MAX_JSON_NESTING} levels",
        f"| event type name | 1 to {limits.MAX_TYPE_NAME_LENGTH} characters |",
        f"| reference | {limits.MAX_REFERENCE_LENGTH:,} characters |",
    ]
    for row in stated:
        assert row in text, row
