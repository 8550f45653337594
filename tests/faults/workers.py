"""Child processes of the fault tests, run as ``python -m tests.faults.workers CMD ...``.

Each worker opens the store by URI itself and reports progress as lines on stdout
(flushed at once), so the parent can kill it at a chosen moment and later compare
what it acknowledged with what storage holds.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

import evercore
from evercore.testing.reliability import TallyChanged, tally_class
from evercore.values import SerializedEvent, StartFrom, SubscriptionFilter, SubscriptionOptions


def say(*parts: object) -> None:
    """One progress line for the parent, in one ``write`` (atomic on a pipe), so a
    kill never leaves half a line."""
    os.write(1, (" ".join(map(str, parts)) + "\n").encode())


def writer(uri: str, aggregate_type: str, ids: list[int], run: str, per_aggregate: int) -> None:
    """Forever: one context appending ``per_aggregate`` events to each aggregate, all
    tagged with the context's reference ``<run>-<n>``; ``ACK <reference>`` after each
    commit returned."""
    cls = tally_class(aggregate_type)
    with evercore.connect(uri) as store:
        say("READY")
        n = 0
        while True:
            reference = f"{run}-{n}"
            with store.context() as ctx:
                for aggregate_id in ids:
                    agg = cls()
                    ctx.load_state_into(agg, aggregate_id)
                    for _ in range(per_aggregate):
                        ctx.apply_event_to(agg, TallyChanged(amount=n), reference=reference)
            say("ACK", reference)
            n += 1


def subscriber(uri: str, name: str, aggregate_type: str, options_json: str, out: str) -> None:
    """Run the durable subscription ``name``; for each delivered event append its id to
    ``out`` (the handler's side effect) and print ``BATCH first last`` after each batch.
    Options: batch_size, lease, owner, delay (seconds per event), stop_at (an event id
    after whose batch the runner stops)."""
    options: dict[str, Any] = json.loads(options_json)
    stop = threading.Event()
    delay = float(options.get("delay", 0))

    def handler(batch: list[SerializedEvent]) -> None:
        with open(out, "a", encoding="utf-8") as handle:
            for event in batch:
                handle.write(f"{event.event_id}\n")
                handle.flush()
                if delay:
                    stop.wait(delay)
        say("BATCH", batch[0].event_id, batch[-1].event_id)
        if batch[-1].event_id >= int(options.get("stop_at", 1 << 62)):
            stop.set()

    with evercore.connect(uri) as store:
        say("READY")
        try:
            store.run_subscription(
                name,
                SubscriptionFilter(aggregate_type=aggregate_type),
                StartFrom.beginning(),
                SubscriptionOptions(
                    batch_size=int(options["batch_size"]),
                    poll_interval=0.05,
                    lease=float(options.get("lease", 15)),
                    owner=options.get("owner"),
                ),
                handler,
                stop=stop,
            )
        except evercore.EvercoreError as exc:
            say("ERROR", type(exc).__name__)
            sys.exit(3)
    say("DONE")


COMMANDS = {"writer": writer, "subscriber": subscriber}


def main(argv: list[str]) -> None:
    """``CMD`` followed by its arguments; lists are JSON."""
    command, *args = argv
    if command == "writer":
        uri, aggregate_type, ids, run, per_aggregate = args
        writer(uri, aggregate_type, json.loads(ids), run, int(per_aggregate))
    elif command == "subscriber":
        subscriber(*args)
    else:
        raise SystemExit(f"unknown worker {command!r}; expected one of {sorted(COMMANDS)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
