"""The notebook in real Jupyter kernels: interrupt, re-run, shutdown and restart leave workers and /tmp right.

Kernels are started with jupyter_client on 127.0.0.1 and always shut down (also when a test fails).
The figures printed with ``-s`` (``LIFECYCLE ...`` lines) are the ones in the README's Notebooks section.
"""

from __future__ import annotations

import contextlib
import queue
import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

from helpers import child_env, drop_database, gone, wait_until

pytestmark = pytest.mark.slow  # slow: real processes, kernels or browsers for long; `-m "not slow"` skips

jupyter_client = pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")


@contextlib.contextmanager
def kernel(env: dict[str, str], cwd: Path) -> Iterator[tuple[Any, Any]]:
    """A python3 kernel (this interpreter) and a client; shut down (hard) however the test ends."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env, cwd=str(cwd))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=90)
        yield km, kc
    finally:
        kc.stop_channels()
        if km.has_kernel and km.is_alive():
            km.shutdown_kernel(now=True)
        km.cleanup_resources()


def run(kc: Any, code: str, timeout: float = 120) -> str:
    """Execute ``code`` in the kernel; return its stdout; fail with the kernel's traceback on an error."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            out.append(msg["content"]["text"])

    reply = kc.execute_interactive(textwrap.dedent(code), timeout=timeout, output_hook=hook)
    content = reply["content"]
    assert content["status"] == "ok", "\n".join(content.get("traceback", [])) or content
    return "".join(out)


def last_json(text: str) -> Any:
    return json.loads(text.strip().splitlines()[-1])


SETUP = '''
import json, time
import numpy as np
from wirehead import WireheadController

def factory(rank):
    while True:
        time.sleep(0.02)
        yield np.full((8, 8, 8), rank, np.float32), np.zeros((8, 8, 8), np.uint8)
'''

CONTROLLER_CELL = '''
ctl = WireheadController(SWAP_CAP=4, SAMPLE=["image", "label"], {uri})
ctl.start_manager(mode="{mode}")
ctl.start_generators(factory, n=2, mode="{mode}")
dash = ctl.dashboard(interval=0.2)
print(json.dumps({{"workers": [w.pid for w in ctl.workers() if w.mode == "process"],
                   "server": ctl.server_pid,
                   "watchdog": ctl._runtime.server.process.pid if ctl.owns_server else None,
                   "dbpath": str(ctl._runtime.server.dbpath) if ctl.owns_server else None}}))
ctl
'''

PRODUCED = '''
print(json.dumps({"produced": {g.name: g.produced for g in ctl.snapshot().generators if g.status == "alive"},
                  "states": sorted({w.state for w in ctl.workers()}), "errors": ctl.status().errors}))
'''


def _produced(kc: Any) -> dict[str, Any]:
    return last_json(run(kc, PRODUCED))


def _keeps_producing(kc: Any, what: str) -> None:
    """Every worker still runs, none errored, and both generators commit more samples."""
    before = wait_until(lambda: (lambda p: p if len(p["produced"]) == 2 else None)(_produced(kc)), 60,
                        f"two alive generators ({what})")
    after = wait_until(lambda: (lambda p: p if all(p["produced"].get(n, -1) > c + 3
                                                   for n, c in before["produced"].items()) else None)(_produced(kc)),
                       60, f"both generators to keep producing ({what})")
    assert after["states"] == ["running"] and not after["errors"], after


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_interrupt_reaches_no_worker_and_rerunning_the_cell_replaces_the_controller(
        mode: str, mongo_uri: str, dbname: str, tmp_path: Path) -> None:
    env = child_env(mongo_uri)
    cell = CONTROLLER_CELL.format(mode=mode, uri=f"DBNAME={dbname!r}")
    try:
        with kernel(env, tmp_path) as (km, kc):
            run(kc, SETUP)
            first = last_json(run(kc, cell))
            _keeps_producing(kc, "after the start")

            # interrupt during a busy cell: only the cell stops
            msg_id = kc.execute("print('inside the busy cell', flush=True); time.sleep(120)")
            wait_until(lambda: _busy(kc, msg_id), 60, "the kernel to run the busy cell")
            t0 = time.monotonic()
            reply = None
            for sent in range(1, 4):
                # ipykernel can lose an interrupt that lands while its own code (not the cell's) runs, as a user
                # pressing the button again would see; every one of them also reaches the kernel's process group
                km.interrupt_kernel()
                with contextlib.suppress(queue.Empty):
                    reply = kc.get_shell_msg(timeout=20)
                    break
            assert reply is not None, "three interrupts did not end the busy cell"
            print(f"LIFECYCLE interrupt busy {mode}: {sent} interrupt(s) sent")
            assert reply["parent_header"]["msg_id"] == msg_id
            assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
            print(f"LIFECYCLE interrupt busy {mode}: cell ended after {time.monotonic() - t0:.2f} s")
            _keeps_producing(kc, "after an interrupt of a busy cell")
            assert all(not gone(p) for p in first["workers"])

            # interrupt while idle
            km.interrupt_kernel()
            _keeps_producing(kc, "after an interrupt while idle")
            assert all(not gone(p) for p in first["workers"])

            # re-run the controller cell (Out[n] holds the old controller): the old workers stop
            second = last_json(run(kc, cell))
            assert all(gone(p) for p in first["workers"]), "the previous controller's processes still run"
            out = last_json(run(kc, "print(json.dumps([sum(h.alive for h in r.handles) for r in "
                                    "__import__('wirehead.notebook.controller', fromlist=['x'])._RUNTIMES]))"))
            assert sorted(out)[:-1] == [0] * (len(out) - 1), f"old controllers still run workers: {out}"
            _keeps_producing(kc, "after re-running the controller cell")
            assert len(second["workers"]) == (3 if mode == "process" else 0)
            run(kc, "ctl.stop()")
    finally:
        drop_database(mongo_uri, dbname)


def _busy(kc: Any, msg_id: str) -> bool:
    """Whether the cell ``msg_id`` runs its code now: it printed its marker.  (``execute_input`` comes before
    the code runs; an interrupt then hits the kernel's loop, not the cell, and the cell goes on.)"""
    with contextlib.suppress(Exception):
        while True:
            msg = kc.get_iopub_msg(timeout=0.2)
            if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream"
                    and "inside the busy cell" in msg["content"].get("text", "")):
                return True
    return False


@pytest.mark.parametrize("action", ["shutdown", "restart"])
@pytest.mark.parametrize("mode", ["process", "thread"])
def test_kernel_shutdown_and_restart_leave_no_process_and_no_tmp_folder(mode: str, action: str,
                                                                         tmp_path: Path) -> None:
    env = child_env()
    env.pop("WIREHEAD_MONGO_URI", None)  # a private server with a temporary data folder
    with kernel(env, tmp_path) as (km, kc):
        run(kc, SETUP)
        info = last_json(run(kc, CONTROLLER_CELL.format(mode=mode, uri="")))
        _keeps_producing(kc, "before the shutdown")
        pids = [*info["workers"], info["server"], info["watchdog"]]
        dbpath = Path(info["dbpath"])
        assert dbpath.is_dir() and dbpath.name.startswith("wirehead-mongo-")
        t0 = time.monotonic()
        if action == "shutdown":
            km.shutdown_kernel(now=False)
        else:
            km.restart_kernel(now=False)
        returned = time.monotonic() - t0
        wait_until(lambda: all(gone(p) for p in pids) and not dbpath.exists(), 60,
                   f"workers {info['workers']}, server {info['server']} and {dbpath} to be gone")
        took = time.monotonic() - t0
        print(f"LIFECYCLE {action} {mode}: jupyter_client returned after {returned:.2f} s, everything gone after "
              f"{took:.2f} s")
        if action == "restart":
            kc.wait_for_ready(timeout=90)
            assert run(kc, "print(1 + 1)").strip() == "2"


# -- the private server and its watchdog -----------------------------------------------------------
def test_private_server_stops_promptly_without_sigkill_or_zombie(caplog: pytest.LogCaptureFixture) -> None:
    from wirehead.server import LocalMongo

    for _ in range(4):
        server = LocalMongo().start()
        watchdog, dbpath = server.process.pid, server.dbpath
        engine = [c.pid for c in psutil.Process(watchdog).children()]
        assert len(engine) == 1
        t0 = time.monotonic()
        with caplog.at_level("WARNING", logger="wirehead.server"):
            server.stop()
        took = time.monotonic() - t0
        print(f"LIFECYCLE LocalMongo.stop: {took:.2f} s")
        assert took < 5, f"stopping the private server took {took:.1f} s"
        assert not [r for r in caplog.records if "killing" in r.getMessage()]
        assert gone(watchdog) and all(gone(p) for p in engine), "server or watchdog left behind"
        assert not dbpath.exists()


OWNER = '''
import json, sys, time
from wirehead.server import LocalMongo
server = LocalMongo().start()
engine = [c.pid for c in __import__("psutil").Process(server.process.pid).children()]
print(json.dumps({"watchdog": server.process.pid, "engine": engine, "dbpath": str(server.dbpath)}), flush=True)
time.sleep(600)
'''


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_watchdog_removes_the_temporary_folder_when_the_owner_dies(sig: int, tmp_path: Path) -> None:
    env = child_env()
    proc = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=str(tmp_path))
    try:
        info = json.loads(proc.stdout.readline())
        dbpath = Path(info["dbpath"])
        assert dbpath.is_dir()
        t0 = time.monotonic()
        proc.send_signal(sig)
        proc.wait(30)
        wait_until(lambda: all(gone(p) for p in [info["watchdog"], *info["engine"]]) and not dbpath.exists(), 30,
                   f"the server and {dbpath} to be gone")
        print(f"LIFECYCLE owner {signal.Signals(sig).name}: server and folder gone after {time.monotonic() - t0:.2f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def run_cell(kc: Any, code: str, cell_id: str, timeout: float = 120) -> str:
    """Execute ``code`` as notebook cell ``cell_id`` (the ``cellId`` JupyterLab and nbclient send); return stdout."""
    content = {"code": textwrap.dedent(code), "silent": False, "store_history": True, "user_expressions": {},
               "allow_stdin": False, "stop_on_error": True}
    msg = kc.session.msg("execute_request", content, metadata={"cellId": cell_id})
    kc.shell_channel.send(msg)
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"cell {cell_id} did not finish within {timeout} s"
        m = kc.get_iopub_msg(timeout=left)
        if m["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
            continue
        if m["msg_type"] == "stream" and m["content"]["name"] == "stdout":
            out.append(m["content"]["text"])
        elif m["msg_type"] == "error":
            raise AssertionError("\n".join(m["content"]["traceback"]))
        elif m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return "".join(out)


WIDGET_CELL = '''
dash = ctl.dashboard(interval=0.2)
view = ctl.viewer()
view.follow = True
view.thumbnails = True
'''

WIDGET_STATE = '''
import threading
from wirehead.notebook.refresher import REFRESHER
print(json.dumps({"tasks": sorted(REFRESHER.tasks()),
                  "threads": sorted(t.name for t in threading.enumerate() if t.name.startswith("wirehead"))}))
'''


def test_rerunning_a_widget_cell_leaves_one_poller_and_stop_leaves_no_wirehead_thread(
        mongo_uri: str, dbname: str, tmp_path: Path) -> None:
    env = child_env(mongo_uri)
    try:
        with kernel(env, tmp_path) as (_, kc):
            run(kc, SETUP)
            run(kc, f'ctl = WireheadController(SWAP_CAP=4, SAMPLE=["image", "label"], DBNAME={dbname!r})\n'
                    'ctl.start_manager(mode="thread")\nctl.start_generators(factory, n=1, mode="thread")\n'
                    'ctl._wait_first_generation(60)')
            for _ in range(5):  # the user re-runs the widget cell
                run_cell(kc, WIDGET_CELL, "widget-cell")
            state = last_json(run(kc, WIDGET_STATE))
            print(f"LIFECYCLE widget cell run 5 times: tasks {state['tasks']}, threads {state['threads']}")
            assert state["tasks"].count("refresh") == 1, f"one dashboard poller, not {state['tasks']}"
            assert state["tasks"].count("follow") == 1, state
            assert state["threads"].count("wirehead-refresher") == 1, state
            for _ in range(3):  # a console sends no cell id: the same code again is the same cell
                run(kc, WIDGET_CELL)
            assert sorted(last_json(run(kc, WIDGET_STATE))["tasks"]).count("refresh") == 2  # this one's + the cell's
            run(kc, "ctl.stop()")
            left = wait_until(lambda: (lambda s: s if not s["threads"] else None)(last_json(run(kc, WIDGET_STATE))),
                              30, "every wirehead thread to end after ctl.stop()")
            assert left["tasks"] == [], left
    finally:
        drop_database(mongo_uri, dbname)
