"""Tests of the `wirehead` command line: every command as a subprocess against the real test server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import yaml

from helpers import Lines, child_env, freeze_group, gone, kill_tree, wait_until
from wirehead import WireheadGenerator, WireheadManager, snapshot
from wirehead.chunks import encode
from wirehead.config import redact_uri
from wirehead.server import ping_uri
from wirehead.store import Store

COMMANDS = ["server", "manager", "generate", "status", "log", "watch", "clean", "demo", "export"]

FACTORIES = '''
import time

from wirehead.synth import synth_generator

def small(rank=0):
    return synth_generator((12, 12, 12), seed=rank)

not_callable = 3

def stuck(rank=0):
    """Two samples, then a factory that never yields again (a hung simulator)."""
    samples = synth_generator((12, 12, 12), seed=rank)
    yield next(samples)
    yield next(samples)
    time.sleep(3600)

def stubborn(rank=0):
    """Stuck, and swallows the interrupt that a first Ctrl-C raises in it."""
    samples = synth_generator((12, 12, 12), seed=rank)
    yield next(samples)
    while True:
        try:
            time.sleep(3600)
        except KeyboardInterrupt:
            pass
'''


def wh(*args: str, env: dict[str, str], timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess:
    """Run `python -m wirehead ARGS` with a deadline (subprocess.run kills it on timeout)."""
    return subprocess.run([sys.executable, "-m", "wirehead", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def popen(*args: str, env: dict[str, str], **kw: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wirehead", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def one_error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    e = child_env(None, WIREHEAD_HOME=str(home))
    e.pop("WIREHEAD_MONGO_URI", None)
    return e


def write_config(path: Path, cfg: Any, **changes: Any) -> Path:
    keys = {k.upper(): v for k, v in cfg.to_dict().items() if v is not None}
    keys.update(changes)
    path.write_text(yaml.safe_dump(keys))
    return path


# -- help and version ------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command: str, env: dict[str, str]) -> None:
    r = wh(command, "--help", env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert f"usage: wirehead {command}" in r.stdout and "example" in r.stdout


def test_version_and_top_level_help(env: dict[str, str]) -> None:
    import wirehead

    r = wh("--version", env=env, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == f"wirehead {wirehead.__version__}"
    r = wh("--help", env=env, timeout=30)
    assert r.returncode == 0 and all(c in r.stdout for c in [*COMMANDS, "bench"])
    r = wh(env=env, timeout=30)
    assert r.returncode == 2  # a command is required


def test_bench_forwards_its_arguments(env: dict[str, str]) -> None:
    r = wh("bench", "--help", env=env, timeout=60)  # runs benchmarks/run.py of this checkout
    assert r.returncode == 0 and "usage: wirehead bench" in r.stdout and "--smoke" in r.stdout
    r = wh("bench", "--no-such-option", env=env, timeout=60)
    assert r.returncode == 2 and "--no-such-option" in r.stderr


# -- status / log / watch against ground truth -----------------------------------------------
@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_status_json_matches_a_controlled_run(make_config, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = make_config(SWAP_CAP=3, LEASE_SECONDS=120.0)
    path = write_config(tmp_path / "cache.yaml", cfg)
    mgr = WireheadManager(config=cfg)
    mgr.step()
    gen = WireheadGenerator(None, config=cfg, name="ground-truth")
    rng = np.random.default_rng(0)
    samples = [(rng.random((4, 4, 4), dtype=np.float32), rng.integers(0, 3, (4, 4, 4), dtype=np.uint8))
               for _ in range(8)]
    nbytes = [encode(s, cfg.sample, cfg.compression).stored_bytes for s in samples]
    rates = []
    try:
        for s in samples[:3]:
            gen.push(s)
        assert mgr.step().swapped
        r = wh("status", str(path), "--json", env=env)
        assert r.returncode == 0, r.stderr
        rates.append(json.loads(r.stdout)["samples_per_second"])
        for s in samples[3:8]:
            gen.push(s)
        assert mgr.step().swapped
        r = wh("status", str(path), "--json", env=env)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout)
        rates.append(got["samples_per_second"])
        assert (got["write_gen"], got["read_gen"], got["write_fill"], got["swaps"], got["read_gen_size"]) == \
            (2, 1, 2, 2, 3)
        assert got["generation_bytes"] == {"0": sum(nbytes[:3]), "1": sum(nbytes[3:6]), "2": sum(nbytes[6:8])}
        assert got["dbname"] == cfg.dbname and got["swap_cap"] == 3
        assert [g["name"] for g in got["generators"]] == ["ground-truth"]
        assert all(x >= 0 for x in rates) and rates[-1] > 0

        text = wh("status", str(path), env=env)
        assert text.returncode == 0 and "write generation  2" in text.stdout and "ground-truth" in text.stdout

        for args in (("log", str(path)), ("status", str(path), "--swaps")):
            r = wh(*args, env=env)
            assert r.returncode == 0, r.stderr
            entries = [json.loads(ln) for ln in r.stdout.splitlines()]
            assert [(e["gen"], e["size"]) for e in entries] == [(0, 3), (1, 3)]

        r = wh("watch", str(path), "--once", env=env)
        assert r.returncode == 0 and "[" in r.stdout and "2/3" in r.stdout and "\x1b[" not in r.stdout
    finally:
        gen.close()


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_watch_redraws_until_interrupted(config, tmp_path: Path, env: dict[str, str]) -> None:
    Store(config).ensure_schema()
    path = write_config(tmp_path / "cache.yaml", config)
    proc = popen("watch", str(path), "--interval", "0.2", env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        # two frames drawn: the command started (a loaded machine may take seconds) and redraws
        wait_until(lambda: sum("write generation" in ln for ln in list(lines)) >= 2, 60, "two frames of `watch`")
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(20)
        err = proc.stderr.read()  # type: ignore[union-attr]
        assert rc == 130, err
        reader.join(10)
        out = "".join(lines)
        assert out.count("write generation") >= 2 and "reads/s" in out
    finally:
        kill_tree(proc)


# -- errors: exit 2 and one line -------------------------------------------------------------
@pytest.mark.parametrize("args", [("status",), ("watch", "--once"), ("log",), ("manager",), ("clean", "--yes"),
                                  ("generate", "--factory", "wirehead.synth:synth_generator")])
@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_unreachable_server_exits_2_quickly(args: tuple[str, ...], config, tmp_path: Path,
                                            env: dict[str, str]) -> None:
    path = write_config(tmp_path / "bad.yaml", config, MONGO_URI="mongodb://127.0.0.1:1/", CONNECT_TIMEOUT=1.0)
    t0 = time.monotonic()
    r = wh(args[0], str(path), *args[1:], env=env, timeout=30)
    assert r.returncode == 2, (r.stdout, r.stderr)
    line = one_error_line(r.stderr)
    assert "127.0.0.1:1" in line and "did not answer" in line
    assert time.monotonic() - t0 < 15


def test_bad_config_exits_2(tmp_path: Path, env: dict[str, str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("SWAP_CAP: 0\n")
    r = wh("status", str(bad), env=env, timeout=30)
    assert r.returncode == 2 and "SWAP_CAP=0" in one_error_line(r.stderr)
    r = wh("manager", str(tmp_path / "missing.yaml"), env=env, timeout=30)
    assert r.returncode == 2 and "does not exist" in one_error_line(r.stderr)


@pytest.mark.parametrize("factory, message", [("no_such_module_xyz:gen", "no module named 'no_such_module_xyz'"),
                                              ("factories:missing", "has no attribute 'missing'"),
                                              ("factories:not_callable", "not a callable"),
                                              ("factories", "module:function")])
def test_missing_factory_exits_2(factory: str, message: str, config, tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "factories.py").write_text(FACTORIES)
    path = write_config(tmp_path / "cache.yaml", config)
    r = wh("generate", str(path), "--factory", factory, env=env, cwd=tmp_path, timeout=30)
    assert r.returncode == 2 and message in one_error_line(r.stderr)


# -- generate and manager --------------------------------------------------------------------
def test_generate_processes_commit_and_finish(make_config, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = make_config(SWAP_CAP=100)
    (tmp_path / "factories.py").write_text(FACTORIES)
    path = write_config(tmp_path / "cache.yaml", cfg)
    r = wh("generate", str(path), "--factory", "factories:small", "--processes", "2", "--n-samples", "3",
           env=env, cwd=tmp_path, timeout=90)
    assert r.returncode == 0, r.stderr
    snap = snapshot(cfg)
    assert snap.write_fill == 6
    assert sorted(g.produced for g in snap.generators) == [3, 3]
    assert {g.status for g in snap.generators} == {"finished"} and len({g.pid for g in snap.generators}) == 2


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_generate_stops_all_children_on_sigint(make_config, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = make_config(SWAP_CAP=1000)
    (tmp_path / "factories.py").write_text(FACTORIES)
    path = write_config(tmp_path / "cache.yaml", cfg)
    proc = popen("generate", str(path), "--factory", "factories:small", "--processes", "2", env=env, cwd=tmp_path)
    try:
        wait_until(lambda: sum(1 for g in snapshot(cfg).generators if g.status == "alive") == 2, 60,
                 "two alive generators")
        children = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        assert len(children) >= 2
        proc.send_signal(signal.SIGINT)  # only the parent, as a supervisor would
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        wait_until(lambda: gone(*children), 10, "generator processes to end")
        assert {g.status for g in snapshot(cfg).generators} == {"stopped"}
    finally:
        kill_tree(proc)


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_generate_ctrl_c_ends_a_stuck_factory_with_130(make_config, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = make_config(SWAP_CAP=1000)
    (tmp_path / "factories.py").write_text(FACTORIES)
    path = write_config(tmp_path / "cache.yaml", cfg)
    proc = popen("generate", str(path), "--factory", "factories:stuck", env=env, cwd=tmp_path)
    try:
        wait_until(lambda: [g.produced for g in snapshot(cfg).generators] == [2], 60, "two committed samples")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert time.monotonic() - t0 < 10, "Ctrl-C did not interrupt the stuck factory"
        assert [g.status for g in snapshot(cfg).generators] == ["stopped"]
    finally:
        kill_tree(proc)


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_generate_processes_ctrl_c_stops_children_cleanly_with_130(make_config, tmp_path: Path,
                                                                    env: dict[str, str]) -> None:
    cfg = make_config(SWAP_CAP=1000)
    (tmp_path / "factories.py").write_text(FACTORIES)
    path = write_config(tmp_path / "cache.yaml", cfg)
    # its own process group, as in a terminal: Ctrl-C goes to the whole foreground group
    proc = popen("generate", str(path), "--factory", "factories:stuck", "--processes", "2", env=env, cwd=tmp_path,
                 start_new_session=True)
    try:
        wait_until(lambda: sorted(g.produced for g in snapshot(cfg).generators) == [2, 2], 60,
                 "two samples from each process")
        children = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - t0
        assert proc.returncode == 130, err
        assert took < 10 and "killing it" not in err, (took, err)
        wait_until(lambda: gone(*children), 10, "generator processes to end")
        assert {g.status for g in snapshot(cfg).generators} == {"stopped"}
    finally:
        kill_tree(proc)


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_generate_second_ctrl_c_forces_the_exit(make_config, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = make_config(SWAP_CAP=1000)
    (tmp_path / "factories.py").write_text(FACTORIES)
    path = write_config(tmp_path / "cache.yaml", cfg)
    with open(tmp_path / "stderr.txt", "w") as errf:
        proc = subprocess.Popen([sys.executable, "-m", "wirehead", "generate", str(path), "--factory",
                                 "factories:stubborn", "--processes", "2"], stdout=subprocess.DEVNULL, stderr=errf,
                                env=env, cwd=tmp_path, start_new_session=True)
    try:
        wait_until(lambda: sorted(g.produced for g in snapshot(cfg).generators) == [1, 1], 60,
                 "a sample from each process")
        children = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        os.killpg(proc.pid, signal.SIGINT)
        wait_until(lambda: "Ctrl-C again" in (tmp_path / "stderr.txt").read_text(), 30, "the first Ctrl-C to be seen")
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 130
        assert time.monotonic() - t0 < 10
        wait_until(lambda: gone(*children), 10, "the stubborn generator processes to be killed")
    finally:
        kill_tree(proc)


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_killed_generator_shows_as_dead(make_config, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = make_config(SWAP_CAP=1000, HEARTBEAT_SECONDS=0.2, DEAD_AFTER_SECONDS=1.0)
    (tmp_path / "factories.py").write_text(FACTORIES)
    path = write_config(tmp_path / "cache.yaml", cfg)
    proc = popen("generate", str(path), "--factory", "factories:small", env=env, cwd=tmp_path)
    try:
        wait_until(lambda: any(g.status == "alive" and g.produced > 0 for g in snapshot(cfg).generators), 60,
                 "a producing generator")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        snap = wait_until(lambda: (lambda s: s if s.generators[0].status == "dead" else None)(snapshot(cfg)), 10,
                        "the generator to show as dead")
        (g,) = snap.generators
        assert g.pid == proc.pid and g.seconds_since_beat > 1.0
        assert any("presumed dead" in e and str(proc.pid) in e for e in snap.errors)
        r = wh("status", str(path), env=env)
        assert r.returncode == 0 and " dead " in r.stdout
    finally:
        kill_tree(proc)


def test_manager_swaps_and_stops_cleanly_on_sigterm(make_config, tmp_path: Path, env: dict[str, str]) -> None:
    cfg = make_config(SWAP_CAP=2, LEASE_SECONDS=30.0)
    path = write_config(tmp_path / "cache.yaml", cfg)
    proc = popen("manager", str(path), env=env)
    try:
        wait_until(lambda: snapshot(cfg).lease_holder, 30, "the manager to take the lease")
        gen = WireheadGenerator(None, config=cfg)
        rng = np.random.default_rng(1)
        for _ in range(2):
            gen.push((rng.random((3, 3), dtype=np.float32), np.zeros((3, 3), np.uint8)))
        gen.close()
        wait_until(lambda: snapshot(cfg).swaps == 1, 30, "the manager's swap")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "1 swaps" in out
        snap = snapshot(cfg)
        assert snap.lease_holder is None and [m.status for m in snap.managers] == ["stopped"]
    finally:
        kill_tree(proc)


# -- clean ----------------------------------------------------------------------------------
@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_clean_asks_refuses_without_tty_and_drops_with_yes(config, tmp_path: Path, env: dict[str, str]) -> None:
    store = Store(config)
    store.ensure_schema()
    path = write_config(tmp_path / "cache.yaml", config)
    r = wh("clean", str(path), env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "--yes" in one_error_line(r.stderr)
    assert store.database_exists()
    r = wh("clean", str(path), "--yes", env=env)
    assert r.returncode == 0, r.stderr
    assert not store.database_exists()
    r = wh("clean", str(path), "--yes", env=env)
    assert r.returncode == 0 and "nothing to clean" in r.stdout


def test_clean_prompt_answer_no_keeps_the_database(config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    from wirehead.cli import main

    store = Store(config)
    store.ensure_schema()
    path = write_config(tmp_path / "cache.yaml", config)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    answers = iter(["n", "y"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    assert main(["clean", str(path)]) == 1 and store.database_exists()
    assert main(["clean", str(path)]) == 0 and not store.database_exists()


# -- server ---------------------------------------------------------------------------------
def _pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` waits to be delivered to process ``pid`` (stopped processes keep theirs pending)."""
    with open(f"/proc/{pid}/status") as f:
        masks = [int(line.split()[1], 16) for line in f if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask & (1 << (signum - 1)) for mask in masks)


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_server_foreground_prints_uri_and_stops_on_sigterm_also_signalled_again(tmp_path: Path,
                                                                               env: dict[str, str]) -> None:
    """SIGTERM stops the server (exit 0).  scancel signals every process of a job, then the job script signals its
    server again: that second SIGTERM lands while `wirehead server` waits for its server to stop, and must not end
    it with the server left running."""
    proc = popen("server", "--dir", str(tmp_path / "db"), env=env)
    try:
        uri = proc.stdout.readline().strip()
        # the URI to export: with the server's credential (it requires authentication)
        assert uri.startswith("mongodb://wirehead:") and "@127.0.0.1:" in uri and ping_uri(uri, timeout=5)
        err = Lines(proc.stderr)
        watchdog = psutil.Process(proc.pid).children()[0]  # the server runs under its watchdog, in its own group
        family = {watchdog.pid, *(c.pid for c in watchdog.children(recursive=True))}
        pgid = os.getpgid(watchdog.pid)
        freeze_group(pgid)  # the stop cannot finish while the group is frozen: the moment lasts
        try:
            proc.send_signal(signal.SIGTERM)
            wait_until(lambda: _pending(watchdog.pid, signal.SIGTERM), 10, "the stop's SIGTERM to the watchdog")
            proc.send_signal(signal.SIGTERM)
            assert err.wait_for(lambda ln: "already stopping" in ln, timeout=10), err.text()
        finally:
            os.killpg(pgid, signal.SIGCONT)
        assert proc.wait(timeout=30) == 0, err.text()
        wait_until(lambda: gone(*family), 10, "the server and its watchdog to end")
        assert "Traceback" not in err.text() and "server stopped" in err.text(), err.text()
        assert not ping_uri(uri, timeout=1)
        assert (tmp_path / "db").is_dir()  # a given data directory is kept
    finally:
        kill_tree(proc)


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_server_status_and_stop_of_the_shared_server(env: dict[str, str], home: Path) -> None:
    r = wh("server", "status", env=env, timeout=30)
    assert r.returncode == 3 and "no shared local server" in r.stdout
    r = wh("server", "stop", env=env, timeout=30)
    assert r.returncode == 0 and "no shared local server was running" in r.stdout
    # started by a process that exits (as a manager script would), so the server is not our zombie
    r = subprocess.run([sys.executable, "-c", "from wirehead.server import shared_uri; print(shared_uri())"],
                       capture_output=True, text=True, timeout=90, env=env)
    uri = r.stdout.strip()
    try:
        assert r.returncode == 0 and ping_uri(uri, timeout=5), r.stderr
        r = wh("server", "status", "--json", env=env, timeout=30)
        assert r.returncode == 0 and json.loads(r.stdout)["uri"] == redact_uri(uri) != uri  # no password shown
        r = wh("server", "stop", env=env, timeout=30)
        assert r.returncode == 0 and "stopped" in r.stdout
        assert not ping_uri(uri, timeout=1)
    finally:
        wh("server", "stop", env=env, timeout=30)


# -- demo -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_runs_writes_three_orthogonal_slices_and_leaves_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    import matplotlib.image as mpimg

    out_dir = tmp_path / "previews"
    proc = popen("demo", "--out", str(out_dir), "--swaps", "3", env=env, cwd=tmp_path)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 150
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                seen.update(p.pid for p in psutil.Process(proc.pid).children(recursive=True))
            except psutil.Error:
                pass
            time.sleep(0.5)
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert proc.returncode == 0, err[-3000:]
    finally:
        kill_tree(proc)
    assert len(seen) >= 4, seen  # server, manager, two generators (and DataLoader workers)
    wait_until(lambda: gone(*seen), 10, "every process the demo started to end")
    assert "swaps" in out and "samples/s" in out and "reuse" in out

    png = out_dir / "wirehead-demo-slices.png"
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 900
    gray = img[..., :3].mean(axis=2)
    assert gray.std() > 0.05, "the preview is blank"
    h, w = gray.shape
    body = gray[int(0.15 * h):int(0.9 * h)]
    panels = [body[:, i * w // 3:(i + 1) * w // 3] for i in range(3)]
    for p in panels:
        # an image, not a blank or flat area (the synthetic background's brightness is random, like SynthSeg's)
        assert p.std() > 0.05 and len(np.unique(np.round(p, 2))) > 20, "every panel shows an image"
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert np.abs(panels[a] - panels[b]).mean() > 0.01, f"panels {a} and {b} are the same picture"
    colour = np.abs(img[..., 0] - img[..., 2]).mean()
    assert colour > 0.01, "the label overlay is missing"
