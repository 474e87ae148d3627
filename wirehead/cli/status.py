"""``wirehead status``: one snapshot of a cache, as a table or JSON; or its swap log as JSON Lines."""

from __future__ import annotations

import argparse

from ..formatting import swap_log_lines
from ..monitor import snapshot, swap_log
from ._common import UsageError, add_config_arg, formatter, load_config

HELP = "show one snapshot of a cache (table or --json)"
DESCRIPTION = """\
Print one snapshot of the cache CONFIG describes: generations and fill, swaps, committed
samples/s, reuse of the read generation, stored bytes, orphans, the swap lease, and every
generator and manager seen (one silent past DEAD_AFTER_SECONDS shows as dead).
--json prints the same fields as one JSON object; --swaps prints the swap log as JSON Lines.

examples:
  wirehead status cache.yaml
  wirehead status cache.yaml --json | jq '.write_fill, .samples_per_second'
  wirehead status cache.yaml --swaps --limit 10 | jq -c '{gen, size, at}'"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help=HELP, description=DESCRIPTION, formatter_class=formatter)
    add_config_arg(p)
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    p.add_argument("--swaps", action="store_true", help="print the swap log as JSON Lines instead")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="--swaps: the N most recent (default 100)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError(f"--limit should be a positive integer, but got {args.limit}")
    config = load_config(args.config)
    if args.swaps:
        for line in swap_log_lines(swap_log(config, limit=args.limit)):
            print(line)
        return 0
    snap = snapshot(config)
    print(snap.to_json(indent=2) if args.json else snap.format_text())
    return 0
