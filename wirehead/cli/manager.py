"""``wirehead manager``: run the swap loop of a cache in the foreground."""

from __future__ import annotations

import argparse
import logging

from ..manager import WireheadManager
from ._common import add_config_arg, exit_code, formatter, load_config, stop_on_signals

HELP = "run the manager (swaps, garbage collection) of a cache"
DESCRIPTION = """\
Run the manager of the cache CONFIG describes: it swaps when the write generation holds
SWAP_CAP samples and deletes retired generations and orphans.  Optional (generators swap
themselves when no manager runs); several may run, one holds the swap lease.  Ctrl-C or
SIGTERM stops it cleanly and releases the lease (exit code 130 after Ctrl-C, 0 after SIGTERM).

example:
  wirehead manager cache.yaml --duration 3600"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("manager", help=HELP, description=DESCRIPTION, formatter_class=formatter)
    add_config_arg(p)
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--name", help="label in status (default host:pid)")
    p.set_defaults(run=run, log_level=logging.INFO)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    mgr = WireheadManager(config=config, name=args.name)
    mgr.store.ping()  # an unreachable server fails here, within CONNECT_TIMEOUT
    with stop_on_signals(mgr.stop) as stopped:
        swaps = mgr.run(duration=args.duration)
    print(f"manager stopped after {swaps} swaps")
    return exit_code(stopped.signum)
