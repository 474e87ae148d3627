"""``wirehead bench``: forwards its arguments to :func:`wirehead.bench.main`."""

from __future__ import annotations

import argparse
import importlib

from ._common import UsageError, formatter

HELP = "benchmarks (arguments go to wirehead.bench; `wirehead bench --help` for its options)"
DESCRIPTION = """\
Run wirehead's benchmarks: every argument after `bench` is passed to wirehead.bench.main.

example:
  wirehead bench --help"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help=HELP, description=DESCRIPTION, formatter_class=formatter, add_help=False)
    p.set_defaults(run=run, bench_args=[])


def run(args: argparse.Namespace) -> int:
    try:
        bench = importlib.import_module("wirehead.bench")
        entry = bench.main
    except (ImportError, AttributeError) as e:
        raise UsageError(f"the benchmarks are not available: wirehead.bench.main cannot be imported "
                         f"({type(e).__name__}: {e})") from None
    try:
        return int(entry(list(args.bench_args)) or 0)
    except SystemExit as e:  # an argparse-based bench.main exits on --help or a usage error
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
