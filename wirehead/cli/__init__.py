"""The ``wirehead`` command (also ``python -m wirehead``).

One small module per command, each with ``add_parser(subparsers)`` and ``run(args) -> int``.
:func:`main` parses, runs, and maps exceptions to exit codes in one place; commands never
call ``sys.exit``:

* 0 success; 1 a failure while working (e.g. a generator's factory raised);
* 2 a problem to fix before running: bad config, unreachable or refusing server, missing
  factory, a wait that passed its deadline, a refused confirmation without a terminal;
* 130 Ctrl-C; 143 SIGTERM (long-running commands stop cleanly and exit 0 instead).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from .. import __version__
from ..errors import ConfigError, ServerNotFound, StoreError, WaitTimeout, WireheadError
from ._common import FactoryError, Terminated, UsageError, formatter
from . import bench, clean, demo, export, generate, manager, qc, server, status, swaplog, upstream, watch

__all__ = ["main", "parse_args", "build_parser", "UsageError", "FactoryError"]

COMMANDS = (server, manager, generate, status, swaplog, watch, clean, demo, export, qc, bench)

#: Errors that mean "fix something, then run again": exit code 2 and one line.
SETUP_ERRORS = (ConfigError, StoreError, FactoryError, UsageError, WaitTimeout, ServerNotFound)

log = logging.getLogger("wirehead.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wirehead", formatter_class=formatter,
        description="wirehead: a MongoDB cache between slow synthetic-data generators and a fast training loop.",
        epilog="examples:\n"
               "  wirehead demo --out previews/          # everything at once, no set-up\n"
               "  wirehead manager cache.yaml            # swap loop of a cache\n"
               "  wirehead generate cache.yaml --factory mygen:make --processes 4\n"
               "  wirehead status cache.yaml --json | jq .fill_fraction\n"
               "  wirehead cache.yaml [--daemon|--tui]  # upstream 0.9.x's form: swap history, snapshots, live view\n"
               "\nrun `wirehead COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"wirehead {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors in the log")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for cmd in COMMANDS:
        cmd.add_parser(sub)
    return parser


def _command_names() -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse a command line (``sys.argv[1:]`` by default).  ``--help`` and errors raise SystemExit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in _command_names() and os.path.isfile(argv[0]):
        return upstream.build_parser().parse_args(argv)  # upstream 0.9.x: `wirehead CONFIG [--daemon|--tui]`
    parser = build_parser()
    if argv and argv[0] == "bench":  # everything after `bench` belongs to benchmarks/run.py
        args = parser.parse_args(["bench"])
        args.bench_args = argv[1:]
        return args
    return parser.parse_args(argv)


def _setup_logging(args: argparse.Namespace) -> None:
    default = getattr(args, "log_level", logging.WARNING)
    level = logging.WARNING if args.quiet else default
    if args.verbose:
        level = logging.DEBUG if args.verbose > 1 else min(level, logging.INFO)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)
    args.log_level = level


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``wirehead`` command line; return its exit code (never calls ``sys.exit``)."""
    try:
        args = parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse already printed
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    _setup_logging(args)
    try:
        return int(args.run(args) or 0)
    except SETUP_ERRORS as e:
        print(f"wirehead {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"wirehead {args.command}: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"wirehead {args.command}: interrupted", file=sys.stderr)
        return 130
    except WireheadError as e:
        print(f"wirehead {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `wirehead log cfg | head -1`
        return 0
    except Exception as e:  # noqa: BLE001 - one place reports the unexpected, with its traceback
        log.debug("unexpected error", exc_info=True)
        print(f"wirehead {args.command}: unexpected {type(e).__name__}: {_one_line(e)} "
              f"(run with -vv for the traceback)", file=sys.stderr)
        return 1
