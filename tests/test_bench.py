"""Smoke test of the benchmark: every section runs and the JSON holds every figure with a sane value.

No timing assertions: the smoke profile uses tiny volumes and counts, so its figures mean nothing.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the benchmark is not in the package
import bench  # noqa: E402

pytestmark = pytest.mark.slow  # slow: real processes, kernels or browsers for long; `-m "not slow"` skips


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_parse_args_modes() -> None:
    args = bench.parse_args(["--quick", "--json", "x.json", "--uri", "mongodb://127.0.0.1:1/"])
    assert args.quick and not args.full and args.json == "x.json"
    with pytest.raises(SystemExit):
        bench.parse_args(["--quick", "--full"])


def test_smoke_run_writes_every_key(mongo_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    code = bench.main(["--quick", "--smoke", "--uri", mongo_uri, "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["errors"] == {}, report["errors"]
    assert code == 0
    for key in bench.HEADLINE_KEYS:
        assert key in report, key
        assert _number(report[key]), (key, report[key])
    for key in ("write_vs_raw", "read_cold_vs_raw", "read_warm_vs_disk", "read_loader_vs_disk",
                "swap_latency_ratio", "dataset_peak_rss_vs_generation_bytes", "reuse_ratio"):
        assert report[key] > 0, (key, report[key])
    assert 0 <= report["trainer_wait_fraction"] <= 1
    # the machine's state beside the figures: whether it hands freed memory back to a host (None: it does not)
    assert "free_page_reporting_order" in report["machine"]
    assert report["failed_reads_during_swaps"] >= 0
    assert 0 < report["yield"] <= 1
    assert report["raw"]["yield"]["served_twice"] == 0  # invariant 2, whatever the speed
    assert report["raw"]["swaps_under_read"]["failed"] == 0  # invariant 3: no read fails because of a swap
    assert set(report["met"]) == {k for k, (op, _, _) in bench.TARGETS.items() if op != "info"}
    read = report["raw"]["read_16"]  # the loader is measured per worker count, batched (collation included)
    assert read["read_loader_w2_vs_disk"] > 0 and read["read_loader_vs_disk"] == read["read_loader_w2_vs_disk"]
    for side in ("loader_w2", "disk_loader_w2"):  # what the loader was asked for and what its batches were
        assert read[f"{side}_batch"]["image_shape"] == [2, 16, 16, 16], (side, read[f"{side}_batch"])
        assert read[f"{side}_batch"]["collated"] is True, (side, read[f"{side}_batch"])
    assert read["loader_w2_config"]["batch_size"] == 2 and read["loader_w2_config"]["shuffle"] is True
    assert read["loader_w2_config"]["num_workers"] == 2
    # the node: two trainer processes with DataLoader workers read the whole generation, each epoch, in batches
    node = report["raw"]["node"]
    assert node["trainers"] == 2 and node["workers"] == 2
    assert node["samples_read"] == node["trainers"] * node["epochs"] * node["n"]
    assert node["batch_shapes"] == [[2, 16, 16, 16]]
    assert node["server_bytes_sent"] >= node["generation_stored_bytes"]  # the relay saw the generation pass
    overlap = report["raw"]["write_overlap_16"]  # run() wrote every sample it was asked for
    assert overlap["k"] > 0 and overlap["run_vs_serial"] > 0
    ahead = report["raw"]["ahead"]  # a worker-less trainer streamed every sample, with and without read-ahead
    assert 0 <= ahead["read_ahead_wait_fraction"] <= 1 and 0 <= ahead["plain_wait_fraction"] <= 1
    assert ahead["plain_seconds_per_epoch"] > 0 and ahead["read_ahead_seconds_per_epoch"] > 0
    stream = report["raw"]["stream"]
    assert stream["reads"] == stream["samples"] and stream["cache_mib"] >= 1
    write = report["raw"]["write_16"]
    assert write["stored_bytes_per_sample"] >= write["raw_bytes_per_sample"]
    assert write["stored_bytes_per_sample_compressed"] > 0
    # the durable baseline beside the plain one: raw insert_many with j: true, as a push's commit is journaled
    assert write["raw_insert_journaled_samples_per_s"] > 0 and write["write_vs_raw_journaled"] > 0
    table = capsys.readouterr().out
    for key in bench.HEADLINE_KEYS:
        assert key in table
    import table as readme_table  # benchmarks/table.py: the README's rows from the JSON

    rows = readme_table.rows(report)
    assert len(rows) == len(bench.HEADLINE_KEYS) and all(r.count(" | ") == 4 for r in rows)
    assert any("`read_loader_vs_disk`" in r and "2 workers" in r for r in rows)
    # every database the run made was dropped
    import pymongo

    client = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    try:
        assert not [n for n in client.list_database_names() if n.startswith("bench_")]
    finally:
        client.close()


def test_the_loader_and_snapshot_modules_run_and_report_every_cell(mongo_uri: str, tmp_path: Path) -> None:
    import loader
    import snapshot_cost

    out = tmp_path / "loader.json"
    assert loader.main(["--edge", "8", "--n", "4", "--workers", "0,2", "--runs", "2", "--epochs", "1",
                        "--uri", mongo_uri, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert sorted(report["cells"]) == ["w0", "w2_fork", "w2_spawn_persistent"]
    assert "free_page_reporting_order" in report  # the machine's state beside the figures it may explain
    for cell in report["cells"].values():
        assert len(cell["ratios"]) == 2 and all(_number(r) and r > 0 for r in cell["ratios"])
        assert cell["min"] <= cell["max"]
    out = tmp_path / "snap.json"
    assert snapshot_cost.main(["--caps", "4,8", "--uri", mongo_uri, "--json", str(out)]) == 0
    snap = json.loads(out.read_text())
    assert _number(snap["snapshot_seconds_ratio"]) and all(_number(v) for v in snap["cap_8"].values())


def test_free_page_reporting_is_read_from_the_balloon_device_and_the_kernel(tmp_path: Path) -> None:
    from bench_common import free_page_reporting

    sysfs, procfs = tmp_path / "sys", tmp_path / "proc"
    balloon = sysfs / "bus" / "virtio" / "drivers" / "virtio_balloon" / "virtio0"
    balloon.mkdir(parents=True)
    params = sysfs / "module" / "page_reporting" / "parameters"
    params.mkdir(parents=True)
    procfs.mkdir()
    (procfs / "buddyinfo").write_text("Node 0, zone   Normal " + " ".join(["7"] * 11) + "\n")  # orders 0-10
    (params / "page_reporting_order").write_text("9\n")
    (balloon / "features").write_text("0110010" + "0" * 57 + "\n")  # bit 5: free-page reporting
    assert free_page_reporting(str(sysfs), str(procfs)) == 9
    (params / "page_reporting_order").write_text("11\n")  # above the largest order kept: nothing is reported
    assert free_page_reporting(str(sysfs), str(procfs)) is None
    (params / "page_reporting_order").write_text("9\n")
    (balloon / "features").write_text("0110000" + "0" * 57 + "\n")  # a balloon without the feature
    assert free_page_reporting(str(sysfs), str(procfs)) is None
    assert free_page_reporting(str(tmp_path / "nothing"), str(procfs)) is None  # no balloon device (bare metal)


def test_the_io_profile_reports_both_sides_and_where_the_time_went(mongo_uri: str, tmp_path: Path) -> None:
    import profile_io  # benchmarks/profile_io.py: a cold read and a write against raw find / insert_many

    out = tmp_path / "profile.json"
    assert profile_io.main(["--edge", "8", "--n", "3", "--rounds", "1", "--uri", mongo_uri, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    write, read = report["write"], report["cold_read"]
    for key in ("raw_ms", "raw_journaled_ms", "push_ms", "push_vs_raw", "push_vs_raw_journaled"):
        assert _number(write[key]) and write[key] > 0, (key, write[key])
    for key in ("raw_find_ms", "cold_ms", "cold_vs_raw"):
        assert _number(read[key]) and read[key] > 0, (key, read[key])
    # the profile names wirehead's own calls: a push is its put_sample and commit, a cold read its dataset's read
    assert any(r["where"].endswith("generator.py:push") for r in write["profile"]["wirehead"])
    assert any(r["where"].endswith("dataset.py:__getitem__") for r in read["profile"]["wirehead"])
    # every sample read once, by a fresh dataset: the timed round, then the profiled one (the profiler slows the
    # reading thread, not the server: a profiled round is not compared with raw find)
    assert [(s["reads"], s["profiled"]) for s in read["reader_stats"]] == [(3, False), (3, True)]


def test_the_gpu_benchmark_runs_its_three_legs_on_a_cpu(mongo_uri: str, tmp_path: Path) -> None:
    import torch

    import gpu  # benchmarks/gpu.py: brains made on a device feeding a trainer on it, on the fly and through wirehead

    pytest.importorskip("torchio")
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--edge", "16", "--mm", "8", "--generators", "1", "--workers", "1",
                     "--cap", "2", "--seconds", "1", "--n", "1", "--uri", mongo_uri, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["machine"]["device"] == "cpu"
    assert _number(report["brain_seconds"]) and _number(report["step_seconds"]) and _number(report["speedup"])
    for leg in ("on_the_fly", "wirehead"):
        assert report[leg]["steps"] >= 3 and 0 <= report[leg]["wait_fraction"] <= 1
    cached = report["wirehead"]
    assert cached["reads"] >= 3 and cached["generations"] >= 1 and cached["brains_committed"] >= 1
    assert _number(cached["first_generation_seconds"])
    with pytest.raises(SystemExit):
        gpu.main(["--edge", "30"])  # not a multiple of 4: the U-Net halves it twice
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):  # said at once, before any work
            gpu.main(["--device", "cuda"])
