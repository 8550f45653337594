"""Render the figures of the last reliability run into RELIABILITY.md.

The reliability and fault tests add their figures to ``.reliability-figures.json``
(see ``evercore.testing.reliability.record_figures``); this script turns them into
the Markdown table between the ``figures`` markers of RELIABILITY.md:

    .venv/bin/python -m pytest -q tests/test_reliability_*.py tests/faults
    .venv/bin/python tests/reliability_report.py          # rewrites the table
    .venv/bin/python tests/reliability_report.py --check  # fails if it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / ".reliability-figures.json"
DOCUMENT = ROOT / "RELIABILITY.md"
START, END = "<!-- figures:start -->", "<!-- figures:end -->"

SHOWN = ("operations", "faults", "events_checked", "lost", "duplicates")
"""The table's figure columns; every other figure goes into the notes column."""
BACKENDS = ("memory", "sqlite", "postgres", "redis", "rust", "pure-python")


def grouped(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries of tests named ``"<group>: <kind>"`` summed into one per group and backend
    (their kinds listed), others unchanged."""
    result: list[dict[str, Any]] = []
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        group, _, kind = entry["test"].partition(": ")
        if not kind:
            result.append(entry)
            continue
        key = (group, entry["backend"])
        total = groups.setdefault(key, {"test": group, "backend": entry["backend"], "kinds": []})
        total["kinds"].append(kind)
        for name, value in entry.items():
            if isinstance(value, int) and name not in ("test", "backend"):
                total[name] = total.get(name, 0) + value
            elif name == "recorded_at":
                total[name] = max(total.get(name, ""), value)
    for total in groups.values():
        total["kinds"] = "; ".join(sorted(total["kinds"]))
        result.append(total)
    return result


def render(figures: dict[str, dict[str, Any]]) -> str:
    """The Markdown table of ``figures`` (one row per test and backend)."""
    order = {name: i for i, name in enumerate(BACKENDS)}
    rows = sorted(
        grouped(list(figures.values())),
        key=lambda e: (e["test"], order.get(e["backend"], len(order)), e["backend"]),
    )
    lines = [
        "| test | backend | operations | faults injected | events checked | lost "
        "| duplicated beyond at-least-once | notes |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for entry in rows:
        cells = [_cell(entry.get(name, "")) for name in SHOWN]
        notes = ", ".join(
            f"{key.replace('_', ' ')} {_cell(value)}"
            for key, value in sorted(entry.items())
            if key not in (*SHOWN, "test", "backend", "recorded_at")
        )
        lines.append(f"| {entry['test']} | {entry['backend']} | {' | '.join(cells)} | {notes} |")
    newest = max((e.get("recorded_at", "") for e in rows), default="")
    lines.append("")
    lines.append(f"Figures recorded by the tests themselves; latest entry {newest} (UTC).")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def updated(document: str, table: str) -> str:
    """``document`` with the text between the markers replaced by ``table``."""
    head, _, rest = document.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{DOCUMENT.name} has no {START} ... {END} markers")
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the table (or, with ``--check``, fail when it differs from the figures)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the table is stale")
    args = parser.parse_args(argv)
    figures = json.loads(FIGURES.read_text(encoding="utf-8"))
    document = DOCUMENT.read_text(encoding="utf-8")
    new = updated(document, render(figures))
    if args.check:
        return 0 if new == document else 1
    DOCUMENT.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
