"""``evercore tail URI``: follow a store's global event log as JSON lines.

Each event is printed as one JSON object with the keys ``event_id``,
``aggregate_id``, ``event_type``, ``sequence``, ``event_time`` (ISO 8601, UTC),
``reference`` and ``state`` (the event's state embedded as JSON when it parses as
JSON, else as a string). Output is flushed after every batch, so the command
works in a pipe (``evercore tail sqlite:///app.db | jq .``).

It runs an ephemeral subscription (nothing is stored in the store) and stops
cleanly (output flushed, no traceback) on SIGTERM, after ``--max-events`` events or
after ``--idle-exit`` seconds without a new event, with exit status 0, and on
Ctrl-C with the CLI's "interrupted" status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from types import FrameType
from typing import Any, TextIO

from evercore.registry import open_engine
from evercore.spi import StorageEngine
from evercore.subscriptions import run_ephemeral_subscription
from evercore.values import (
    SerializedEvent,
    StartFrom,
    SubscriptionFilter,
    SubscriptionOptions,
)

_DESCRIPTION = """\
Follow the store's global event log and print each event as one JSON line:
  {"event_id": ..., "aggregate_id": ..., "event_type": ..., "sequence": ...,
   "event_time": "<ISO 8601, UTC>", "reference": ..., "state": <JSON or string>}
Nothing is stored in the store (an ephemeral subscription). Stops cleanly on
SIGTERM, after --max-events events or after --idle-exit seconds without a new
event (exit status 0), and on Ctrl-C (exit status 130).

--from:
  end          only events stored from now on (the default, like tail -f)
  beginning    the whole log, then follow
  N            from the event with global id N (inclusive)
  TIMESTAMP    from the first event at or after an ISO 8601 time, e.g.
               2024-05-01T12:00:00Z (a time without a zone is taken as UTC)
"""


# -- arguments ----------------------------------------------------------------------------


def parse_start(text: str) -> StartFrom:
    """``--from`` as a :class:`StartFrom`: ``beginning``, ``end``, an event id
    (inclusive) or an ISO 8601 timestamp (UTC when it has no zone)."""
    word = text.strip().lower()
    if word == "beginning":
        return StartFrom.beginning()
    if word == "end":
        return StartFrom.end()
    if word.isdigit():
        return StartFrom.after_event(max(int(word) - 1, 0))
    try:
        # Python 3.10's fromisoformat does not know the "Z" suffix.
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --from value {text!r}: expected beginning, end, an event id "
            "or an ISO 8601 timestamp such as 2024-05-01T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return StartFrom.at_time(moment.astimezone(timezone.utc))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_tail_parser(
    subparsers: Any, *, parents: Sequence[argparse.ArgumentParser] = ()
) -> argparse.ArgumentParser:
    """Add the ``tail`` subcommand to ``subparsers`` (from ``add_subparsers()``) and
    return its parser, whose ``handler`` default is :func:`run_tail`."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tail",
        help="follow the event log as JSON lines",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )
    parser.add_argument("uri", metavar="URI", help="store URI, e.g. sqlite:///events.db")
    parser.add_argument(
        "--aggregate-type", metavar="NAME", help="only events of aggregates of this type"
    )
    parser.add_argument(
        "--event-type",
        metavar="NAME",
        action="append",
        default=[],
        help="only events of this type (repeat for several)",
    )
    parser.add_argument("--key", metavar="KEY", help="only events of the aggregate with this key")
    parser.add_argument(
        "--from",
        dest="start",
        metavar="WHERE",
        type=parse_start,
        default=StartFrom.end(),
        help="beginning, end (default), an event id, or an ISO 8601 timestamp",
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=100, help="events per read (default 100)"
    )
    parser.add_argument(
        "--poll-interval",
        type=_positive_seconds,
        default=0.5,
        metavar="SECONDS",
        help="longest wait between reads when idle (default 0.5; backends that push "
        "wake up sooner)",
    )
    parser.add_argument(
        "--max-events", type=_positive_int, metavar="N", help="exit after printing N events"
    )
    parser.add_argument(
        "--idle-exit",
        type=_positive_seconds,
        metavar="SECONDS",
        help="exit after SECONDS without a new event",
    )
    parser.set_defaults(handler=run_tail)
    return parser


# -- output -------------------------------------------------------------------------------


def event_json(event: SerializedEvent) -> str:
    """One event as a JSON line (without the newline)."""
    try:
        state: Any = json.loads(event.state)
    except ValueError:
        state = event.state
    return json.dumps(
        {
            "event_id": event.event_id,
            "aggregate_id": event.aggregate_id,
            "event_type": event.event_type,
            "sequence": event.sequence,
            "event_time": event.event_time.isoformat(),
            "reference": event.reference,
            "state": state,
        },
        ensure_ascii=False,
    )


# -- following ------------------------------------------------------------------------------


class _IdleTimer:
    """Sets ``stop`` once ``seconds`` pass without :meth:`touch`."""

    def __init__(self, stop: threading.Event, seconds: float) -> None:
        self._stop = stop
        self._seconds = seconds
        self._last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evercore-tail-idle", daemon=True)
        self._thread.start()

    def touch(self) -> None:
        """Something happened: restart the idle clock."""
        self._last = time.monotonic()

    def _run(self) -> None:
        while not self._done.wait(min(0.05, self._seconds)):
            if time.monotonic() - self._last >= self._seconds:
                self._stop.set()
                return

    def close(self) -> None:
        """Stop watching."""
        self._done.set()
        self._thread.join()


def tail(
    engine: StorageEngine,
    flt: SubscriptionFilter,
    start: StartFrom,
    options: SubscriptionOptions,
    out: TextIO,
    *,
    stop: threading.Event | None = None,
    max_events: int | None = None,
    idle_exit: float | None = None,
) -> int:
    """Print matching events to ``out`` as JSON lines until ``stop`` is set, ``max_events``
    were printed or ``idle_exit`` seconds passed without one; return how many were printed."""
    stop = stop if stop is not None else threading.Event()
    idle = _IdleTimer(stop, idle_exit) if idle_exit is not None else None
    printed = 0

    def handle(batch: list[SerializedEvent]) -> None:
        nonlocal printed
        if max_events is not None:
            batch = batch[: max_events - printed]
        out.write("".join(event_json(event) + "\n" for event in batch))
        out.flush()
        printed += len(batch)
        if idle is not None:
            idle.touch()
        if max_events is not None and printed >= max_events:
            stop.set()

    try:
        run_ephemeral_subscription(engine, flt, start, options, handle, stop=stop)
    finally:
        if idle is not None:
            idle.close()
    return printed


EXIT_OK = 0
"""Stopped by SIGTERM, ``--max-events`` or ``--idle-exit``."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (the shell convention, 128 + SIGINT), as the rest of the CLI."""


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[list[int]]:
    """Turn Ctrl-C and SIGTERM into ``stop`` while following (main thread only);
    yields the list of the signals received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def request_stop(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_tail(args: argparse.Namespace) -> int:
    """``evercore tail URI``: follow the log on stdout; returns the exit status."""
    options = SubscriptionOptions(batch_size=args.batch_size, poll_interval=args.poll_interval)
    flt = SubscriptionFilter(
        aggregate_type=args.aggregate_type,
        event_types=tuple(args.event_type),
        aggregate_key=args.key,
    )
    stop = threading.Event()
    engine = open_engine(args.uri)
    try:
        with _stop_on_signals(stop) as received:
            tail(
                engine,
                flt,
                args.start,
                options,
                sys.stdout,
                stop=stop,
                max_events=args.max_events,
                idle_exit=args.idle_exit,
            )
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Point stdout at /dev/null so
        # that the interpreter's final flush does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        engine.close()
    return EXIT_INTERRUPTED if signal.SIGINT in received else EXIT_OK


__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "add_tail_parser",
    "event_json",
    "parse_start",
    "run_tail",
    "tail",
]
