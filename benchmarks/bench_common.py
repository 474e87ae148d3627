"""What every figure family of the benchmark shares: the profiles, the run's databases, sample data, process
helpers, and the generator process that the yield and end-to-end figures start.

Imported by ``bench.py`` and the ``bench_*.py`` modules (``benchmarks/`` on ``sys.path``)."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import resource
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import psutil
import pymongo

from wirehead.config import WireheadConfig
from wirehead.errors import WaitTimeout
from wirehead.generator import WireheadGenerator
from wirehead.supervise import stop_processes
from wirehead.synth import synth_generator, synth_sample

log = logging.getLogger(__name__)

#: The codec engineer's recommendation (benchmarks/codec_compare.py).
RECOMMENDED_COMPRESSION = {"image": "blosc2", "label": "zstd"}
#: the kinds of every benchmark sample: a float32 image and a uint8 label map
KINDS = ["image", "label"]


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


def say(msg: str) -> None:
    """One line of progress on stderr (the table and the JSON are the output)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """``a / b``, or None where either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)


def median(xs: Sequence[float]) -> Optional[float]:
    """The median of ``xs``, or None where there is none."""
    return float(statistics.median(xs)) if xs else None


def free_page_reporting(sysfs: str = "/sys", procfs: str = "/proc") -> Optional[int]:
    """The order (log2 of pages) of the free memory blocks this machine hands back to its host, or None where it
    hands back none (bare metal, no balloon device, the reporting off, not Linux).

    A virtual machine whose ``virtio_balloon`` device offers free-page reporting (feature bit 5) reports free
    blocks of at least ``page_reporting_order``; the host discards them, and the next write to one costs a host
    fault.  Fresh memory then stalls now and then, whoever allocates it (README, Benchmarks: a DataLoader's
    collation into shared memory).  An order above the largest the kernel keeps (``/proc/buddyinfo``'s columns)
    reports nothing."""
    balloons = Path(sysfs, "bus", "virtio", "drivers", "virtio_balloon")
    try:
        offers = any(len(bits) > 5 and bits[5] == "1"
                     for bits in ((d / "features").read_text().strip() for d in balloons.glob("virtio*")))
        if not offers:
            return None
        order = int(Path(sysfs, "module", "page_reporting", "parameters", "page_reporting_order").read_text())
        counts = Path(procfs, "buddyinfo").read_text().splitlines()[0].split()[4:]
    except (OSError, ValueError, IndexError):
        return None
    return order if 0 <= order < len(counts) else None


def rss_now() -> int:
    """Resident set size of this process in bytes (Linux /proc, psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return int(psutil.Process().memory_info().rss)


def maxrss() -> int:
    """This process's peak RSS in bytes (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def bench_config(uri: str, dbname: str, **keys: Any) -> WireheadConfig:
    # a busy server (a loaded machine, a large drop just before) may take a while to answer: wait, do not fail
    base = dict(MONGO_URI=uri, DBNAME=dbname, SAMPLE=KINDS, SWAP_CAP=10, CONNECT_TIMEOUT=60.0,
                RETRY_DEADLINE=60.0, READ_TIMEOUT=120.0)
    base.update(keys)
    return WireheadConfig.load(base)


class Dbs:
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


def synth_samples(edge: int, n: int, seed: int = 0, unique: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image float32, label uint8) pairs of ``edge``^3 from the built-in synth (``unique`` distinct ones)."""
    base = [synth_sample((edge, edge, edge), seed + k) for k in range(min(n, unique))]
    return [base[i % len(base)] for i in range(n)]


def sample_bytes(edge: int) -> int:
    """Raw bytes of one (float32 image, uint8 label) sample of ``edge``^3."""
    return edge ** 3 * 5


def cache_keys(mib: int) -> dict[str, int]:
    """Config keys that bound a reading process's cache to ``mib`` MiB: READER_CACHE_MB, and NODE_CACHE_MB (the
    node-local shared cache) where this wirehead has that key."""
    probe = bench_config("mongodb://127.0.0.1:1/", "probe")
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


def spawn_context() -> Any:
    """The ``spawn`` start method: every benchmark child process starts fresh (no inherited client or thread)."""
    return mp.get_context("spawn")


@contextlib.contextmanager
def processes(procs: list[Any], stop: Any = None, timeout: float = 30.0) -> Iterator[list[Any]]:
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


def child_generator(uri: str, cfg: dict, rank: int, n: Optional[int], edge: int, delay: float,
                     stop: Any, out: Any) -> None:
    """Push synth samples until ``n`` are committed or ``stop`` is set; send back the committed ids."""
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


def get_result(q: Any, timeout: float) -> Any:
    """The next item of a child's result queue, or None after ``timeout`` seconds."""
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        return None
