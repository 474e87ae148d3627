"""Where a cold read and a write spend their time, against raw pymongo on the same server and bytes.

``python benchmarks/profile_io.py [--edge 128] [--n 12] [--rounds 3] [--uri URI] [--json out.json]``

One run, one server (a private :class:`~wirehead.server.LocalMongo` on 127.0.0.1 unless ``--uri``), the same
synth samples (float32 image + uint8 label of ``edge``^3):

* **write**: per sample, alternating, raw ``insert_many`` of the sample's bytes (the benchmark's baseline,
  :func:`bench_io._raw_docs`), the same ``insert_many`` with ``j: true`` (durable when it returns, as a commit
  is), and :meth:`WireheadGenerator.push`; every other push under :mod:`cProfile`.
* **cold read**: per round, raw ``find`` of every sample's chunk documents, then a fresh ``MongoheadDataset``
  reading every sample once (its first read of the generation); one more round of each under :mod:`cProfile`;
  what the reader's tiers did in each round (``Reader.stats()``: fetches, node-cache hits and waits; what the
  node cache held before).

Reported: ms per sample of each side and their ratios, timed without the profiler (it slows the reading thread,
not the server or a background fetch, so a profiled side is not comparable), and the profile of the wirehead
side in ms per profiled sample: the functions with the most own time, and wirehead's functions by cumulative
time (the main thread only: a background fetch shows as the time the reader waits for it).  Ratios are what
to compare; this machine's absolute times move with its load.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent)) if p not in sys.path]

import numpy as np  # noqa: E402
import pymongo  # noqa: E402
from pymongo.write_concern import WriteConcern  # noqa: E402

from bench_common import Dbs, bench_config, synth_samples  # noqa: E402
from bench_io import _raw_docs  # noqa: E402
from wirehead.dataset import MongoheadDataset  # noqa: E402
from wirehead.generator import WireheadGenerator  # noqa: E402
from wirehead.server import LocalMongo  # noqa: E402

#: rows of each profile table
TOP = 12


def _where(key: tuple[str, int, str]) -> str:
    """``module.py:function`` (wirehead's with its package path), or the builtin's name."""
    path, _, func = key
    if path == "~":
        return func
    parts = Path(path).parts
    if "wirehead" in parts:
        return "/".join(parts[len(parts) - parts[::-1].index("wirehead") - 1:]) + f":{func}"
    return f"{Path(path).name}:{func}"


def profile_rows(prof: cProfile.Profile, samples: int) -> dict[str, list[dict[str, Any]]]:
    """The profile in ms per sample: ``own`` (the TOP functions by own time) and ``wirehead`` (wirehead's
    functions by cumulative time)."""
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = [{"where": _where(k), "calls": v[1] / samples, "own_ms": v[2] / samples * 1e3,
             "cumulative_ms": v[3] / samples * 1e3, "wirehead": "wirehead/" in k[0] and ".venv" not in k[0]}
            for k, v in stats.items()]
    own = sorted(rows, key=lambda r: -r["own_ms"])[:TOP]
    ours = sorted((r for r in rows if r["wirehead"]), key=lambda r: -r["cumulative_ms"])[:TOP]
    return {"own": own, "wirehead": ours}


def profile_write(uri: str, dbs: Dbs, edge: int, n: int, samples: list) -> dict[str, Any]:
    """ms per sample of raw insert_many, raw insert_many with ``j: true``, and push (profiled), alternating."""
    db, db_raw = dbs.new(f"pw{edge}"), dbs.new(f"pr{edge}")
    cfg = bench_config(uri, db, SWAP_CAP=n, GRACE_SECONDS=600.0)
    gen = WireheadGenerator(None, config=cfg, uri=uri, name="profile-write")
    client = pymongo.MongoClient(uri)
    raw = client[db_raw]["chunks"]
    journaled = raw.with_options(write_concern=WriteConcern(j=True))
    raw.create_index([("sid", 1), ("i", 1)])
    prof = cProfile.Profile()
    took = {"raw": 0.0, "raw_journaled": 0.0, "push": 0.0}
    timed = profiled = 0
    try:
        gen.store.ensure_schema()
        raw.insert_many(_raw_docs(samples[0], cfg.chunk_bytes, "warm"))  # connections, index: not timed
        for i in range(n):
            t0 = time.perf_counter()
            raw.insert_many(_raw_docs(samples[i], cfg.chunk_bytes, f"r{i}"), ordered=False)
            t1 = time.perf_counter()
            journaled.insert_many(_raw_docs(samples[i], cfg.chunk_bytes, f"j{i}"), ordered=False)
            t2 = time.perf_counter()
            if i % 2:  # profiled: its time is not compared
                prof.enable()
                gen.push(samples[i])
                prof.disable()
                profiled += 1
                continue
            gen.push(samples[i])
            t3 = time.perf_counter()
            timed += 1
            took["raw"] += t1 - t0
            took["raw_journaled"] += t2 - t1
            took["push"] += t3 - t2
    finally:
        gen.close()
        gen.store.close()
        client.close()
        dbs.drop(db_raw)
    ms = {f"{k}_ms": v / timed * 1e3 for k, v in took.items()}
    return {"edge": edge, "n": n, "db": db, **ms, "push_vs_raw": took["raw"] / took["push"],
            "push_vs_raw_journaled": took["raw_journaled"] / took["push"], "profile": profile_rows(prof, profiled)}


def profile_cold_read(uri: str, db: str, edge: int, n: int, rounds: int) -> dict[str, Any]:
    """ms per sample of raw find and of a fresh dataset's first read of each sample (profiled), per round."""
    cfg = bench_config(uri, db, SWAP_CAP=n, GRACE_SECONDS=600.0)
    client = pymongo.MongoClient(uri)
    chunks = client[cfg.dbname][cfg.write_collection]
    with MongoheadDataset(config=cfg, uri=uri) as probe:
        members = list(probe.reader.current().members)
    rng = np.random.default_rng(edge)
    prof = cProfile.Profile()
    took = {"raw_find": 0.0, "cold": 0.0}
    tiers: list[dict[str, Any]] = []
    try:
        list(chunks.find({"sid": members[0]}, {"data": 1, "i": 1}))  # the connection: not timed
        for r in range(rounds + 1):
            profiling = r == rounds  # the last round is profiled, not compared
            t0 = time.perf_counter()
            for i in rng.permutation(n):
                list(chunks.find({"sid": members[i]}, {"data": 1, "i": 1}))
            if not profiling:
                took["raw_find"] += time.perf_counter() - t0
            with MongoheadDataset(config=cfg, uri=uri) as ds:
                ds.reader.current()  # the generation first: cold = the samples, not the connection
                held = ds.reader.stats().get("node_ready")
                t0 = time.perf_counter()
                if profiling:
                    prof.enable()
                for i in rng.permutation(n):
                    ds[int(i)]
                prof.disable()
                if not profiling:
                    took["cold"] += time.perf_counter() - t0
                tiers.append({"node_ready_before": held, "profiled": profiling, **ds.reader.stats()})
    finally:
        client.close()
    reads = n * rounds
    return {"edge": edge, "n": n, "rounds": rounds, **{f"{k}_ms": v / reads * 1e3 for k, v in took.items()},
            "cold_vs_raw": took["raw_find"] / took["cold"], "reader_stats": tiers, "profile": profile_rows(prof, n)}


def _print(title: str, figures: dict[str, Any]) -> None:
    print(title + ": " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()
                                   if isinstance(v, float)), flush=True)
    for stats in figures.get("reader_stats", []):
        print("  reader: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    for table, rows in figures["profile"].items():
        print(f"  {'by own time' if table == 'own' else 'wirehead, cumulative'} (ms per sample):")
        for r in rows:
            print(f"    {r['own_ms'] if table == 'own' else r['cumulative_ms']:8.1f}  {r['calls']:6.2f} calls  "
                  f"{r['where']}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge", type=int, default=128)
    parser.add_argument("--n", type=int, default=12, help="samples written and read (at least 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="timed cold-read rounds (a fresh dataset each), then one profiled")
    parser.add_argument("--uri", help="profile against this server (default: a private local server)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error(f"--n {args.n}: at least 2 samples (every other push is profiled, the rest timed)")
    server = None
    try:
        uri = args.uri or (server := LocalMongo().start()).uri
        dbs = Dbs(uri)
        try:
            samples = synth_samples(args.edge, args.n)
            write = profile_write(uri, dbs, args.edge, args.n, samples)
            read = profile_cold_read(uri, write["db"], args.edge, args.n, args.rounds)
        finally:
            dbs.drop_all()
    finally:
        if server is not None:
            server.stop()
    _print(f"write {args.edge}^3", write)
    _print(f"cold read {args.edge}^3", read)
    if args.json:
        Path(args.json).write_text(json.dumps({"write": write, "cold_read": read}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
