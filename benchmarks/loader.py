"""The DataLoader figure family: warm epochs of a loader with workers over wirehead vs over ``.npy`` files.

``python benchmarks/loader.py [--edge 256] [--n 12] [--workers 0,2,4] [--runs 3] [--uri URI] [--json out.json]``

The setting of issue 28, item 3: one generation of ``n`` samples (a float32 image of ``edge``^3 voxels and
its uint8 label; 12 of 256^3 fit the node cache), read through
``DataLoader(batch_size=2, shuffle=True, num_workers=W, persistent_workers=W > 0, multiprocessing_context=C)``
with the default collation, and through the same loader over a dataset that ``np.load``\\ s the same arrays
from ``.npy`` files on local disk (page cache warm).  Both give ``{image, label}`` batches (wirehead's
carries the seed's aliases as views, collated once).
For every W and start method C (``spawn``, persistent workers; ``fork``, workers made again each epoch), each
run makes a fresh loader per side, reads epochs to warm it (worker start-up, the page cache; wirehead's side
until its public stats say the node cache holds the whole generation, at most :data:`WARMUP_EPOCHS`) and times
``epochs`` more, alternating the two sides; the figure is samples/s of wirehead / of
``.npy`` per run, and the report gives every run's ratio, so the spread shows.  Only public torch API is used.

The report also gives ``free_page_reporting_order``: the order of the free blocks a virtual machine hands back
to its host (:func:`bench_common.free_page_reporting`), None elsewhere; where it is set, a spawned persistent
worker's collation stalls now and then on a host fault, and a run's ratio shows it.

A private :class:`~wirehead.server.LocalMongo` on 127.0.0.1 is started and stopped unless ``--uri`` names a
server; the benchmark's database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # wirehead from a checkout

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from bench_common import free_page_reporting  # noqa: E402
from wirehead import MongoheadDataset, WireheadConfig, WireheadGenerator, WireheadManager  # noqa: E402
from wirehead.server import LocalMongo  # noqa: E402
from wirehead.store import Store  # noqa: E402

#: (start method, persistent workers) measured for every worker count above 0.
CONTEXTS = (("spawn", True), ("fork", False))
#: The most warm-up epochs of a side whose node cache is still filling (each adds to it while it grows).
WARMUP_EPOCHS = 5


class NpyDataset(Dataset):
    """The baseline: one ``.npy`` file per kind and sample, read with ``np.load``, served as tensors."""

    def __init__(self, paths: Sequence[tuple[str, str]]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.paths[int(index)]
        return {"image": torch.from_numpy(np.load(image)), "label": torch.from_numpy(np.load(label))}


def save_npy(folder: Path, index: int, image: np.ndarray, label: np.ndarray) -> tuple[str, str]:
    """Write one sample's arrays as ``<index>_image.npy`` and ``<index>_label.npy`` in ``folder``; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    a, b = folder / f"{index}_image.npy", folder / f"{index}_label.npy"
    np.save(a, image)
    np.save(b, label)
    return str(a), str(b)


def _fill(cfg: WireheadConfig, edge: int, n: int, folder: Path) -> list[tuple[str, str]]:
    """One read generation of ``n`` samples, and the same arrays as ``.npy`` files."""
    rng = np.random.default_rng(0)
    gen = WireheadGenerator(config=cfg)
    paths = []
    for i in range(n):
        image = rng.random((edge,) * 3, dtype=np.float32)
        label = (image * 8).astype(np.uint8)
        gen.push((image, label))
        paths.append(save_npy(folder, i, image, label))
    gen.close()
    WireheadManager(config=cfg).step()
    return paths


def _epoch(loader: DataLoader, seen: dict[str, Any]) -> tuple[int, float]:
    """(samples, seconds) of one epoch of ``loader``; ``seen`` records what its first batch was."""
    count = 0
    t0 = time.perf_counter()
    for batch in loader:
        image = batch["image"]
        if not seen:
            seen.update(image_shape=list(image.shape), image_type=type(image).__name__,
                        image_ndim=int(image.ndim))
        count += int(image.shape[0])
    return count, time.perf_counter() - t0


def node_cache_ready(dataset: Any) -> Optional[int]:
    """Samples of a wirehead dataset's read generation the node cache holds now, by the dataset's public
    stats (every reader of the node fills it); None for another dataset, or with the node cache off."""
    reader = getattr(dataset, "reader", None)
    if reader is None:
        return None
    stats = reader.stats()
    return int(stats["node_ready"]) if stats["node"] else None


def time_loaders(datasets: dict[str, Any], workers: int, context: Optional[str], persistent: bool, epochs: int,
                 batch: int = 2) -> dict[str, dict[str, Any]]:
    """One run of one cell: per dataset, a fresh ``DataLoader(batch_size=batch, shuffle=True, ...)``, warm-up
    epochs (worker start-up, connections, the caches: one, and for a wirehead dataset more while the node cache
    grows and does not hold the whole generation yet, at most :data:`WARMUP_EPOCHS`), then ``epochs`` timed
    epochs, alternating the datasets.

    Returns, per dataset name: ``samples_per_s`` (timed samples / timed seconds), ``epoch_samples_per_s`` (each
    timed epoch), ``first_epoch_seconds``, ``warmup_epochs``, ``node_ready`` (samples in the node cache when
    timing began, wirehead only), ``batch`` (the first batch's image: shape, type, ndim) and ``config`` (the
    loader's arguments).  The workers end with their loaders (dropped here), as torch documents."""
    args = dict(batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=persistent and workers > 0,
                multiprocessing_context=context if workers else None)
    loaders = {name: DataLoader(ds, **args) for name, ds in datasets.items()}
    out: dict[str, dict[str, Any]] = {name: {"batch": {}, "epoch_samples_per_s": [], "config": dict(args)}
                                      for name in loaders}
    for name, loader in loaders.items():
        out[name]["first_epoch_seconds"] = _epoch(loader, out[name]["batch"])[1]
        warmups, ready = 1, node_cache_ready(loader.dataset)
        while ready is not None and ready < len(loader.dataset) and warmups < WARMUP_EPOCHS:
            _epoch(loader, out[name]["batch"])
            warmups, before, ready = warmups + 1, ready, node_cache_ready(loader.dataset)
            if ready is not None and ready <= before:
                break  # the node cache holds no more (full): more epochs would not warm it
        out[name].update(warmup_epochs=warmups, node_ready=ready)
    totals = {name: [0, 0.0] for name in loaders}
    for _ in range(epochs):
        for name, loader in loaders.items():
            count, seconds = _epoch(loader, out[name]["batch"])
            out[name]["epoch_samples_per_s"].append(count / seconds)
            totals[name][0] += count
            totals[name][1] += seconds
    del loaders, loader  # the workers stop with their loaders
    for name, (count, seconds) in totals.items():
        out[name]["samples_per_s"] = count / seconds
    return out


def measure_cell(datasets: dict[str, Any], workers: int, context: Optional[str], persistent: bool,
                 epochs: int) -> dict[str, Any]:
    """One run of one cell (:func:`time_loaders`): samples/s per side (and of each timed epoch: a stall shows),
    the wirehead side's warm-up epochs, and the ratio, wirehead / ``.npy``."""
    timed = time_loaders(datasets, workers, context, persistent, epochs)
    out: dict[str, Any] = {f"{name}_samples_per_s": t["samples_per_s"] for name, t in timed.items()}
    out.update({f"{name}_epoch_samples_per_s": t["epoch_samples_per_s"] for name, t in timed.items()})
    out["wirehead_warmup_epochs"] = timed["wirehead"]["warmup_epochs"]
    out["ratio"] = out["wirehead_samples_per_s"] / out["npy_samples_per_s"]
    return out


def run(uri: str, edge: int, n: int, workers: Sequence[int], runs: int, epochs: int) -> dict[str, Any]:
    cfg = WireheadConfig.load(dict(MONGO_URI=uri, DBNAME=f"bench_loader_{uuid.uuid4().hex[:6]}", SWAP_CAP=n,
                                   SAMPLE=["image", "label"]))
    report: dict[str, Any] = {"edge": edge, "n": n, "runs": runs, "epochs": epochs, "cells": {},
                              "free_page_reporting_order": free_page_reporting()}
    if report["free_page_reporting_order"] is not None:
        print(f"note: this machine hands free blocks of 2^{report['free_page_reporting_order']} pages back to its "
              "host (virtio-balloon free-page reporting); writing to one costs a host fault, which stalls a "
              "collation now and then (README, Benchmarks)", flush=True)
    with tempfile.TemporaryDirectory(prefix="wirehead-loader-") as tmp:
        try:
            paths = _fill(cfg, edge, n, Path(tmp))
            datasets = {"wirehead": MongoheadDataset(config=cfg), "npy": NpyDataset(paths)}
            cells = [(0, None, False)] + [(w, c, p) for w in workers if w > 0 for c, p in CONTEXTS]
            for w, context, persistent in cells:
                if w == 0 and 0 not in workers:
                    continue
                name = f"w{w}" + (f"_{context}{'_persistent' if persistent else ''}" if w else "")
                measured = [measure_cell(datasets, w, context, persistent, epochs) for _ in range(runs)]
                ratios = [m["ratio"] for m in measured]
                report["cells"][name] = {"ratios": ratios, "min": min(ratios), "max": max(ratios),
                                         "runs": measured}
                print(f"{name:22s} ratio {min(ratios):.2f}-{max(ratios):.2f}  "
                      + "  ".join(f"{m['wirehead_samples_per_s']:.1f}/{m['npy_samples_per_s']:.1f}"
                                  for m in measured), flush=True)
            datasets["wirehead"].close()
        finally:
            Store(cfg).drop_database()
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge", type=int, default=256)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--workers", default="0,2,4")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per run and side")
    parser.add_argument("--uri", help="benchmark this server (default: a private local server)")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    server = None
    try:
        if args.uri:
            uri = args.uri
        else:
            server = LocalMongo().start()
            uri = server.uri
        report = run(uri, args.edge, args.n, workers, args.runs, args.epochs)
    finally:
        if server is not None:
            server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
