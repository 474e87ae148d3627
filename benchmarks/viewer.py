"""The viewer and QC in a kernel: memory while viewing and following, and QC time with the kernel answering.

    python benchmarks/viewer.py [--shape 256] [--samples 16] [--qc-shape 128] [--qc-samples 64]

On a private local server:

1. **Viewing memory.** A generation of ``--samples`` samples of ``--shape``³ (float32 image, uint8 label,
   affine) is written.  Each measurement runs in a fresh process (a kernel): its peak RSS (the kernel's
   high-water mark, and a 5 ms sampler) above its RSS once imports are done and the server is connected, in
   samples' worth (one sample = its decoded bytes).  Side by side in the same run:

   * **one sample read** (three samples, one after the other): the streamed read
     (:func:`wirehead.qc.read_sample`: chunk by chunk into the arrays) against the joined read it replaced
     (``Store.get_samples`` + ``join_chunks`` + ``decode``: the reply, its chunks and the joined stream);
   * **the viewer** (follow on) stepping through every sample, then back again with thumbnails on (made
     meanwhile), reading the streamed way and, as its baseline, the same viewer with the joined read
     swapped in; with the time per sample change (``viewer.sample = i`` until the sample is sent: the
     kernel's part of a new sample shown), without and with thumbnails being made;
   * the training reader (``MongoheadDataset``, which prefetches the generation) reading every sample once.
2. **QC time.** A generation of ``--qc-samples`` samples of ``--qc-shape``³; ``SampleGrid.run_qc`` runs in the
   refresher thread while this thread (the kernel's message thread) does a 1 ms task every 10 ms; reported:
   the QC's time and the longest delay of those tasks.  Its baseline: the same QC run directly.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

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
    """The process's peak RSS while the block runs: its high-water mark (``ru_maxrss``) when the block set a new
    one, else the highest of an RSS sample every 5 ms."""

    def __init__(self) -> None:
        self.proc = psutil.Process(os.getpid())
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _high_water() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        self._hw0 = self._high_water()
        self.base = self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        hw = self._high_water()
        if hw > self._hw0:
            self.peak = max(self.peak, hw)

    @property
    def above(self) -> int:
        """Peak bytes above the RSS the block started at."""
        return self.peak - self.base


def joined_read(store: Any, sid: str) -> dict[str, Any]:
    """The read the viewer made before streaming (and the training reader's): the server's reply with every chunk,
    the chunks joined into one buffer, decoded."""
    from wirehead.chunks import decode, join_chunks
    from wirehead.qc import SampleGone

    found = store.get_samples([sid]).get(sid)
    if found is None:
        raise SampleGone(sid)
    manifest, chunks = found
    buffer = join_chunks(chunks, sum(len(c) for c in chunks))
    del found, chunks
    return decode(manifest["meta"], buffer)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this fresh process (see the module docstring); returns its figures."""
    import wirehead.qc

    cfg = WireheadConfig.load(spec["keys"])
    if spec["read"] == "joined":
        wirehead.qc.read_sample = joined_read  # what GenerationSamples.fetch calls
    out: dict[str, Any] = {}
    if spec["what"] == "read":
        store = open_store(cfg)
        sids = list(store.gen_doc(store.state().read_gen).members)[:3]
        with PeakRSS() as peak:
            for sid in sids:
                arrays = wirehead.qc.read_sample(store, sid)
                del arrays
        store.close()
    elif spec["what"] == "view":
        from wirehead.notebook import SliceViewer

        store = open_store(cfg)
        store.ping()
        store.close()
        with PeakRSS() as peak:
            v = SliceViewer(config=cfg)
            v.follow = True
            for phase in ("change_s", "change_thumbs_s"):  # then again while the thumbnails are made
                if phase == "change_thumbs_s":
                    v.thumbnails = True
                order = range(1, v.n_samples) if phase == "change_s" else range(v.n_samples - 2, -1, -1)
                out[phase] = []
                for i in order:
                    t0 = time.monotonic()
                    v.sample = i
                    out[phase].append(time.monotonic() - t0)
            v.make_thumbnails(wait=True)
            v.close()
    else:  # the training reader
        from wirehead.dataset import MongoheadDataset

        store = open_store(cfg)
        store.ping()
        store.close()
        with PeakRSS() as peak:
            ds = MongoheadDataset(config=cfg)
            for i in range(len(ds)):
                ds[i]
            time.sleep(1.0)  # the prefetcher fills its cache meanwhile
    out["peak_above"] = peak.above
    return out


def measure(what: str, read: str, keys: dict[str, Any]) -> dict[str, Any]:
    """:func:`child` in a fresh process."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps({"what": what, "read": read, "keys": keys})],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}/{read} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def viewing_memory(cfg: WireheadConfig, keys: dict[str, Any], n: int, shape: tuple[int, int, int]) -> None:
    one = _fill(cfg, n, shape)
    f = {(what, read): measure(what, read, keys)
         for what, read in (("read", "streamed"), ("read", "joined"), ("view", "streamed"), ("view", "joined"),
                            ("reader", "-"))}
    w = {k: v["peak_above"] / one for k, v in f.items()}
    print(f"one sample of {shape[0]}^3 ({one / 2**20:.0f} MiB decoded) read three times: peak "
          f"{w['read', 'streamed']:.2f} samples' worth above the baseline streamed; joined (before): {w['read', 'joined']:.2f} "
          f"(ratio {w['read', 'streamed'] / max(w['read', 'joined'], 1e-9):.2f})")
    for read in ("streamed", "joined"):
        ch, th = f["view", read]["change_s"], f["view", read]["change_thumbs_s"]
        print(f"viewing {n} samples of {shape[0]}^3, reads {read}: viewer peak {w['view', read]:.2f} samples' worth "
              f"above the baseline; a sample change takes {statistics.median(ch) * 1000:.0f} ms median, "
              f"{max(ch) * 1000:.0f} ms max ({len(ch)} changes); while thumbnails are made "
              f"{statistics.median(th) * 1000:.0f} ms median, {max(th) * 1000:.0f} ms max")
    print(f"viewer streamed / joined (before): {w['view', 'streamed'] / max(w['view', 'joined'], 1e-9):.2f}; "
          f"baseline, the training reader reading each sample once: {w['reader', '-']:.1f} samples' worth "
          f"(viewer streamed / reader: {w['view', 'streamed'] / max(w['reader', '-'], 1e-9):.2f})")


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
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, default=256)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--qc-shape", type=int, default=128)
    ap.add_argument("--qc-samples", type=int, default=64)
    args = ap.parse_args()
    with LocalMongo() as server:
        keys = dict(MONGO_URI=server.uri, SAMPLE=["image", "label", "affine"], GRACE_SECONDS=600.0)
        view_keys = {**keys, "DBNAME": "bench_view", "SWAP_CAP": args.samples}
        viewing_memory(WireheadConfig.load(view_keys), view_keys, args.samples, (args.shape,) * 3)
        qc_time(WireheadConfig.load({**keys, "DBNAME": "bench_qc", "SWAP_CAP": args.qc_samples}),
                args.qc_samples, (args.qc_shape,) * 3)


if __name__ == "__main__":
    main()
