"""WireheadController: owning a server, threads and spawned processes, errors, idempotence, shutdown."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from helpers import child_env, drop_database, gone, wait_until
from wirehead import WireheadController



MAIN_SOURCE = '''
import numpy as np

SHAPE = (8, 8, 8)

def factory(rank):
    for i in range(1_000_000):
        yield np.full(SHAPE, rank, np.float32), np.full(SHAPE, i % 4, np.uint8)

def broken(rank):
    yield np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.uint8)
    raise RuntimeError("kaboom-in-a-notebook-cell")
'''


def _notebook_module() -> types.ModuleType:
    """Functions defined the way a notebook cell defines them: in a module named ``__main__``."""
    mod = types.ModuleType("__main__")
    exec(compile(MAIN_SOURCE, "<notebook-cell>", "exec"), mod.__dict__)
    return mod


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_without_config_the_controller_owns_its_server_and_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREHEAD_MONGO_URI", raising=False)
    ctl = WireheadController(SAMPLE=["image", "label"], SWAP_CAP=2)
    try:
        assert ctl.owns_server and ctl.config.uri is None
        server = psutil.Process(ctl.server_pid)
        assert server.is_running() and urlsplit(ctl.uri).hostname == "127.0.0.1"  # (with the server's credential)
        ctl.start_generators(_notebook_module().factory, n=1, n_samples=4)
        ds = ctl.dataset(timeout=60, output="numpy")
        assert ds[0]["image"].shape == (8, 8, 8)
    finally:
        ctl.stop(timeout=10)
    assert gone(server.pid), "the private server outlived stop()"
    assert not ctl.owns_server
    with pytest.raises(RuntimeError, match="stopped"):
        ctl.start_manager()


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_process_mode_runs_a_factory_defined_in_main(make_config: Any) -> None:
    mod = _notebook_module()
    with pytest.raises(Exception):
        pickle.dumps(mod.factory)  # plain pickle cannot send it: it must travel by value
    cfg = make_config(SWAP_CAP=4)
    with WireheadController(config=cfg) as ctl:
        assert not ctl.owns_server
        states = ctl.start_generators(mod.factory, n=2, mode="process", n_samples=3)
        assert len({s.pid for s in states}) == 2
        wait_until(lambda: not ctl.running, 90, "both generator processes to finish")
        workers = ctl.workers()
        assert [(w.state, w.exitcode) for w in workers] == [("finished", 0), ("finished", 0)]
        snap = ctl.snapshot()
        assert sorted(g.produced for g in snap.generators) == [3, 3]
        assert snap.swaps * 4 + snap.write_fill == 6
        ds = ctl.dataset(timeout=30, output="numpy")
        ranks = {float(ds[i]["image"].flat[0]) for i in range(len(ds))}
        assert ranks <= {0.0, 1.0}


def test_a_failing_generator_process_reports_its_traceback_and_the_others_keep_running(make_config: Any) -> None:
    mod = _notebook_module()
    cfg = make_config(SWAP_CAP=4, HEARTBEAT_SECONDS=0.2, DEAD_AFTER_SECONDS=5.0)
    ctl = WireheadController(config=cfg)
    try:
        ctl.start_manager()
        good = ctl.start_generators(mod.factory, n=1, mode="process", name="good")
        ctl.start_generators(mod.broken, n=1, mode="process", name="bad")
        bad = wait_until(lambda: [w for w in ctl.workers() if w.name == "bad-0" and not w.alive], 90,
                     "the broken generator to exit")[0]
        assert bad.exitcode == 1 and bad.state == "errored"
        assert "Traceback" in bad.error and "kaboom-in-a-notebook-cell" in bad.error and "broken" in bad.error
        status = ctl.status()
        assert any("kaboom-in-a-notebook-cell" in e for e in status.errors)
        infos = {g.name: g for g in status.snapshot.generators}
        assert infos["bad-0"].status == "errored" and "kaboom" in (infos["bad-0"].last_error or "")
        good_info = wait_until(lambda: {g.name: g for g in ctl.snapshot().generators}.get("good-0"), 60,
                               "the good generator to report")
        before = good_info.produced
        wait_until(lambda: {g.name: g for g in ctl.snapshot().generators}["good-0"].produced > before + 5, 60,
               "the good generator to keep producing")
        assert [w.alive for w in ctl.workers() if w.name == "good-0"] == [True]
        # re-running the cell starts no duplicate of the running generator
        again = ctl.start_generators(mod.factory, n=1, mode="process", name="good")
        assert [s.pid for s in again] == [good[0].pid]
    finally:
        ctl.stop(timeout=10)
    assert not any(w.alive for w in ctl.workers())


def test_rerunning_start_calls_does_not_duplicate_and_restart_replaces(make_config: Any) -> None:
    mod = _notebook_module()
    cfg = make_config(SWAP_CAP=4)
    with WireheadController(config=cfg) as ctl:
        first = ctl.start_generators(mod.factory, n=2)
        ctl.start_generators(mod.factory, n=2)
        ctl.start_generators(mod.factory, n=3)
        ctl.start_manager()
        ctl.start_manager()
        alive = [w for w in ctl.workers() if w.alive]
        assert sorted(w.name for w in alive) == ["gen-0", "gen-1", "manager"]
        assert [s.name for s in first] == ["gen-0", "gen-1"]
        ctl.start_generators(mod.factory, n=1, restart=True)
        alive = [w.name for w in ctl.workers() if w.alive]
        assert sorted(alive) == ["gen-0", "manager"]


def test_stop_ends_every_process_within_its_deadline(make_config: Any) -> None:
    mod = _notebook_module()
    cfg = make_config(SWAP_CAP=4)
    ctl = WireheadController(config=cfg)
    try:
        ctl.start_manager(mode="process")
        states = ctl.start_generators(mod.factory, n=2, mode="process")
        pids = [s.pid for s in states] + [w.pid for w in ctl.workers() if w.role == "manager"]
        wait_until(lambda: len(ctl.snapshot().generators) == 2, 60, "both generators to report")
    finally:
        t0 = time.monotonic()
        ctl.stop(timeout=10)
        took = time.monotonic() - t0
    assert took < 15
    assert all(gone(pid) for pid in pids)
    assert not [p for p in psutil.Process().children(recursive=True) if p.pid in pids]


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_kernel_exit_without_stop_ends_workers_and_private_server(tmp_path: Path, mongo_uri: str) -> None:
    script = tmp_path / "kernel.py"
    script.write_text(textwrap.dedent('''
        import json, sys, time
        from wirehead import WireheadController

        def factory(rank):
            import numpy as np
            while True:
                time.sleep(0.05)
                yield np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8)

        if __name__ == "__main__":
            ctl = WireheadController(SWAP_CAP=4, SAMPLE=["image", "label"])
            ctl.start_manager()
            states = ctl.start_generators(factory, n=2, mode="process")
            ctl.dashboard(interval=0.2)
            print(json.dumps({"pids": [s.pid for s in states], "server": ctl.server_pid}), flush=True)
            time.sleep(2)
            # no stop(): the interpreter exits, as a kernel does on shutdown
    '''))
    env = child_env()
    env.pop("WIREHEAD_MONGO_URI", None)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["server"] and len(info["pids"]) == 2
    wait_until(lambda: all(gone(p) for p in [*info["pids"], info["server"]]), 15,
           "the workers and the private server to end with the interpreter")


# -- lifecycle (issue 19) --------------------------------------------------------------------------
STUCK_SOURCE = '''
import threading
import numpy as np

SHAPE = (8, 8, 8)
release = threading.Event()   # the test sets it at the end: the hung factories return

def hang_after_two(rank):
    for i in range(2):
        yield np.full(SHAPE, i, np.float32), np.zeros(SHAPE, np.uint8)
    release.wait(120)

def hang_first(rank):
    release.wait(120)
    yield np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.uint8)

def raise_first(rank):
    raise ValueError("no-sample-ever")
    yield

def growing(rank):
    yield np.zeros(SHAPE, np.float32), np.zeros(SHAPE, np.uint8)
    yield np.zeros((9, 8, 8), np.float32), np.zeros(SHAPE, np.uint8)
'''


def _stuck_module() -> types.ModuleType:
    mod = types.ModuleType("__main__")
    exec(compile(STUCK_SOURCE, "<notebook-cell>", "exec"), mod.__dict__)
    return mod


def _statuses(ctl: Any) -> dict[str, str]:
    return {g.name: g.status for g in ctl.snapshot().generators}


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_stalled_and_failed_generators_look_so_and_stop_returns_promptly(make_config: Any) -> None:
    mod = _stuck_module()
    cfg = make_config(SWAP_CAP=100, HEARTBEAT_SECONDS=0.2, DEAD_AFTER_SECONDS=2.0)
    ctl = WireheadController(config=cfg)
    try:
        ctl.start_generators(mod.hang_after_two, name="after2")
        ctl.start_generators(mod.hang_first, name="first")
        ctl.start_generators(mod.raise_first, name="raises")
        want = {"after2-0": "stalled", "first-0": "stalled", "raises-0": "errored"}
        wait_until(lambda: _statuses(ctl) == want, 60, f"generators to show {want}")
        snap = ctl.snapshot()
        assert snap.health == "stalled" and snap.alive_generators == 0
        assert {g.name: g.produced for g in snap.generators}["after2-0"] == 2
        assert any("after2-0" in e and "committed nothing" in e for e in snap.errors)
        dash = ctl.dashboard(autostart=False)
        dash.refresh()
        assert dash.progress.bar_style == "warning"
        assert "stalled" in {row[3] for row in dash.health_rows}
        t0 = time.monotonic()
        ctl.stop(timeout=15)
        took = time.monotonic() - t0
        assert took < 6, f"stop() on hung thread generators took {took:.1f} s"
        # honest: the hung threads still run (inside the factory) and say so
        assert ctl.running
        assert {w.name: w.state for w in ctl.workers() if w.alive} == {"after2-0": "stopping", "first-0": "stopping"}
    finally:
        mod.release.set()
        ctl.stop(timeout=10)
    wait_until(lambda: not ctl.running, 30, "the released threads to end")


def test_all_generators_errored_dataset_fails_fast_and_bar_is_red(make_config: Any) -> None:
    mod = _stuck_module()
    cfg = make_config(SWAP_CAP=4, HEARTBEAT_SECONDS=0.2, DEAD_AFTER_SECONDS=2.0)
    with WireheadController(config=cfg) as ctl:
        ctl.start_generators(mod.raise_first, n=2, mode="process")
        t0 = time.monotonic()
        from wirehead.errors import GeneratorError

        with pytest.raises(GeneratorError, match="no-sample-ever"):
            ctl.dataset(timeout=120)
        assert time.monotonic() - t0 < 60
        wait_until(lambda: set(_statuses(ctl).values()) == {"errored"}, 30, "both generators shown as errored")
        dash = ctl.dashboard(autostart=False)
        dash.refresh()
        assert ctl.snapshot().health == "errored" and dash.progress.bar_style == "danger"


def test_stop_does_not_freeze_while_a_dashboard_refresh_is_in_progress(make_config: Any) -> None:
    """The refresher asks the controller for its workers (runtime lock) while stop() runs."""
    import threading

    cfg = make_config(SWAP_CAP=4)
    ctl = WireheadController(config=cfg)
    runtime = ctl._runtime
    inner, taken = runtime.lock, threading.Event()

    class SpyLock:  # the runtime lock, telling when the main thread holds it
        def __enter__(self) -> None:
            inner.acquire()
            if threading.current_thread() is threading.main_thread():
                taken.set()

        def __exit__(self, *exc: Any) -> None:
            inner.release()

    runtime.lock = SpyLock()
    entered = threading.Event()
    dash = ctl.dashboard(autostart=False, interval=0.05)
    original = ctl.workers

    def slow_workers() -> Any:  # a refresh caught between its snapshot and its look at the workers
        if threading.current_thread() is not threading.main_thread():
            entered.set()
            deadline = time.monotonic() + 20
            while not (taken.is_set() or dash._stop.is_set()) and time.monotonic() < deadline:
                time.sleep(0.01)
        return original()

    ctl.workers = slow_workers  # type: ignore[method-assign]
    try:
        dash.start()
        assert entered.wait(30), "the refresher never asked for the workers"
        t0 = time.monotonic()
        ctl.stop(timeout=10)
        took = time.monotonic() - t0
    finally:
        runtime.lock = inner
        ctl.stop()
    assert took < 5, f"stop() took {took:.1f} s while a refresh was in progress"
    assert not dash.running


@pytest.mark.slow  # real processes (servers, workers, a CLI) for seconds: `-m "not slow"` skips
def test_a_stopped_controller_answers_at_once_and_shows_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREHEAD_MONGO_URI", raising=False)
    mod = _notebook_module()
    ctl = WireheadController(SAMPLE=["image", "label"], SWAP_CAP=4)
    try:
        ctl.start_generators(mod.factory, n=1)
        dash = ctl.dashboard(autostart=False)
        wait_until(lambda: (dash.refresh() or dash.snapshot) and dash.snapshot.samples_per_second > 0, 60,
                   "a non-zero rate")
    finally:
        ctl.stop(timeout=10)
    # without anyone calling refresh() (a notebook saved or exported after the stop cell shows this state)
    assert "controller stopped" in dash.title.value and "0.00</b> samples/s" in dash.stats.value
    assert "alive" not in {row[3] for row in dash.health_rows}
    t0 = time.monotonic()
    status = ctl.status()
    dash.refresh()
    again = ctl.dashboard(autostart=False)
    again.refresh()
    took = time.monotonic() - t0
    assert took < 2, f"a stopped controller took {took:.1f} s to answer"
    assert status.stopped and status.snapshot_error == "controller stopped"
    assert dash.stopped and dash.snapshot.samples_per_second == 0
    assert "alive" not in {row[3] for row in dash.health_rows}
    assert "0.00</b> samples/s" in dash.stats.value and "controller stopped" in dash.title.value


def test_a_new_controller_of_the_same_cache_stops_the_previous_one(make_config: Any) -> None:
    """Re-running a notebook's controller cell: Out[n] keeps the old controller alive."""
    mod = _notebook_module()
    cfg = make_config(SWAP_CAP=4)
    first = WireheadController(config=cfg)
    second = None
    try:
        pids = [s.pid for s in first.start_generators(mod.factory, n=2, mode="process")]
        first.start_manager()
        second = WireheadController(config=cfg)
        assert first.stopped and not first.running
        assert all(gone(p) for p in pids)
        assert not second.stopped
        other_cfg = make_config(SWAP_CAP=4, DBNAME=cfg.dbname + "_other")
        try:
            WireheadController(config=other_cfg).stop()
            assert not second.stopped, "a controller of another cache must not stop this one"
        finally:
            drop_database(other_cfg.uri, other_cfg.dbname)
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_sample_that_changes_shape_is_refused_naming_kind_and_shapes(make_config: Any) -> None:
    import numpy as np

    from wirehead import WireheadGenerator
    from wirehead.errors import SampleError

    mod = _stuck_module()
    cfg = make_config(SWAP_CAP=100)
    with WireheadController(config=cfg) as ctl:
        ctl.start_generators(mod.growing)
        (w,) = wait_until(lambda: [w for w in ctl.workers() if not w.alive], 60, "the generator to fail")
        assert w.state == "errored" and "'image'" in w.error and "[9, 8, 8]" in w.error and "[8, 8, 8]" in w.error
        assert ctl.snapshot().write_fill == 1
    gen = WireheadGenerator(None, config=make_config(SWAP_CAP=100, VARIABLE_SHAPES=True))
    try:
        gen.push((np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8)))
        gen.push((np.zeros((9, 8, 8), np.float32), np.zeros((9, 8, 8), np.uint8)))  # allowed on purpose
    finally:
        gen.close()
    strict = WireheadGenerator(None, config=make_config(SWAP_CAP=100))
    try:
        strict.push((np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8)))
        with pytest.raises(SampleError, match=r"'label'.*\[8, 8, 9\].*\[8, 8, 8\]"):
            strict.push((np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 9), np.uint8)))
    finally:
        strict.close()
