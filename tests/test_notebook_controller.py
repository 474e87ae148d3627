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

import psutil
import pytest

from conftest import child_env
from procs import wait_until
from wirehead import WireheadController



def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


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


def test_without_config_the_controller_owns_its_server_and_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREHEAD_MONGO_URI", raising=False)
    ctl = WireheadController(SAMPLE=["image", "label"], SWAP_CAP=2)
    try:
        assert ctl.owns_server and ctl.config.uri is None
        server = psutil.Process(ctl.server_pid)
        assert server.is_running() and ctl.uri.startswith("mongodb://127.0.0.1:")
        ctl.start_generators(_notebook_module().factory, n=1, n_samples=4)
        ds = ctl.dataset(timeout=60, output="numpy")
        assert ds[0]["image"].shape == (8, 8, 8)
    finally:
        ctl.stop(timeout=10)
    assert _gone(server.pid), "the private server outlived stop()"
    assert not ctl.owns_server
    with pytest.raises(RuntimeError, match="stopped"):
        ctl.start_manager()


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
        before = infos["good-0"].produced
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
    assert all(_gone(pid) for pid in pids)
    assert not [p for p in psutil.Process().children(recursive=True) if p.pid in pids]


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
    wait_until(lambda: all(_gone(p) for p in [*info["pids"], info["server"]]), 15,
           "the workers and the private server to end with the interpreter")
