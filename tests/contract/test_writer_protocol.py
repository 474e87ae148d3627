"""The writer side of the protocol: fencing, bounded retired generations, recorded settings, clean-up.

Real server, single process unless a process boundary is the point (exit, a slow write's livelock).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from helpers import child_env, run_py, sample
from wirehead import ConfigError, WireheadConfig, WireheadGenerator, WireheadManager
from wirehead.reader import Reader
from wirehead.store import STATE_ID, Store
from wirehead.swapper import Swapper


def whole(store: Store, sid: str) -> bool:
    got = store.get_samples([sid]).get(sid)
    return got is not None and len(got[1]) == got[0]["nchunks"]


# -- item 1: a writer fenced between its last check and its commit restores its sample -------------

def test_a_sweep_during_a_paused_commit_never_leaves_a_broken_committed_sample(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=8, ORPHAN_SECONDS=1.0, CHUNKSIZE=1)
    gen = WireheadGenerator(config=cfg, name="paused")
    sweeper = Swapper(Store(cfg))
    original = gen.store.commit
    swept: list[int] = []

    def commit_after_a_pause(sid: str, g: int, cap: int, stored_bytes: int = 0, fresh: bool = False) -> Any:
        if not swept:
            # as if this process was SIGSTOPped here for longer than ORPHAN_SECONDS: its heartbeat and
            # its chunks are that old when a sweep runs
            old = time.time() - 10
            gen.store.temp.update_one({"_id": gen.worker_id}, {"$set": {"beat": old}})
            gen.store.chunks.update_many({"sid": sid}, {"$set": {"t": old}})
            assert sweeper.try_lease()
            swept.append(sweeper._sweep_orphans())
            assert not whole(gen.store, sid)  # the sweep took the chunks of the uncommitted sample
        return original(sid, g, cap, stored_bytes, fresh=fresh)

    gen.store.commit = commit_after_a_pause  # type: ignore[method-assign]
    with gen:
        sid = gen.push(sample(7, (64, 64, 64)))  # 1 MiB chunks: several of them
    assert swept == [1]
    store = Store(cfg)
    assert sid in store.gen_doc(0).members
    assert whole(store, sid)  # restored by the fenced writer under its new id before push() returned
    sweeper._next_orphan_sweep = 0.0
    store.chunks.update_many({"sid": sid}, {"$set": {"t": time.time() - 10}})
    sweeper._sweep_orphans()
    assert whole(store, sid)  # committed: never swept again


def test_a_fenced_writer_rewrites_under_a_new_id_and_gives_up_after_bounded_rewrites(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=8)
    gen = WireheadGenerator(config=cfg, name="fenced")
    ids: list[str] = []
    original = gen.store.put_sample

    def put_then_get_fenced(sid: str, chunks: Any, manifest: Any, writer: Any = None, replace: bool = False) -> None:
        original(sid, chunks, manifest, writer=writer, replace=replace)
        ids.append(writer)
        if len(ids) <= fence_times:
            assert gen.store.fence_writer(writer, time.time() + 60)  # a sweep that saw it silent

    gen.store.put_sample = put_then_get_fenced  # type: ignore[method-assign]
    fence_times = 2
    with gen:
        sid = gen.push(sample(1))
        assert len(set(ids)) == 3  # two fenced ids, then a fresh one that committed
        assert whole(gen.store, sid) and gen.store.gen_doc(0).members == (sid,)
        assert gen.store.chunks.count_documents({}) == gen.store.chunks.count_documents({"sid": sid})
        ids.clear()
        fence_times = 100
        with pytest.raises(Exception, match="fenced by the orphan sweep 4 times"):
            gen.push(sample(2))
    assert gen.store.gen_doc(0).members == (sid,)


# -- item 2: a slow write commits (no rewrite loop) ----------------------------------------------

def _slow_write_under_sweeps(gen_cfg: Any, mgr_cfg: Any) -> None:
    """A generator (``gen_cfg``) in its own process writes one sample, a chunk a second, while a manager
    (``mgr_cfg``) sweeps orphans all along: the sample is written once (never fenced) and committed whole."""
    code = f"""
import json, time
from wirehead import WireheadConfig, WireheadGenerator
from wirehead.store import Store
import numpy as np
cfg = WireheadConfig.load(json.loads({json.dumps(json.dumps({k.upper(): v for k, v in gen_cfg.to_dict().items() if v is not None}))}))
original = Store._insert_many
writes = []
def slow(self, docs):
    for d in docs:
        original(self, [d]); writes.append(1); time.sleep(1.0)
Store._insert_many = slow
g = WireheadGenerator(config=cfg)
try:  # a manager sweeping meanwhile does not take it: its writer is alive
    sid = g.push((np.ones((80, 80, 80), np.float32), np.ones((80, 80, 80), np.int32)))
finally:
    g.close()
print(json.dumps({{"sid": sid, "writes": len(writes)}}))
"""
    # a manager sweeps all along
    mgr = WireheadManager(config=mgr_cfg)
    stop = threading.Event()

    def manage() -> None:
        while not stop.is_set():
            mgr.swapper._next_orphan_sweep = 0.0
            mgr.step()
            stop.wait(0.1)

    t = threading.Thread(target=manage, daemon=True)
    t.start()
    try:
        out = run_py(code, timeout=60, env=child_env())
    finally:
        stop.set()
        t.join(10)
        mgr.close()
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    store = Store(gen_cfg)
    nchunks = store.get_manifests([res["sid"]])[res["sid"]]["nchunks"]
    assert nchunks >= 4 and res["writes"] == nchunks  # written once (about 5 s > ORPHAN_SECONDS): no rewrite
    assert res["sid"] in store.gen_doc(0).members and whole(store, res["sid"])


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_a_write_slower_than_orphan_seconds_commits_once(make_config: Any) -> None:
    # the sweep fences a writer silent for ORPHAN_SECONDS: 3 s, so a loaded machine that holds the writer's
    # heartbeat thread back for a second does not make it look dead; its write takes longer than that
    cfg = make_config(SWAP_CAP=4, ORPHAN_SECONDS=3.0, HEARTBEAT_SECONDS=0.1, DEAD_AFTER_SECONDS=3.0, CHUNKSIZE=1)
    _slow_write_under_sweeps(cfg, cfg)


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_a_manager_whose_orphan_seconds_is_shorter_than_a_generators_heartbeat_does_not_fence_it(
        make_config: Any) -> None:
    # processes started with different configs: the generator beats every 2 s (the default), the manager
    # takes 0.5 s of silence for death; between two beats the writer would look dead, and its sample would be
    # taken and written again, chunk after chunk.  A writer is given at least three of its own beats.
    gen_cfg = make_config(SWAP_CAP=4, CHUNKSIZE=1)
    _slow_write_under_sweeps(gen_cfg, gen_cfg.replace(ORPHAN_SECONDS=0.5))


# -- item 6: settings recorded in the state document ---------------------------------------------

def test_processes_with_other_protocol_settings_are_refused_at_start(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=4, SAMPLE=["image", "label"])
    with WireheadGenerator(config=cfg) as g:
        g.push(sample(1))
    with pytest.raises(ConfigError, match=r"SWAP_CAP of this process \(8\).*\(4\).*wirehead clean"):
        WireheadGenerator(config=cfg.replace(SWAP_CAP=8)).push(sample(2))
    with pytest.raises(ConfigError, match="SWAP_CAP"):
        WireheadManager(config=cfg.replace(SWAP_CAP=2)).step()
    with pytest.raises(ConfigError, match=r"SAMPLE of this process \(\['input', 'label'\]\)"):
        len(Reader(Store(cfg.replace(SAMPLE=["input", "label"]))))
    from wirehead.monitor import snapshot
    with pytest.raises(ConfigError, match="SWAP_CAP"):
        snapshot(cfg.replace(SWAP_CAP=5))
    assert Store(cfg).gen_doc(0).n == 1  # nothing was committed by the refused processes


def test_a_cache_made_before_settings_were_recorded_adopts_the_first_writers(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=4)
    store = Store(cfg)
    store.ensure_schema()
    store.counters.update_one({"_id": STATE_ID}, {"$unset": {"swap_cap": "", "sample": "", "protocol": ""}})
    with WireheadGenerator(config=cfg.replace(SWAP_CAP=3)) as g:  # the first writer after the upgrade
        g.push(sample(1))
    assert store.counters.find_one({"_id": STATE_ID})["swap_cap"] == 3
    with pytest.raises(ConfigError, match="SWAP_CAP"):
        Store(cfg).state()


def test_a_generator_running_across_a_clean_and_a_re_create_with_other_settings_is_refused(
        make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=4)
    gen = WireheadGenerator(config=cfg, name="before-clean")
    try:
        gen.push(sample(1))
        Store(cfg).drop_database()  # what `wirehead clean` does
        other = Store(cfg.replace(SWAP_CAP=2))
        other.ensure_schema()  # the cache made again, by a process with another SWAP_CAP
        with pytest.raises(ConfigError, match=r"SWAP_CAP of this process \(4\).*\(2\)"):
            gen.push(sample(2))
        assert other.gen_doc(0).n == 0, "a sample was committed with the settings of the deleted cache"
    finally:
        gen.close(deadline=0)


# -- item 7: storage bounded whatever the swap rate ----------------------------------------------

def test_retired_generations_are_bounded_whatever_the_swap_rate(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2, GRACE_SECONDS=60.0, POLL_SECONDS=0.01, RETIRED_GENERATIONS=1)
    store = Store(cfg)
    most_gens = most_samples = 0
    with WireheadGenerator(config=cfg) as g:
        for i in range(40):  # no manager: the generator swaps each full generation at once
            g.push(sample(i))
            g._last_help = 0.0  # do the swapper's step (collection) after every commit
            most_gens = max(most_gens, len(store.gen_docs(members=False)))
            most_samples = max(most_samples, store.counts()["samples"])
    swaps = store.state().swaps
    print(f"\nSIZING SWAP_CAP=2 RETIRED_GENERATIONS=1 GRACE_SECONDS=60: swaps={swaps} "
          f"most_generations={most_gens} most_samples={most_samples}")
    assert swaps >= 15
    # read + write + next write generation + RETIRED_GENERATIONS retired, each at most SWAP_CAP samples
    assert most_gens <= 3 + 1, most_gens
    assert most_samples <= (3 + 1) * 2 + 1, most_samples  # + the sample in flight


@pytest.mark.slow
@pytest.mark.parametrize("manager", [False, True], ids=["generators-swap", "with-manager"])
def test_storage_is_bounded_at_every_moment_whoever_swaps(make_config: Any, manager: bool) -> None:
    """Two fast generators (and a manager, or none) swap as fast as they can; a watcher reads every
    generation's size as often as it can: never more than (RETIRED_GENERATIONS + 3) x SWAP_CAP committed."""
    cfg = make_config(SWAP_CAP=2, RETIRED_GENERATIONS=1, GRACE_SECONDS=60.0)
    store = Store(cfg)
    store.ensure_schema()
    bound = (cfg.retired_generations + 3) * cfg.swap_cap
    stop = threading.Event()
    seen: list[tuple[int, int]] = []  # (generations, committed samples) at each look
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            with WireheadGenerator(config=cfg, name=f"fast-{k}") as g:
                i = 0
                while not stop.is_set():
                    g.push(sample(k * 100_000 + i))
                    i += 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def watch() -> None:
        while not stop.is_set():
            counts = store.gen_counts()
            seen.append((len(counts), sum(n for n, _ in counts.values())))

    mgr = WireheadManager(config=cfg) if manager else None
    threads = [threading.Thread(target=write, args=(k,)) for k in (1, 2)] + [threading.Thread(target=watch)]
    if mgr is not None:
        threads.append(threading.Thread(target=mgr.run))
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 60
        while store.state().swaps < 60 and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
    finally:
        stop.set()
        if mgr is not None:
            mgr.stop()
        for t in threads:
            t.join(30)
    assert not errors, errors
    swaps = store.state().swaps
    most_gens, most = max(g for g, _ in seen), max(n for _, n in seen)
    print(f"\nSIZING manager={manager}: {swaps} swaps, {len(seen)} looks, most generations {most_gens}, "
          f"most committed samples {most} (bound {bound})")
    assert swaps >= 60
    assert most <= bound and most_gens <= cfg.retired_generations + 3, (most, most_gens)


def test_retired_generations_zero_deletes_a_replaced_read_generation_at_once(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=1, GRACE_SECONDS=60.0, RETIRED_GENERATIONS=0)
    with WireheadGenerator(config=cfg) as g:
        for i in range(3):
            g.push(sample(i))
    mgr = WireheadManager(config=cfg)
    with mgr:
        mgr.step()
    st = Store(cfg).state()
    assert [d.gen for d in Store(cfg).gen_docs(members=False) if d.gen < st.read_gen] == []


@pytest.mark.slow  # three processes for a few seconds: `-m "not slow"` skips it
def test_writers_committing_into_one_generation_at_once_each_get_their_own_slot(make_config: Any) -> None:
    # the slot decides who swaps a generation it filled (and says the generation is full): a slot given
    # twice leaves a full generation nobody swaps. SecantusDB returns a stale pre-image from a conditional
    # update that raced another (two writers told slot 2, none slot 3), so commit must not rely on one.
    cap, gens, writers = 3, 40, 3
    cfg = make_config(SWAP_CAP=cap)
    store = Store(cfg)
    store.ensure_schema()
    for g in range(gens):
        store.ensure_gen(g)
    code = (
        "import json, sys\n"
        "from wirehead import WireheadConfig\n"
        "from wirehead.store import Store\n"
        "store = Store(WireheadConfig.load(json.loads(sys.argv[1])))\n"
        "store.ensure_schema()\n"
        "sys.stdin.readline()  # all writers start at once\n"
        "slots = [store.commit(f'{sys.argv[2]}-{g}', g, int(sys.argv[3]), fresh=True) for g in range(int(sys.argv[4]))]\n"
        "print(json.dumps(slots))\n")
    keys = json.dumps({"MONGO_URI": cfg.mongo_uri, "DBNAME": cfg.dbname, "SWAP_CAP": cap,
                       "SAMPLE": list(cfg.sample)})
    procs = [subprocess.Popen([sys.executable, "-c", code, keys, f"w{k}", str(cap), str(gens)], env=child_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(writers)]
    try:
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    slots = [json.loads(out) for out, _ in outs]
    for g in range(gens):
        got = sorted(s[g] for s in slots if s[g] is not None)
        assert got == list(range(min(cap, writers))), f"generation {g}: slots {got}"
        assert store.gen_counts()[g][0] == min(cap, writers)


# -- item 12 ---------------------------------------------------------------------------------

def test_commit_is_idempotent_across_existing_generations(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    store = Store(cfg)
    store.ensure_schema()
    store.ensure_gen(1)
    assert store.commit("a", 0, 2) == 0
    assert store.commit("a", 1, 2) == 0  # generation 1 exists: still not committed twice
    assert store.gen_doc(1).members == ()
    assert store.commit("b", 1, 2, fresh=True) == 0  # the caller's promise: never committed before


@pytest.mark.parametrize("key", ["CONNECT_TIMEOUT", "POLL_SECONDS", "RETRY_DEADLINE", "GRACE_SECONDS"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_infinite_or_nan_seconds_are_refused(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"{key}=.*finite"):
        WireheadConfig(SWAP_CAP=1, **{key: value})


def test_retired_generations_is_validated() -> None:
    with pytest.raises(ConfigError, match="RETIRED_GENERATIONS"):
        WireheadConfig(SWAP_CAP=1, RETIRED_GENERATIONS=-1)
    assert WireheadConfig(SWAP_CAP=1).retired_generations == 1


# -- item 11: no leaks --------------------------------------------------------------------------

def _heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("wirehead-heartbeat-leak")]


def test_a_generator_dropped_without_close_stops_its_thread_and_says_stopped(make_config: Any) -> None:
    cfg = make_config(HEARTBEAT_SECONDS=0.1, DEAD_AFTER_SECONDS=1.0)
    for k in range(5):
        g = WireheadGenerator(config=cfg, name=f"leak{k}")
        g.push(sample(k))
    assert len(_heartbeat_threads()) >= 1
    del g
    gc.collect()
    deadline = time.monotonic() + 10
    while _heartbeat_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _heartbeat_threads() == []
    records = [r for r in Store(cfg).workers() if r.get("name", "").startswith("leak")]
    assert len(records) == 5 and {r["status"] for r in records} == {"stopped"}
    assert all(r["produced"] == 1 and r["progress_at"] for r in records)


def test_a_process_that_exits_without_close_records_its_generator_and_manager_stopped(make_config: Any) -> None:
    cfg = make_config()
    keys = json.dumps({k.upper(): v for k, v in cfg.to_dict().items() if v is not None})
    code = f"""
import json, numpy as np
from wirehead import WireheadConfig, WireheadGenerator, WireheadManager
cfg = WireheadConfig.load(json.loads({keys!r}))
g = WireheadGenerator(config=cfg, name="exits")
g.push((np.ones((2, 2), np.float32), np.ones((2, 2), np.int32)))
m = WireheadManager(config=cfg, name="exits-mgr")
m.step()
"""
    out = run_py(code, timeout=60, env=child_env())
    assert out.returncode == 0, out.stderr[-2000:]
    recs = {r["name"]: r for r in Store(cfg).workers()}
    assert recs["exits"]["status"] == "stopped" and recs["exits-mgr"]["status"] == "stopped"
    assert Store(cfg).state().lease_holder is None


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_a_process_whose_server_is_gone_exits_promptly_however_many_workers_it_left_open(tmp_path: Any) -> None:
    # each generator and manager left open signs off at exit (lease, final status, client); with the server
    # gone, the first to find it unreachable must spare the others the wait (5 of them waited ~3.5 s each)
    code = """
import sys, time, numpy as np
from wirehead import LocalMongo, WireheadGenerator, WireheadManager
server = LocalMongo().start()
keep = []
for k in range(3):
    cfg = {"DBNAME": f"gone{k}", "SWAP_CAP": 4}
    m = WireheadManager(config=cfg, uri=server.uri, name=f"m{k}")
    m.step()
    g = WireheadGenerator(config=cfg, uri=server.uri, name=f"g{k}")
    g.push((np.ones((2, 2), np.float32), np.ones((2, 2), np.int32)))
    keep += [m, g]
server.stop()
print(time.time(), flush=True)
"""
    out = run_py(code, timeout=120, env=child_env(WIREHEAD_HOME=str(tmp_path)))
    ended = time.time()
    assert out.returncode == 0, out.stderr[-2000:]
    took = ended - float(out.stdout.split()[-1])
    assert took < 8, f"exit took {took:.1f} s after the server stopped, with 6 workers left open"


def test_generator_and_manager_are_context_managers(make_config: Any) -> None:
    cfg = make_config()
    with WireheadGenerator(config=cfg, name="ctx") as g:
        g.push(sample(1))
        assert any(t.name == "wirehead-heartbeat-ctx" for t in threading.enumerate())
    assert not any(t.name == "wirehead-heartbeat-ctx" for t in threading.enumerate())
    with WireheadManager(config=cfg, name="ctx-mgr") as m:
        m.step()
    recs = {r["name"]: r["status"] for r in Store(cfg).workers()}
    assert recs == {"ctx": "stopped", "ctx-mgr": "stopped"}
