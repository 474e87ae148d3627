"""Swaps: their latency at a small and a large SWAP_CAP (``swap_latency``), reads while generations swap under a
reader process (``swaps_under_read``), and the yield of generator processes that swap by themselves (``yield``)."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import numpy as np

from bench_common import (Dbs, bench_config, child_generator, get_result, median, processes, ratio,
                          spawn_context, synth_samples)
from wirehead.dataset import MongoheadDataset
from wirehead.generator import WireheadGenerator
from wirehead.reader import Reader
from wirehead.store import Store
from wirehead.swapper import Swapper

BLOCKED_SECONDS = 0.1


def _child_reader(uri: str, cfg: dict, ready: Any, stop: Any, out: Any) -> None:
    """Read random samples continuously; report latencies and failures."""
    logging.basicConfig(level=logging.ERROR)
    ds = MongoheadDataset(config=cfg, uri=uri, output="numpy")
    rng = np.random.default_rng(7)
    lat: list[float] = []
    failures: list[str] = []
    gens: set[int] = set()
    try:
        len(ds)
        ready.set()
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                ds[int(rng.integers(len(ds)))]
                gens.add(ds.reader.gen.gen if ds.reader.gen else -1)
            except Exception as e:  # noqa: BLE001 - this is what we count
                failures.append(f"{type(e).__name__}: {e}"[:300])
            lat.append(time.perf_counter() - t0)
    finally:
        ready.set()
        ds.close()
        out.put({"latencies": lat, "failures": failures, "generations": len(gens)})


def bench_swap_latency(uri: str, dbs: Dbs, caps: tuple[int, int], repeats: tuple[int, int],
                       edge: int) -> dict[str, Any]:
    """Time the swapper step that swaps a full generation, at a small and a large SWAP_CAP."""
    sample = synth_samples(edge, 1)[0]
    out: dict[str, Any] = {}
    for cap, reps in zip(caps, repeats):
        db = dbs.new(f"s{cap}")
        cfg = bench_config(uri, db, SWAP_CAP=cap, LEASE_SECONDS=3600.0, GRACE_SECONDS=0.5)
        gen = WireheadGenerator(None, config=cfg, uri=uri, name="bench-swap")
        store = Store(cfg, uri=uri)
        swapper = Swapper(store, role="manager")
        reader = Reader(Store(cfg, uri=uri), timeout=60)
        lat, step_t, switch, push_t = [], [], [], []
        swapped_at: list[float] = []
        real_swap = store.swap

        def timed_swap(write_gen: int) -> bool:  # instruments this instance only: when did the state change?
            done = real_swap(write_gen)
            swapped_at.append(time.perf_counter())
            return done

        store.swap = timed_swap  # type: ignore[method-assign]
        try:
            store.ensure_schema()
            reader.store.ensure_schema()  # a running reader's connection: its first one is not a swap's cost
            reader.store.state()
            if not swapper.try_lease():  # holding the lease keeps the generator from swapping itself
                raise RuntimeError("bench swapper could not take the swap lease")
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(cap):
                    gen.push(sample)
                push_t.append((time.perf_counter() - t0) / cap)
                time.sleep(0.6)  # let the previous read generation's grace period end: GC is in the step
                swapped_at.clear()
                t0 = time.perf_counter()
                result = swapper.step()
                step_t.append(time.perf_counter() - t0)
                if not result.swapped or not swapped_at:
                    raise RuntimeError(f"the swapper did not swap a full generation of {cap}")
                t1 = time.perf_counter()
                reader.current(force=True)
                switch.append(time.perf_counter() - t1)
                lat.append(swapped_at[0] - t0 + switch[-1])
        finally:
            with contextlib.suppress(Exception):
                swapper.release()
            gen.close()
            gen.store.close()
            store.close()
            reader.store.close()
            dbs.drop(db)
        out[f"cap_{cap}"] = {"swap_seconds": lat, "step_seconds": step_t, "reader_switch_seconds": switch,
                             "push_seconds": push_t}
    small, large = (out[f"cap_{c}"] for c in caps)
    out["caps"] = list(caps)
    out["swap_seconds_small"] = median(small["swap_seconds"])
    out["swap_seconds_large"] = median(large["swap_seconds"])
    out["swap_latency_ratio"] = ratio(out["swap_seconds_large"], out["swap_seconds_small"])
    out["step_seconds_small"] = median(small["step_seconds"])
    out["step_seconds_large"] = median(large["step_seconds"])
    out["step_ratio"] = ratio(out["step_seconds_large"], out["step_seconds_small"])
    out["reader_switch_ratio"] = ratio(median(large["reader_switch_seconds"]),
                                        median(small["reader_switch_seconds"]))
    out["push_seconds_ratio"] = ratio(median(large["push_seconds"]), median(small["push_seconds"]))
    return out


def bench_swaps_under_read(uri: str, dbs: Dbs, swaps: int, edge: int, cap: int = 10) -> dict[str, Any]:
    """A reader process reads continuously while a generator fills and swaps ``swaps`` generations."""
    db = dbs.new("swapread")
    cfg = bench_config(uri, db, SWAP_CAP=cap, GRACE_SECONDS=1.0, LEASE_SECONDS=5.0)
    samples = synth_samples(edge, cap)
    gen = WireheadGenerator(None, config=cfg, uri=uri, name="bench-swapread")
    store = Store(cfg, uri=uri)
    ctx = spawn_context()
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    result = None
    try:
        for s in samples:  # the first read generation
            gen.push(s)
        start_swaps = store.state().swaps
        reader = ctx.Process(target=_child_reader, args=(uri, cfg.to_dict(), ready, stop, out), daemon=True)
        with processes([reader], stop):
            if not ready.wait(120):
                raise RuntimeError("the reader process did not start within 120 s")
            time.sleep(0.5)
            t0 = time.perf_counter()
            i = 0
            while store.state().swaps - start_swaps < swaps:
                gen.push(samples[i % len(samples)])
                i += 1
            took = time.perf_counter() - t0
            time.sleep(1.5)  # past the grace period of the last replaced generation
            stop.set()
            result = get_result(out, 60)
        if result is None:
            raise RuntimeError("the reader process sent no result")
    finally:
        gen.close()
        gen.store.close()
        store.close()
        dbs.drop(db)
    lat = np.array(result["latencies"] or [0.0])
    blocked = int((lat > BLOCKED_SECONDS).sum())
    return {
        "swaps": swaps, "cap": cap, "edge": edge, "seconds": took, "reads": len(result["latencies"]),
        "failed": len(result["failures"]), "blocked_over_100ms": blocked,
        "failed_reads_during_swaps": len(result["failures"]) + blocked,
        "failures": result["failures"][:5], "latency_p50": float(np.percentile(lat, 50)),
        "latency_p99": float(np.percentile(lat, 99)), "latency_max": float(lat.max()),
        "generations_seen": result["generations"],
    }


def bench_yield(uri: str, dbs: Dbs, procs: int, per_proc: int, cap: int, edge: int) -> dict[str, Any]:
    """``procs`` generator processes (swapping by themselves) commit samples; which ones reach a read generation?"""
    db = dbs.new("yield")
    # every generation is kept (grace and RETIRED_GENERATIONS): "served" is read from the generations left at the end
    cfg = bench_config(uri, db, SWAP_CAP=cap, GRACE_SECONDS=3600.0, RETIRED_GENERATIONS=1_000_000, LEASE_SECONDS=1.0,
                  POLL_SECONDS=0.05)
    store = Store(cfg, uri=uri)
    ctx = spawn_context()
    stop, out = ctx.Event(), ctx.Queue()
    results: list[dict] = []
    try:
        store.ensure_schema()  # create the state before writers start (SecantusDB upsert quirk)
        workers = [ctx.Process(target=child_generator, args=(uri, cfg.to_dict(), r, per_proc, edge, 0.0, stop, out),
                               daemon=True) for r in range(procs)]
        t0 = time.perf_counter()
        with processes(workers, None, timeout=300):
            deadline = time.monotonic() + 300
            while len(results) < procs and time.monotonic() < deadline:
                got = get_result(out, 1.0)
                if got is not None:
                    results.append(got)
        took = time.perf_counter() - t0
        # serve what is left in the write generation: seal it and swap it (what the next fill would do)
        swapper = Swapper(store, role="manager")
        deadline = time.monotonic() + 30
        while not swapper.try_lease():
            if time.monotonic() > deadline:
                raise RuntimeError("could not take the swap lease after the generators stopped")
            time.sleep(0.2)
        state = store.state()
        counts = store.gen_counts()
        if counts.get(state.write_gen, (0, False))[0] > 0:
            store.seal(state.write_gen)
            swapper.step()
        swapper.release()
        state = store.state()
        served: list[str] = []
        for g in store.gen_docs():
            if state.read_gen is not None and g.gen <= state.read_gen:
                served.extend(g.members)
    finally:
        store.close()
        dbs.drop(db)
    produced = [sid for r in results for sid in r["sids"]]
    errors = [r["error"] for r in results if r.get("error")]
    served_set = set(served)
    return {
        "procs": procs, "per_proc": per_proc, "cap": cap, "edge": edge, "seconds": took,
        "produced": len(produced), "served": len(served_set & set(produced)),
        "served_twice": len(served) - len(served_set), "served_unknown": len(served_set - set(produced)),
        "yield": len(served_set & set(produced)) / len(produced) if produced else None,
        "errors": errors, "swaps": state.swaps,
    }
