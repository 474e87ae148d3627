"""End to end (``end_to_end``): a loop with a fixed training step fed by the cache from generator processes, against
generating each sample inside the loop; the trainer's wait fraction and the reuse ratio."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench_common import Dbs, Profile, bench_config, child_generator, get_result, processes, spawn_context
from wirehead.dataset import MongoheadDataset
from wirehead.synth import synth_generator

def bench_end_to_end(uri: str, dbs: Dbs, p: Profile) -> dict[str, Any]:
    """A loop with a fixed training step, fed by the cache vs generating each sample inline."""
    db = dbs.new("e2e")
    edge = p.e2e_edge
    cfg = bench_config(uri, db, SWAP_CAP=p.e2e_cap, GRACE_SECONDS=5.0, LEASE_SECONDS=2.0)
    ctx = spawn_context()
    stop, out = ctx.Event(), ctx.Queue()
    ds = MongoheadDataset(config=cfg, uri=uri)
    ds.store.ensure_schema()
    rng = np.random.default_rng(11)
    reads_per_gen: dict[int, int] = {}
    size_of_gen: dict[int, int] = {}
    workers = [ctx.Process(target=child_generator, args=(uri, cfg.to_dict(), r, None, edge, p.e2e_delay, stop, out),
                           daemon=True) for r in range(p.e2e_procs)]
    try:
        with processes(workers, stop, timeout=30):
            t_start = time.perf_counter()
            ds[0]  # the first read generation: the cache's fill time, reported apart
            first = time.perf_counter() - t_start
            wait = 0.0
            steps = 0
            lat: list[float] = []
            t_loop = time.perf_counter()
            while time.perf_counter() - t_loop < p.e2e_seconds:
                t0 = time.perf_counter()
                ds[int(rng.integers(len(ds)))]
                lat.append(time.perf_counter() - t0)
                wait += lat[-1]
                gen = ds.reader.gen
                reads_per_gen[gen.gen] = reads_per_gen.get(gen.gen, 0) + 1
                size_of_gen[gen.gen] = gen.n
                time.sleep(p.e2e_step)  # the "training step"
                steps += 1
            wall = time.perf_counter() - t_loop
            produced = 0
            stop.set()
            for _ in workers:
                got = get_result(out, 30)
                if got:
                    produced += len(got["sids"])
    finally:
        ds.close()
        dbs.drop(db)
    # baseline: generate each sample inside the loop
    fly = synth_generator((edge, edge, edge), seed=5, delay=p.e2e_delay)
    fly_wait = 0.0
    t_fly = time.perf_counter()
    for _ in range(p.e2e_fly_steps):
        t0 = time.perf_counter()
        next(fly)
        fly_wait += time.perf_counter() - t0
        time.sleep(p.e2e_step)
    fly_wall = time.perf_counter() - t_fly
    reads = sum(reads_per_gen.values())
    return {
        "seconds": wall, "steps": steps, "step_seconds": p.e2e_step, "generator_delay": p.e2e_delay,
        "generator_procs": p.e2e_procs, "cap": p.e2e_cap, "edge": edge,
        "time_to_first_sample": first, "wait_seconds": wait,
        "trainer_wait_fraction": wait / wall if wall else None,
        "on_the_fly_wait_fraction": fly_wait / fly_wall if fly_wall else None,
        "reads": reads, "generations_used": len(reads_per_gen), "samples_committed": produced,
        "read_p50": float(np.percentile(lat, 50)) if lat else None,
        "read_p99": float(np.percentile(lat, 99)) if lat else None,
        "read_max": max(lat) if lat else None,
        "reads_over_5ms": sum(1 for x in lat if x > 0.005),
        "wait_in_reads_over_5ms": sum(x for x in lat if x > 0.005),
        "reuse_ratio": reads / sum(size_of_gen.values()) if size_of_gen else None,
        "steps_per_s": steps / wall if wall else None,
        "on_the_fly_steps_per_s": p.e2e_fly_steps / fly_wall if fly_wall else None,
    }
