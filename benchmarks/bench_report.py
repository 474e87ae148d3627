"""The benchmark's headline figures: their targets, and the table ``bench.py`` prints and ``table.py`` turns
into the README's rows (from the report's ``raw`` figures of each family)."""

from __future__ import annotations

from typing import Any, Optional

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


def is_met(key: str, value: Any) -> Optional[bool]:
    op, target, _ = TARGETS[key]
    if value is None:
        return None
    return {">=": value >= target, "<=": value <= target, "<": value < target, "==": value == target}.get(op)


def fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def detail(report: dict[str, Any], key: str) -> str:
    raw = report["raw"]
    if key in ("write_vs_raw",):
        text = "; ".join(f"{e}^3: push {w['push_samples_per_s']:.1f}/s vs raw {w['raw_insert_samples_per_s']:.1f}/s"
                         + (f" (raw with j: true {w['raw_insert_journaled_samples_per_s']:.1f}/s)"
                            if w.get("raw_insert_journaled_samples_per_s") else "")
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
        value = fmt(report.get(key))
        if report.get(key) is None and key in PROTOCOL_KEYS and not report.get("profile", {}).get(
                "protocol_sections", True):
            value = "not run"  # this profile measures the sizes, not the protocol
        rows.append((key, value, "-" if op == "info" else f"{op} {target:g}",
                     "-" if op == "info" else {True: "MET", False: "NOT MET", None: "n/a"}[met],
                     detail(report, key)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
        if i == 0:
            lines.append("-" * (sum(widths) + 8 + 10))
    if report.get("errors"):
        lines.append("sections that failed: " + ", ".join(report["errors"]))
    return "\n".join(lines)
