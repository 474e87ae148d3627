"""``wirehead clean``: drop a cache's database after a confirmation."""

from __future__ import annotations

import argparse
import sys

from ..connect import open_store
from ..monitor import snapshot
from ._common import UsageError, add_config_arg, formatter, load_config

HELP = "drop the cache's database (asks first unless --yes)"
DESCRIPTION = """\
Delete the whole database of the cache CONFIG describes (samples, generations, heartbeats,
swap log), and this node's shared memory of it that no live reader uses (/dev/shm).  Asks y/N
first; without a terminal to ask on, --yes is required (else exit 2).  Stop generators, managers
and readers of the cache first.

examples:
  wirehead clean cache.yaml
  wirehead clean cache.yaml --yes"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clean", help=HELP, description=DESCRIPTION, formatter_class=formatter)
    add_config_arg(p)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    store = open_store(config, start_server=False)
    store.check_protocol = False  # cleaning is the fix for a cache made with other settings
    try:
        if not store.database_exists():
            print(f"database {config.dbname!r} at {store.redacted_uri} does not exist; nothing to clean")
            _sweep_node_cache(config, store.uri)
            return 0
        if not args.yes:
            if not sys.stdin or not sys.stdin.isatty():
                raise UsageError(f"refusing to drop database {config.dbname!r} without confirmation: "
                                 "no terminal to ask on; pass --yes")
            snap = snapshot(store)
            alive = snap.alive_generators + sum(1 for m in snap.managers if m.status == "alive")
            note = f" ({alive} generators/managers still alive!)" if alive else ""
            answer = input(f"Drop database {config.dbname!r} at {store.redacted_uri}: {snap.stored_samples} samples, "
                           f"{len(snap.generation_bytes)} generations{note}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("not dropped")
                return 1
        store.drop_database()
        print(f"dropped database {config.dbname!r} at {store.redacted_uri}")
        _sweep_node_cache(config, store.uri)
        return 0
    finally:
        store.close()


def _sweep_node_cache(config: object, uri: str) -> None:
    """Remove this node's node cache segments of the cache that no live process uses."""
    from .. import nodecache

    key = nodecache.cache_key(uri, config.dbname, (config.write_collection, config.read_collection))  # type: ignore[attr-defined]
    removed = nodecache.sweep(key=key)
    if removed:
        print(f"removed {removed} unused node cache segment(s) of it from {nodecache.node_cache_dir()}")
