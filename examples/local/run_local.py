"""wirehead on one machine: a manager, N generator processes and a training loop.

    python run_local.py                     # 2 generators, 40 training steps, then stop
    python run_local.py --generators 4 --steps 100 --shape 48

Every process reads the same ``config.yaml``.  It names no server, so wirehead uses its
embedded default: the first process that needs a server starts one on 127.0.0.1 and the
others meet on it (set ``WIREHEAD_MONGO_URI`` to use a server of your own instead).  A server
this script started is stopped at the end; one that was already running is left alone.

The manager and the generators are spawned processes (``wirehead.supervise``, as the command
line and the notebook controller use) that stop when asked (SIGTERM) or when this script dies.  The training loop runs here, reading the read generation through a
``MongoheadDataset`` and a ``DataLoader``.  Everything is stopped and reaped at the end, also
on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "config.yaml"

log = logging.getLogger("run_local")


def manager_main(config: dict, log_level: int) -> None:
    """Body of the manager process: swap when a generation is full, delete what expired."""
    from wirehead import WireheadManager
    from wirehead.supervise import stop_on_signals, watch_parent

    logging.basicConfig(level=log_level, format="%(asctime)s manager %(levelname)s: %(message)s")
    manager = WireheadManager(config=config, name="local-manager")
    watch_parent()                         # stop when this script dies, even by SIGKILL
    with stop_on_signals(manager.stop):    # SIGTERM from stop_processes(): stop cleanly
        manager.run_manager()


def generator_main(config: dict, rank: int, shape: int, delay: float, log_level: int) -> None:
    """Body of one generator process: push SynthSeg-like volumes until told to stop."""
    from wirehead import WireheadGenerator
    from wirehead.supervise import run_generator, watch_parent
    from wirehead.synth import synth_generator

    logging.basicConfig(level=log_level, format=f"%(asctime)s generator-{rank} %(levelname)s: %(message)s")
    # a different seed per process; `delay` imitates a slow (GPU) generator
    samples = synth_generator((shape, shape, shape), seed=1000 + rank, delay=delay)
    generator = WireheadGenerator(None, config=config, name=f"local-generator-{rank}")
    watch_parent()
    run_generator(generator, samples)      # until SIGTERM (after the sample in hand) or SIGINT


def train(config: dict, steps: int, batch_size: int, workers: int) -> dict[str, Any]:
    """A small segmentation training loop on the cache; returns what it saw."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from wirehead import MongoheadDataset

    dataset = MongoheadDataset(config=config)
    n_labels = 8  # wirehead.synth labels are 0..7
    model = torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv3d(8, n_labels, 1),
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = torch.nn.CrossEntropyLoss()
    generations: set[int] = set()
    # indices are drawn from the current read generation (len(dataset) samples); the dataset
    # follows each swap by itself, so one DataLoader serves the whole run
    sampler = RandomSampler(dataset, replacement=True, num_samples=steps * batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    step, t0, loss = 0, time.monotonic(), float("nan")
    try:
        for batch in loader:
            image = batch["image"].float().unsqueeze(1)      # (B, 1, D, H, W)
            label = batch["label"].long()                    # (B, D, H, W)
            optimiser.zero_grad()
            loss_t = loss_fn(model(image), label)
            loss_t.backward()
            optimiser.step()
            loss = loss_t.detach().item()
            step += 1
            generations.add(dataset.generation)
            if step % 10 == 0 or step == steps:
                log.info("step %d loss %.3f read generation %d", step, loss, dataset.generation)
    finally:
        dataset.close()
    return {"steps": step, "loss": loss, "generations": sorted(generations),
            "seconds": round(time.monotonic() - t0, 1)}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: config.yaml here)")
    p.add_argument("--generators", type=int, default=2, help="generator processes (default 2)")
    p.add_argument("--steps", type=int, default=40, help="training steps (default 40)")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (default 1)")
    p.add_argument("--shape", type=int, default=32, help="edge of the cubic volumes (default 32)")
    p.add_argument("--delay", type=float, default=0.1, help="seconds of sleep per generated sample (default 0.1)")
    p.add_argument("--dbname", help="override DBNAME of the config")
    p.add_argument("-v", "--verbose", action="store_true", help="log every swap of the manager and generators")
    args = p.parse_args(argv)
    for name in ("generators", "steps", "batch_size", "shape"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} should be a positive integer, got {getattr(args, name)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    child_level = logging.INFO if args.verbose else logging.WARNING
    from wirehead import WireheadConfig
    from wirehead.server import shared_record, stop_shared
    from wirehead.store import Store
    from wirehead.supervise import spawn, stop_processes

    cfg = WireheadConfig.load(args.config, **({"DBNAME": args.dbname} if args.dbname else {}))
    embedded = cfg.uri is None
    server_was_running = shared_record() is not None
    store = Store(cfg)
    log.info("server: %s", store.uri if embedded else cfg.redacted_uri)  # starts the embedded one if needed
    store.drop_database()                      # start from an empty cache
    config = cfg.to_dict()                     # plain data: travels to spawned processes

    procs: list[Any] = []
    try:
        # spawned processes (no fork: safe with threads and pymongo clients) in their own sessions, so a
        # Ctrl-C here stops them through stop_processes() below, after the sample in hand
        procs.append(spawn(manager_main, (config, child_level), name="manager"))
        for rank in range(args.generators):
            procs.append(spawn(generator_main, (config, rank, args.shape, args.delay, child_level),
                               name=f"generator-{rank}"))
        print("PIDS " + " ".join(str(p.pid) for p in procs), flush=True)
        result = train(config, args.steps, args.batch_size, args.workers)
        print(f"trained {result['steps']} steps in {result['seconds']} s, last loss {result['loss']:.3f}, "
              f"read generations {result['generations']}", flush=True)
    finally:
        stop_processes(procs, timeout=20)      # SIGTERM, wait, kill only what still runs
        codes = {p.name: p.exitcode for p in procs}
        try:
            store.drop_database()
        finally:
            store.close()
            if embedded and not server_was_running:
                stop_shared()                  # the server this script started
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        print(f"processes exited badly: {bad}", file=sys.stderr)
        return 1
    print("all processes stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
