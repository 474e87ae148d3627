"""Writes and reads against their raw baselines: ``WireheadGenerator.push`` vs raw ``insert_many`` of the same
bytes (``write_<edge>``), ``run()`` vs a make-then-push loop (``write_overlap_<edge>``), and cold, warm and
DataLoader reads vs raw ``find`` and ``np.load`` of the same arrays (``read_<edge>``; the loader cell is
:func:`loader.time_loaders`, the DataLoader family's own measurement)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import pymongo
from bson import Binary
from pymongo.write_concern import WriteConcern

from bench_common import KINDS, RECOMMENDED_COMPRESSION, Dbs, bench_config, median, ratio
from loader import NpyDataset, save_npy, time_loaders
from wirehead.dataset import MongoheadDataset
from wirehead.generator import WireheadGenerator

#: least seconds of repeated passes behind a warm read figure (and its np.load baseline)
WARM_PASS_SECONDS = 0.5


def _raw_docs(sample: tuple[np.ndarray, np.ndarray], chunk_bytes: int, sid: str) -> list[dict[str, Any]]:
    """The naive way: each array's bytes, split below the document limit, one document per piece."""
    docs = []
    i = 0
    for kind, arr in zip(KINDS, sample):
        data = memoryview(np.ascontiguousarray(arr)).cast("B")
        for pos in range(0, max(len(data), 1), chunk_bytes):
            docs.append({"_id": f"{sid}:{i}", "sid": sid, "i": i, "kind": kind,
                         "data": Binary(data[pos:pos + chunk_bytes].tobytes())})
            i += 1
    return docs


def bench_write(uri: str, dbs: Dbs, edge: int, n: int, samples: list) -> dict[str, Any]:
    """Push ``n`` samples through WireheadGenerator (raw and compressed) interleaved with raw insert_many, and with
    raw insert_many with ``j: true`` (``raw_insert_journaled_samples_per_s``): a push's commit is journaled, so it
    returns once the sample's bytes are in the server's on-disk journal, which a plain insert_many never waits for."""
    db_none, db_comp, db_raw = dbs.new(f"w{edge}n"), dbs.new(f"w{edge}c"), dbs.new(f"w{edge}r")
    cfg_none = bench_config(uri, db_none, SWAP_CAP=n, GRACE_SECONDS=600.0)
    cfg_comp = bench_config(uri, db_comp, SWAP_CAP=n, GRACE_SECONDS=600.0, COMPRESSION=RECOMMENDED_COMPRESSION)
    g_none = WireheadGenerator(None, config=cfg_none, uri=uri, name="bench-write")
    g_comp = WireheadGenerator(None, config=cfg_comp, uri=uri, name="bench-write-c")
    client = pymongo.MongoClient(uri)
    raw = client[db_raw]["chunks"]
    raw_journaled = raw.with_options(write_concern=WriteConcern(j=True))
    raw.create_index([("sid", 1), ("i", 1)])
    chunk_bytes = cfg_none.chunk_bytes
    try:
        # warm both paths (connections, indexes, schema) with one sample each, not timed
        g_none.store.ensure_schema()
        g_comp.store.ensure_schema()
        raw.insert_many(_raw_docs(samples[0], chunk_bytes, "warm"))
        raw.delete_many({"sid": "warm"})
        # Interleaved in blocks, not sample by sample: the server may finish a large write after
        # acknowledging it, and the next command pays for that; blocks keep that cost with its writer.
        t_raw = t_none = t_comp = t_journaled = 0.0
        block = max(1, min(8, n // 2))
        for start in range(0, n, block):
            part = range(start, min(n, start + block))
            t0 = time.perf_counter()
            for i in part:
                raw.insert_many(_raw_docs(samples[i], chunk_bytes, f"r{i}"), ordered=False)
            t1 = time.perf_counter()
            for i in part:
                g_none.push(samples[i])
            t2 = time.perf_counter()
            for i in part:
                g_comp.push(samples[i])
            t3 = time.perf_counter()
            for i in part:  # last: after a journaled commit, and a journaled write leaves nothing to flush
                raw_journaled.insert_many(_raw_docs(samples[i], chunk_bytes, f"j{i}"), ordered=False)
            t4 = time.perf_counter()
            t_journaled += t4 - t3
            t_raw += t1 - t0
            t_none += t2 - t1
            t_comp += t3 - t2
        raw_bytes = int(samples[0][0].nbytes + samples[0][1].nbytes)
        stored = {}
        for tag, g in (("none", g_none), ("compressed", g_comp)):
            docs = list(g.store.chunks.find({"i": 0}, {"stored_bytes": 1}))
            stored[tag] = statistics.mean(int(d["stored_bytes"]) for d in docs) if docs else None
        r_raw, r_none, r_comp, r_journaled = n / t_raw, n / t_none, n / t_comp, n / t_journaled
        return {
            "edge": edge, "n": n, "raw_bytes_per_sample": raw_bytes,
            "raw_insert_samples_per_s": r_raw, "push_samples_per_s": r_none,
            "push_compressed_samples_per_s": r_comp, "raw_insert_journaled_samples_per_s": r_journaled,
            "write_vs_raw_journaled": r_none / r_journaled,
            "write_vs_raw": r_none / r_raw, "write_compressed_vs_raw": r_comp / r_raw,
            "stored_bytes_per_sample": stored["none"], "stored_bytes_per_sample_compressed": stored["compressed"],
            "compression_ratio": raw_bytes / stored["compressed"] if stored["compressed"] else None,
            "raw_insert_MBps": raw_bytes * r_raw / 1e6, "push_MBps": raw_bytes * r_none / 1e6,
            "db": db_none, "db_compressed": db_comp, "compression": RECOMMENDED_COMPRESSION,
        }
    finally:
        g_none.close()
        g_comp.close()
        g_none.store.close()
        g_comp.store.close()
        client.close()
        dbs.drop(db_raw)


def bench_write_overlap(uri: str, dbs: Dbs, edge: int, samples: list, make_seconds: float,
                        k: int) -> dict[str, Any]:
    """A generator that takes ``make_seconds`` to make each sample (about one compressed push): samples/s of
    ``WireheadGenerator.run()`` (it writes one sample while it makes and encodes the next) / a serial loop that
    makes a sample, then pushes it.  Both compress (RECOMMENDED_COMPRESSION)."""
    db = dbs.new(f"wo{edge}")
    cfg = bench_config(uri, db, SWAP_CAP=4 * k, GRACE_SECONDS=600.0, COMPRESSION=RECOMMENDED_COMPRESSION)

    def make(count: int) -> Iterator[Any]:
        for i in range(count):
            time.sleep(make_seconds)  # the generator's own work (a GPU, another process: not this CPU)
            yield samples[i % len(samples)]

    try:
        serial = WireheadGenerator(None, config=cfg, uri=uri, name="bench-serial")
        serial.push(samples[0])  # warm: connection, schema
        t0 = time.perf_counter()
        for sample in make(k):
            serial.push(sample)
        t_serial = time.perf_counter() - t0
        serial.close()
        serial.store.close()
        overlapped = WireheadGenerator(make(k), config=cfg, uri=uri, name="bench-run", n_samples=k)
        t0 = time.perf_counter()
        done = overlapped.run()
        t_run = time.perf_counter() - t0
        overlapped.store.close()
    finally:
        dbs.drop(db)
    if done != k:
        raise RuntimeError(f"run() committed {done} of {k} samples")
    return {"edge": edge, "k": k, "make_seconds": make_seconds, "serial_samples_per_s": k / t_serial,
            "run_samples_per_s": k / t_run, "run_vs_serial": t_serial / t_run}


def bench_read(uri: str, edge: int, write: dict[str, Any], samples: list, tmp: Path, rounds: int,
               loader_epochs: int, loader_workers: Sequence[int] = (2,), loader_batch: int = 2,
               loader_cache_mb: Optional[int] = None) -> dict[str, Any]:
    """Cold, warm and DataLoader reads of the generation ``bench_write`` left, against raw find and np.load.

    ``loader_cache_mb``: the loader's datasets read with this per-process cache (READER_CACHE_MB) instead of the
    default, so the generation is larger than each process's cache; the node cache (NODE_CACHE_MB, default)
    holds it once for every worker.  The cold and warm reads keep the default (warm: the generation fits)."""
    n = write["n"]
    cfg = bench_config(uri, write["db"], SWAP_CAP=n, GRACE_SECONDS=600.0)
    cfg_c = bench_config(uri, write["db_compressed"], SWAP_CAP=n, GRACE_SECONDS=600.0,
                    COMPRESSION=RECOMMENDED_COMPRESSION)
    paths = [save_npy(tmp / f"npy{edge}", i, image, label)  # removed by run() when the size is done
             for i, (image, label) in enumerate(samples[:n])]
    disk = NpyDataset(paths)
    client = pymongo.MongoClient(uri)
    chunks = client[cfg.dbname][cfg.write_collection]
    rng = np.random.default_rng(edge)
    probe = MongoheadDataset(config=cfg, uri=uri)
    members = list(probe.reader.current().members)
    probe.close()
    if len(members) != n:
        raise RuntimeError(f"expected a read generation of {n} samples, found {len(members)}")

    def raw_pass(order: np.ndarray) -> float:
        t0 = time.perf_counter()
        for i in order:
            docs = list(chunks.find({"sid": members[i]}, {"data": 1, "i": 1}))
            assert docs
        return len(order) / (time.perf_counter() - t0)

    def ds_pass(ds: Any, order: np.ndarray) -> float:
        t0 = time.perf_counter()
        for i in order:
            ds[int(i)]
        return len(order) / (time.perf_counter() - t0)

    def disk_pass(order: np.ndarray) -> float:
        t0 = time.perf_counter()
        for i in order:
            disk[int(i)]
        return len(order) / (time.perf_counter() - t0)

    def repeated(one_pass: Callable[[np.ndarray], float]) -> float:
        """Samples/s of passes in fresh random orders, for at least WARM_PASS_SECONDS and 3 passes: a warm
        pass over a small generation lasts milliseconds, where one preemption would halve the figure."""
        done, t0 = 0, time.perf_counter()
        while done < 3 * n or time.perf_counter() - t0 < WARM_PASS_SECONDS:
            one_pass(rng.permutation(n))
            done += n
        return done / (time.perf_counter() - t0)

    cold, cold_c, rawr, warm, diskr = [], [], [], [], []
    try:
        raw_pass(rng.permutation(n)[:2])  # warm the connection
        disk_pass(rng.permutation(n))  # page cache: the disk baseline is a warm-cache baseline
        for _ in range(rounds):
            rawr.append(raw_pass(rng.permutation(n)))
            ds = MongoheadDataset(config=cfg, uri=uri)
            ds.reader.current()  # find the generation first: cold = the samples, not the connection
            cold.append(ds_pass(ds, rng.permutation(n)))
            dsc = MongoheadDataset(config=cfg_c, uri=uri)
            dsc.reader.current()
            cold_c.append(ds_pass(dsc, rng.permutation(n)))
            dsc.close()
            warm.append(repeated(lambda order: ds_pass(ds, order)))
            diskr.append(repeated(disk_pass))
            ds.close()
        loader: dict[str, Any] = {}
        cfg_loader = cfg.replace(READER_CACHE_MB=loader_cache_mb) if loader_cache_mb else cfg
        for w in loader_workers:
            with MongoheadDataset(config=cfg_loader, uri=uri) as loader_ds:
                loader.update(_loader_rates(loader_ds, disk, loader_epochs, w, loader_batch, samples[0][0].ndim))
    finally:
        client.close()
    out = {
        "edge": edge, "n": n,
        "raw_find_samples_per_s": median(rawr), "cold_samples_per_s": median(cold),
        "cold_compressed_samples_per_s": median(cold_c), "warm_samples_per_s": median(warm),
        "disk_samples_per_s": median(diskr), **loader,
    }
    out["read_cold_vs_raw"] = ratio(out["cold_samples_per_s"], out["raw_find_samples_per_s"])
    out["read_cold_compressed_vs_raw"] = ratio(out["cold_compressed_samples_per_s"], out["raw_find_samples_per_s"])
    out["read_warm_vs_disk"] = ratio(out["warm_samples_per_s"], out["disk_samples_per_s"])
    out["read_cold_vs_disk"] = ratio(out["cold_samples_per_s"], out["disk_samples_per_s"])
    for w in loader_workers:
        out[f"read_loader_w{w}_vs_disk"] = ratio(out[f"loader_w{w}_samples_per_s"],
                                                 out[f"disk_loader_w{w}_samples_per_s"])
    # the headline: the worst of the multi-worker loaders (2 and 4 workers; 1 is shown beside it)
    head = [w for w in loader_workers if w >= 2] or list(loader_workers)
    worst = min(head, key=lambda w: out[f"read_loader_w{w}_vs_disk"] or 0.0)
    out["loader_samples_per_s"] = out[f"loader_w{worst}_samples_per_s"]
    out["disk_loader_samples_per_s"] = out[f"disk_loader_w{worst}_samples_per_s"]
    out["read_loader_vs_disk"] = out[f"read_loader_w{worst}_vs_disk"]
    out["read_loader_vs_plain_disk"] = ratio(out["loader_samples_per_s"], out["disk_samples_per_s"])
    return out


def _loader_rates(ds: MongoheadDataset, disk: NpyDataset, epochs: int, workers: int, batch: int,
                  sample_ndim: int) -> dict[str, Any]:
    """Samples/s of a ``workers``-worker DataLoader (``batch_size=batch``, shuffle, default collation, ``spawn``
    and persistent workers) over ``ds`` and over ``disk``, after one warm-up epoch each (:func:`loader.time_loaders`,
    epochs alternating); keys carry ``_w{workers}``, among them the loader's arguments (``config``) and what its
    batches were (``batch``: the collated image's shape and type, and whether it is a stacked tensor)."""
    timed = time_loaders({"loader": ds, "disk_loader": disk}, workers, "spawn", True, max(1, epochs - 1), batch)
    w = f"_w{workers}"
    out: dict[str, Any] = {}
    for side, t in timed.items():
        seen = t["batch"]
        collated = seen.get("image_type") == "Tensor" and seen.get("image_ndim") == sample_ndim + 1
        out.update({f"{side}{w}_samples_per_s": t["samples_per_s"],
                    f"{side}{w}_first_epoch_seconds": t["first_epoch_seconds"],
                    f"{side}{w}_epoch_samples_per_s": t["epoch_samples_per_s"],
                    f"{side}{w}_batch": {"image_shape": seen.get("image_shape"),
                                         "image_type": seen.get("image_type"), "collated": collated}})
    out[f"loader{w}_config"] = {**timed["loader"]["config"], "collate_fn": "default_collate",
                                "reader_cache_mb": ds.config.reader_cache_mb}
    return out
