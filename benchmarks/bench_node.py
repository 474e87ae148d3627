"""One node (``node``): trainer processes, each a DataLoader with workers, read one generation through a relay
that counts the bytes the server sends; then the memory the node spent on it (workers, trainers, /dev/shm)."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader

from bench_common import Dbs, Profile, bench_config, cache_keys, get_result, processes, ratio, spawn_context
from wirehead.dataset import MongoheadDataset
from wirehead.generator import WireheadGenerator
from wirehead.store import Store

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


def bench_node(uri: str, dbs: Dbs, edge: int, samples: list, p: Profile, tmp: Path) -> dict[str, Any]:
    """One node: ``node_trainers`` trainer processes, each a DataLoader of ``node_workers`` workers, read one
    generation of ``node_n`` samples (it fits every cache) for ``node_epochs`` epochs, through a relay that counts
    the bytes the server sends; then the memory the node spent on it."""
    n = p.node_n
    db = dbs.new(f"node{edge}")
    cfg = bench_config(uri, db, SWAP_CAP=n, GRACE_SECONDS=600.0)
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
        ctx = spawn_context()
        out = ctx.Queue()
        barrier = ctx.Barrier(p.node_trainers)
        shm_before = _shm_used()
        trainers = [ctx.Process(target=_child_trainer, args=(relay.uri, cfg.to_dict(), r, p.node_workers,
                                                             p.loader_batch, p.node_epochs, str(folder), barrier, out))
                    for r in range(p.node_trainers)]  # not daemonic: a trainer starts DataLoader workers
        t0 = time.perf_counter()
        with processes(trainers, None, timeout=120):
            deadline = time.monotonic() + 900
            while len(results) < p.node_trainers and time.monotonic() < deadline:
                got = get_result(out, 1.0)
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
        "node_bytes_sent_vs_generation": ratio(sent, doc.stored_bytes),
        "workers_anon_growth": workers_anon, "trainers_anon_growth": trainers_anon, "shm_growth": shm,
        "node_memory_bytes": node_bytes, "node_memory_vs_generation": ratio(node_bytes, raw_bytes),
        "samples_read": sum(r["samples"] for r in results),
        "batch_shapes": sorted({tuple(s) for r in results for s in r["batch_shapes"]}),
        "cache_keys": sorted(cache_keys(1)),
    }
