"""Figures across nodes, on the cluster in a box (``tests/cluster/harness.py``): ``python benchmarks/cluster.py``.

    python benchmarks/cluster.py --quick                  # a few minutes here
    python benchmarks/cluster.py --json cluster.json      # more rounds and longer windows

Needs what the cluster needs (root, network and mount namespaces, ``apt-get install slurm-wlm munge iptables``;
``tc`` from iproute2); without it, it says why and exits 2.  It builds its own cluster of four nodes (prefix
``whbn``, subnet 10.79.0.0/24, so it runs beside a test cluster), starts the embedded server (with
authentication) on n1's private address, and measures each figure against a baseline of the same run:

- ``remote_read_vs_local``: samples/s of a trainer (a fresh ``MongoheadDataset`` reading every sample of a
  generation once, in random order, default caches) on another node (n2) / the same on the server's node (n1).
- ``capped_read_vs_link``: the same remote read with n2's link capped to 1 Gbit/s both ways (``tc tbf``),
  without and with ``COMPRESSION`` (``{image: blosc2, label: zstd}``): samples/s / the link's ideal, i.e. the
  bytes/s a plain TCP stream gets through the same capped link (measured in the run) / stored bytes per sample;
  ``compression_speedup_capped`` is compressed samples/s / uncompressed samples/s on that link.
- ``commit_rate_vs_linear``: commits/s of N fake generators (each sleeps ``gen_delay`` instead of computing,
  then pushes a small sample) spread over n2..n4, with a manager on n1 / N × the rate of one generator alone.
  The same processes run every phase (N = 1, 2, 8, 32, 64, as many as start), then the server's limit is
  measured with instant generators (no sleep); ``commit_rate_vs_ideal`` divides by min(N × one, that limit).
- ``node_bytes_vs_generation``: two trainer nodes (n2, n3), two trainer processes each, two epochs over one
  generation: bytes the switch sent to each node (the veth's counter: everything on the wire) / the
  generation's stored bytes (1.0: each sample fetched once per node); the same with ``NODE_CACHE_MB: 0``
  for contrast (each process fetches its own copy).

Everything it starts (cluster, server, processes on the nodes, their /dev/shm) is gone when it ends, also on
failure or Ctrl-C / SIGTERM.  This machine has 2 cores shared with other work: only ratios are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]  # bench.py; tests.cluster and wirehead from a checkout

from bench_common import RECOMMENDED_COMPRESSION, bench_config, median, ratio, say, synth_samples  # noqa: E402
from bench_report import fmt  # noqa: E402

__all__ = ["main", "run", "Profile", "PROFILES"]

#: key -> what it compares (the printed table's second column)
COMPARES = {
    "remote_read_vs_local": "trainer samples/s reading a generation from another node / on the server's node",
    "capped_read_vs_link": "the remote trainer's samples/s over a 1 Gbit/s link / the link's ideal (plain TCP "
                           "bytes/s through the same cap / stored bytes per sample), uncompressed",
    "capped_read_vs_link_compressed": "the same with COMPRESSION {image: blosc2, label: zstd}",
    "compression_speedup_capped": "compressed / uncompressed samples/s over the 1 Gbit/s link",
    "commit_rate_vs_linear": "commits/s of N fake generators over the nodes / N × one generator's (worst N)",
    "commit_rate_vs_ideal": "the same / min(N × one generator's, the server's limit with instant generators)",
    "node_bytes_vs_generation": "bytes on the wire to each of two trainer nodes (2 processes, 2 epochs each) / "
                                "the generation's stored bytes (worst node)",
}
CAP = "1gbit"
SERVER_NODE, READ_NODE, TRAINER_NODES, GENERATOR_NODES = "n1", "n2", ("n2", "n3"), ("n2", "n3", "n4")
PORT = 27017


@dataclass(frozen=True)
class Profile:
    """How much work each figure does."""

    name: str
    read_edge: int = 256          # samples of read_edge³ (float32 image + uint8 label) for the read figures
    read_n: int = 4               # samples in each read generation
    read_rounds: int = 3          # rounds of (local, remote, capped, capped compressed) passes
    link_probe_mb: int = 256      # bytes of the plain TCP stream that measures a link
    generators: tuple[int, ...] = (2, 8, 32, 64)
    gen_delay: float = 0.5        # seconds a fake generator sleeps per sample ("making" it)
    gen_edge: int = 16
    gen_window: float = 15.0      # seconds each phase's commits are counted
    gen_swap_cap: int = 100
    gen_start_seconds: float = 240.0  # how long the generator processes may take to start
    node_edge: int = 128
    node_n: int = 8
    node_trainers: int = 2
    node_epochs: int = 2


PROFILES = {
    "normal": Profile("normal"),
    "quick": Profile("quick", read_rounds=2, link_probe_mb=128, gen_window=8.0),
    # every code path, tiny sizes: the figures mean nothing
    "smoke": Profile("smoke", read_edge=32, read_n=2, read_rounds=1, link_probe_mb=8, generators=(2,),
                     gen_window=2.0, gen_delay=0.05, node_edge=16, node_n=2, node_trainers=1, node_epochs=1),
}


# ----------------------------------------------------------------------------------------------
# the processes on the nodes (python benchmarks/cluster.py _ROLE ...): each prints one JSON line
# ----------------------------------------------------------------------------------------------
def _cfg(ns: argparse.Namespace) -> tuple[str, Any]:
    uri = Path(ns.uri_file).read_text().strip()
    return uri, bench_config(uri, ns.db, **json.loads(ns.keys))


def _stop_event() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def role_serve(ns: argparse.Namespace) -> dict[str, Any]:
    """The embedded server, with authentication, on this node's address until SIGTERM; writes its URI."""
    from wirehead.server import LocalMongo

    stop = _stop_event()
    server = LocalMongo(ns.dbpath, host=ns.host, port=PORT, auth=True, startup_timeout=120.0)
    server.start()
    try:
        fd = os.open(ns.uri_file + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(server.uri)
        os.replace(ns.uri_file + ".tmp", ns.uri_file)
        stop.wait()
    finally:
        server.stop()
    return {"engine": server.engine}


def role_fill(ns: argparse.Namespace) -> dict[str, Any]:
    """Push the same ``n`` synth samples of ``edge``³ into a generation of ``n`` of each database of ``keys``
    (``{db: config keys}``); each swaps in when full.  Returns ``{db: {n, stored_bytes, …}}``."""
    from wirehead.generator import WireheadGenerator
    from wirehead.store import Store

    uri = Path(ns.uri_file).read_text().strip()
    samples = synth_samples(ns.edge, ns.n, unique=min(ns.n, 2))  # synthesis is slow at 256³ and not measured
    out = {}
    for db, keys in json.loads(ns.keys).items():
        cfg = bench_config(uri, db, SWAP_CAP=ns.n, **keys)
        gen = WireheadGenerator(None, config=cfg, uri=uri, name=f"fill-{db}")
        t0 = time.perf_counter()
        try:
            for s in samples:
                gen.push(s)
        finally:
            gen.close()
            gen.store.close()
        took = time.perf_counter() - t0
        store = Store(cfg, uri=uri)
        try:
            state = store.state()
            doc = store.gen_doc(state.read_gen) if state.read_gen is not None else None
            if doc is None or doc.n != ns.n:
                raise RuntimeError(f"expected a read generation of {ns.n} samples in {db}, found {doc}")
            out[db] = {"n": doc.n, "stored_bytes": doc.stored_bytes, "raw_bytes": ns.n * ns.edge ** 3 * 5,
                       "push_seconds": took}
        finally:
            store.close()
    return out


def role_read(ns: argparse.Namespace) -> dict[str, Any]:
    """A trainer: a fresh MongoheadDataset reads every sample of the read generation, ``epochs`` times, in
    random orders; samples/s from the first read to the last (the dataset is made and sized before)."""
    import numpy as np

    from wirehead.dataset import MongoheadDataset

    from wirehead.compression import compress, decompress

    uri, cfg = _cfg(ns)
    for codec in {cfg.compression_for(k) for k in cfg.sample} - {"none"}:  # the codec's import is not a read
        raw = np.zeros(64, np.uint8)
        decompress(codec, memoryview(compress(codec, memoryview(raw), 1)), raw.nbytes, "label")
    ds = MongoheadDataset(config=cfg, uri=uri)
    try:
        n = len(ds)
        rng = np.random.default_rng(ns.seed)
        t0 = time.perf_counter()
        for _ in range(ns.epochs):
            for i in rng.permutation(n):
                s = ds[int(i)]
                del s
        took = time.perf_counter() - t0
    finally:
        ds.close()
    return {"n": n, "epochs": ns.epochs, "seconds": took, "samples_per_s": n * ns.epochs / took}


def role_gen(ns: argparse.Namespace) -> dict[str, Any]:
    """A fake generator: pushes one sample to warm up, says it is ready, then runs the phases of the plan
    (``plan.json`` in ``folder``): in a phase that names its rank it sleeps ``delay`` and pushes, over and
    over, counting the commits that returned inside the phase's window."""
    import numpy as np

    from wirehead.generator import WireheadGenerator

    uri, cfg = _cfg(ns)
    stop = _stop_event()
    folder = Path(ns.folder)
    rng = np.random.default_rng(ns.rank)
    shape = (ns.edge,) * 3
    sample = (rng.random(shape, dtype=np.float32), rng.integers(0, 8, shape, dtype=np.uint8))
    gen = WireheadGenerator(None, config=cfg, uri=uri, name=f"fake-{ns.rank}")
    counts: list[int] = []
    error = None
    try:
        gen.push(sample)
        (folder / f"ready-{ns.rank}").touch()
        plan_file = folder / "plan.json"
        while not plan_file.exists():
            if stop.wait(0.05):
                return {"rank": ns.rank, "counts": counts, "error": "stopped before the plan came"}
        for phase in json.loads(plan_file.read_text()):
            n = 0
            if ns.rank in phase["ranks"]:
                stop.wait(max(0.0, phase["t0"] - time.time()))
                while not stop.is_set() and time.time() < phase["t1"]:
                    if phase["delay"]:
                        stop.wait(min(phase["delay"], max(0.0, phase["t1"] - time.time())))
                    gen.push(sample)
                    if phase["t0"] <= time.time() <= phase["t1"]:
                        n += 1
            counts.append(n)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        error = f"{type(e).__name__}: {e}"
    finally:
        gen.close()
        gen.store.close()
    return {"rank": ns.rank, "counts": counts, "error": error}


def role_manager(ns: argparse.Namespace) -> dict[str, Any]:
    """The swap loop of a cache, until SIGTERM (the example's server job runs one next to the server)."""
    from wirehead.manager import WireheadManager

    uri, cfg = _cfg(ns)
    stop = _stop_event()
    mgr = WireheadManager(config=cfg, uri=uri)
    threading.Thread(target=lambda: (stop.wait(), mgr.stop()), daemon=True).start()
    swaps = mgr.run()
    return {"swaps": swaps}


def role_blast(ns: argparse.Namespace) -> dict[str, Any]:
    """Serve ``mb`` MiB of zeros to the first client that connects on ``port`` (the link's baseline)."""
    import socket

    with socket.create_server((ns.host, ns.port)) as listen:
        listen.settimeout(120)
        conn, _ = listen.accept()
        with conn:
            block = bytes(1 << 20)
            for _ in range(ns.mb):
                conn.sendall(block)
    return {"sent": ns.mb << 20}


def role_drain(ns: argparse.Namespace) -> dict[str, Any]:
    """Receive everything a blaster sends; bytes/s from the first byte to the last."""
    import socket

    deadline = time.monotonic() + 60
    while True:
        try:
            sock = socket.create_connection((ns.host, ns.port), timeout=120)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    buf = bytearray(1 << 20)
    got = 0
    with sock:
        k = sock.recv_into(buf)
        t0 = time.perf_counter()
        got += k
        while k:
            k = sock.recv_into(buf)
            got += k
    took = time.perf_counter() - t0
    return {"bytes": got, "seconds": took, "bytes_per_s": got / took}


ROLES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "_serve": role_serve, "_fill": role_fill, "_read": role_read, "_gen": role_gen, "_manager": role_manager,
    "_blast": role_blast, "_drain": role_drain}


def role_main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(prog=f"cluster.py {argv[0]}")
    for flag, typ in (("--uri-file", str), ("--db", str), ("--keys", str), ("--dbpath", str), ("--host", str),
                      ("--edge", int), ("--n", int), ("--epochs", int), ("--seed", int), ("--rank", int),
                      ("--folder", str), ("--port", int), ("--mb", int)):
        ap.add_argument(flag, type=typ)
    ns = ap.parse_args(argv[1:])
    ns.keys = ns.keys or "{}"
    import logging

    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {argv[0]} %(levelname)s %(name)s: %(message)s")
    print(json.dumps(ROLES[argv[0]](ns)), flush=True)
    return 0


# ----------------------------------------------------------------------------------------------
# the run (on the host: it drives the nodes)
# ----------------------------------------------------------------------------------------------
class Bench:
    """One run's cluster, server and temporary folder."""

    def __init__(self, cluster: Any, tmp: Path, log: Path) -> None:
        self.c, self.tmp, self.log = cluster, tmp, log
        self.uri_file = tmp / "uri"
        self.env = {"WIREHEAD_HOME": str(tmp / "home"), "PYTHONUNBUFFERED": "1",
                    "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        self.server: Optional[subprocess.Popen] = None
        self._procs: list[subprocess.Popen] = []

    def argv(self, role: str, **opts: Any) -> list[str]:
        out = [sys.executable, str(Path(__file__).resolve()), role]
        for k, v in opts.items():
            out += [f"--{k.replace('_', '-')}", json.dumps(v) if isinstance(v, dict) else str(v)]
        return out

    def db_opts(self, db: str, **keys: Any) -> dict[str, Any]:
        return {"uri_file": self.uri_file, "db": db, "keys": keys}

    def start(self, node: str, role: str, **opts: Any) -> subprocess.Popen:
        """A role in the background on ``node``; its stdout is piped, its stderr goes to the run's log."""
        err = open(self.log, "ab")
        try:
            proc = self.c.popen_on(node, self.argv(role, **opts), env=self.env, stdout=subprocess.PIPE,
                                   stderr=err, cwd=self.tmp)
        finally:
            err.close()
        self._procs.append(proc)
        return proc

    def result(self, proc: subprocess.Popen, what: str, timeout: float) -> dict[str, Any]:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError(f"{what} took longer than {timeout:.0f} s; log: {self.log}") from None
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{what} exited {proc.returncode}: {self.tail()}")
        return json.loads(lines[-1])

    def on(self, node: str, role: str, timeout: float = 600, **opts: Any) -> dict[str, Any]:
        return self.result(self.start(node, role, **opts), f"{role} on {node}", timeout)

    def tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_bytes()[-n:].decode(errors="replace")
        return ""

    def fill(self, edge: int, n: int, *dbs: dict[str, Any]) -> dict[str, Any]:
        """A generation of ``n`` samples of ``edge``³ in each of ``dbs`` (:meth:`db_opts`), written on the
        server's node; ``{db: {n, stored_bytes, raw_bytes, push_seconds}}``."""
        keys = {d["db"]: {k: v for k, v in d["keys"].items() if k != "SWAP_CAP"} for d in dbs}
        return self.on(SERVER_NODE, "_fill", edge=edge, n=n, uri_file=self.uri_file, keys=keys)

    def serve(self) -> None:
        self.server = self.start(SERVER_NODE, "_serve", dbpath=self.tmp / "db", host=self.c.address(SERVER_NODE),
                                 uri_file=self.uri_file)
        deadline = time.monotonic() + 180
        while not self.uri_file.exists():
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {SERVER_NODE} did not start: {self.tail()}")
            time.sleep(0.2)

    def stop_all(self) -> None:
        """SIGTERM every process this run started on the nodes, then SIGKILL what is left after 30 s (the
        cluster's teardown kills anything in the nodes' namespaces anyway)."""
        live = [p for p in self._procs if p.poll() is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
            if p.stdout is not None:
                p.stdout.close()

    def link_rate(self, node: str, mb: int) -> float:
        """Bytes/s of a plain TCP stream from the server's node to ``node``, through its link as it is now."""
        blaster = self.start(SERVER_NODE, "_blast", host=self.c.address(SERVER_NODE), port=5001, mb=mb)
        got = self.on(node, "_drain", host=self.c.address(SERVER_NODE), port=5001, timeout=300)
        self.result(blaster, "the link probe's sender", 60)
        return float(got["bytes_per_s"])


def bench_reads(b: Bench, p: Profile) -> dict[str, Any]:
    """Remote vs local, and capped to 1 Gbit/s without and with compression, passes interleaved round by round."""
    edge, n = p.read_edge, p.read_n
    plain = b.db_opts("readplain", SWAP_CAP=n, GRACE_SECONDS=3600.0)
    comp = b.db_opts("readcomp", SWAP_CAP=n, GRACE_SECONDS=3600.0, COMPRESSION=RECOMMENDED_COMPRESSION)
    say(f"reads: filling two generations of {n} samples of {edge}³ (plain, compressed) on {SERVER_NODE}")
    filled = b.fill(edge, n, plain, comp)
    fill = {"plain": filled[plain["db"]], "compressed": filled[comp["db"]]}
    rates: dict[str, list[float]] = {k: [] for k in ("local", "remote", "local_compressed", "remote_compressed",
                                                      "capped", "capped_compressed")}
    links: dict[str, list[float]] = {"uncapped": [], "capped": []}
    for r in range(p.read_rounds):
        say(f"reads: round {r + 1} of {p.read_rounds}")
        flip: Callable[[list], list] = (lambda x: x) if r % 2 == 0 else (lambda x: x[::-1])  # no side always first
        links["uncapped"].append(b.link_rate(READ_NODE, p.link_probe_mb))
        for key, node, opts in flip([("local", SERVER_NODE, plain), ("remote", READ_NODE, plain),
                                     ("local_compressed", SERVER_NODE, comp), ("remote_compressed", READ_NODE, comp)]):
            rates[key].append(b.on(node, "_read", epochs=1, seed=r, **opts)["samples_per_s"])
        b.c.cap(READ_NODE, CAP)
        try:
            links["capped"].append(b.link_rate(READ_NODE, p.link_probe_mb))
            for key, opts in flip([("capped", plain), ("capped_compressed", comp)]):
                rates[key].append(b.on(READ_NODE, "_read", epochs=1, seed=r, **opts)["samples_per_s"])
        finally:
            b.c.cap(READ_NODE, None)
    med = {k: median(v) for k, v in rates.items()}
    link = {k: median(v) for k, v in links.items()}
    per_sample = {k: fill[k]["stored_bytes"] / n for k in fill}
    ideal = {"plain": ratio(link["capped"], per_sample["plain"]),
             "compressed": ratio(link["capped"], per_sample["compressed"])}
    return {
        "edge": edge, "n": n, "rounds": p.read_rounds, "cap": CAP, "compression": RECOMMENDED_COMPRESSION,
        "samples_per_s": rates, "median_samples_per_s": med, "link_bytes_per_s": links,
        "stored_bytes_per_sample": per_sample, "raw_bytes_per_sample": edge ** 3 * 5,
        "capped_ideal_samples_per_s": ideal, "fill": fill,
        "remote_read_vs_local": ratio(med["remote"], med["local"]),
        "remote_read_vs_local_compressed": ratio(med["remote_compressed"], med["local_compressed"]),
        "capped_read_vs_link": ratio(med["capped"], ideal["plain"]),
        "capped_read_vs_link_compressed": ratio(med["capped_compressed"], ideal["compressed"]),
        "compression_speedup_capped": ratio(med["capped_compressed"], med["capped"]),
        "compression_speedup_uncapped_remote": ratio(med["remote_compressed"], med["remote"]),
        "capped_link_vs_nominal": ratio(link["capped"], 1e9 / 8),
    }


def _memory_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def bench_commits(b: Bench, p: Profile) -> dict[str, Any]:
    """N fake generators over GENERATOR_NODES, a manager on the server's node; phases of N generators each."""
    want = max(p.generators)
    opts = b.db_opts("commits", SWAP_CAP=p.gen_swap_cap, GRACE_SECONDS=2.0, HEARTBEAT_SECONDS=2.0)
    folder = b.tmp / "gens"
    folder.mkdir()
    manager = b.start(SERVER_NODE, "_manager", **opts)
    procs: dict[int, subprocess.Popen] = {}
    limited = None
    t_start = time.monotonic()
    # start them in batches, watching memory: the machine decides how many it can host
    per_proc = 0
    for rank in range(want):
        if per_proc and _memory_available() < 4 * per_proc + (1 << 30):
            limited = f"memory: {_memory_available() >> 20} MiB available at {rank} processes of ~{per_proc >> 20} MiB"
            break
        node = GENERATOR_NODES[rank % len(GENERATOR_NODES)]
        procs[rank] = b.start(node, "_gen", rank=rank, folder=folder, edge=p.gen_edge, **opts)
        if rank % 8 == 7 or rank == want - 1:  # let a batch come up before the next (2 cores)
            deadline = time.monotonic() + p.gen_start_seconds
            while len(list(folder.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
                if any(pr.poll() is not None for pr in procs.values()):
                    break
                time.sleep(0.2)
            per_proc = max(per_proc, max(_rss(pr.pid) for pr in procs.values()))
            if time.monotonic() > deadline:
                limited = f"start-up: {len(list(folder.glob('ready-*')))} of {len(procs)} ready after " \
                          f"{p.gen_start_seconds:.0f} s"
                break
    ready = sorted(int(f.name.split("-")[1]) for f in folder.glob("ready-*"))
    dead = {r: pr.returncode for r, pr in procs.items() if pr.poll() is not None}
    if dead:
        raise RuntimeError(f"generators exited before the plan: {dead}: {b.tail()}")
    started_s = time.monotonic() - t_start
    # phases: delayed generators at 1 (the baseline), then each N; then instant ones for the server's limit
    ns = [1] + [k for k in p.generators if k <= len(ready)]
    if len(ready) < want and len(ready) not in ns:
        ns.append(len(ready))
    instant = sorted({1, min(8, len(ready)), len(ready)})
    phases = [(k, p.gen_delay) for k in ns] + [(k, 0.0) for k in instant]
    t = time.time() + 3.0
    plan = []
    for k, delay in phases:
        plan.append({"n": k, "delay": delay, "ranks": ready[:k], "t0": t, "t1": t + p.gen_window})
        t += p.gen_window + 2.0
    (folder / "plan.json.tmp").write_text(json.dumps(plan))
    os.replace(folder / "plan.json.tmp", folder / "plan.json")
    say(f"commits: {len(ready)} generators up in {started_s:.0f} s; {len(plan)} phases of {p.gen_window:.0f} s")
    results = [b.result(pr, f"generator {r}", t - time.time() + 120) for r, pr in procs.items()]
    errors = [r["error"] for r in results if r.get("error")]
    if errors:
        raise RuntimeError(f"generators failed: {errors[:5]}")
    manager.send_signal(signal.SIGTERM)
    with contextlib.suppress(Exception):
        b.result(manager, "the manager", 60)
    rows = []
    for i, ph in enumerate(plan):
        commits = sum(r["counts"][i] for r in results)
        rows.append({"generators": ph["n"], "delay": ph["delay"], "commits": commits,
                     "commits_per_s": commits / p.gen_window})
    one = rows[0]["commits_per_s"]
    limit = max(r["commits_per_s"] for r in rows if r["delay"] == 0.0)
    for r in rows:
        if r["delay"]:
            r["vs_linear"] = ratio(r["commits_per_s"], r["generators"] * one)
            r["vs_ideal"] = ratio(r["commits_per_s"], min(r["generators"] * one, limit))
    measured = [r for r in rows if r["delay"] and r["generators"] > 1]
    return {
        "generators_asked": want, "generators_started": len(ready), "limited_by": limited,
        "start_seconds": started_s, "rss_per_generator": per_proc, "gen_delay": p.gen_delay,
        "edge": p.gen_edge, "swap_cap": p.gen_swap_cap, "window_seconds": p.gen_window,
        "one_generator_commits_per_s": one, "server_limit_commits_per_s": limit, "phases": rows,
        "commit_rate_vs_linear": min((r["vs_linear"] for r in measured), default=None),
        "commit_rate_vs_ideal": min((r["vs_ideal"] for r in measured), default=None),
    }


def bench_node_bytes(b: Bench, p: Profile) -> dict[str, Any]:
    """Two trainer nodes read one generation; bytes on each node's link / the generation's stored bytes."""
    out: dict[str, Any] = {"edge": p.node_edge, "n": p.node_n, "trainers_per_node": p.node_trainers,
                           "epochs": p.node_epochs, "nodes": list(TRAINER_NODES)}
    for tag, keys in (("node_cache", {}), ("no_node_cache", {"NODE_CACHE_MB": 0})):
        opts = b.db_opts(f"node{tag[:2]}", SWAP_CAP=p.node_n, GRACE_SECONDS=3600.0, **keys)
        fill = b.fill(p.node_edge, p.node_n, opts)[opts["db"]]
        before = {node: b.c.link_bytes(node) for node in TRAINER_NODES}
        procs = [b.start(node, "_read", epochs=p.node_epochs, seed=k, **opts)
                 for node in TRAINER_NODES for k in range(p.node_trainers)]
        reads = [b.result(pr, "a trainer", 600) for pr in procs]
        after = {node: b.c.link_bytes(node) for node in TRAINER_NODES}
        sent = {node: after[node]["to_node"] - before[node]["to_node"] for node in TRAINER_NODES}
        out[tag] = {"generation_stored_bytes": fill["stored_bytes"], "bytes_to_node": sent,
                    "vs_generation": {node: ratio(v, fill["stored_bytes"]) for node, v in sent.items()},
                    "samples_read": sum(r["n"] * r["epochs"] for r in reads)}
    out["node_bytes_vs_generation"] = max(out["node_cache"]["vs_generation"].values())
    out["node_bytes_vs_generation_without_node_cache"] = max(out["no_node_cache"]["vs_generation"].values())
    return out


SECTIONS = (("reads", bench_reads), ("commits", bench_commits), ("node_bytes", bench_node_bytes))
HEADLINE = {"remote_read_vs_local": "reads", "capped_read_vs_link": "reads",
            "capped_read_vs_link_compressed": "reads", "compression_speedup_capped": "reads",
            "commit_rate_vs_linear": "commits", "commit_rate_vs_ideal": "commits",
            "node_bytes_vs_generation": "node_bytes"}


def run(p: Profile, sections: Sequence[str] = tuple(s for s, _ in SECTIONS)) -> dict[str, Any]:
    """Build the cluster, run ``sections`` with profile ``p``, tear everything down; return the report."""
    from tests.cluster.harness import Cluster

    report: dict[str, Any] = {"profile": asdict(p), "raw": {}, "errors": {}, "section_seconds": {},
                              "machine": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()}}
    t_run = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="wirehead-bench-cluster-"))
    os.chmod(tmp, 0o755)
    cluster = Cluster(4, prefix="whbn", subnet="10.79.0", shm_mb=max(2048, 2 * p.read_n * p.read_edge ** 3 * 5 >> 20))
    try:
        t0 = time.perf_counter()
        cluster.up()
        report["cluster_up_seconds"] = time.perf_counter() - t0
        b = Bench(cluster, tmp, tmp / "nodes.log")
        try:
            b.serve()
            for name, fn in SECTIONS:
                if name not in sections:
                    continue
                say(f"{name} ...")
                t0 = time.perf_counter()
                try:
                    report["raw"][name] = fn(b, p)
                except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
                    report["errors"][name] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]
                    say(f"{name} FAILED: {type(e).__name__}: {e}")
                finally:
                    report["section_seconds"][name] = round(time.perf_counter() - t0, 1)
        finally:
            b.stop_all()
    finally:
        cluster.down()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    for key, section in HEADLINE.items():
        report[key] = report["raw"].get(section, {}).get(key)
    report["machine"]["load_at_end"] = os.getloadavg()
    report["seconds"] = time.perf_counter() - t_run
    return report


def _detail(report: dict[str, Any], key: str) -> str:
    raw = report["raw"]
    if key.startswith(("remote", "capped", "compression")) and "reads" in raw:
        r = raw["reads"]
        m, e = r["median_samples_per_s"], r["edge"]
        mib = {k: v / 2 ** 20 for k, v in r["stored_bytes_per_sample"].items()}
        link = {k: median(v) for k, v in r["link_bytes_per_s"].items()}
        return {
            "remote_read_vs_local": f"{e}³: n2 {m['remote']:.2f}/s vs n1 {m['local']:.2f}/s; compressed "
                                    f"{m['remote_compressed']:.2f} vs {m['local_compressed']:.2f}/s",
            "capped_read_vs_link": f"{m['capped']:.2f}/s vs ideal {r['capped_ideal_samples_per_s']['plain']:.2f}/s "
                                   f"({link['capped'] / 1e6:.0f} MB/s plain TCP through the cap, "
                                   f"{mib['plain']:.1f} MiB stored a sample)",
            "capped_read_vs_link_compressed": f"{m['capped_compressed']:.2f}/s vs ideal "
                                              f"{r['capped_ideal_samples_per_s']['compressed']:.2f}/s "
                                              f"({mib['compressed']:.1f} MiB stored a sample)",
            "compression_speedup_capped": f"{m['capped_compressed']:.2f} vs {m['capped']:.2f}/s; uncapped: "
                                          f"{r['compression_speedup_uncapped_remote']:.2f}x",
        }[key]
    if key.startswith("commit") and "commits" in raw:
        c = raw["commits"]
        cells = ", ".join(f"{ph['generators']}: {ph['commits_per_s']:.1f}/s ({ph['vs_linear']:.2f})"
                          for ph in c["phases"] if ph["delay"] and ph["generators"] > 1)
        if key == "commit_rate_vs_ideal":
            return (f"server's limit {c['server_limit_commits_per_s']:.1f}/s (instant generators); one generator "
                    f"{c['one_generator_commits_per_s']:.2f}/s")
        return (f"{c['generators_started']} of {c['generators_asked']} started"
                + (f" (limited by {c['limited_by']})" if c["limited_by"] else "")
                + f"; {c['gen_delay']} s a sample, {c['edge']}³; per N: {cells}")
    if key == "node_bytes_vs_generation" and "node_bytes" in raw:
        d = raw["node_bytes"]
        per = ", ".join(f"{k} {v:.3f}" for k, v in d["node_cache"]["vs_generation"].items())
        return (f"{per} of {d['node_cache']['generation_stored_bytes'] / 2 ** 20:.0f} MiB ({d['edge']}³ x "
                f"{d['n']}); NODE_CACHE_MB 0: {d['node_bytes_vs_generation_without_node_cache']:.2f}")
    return ""


def format_table(report: dict[str, Any]) -> str:
    """Markdown rows (figure, what it compares, result with the numbers behind it), as benchmarks/table.py."""
    lines = ["| figure | what it compares | result |", "|---|---|---|"]
    for key in HEADLINE:
        if report.get(key) is None and HEADLINE[key] not in report["errors"]:
            continue
        detail = _detail(report, key) if report.get(key) is not None else "n/a (see errors)"
        lines.append(f"| `{key}` | {COMPARES[key]} | {fmt(report.get(key))} ({detail}) |")
    lines.append(f"\n({report['profile']['name']} run, {report['seconds']:.0f} s, {report['machine']['cpus']} "
                 f"CPUs, load {report['machine']['load_at_start'][0]:.1f} at start"
                 + (f"; failed sections: {', '.join(report['errors'])}" if report["errors"] else "") + ")")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick profile (a few minutes)")
    ap.add_argument("--profile", choices=sorted(PROFILES), help="a profile by name (default: normal)")
    ap.add_argument("--only", action="append", choices=[s for s, _ in SECTIONS], help="run only this section")
    ap.add_argument("--json", help="write the report here")
    return ap.parse_args(argv)


def _interrupted(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so the cluster is torn down."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ROLES:
        return role_main(argv)
    args = parse_args(argv)
    from tests.cluster.harness import unavailable

    reason = unavailable()
    if reason:
        print(f"cannot build a cluster here: {reason}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    p = PROFILES[args.profile or ("quick" if args.quick else "normal")]
    try:
        report = run(p, args.only or [s for s, _ in SECTIONS])
    except KeyboardInterrupt as e:
        print(f"interrupted ({e or 'Ctrl-C'}); the cluster and everything on it were torn down", file=sys.stderr)
        return 130
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    print(format_table(report))
    for name, err in report["errors"].items():
        print(f"\n{name} failed:\n{err}", file=sys.stderr)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
