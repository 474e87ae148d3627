"""``wirehead generate``: feed a cache from a user's sample factory, in one or more processes."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..connect import open_store
from ..generator import WireheadGenerator
from ._common import (UsageError, add_config_arg, call_factory, formatter, generator_child, load_config,
                      exit_code, resolve_factory, run_generator, spawn, stop_on_signals, stop_processes)

#: Seconds the children get to stop after the first Ctrl-C before they are killed.
STOP_SECONDS = 60.0

HELP = "run generators that push samples from module:function into a cache"
DESCRIPTION = """\
Run generators for the cache CONFIG describes.  --factory module:function names a callable
that returns an iterable (typically a Python generator) of samples: tuples in SAMPLE order or
dicts by SAMPLE name, of numpy arrays or torch tensors.  When it accepts a `rank` argument it
gets the process index (0..N-1), e.g. to seed each process differently.  The current directory
is importable.  With --processes N > 1 each generator is a spawned process.  Ctrl-C (or
SIGTERM) stops every generator after its sample in hand, or at once while the factory computes
one; exit code 130 after Ctrl-C, 0 after SIGTERM (a supervisor's clean stop).  A second Ctrl-C
ends at once.  A missing module or function
exits with code 2.

examples:
  wirehead generate cache.yaml --factory wirehead.synth:synth_generator --processes 2
  wirehead generate cache.yaml --factory my_synthseg:samples --n-samples 1000"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help=HELP, description=DESCRIPTION, formatter_class=formatter)
    add_config_arg(p)
    p.add_argument("--factory", required=True, metavar="MODULE:FUNCTION",
                   help="callable returning an iterable of samples")
    p.add_argument("--processes", type=int, default=1, metavar="N", help="generator processes (default 1)")
    p.add_argument("--n-samples", type=int, metavar="K", help="stop each process after K committed samples")
    p.set_defaults(run=run, log_level=logging.INFO)


def run(args: argparse.Namespace) -> int:
    if args.processes < 1:
        raise UsageError(f"--processes should be a positive integer, but got {args.processes}")
    if args.n_samples is not None and args.n_samples < 0:
        raise UsageError(f"--n-samples should be >= 0, but got {args.n_samples}")
    config = load_config(args.config)
    factory = resolve_factory(args.factory)
    store = open_store(config)  # a host-less config starts (or finds) the shared local server once, here
    store.ping()
    store.close()
    # every worker resolves the server itself (uri=None): on the shared local server it then follows a
    # restart of that server on another port, as any script does
    uri = None

    if args.processes == 1:
        gen = WireheadGenerator(None, config=config, n_samples=args.n_samples, uri=uri)
        count, signum = run_generator(gen, call_factory(factory, 0))
        print(f"generator {gen.name} committed {count} samples")
        return exit_code(signum)

    procs = []
    with stop_on_signals(lambda: None) as stopped:
        try:
            for rank in range(args.processes):
                procs.append(spawn(generator_child, (config.to_dict(), uri, args.factory, rank, args.n_samples,
                                                     None, os.getpid(), args.log_level), f"generator-{rank}"))
            print(f"started {len(procs)} generator processes: pids {[p.pid for p in procs]}", file=sys.stderr,
                  flush=True)
            while not stopped.is_set() and any(p.is_alive() for p in procs):
                for p in procs:
                    p.join(0.2)
            if stopped.is_set():
                print(f"wirehead generate: stopping {len(procs)} generator processes (Ctrl-C again to kill them)",
                      file=sys.stderr, flush=True)
            # Ctrl-C reached only us (the children run in their own sessions): pass it on as SIGTERM; each
            # child stops after its sample in hand, or at once inside its factory.  A second Ctrl-C kills them.
            stop_processes(procs, timeout=STOP_SECONDS)
        finally:
            stop_processes(procs, timeout=0, signal_first=False)  # a second Ctrl-C (Interrupted): kill the rest
    if stopped.is_set():
        return exit_code(stopped.signum)
    failed = [(p.name, p.exitcode) for p in procs if p.exitcode not in (0, None)]
    if failed:
        print("wirehead generate: " + ", ".join(f"{n} exited with code {c}" for n, c in failed), file=sys.stderr)
        return 1
    return 0
