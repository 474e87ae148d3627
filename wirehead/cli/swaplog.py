"""``wirehead log``: the swap log of a cache as JSON Lines (same as ``status --swaps``)."""

from __future__ import annotations

import argparse

from ..formatting import swap_log_lines
from ..monitor import swap_log
from ._common import UsageError, add_config_arg, formatter, load_config

HELP = "print the swap log as JSON Lines (for jq)"
DESCRIPTION = """\
Print the most recent swaps of the cache CONFIG describes, oldest first, one JSON object per
line: gen (the generation that became readable), size, reason (full, sealed, swap_early,
min_fill), swap_seconds, by (the swapper), stored_bytes, at (epoch seconds).

example:
  wirehead log cache.yaml --limit 50 | jq -r '[.gen, .size, .reason] | @tsv'"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("log", help=HELP, description=DESCRIPTION, formatter_class=formatter)
    add_config_arg(p)
    p.add_argument("--limit", type=int, default=100, metavar="N", help="the N most recent swaps (default 100)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError(f"--limit should be a positive integer, but got {args.limit}")
    for line in swap_log_lines(swap_log(load_config(args.config), limit=args.limit)):
        print(line)
    return 0
