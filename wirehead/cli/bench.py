"""``wirehead bench``: finds ``benchmarks/run.py`` of a source checkout and runs it with the arguments."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from ._common import UsageError, formatter

HELP = "benchmarks (runs benchmarks/run.py of a source checkout; `wirehead bench --help` for its options)"
DESCRIPTION = """\
Run wirehead's benchmarks: every argument after `bench` is passed to benchmarks/run.py, found in
$WIREHEAD_BENCHMARKS, next to the wirehead package (a source checkout or editable install) or in
./benchmarks.

example:
  wirehead bench --help"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help=HELP, description=DESCRIPTION, formatter_class=formatter, add_help=False)
    p.set_defaults(run=run, bench_args=[])


def find_runner() -> Optional[Path]:
    """``benchmarks/run.py``: in $WIREHEAD_BENCHMARKS, beside the package's folder, or under the working directory."""
    here = Path(__file__).resolve().parents[2]
    dirs = [Path(d) for d in [os.environ.get("WIREHEAD_BENCHMARKS")] if d]
    dirs += [here / "benchmarks", Path.cwd() / "benchmarks"]
    for d in dirs:
        if (d / "run.py").is_file():
            return d / "run.py"
    return None


def run(args: argparse.Namespace) -> int:
    runner = find_runner()
    if runner is None:
        raise UsageError("the benchmarks are not installed with the package: run `wirehead bench` inside a source "
                         "checkout of wirehead (or set WIREHEAD_BENCHMARKS to its benchmarks/ folder)")
    return subprocess.call([sys.executable, str(runner), *args.bench_args])
