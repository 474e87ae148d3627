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

The figure families live in one module each: ``bench_io.py`` (write, read), ``bench_stream.py`` (memory,
streaming, read-ahead), ``bench_node.py`` (node), ``bench_swaps.py`` (swap, yield), ``bench_e2e.py`` (end to
end), over ``bench_common.py`` (profiles, databases, samples, processes) and ``loader.py`` (the DataLoader cell);
``bench_report.py`` holds the targets and the table.  This module runs them and is the command line.

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
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Optional

HERE = Path(__file__).resolve().parent
sys.path[:0] = [p for p in (str(HERE), str(HERE.parent)) if p not in sys.path]  # the families; wirehead from a checkout

import numpy as np  # noqa: E402

from bench_common import PROFILES, Dbs, Profile, free_page_reporting, say, synth_samples, sample_bytes  # noqa: E402
from bench_e2e import bench_end_to_end  # noqa: E402
from bench_io import bench_read, bench_write, bench_write_overlap  # noqa: E402
from bench_node import bench_node  # noqa: E402
from bench_report import HEADLINE_KEYS, PROTOCOL_KEYS, TARGETS, format_table, is_met  # noqa: E402
from bench_stream import bench_read_ahead, bench_rss, bench_stream  # noqa: E402
from bench_swaps import bench_swap_latency, bench_swaps_under_read, bench_yield  # noqa: E402
from wirehead.server import LocalMongo  # noqa: E402

__all__ = ["main", "parse_args", "run", "format_table", "TARGETS", "HEADLINE_KEYS", "PROTOCOL_KEYS", "Profile",
           "PROFILES"]


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
def _section(report: dict[str, Any], name: str, fn: Callable[[], Any]) -> Any:
    say(f"{name} ...")
    t0 = time.perf_counter()
    try:
        value = fn()
        report["raw"][name] = value
        return value
    except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
        report["errors"][name] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]
        say(f"{name} FAILED: {type(e).__name__}: {e}")
        return None
    finally:
        report["section_seconds"][name] = round(time.perf_counter() - t0, 2)


def run(uri: str, profile: Profile) -> dict[str, Any]:
    """Run every section against ``uri`` with ``profile``; return the report (headline keys + raw figures)."""
    report: dict[str, Any] = {"raw": {}, "errors": {}, "section_seconds": {}}
    dbs = Dbs(uri)
    tmp = Path(tempfile.mkdtemp(prefix="wirehead-bench-"))
    try:
        writes, reads = {}, {}
        top_samples: list = []
        for edge in profile.sizes:
            n = profile.write_n[edge]
            samples = synth_samples(edge, n, unique=4 if edge >= 256 else 8)  # 4 x 80 MiB at 256^3
            w = _section(report, f"write_{edge}", lambda: bench_write(uri, dbs, edge, n, samples))
            if w is None:
                continue
            writes[edge] = w
            if edge == max(profile.sizes):
                _section(report, f"write_overlap_{edge}", lambda: bench_write_overlap(
                    uri, dbs, edge, samples, 1.0 / w["push_compressed_samples_per_s"], profile.overlap_k))
            cache = profile.loader_cache_samples.get(edge)
            cache_mb = max(1, -(-cache * sample_bytes(edge) // 2 ** 20)) if cache else None
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
        top_samples = []  # the arrays are not needed past here
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
    report["met"] = {k: is_met(k, report[k]) for k in HEADLINE_KEYS if TARGETS[k][0] != "info"}
    return report


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
            server = LocalMongo(engine=args.engine).start()
            uri, engine = server.uri, server.engine
        say(f"profile {name}, server {engine} ({'--uri' if args.uri else 'private, 127.0.0.1'})")
        report = run(uri, profile)
    finally:
        if server is not None:
            server.stop()
    report["profile"] = asdict(profile)
    report["mode"] = name
    report["engine"] = engine
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                         "cpus": os.cpu_count(), "free_page_reporting_order": free_page_reporting()}
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
