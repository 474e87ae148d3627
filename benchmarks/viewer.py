"""The viewer and QC in a kernel: memory while viewing and following, and QC time with the kernel answering.

    python benchmarks/viewer.py [--shape 256] [--samples 16] [--qc-shape 128] [--qc-samples 64]

On a private local server:

1. **Viewing memory.** A generation of ``--samples`` samples of ``--shape``³ (float32 image, uint8 label,
   affine) is written; a SliceViewer (follow on, thumbnails on) steps through every sample.  The process's
   peak RSS above its baseline (imports done, server connected, before the viewer) is reported in samples'
   worth (one sample = its decoded bytes).  Its baseline in the same run: a ``MongoheadDataset`` (the
   training reader, which prefetches the generation into its cache) reading every sample once.
2. **QC time.** A generation of ``--qc-samples`` samples of ``--qc-shape``³; ``SampleGrid.run_qc`` runs in the
   refresher thread while this thread (the kernel's message thread) does a 1 ms task every 10 ms; reported:
   the QC's time and the longest delay of those tasks.  Its baseline: the same QC run directly.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wirehead import LocalMongo, WireheadConfig, WireheadGenerator, WireheadManager  # noqa: E402
from wirehead.connect import open_store  # noqa: E402
from wirehead.qc import GenerationSamples, generation_qc  # noqa: E402


def _fill(cfg: WireheadConfig, n: int, shape: tuple[int, int, int]) -> int:
    rng = np.random.default_rng(0)
    label = np.zeros(shape, np.uint8)
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
    r = np.sqrt(sum(g * g for g in grids))
    for value, radius in ((1, 0.9), (2, 0.65), (3, 0.35)):
        label[r < radius] = value
    affine = np.diag([256.0 / shape[0]] * 3 + [1.0])
    gen = WireheadGenerator(config=cfg, name="bench")
    mgr = WireheadManager(config=cfg)
    try:
        mgr.step()
        for _ in range(n):
            image = (label * 0.3 + rng.normal(0, 0.05, shape)).astype(np.float32)
            gen.push((image, label, affine))
        store = open_store(cfg)
        deadline = time.monotonic() + 120  # the manager, or the pusher when the manager's lease lapsed, swaps
        while store.state().read_gen is None and time.monotonic() < deadline:
            mgr.step()
            time.sleep(0.1)
        assert store.state().read_gen is not None, "no swap within 120 s"
        store.close()
    finally:
        gen.close()
    return int(np.prod(shape)) * 5  # bytes of one decoded sample (float32 image + uint8 label)


class PeakRSS:
    """The process's peak RSS, sampled every 20 ms in a thread."""

    def __init__(self) -> None:
        self.proc = psutil.Process(os.getpid())
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> "PeakRSS":
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def viewing_memory(cfg: WireheadConfig, n: int, shape: tuple[int, int, int]) -> None:
    from wirehead.dataset import MongoheadDataset
    from wirehead.notebook import SliceViewer

    one = _fill(cfg, n, shape)
    proc = psutil.Process(os.getpid())
    gc.collect()
    base = proc.memory_info().rss
    with PeakRSS() as peak:
        v = SliceViewer(config=cfg)
        v.follow = True
        v.thumbnails = True
        t0 = time.monotonic()
        for i in range(n):
            v.sample = i
        took = time.monotonic() - t0
        v.make_thumbnails(wait=True)
        v.close()
    viewer_peak = (peak.peak - base) / one
    del v
    gc.collect()
    base2 = proc.memory_info().rss
    with PeakRSS() as peak:
        ds = MongoheadDataset(config=cfg)
        for i in range(len(ds)):
            ds[i]
        time.sleep(1.0)  # the prefetcher fills its cache meanwhile
    reader_peak = (peak.peak - base2) / one
    print(f"viewing {n} samples of {shape[0]}^3 ({one / 2**20:.0f} MiB decoded each): viewer peak "
          f"{viewer_peak:.1f} samples' worth above the baseline ({took / n * 1000:.0f} ms per sample change); "
          f"baseline, the training reader reading each once: {reader_peak:.1f} samples' worth "
          f"(ratio {viewer_peak / max(reader_peak, 1e-9):.2f})")


def qc_time(cfg: WireheadConfig, n: int, shape: tuple[int, int, int]) -> None:
    from wirehead.notebook import SampleGrid

    _fill(cfg, n, shape)
    store = open_store(cfg)
    t0 = time.monotonic()
    generation_qc(GenerationSamples(store, keep=1))
    direct = time.monotonic() - t0
    store.close()
    grid = SampleGrid(config=cfg, samples=4)
    grid.run_qc(wait=False)
    t0 = time.monotonic()
    worst = 0.0
    while grid.report is None and time.monotonic() - t0 < 600:
        tick = time.monotonic()
        time.sleep(0.001)  # the kernel answering a message meanwhile
        worst = max(worst, time.monotonic() - tick)
        time.sleep(0.01)
    took = time.monotonic() - t0
    grid.close()
    print(f"QC of {n} samples of {shape[0]}^3 in the refresher thread: {took:.1f} s, the message thread's "
          f"longest 1 ms task took {worst * 1000:.0f} ms; baseline, the same QC run directly: {direct:.1f} s "
          f"(ratio {took / direct:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, default=256)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--qc-shape", type=int, default=128)
    ap.add_argument("--qc-samples", type=int, default=64)
    args = ap.parse_args()
    with LocalMongo() as server:
        keys = dict(MONGO_URI=server.uri, SAMPLE=["image", "label", "affine"], GRACE_SECONDS=600.0)
        viewing_memory(WireheadConfig.load({**keys, "DBNAME": "bench_view", "SWAP_CAP": args.samples}),
                       args.samples, (args.shape,) * 3)
        qc_time(WireheadConfig.load({**keys, "DBNAME": "bench_qc", "SWAP_CAP": args.qc_samples}),
                args.qc_samples, (args.qc_shape,) * 3)


if __name__ == "__main__":
    main()
