"""Writer-side faults with real processes: a generator frozen mid-write past ORPHAN_SECONDS, a server
stopped or frozen under a running generator, manager and reader (deadlines).

The figures are printed (pytest -s) for the README's fault table.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from helpers import Lines, Workers, child_env, freeze_group, kill_tree, wait_until, write_config
from wirehead import LocalMongo, StoreUnavailable, WireheadConfig, WireheadGenerator, WireheadManager
from wirehead.chunks import decode
from wirehead.store import Store
from wirehead.synth import check_self_checking

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # slow: real processes for long; `-m "not slow"` skips


def _decoded(store: Store, sid: str) -> Any:
    """The sample ``sid`` decoded, or None when it is not whole."""
    got = store.get_samples([sid]).get(sid)
    if got is None or len(got[1]) != got[0]["nchunks"]:
        return None
    return decode(got[0]["meta"], b"".join(got[1]))


def test_a_generator_frozen_mid_write_past_orphan_seconds_loses_nothing(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=50, CHUNKSIZE=1, ORPHAN_SECONDS=2.0, HEARTBEAT_SECONDS=0.2,
                      DEAD_AFTER_SECONDS=1.0, GRACE_SECONDS=120.0, RETIRED_GENERATIONS=100)
    store = Store(cfg)
    store.ensure_schema()
    with Workers(cfg) as w:
        w.start("manager", "--duration", "120")  # sweeps orphans every second
        g = w.start("generator", "--gid", "1", "--shape", "96", "96", "96", "--slow-chunks", "0.05")
        g.wait_for("COMMITTED", count=2)  # it has a write generation with room: the fast commit path
        chunks_so_far = sum(1 for ln in list(g.lines) if ln == "CHUNK")
        g.wait_for("CHUNK", count=chunks_so_far + 2)  # inside put_sample, between two chunk writes
        g.kill(signal.SIGSTOP)
        t_stop = time.monotonic()

        def uncommitted() -> int:
            return len(set(store.chunks.distinct("sid")) - store.live_members())

        try:
            assert uncommitted() == 1  # its sample in flight
            wait_until(lambda: uncommitted() == 0, 30, "the sweep to delete the frozen writer's chunks")
            frozen_s = time.monotonic() - t_stop
            committed_before = len(g.committed())
        finally:
            g.kill(signal.SIGCONT)
        g.wait_for("COMMITTED", count=committed_before + 3, timeout=60)
        g.kill(signal.SIGTERM)
    committed = g.committed()
    members = store.live_members()
    broken = []
    for sid, sample_id in committed:
        s = _decoded(store, sid)
        if sid not in members or s is None:
            broken.append(sid)
            continue
        assert check_self_checking(s["image"], s["label"]) == sample_id
    fenced = store.temp.count_documents({"fenced": True})
    print(f"\nFAULTS generator-sigstop-mid-write: frozen={frozen_s:.1f}s (ORPHAN_SECONDS=2) fenced_writers={fenced} "
          f"committed={len(committed)} lost_or_broken_committed={len(broken)}")
    assert broken == []
    assert fenced >= 1


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[LocalMongo]:
    server = LocalMongo(tmp_path / "db").start()
    try:
        yield server
    finally:
        try:
            os.killpg(server.pid, signal.SIGCONT)
        except (ProcessLookupError, TypeError, PermissionError):
            pass
        server.stop()


def _cfg(server: LocalMongo, dbname: str, **keys: Any) -> WireheadConfig:
    base = dict(MONGO_URI=server.uri, DBNAME=dbname, SWAP_CAP=4, SAMPLE=["image", "label"], RETRY_DEADLINE=3.0,
                CONNECT_TIMEOUT=2.0, POLL_SECONDS=0.05, LEASE_SECONDS=2.0, HEARTBEAT_SECONDS=0.5,
                DEAD_AFTER_SECONDS=2.0)
    base.update(keys)
    return WireheadConfig.load(base)


def test_generator_and_manager_fail_within_retry_deadline_when_the_server_goes(private_server: LocalMongo,
                                                                                dbname: str) -> None:
    cfg = _cfg(private_server, dbname)
    outcome: dict[str, Any] = {}

    def samples() -> Iterator[Any]:
        while True:
            yield np.ones((8, 8, 8), np.float32), np.ones((8, 8, 8), np.int32)
            time.sleep(0.01)

    gen = WireheadGenerator(samples(), config=cfg)
    mgr = WireheadManager(config=cfg)

    def run(name: str, fn: Any) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - recorded for the assertions
            outcome[name] = (time.monotonic(), e)

    threads = [threading.Thread(target=run, args=("generator", gen.run), daemon=True),
               threading.Thread(target=run, args=("manager", mgr.run), daemon=True)]
    for t in threads:
        t.start()
    wait_until(lambda: Store(cfg).state().swaps >= 2, 60, "two swaps")
    private_server.stop()
    gone = time.monotonic()
    for t in threads:
        t.join(30)
    took = {name: round(at - gone, 1) for name, (at, _) in outcome.items()}
    print(f"\nFAULTS server-gone RETRY_DEADLINE=3: raised after {took}")
    for name in ("generator", "manager"):
        assert isinstance(outcome[name][1], StoreUnavailable), outcome[name][1]
        assert took[name] <= cfg.retry_deadline + 2.0, took


def test_a_frozen_server_does_not_block_a_read_past_its_deadline(private_server: LocalMongo, dbname: str) -> None:
    cfg = _cfg(private_server, dbname)
    store = Store(cfg)
    store.ensure_schema()
    freeze_group(private_server.pid)
    t0 = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable, match="did not answer"):
            store.gen_doc(0)
        took = time.monotonic() - t0
    finally:
        os.killpg(private_server.pid, signal.SIGCONT)
    print(f"\nFAULTS server-frozen RETRY_DEADLINE=3: one read raised after {took:.1f}s")
    assert took <= cfg.retry_deadline + 2.0
    def thawed() -> bool:
        try:
            return store.gen_doc(0) is not None
        except StoreUnavailable:  # a loaded machine: the thawed server may take a while to catch up
            return False

    wait_until(thawed, 60, "the same store to work again once the server is thawed")


def test_sigterm_stops_generator_and_manager_at_once_while_they_retry_a_frozen_server(
        private_server: LocalMongo, dbname: str, tmp_path: Path) -> None:
    """`scancel` (SIGTERM) of a job whose server is away: the generator and the manager stop within a second or
    two, cleanly (exit 0), instead of retrying out RETRY_DEADLINE first (60 s here)."""
    cfg = _cfg(private_server, dbname, RETRY_DEADLINE=60.0, SWAP_CAP=2)
    path = write_config(tmp_path / "cache.yaml", cfg)
    (tmp_path / "small_brains.py").write_text("from wirehead.synth import synth_generator\n\n"
                                              "def small(rank=0):\n    return synth_generator((12, 12, 12), seed=rank)\n")
    env = child_env(private_server.uri)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    procs = {
        "manager": subprocess.Popen([sys.executable, "-m", "wirehead", "manager", str(path)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "generator": subprocess.Popen([sys.executable, "-m", "wirehead", "generate", str(path), "--factory",
                                       "small_brains:small"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    }
    errs = {name: Lines(p.stderr) for name, p in procs.items()}
    try:
        store = Store(cfg)
        wait_until(lambda: store.state().swaps >= 2 or any(p.poll() is not None for p in procs.values()), 60,
                   "swaps")
        assert store.state().swaps >= 2, {n: errs[n].text()[-1500:] for n in procs}
        freeze_group(private_server.pid)
        for name in procs:  # both are inside a call that retries the frozen server
            assert errs[name].wait_for(lambda ln: "retrying for up to" in ln, 1, 30), errs[name].text()[-1500:]
        t0 = time.monotonic()
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):  # still retrying: None below
                p.wait(max(0.1, t0 + 30 - time.monotonic()))
        took = time.monotonic() - t0
        codes = {name: p.poll() for name, p in procs.items()}
    finally:
        os.killpg(private_server.pid, signal.SIGCONT)
        for p in procs.values():
            kill_tree(p)
    print(f"\nFAULTS sigterm-while-retrying: generator and manager stopped {took:.1f} s after SIGTERM "
          f"(RETRY_DEADLINE 60 s)")
    assert codes == {"manager": 0, "generator": 0}, {n: errs[n].text()[-1500:] for n in procs}
    assert took < 15, {n: errs[n].text()[-1500:] for n in procs}

