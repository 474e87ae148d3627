"""``wirehead CONFIG [--daemon] [--tui] [--poll-interval S]``: upstream wirehead 0.9.x's command line.

Chosen by :func:`wirehead.cli.parse_args` when the first argument is an existing file and not
a command name.  A view over :class:`wirehead.logger.WireheadLogger` (itself a view over
:mod:`wirehead.monitor`): without flags it prints the swap history as JSON Lines and exits
(``wirehead log CONFIG`` in the project's own words); ``--daemon`` streams snapshots as JSON
Lines; ``--tui`` is the live terminal view (``wirehead watch CONFIG`` in a curses screen).
"""

from __future__ import annotations

import argparse
import sys

from ..logger import WireheadLogger
from ._common import UsageError, formatter

DESCRIPTION = """\
Upstream wirehead's command line, kept for its users:
  wirehead CONFIG                 print the swap history as JSON Lines and exit
  wirehead CONFIG --daemon        print a snapshot as a JSON line every --poll-interval seconds
  wirehead CONFIG --tui           live terminal view (q quits)
The project's own commands (`wirehead --help`) say the same and more."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wirehead", description=DESCRIPTION, formatter_class=formatter)
    p.add_argument("config", metavar="CONFIG", help="path of the YAML config of the cache")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--daemon", action="store_true", help="stream snapshots as JSON Lines until Ctrl-C")
    mode.add_argument("--tui", action="store_true", help="live terminal view (curses); q quits")
    p.add_argument("--poll-interval", type=float, default=2.0, metavar="S",
                   help="seconds between polls (default 2)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors in the log")
    p.set_defaults(run=run, command="CONFIG")
    return p


def run(args: argparse.Namespace) -> int:
    if not args.poll_interval > 0:
        raise UsageError(f"--poll-interval should be a positive number of seconds, but got {args.poll_interval}")
    logger = WireheadLogger(args.config, poll_interval=args.poll_interval)
    try:
        if args.tui:
            logger.run_tui()
        elif args.daemon:
            logger.run_daemon()
        else:
            entries = logger.history()
            if not entries:
                print("No swaps recorded yet.", file=sys.stderr)  # upstream's words, kept off the JSON stream
            for entry in entries:
                print(entry)
        return 0
    finally:
        logger.close()
