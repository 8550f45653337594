"""The ``evercore`` command line.

Subcommands: ``backends``, ``migrate URI``, ``info URI``, ``bench [URI ...]`` and
``tail URI`` (from :mod:`evercore.cli_tail`). Run ``evercore COMMAND --help`` for each.

Exit codes, for scripts:

* 0 -- success;
* 1 -- an error (unknown scheme, unreachable store, refused operation, ...),
  reported as one line ``evercore: error: ...`` on stderr (add ``--debug`` for the
  traceback);
* 2 -- a usage error (unknown command, bad or missing argument);
* 130 -- interrupted (Ctrl-C).

Passwords in URIs never appear in the output: every URI is shown redacted.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from evercore.errors import ConfigurationError, EvercoreError, StorageEngineError
from evercore.registry import InstalledBackend, get_registry, open_engine, redact_uri
from evercore.spi import StorageEngine, SupportsMigrations, SupportsStats

EXIT_OK = 0
"""The command did what was asked."""
EXIT_ERROR = 1
"""The command failed; the reason is on stderr."""
EXIT_USAGE = 2
"""The command line was wrong (argparse's convention)."""
EXIT_INTERRUPTED = 130
"""Interrupted by Ctrl-C (the shell convention, 128 + SIGINT)."""

_EXIT_CODES_HELP = """\
exit status:
  0    success
  1    error (one line on stderr: "evercore: error: ..."; --debug adds the traceback)
  2    usage error (bad command or arguments)
  130  interrupted (Ctrl-C)
"""

_URI_HELP = (
    "store URI: memory://, sqlite:///relative.db, sqlite:////absolute/path.db, "
    "postgresql://user@host/db?schema=NAME, redis://host:6379/0?prefix=NAME "
    "(see 'evercore backends' for what is installed)"
)

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)
    args.command_line = arguments
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("evercore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`evercore info URI | head`): not an error. Point stdout at
        # /dev/null so that the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        uris = _uris_in(args)
        if args.debug:
            trace = "".join(traceback.format_exception(exc))
            sys.stderr.write(_hide_passwords(trace, uris))
        print(f"evercore: error: {describe_error(exc, uris)}", file=sys.stderr)
        return EXIT_ERROR


def describe_error(exc: BaseException, uris: Sequence[str] = ()) -> str:
    """``exc`` as one line, with every password of ``uris`` hidden.

    evercore's own errors speak for themselves; foreign ones (a driver's, the OS's)
    are prefixed with their class name so the reader knows where they came from.
    """
    text = " ".join(str(exc).split()) or "(no message)"
    if not isinstance(exc, EvercoreError):
        text = f"{type(exc).__name__}: {text}"
    return _hide_passwords(text, uris)


def _hide_passwords(text: str, uris: Sequence[str]) -> str:
    # Belt and braces: messages should already be redacted, but one from a driver or
    # a chained exception in a --debug traceback may still quote the URI it was given.
    for uri in uris:
        text = text.replace(uri, redact_uri(uri))
        password = _password(uri)
        if password:
            # a driver may quote it as given or percent-decoded
            for form in {password, unquote(password)}:
                text = text.replace(form, "***")
    return text


def _password(uri: str) -> str | None:
    try:
        return urlsplit(uri).password
    except ValueError:
        return None


def _uris_in(args: argparse.Namespace) -> list[str]:
    found = [getattr(args, "uri", None), *(getattr(args, "uris", None) or ())]
    return [uri for uri in found if isinstance(uri, str)]


# -- the parser ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``evercore`` argument parser with every subcommand."""
    # --debug is accepted before or after the subcommand. The subcommands' copy defaults
    # to SUPPRESS so that, when absent there, it does not overwrite the top-level value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback when a command fails",
    )
    parser = argparse.ArgumentParser(
        prog="evercore",
        description="evercore: an event store with pluggable backends. "
        "Inspect, migrate, follow and benchmark stores.",
        epilog=_EXIT_CODES_HELP + "\nRun 'evercore COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback when a command fails"
    )
    parser.add_argument("--version", action="version", version=f"evercore {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_backends(commands, common)
    _add_migrate(commands, common)
    _add_info(commands, common)
    _add_bench(commands, common)
    _add_tail(commands, common)
    return parser


def _subparser(
    commands: Any, common: argparse.ArgumentParser, name: str, summary: str, description: str
) -> argparse.ArgumentParser:
    sub: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description,
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    return sub


def _version() -> str:
    from evercore import __version__

    return str(__version__)


# -- backends ---------------------------------------------------------------------------


def _add_backends(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = _subparser(
        commands,
        common,
        "backends",
        "list the installed storage backends",
        "List the storage backends that installed plugins provide: name, URI schemes,\n"
        "the distribution (and version) that ships each, and a description.",
    )
    sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.set_defaults(handler=run_backends)


def run_backends(args: argparse.Namespace) -> int:
    """``evercore backends``."""
    installed = get_registry().backends()
    if args.json:
        records = [
            {
                "name": b.spec.name,
                "schemes": list(b.spec.schemes),
                "distribution": b.distribution,
                "version": _backend_version(b),
                "plugin": b.plugin,
                "description": b.spec.description,
            }
            for b in installed
        ]
        print(json.dumps(records, indent=2))
        return EXIT_OK
    rows = [
        [
            b.spec.name,
            ", ".join(f"{s}://" for s in b.spec.schemes),
            f"{b.distribution or '-'} {_backend_version(b) or ''}".strip(),
            b.spec.description,
        ]
        for b in installed
    ]
    print(_left_table(["NAME", "SCHEMES", "DISTRIBUTION", "DESCRIPTION"], rows))
    return EXIT_OK


def _backend_version(backend: InstalledBackend) -> str | None:
    # Built-in backends ship inside evercore itself, so they carry its version.
    if backend.version is None and backend.distribution == "evercore":
        return _version()
    return backend.version


def _left_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [list(headers), *rows]
    )


# -- migrate ----------------------------------------------------------------------------


def _add_migrate(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = _subparser(
        commands,
        common,
        "migrate",
        "create or upgrade a store's schema",
        "Apply the backend's pending schema migrations to the store at URI and print\n"
        "the resulting schema version. Safe to run repeatedly and from several\n"
        "processes at once. A store whose schema is newer than this evercore fails.",
    )
    sub.add_argument("uri", metavar="URI", help=_URI_HELP)
    sub.set_defaults(handler=run_migrate)


@contextmanager
def _engine(uri: str) -> Iterator[StorageEngine]:
    engine = open_engine(uri)
    try:
        yield engine
    finally:
        engine.close()


def run_migrate(args: argparse.Namespace) -> int:
    """``evercore migrate URI``."""
    backend = get_registry().for_uri(args.uri).name
    with _engine(args.uri) as engine:
        if not isinstance(engine, SupportsMigrations):
            print(
                f"{redact_uri(args.uri)}: the {backend} backend has no versioned schema; "
                "nothing to migrate"
            )
            return EXIT_OK
        version = engine.migrate()
    print(f"{redact_uri(args.uri)}: {backend} schema at version {version}")
    return EXIT_OK


# -- info -------------------------------------------------------------------------------


def _add_info(commands: Any, common: argparse.ArgumentParser) -> None:
    sub = _subparser(
        commands,
        common,
        "info",
        "show a store's size, types and subscriptions",
        "Show what the store at URI holds: aggregate, event and snapshot counts, the\n"
        "registered aggregate and event types, and each durable subscription with its\n"
        "cursor, lease owner and lag (event ids past its cursor, not counting its filter).\n"
        "Read-only: it does not migrate the store.",
    )
    sub.add_argument("uri", metavar="URI", help=_URI_HELP)
    sub.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub.set_defaults(handler=run_info)


def store_info(engine: StorageEngine) -> dict[str, Any]:
    """What ``evercore info`` reports, as JSON-ready data.

    Counts and subscriptions come from the optional ``SupportsStats`` capability; an
    engine without it reports the types and the highest event id only (counts None).
    """
    max_event_id = engine.get_max_event_id(None)
    info: dict[str, Any] = {
        "aggregates": None,
        "events": None,
        "snapshots": None,
        "max_event_id": max_event_id,
        "aggregate_types": [t.name for t in engine.get_aggregate_types(None)],
        "event_types": [t.name for t in engine.get_event_types(None)],
        "subscriptions": None,
    }
    if isinstance(engine, SupportsStats):
        counts = engine.get_counts(None)
        info.update(counts._asdict())
        info["subscriptions"] = [
            {
                "name": s.name,
                "active": s.active,
                "cursor": s.last_event_id,
                "lag": max(max_event_id - s.last_event_id, 0),
                "lease_owner": s.lease_owner,
                "lease_expires_at": _iso(s.lease_expires_at),
            }
            for s in engine.list_subscriptions(None)
        ]
    return info


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def run_info(args: argparse.Namespace) -> int:
    """``evercore info URI``."""
    with _engine(args.uri) as engine:
        try:
            info = store_info(engine)
        except StorageEngineError as exc:
            if not isinstance(engine, SupportsMigrations):
                raise
            # The usual cause is a store nobody has created yet; say how to create it.
            raise StorageEngineError(
                f"{exc.message} (if the store is new, create it first: "
                f"evercore migrate {shlex.quote(redact_uri(args.uri))})",
                exc.error_type,
            ) from exc
    if args.json:
        print(json.dumps({"uri": redact_uri(args.uri), **info}, indent=2))
    else:
        print(format_info(redact_uri(args.uri), info))
    return EXIT_OK


def format_info(uri: str, info: dict[str, Any]) -> str:
    """``store_info``'s data as text for a terminal."""

    def count(key: str) -> str:
        value = info[key]
        return "n/a (backend does not report it)" if value is None else f"{value:,}"

    lines = [
        f"store:            {uri}",
        f"aggregates:       {count('aggregates')}",
        f"events:           {count('events')}",
        f"snapshots:        {count('snapshots')}",
        f"last event id:    {info['max_event_id']:,}",
        f"aggregate types:  {', '.join(info['aggregate_types']) or '(none)'}",
        f"event types:      {', '.join(info['event_types']) or '(none)'}",
    ]
    subscriptions = info["subscriptions"]
    if subscriptions is None:
        lines.append("subscriptions:    n/a (backend does not report them)")
    elif not subscriptions:
        lines.append("subscriptions:    (none)")
    else:
        from evercore.bench import format_table

        rows = [
            [
                s["name"],
                "yes" if s["active"] else "no",
                f"{s['cursor']:,}",
                f"{s['lag']:,}",
                s["lease_owner"] or "-",
                s["lease_expires_at"] or "-",
            ]
            for s in subscriptions
        ]
        headers = ["name", "active", "cursor", "lag", "lease owner", "lease expires"]
        lines += ["subscriptions:", _indent(format_table(headers, rows))]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# -- bench ------------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _add_bench(commands: Any, common: argparse.ArgumentParser) -> None:
    from evercore.bench import BenchConfig

    defaults = BenchConfig()
    sub = _subparser(
        commands,
        common,
        "bench",
        "compare the throughput of backends",
        "Run the standard workloads on each store in turn and print a comparison\n"
        "table: events/s per workload, and each store's ratio to the first one.\n"
        "With no URI: memory:// and a temporary SQLite file.\n\n"
        "workloads (payloads of ~150 bytes of JSON):\n"
        "  ingest_batch   --events events over --aggregates aggregates, --batch per context\n"
        "  ingest_single  --single-events events, one per context (one transaction each)\n"
        "  rehydrate      load one 1,000-event aggregate until --events events are replayed\n"
        "  catchup        read the whole log in pages of 1,000, as a subscription catching up\n"
        "  concurrent     --threads threads append --events/10 events to 4 hot aggregates,\n"
        "                 retrying on conflict\n\n"
        "The benchmark writes data it never deletes, so every store must be empty\n"
        "(use a throwaway database, ?schema= or ?prefix=) unless --yes is given.\n\n"
        "examples:\n"
        "  evercore bench\n"
        "  evercore bench memory:// sqlite:///bench.db --events 100000 --markdown bench.md\n"
        "  evercore bench 'postgresql://postgres@127.0.0.1/test?schema=bench' --plot bench.png",
    )
    sub.add_argument("uris", nargs="*", metavar="URI", help=_URI_HELP)
    sizes = sub.add_argument_group("workload sizes")
    sizes.add_argument(
        "--events",
        type=_positive,
        default=defaults.events,
        metavar="N",
        help="events ingested in contexts of --batch (default %(default)s)",
    )
    sizes.add_argument(
        "--aggregates",
        type=_positive,
        default=defaults.aggregates,
        metavar="N",
        help="aggregates the ingest spreads events over (default %(default)s)",
    )
    sizes.add_argument(
        "--batch",
        type=_positive,
        default=defaults.batch,
        metavar="N",
        help="events per context in the batched ingest (default %(default)s)",
    )
    sizes.add_argument(
        "--single-events",
        type=_positive,
        metavar="N",
        help="events ingested one per context (default: --events / 10)",
    )
    sizes.add_argument(
        "--threads",
        type=_positive,
        default=defaults.threads,
        metavar="N",
        help="threads in the concurrent workload (default %(default)s)",
    )
    from evercore.bench import WORKLOAD_KEYS

    sizes.add_argument(
        "--workload",
        action="append",
        choices=WORKLOAD_KEYS,
        metavar="NAME",
        help="run only this workload (repeatable): " + ", ".join(WORKLOAD_KEYS),
    )
    out = sub.add_argument_group("output")
    out.add_argument(
        "--json",
        metavar="FILE",
        help="also write the results as JSON ('-': to stdout, instead of the table)",
    )
    out.add_argument(
        "--markdown",
        metavar="FILE",
        help="also write the table as Markdown ('-': to stdout, instead of the table)",
    )
    out.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw a bar chart (needs: pip install 'evercore[plot]')",
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    sub.add_argument(
        "--yes", action="store_true", help="write into stores that already hold events"
    )
    sub.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    """``evercore bench [URI ...]``."""
    from evercore import bench

    config = bench.BenchConfig(
        events=args.events,
        aggregates=args.aggregates,
        batch=args.batch,
        single_events=args.single_events or max(args.events // 10, 1),
        concurrent_events=max(args.events // 10, 1),
        threads=args.threads,
    )
    workloads = [w for w in bench.WORKLOADS if not args.workload or w.key in args.workload]
    if args.plot:
        _require_matplotlib(args.plot)
    progress = None if args.no_progress else sys.stderr
    with _bench_targets(args.uris) as targets:
        report = bench.run_bench(targets, config, workloads, progress, allow_non_empty=args.yes)
    if "-" not in (args.json, args.markdown):  # stdout already carries the chosen format
        print(bench.render_text(report))
    for target in report.targets:
        if not target.temporary and not target.uri.startswith("memory:"):
            print(
                f"evercore: note: the benchmark's data stays in {target.display_uri}",
                file=sys.stderr,
            )
    command = " ".join(["evercore", *(shlex.quote(redact_uri(a)) for a in args.command_line)])
    if args.json:
        bench.write_text(args.json, bench.render_json(report))
    if args.markdown:
        bench.write_text(args.markdown, bench.render_markdown(report, command))
    if args.plot:
        bench.render_plot(report, args.plot)
    return EXIT_OK


@contextmanager
def _bench_targets(uris: Sequence[str]) -> Iterator[list[Any]]:
    from evercore import bench

    if uris:
        yield bench.targets_for(uris)
    else:
        with bench.default_targets() as targets:
            yield targets


def _require_matplotlib(path: str) -> None:
    # Checked before the run so a missing extra does not cost a whole benchmark.
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigurationError(f"--plot {path} needs matplotlib: pip install 'evercore[plot]'")


# -- tail -------------------------------------------------------------------------------


def _add_tail(commands: Any, common: argparse.ArgumentParser) -> None:
    from evercore import cli_tail  # the subscriptions side owns ``tail``

    tail = cli_tail.add_tail_parser(commands, parents=[common])
    tail.epilog = tail.epilog or _EXIT_CODES_HELP


__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "describe_error",
    "format_info",
    "main",
    "run_backends",
    "run_bench_command",
    "run_info",
    "run_migrate",
    "store_info",
]
