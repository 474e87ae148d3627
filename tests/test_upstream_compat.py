"""Upstream wirehead 0.9.x: scripts in its style run unchanged, and its logger / command line work.

One cache is filled once per module by an upstream-style generator script while an upstream-style
logger script tails it; the tests then read that cache with upstream's loader, logger and command line.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import numpy as np
import pytest
import torch

from helpers import child_env, drop_database

SWAP_CAP = 10
N_SAMPLES = 30
SHAPE = (16, 16, 16)

GENERATOR = f'''
import numpy as np
from wirehead import WireheadGenerator

def create_generator():
    while True:
        img = np.random.rand{SHAPE}
        lab = (np.random.rand{SHAPE} * 10).astype(np.int64)
        yield (img, lab)

if __name__ == "__main__":
    brain_generator = create_generator()
    wirehead_generator = WireheadGenerator(
        generator=brain_generator,
        config_path="config.yaml",
        n_samples={N_SAMPLES},
    )
    wirehead_generator.run(verbose=True)
'''

LOADER = '''
import torch
from wirehead import MongoTupleheadDataset

dataset = MongoTupleheadDataset(config_path="config.yaml")

for i in range(25):
    data = dataset[[i % 10]][0]
    sample, label = data[0], data[1]
    assert sample.shape == (16, 16, 16) and sample.dtype == torch.float64, (sample.shape, sample.dtype)
    assert label.dtype == torch.int64 and 0 <= int(label.min()) and int(label.max()) < 10
print(sample.shape)
print(label.shape)
print("Fetched successfully")
'''

LOGGER = '''
from wirehead import WireheadLogger

if __name__ == "__main__":
    logger = WireheadLogger("config.yaml", poll_interval=0.1)

    logs = logger.history()
    if not logs:
        print("No swaps recorded yet.", flush=True)
    for log in logs:
        print(log, flush=True)

    logger.run()
'''


def _read_lines(proc: subprocess.Popen, want: int, timeout: float, what: str) -> list[str]:
    """Collect stdout lines of ``proc`` until ``want`` JSON lines came, or fail at the deadline."""
    lines: list[str] = []
    done = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if sum(1 for ln in lines if ln.startswith("{")) >= want:
                done.set()
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    if not done.wait(timeout) or sum(1 for ln in lines if ln.startswith("{")) < want:
        raise AssertionError(f"{what}: wanted {want} JSON lines within {timeout} s, got {lines!r}")
    return lines


@pytest.fixture(scope="module")
def upstream_cache(mongo_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    url = urlparse(mongo_uri)
    if url.username or url.query or "," in (url.netloc or ""):
        pytest.skip("upstream's config names a host and a port only")
    dbname = f"t_upstream_{uuid.uuid4().hex[:6]}"
    d = tmp_path_factory.mktemp("upstream")
    (d / "config.yaml").write_text(textwrap.dedent(f"""\
        MONGOHOST: "{url.hostname}"
        PORT: {url.port or 27017}
        DBNAME: "{dbname}"
        SWAP_CAP: {SWAP_CAP}
        SAMPLE: ["data", "label"]
        """))
    for name, code in (("generator.py", GENERATOR), ("loader.py", LOADER), ("logger.py", LOGGER)):
        (d / name).write_text(code)
    env = child_env()
    env.pop("WIREHEAD_MONGO_URI", None)
    logger = subprocess.Popen([sys.executable, "logger.py"], cwd=d, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        gen = subprocess.run([sys.executable, "generator.py"], cwd=d, env=env, capture_output=True, text=True,
                             timeout=240)
        assert gen.returncode == 0, gen.stderr[-3000:]
        logger_lines = _read_lines(logger, N_SAMPLES // SWAP_CAP, 60, "logger.py")
        yield {"dir": d, "env": env, "dbname": dbname, "generator": gen, "logger_lines": logger_lines}
    finally:
        logger.kill()
        logger.wait(10)
        for f in (logger.stdout, logger.stderr):
            if f:
                f.close()
        drop_database(mongo_uri, dbname)


def _wirehead(cache: dict[str, Any], *args: str, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wirehead", "config.yaml", *args], cwd=cache["dir"],
                            env=cache["env"], text=True, **kw)


# -- scripts in upstream's style ---------------------------------------------------------------
@pytest.mark.timeout(300)
def test_generator_n_samples_and_verbose_progress(upstream_cache: dict[str, Any]) -> None:
    gen = upstream_cache["generator"]
    progress = [ln for ln in gen.stderr.splitlines() if "samples committed" in ln]
    assert progress, gen.stderr[-2000:]
    assert f"{N_SAMPLES}/{N_SAMPLES} samples committed" in progress[-1] and "finished" in progress[-1]


@pytest.mark.timeout(300)
def test_logger_run_prints_new_swaps_as_they_happen(upstream_cache: dict[str, Any]) -> None:
    lines = upstream_cache["logger_lines"]
    assert lines[0] == "No swaps recorded yet."  # started before the generator: history() was empty
    swaps = [json.loads(ln) for ln in lines if ln.startswith("{")]
    counts = [s["swap_count"] for s in swaps]
    assert counts == list(range(1, len(swaps) + 1)), counts
    for prev, s in zip(swaps, swaps[1:]):
        assert s["prev_swap_timestamp"] == prev["swap_timestamp"]
        assert s["swap_duration"] == pytest.approx(s["swap_timestamp"] - prev["swap_timestamp"])
    assert {s["db_name"] for s in swaps} == {upstream_cache["dbname"]}


@pytest.mark.timeout(300)
def test_tuple_loader_script(upstream_cache: dict[str, Any]) -> None:
    r = subprocess.run([sys.executable, "loader.py"], cwd=upstream_cache["dir"], env=upstream_cache["env"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Fetched successfully" in r.stdout


# -- the command line ---------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_cli_config_prints_swap_history(upstream_cache: dict[str, Any]) -> None:
    p = _wirehead(upstream_cache, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    swaps = [json.loads(ln) for ln in out.splitlines()]
    assert len(swaps) >= N_SAMPLES // SWAP_CAP
    assert [s["swap_count"] for s in swaps] == list(range(1, len(swaps) + 1))
    assert swaps[0]["swap_duration"] is None and all(s["swap_duration"] > 0 for s in swaps[1:])


@pytest.mark.timeout(300)
def test_cli_daemon_streams_snapshots(upstream_cache: dict[str, Any]) -> None:
    p = _wirehead(upstream_cache, "--daemon", "--poll-interval", "0.2", stdout=subprocess.PIPE,
                  stderr=subprocess.PIPE)
    try:
        lines = _read_lines(p, 2, 60, "wirehead config.yaml --daemon")
    finally:
        p.kill()
        p.communicate(timeout=10)
    snaps = [json.loads(ln) for ln in lines[:2]]
    assert snaps[1]["timestamp"] > snaps[0]["timestamp"]
    s = snaps[1]
    assert s["db_name"] == upstream_cache["dbname"] and s["poll_interval"] == 0.2
    assert s["swap_count"] >= N_SAMPLES // SWAP_CAP and s["swap_cap"] == SWAP_CAP
    assert s["read_docs"] == SWAP_CAP and s["read_size_mb"] > 0
    assert s["recent_swaps"][-1]["swap_count"] == s["swap_count"]
    assert s["time_since_last_swap"] >= 0 and s["avg_swap_duration"] > 0


@pytest.mark.timeout(300)
def test_cli_tui_under_a_pty_quits_on_q(upstream_cache: dict[str, Any]) -> None:
    master, slave = pty.openpty()
    env = dict(upstream_cache["env"], TERM="xterm", LINES="40", COLUMNS="120")
    p = _wirehead(dict(upstream_cache, env=env), "--tui", "--poll-interval", "0.2", stdin=slave, stdout=slave,
                  stderr=slave)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"q to quit" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    seen += os.read(master, 65536)
                except OSError:
                    break
        assert b"q to quit" in seen and upstream_cache["dbname"].encode() in seen, seen[-2000:]
        assert b"recent swaps" in seen
        os.write(master, b"q")
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        os.close(master)


def test_first_argument_that_is_a_command_stays_a_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wirehead.cli import parse_args

    (tmp_path / "status").write_text("SWAP_CAP: 1\n")
    (tmp_path / "cache.yaml").write_text("SWAP_CAP: 1\n")
    monkeypatch.chdir(tmp_path)
    assert parse_args(["status", "cache.yaml"]).command == "status"
    args = parse_args(["cache.yaml", "--tui", "--poll-interval", "0.5"])
    assert args.tui and args.poll_interval == 0.5 and args.config == "cache.yaml"


# -- the dataset's upstream keywords ---------------------------------------------------------
@pytest.mark.timeout(120)
def test_dataset_upstream_keywords(make_config: Any) -> None:
    from wirehead import MongoheadDataset, MongoTupleheadDataset, WireheadGenerator

    cfg = make_config(SAMPLE=["img", "seg", "extra"], SWAP_CAP=2)
    rng = np.random.default_rng(0)
    samples = [(rng.random((4, 4)) * 50, rng.integers(0, 5, (4, 4)), np.full((2,), i)) for i in range(2)]
    WireheadGenerator(samples, config=cfg, n_samples=2).run()
    seen: list[Any] = []

    def transform(s: Any) -> Any:
        seen.append(s)
        return s

    ds = MongoheadDataset(config=cfg, timeout=60, collection=None, sample=("seg", "img"),
                          normalize=lambda x: x * 0 + 7, transform=transform, id="id", keeptrying=True)
    s = ds[[0]][0]
    assert torch.equal(s["input"], s["seg"]) and bool((s["input"] == 7).all())  # normalize on the input
    assert float(s["label"].max()) > 1  # the image, not normalized
    assert all(isinstance(v, torch.Tensor) for v in seen[0].values())  # never stored bytes
    t = MongoTupleheadDataset(config=cfg, sample=("data", "label"), normalize=lambda x: x * 0)[[1]][0]
    assert len(t) == 3 and float(t[0].abs().max()) == 0 and t[1].dtype == torch.int64  # default: SAMPLE
    with pytest.raises(ValueError, match="SAMPLE"):
        MongoheadDataset(config=cfg, sample=("img", "nope"))
    with pytest.raises(ValueError, match="READ_COLLECTION"):
        MongoheadDataset(config=cfg, collection="elsewhere")
    ds.close()


def test_normalize_helpers() -> None:
    from wirehead.dataset import quantile_normalize, unit_interval_normalize

    x = torch.arange(101, dtype=torch.float64) - 20
    u = unit_interval_normalize(x)
    assert float(u.min()) == 0 and float(u.max()) == 1
    q = quantile_normalize(x, qmin=0.1, qmax=0.9)
    assert float(q[10]) == pytest.approx(0) and float(q[90]) == pytest.approx(1) and float(q.max()) == 1
    assert float(q[50]) == pytest.approx(0.5)
    qa = quantile_normalize(x.numpy())
    assert isinstance(qa, np.ndarray) and qa.min() == 0 and qa.max() == 1
    assert float(unit_interval_normalize(torch.ones(3)).abs().max()) == 0


# -- the data classes -----------------------------------------------------------------------
def test_swaplog_and_snapshot_are_json_lines() -> None:
    from wirehead import SwapLog, WireheadSnapshot

    s = SwapLog(swap_timestamp=2.0, prev_swap_timestamp=1.0, swap_duration=1.0, swap_count=2, db_name="d")
    assert str(s) == s.to_jsonl() and json.loads(str(s))["swap_duration"] == 1.0
    snap = WireheadSnapshot(swap_count=2, recent_swaps=[s])
    assert json.loads(str(snap))["recent_swaps"][0]["swap_count"] == 2
