"""The wirehead benchmark (``python benchmarks/run.py`` or ``wirehead bench``): how fast is the cache, measured against plain baselines in one run.

Every figure is measured side by side with its baseline in the same run, on the same server
and the same bytes, and reported as a ratio (see ``benchmarks/README.md`` for what each one
means and how it is made):

* **write**: committed samples/s through :meth:`WireheadGenerator.push` vs raw pymongo
  ``insert_many`` of the same bytes; with and without compression; bytes stored per sample.
* **read**: samples/s through :class:`MongoheadDataset` (cold: first read of a generation by a
  fresh dataset; warm: repeated reads; in a DataLoader with 2 workers) vs raw pymongo ``find`` of
  the same chunk documents and vs ``np.load`` of the same arrays from ``.npy`` files.
* **swap**: swap latency at a small and a large SWAP_CAP; reads that failed or blocked for more
  than 100 ms while a reader process reads continuously through 20 swaps.
* **yield**: samples served in some read generation / samples committed, with 4 generator
  processes that swap by themselves.
* **end to end**: the fraction of wall time a loop with a fixed "training step" waits for data,
  fed by slow generator processes, against generating on the fly inside the loop; reuse ratio.
* **memory**: peak RSS growth of a process reading a whole generation / the generation's raw bytes; of a
  process streaming a generation larger than its cache / the cache's size.
* **node**: two trainer processes, each a DataLoader with workers, read one generation: bytes the server
  sent them (counted by a TCP relay) and memory they gained / the generation's bytes.

Profiles: ``--quick``/normal (64^3, 128^3), ``--profile 256`` (the real workload: 256^3, generations larger
than the readers' cache, 1/2/4-worker loaders, a node of two trainers), ``--full`` (both), ``--smoke`` (CI).

Pymongo is used directly here only for the raw baselines: it is a measuring tool, not the
library's path.  A private :class:`~wirehead.server.LocalMongo` on 127.0.0.1 is started and
stopped unless ``--uri`` names a server (then every database made here is dropped at the end).

Usage::

    python benchmarks/run.py --quick --json out.json      # or: wirehead bench --quick
    python benchmarks/run.py --profile 256 --json b256.json
    python benchmarks/table.py out.json b256.json         # the README's table
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import multiprocessing as mp
import os
import platform
import queue
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from wirehead.supervise import stop_processes

__all__ = ["main", "parse_args", "run", "TARGETS", "HEADLINE_KEYS", "Profile", "PROFILES"]

log = logging.getLogger(__name__)

#: The codec engineer's recommendation (benchmarks/codec_compare.py).
RECOMMENDED_COMPRESSION = {"image": "blosc2", "label": "zstd"}

#: key -> (comparison, target value, one-line meaning)
TARGETS: dict[str, tuple[str, float, str]] = {
    "write_vs_raw": (">=", 0.9, "push samples/s / raw insert_many samples/s (uncompressed, worst size)"),
    "read_cold_vs_raw": (">=", 0.9, "first read of a generation samples/s / raw find samples/s (worst size)"),
    "read_warm_vs_disk": (">=", 1.0, "repeated reads samples/s / np.load samples/s (worst size)"),
    "read_loader_vs_disk": (">=", 1.0, "DataLoader(batch_size=2, 2 and 4 workers) samples/s / same loader over .npy "
                                       "(worst size and worker count)"),
    "swap_latency_ratio": ("<=", 1.5, "swap latency (full generation -> a reader serves the next one), large cap / small cap"),
    "failed_reads_during_swaps": ("==", 0, "reads that raised or took > 100 ms during 20 swaps"),
    "yield": ("==", 1.0, "samples in some read generation / samples committed (4 generator processes)"),
    "trainer_wait_fraction": ("<", 0.05, "share of the loop's wall time spent waiting for data (cache)"),
    "dataset_peak_rss_vs_generation_bytes": ("<=", 1.5, "peak RSS growth of a reader / raw bytes of a generation"),
    "stream_peak_rss_vs_cache": ("<=", 1.5, "peak RSS growth of a reader streaming a generation larger than its "
                                            "caches / the caches' size (READER_CACHE_MB + NODE_CACHE_MB)"),
    "node_bytes_sent_vs_generation": ("<=", 1.1, "bytes the server sent to a node's trainers and DataLoader "
                                                 "workers / one generation's stored bytes"),
    "node_memory_vs_generation": ("<=", 1.3, "memory a node's trainers and workers spent reading a generation "
                                             "(it fits) / its raw bytes"),
    "reuse_ratio": ("info", 0.0, "reads per sample of the read generations the loop used"),
    "read_ahead_wait_fraction": ("info", 0.0, "share of a worker-less trainer's time spent waiting for batches "
                                              "while streaming a generation larger than its caches, with "
                                              "ReadAheadSampler (steps as long as a batch's read)"),
}
HEADLINE_KEYS = tuple(TARGETS)
#: figures of the size-independent sections (not run by the 256 profile)
PROTOCOL_KEYS = ("swap_latency_ratio", "failed_reads_during_swaps", "yield", "trainer_wait_fraction", "reuse_ratio")

KINDS = ["image", "label"]
BLOCKED_SECONDS = 0.1
#: least seconds of repeated passes behind a warm read figure (and its np.load baseline)
WARM_PASS_SECONDS = 0.5


@dataclass(frozen=True)
class Profile:
    """How much work each section does."""

    name: str
    sizes: tuple[int, ...]
    write_n: dict[int, int]
    read_rounds: int = 3
    loader_epochs: int = 3
    loader_workers: tuple[int, ...] = (1, 2, 4)
    loader_batch: int = 2
    #: edge -> READER_CACHE_MB of that size's loader datasets in samples' worth (absent: the default, 1024 MiB)
    loader_cache_samples: dict[int, int] = field(default_factory=dict)
    swap_caps: tuple[int, int] = (10, 1000)
    swap_repeats: tuple[int, int] = (5, 2)
    swap_edge: int = 8
    swaps_under_read: int = 20
    swap_read_edge: int = 64
    yield_procs: int = 4
    yield_per_proc: int = 40
    yield_cap: int = 8
    yield_edge: int = 16
    e2e_seconds: float = 30.0
    e2e_delay: float = 0.5
    e2e_step: float = 0.05
    e2e_procs: int = 4
    e2e_cap: int = 8
    e2e_edge: int = 64
    e2e_fly_steps: int = 10
    rss_epochs: int = 2
    #: the streaming reader's cache (READER_CACHE_MB, and NODE_CACHE_MB where it exists) in samples' worth; it
    #: reads the largest size's generation (write_n samples), so write_n / stream_cache_samples is the excess
    stream_cache_samples: int = 2
    #: one node: trainer processes, DataLoader workers per trainer, epochs each, samples in the generation
    node_trainers: int = 2
    node_workers: int = 2
    node_epochs: int = 2
    node_n: int = 8
    #: samples made and written by the write-overlap figure (run() vs a serial loop), at the largest size
    overlap_k: int = 4
    #: the size-independent sections (swap latency, swaps under read, yield, end to end) run
    protocol_sections: bool = True


PROFILES: dict[str, Profile] = {
    "normal": Profile("normal", sizes=(64, 128), write_n={64: 64, 128: 24}, read_rounds=5, loader_epochs=4),
    "quick": Profile("quick", sizes=(64, 128), write_n={64: 32, 128: 12}, read_rounds=3, loader_epochs=3,
                     loader_workers=(2, 4),
                     swap_repeats=(3, 1), swap_read_edge=32, yield_per_proc=20, e2e_seconds=15.0,
                     e2e_fly_steps=6, rss_epochs=2, node_epochs=2, node_n=8),
    # the real workload: 256^3 float32 image + uint8 labels (80 MiB a sample), generations larger than the
    # reader's cache (8 samples, a cache of 2), DataLoaders of 1, 2 and 4 workers, two trainers on a node
    "256": Profile("256", sizes=(256,), write_n={256: 8}, read_rounds=2, loader_epochs=4,
                   loader_cache_samples={256: 2}, rss_epochs=1, node_epochs=2, node_n=4, protocol_sections=False),
    "full": Profile("full", sizes=(64, 128, 256), write_n={64: 64, 128: 24, 256: 8}, read_rounds=5,
                    loader_epochs=4, loader_cache_samples={256: 2}, node_n=4),
    # CI smoke run: every code path, tiny sizes; the figures mean nothing.
    "smoke": Profile("smoke", sizes=(16,), write_n={16: 6}, read_rounds=1, loader_epochs=2, loader_workers=(2,),
                     swap_caps=(5, 20),
                     swap_repeats=(2, 1), swap_edge=8, swaps_under_read=3, swap_read_edge=16, yield_procs=4,
                     yield_per_proc=3, yield_cap=4, yield_edge=8, e2e_seconds=2.0, e2e_delay=0.05,
                     e2e_step=0.01, e2e_procs=2, e2e_cap=4, e2e_edge=16, e2e_fly_steps=3, rss_epochs=1,
                     node_workers=1, node_epochs=2, node_n=4),
}


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def _say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


def _median(xs: Sequence[float]) -> Optional[float]:
    return float(statistics.median(xs)) if xs else None


def _rss_now() -> int:
    """Resident set size of this process in bytes (Linux /proc, psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process().memory_info().rss)


def _maxrss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _config(uri: str, dbname: str, **keys: Any) -> Any:
    from wirehead.config import WireheadConfig

    # a busy server (a loaded machine, a large drop just before) may take a while to answer: wait, do not fail
    base = dict(MONGO_URI=uri, DBNAME=dbname, SAMPLE=KINDS, SWAP_CAP=10, CONNECT_TIMEOUT=60.0,
                RETRY_DEADLINE=60.0, READ_TIMEOUT=120.0)
    base.update(keys)
    return WireheadConfig.load(base)


class _Dbs:
    """Names databases for one run and drops them all at the end."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.run = uuid.uuid4().hex[:6]
        self.names: list[str] = []

    def new(self, what: str) -> str:
        name = f"bench_{self.run}_{what}"[:60]
        self.names.append(name)
        return name

    def drop(self, name: str) -> None:
        import pymongo

        client = pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=5000)
        try:
            client.drop_database(name)
        except Exception as e:  # noqa: BLE001 - cleanup is best effort
            log.debug("could not drop %s: %s", name, e)
        finally:
            client.close()

    def drop_all(self) -> None:
        for name in self.names:
            self.drop(name)
        self.names.clear()


def _samples(edge: int, n: int, seed: int = 0, unique: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image float32, label uint8) pairs of ``edge``^3 from the built-in synth (``unique`` distinct ones)."""
    from wirehead.synth import synth_sample

    base = [synth_sample((edge, edge, edge), seed + k) for k in range(min(n, unique))]
    return [base[i % len(base)] for i in range(n)]


def _raw_docs(sample: tuple[np.ndarray, np.ndarray], chunk_bytes: int, sid: str) -> list[dict[str, Any]]:
    """The naive way: each array's bytes, split below the document limit, one document per piece."""
    from bson import Binary

    docs = []
    i = 0
    for kind, arr in zip(KINDS, sample):
        data = memoryview(np.ascontiguousarray(arr)).cast("B")
        for pos in range(0, max(len(data), 1), chunk_bytes):
            docs.append({"_id": f"{sid}:{i}", "sid": sid, "i": i, "kind": kind,
                         "data": Binary(data[pos:pos + chunk_bytes].tobytes())})
            i += 1
    return docs


def _sample_bytes(edge: int) -> int:
    """Raw bytes of one (float32 image, uint8 label) sample of ``edge``^3."""
    return edge ** 3 * 5


def _cache_keys(mib: int) -> dict[str, int]:
    """Config keys that bound a reading process's cache to ``mib`` MiB: READER_CACHE_MB, and NODE_CACHE_MB (the
    node-local shared cache) where this wirehead has that key."""
    probe = _config("mongodb://127.0.0.1:1/", "probe")
    keys = {"READER_CACHE_MB": mib}
    config_log = logging.getLogger("wirehead.config")
    level = config_log.level
    config_log.setLevel(logging.ERROR)  # an unknown key is only warned about: ask the config whether it took it
    try:
        if getattr(probe.replace(NODE_CACHE_MB=mib), "node_cache_mb", None) == mib:
            keys["NODE_CACHE_MB"] = mib
    finally:
        config_log.setLevel(level)
    return keys


def _smaps_rollup(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` in bytes (Rss, Pss, Anonymous, ...); empty where it cannot be read."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[-1] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except OSError:
        pass
    return out


def _shm_used() -> int:
    """Bytes in use on /dev/shm (node-local shared memory), 0 where there is none."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class _ByteCounter:
    """A TCP relay on 127.0.0.1 in front of a MongoDB server that counts the bytes the server sends.

    Point the readers of a figure at :attr:`uri` and :attr:`server_bytes` is what the server sent them,
    whatever process (trainer, DataLoader worker, a cache filler) received it.
    """

    def __init__(self, uri: str) -> None:
        import re
        import socket

        m = re.match(r"^mongodb://(?P<auth>[^@/]*@)?(?P<hosts>[^/?]+)(?P<rest>/[^?]*)?(?:\?(?P<opts>.*))?$", uri)
        if m is None:
            raise ValueError(f"cannot relay {uri!r}: only mongodb://host:port URIs are supported here")
        host, _, port = m.group("hosts").split(",")[0].rpartition(":")
        self.target = (host.strip("[]") or "127.0.0.1", int(port or 27017))
        self.server_bytes = 0
        self.client_bytes = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._socks: list[Any] = []
        self._stop = threading.Event()
        self._listen = socket.create_server(("127.0.0.1", 0))
        self._listen.settimeout(0.2)
        port_here = self._listen.getsockname()[1]
        opts = [o for o in (m.group("opts") or "").split("&") if o and not o.lower().startswith(
            ("replicaset=", "directconnection="))]
        self.uri = (f"mongodb://{m.group('auth') or ''}127.0.0.1:{port_here}{m.group('rest') or '/'}?"
                    + "&".join(opts + ["directConnection=true"]))
        self._thread = threading.Thread(target=self._accept, name="bench-byte-counter", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                client, _ = self._listen.accept()
            except (socket.timeout, OSError):
                continue
            try:
                server = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for sk in (client, server):
                sk.settimeout(None)
            with self._lock:
                self.connections += 1
                self._socks += [client, server]
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()

    def _pump(self, src: Any, dst: Any, from_server: bool) -> None:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        try:
            while True:
                k = src.recv_into(buf)
                if not k:
                    break
                dst.sendall(view[:k])
                with self._lock:
                    if from_server:
                        self.server_bytes += k
                    else:
                        self.client_bytes += k
        except OSError:
            pass
        finally:
            for sk in (src, dst):
                with contextlib.suppress(OSError):
                    sk.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listen.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for sk in socks:
            with contextlib.suppress(OSError):
                sk.close()


class NpyDataset:
    """The disk baseline: one ``.npy`` file per kind and sample, read with ``np.load``, served as tensors."""

    def __init__(self, paths: list[tuple[str, str]]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        img, lab = self.paths[int(index)]
        image = torch.from_numpy(np.load(img))
        label = torch.from_numpy(np.load(lab))
        return {"image": image, "label": label}  # no alias key: the loader collates each kind once


def _write_npy(samples: list[tuple[np.ndarray, np.ndarray]], folder: Path) -> list[tuple[str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, label) in enumerate(samples):
        a, b = folder / f"{i:05d}_image.npy", folder / f"{i:05d}_label.npy"
        np.save(a, image)
        np.save(b, label)
        paths.append((str(a), str(b)))
    return paths


def _spawn() -> Any:
    return mp.get_context("spawn")


@contextlib.contextmanager
def _processes(procs: list[Any], stop: Any = None, timeout: float = 30.0) -> Iterator[list[Any]]:
    """Start ``procs``; on exit set ``stop``, wait for them, and kill the ones still alive (wirehead.supervise)."""
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        if stop is not None:
            stop.set()
        # they end by themselves once ``stop`` is set; what is still running after ``timeout`` is killed
        stop_processes([p for p in procs if p.pid is not None], timeout, signal_first=False)


# ----------------------------------------------------------------------------------------------
# child processes (spawned: module-level functions)
# ----------------------------------------------------------------------------------------------
def _child_generator(uri: str, cfg: dict, rank: int, n: Optional[int], edge: int, delay: float,
                     stop: Any, out: Any) -> None:
    """Push synth samples until ``n`` are committed or ``stop`` is set; send back the committed ids."""
    from wirehead.errors import WaitTimeout
    from wirehead.generator import WireheadGenerator
    from wirehead.synth import synth_generator

    logging.basicConfig(level=logging.WARNING)
    gen = WireheadGenerator(None, config=cfg, uri=uri, name=f"bench-gen-{rank}")
    threading.Thread(target=lambda: (stop.wait(), gen.stop()), daemon=True).start()
    sids: list[str] = []
    error = None
    try:
        for sample in synth_generator((edge, edge, edge), seed=1000 + rank, n=n, delay=delay):
            if stop.is_set():
                break
            sids.append(gen.push(sample))
    except WaitTimeout:
        pass
    except Exception as e:  # noqa: BLE001 - reported to the parent
        error = f"generator {rank}: {type(e).__name__}: {e}"
    finally:
        gen.close()
        out.put({"rank": rank, "sids": sids, "error": error})


def _child_reader(uri: str, cfg: dict, ready: Any, stop: Any, out: Any) -> None:
    """Read random samples continuously; report latencies and failures."""
    from wirehead.dataset import MongoheadDataset

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


def _child_rss(uri: str, cfg: dict, epochs: int, out: Any) -> None:
    """Read every sample of the read generation ``epochs`` times, like a training loop; report RSS."""
    try:
        from wirehead.dataset import MongoheadDataset

        ds = MongoheadDataset(config=cfg, uri=uri)
        gen = ds.reader.current()
        manifests = ds.store.get_manifests(list(gen.members))
        gen_bytes = sum(int(m.get("raw_bytes", 0)) for m in manifests.values())
        gc.collect()
        base = _rss_now()
        base_max = _maxrss()
        peak = [base]
        done = threading.Event()

        def sample_rss() -> None:
            while not done.wait(0.002):
                peak[0] = max(peak[0], _rss_now())

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
        end_max = _maxrss()
        top = max(peak[0], end_max if end_max > base_max else 0)
        out.put({"gen_raw_bytes": gen_bytes, "rss_base": base, "rss_peak": top, "growth": top - base,
                 "reads": reads, "seconds": took, "samples": gen.n})
        ds.close()
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put({"error": f"{type(e).__name__}: {e}"})


def _worker_baseline(folder: str, rank: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: record this worker's pid and memory before it reads anything (the
    public way to know a loader's workers), in ``worker-<trainer rank>-<pid>.json``."""
    roll = _smaps_rollup(os.getpid())
    Path(folder, f"worker-{rank}-{os.getpid()}.json").write_text(
        json.dumps({"pid": os.getpid(), "id": worker_id, **roll}))


def _child_trainer(uri: str, cfg: dict, rank: int, workers: int, batch: int, epochs: int, folder: str,
                   barrier: Any, out: Any) -> None:
    """One trainer process of a node: a DataLoader(batch, shuffle, ``workers`` workers) over MongoheadDataset,
    ``epochs`` epochs; then, while every trainer of the node still holds its loader, the memory its workers
    gained since they started (anonymous memory: shared memory is counted once, apart, by the parent)."""
    import functools

    import torch
    from torch.utils.data import DataLoader

    from wirehead.dataset import MongoheadDataset

    logging.basicConfig(level=logging.WARNING)
    result: dict[str, Any] = {"rank": rank}
    try:
        ds = MongoheadDataset(config=cfg, uri=uri)
        gen_n = len(ds)
        base_self = _smaps_rollup(os.getpid())
        loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                            multiprocessing_context="spawn" if workers else None,
                            worker_init_fn=functools.partial(_worker_baseline, folder, rank))
        seen = 0
        shapes = set()
        t0 = time.perf_counter()
        for _ in range(epochs):
            for b in loader:
                if not isinstance(b["image"], torch.Tensor):
                    raise TypeError(f"the loader gave {type(b['image']).__name__}, not a collated tensor")
                shapes.add(tuple(b["image"].shape))
                seen += int(b["image"].shape[0])
                del b
        took = time.perf_counter() - t0
        gc.collect()
        barrier.wait(timeout=600)  # every trainer has read: measure while all of them hold their workers
        started = [json.loads(f.read_text()) for f in sorted(Path(folder).glob(f"worker-{rank}-*.json"))]
        pids = [int(w["pid"]) for w in started]
        grown = sum(_smaps_rollup(w["pid"]).get("Anonymous", 0) - w.get("Anonymous", 0) for w in started)
        result.update(samples=seen, seconds=took, generation_n=gen_n, batch_shapes=sorted(shapes),
                      workers_anon_growth=grown, worker_pids=pids, shm_used=_shm_used(),
                      trainer_anon_growth=_smaps_rollup(os.getpid()).get("Anonymous", 0)
                      - base_self.get("Anonymous", 0))
        out.put(result)
        barrier.wait(timeout=600)  # keep the loader until every trainer has measured
        del loader
        ds.close()
    except Exception as e:  # noqa: BLE001 - reported to the parent
        out.put({"rank": rank, "error": f"{type(e).__name__}: {e}"})
        with contextlib.suppress(Exception):
            barrier.abort()


def _get(q: Any, timeout: float) -> Any:
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        return None


# ----------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------
def bench_write(uri: str, dbs: _Dbs, edge: int, n: int, samples: list) -> dict[str, Any]:
    """Push ``n`` samples through WireheadGenerator (raw and compressed) interleaved with raw insert_many."""
    import pymongo

    from wirehead.generator import WireheadGenerator

    db_none, db_comp, db_raw = dbs.new(f"w{edge}n"), dbs.new(f"w{edge}c"), dbs.new(f"w{edge}r")
    cfg_none = _config(uri, db_none, SWAP_CAP=n, GRACE_SECONDS=600.0)
    cfg_comp = _config(uri, db_comp, SWAP_CAP=n, GRACE_SECONDS=600.0, COMPRESSION=RECOMMENDED_COMPRESSION)
    g_none = WireheadGenerator(None, config=cfg_none, uri=uri, name="bench-write")
    g_comp = WireheadGenerator(None, config=cfg_comp, uri=uri, name="bench-write-c")
    client = pymongo.MongoClient(uri)
    raw = client[db_raw]["chunks"]
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
        t_raw = t_none = t_comp = 0.0
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
            t_raw += t1 - t0
            t_none += t2 - t1
            t_comp += t3 - t2
        raw_bytes = int(samples[0][0].nbytes + samples[0][1].nbytes)
        stored = {}
        for tag, g in (("none", g_none), ("compressed", g_comp)):
            docs = list(g.store.chunks.find({"i": 0}, {"stored_bytes": 1}))
            stored[tag] = statistics.mean(int(d["stored_bytes"]) for d in docs) if docs else None
        r_raw, r_none, r_comp = n / t_raw, n / t_none, n / t_comp
        return {
            "edge": edge, "n": n, "raw_bytes_per_sample": raw_bytes,
            "raw_insert_samples_per_s": r_raw, "push_samples_per_s": r_none,
            "push_compressed_samples_per_s": r_comp,
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


def bench_write_overlap(uri: str, dbs: _Dbs, edge: int, samples: list, make_seconds: float,
                        k: int) -> dict[str, Any]:
    """A generator that takes ``make_seconds`` to make each sample (about one compressed push): samples/s of
    ``WireheadGenerator.run()`` (it writes one sample while it makes and encodes the next) / a serial loop that
    makes a sample, then pushes it.  Both compress (RECOMMENDED_COMPRESSION)."""
    from wirehead.generator import WireheadGenerator

    db = dbs.new(f"wo{edge}")
    cfg = _config(uri, db, SWAP_CAP=4 * k, GRACE_SECONDS=600.0, COMPRESSION=RECOMMENDED_COMPRESSION)

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
    import pymongo

    from wirehead.dataset import MongoheadDataset

    n = write["n"]
    cfg = _config(uri, write["db"], SWAP_CAP=n, GRACE_SECONDS=600.0)
    cfg_c = _config(uri, write["db_compressed"], SWAP_CAP=n, GRACE_SECONDS=600.0,
                    COMPRESSION=RECOMMENDED_COMPRESSION)
    paths = _write_npy(samples[:n], tmp / f"npy{edge}")  # removed by run() when the size is done
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
            loader.update(_loader_rates(MongoheadDataset(config=cfg_loader, uri=uri), disk, loader_epochs, w,
                                        loader_batch))
    finally:
        client.close()
    out = {
        "edge": edge, "n": n,
        "raw_find_samples_per_s": _median(rawr), "cold_samples_per_s": _median(cold),
        "cold_compressed_samples_per_s": _median(cold_c), "warm_samples_per_s": _median(warm),
        "disk_samples_per_s": _median(diskr), **loader,
    }
    out["read_cold_vs_raw"] = _ratio(out["cold_samples_per_s"], out["raw_find_samples_per_s"])
    out["read_cold_compressed_vs_raw"] = _ratio(out["cold_compressed_samples_per_s"], out["raw_find_samples_per_s"])
    out["read_warm_vs_disk"] = _ratio(out["warm_samples_per_s"], out["disk_samples_per_s"])
    out["read_cold_vs_disk"] = _ratio(out["cold_samples_per_s"], out["disk_samples_per_s"])
    for w in loader_workers:
        out[f"read_loader_w{w}_vs_disk"] = _ratio(out[f"loader_w{w}_samples_per_s"],
                                                 out[f"disk_loader_w{w}_samples_per_s"])
    # the headline: the worst of the multi-worker loaders (2 and 4 workers; 1 is shown beside it)
    head = [w for w in loader_workers if w >= 2] or list(loader_workers)
    worst = min(head, key=lambda w: out[f"read_loader_w{w}_vs_disk"] or 0.0)
    out["loader_samples_per_s"] = out[f"loader_w{worst}_samples_per_s"]
    out["disk_loader_samples_per_s"] = out[f"disk_loader_w{worst}_samples_per_s"]
    out["read_loader_vs_disk"] = out[f"read_loader_w{worst}_vs_disk"]
    out["read_loader_vs_plain_disk"] = _ratio(out["loader_samples_per_s"], out["disk_samples_per_s"])
    return out


def _loader_rates(ds: Any, disk: NpyDataset, epochs: int, workers: int = 2, batch: int = 2) -> dict[str, Any]:
    """Samples/s of a ``workers``-worker DataLoader (``batch_size=batch``, shuffle, default collation) over ``ds``
    and over ``disk``, after one warm-up epoch each; keys carry ``_w{workers}``, among them the loader's
    arguments (``config``) and what its batches were (``batch``: the collated image's shape and type)."""
    import torch
    from torch.utils.data import DataLoader

    args = dict(batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
                multiprocessing_context="spawn" if workers else None)
    seen: dict[str, Any] = {}

    def count_samples(loader: Any) -> int:
        k = 0
        for b in loader:
            image = b["image"]
            seen.setdefault("image_shape", list(image.shape))
            seen.setdefault("image_type", type(image).__name__)
            seen["collated"] = seen.get("collated", True) and isinstance(image, torch.Tensor) and (
                image.ndim == len(disk[0]["image"].shape) + 1)
            k += int(image.shape[0])
        return k

    def rate(dataset: Any) -> tuple[float, float, list[float]]:
        loader = DataLoader(dataset, **args)
        t0 = time.perf_counter()
        for _ in loader:  # warm-up: worker start-up, connections, each worker's cache
            pass
        warmup = time.perf_counter() - t0
        count = 0
        per_epoch = []
        t0 = time.perf_counter()
        for _ in range(max(1, epochs - 1)):
            t1 = time.perf_counter()
            k = count_samples(loader)
            per_epoch.append(k / (time.perf_counter() - t1))
            count += k
        took = time.perf_counter() - t0
        del loader
        return count / took, warmup, per_epoch

    wh, wh_warmup, wh_epochs = rate(ds)
    wh_batch = dict(seen)
    seen.clear()
    dk, dk_warmup, dk_epochs = rate(disk)
    w = f"_w{workers}"
    return {f"loader{w}_samples_per_s": wh, f"disk_loader{w}_samples_per_s": dk,
            f"loader{w}_first_epoch_seconds": wh_warmup, f"disk_loader{w}_first_epoch_seconds": dk_warmup,
            f"loader{w}_epoch_samples_per_s": wh_epochs, f"disk_loader{w}_epoch_samples_per_s": dk_epochs,
            f"loader{w}_config": {**args, "collate_fn": "default_collate",
                                  "reader_cache_mb": ds.config.reader_cache_mb},
            f"loader{w}_batch": wh_batch, f"disk_loader{w}_batch": dict(seen)}


def bench_swap_latency(uri: str, dbs: _Dbs, caps: tuple[int, int], repeats: tuple[int, int],
                       edge: int) -> dict[str, Any]:
    """Time the swapper step that swaps a full generation, at a small and a large SWAP_CAP."""
    from wirehead.generator import WireheadGenerator
    from wirehead.reader import Reader
    from wirehead.store import Store
    from wirehead.swapper import Swapper

    sample = _samples(edge, 1)[0]
    out: dict[str, Any] = {}
    for cap, reps in zip(caps, repeats):
        db = dbs.new(f"s{cap}")
        cfg = _config(uri, db, SWAP_CAP=cap, LEASE_SECONDS=3600.0, GRACE_SECONDS=0.5)
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
    out["swap_seconds_small"] = _median(small["swap_seconds"])
    out["swap_seconds_large"] = _median(large["swap_seconds"])
    out["swap_latency_ratio"] = _ratio(out["swap_seconds_large"], out["swap_seconds_small"])
    out["step_seconds_small"] = _median(small["step_seconds"])
    out["step_seconds_large"] = _median(large["step_seconds"])
    out["step_ratio"] = _ratio(out["step_seconds_large"], out["step_seconds_small"])
    out["reader_switch_ratio"] = _ratio(_median(large["reader_switch_seconds"]),
                                        _median(small["reader_switch_seconds"]))
    out["push_seconds_ratio"] = _ratio(_median(large["push_seconds"]), _median(small["push_seconds"]))
    return out


def bench_swaps_under_read(uri: str, dbs: _Dbs, swaps: int, edge: int, cap: int = 10) -> dict[str, Any]:
    """A reader process reads continuously while a generator fills and swaps ``swaps`` generations."""
    from wirehead.generator import WireheadGenerator
    from wirehead.store import Store

    db = dbs.new("swapread")
    cfg = _config(uri, db, SWAP_CAP=cap, GRACE_SECONDS=1.0, LEASE_SECONDS=5.0)
    samples = _samples(edge, cap)
    gen = WireheadGenerator(None, config=cfg, uri=uri, name="bench-swapread")
    store = Store(cfg, uri=uri)
    ctx = _spawn()
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    result = None
    try:
        for s in samples:  # the first read generation
            gen.push(s)
        start_swaps = store.state().swaps
        reader = ctx.Process(target=_child_reader, args=(uri, cfg.to_dict(), ready, stop, out), daemon=True)
        with _processes([reader], stop):
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
            result = _get(out, 60)
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


def bench_yield(uri: str, dbs: _Dbs, procs: int, per_proc: int, cap: int, edge: int) -> dict[str, Any]:
    """``procs`` generator processes (swapping by themselves) commit samples; which ones reach a read generation?"""
    from wirehead.store import Store
    from wirehead.swapper import Swapper

    db = dbs.new("yield")
    # every generation is kept (grace and RETIRED_GENERATIONS): "served" is read from the generations left at the end
    cfg = _config(uri, db, SWAP_CAP=cap, GRACE_SECONDS=3600.0, RETIRED_GENERATIONS=1_000_000, LEASE_SECONDS=1.0,
                  POLL_SECONDS=0.05)
    store = Store(cfg, uri=uri)
    ctx = _spawn()
    stop, out = ctx.Event(), ctx.Queue()
    results: list[dict] = []
    try:
        store.ensure_schema()  # create the state before writers start (SecantusDB upsert quirk)
        workers = [ctx.Process(target=_child_generator, args=(uri, cfg.to_dict(), r, per_proc, edge, 0.0, stop, out),
                               daemon=True) for r in range(procs)]
        t0 = time.perf_counter()
        with _processes(workers, None, timeout=300):
            deadline = time.monotonic() + 300
            while len(results) < procs and time.monotonic() < deadline:
                got = _get(out, 1.0)
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


def bench_end_to_end(uri: str, dbs: _Dbs, p: Profile) -> dict[str, Any]:
    """A loop with a fixed training step, fed by the cache vs generating each sample inline."""
    from wirehead.dataset import MongoheadDataset
    from wirehead.synth import synth_generator

    db = dbs.new("e2e")
    edge = p.e2e_edge
    cfg = _config(uri, db, SWAP_CAP=p.e2e_cap, GRACE_SECONDS=5.0, LEASE_SECONDS=2.0)
    ctx = _spawn()
    stop, out = ctx.Event(), ctx.Queue()
    ds = MongoheadDataset(config=cfg, uri=uri)
    ds.store.ensure_schema()
    rng = np.random.default_rng(11)
    reads_per_gen: dict[int, int] = {}
    size_of_gen: dict[int, int] = {}
    workers = [ctx.Process(target=_child_generator, args=(uri, cfg.to_dict(), r, None, edge, p.e2e_delay, stop, out),
                           daemon=True) for r in range(p.e2e_procs)]
    try:
        with _processes(workers, stop, timeout=30):
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
                got = _get(out, 30)
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


def _rss_probe(uri: str, cfg: Any, epochs: int, wait: float, what: str) -> dict[str, Any]:
    """Run :func:`_child_rss` in a spawned process reading with ``cfg``; its result (``what`` names it in errors)."""
    ctx = _spawn()
    out = ctx.Queue()
    proc = ctx.Process(target=_child_rss, args=(uri, cfg.to_dict(), epochs, out), daemon=True)
    with _processes([proc], None, timeout=120):
        result = _get(out, wait)
    if result is None or "error" in result:
        raise RuntimeError(f"{what} failed: {result}")
    return result


def bench_rss(uri: str, db: str, n: int, epochs: int) -> dict[str, Any]:
    """Peak RSS growth of a separate process reading a whole generation, over its raw bytes."""
    cfg = _config(uri, db, SWAP_CAP=n, GRACE_SECONDS=600.0)
    result = _rss_probe(uri, cfg, epochs, 300, "the RSS probe")
    result["dataset_peak_rss_vs_generation_bytes"] = _ratio(result["growth"], result["gen_raw_bytes"])
    result["reader_cache_mb"] = cfg.reader_cache_mb
    return result


def bench_stream(uri: str, db: str, n: int, edge: int, cache_samples: int, epochs: int) -> dict[str, Any]:
    """Peak RSS growth of a process streaming a generation larger than its cache, over the cache's size."""
    cache_mib = max(1, -(-cache_samples * _sample_bytes(edge) // 2 ** 20))
    keys = _cache_keys(cache_mib)
    budget = cache_mib * len(keys) * 2 ** 20  # the process's whole cache: its own and its mapped share of the node's
    cfg = _config(uri, db, SWAP_CAP=n, GRACE_SECONDS=600.0, **keys)
    result = _rss_probe(uri, cfg, epochs, 600, "the streaming reader")
    result.update(edge=edge, cache_mib=cache_mib, cache_keys=sorted(keys), cache_budget_mib=budget // 2 ** 20,
                  sample_mib=_sample_bytes(edge) / 2 ** 20,
                  generation_vs_cache=_ratio(result["gen_raw_bytes"], cache_mib * 2 ** 20),
                  stream_peak_rss_vs_cache=_ratio(result["growth"], budget),
                  stream_peak_rss_vs_generation=_ratio(result["growth"], result["gen_raw_bytes"]))
    return result


def bench_read_ahead(uri: str, db: str, n: int, edge: int, cache_samples: int, rounds: int,
                     batch: int = 2) -> dict[str, Any]:
    """A trainer without DataLoader workers streaming a generation larger than its caches, each step a fixed
    compute time (a sleep, as a GPU step leaves the CPU free) as long as reading one batch takes: the time it
    waits for batches with :class:`~wirehead.sampler.ReadAheadSampler` against torch's own batching
    (``batch_size``/``shuffle``), same data, alternating, ``rounds`` epochs each."""
    from torch.utils.data import DataLoader

    from wirehead.dataset import MongoheadDataset
    from wirehead.sampler import ReadAheadSampler

    cache_mib = max(1, -(-cache_samples * _sample_bytes(edge) // 2 ** 20))
    cfg = _config(uri, db, SWAP_CAP=n, GRACE_SECONDS=600.0, **_cache_keys(cache_mib))

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
        return _median([w / t for w, t, _ in runs])

    return {"edge": edge, "n": n, "batch": batch, "cache_mib": cache_mib, "step_seconds": step,
            "plain_wait_fraction": frac(plain), "read_ahead_wait_fraction": frac(ahead),
            "read_ahead_hits_per_epoch": _median([h for _, _, h in ahead]),
            "plain_seconds_per_epoch": _median([t for _, t, _ in plain]),
            "read_ahead_seconds_per_epoch": _median([t for _, t, _ in ahead]),
            "read_ahead_speedup": _ratio(_median([t for _, t, _ in plain]), _median([t for _, t, _ in ahead]))}


def bench_node(uri: str, dbs: _Dbs, edge: int, samples: list, p: Profile, tmp: Path) -> dict[str, Any]:
    """One node: ``node_trainers`` trainer processes, each a DataLoader of ``node_workers`` workers, read one
    generation of ``node_n`` samples (it fits every cache) for ``node_epochs`` epochs, through a relay that counts
    the bytes the server sends; then the memory the node spent on it."""
    from wirehead.generator import WireheadGenerator
    from wirehead.store import Store

    n = p.node_n
    db = dbs.new(f"node{edge}")
    cfg = _config(uri, db, SWAP_CAP=n, GRACE_SECONDS=600.0)
    gen = WireheadGenerator(None, config=cfg, uri=uri, name="bench-node")
    store = Store(cfg, uri=uri)
    relay: Optional[_ByteCounter] = None
    folder = tmp / f"node{edge}"
    folder.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    try:
        for i in range(n):
            gen.push(samples[i % len(samples)])
        gen.close()
        state = store.state()
        doc = store.gen_doc(state.read_gen) if state.read_gen is not None else None
        if doc is None or doc.n != n:
            raise RuntimeError(f"expected a read generation of {n} samples, found {doc}")
        raw_bytes = sum(int(m.get("raw_bytes", 0)) for m in store.get_manifests(list(doc.members)).values())
        relay = _ByteCounter(uri)
        ctx = _spawn()
        out = ctx.Queue()
        barrier = ctx.Barrier(p.node_trainers)
        shm_before = _shm_used()
        trainers = [ctx.Process(target=_child_trainer, args=(relay.uri, cfg.to_dict(), r, p.node_workers,
                                                             p.loader_batch, p.node_epochs, str(folder), barrier, out))
                    for r in range(p.node_trainers)]  # not daemonic: a trainer starts DataLoader workers
        t0 = time.perf_counter()
        with _processes(trainers, None, timeout=120):
            deadline = time.monotonic() + 900
            while len(results) < p.node_trainers and time.monotonic() < deadline:
                got = _get(out, 1.0)
                if got is not None:
                    results.append(got)
                elif not any(t.is_alive() for t in trainers):
                    break
        took = time.perf_counter() - t0
        sent = relay.server_bytes
    finally:
        if relay is not None:
            relay.close()
        gen.close()
        gen.store.close()
        store.close()
        dbs.drop(db)
        shutil.rmtree(folder, ignore_errors=True)
    errors = [r["error"] for r in results if "error" in r]
    if errors or len(results) < p.node_trainers:
        raise RuntimeError(f"trainer processes failed: {errors or results}")
    shm = max(0, max(r["shm_used"] for r in results) - shm_before)
    workers_anon = sum(r["workers_anon_growth"] for r in results)
    trainers_anon = sum(r["trainer_anon_growth"] for r in results)
    node_bytes = workers_anon + trainers_anon + shm
    return {
        "edge": edge, "n": n, "trainers": p.node_trainers, "workers_per_trainer": p.node_workers,
        "workers": p.node_trainers * p.node_workers, "epochs": p.node_epochs, "batch_size": p.loader_batch,
        "seconds": took, "generation_stored_bytes": doc.stored_bytes, "generation_raw_bytes": raw_bytes,
        "server_bytes_sent": sent, "connections": relay.connections if relay else None,
        "node_bytes_sent_vs_generation": _ratio(sent, doc.stored_bytes),
        "workers_anon_growth": workers_anon, "trainers_anon_growth": trainers_anon, "shm_growth": shm,
        "node_memory_bytes": node_bytes, "node_memory_vs_generation": _ratio(node_bytes, raw_bytes),
        "samples_read": sum(r["samples"] for r in results),
        "batch_shapes": sorted({tuple(s) for r in results for s in r["batch_shapes"]}),
        "cache_keys": sorted(_cache_keys(1)),
    }


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
def _section(report: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    _say(f"{name} ...")
    t0 = time.perf_counter()
    try:
        value = fn()
        report["raw"][name] = value
        return value
    except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
        report["errors"][name] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]
        _say(f"{name} FAILED: {type(e).__name__}: {e}")
        return None
    finally:
        report["section_seconds"][name] = round(time.perf_counter() - t0, 2)


def run(uri: str, profile: Profile) -> dict[str, Any]:
    """Run every section against ``uri`` with ``profile``; return the report (headline keys + raw figures)."""
    report: dict[str, Any] = {"raw": {}, "errors": {}, "section_seconds": {}}
    dbs = _Dbs(uri)
    tmp = Path(tempfile.mkdtemp(prefix="wirehead-bench-"))
    try:
        writes, reads = {}, {}
        top_samples: list = []
        for edge in profile.sizes:
            n = profile.write_n[edge]
            samples = _samples(edge, n, unique=4 if edge >= 256 else 8)  # 4 x 80 MiB at 256^3
            w = _section(report, f"write_{edge}", lambda: bench_write(uri, dbs, edge, n, samples))
            if w is None:
                continue
            writes[edge] = w
            if edge == max(profile.sizes):
                _section(report, f"write_overlap_{edge}", lambda: bench_write_overlap(
                    uri, dbs, edge, samples, 1.0 / w["push_compressed_samples_per_s"], profile.overlap_k))
            cache = profile.loader_cache_samples.get(edge)
            cache_mb = max(1, -(-cache * _sample_bytes(edge) // 2 ** 20)) if cache else None
            r = _section(report, f"read_{edge}", lambda: bench_read(uri, edge, w, samples, tmp, profile.read_rounds,
                                                                     profile.loader_epochs, profile.loader_workers,
                                                                     profile.loader_batch, cache_mb))
            shutil.rmtree(tmp / f"npy{edge}", ignore_errors=True)
            if r is not None:
                reads[edge] = r
            top_samples = samples
        top = max(writes) if writes else None
        if top is not None:
            _section(report, "rss", lambda: bench_rss(uri, writes[top]["db"], writes[top]["n"], profile.rss_epochs))
            _section(report, "stream", lambda: bench_stream(uri, writes[top]["db"], writes[top]["n"], top,
                                                            profile.stream_cache_samples, profile.rss_epochs))
            _section(report, "ahead", lambda: bench_read_ahead(uri, writes[top]["db"], writes[top]["n"], top,
                                                                    profile.stream_cache_samples, profile.read_rounds))
        for w in writes.values():
            dbs.drop(w["db"])
            dbs.drop(w["db_compressed"])
        if top is not None:
            _section(report, "node", lambda: bench_node(uri, dbs, top, top_samples, profile, tmp))
        del top_samples
        shutil.rmtree(tmp, ignore_errors=True)
        if profile.protocol_sections:
            _section(report, "swap_latency", lambda: bench_swap_latency(uri, dbs, profile.swap_caps,
                                                                        profile.swap_repeats, profile.swap_edge))
            _section(report, "swaps_under_read", lambda: bench_swaps_under_read(uri, dbs, profile.swaps_under_read,
                                                                                profile.swap_read_edge))
            _section(report, "yield", lambda: bench_yield(uri, dbs, profile.yield_procs, profile.yield_per_proc,
                                                          profile.yield_cap, profile.yield_edge))
            _section(report, "end_to_end", lambda: bench_end_to_end(uri, dbs, profile))
    finally:
        dbs.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    raw = report["raw"]

    def worst(key: str) -> Optional[float]:
        vals = [r[key] for r in reads.values() if r.get(key) is not None]
        return min(vals) if vals else None

    report["write_vs_raw"] = min((w["write_vs_raw"] for w in writes.values()), default=None)
    report["read_cold_vs_raw"] = worst("read_cold_vs_raw")
    report["read_warm_vs_disk"] = worst("read_warm_vs_disk")
    report["read_loader_vs_disk"] = worst("read_loader_vs_disk")
    report["swap_latency_ratio"] = (raw.get("swap_latency") or {}).get("swap_latency_ratio")
    report["failed_reads_during_swaps"] = (raw.get("swaps_under_read") or {}).get("failed_reads_during_swaps")
    report["yield"] = (raw.get("yield") or {}).get("yield")
    report["trainer_wait_fraction"] = (raw.get("end_to_end") or {}).get("trainer_wait_fraction")
    report["reuse_ratio"] = (raw.get("end_to_end") or {}).get("reuse_ratio")
    report["dataset_peak_rss_vs_generation_bytes"] = (raw.get("rss") or {}).get(
        "dataset_peak_rss_vs_generation_bytes")
    report["stream_peak_rss_vs_cache"] = (raw.get("stream") or {}).get("stream_peak_rss_vs_cache")
    report["read_ahead_wait_fraction"] = (raw.get("ahead") or {}).get("read_ahead_wait_fraction")
    report["node_bytes_sent_vs_generation"] = (raw.get("node") or {}).get("node_bytes_sent_vs_generation")
    report["node_memory_vs_generation"] = (raw.get("node") or {}).get("node_memory_vs_generation")
    report["sections_run"] = sorted(raw) + sorted(report["errors"])
    report["met"] = {k: _met(k, report[k]) for k in HEADLINE_KEYS if TARGETS[k][0] != "info"}
    return report


def _met(key: str, value: Any) -> Optional[bool]:
    op, target, _ = TARGETS[key]
    if value is None:
        return None
    return {">=": value >= target, "<=": value <= target, "<": value < target, "==": value == target}.get(op)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _detail(report: dict[str, Any], key: str) -> str:
    raw = report["raw"]
    if key in ("write_vs_raw",):
        text = "; ".join(f"{e}^3: push {w['push_samples_per_s']:.1f}/s vs raw {w['raw_insert_samples_per_s']:.1f}/s"
                         for e, w in ((k[6:], v) for k, v in raw.items()
                                      if k.startswith("write_") and v and "push_samples_per_s" in v))
        for k, v in raw.items():
            if k.startswith("write_overlap_") and v:
                text += (f"; run() of a generator as slow as a compressed push ({v['edge']}^3): "
                         f"{v['run_vs_serial']:.2f}x a make-then-push loop")
        return text
    if key == "read_loader_vs_disk":
        parts = []
        for k, v in raw.items():
            if not k.startswith("read_") or not v:
                continue
            ws = sorted(int(x[len("read_loader_w"):-len("_vs_disk")]) for x in v
                        if x.startswith("read_loader_w") and x.endswith("_vs_disk") and v[x] is not None)
            parts.append(f"{k[5:]}^3: " + ", ".join(
                f"{w} workers {v[f'read_loader_w{w}_vs_disk']:.2f} ({v[f'loader_w{w}_samples_per_s']:.1f} vs "
                f"{v[f'disk_loader_w{w}_samples_per_s']:.1f}/s)" for w in ws))
        return "; ".join(parts)
    if key == "read_ahead_wait_fraction":
        s = raw.get("ahead")
        if not s:
            return ""
        return (f"without: {s['plain_wait_fraction']:.3f}; epoch {s['read_ahead_speedup']:.2f}x faster "
                f"({s['n']} samples of {s['edge']}^3, batch {s['batch']}, caches of {s['cache_mib']} MiB, "
                f"steps of {s['step_seconds'] * 1e3:.0f} ms)")
    if key.startswith("read_"):
        a, b = {"read_cold_vs_raw": ("cold_samples_per_s", "raw_find_samples_per_s"),
                "read_warm_vs_disk": ("warm_samples_per_s", "disk_samples_per_s"),
                "read_loader_vs_disk": ("loader_samples_per_s", "disk_loader_samples_per_s")}[key]
        return "; ".join(f"{k[5:]}^3: {v[a]:.1f}/s vs {v[b]:.1f}/s"
                         for k, v in raw.items() if k.startswith("read_") and v.get(a) and v.get(b))
    if key == "swap_latency_ratio" and raw.get("swap_latency"):
        s = raw["swap_latency"]
        return (f"cap {s['caps'][1]}: {s['swap_seconds_large'] * 1e3:.1f} ms vs cap {s['caps'][0]}: "
                f"{s['swap_seconds_small'] * 1e3:.1f} ms (whole step with GC: {s['step_seconds_large'] * 1e3:.0f} "
                f"vs {s['step_seconds_small'] * 1e3:.0f} ms)")
    if key == "failed_reads_during_swaps" and raw.get("swaps_under_read"):
        s = raw["swaps_under_read"]
        return (f"{s['failed']} failed + {s['blocked_over_100ms']} > 100 ms of {s['reads']} reads; "
                f"p99 {s['latency_p99'] * 1e3:.0f} ms, max {s['latency_max'] * 1e3:.0f} ms")
    if key == "yield" and raw.get("yield"):
        s = raw["yield"]
        return f"{s['served']} of {s['produced']} served; {s['served_twice']} twice"
    if key == "trainer_wait_fraction" and raw.get("end_to_end"):
        s = raw["end_to_end"]
        return f"on the fly: {s['on_the_fly_wait_fraction']:.3f}; first sample after {s['time_to_first_sample']:.1f} s"
    if key == "reuse_ratio" and raw.get("end_to_end"):
        s = raw["end_to_end"]
        return f"{s['reads']} reads over {s['generations_used']} generations"
    if key == "stream_peak_rss_vs_cache" and raw.get("stream"):
        s = raw["stream"]
        budget = s.get("cache_budget_mib", s["cache_mib"])
        return (f"+{s['growth'] / 2**20:.0f} MiB for caches of {budget} MiB ({' + '.join(s['cache_keys'])}, "
                f"{s['cache_mib']} MiB each), streaming a {s['gen_raw_bytes'] / 2**20:.0f} MiB generation "
                f"({s['edge']}^3)")
    if key in ("node_bytes_sent_vs_generation", "node_memory_vs_generation") and raw.get("node"):
        s = raw["node"]
        what = (f"{s['server_bytes_sent'] / 2**20:.0f} MiB sent" if key.startswith("node_bytes") else
                f"{s['node_memory_bytes'] / 2**20:.0f} MiB (workers {s['workers_anon_growth'] / 2**20:.0f}, "
                f"trainers {s['trainers_anon_growth'] / 2**20:.0f}, shm {s['shm_growth'] / 2**20:.0f})")
        return (f"{what} for a {s['generation_raw_bytes'] / 2**20:.0f} MiB generation ({s['edge']}^3); "
                f"{s['trainers']} trainers x {s['workers_per_trainer']} workers, {s['epochs']} epochs")
    if key == "dataset_peak_rss_vs_generation_bytes" and raw.get("rss"):
        s = raw["rss"]
        return f"+{s['growth'] / 2**20:.0f} MiB for a {s['gen_raw_bytes'] / 2**20:.0f} MiB generation"
    return ""


def format_table(report: dict[str, Any]) -> str:
    """The headline table: figure, value, target, met, and the numbers behind the ratio."""
    rows = [("figure", "value", "target", "met", "measured")]
    for key in HEADLINE_KEYS:
        op, target, _ = TARGETS[key]
        met = report["met"].get(key) if op != "info" else None
        value = _fmt(report.get(key))
        if report.get(key) is None and key in PROTOCOL_KEYS and not report.get("profile", {}).get(
                "protocol_sections", True):
            value = "not run"  # this profile measures the sizes, not the protocol
        rows.append((key, value, "-" if op == "info" else f"{op} {target:g}",
                     "-" if op == "info" else {True: "MET", False: "NOT MET", None: "n/a"}[met],
                     _detail(report, key)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
        if i == 0:
            lines.append("-" * (sum(widths) + 8 + 10))
    if report.get("errors"):
        lines.append("sections that failed: " + ", ".join(report["errors"]))
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line of ``wirehead bench`` / ``benchmarks/run.py``."""
    p = argparse.ArgumentParser(prog="wirehead bench", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer samples and repeats: under 3 minutes")
    mode.add_argument("--full", action="store_true", help="64^3, 128^3 and 256^3 samples, more repeats")
    mode.add_argument("--profile", choices=sorted(PROFILES),
                      help="a named profile: normal, quick, full, smoke, or 256 (the real workload only: 256^3 "
                           "samples, generations larger than the readers' cache, 1/2/4-worker loaders, a node of "
                           "two trainers)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes and counts (CI smoke run of every path; the figures mean nothing)")
    p.add_argument("--uri", help="benchmark this MongoDB server (default: start a private local one)")
    p.add_argument("--json", metavar="PATH", help="write the figures to PATH as JSON")
    p.add_argument("--sizes", type=int, nargs="+", help="override the volume edges, e.g. --sizes 64 128")
    p.add_argument("--engine", default="auto", choices=["auto", "mongod", "secantus"],
                   help="the private server's engine (without --uri)")
    return p.parse_args(argv)


def profile_name(args: argparse.Namespace) -> str:
    """The profile the arguments pick."""
    if args.smoke:
        return "smoke"
    if args.profile:
        return str(args.profile)
    return "full" if args.full else "quick" if args.quick else "normal"


def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark; print the table; return 0 (also when targets are missed) or 1 on a failed section."""
    args = parse_args(argv)
    name = profile_name(args)
    profile = PROFILES[name]
    if args.sizes:
        n_for = {e: profile.write_n.get(e, max(4, int(64 * (64 / e) ** 2))) for e in args.sizes}
        profile = replace(profile, sizes=tuple(args.sizes), write_n=n_for)
    t0 = time.perf_counter()
    server = None
    try:
        if args.uri:
            uri = args.uri
            engine = "given"
        else:
            from wirehead.server import LocalMongo

            server = LocalMongo(engine=args.engine).start()
            uri, engine = server.uri, server.engine
        _say(f"profile {name}, server {engine} ({'--uri' if args.uri else 'private, 127.0.0.1'})")
        report = run(uri, profile)
    finally:
        if server is not None:
            server.stop()
    report["profile"] = asdict(profile)
    report["mode"] = name
    report["engine"] = engine
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                         "cpus": os.cpu_count()}
    report["targets"] = {k: {"op": op, "value": v, "meaning": m} for k, (op, v, m) in TARGETS.items()}
    table = format_table(report)
    print(table)
    print(f"({name} run, {engine} server, {report['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=_json_default))
    return 1 if report["errors"] else 0


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
