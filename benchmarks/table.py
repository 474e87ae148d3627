"""Print the README's benchmark table (markdown rows) from the JSON of one or more benchmark runs.

    python benchmarks/run.py --quick --json quick.json
    python benchmarks/run.py --profile 256 --json b256.json
    python benchmarks/table.py quick.json b256.json        # paste under "## Benchmarks" in README.md

Each run gives one row per figure it measured (a figure a profile does not run is left out); a run of the
256 profile labels its rows "(256³)".  The columns: the figure (JSON key), what it compares, the target,
the result with the numbers behind it, and whether the target is met.  See benchmarks/README.md for the
exact definition of each figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_report import HEADLINE_KEYS, TARGETS, detail, fmt  # noqa: E402

#: what each figure compares, for the README (the benchmark's TARGETS say it in one line too)
COMPARES = {
    "write_vs_raw": "committed samples/s through `WireheadGenerator.push` / raw `insert_many` of the same bytes",
    "read_cold_vs_raw": "first read of a generation through `MongoheadDataset` / raw `find` of the same bytes",
    "read_warm_vs_disk": "repeated reads (generation in the cache) / `np.load` of the same arrays from `.npy` files",
    "read_loader_vs_disk": "`DataLoader(batch_size=2, shuffle=True)` (collation included) / the same loader over "
                           "`.npy` files; worst of 2 and 4 workers (and sizes)",
    "swap_latency_ratio": "swap (state change + a reader's switch) at `SWAP_CAP` 1000 / at 10",
    "failed_reads_during_swaps": "reads that failed or took > 100 ms while 20 swaps happened",
    "yield": "samples served in some read generation / samples produced, 4 generator processes",
    "trainer_wait_fraction": "time a 50 ms training step waits for data, generators at 500 ms/sample",
    "dataset_peak_rss_vs_generation_bytes": "a reading process's peak RSS growth / one generation's bytes "
                                            "(the generation fits its cache)",
    "stream_peak_rss_vs_cache": "peak RSS growth of a reader streaming a generation larger than its caches / "
                                "their size (READER_CACHE_MB + NODE_CACHE_MB)",
    "node_bytes_sent_vs_generation": "bytes the server sent to one node (2 trainer processes, DataLoader workers) "
                                     "over 2 epochs / one generation's stored bytes",
    "node_memory_vs_generation": "memory the node's workers and trainers gained reading a generation that fits, "
                                 "shared memory included / its bytes",
    "reuse_ratio": "reads per sample of the read generations in the end-to-end run",
    "read_ahead_wait_fraction": "time a worker-less trainer waits for batches streaming a generation larger than "
                                "its caches, with `ReadAheadSampler` (against torch's own batching)",
}


def _target(key: str) -> str:
    op, value, _ = TARGETS[key]
    if op == "info":
        return "–"
    sign = {">=": "≥ ", "<=": "≤ ", "<": "< ", "==": ""}[op]
    return f"{sign}{value:g}"


def rows(report: dict[str, Any], label: Optional[str] = None) -> list[str]:
    """Markdown rows for the figures ``report`` (a benchmark JSON) measured."""
    out = []
    for key in HEADLINE_KEYS:
        value = report.get(key)
        if value is None and key not in report.get("errors", {}):
            if not any(key in (v or {}) for v in report.get("raw", {}).values()):
                continue  # not measured by this profile
        met = report.get("met", {}).get(key)
        text = detail(report, key).replace("^3", "³").replace("|", "/")
        result = fmt(value) + (f" ({text})" if text else "")
        name = f"`{key}`" + (f" ({label})" if label else "")
        out.append(f"| {name} | {COMPARES.get(key, TARGETS[key][2])} | {_target(key)} | {result} | "
                   f"{'–' if TARGETS[key][0] == 'info' else {True: 'yes', False: 'no', None: 'n/a'}[met]} |")
    return out


def _reporting(order: Optional[int]) -> str:
    """The footnote's words for a machine that hands freed memory back to its host (None: one that does not)."""
    return "" if order is None else f", freed memory handed back to the host (free-page reporting, 2^{order} pages)"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="JSON files written by `benchmarks/run.py --json`")
    args = ap.parse_args(argv)
    print("| figure | what it compares | target | result | met |")
    print("|---|---|---|---|---|")
    for path in args.json:
        report = json.loads(Path(path).read_text())
        label = "256³" if report.get("mode") == "256" else None
        for row in rows(report, label):
            print(row)
    for path in args.json:
        report = json.loads(Path(path).read_text())
        print(f"\n({Path(path).name}: {report.get('mode')} run, {report.get('engine')} server, "
              f"{report.get('seconds', 0):.0f} s, {report.get('machine', {}).get('cpus')} CPUs"
              + _reporting(report.get("machine", {}).get("free_page_reporting_order"))
              + (f"; failed sections: {', '.join(report['errors'])}" if report.get("errors") else "") + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
