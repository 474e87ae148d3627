"""``wirehead watch``: a live terminal view of a cache."""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from ..connect import open_store
from ..monitor import snapshot
from ._common import UsageError, add_config_arg, formatter, load_config

HELP = "live view of a cache: fill bar, swaps, rates, generator health"
DESCRIPTION = """\
Redraw a snapshot of the cache CONFIG describes every --interval seconds until Ctrl-C:
the fill bar of the write generation, swaps and their intervals, committed samples/s and
reads/s, reuse of the read generation, and the health of every generator and manager.
--once prints one frame and exits.

examples:
  wirehead watch cache.yaml
  wirehead watch cache.yaml --once"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help=HELP, description=DESCRIPTION, formatter_class=formatter)
    add_config_arg(p)
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="seconds between frames (default 1)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.interval > 0:
        raise UsageError(f"--interval should be a positive number of seconds, but got {args.interval}")
    store = open_store(load_config(args.config), start_server=False)
    clear = sys.stdout.isatty() and not args.once
    width = max(10, min(50, shutil.get_terminal_size((100, 24)).columns - 60))
    prev = None
    try:
        while True:
            snap = snapshot(store)
            frame = snap.format_text(width=width)
            if prev is not None and snap.taken_at > prev.taken_at:
                dt = snap.taken_at - prev.taken_at
                reads = snap.read_gen_reads - prev.read_gen_reads if snap.read_gen == prev.read_gen \
                    else snap.read_gen_reads
                frame += f"\n  reads             {max(0, reads) / dt:.1f} reads/s (since the last frame)"
            if args.once:
                print(frame)
                return 0
            if clear:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(frame)
            print(f"\n  every {args.interval:g} s; Ctrl-C to quit", flush=True)
            prev = snap
            time.sleep(args.interval)
    finally:
        store.close()
