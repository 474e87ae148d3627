"""One reading process and a generation: its peak memory reading a generation that fits (``rss``) and streaming
one larger than its caches (``stream``), and a worker-less trainer's wait with ``ReadAheadSampler`` (``ahead``)."""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from bench_common import (bench_config, cache_keys, get_result, maxrss, median, processes, ratio, rss_now,
                          sample_bytes, spawn_context)
from wirehead.config import WireheadConfig
from wirehead.dataset import MongoheadDataset
from wirehead.sampler import ReadAheadSampler

def _child_rss(uri: str, cfg: dict, epochs: int, out: Any) -> None:
    """Read every sample of the read generation ``epochs`` times, like a training loop; report RSS."""
    try:
        ds = MongoheadDataset(config=cfg, uri=uri)
        gen = ds.reader.current()
        manifests = ds.store.get_manifests(list(gen.members))
        gen_bytes = sum(int(m.get("raw_bytes", 0)) for m in manifests.values())
        gc.collect()
        base = rss_now()
        base_max = maxrss()
        peak = [base]
        done = threading.Event()

        def sample_rss() -> None:
            while not done.wait(0.002):
                peak[0] = max(peak[0], rss_now())

        t = threading.Thread(target=sample_rss, daemon=True)
        t.start()
        rng = np.random.default_rng(3)
        reads = 0
        t0 = time.perf_counter()
        for _ in range(epochs):
            for i in rng.permutation(gen.n):
                x = ds[int(i)]
                del x
                reads += 1
        took = time.perf_counter() - t0
        done.set()
        t.join()
        end_max = maxrss()
        top = max(peak[0], end_max if end_max > base_max else 0)
        out.put({"gen_raw_bytes": gen_bytes, "rss_base": base, "rss_peak": top, "growth": top - base,
                 "reads": reads, "seconds": took, "samples": gen.n})
        ds.close()
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put({"error": f"{type(e).__name__}: {e}"})


def _rss_probe(uri: str, cfg: WireheadConfig, epochs: int, wait: float, what: str) -> dict[str, Any]:
    """Run :func:`_child_rss` in a spawned process reading with ``cfg``; its result (``what`` names it in errors)."""
    ctx = spawn_context()
    out = ctx.Queue()
    proc = ctx.Process(target=_child_rss, args=(uri, cfg.to_dict(), epochs, out), daemon=True)
    with processes([proc], None, timeout=120):
        result = get_result(out, wait)
    if result is None or "error" in result:
        raise RuntimeError(f"{what} failed: {result}")
    return result


def bench_rss(uri: str, db: str, n: int, epochs: int) -> dict[str, Any]:
    """Peak RSS growth of a separate process reading a whole generation, over its raw bytes."""
    cfg = bench_config(uri, db, SWAP_CAP=n, GRACE_SECONDS=600.0)
    result = _rss_probe(uri, cfg, epochs, 300, "the RSS probe")
    result["dataset_peak_rss_vs_generation_bytes"] = ratio(result["growth"], result["gen_raw_bytes"])
    result["reader_cache_mb"] = cfg.reader_cache_mb
    return result


def bench_stream(uri: str, db: str, n: int, edge: int, cache_samples: int, epochs: int) -> dict[str, Any]:
    """Peak RSS growth of a process streaming a generation larger than its cache, over the cache's size."""
    cache_mib = max(1, -(-cache_samples * sample_bytes(edge) // 2 ** 20))
    keys = cache_keys(cache_mib)
    budget = cache_mib * len(keys) * 2 ** 20  # the process's whole cache: its own and its mapped share of the node's
    cfg = bench_config(uri, db, SWAP_CAP=n, GRACE_SECONDS=600.0, **keys)
    result = _rss_probe(uri, cfg, epochs, 600, "the streaming reader")
    result.update(edge=edge, cache_mib=cache_mib, cache_keys=sorted(keys), cache_budget_mib=budget // 2 ** 20,
                  sample_mib=sample_bytes(edge) / 2 ** 20,
                  generation_vs_cache=ratio(result["gen_raw_bytes"], cache_mib * 2 ** 20),
                  stream_peak_rss_vs_cache=ratio(result["growth"], budget),
                  stream_peak_rss_vs_generation=ratio(result["growth"], result["gen_raw_bytes"]))
    return result


def bench_read_ahead(uri: str, db: str, n: int, edge: int, cache_samples: int, rounds: int,
                     batch: int = 2) -> dict[str, Any]:
    """A trainer without DataLoader workers streaming a generation larger than its caches, each step a fixed
    compute time (a sleep, as a GPU step leaves the CPU free) as long as reading one batch takes: the time it
    waits for batches with :class:`~wirehead.sampler.ReadAheadSampler` against torch's own batching
    (``batch_size``/``shuffle``), same data, alternating, ``rounds`` epochs each."""
    cache_mib = max(1, -(-cache_samples * sample_bytes(edge) // 2 ** 20))
    cfg = bench_config(uri, db, SWAP_CAP=n, GRACE_SECONDS=600.0, **cache_keys(cache_mib))

    def epoch(ahead: bool, step: float) -> tuple[float, float, int]:
        """(seconds waiting for batches, seconds in all, samples read ahead) of one epoch."""
        with MongoheadDataset(config=cfg, uri=uri) as ds:
            ds.reader.current()
            loader = (DataLoader(ds, batch_sampler=ReadAheadSampler(ds, batch_size=batch, shuffle=True))
                      if ahead else DataLoader(ds, batch_size=batch, shuffle=True))
            waited = 0.0
            t0 = time.perf_counter()
            it = iter(loader)
            while True:
                t1 = time.perf_counter()
                try:
                    next(it)
                except StopIteration:
                    break
                waited += time.perf_counter() - t1
                time.sleep(step)  # the training step
            return waited, time.perf_counter() - t0, ds.reader.ahead_hits

    batches = -(-n // batch)
    step = epoch(False, 0.0)[1] / batches  # a step as long as reading a batch: where overlap matters most
    plain, ahead = [], []
    for _ in range(rounds):
        plain.append(epoch(False, step))
        ahead.append(epoch(True, step))

    def frac(runs: list) -> float:
        return median([w / t for w, t, _ in runs])

    return {"edge": edge, "n": n, "batch": batch, "cache_mib": cache_mib, "step_seconds": step,
            "plain_wait_fraction": frac(plain), "read_ahead_wait_fraction": frac(ahead),
            "read_ahead_hits_per_epoch": median([h for _, _, h in ahead]),
            "plain_seconds_per_epoch": median([t for _, t, _ in plain]),
            "read_ahead_seconds_per_epoch": median([t for _, t, _ in ahead]),
            "read_ahead_speedup": ratio(median([t for _, t, _ in plain]), median([t for _, t, _ in ahead]))}
