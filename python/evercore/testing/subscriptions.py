"""Subscription conformance tests that every backend runs.

Subclass :class:`SubscriptionConformance` in a test module and provide an
``engine`` fixture that yields a fresh, empty engine for each test::

    from evercore.testing import SubscriptionConformance

    class TestMyBackendSubscriptions(SubscriptionConformance):
        @pytest.fixture
        def engine(self, tmp_path):
            engine = open_my_engine(...)
            yield engine
            engine.close()

The tests drive the real runners (:mod:`evercore.subscriptions`) against the
engine and write events through the SPI only, so they check the engine and the
runners together: filters, start positions, leases, failover, fencing,
redelivery, switching off, stopping, the asyncio iterator and the no-gap rule
under concurrent writers with delayed commits. Leases and poll intervals are
short (class attributes ``LEASE`` and ``POLL``), so the class runs in seconds;
raise them for a backend whose clock or round trips are slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import pytest

from evercore.errors import (
    ConfigurationError,
    StorageEngineError,
    SubscriptionAlreadyOwned,
    SubscriptionInactive,
    SubscriptionLeaseLost,
)
from evercore.spi import StorageEngine, SupportsEventWait
from evercore.subscriptions import (
    Handler,
    run_ephemeral_subscription,
    run_subscription,
    subscribe,
)
from evercore.values import (
    SerializedEvent,
    StartFrom,
    StorageEngineEvent,
    SubscriptionFilter,
    SubscriptionOptions,
    utc_now,
)

WAIT = 10.0
"""Longest a test waits for something that should happen in milliseconds."""


# -- writing events through the SPI ---------------------------------------------------


def write_aggregate(
    engine: StorageEngine,
    aggregate_type: str,
    event_types: Sequence[str],
    *,
    key: str | None = None,
    times: Sequence[datetime] | None = None,
    commit_delay: float = 0.0,
) -> list[SerializedEvent]:
    """Create one aggregate with one event per entry of ``event_types`` in a single
    transaction (committed ``commit_delay`` seconds after writing); return the events
    as stored, with their global ids."""
    tx = engine.get_transaction_info()
    try:
        type_id = engine.get_aggregate_type_id(tx, aggregate_type)
        if key is None:
            aggregate_id = engine.new_aggregate(tx, type_id)
        else:
            aggregate_id = engine.new_aggregate_with_key(tx, type_id, key)
        moments = times if times is not None else [utc_now()] * len(event_types)
        events = [
            StorageEngineEvent(
                aggregate_id=aggregate_id,
                sequence=sequence,
                event_type_id=engine.get_event_type_id(tx, event_type),
                state=json.dumps({"n": sequence, "type": event_type}),
                event_time=moment,
                reference="conformance",
            )
            for sequence, (event_type, moment) in enumerate(
                zip(event_types, moments, strict=True), start=1
            )
        ]
        engine.write_state(tx, events, [])
        if commit_delay:
            time.sleep(commit_delay)
        tx.commit()
    except BaseException:
        tx.rollback()
        raise
    return engine.get_events_for_aggregate(None, aggregate_id, 0)


def ids(events: Sequence[SerializedEvent]) -> list[int]:
    """The global ids of ``events``, in order."""
    return [event.event_id for event in events]


# -- an engine wrapper that records calls and can hold some back ------------------------


class EngineSpy:
    """Delegates to a real engine, recording each call and its result.

    ``hooks`` maps a method name to ``hook(real_method, *args, **kwargs)``, which
    can delay a call (a stalled network) or drop it (a process that died before
    making it). Use :func:`spy_on` to build one: it keeps ``SupportsEventWait``
    visible exactly when the wrapped engine has it.
    """

    def __init__(self, engine: StorageEngine, hooks: dict[str, Callable[..., Any]]) -> None:
        self._engine = engine
        self._hooks = hooks
        self._cond = threading.Condition()
        self.calls: list[tuple[str, object]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)
        if not callable(attr):
            return attr
        hook = self._hooks.get(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = hook(attr, *args, **kwargs) if hook else attr(*args, **kwargs)
            except Exception as exc:
                self._record(name, exc)
                raise
            self._record(name, result)
            return result

        return call

    def _record(self, name: str, outcome: object) -> None:
        with self._cond:
            self.calls.append((name, outcome))
            self._cond.notify_all()

    def _results(self, name: str) -> list[object]:
        return [outcome for called, outcome in self.calls if called == name]

    def results(self, name: str) -> list[object]:
        """What the completed calls to ``name`` returned or raised, in order."""
        with self._cond:
            return self._results(name)

    def wait_for_call(self, name: str, count: int = 1) -> None:
        """Block until ``name`` has completed ``count`` times (fail after ``WAIT`` s)."""
        with self._cond:
            done = self._cond.wait_for(lambda: len(self._results(name)) >= count, WAIT)
        assert done, f"{name} was not called {count} time(s) within {WAIT} s"


class _WaitingEngineSpy(EngineSpy):
    """An :class:`EngineSpy` over an engine that implements ``wait_for_events``."""

    def wait_for_events(self, after_event_id: int, timeout: float) -> None:
        """Delegate to the wrapped engine."""
        cast(SupportsEventWait, self._engine).wait_for_events(after_event_id, timeout)


def spy_on(
    engine: StorageEngine, hooks: dict[str, Callable[..., Any]] | None = None
) -> tuple[EngineSpy, StorageEngine]:
    """A spy over ``engine`` and the same object typed as an engine for the runners."""
    cls = _WaitingEngineSpy if isinstance(engine, SupportsEventWait) else EngineSpy
    spy = cls(engine, hooks or {})
    return spy, cast(StorageEngine, spy)


# -- running a runner in a thread -------------------------------------------------------

Runner = Callable[[Handler, threading.Event], None]


class RunnerThread:
    """Runs a subscription runner in a thread and collects what it delivers.

    ``on_batch`` (optional) runs inside the handler after the batch is recorded;
    whatever it raises is the handler's exception.
    """

    def __init__(
        self,
        runner: Runner,
        on_batch: Callable[[list[SerializedEvent]], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.stop = stop if stop is not None else threading.Event()
        self.batches: list[list[SerializedEvent]] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._on_batch = on_batch
        self._runner = runner
        self._thread = threading.Thread(target=self._run, name="conformance-runner", daemon=True)
        self._thread.start()

    def _handle(self, batch: list[SerializedEvent]) -> None:
        with self._cond:
            self.batches.append(list(batch))
            self._cond.notify_all()
        if self._on_batch is not None:
            self._on_batch(batch)

    def _run(self) -> None:
        try:
            self._runner(self._handle, self.stop)
        except BaseException as exc:  # reported to the test through .error
            self.error = exc
        finally:
            with self._cond:
                self._cond.notify_all()

    @property
    def events(self) -> list[SerializedEvent]:
        """Every delivered event, in delivery order."""
        with self._cond:
            return [event for batch in self.batches for event in batch]

    def wait_for(self, count: int) -> list[SerializedEvent]:
        """Wait until ``count`` events were delivered or the runner ended; return them."""
        with self._cond:
            self._cond.wait_for(
                lambda: sum(map(len, self.batches)) >= count or not self._thread.is_alive(),
                WAIT,
            )
        return self.events

    def join(self, timeout: float = WAIT) -> BaseException | None:
        """Wait for the runner to end (failing the test if it does not); return its error."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"runner still running after {timeout} s"
        return self.error

    def finish(self) -> list[SerializedEvent]:
        """Stop the runner, require a clean exit, and return what it delivered."""
        self.stop.set()
        error = self.join()
        if error is not None:
            raise error
        return self.events


def durable(
    engine: StorageEngine,
    name: str,
    flt: SubscriptionFilter,
    start: StartFrom,
    options: SubscriptionOptions,
) -> Runner:
    """A durable runner over ``engine``, ready for :class:`RunnerThread`."""

    def run(handler: Handler, stop: threading.Event) -> None:
        run_subscription(engine, name, flt, start, options, handler, stop=stop)

    return run


def ephemeral(
    engine: StorageEngine,
    flt: SubscriptionFilter,
    start: StartFrom,
    options: SubscriptionOptions,
) -> Runner:
    """An ephemeral runner over ``engine``, ready for :class:`RunnerThread`."""

    def run(handler: Handler, stop: threading.Event) -> None:
        run_ephemeral_subscription(engine, flt, start, options, handler, stop=stop)

    return run


_names = itertools.count(1)


def _fresh_name() -> str:
    return f"conformance-{next(_names)}"


class _Crash(BaseException):
    """Stands for a runner process dying in the middle of a batch."""


# -- the suite -----------------------------------------------------------------------------


class SubscriptionConformance:
    """The subscription conformance suite; subclasses provide an ``engine`` fixture."""

    LEASE = 0.5
    """Lease (seconds) of the lease tests; long enough for one slow round trip."""
    POLL = 0.02
    """Poll interval (seconds) of most tests."""

    @pytest.fixture
    def engine(self) -> StorageEngine:
        """A fresh, empty engine per test (subclasses must override this)."""
        raise NotImplementedError("subclass SubscriptionConformance and provide an engine fixture")

    @pytest.fixture(params=["durable", "ephemeral"])
    def kind(self, request: pytest.FixtureRequest) -> str:
        """Which runner a shared test drives."""
        return cast(str, request.param)

    def options(self, **overrides: Any) -> SubscriptionOptions:
        """Test options: short poll interval and lease unless overridden."""
        values: dict[str, Any] = {
            "batch_size": 100,
            "poll_interval": self.POLL,
            "lease": self.LEASE,
        }
        values.update(overrides)
        return SubscriptionOptions(**values)

    def start_runner(
        self,
        engine: StorageEngine,
        kind: str,
        flt: SubscriptionFilter | None = None,
        start: StartFrom | None = None,
        options: SubscriptionOptions | None = None,
        on_batch: Callable[[list[SerializedEvent]], None] | None = None,
        name: str | None = None,
        stop: threading.Event | None = None,
    ) -> RunnerThread:
        """Start a runner of ``kind`` in a thread."""
        flt = flt or SubscriptionFilter()
        start = start or StartFrom.beginning()
        options = options or self.options()
        if kind == "durable":
            runner = durable(engine, name or _fresh_name(), flt, start, options)
        else:
            runner = ephemeral(engine, flt, start, options)
        return RunnerThread(runner, on_batch, stop)

    def deliver(
        self,
        engine: StorageEngine,
        kind: str,
        expected: Sequence[SerializedEvent],
        flt: SubscriptionFilter | None = None,
        start: StartFrom | None = None,
        options: SubscriptionOptions | None = None,
        name: str | None = None,
    ) -> list[SerializedEvent]:
        """Run until ``expected`` is delivered (or a short while if it is empty); return
        what was delivered. With every event already stored and a batch size above the
        total, unexpected extra events arrive in the same batch and show up here."""
        runner = self.start_runner(engine, kind, flt, start, options, name=name)
        if expected:
            runner.wait_for(len(expected))
        else:
            time.sleep(10 * self.POLL)
        return runner.finish()

    def wait_until_reading(self, spy: EngineSpy) -> None:
        """Wait until a runner over ``spy`` has made its first read (its cursor is set)."""
        spy.wait_for_call("get_events_for_subscription")

    # -- filters ---------------------------------------------------------------------------

    def test_no_filter_delivers_everything_in_id_order(
        self, engine: StorageEngine, kind: str
    ) -> None:
        events = write_aggregate(engine, "Order", ["Placed", "Paid"])
        events += write_aggregate(engine, "User", ["Registered"])
        delivered = self.deliver(engine, kind, events)
        assert delivered == events
        assert ids(delivered) == sorted(set(ids(delivered)))

    def test_filter_by_aggregate_type(self, engine: StorageEngine, kind: str) -> None:
        first = write_aggregate(engine, "Order", ["Placed", "Paid"])
        write_aggregate(engine, "User", ["Registered", "Renamed"])
        second = write_aggregate(engine, "Order", ["Placed"])
        flt = SubscriptionFilter(aggregate_type="Order")
        assert self.deliver(engine, kind, first + second, flt) == first + second

    def test_filter_by_one_event_type(self, engine: StorageEngine, kind: str) -> None:
        order = write_aggregate(engine, "Order", ["Placed", "Paid", "Shipped"])
        user = write_aggregate(engine, "User", ["Registered", "Paid"])
        flt = SubscriptionFilter(event_types=("Paid",))
        assert self.deliver(engine, kind, [order[1], user[1]], flt) == [order[1], user[1]]

    def test_filter_by_several_event_types(self, engine: StorageEngine, kind: str) -> None:
        order = write_aggregate(engine, "Order", ["Placed", "Paid", "Shipped", "Cancelled"])
        user = write_aggregate(engine, "User", ["Registered", "Shipped"])
        flt = SubscriptionFilter(event_types=("Shipped", "Placed"))
        expected = [order[0], order[2], user[1]]
        assert self.deliver(engine, kind, expected, flt) == expected

    def test_filter_by_aggregate_type_and_event_types(
        self, engine: StorageEngine, kind: str
    ) -> None:
        order = write_aggregate(engine, "Order", ["Placed", "Paid", "Shipped"])
        write_aggregate(engine, "User", ["Placed", "Paid"])
        flt = SubscriptionFilter(aggregate_type="Order", event_types=("Placed", "Paid"))
        assert self.deliver(engine, kind, order[:2], flt) == order[:2]

    def test_filter_by_aggregate_key(self, engine: StorageEngine, kind: str) -> None:
        write_aggregate(engine, "User", ["Registered"], key="alice")
        bob = write_aggregate(engine, "User", ["Registered", "Renamed"], key="bob")
        write_aggregate(engine, "User", ["Registered"])
        flt = SubscriptionFilter(aggregate_key="bob")
        assert self.deliver(engine, kind, bob, flt) == bob

    def test_filter_matching_nothing_delivers_nothing(
        self, engine: StorageEngine, kind: str
    ) -> None:
        write_aggregate(engine, "User", ["Registered"], key="alice")
        flt = SubscriptionFilter(aggregate_key="nobody")
        assert self.deliver(engine, kind, [], flt) == []

    def test_batches_respect_batch_size_and_order(self, engine: StorageEngine, kind: str) -> None:
        events = write_aggregate(engine, "Order", ["Placed"] * 7)
        runner = self.start_runner(engine, kind, options=self.options(batch_size=3))
        runner.wait_for(7)
        runner.finish()
        assert [len(batch) for batch in runner.batches] == [3, 3, 1]
        assert runner.events == events

    # -- start positions ----------------------------------------------------------------------

    def test_start_from_end_skips_existing_events(self, engine: StorageEngine, kind: str) -> None:
        write_aggregate(engine, "Order", ["Placed", "Paid"])
        spy, spied = spy_on(engine)
        runner = self.start_runner(spied, kind, start=StartFrom.end())
        self.wait_until_reading(spy)
        new = write_aggregate(engine, "Order", ["Placed"])
        runner.wait_for(1)
        assert runner.finish() == new

    def test_start_after_event_id(self, engine: StorageEngine, kind: str) -> None:
        events = write_aggregate(engine, "Order", ["Placed", "Paid", "Shipped", "Closed"])
        start = StartFrom.after_event(events[1].event_id)
        assert self.deliver(engine, kind, events[2:], start=start) == events[2:]

    def test_start_at_timestamp(self, engine: StorageEngine, kind: str) -> None:
        t0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
        times = [t0 + timedelta(minutes=i) for i in range(4)]
        events = write_aggregate(engine, "Order", ["A", "B", "C", "D"], times=times)
        # Exactly the third event's time: it is included (time >= timestamp).
        start = StartFrom.at_time(times[2])
        assert self.deliver(engine, kind, events[2:], start=start) == events[2:]

    def test_start_at_timestamp_after_every_event_follows_new_events(
        self, engine: StorageEngine, kind: str
    ) -> None:
        past = utc_now() - timedelta(hours=1)
        write_aggregate(engine, "Order", ["Placed", "Paid"], times=[past, past])
        spy, spied = spy_on(engine)
        runner = self.start_runner(spied, kind, start=StartFrom.at_time(utc_now()))
        self.wait_until_reading(spy)
        new = write_aggregate(engine, "Order", ["Placed"])
        runner.wait_for(1)
        assert runner.finish() == new

    def test_durable_cursor_is_initialised_only_once(self, engine: StorageEngine) -> None:
        old = write_aggregate(engine, "Order", ["Placed", "Paid"])
        name = _fresh_name()
        spy, spied = spy_on(engine)
        first = self.start_runner(spied, "durable", start=StartFrom.end(), name=name)
        self.wait_until_reading(spy)
        new = write_aggregate(engine, "Order", ["Shipped"])
        first.wait_for(1)
        assert first.finish() == new
        newest = write_aggregate(engine, "Order", ["Closed"])
        # A second run with another start position resumes from the stored cursor.
        again = self.deliver(engine, "durable", newest, start=StartFrom.beginning(), name=name)
        assert again == newest
        assert engine.get_subscription_by_name(None, name).last_event_id >= old[-1].event_id

    def test_durable_filter_change_never_keeps_delivering_dropped_types(
        self, engine: StorageEngine
    ) -> None:
        name = _fresh_name()
        wide = SubscriptionFilter(event_types=("Placed", "Paid"))
        self.start_runner(engine, "durable", flt=wide, name=name).finish()
        events = write_aggregate(engine, "Order", ["Placed", "Paid"])
        narrow = SubscriptionFilter(event_types=("Placed",))
        # An engine whose upsert replaces the multi-type list applies the narrower
        # filter; one that keeps it must make the runner refuse to start.
        runner = self.start_runner(engine, "durable", flt=narrow, name=name)
        runner.wait_for(1)
        time.sleep(10 * self.POLL)
        runner.stop.set()
        error = runner.join()
        if error is None:
            assert runner.events == events[:1]
        else:
            assert isinstance(error, ConfigurationError)
            assert name in str(error)
            stored = engine.get_subscription_by_name(None, name)
            assert len(stored.event_type_ids) == 2  # left as it was

    # -- leases, failover and fencing ---------------------------------------------------------

    def test_second_runner_gets_subscription_already_owned(self, engine: StorageEngine) -> None:
        name = _fresh_name()
        spy, spied = spy_on(engine)
        first = self.start_runner(spied, "durable", name=name, options=self.options(owner="one"))
        self.wait_until_reading(spy)
        with pytest.raises(SubscriptionAlreadyOwned, match=name):
            run_subscription(
                engine,
                name,
                SubscriptionFilter(),
                StartFrom.beginning(),
                self.options(owner="two"),
                lambda batch: None,
            )
        # The first runner is unaffected and still delivers.
        event = write_aggregate(engine, "Order", ["Placed"])
        first.wait_for(1)
        assert first.finish() == event
        # Its lease was released on exit: another owner can claim at once.
        assert engine.claim_subscription(None, name, "two", self.LEASE)
        engine.release_subscription(None, name, "two")

    def test_lease_is_renewed_while_a_slow_handler_runs(self, engine: StorageEngine) -> None:
        name = _fresh_name()
        events = write_aggregate(engine, "Order", ["Placed", "Paid"])
        in_handler = threading.Event()

        def slow(batch: list[SerializedEvent]) -> None:
            in_handler.set()
            time.sleep(2.5 * self.LEASE)

        runner = RunnerThread(
            durable(engine, name, SubscriptionFilter(), StartFrom.beginning(), self.options()),
            slow,
        )
        assert in_handler.wait(WAIT)
        time.sleep(1.5 * self.LEASE)
        assert not engine.claim_subscription(None, name, "intruder", self.LEASE)
        runner.wait_for(2)
        deadline = time.monotonic() + WAIT
        while engine.get_subscription_by_name(None, name).last_event_id < events[-1].event_id:
            assert time.monotonic() < deadline, "the slow batch was never acknowledged"
            time.sleep(self.POLL)
        assert runner.finish() == events

    def test_failover_after_lease_expiry_redelivers_from_the_cursor(
        self, engine: StorageEngine
    ) -> None:
        name = _fresh_name()
        first_batch = write_aggregate(engine, "Order", ["Placed", "Paid"])
        # Runner "dead" handles one batch, then dies in the middle of the next one
        # without releasing its lease (its release call never reaches storage).
        spy, spied = spy_on(engine, {"release_subscription": lambda real, *a, **k: None})

        def crash_on_second(batch: list[SerializedEvent]) -> None:
            if batch[0].event_id > first_batch[-1].event_id:
                raise _Crash

        dead = RunnerThread(
            durable(
                spied, name, SubscriptionFilter(), StartFrom.beginning(), self.options(owner="dead")
            ),
            crash_on_second,
        )
        dead.wait_for(2)
        spy.wait_for_call("advance_subscription_cursor")
        second_batch = write_aggregate(engine, "Order", ["Placed", "Paid", "Shipped"])
        assert isinstance(dead.join(), _Crash)
        died_at = time.monotonic()

        takeover = durable(
            engine, name, SubscriptionFilter(), StartFrom.beginning(), self.options(owner="next")
        )
        with pytest.raises(SubscriptionAlreadyOwned):
            takeover(lambda batch: None, threading.Event())
        # Once the lease has expired the next runner takes over from the stored cursor.
        time.sleep(max(0.0, died_at + self.LEASE * 1.2 - time.monotonic()))
        runner = RunnerThread(takeover)
        runner.wait_for(3)
        assert runner.finish() == second_batch

    def test_runner_whose_renewal_fails_stops_without_advancing(
        self, engine: StorageEngine
    ) -> None:
        name = _fresh_name()
        write_aggregate(engine, "Order", ["Placed", "Paid"])
        renew_gate = threading.Event()
        handler_gate = threading.Event()
        in_handler = threading.Event()

        def stalled_renew(real: Callable[..., bool], *args: Any, **kwargs: Any) -> bool:
            renew_gate.wait(WAIT)  # the renewer's network is stalled
            return real(*args, **kwargs)

        spy, spied = spy_on(engine, {"renew_subscription": stalled_renew})

        def blocked(batch: list[SerializedEvent]) -> None:
            in_handler.set()
            handler_gate.wait(WAIT)

        old = RunnerThread(
            durable(spied, name, SubscriptionFilter(), StartFrom.beginning(), self.options()),
            blocked,
        )
        assert in_handler.wait(WAIT)
        self._take_over_after_expiry(engine, name)
        renew_gate.set()  # the stalled renewal reaches storage too late
        spy.wait_for_call("renew_subscription")
        assert spy.results("renew_subscription")[0] is False
        handler_gate.set()
        assert isinstance(old.join(), SubscriptionLeaseLost)
        assert spy.results("advance_subscription_cursor") == []
        self._assert_taken_over(engine, name, [])

    def test_a_renewal_that_fails_with_an_engine_error_is_retried(
        self, engine: StorageEngine
    ) -> None:
        """A blip (a restart, a dropped connection) while the lease still runs does not
        stop the runner: the renewal is retried and delivery goes on."""
        name = _fresh_name()
        events = write_aggregate(engine, "Order", ["Placed", "Paid"])
        failures = [StorageEngineError("connection reset (injected)")]

        def flaky_renew(real: Callable[..., bool], *args: Any, **kwargs: Any) -> bool:
            if failures:
                raise failures.pop()
            return real(*args, **kwargs)

        spy, spied = spy_on(engine, {"renew_subscription": flaky_renew})

        def slow(batch: list[SerializedEvent]) -> None:
            time.sleep(1.5 * self.LEASE)  # renewals (the failed one first) happen meanwhile

        runner = RunnerThread(
            durable(spied, name, SubscriptionFilter(), StartFrom.beginning(), self.options()),
            slow,
        )
        runner.wait_for(2)
        spy.wait_for_call("renew_subscription", 2)  # the failed one, then its retry
        assert isinstance(spy.results("renew_subscription")[0], StorageEngineError)
        more = write_aggregate(engine, "Order", ["Placed"])
        runner.wait_for(3)
        assert runner.finish() == events + more
        assert True in spy.results("renew_subscription")

    def test_a_renewal_failing_until_the_lease_runs_low_loses_the_lease(
        self, engine: StorageEngine
    ) -> None:
        name = _fresh_name()
        write_aggregate(engine, "Order", ["Placed", "Paid"])

        def broken_renew(real: Callable[..., bool], *args: Any, **kwargs: Any) -> bool:
            raise StorageEngineError("server gone (injected)")

        spy, spied = spy_on(engine, {"renew_subscription": broken_renew})

        def slow(batch: list[SerializedEvent]) -> None:
            time.sleep(2 * self.LEASE)

        runner = RunnerThread(
            durable(spied, name, SubscriptionFilter(), StartFrom.beginning(), self.options()),
            slow,
        )
        assert isinstance(runner.join(), SubscriptionLeaseLost)
        assert spy.results("advance_subscription_cursor") == []
        assert len(spy.results("renew_subscription")) > 1  # retried before giving up

    def test_fencing_refuses_an_advance_by_a_runner_that_lost_its_lease(
        self, engine: StorageEngine
    ) -> None:
        name = _fresh_name()
        events = write_aggregate(engine, "Order", ["Placed", "Paid"])
        renew_gate = threading.Event()
        handler_gate = threading.Event()
        in_handler = threading.Event()

        def stalled_renew(real: Callable[..., bool], *args: Any, **kwargs: Any) -> bool:
            renew_gate.wait(WAIT)
            return real(*args, **kwargs)

        spy, spied = spy_on(engine, {"renew_subscription": stalled_renew})

        def blocked(batch: list[SerializedEvent]) -> None:
            in_handler.set()
            handler_gate.wait(WAIT)

        old = RunnerThread(
            durable(spied, name, SubscriptionFilter(), StartFrom.beginning(), self.options()),
            blocked,
        )
        assert in_handler.wait(WAIT)
        self._take_over_after_expiry(engine, name)
        # The new owner has handled the first event meanwhile.
        sub = engine.get_subscription_by_name(None, name)
        engine.advance_subscription_cursor(None, sub.id, events[0].event_id, owner="new-owner")
        # The old runner's renewer has not got through, so only fencing can stop it.
        handler_gate.set()
        spy.wait_for_call("advance_subscription_cursor")
        renew_gate.set()
        assert isinstance(old.join(), SubscriptionLeaseLost)
        (refused,) = spy.results("advance_subscription_cursor")
        assert isinstance(refused, SubscriptionLeaseLost)
        self._assert_taken_over(engine, name, events[:1])

    def _take_over_after_expiry(self, engine: StorageEngine, name: str) -> None:
        deadline = time.monotonic() + WAIT
        while not engine.claim_subscription(None, name, "new-owner", 10 * self.LEASE):
            assert time.monotonic() < deadline, "the old lease never expired"
            time.sleep(self.LEASE / 5)

    def _assert_taken_over(
        self, engine: StorageEngine, name: str, handled: list[SerializedEvent]
    ) -> None:
        sub = engine.get_subscription_by_name(None, name)
        # The cursor holds exactly what the new owner acknowledged, never more or less.
        assert sub.last_event_id == (handled[-1].event_id if handled else 0)
        # The old runner's release on exit did not free the new owner's lease.
        assert engine.renew_subscription(None, name, "new-owner", self.LEASE)
        engine.advance_subscription_cursor(None, sub.id, 0, owner="new-owner")
        assert engine.get_subscription_by_name(None, name).last_event_id == sub.last_event_id
        engine.release_subscription(None, name, "new-owner")

    # -- errors, switching off, stopping --------------------------------------------------------

    def test_handler_error_propagates_and_the_batch_is_redelivered(
        self, engine: StorageEngine, kind: str
    ) -> None:
        events = write_aggregate(engine, "Order", ["Placed", "Paid"])
        boom = ValueError("handler failed")
        name = _fresh_name()

        def fail(batch: list[SerializedEvent]) -> None:
            raise boom

        runner = self.start_runner(engine, kind, on_batch=fail, name=name)
        assert runner.join() is boom
        assert runner.events == events
        if kind == "durable":
            assert engine.get_subscription_by_name(None, name).last_event_id == 0
            # Released at once, and the next runner gets the same batch again.
            again = self.start_runner(engine, kind, name=name)
            again.wait_for(2)
            assert again.finish() == events

    def test_inactive_subscription_does_not_start(self, engine: StorageEngine) -> None:
        name = _fresh_name()
        sub_id = engine.upsert_subscription(None, name, None, None, None, "beginning", 0, None)
        engine.set_subscription_active(None, sub_id, False)
        with pytest.raises(SubscriptionInactive, match=name):
            run_subscription(
                engine,
                name,
                SubscriptionFilter(),
                StartFrom.beginning(),
                self.options(),
                lambda b: None,
            )
        self._assert_released(engine, name)

    def test_switching_off_stops_a_running_subscription(self, engine: StorageEngine) -> None:
        name = _fresh_name()
        spy, spied = spy_on(engine)
        runner = self.start_runner(spied, "durable", name=name)
        self.wait_until_reading(spy)
        engine.set_subscription_active(None, engine.get_subscription_by_name(None, name).id, False)
        assert isinstance(runner.join(), SubscriptionInactive)
        self._assert_released(engine, name)

    def _assert_released(self, engine: StorageEngine, name: str) -> None:
        # Engines may refuse to lease an inactive subscription, so switch it on first.
        engine.set_subscription_active(None, engine.get_subscription_by_name(None, name).id, True)
        assert engine.claim_subscription(None, name, "someone", self.LEASE)

    def test_stop_while_idle_returns_promptly(self, engine: StorageEngine, kind: str) -> None:
        spy, spied = spy_on(engine)
        runner = self.start_runner(spied, kind, options=self.options(poll_interval=30.0))
        self.wait_until_reading(spy)
        time.sleep(0.05)
        stopped = time.monotonic()
        runner.stop.set()
        assert runner.join() is None
        assert time.monotonic() - stopped < 1.0

    def test_stop_between_batches(self, engine: StorageEngine, kind: str) -> None:
        events = write_aggregate(engine, "Order", ["Placed"] * 6)
        name = _fresh_name()
        stop = threading.Event()
        runner = self.start_runner(
            engine,
            kind,
            options=self.options(batch_size=2),
            on_batch=lambda batch: stop.set(),
            name=name,
            stop=stop,
        )
        assert runner.join() is None
        assert runner.batches == [events[:2]]
        if kind == "durable":
            assert engine.get_subscription_by_name(None, name).last_event_id == events[1].event_id

    # -- waking and pacing ----------------------------------------------------------------

    def test_an_engine_that_pushes_wakes_an_idle_runner(
        self, engine: StorageEngine, kind: str
    ) -> None:
        if not isinstance(engine, SupportsEventWait):
            pytest.skip("the engine does not implement the optional SupportsEventWait")
        spy, spied = spy_on(engine)
        runner = self.start_runner(spied, kind, options=self.options(poll_interval=30.0))
        self.wait_until_reading(spy)
        written = time.monotonic()
        event = write_aggregate(engine, "Order", ["Placed"])
        runner.wait_for(1)
        assert time.monotonic() - written < 2.0, "the runner slept through the new event"
        assert runner.finish() == event

    def test_unrelated_traffic_does_not_make_an_idle_runner_spin(
        self, engine: StorageEngine, kind: str
    ) -> None:
        poll = 0.1
        spy, spied = spy_on(engine)
        flt = SubscriptionFilter(event_types=("Rare",))
        runner = self.start_runner(spied, kind, flt, options=self.options(poll_interval=poll))
        self.wait_until_reading(spy)
        reads_before = len(spy.results("get_events_for_subscription"))
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # a steady stream of non-matching events
            write_aggregate(engine, "Order", ["Common"])
            time.sleep(0.005)
        reads = len(spy.results("get_events_for_subscription")) - reads_before
        rare = write_aggregate(engine, "Order", ["Rare"])
        runner.wait_for(1)
        assert runner.finish() == rare
        # About two reads per poll interval at most (plus the back-off ramp), not a
        # read per write or a busy loop.
        assert reads <= 2 * (1.0 / poll) + 15, reads

    # -- no gaps under concurrent writers ---------------------------------------------------

    def test_no_event_is_skipped_under_concurrent_delayed_commits(
        self, engine: StorageEngine, kind: str
    ) -> None:
        writers, per_writer = 4, 12
        runner = self.start_runner(engine, kind, options=self.options(batch_size=5))
        written: list[SerializedEvent] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def write(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(per_writer):
                    events = write_aggregate(
                        engine,
                        "Order",
                        ["Placed", "Paid"],
                        commit_delay=rng.uniform(0.0, 0.01),
                    )
                    with lock:
                        written.extend(events)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(seed,)) for seed in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert not errors, errors
        expected = sorted(written, key=lambda event: event.event_id)
        assert len(expected) == writers * per_writer * 2
        runner.wait_for(len(expected))
        delivered = runner.finish()
        assert ids(delivered) == ids(expected)
        assert delivered == expected

    # -- asyncio -----------------------------------------------------------------------------

    def test_async_iterator_delivers_in_order_and_acknowledges_on_next(
        self, engine: StorageEngine
    ) -> None:
        events = write_aggregate(engine, "Order", ["Placed"] * 5)
        name = _fresh_name()

        async def consume() -> list[list[SerializedEvent]]:
            got: list[list[SerializedEvent]] = []
            batches = subscribe(engine, options=self.options(batch_size=2), name=name)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    cursor = engine.get_subscription_by_name(None, name).last_event_id
                    # The previous batch is acknowledged, this one not yet.
                    assert cursor == (got[-1][-1].event_id if got else 0)
                    got.append(batch)
                    if sum(map(len, got)) == len(events):
                        break
            return got

        got = asyncio.run(consume())
        assert [event for batch in got for event in batch] == events
        sub = engine.get_subscription_by_name(None, name)
        # Leaving the loop left the last batch unacknowledged, and released the lease.
        assert sub.last_event_id == got[-2][-1].event_id
        assert engine.claim_subscription(None, name, "someone", self.LEASE)

    def test_async_cancellation_leaves_the_batch_in_hand_unacknowledged(
        self, engine: StorageEngine
    ) -> None:
        events = write_aggregate(engine, "Order", ["Placed", "Paid"])
        name = _fresh_name()

        async def consume(received: list[SerializedEvent], hold: bool) -> None:
            batches = subscribe(engine, options=self.options(), name=name)
            async with contextlib.aclosing(batches):
                async for batch in batches:
                    received.extend(batch)
                    if hold:  # still processing the batch when cancelled
                        await asyncio.sleep(3600)

        async def cancel_once_received(hold: bool) -> list[SerializedEvent]:
            received: list[SerializedEvent] = []
            task = asyncio.create_task(consume(received, hold))
            deadline = time.monotonic() + WAIT
            while len(received) < len(events):
                assert time.monotonic() < deadline, "nothing delivered"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return received

        assert asyncio.run(cancel_once_received(hold=True)) == events
        assert engine.get_subscription_by_name(None, name).last_event_id == 0
        # Redelivered; asking for the next batch acknowledged it before the cancellation.
        assert asyncio.run(cancel_once_received(hold=False)) == events
        assert engine.get_subscription_by_name(None, name).last_event_id == events[-1].event_id
        assert engine.claim_subscription(None, name, "someone", self.LEASE)

    def test_async_durable_reports_a_lease_held_elsewhere(self, engine: StorageEngine) -> None:
        name = _fresh_name()
        engine.upsert_subscription(None, name, None, None, None, "beginning", 0, None)
        assert engine.claim_subscription(None, name, "holder", 10 * self.LEASE)

        async def main() -> None:
            with pytest.raises(SubscriptionAlreadyOwned, match=name):
                async for _ in subscribe(engine, name=name):
                    pass

        asyncio.run(main())

    def test_async_ephemeral_follows_new_events(self, engine: StorageEngine) -> None:
        write_aggregate(engine, "Order", ["Paid"])
        spy, spied = spy_on(engine)

        async def main() -> tuple[list[SerializedEvent], list[SerializedEvent]]:
            flt = SubscriptionFilter(event_types=("Paid",))
            batches = subscribe(spied, flt, StartFrom.end(), self.options())
            async with contextlib.aclosing(batches):
                pending = asyncio.ensure_future(batches.__anext__())
                await asyncio.to_thread(self.wait_until_reading, spy)
                written = await asyncio.to_thread(
                    write_aggregate, engine, "Order", ["Placed", "Paid"]
                )
                return await asyncio.wait_for(pending, WAIT), written

        got, written = asyncio.run(main())
        assert got == written[1:]
