"""Readers and datasets on the real server: indices across generations of different sizes, reuse tickets
shared by DataLoader workers, the oversized batch, clean-up, and the checks a reader makes on what it reads."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from helpers import GenWatcher, Workers, check_reader_report, freeze_group, read_report, wait_until
from wirehead import MongoheadDataset, MongoTupleheadDataset, WireheadGenerator, WireheadManager
from wirehead.errors import WaitTimeout
from wirehead.fetch import WORKER_NAME
from wirehead.reader import VIEW_THREAD, Reader
from wirehead.store import Store
from wirehead.synth import check_self_checking

pytestmark = pytest.mark.timeout(300)


def _push(g: WireheadGenerator, values: range) -> list[str]:
    return [g.push((np.full(4, v, np.float32), np.zeros(4, np.int8))) for v in values]


_managers: dict[str, WireheadManager] = {}


def _swap(cfg: Any, read_gen: int) -> None:
    """Step this database's manager (one holder of the swap lease per test) until ``read_gen`` is read
    (a generator that fills a generation may swap it itself)."""
    if cfg.dbname not in _managers:
        _managers[cfg.dbname] = WireheadManager(config=cfg)
    _managers[cfg.dbname].step()
    assert Store(cfg).state().read_gen == read_gen


# -- item 3: any index a sampler drew from a len() this dataset reported is served -------------------------

def test_persistent_workers_serve_indices_of_a_larger_generation_the_main_process_saw(make_config: Any) -> None:
    # MIN_FILL makes a first generation of 2; the next one holds 6.  The workers' view is up to POLL_SECONDS
    # old, so right after the swap they still hold the 2-sample generation while the sampler uses len() == 6.
    cfg = make_config(SWAP_CAP=6, MIN_FILL=2, POLL_SECONDS=20.0)
    g = WireheadGenerator(config=cfg)
    _push(g, range(2))
    _swap(cfg, 0)
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=30)
    dl = DataLoader(ds, batch_size=1, num_workers=2, persistent_workers=True, collate_fn=list)
    first = [int(b[0]["image"][0]) for b in dl]
    assert sorted(first) == [0, 1]  # both workers now hold generation 0 (2 samples)
    _push(g, range(10, 16))
    g.close()
    _swap(cfg, 1)
    assert ds.reader.current(force=True).n == 6  # the main process (the sampler's len()) follows first
    second = [int(b[0]["image"][0]) for b in dl]  # indices 0..5 asked of workers that saw 2 samples
    assert len(second) == 6
    assert set(second[2:]) <= set(range(10, 16)), second  # beyond the stale generation: the state is re-read
    del dl


def test_an_index_below_swap_cap_wraps_onto_a_smaller_generation(make_config: Any) -> None:
    # another process reported len() == 6; this one only ever sees the next, smaller (sealed) generation
    cfg = make_config(SWAP_CAP=6)
    g = WireheadGenerator(config=cfg)
    _push(g, range(6))
    _swap(cfg, 0)
    assert len(MongoheadDataset(config=cfg, timeout=10)) == 6
    _push(g, range(20, 22))
    g.close()
    Store(cfg).seal(1)
    _swap(cfg, 1)
    with MongoheadDataset(config=cfg, output="numpy", timeout=10) as ds:
        assert len(ds) == 2
        assert int(ds[5]["image"][0]) in (20, 21)
        assert {int(s["image"][0]) for s in ds[[2, 3, 4, 5]].values()} == {20, 21}
        with pytest.raises(IndexError, match="SWAP_CAP=6"):
            ds[6]
        with pytest.raises(IndexError):
            ds[-1]


# -- item 4: the reuse budget is shared by DataLoader workers -----------------------------------------------

@pytest.mark.slow
def test_reuse_cap_with_four_workers_delivers_each_generations_whole_budget(make_config: Any) -> None:
    swap_cap, workers = 8, 4
    cfg = make_config(SWAP_CAP=swap_cap, REUSE_CAP=1, REUSE_POLICY="wait", GRACE_SECONDS=60.0, READ_TIMEOUT=60.0)
    store = Store(cfg)
    got: list[int] = []
    with Workers(cfg) as w, GenWatcher(store) as watch:
        w.start("manager", "--duration", "300")
        # training faster than generation (what REUSE_POLICY=wait is for): a generation fills in about 2 s, the
        # workers spend its 8 tickets in a fraction of that, also when a loaded machine stalls them for a while
        # (with 0.05 s the generations came every 0.25 s and a stalled reader left some tickets unclaimed)
        gens = [w.start("generator", "--gid", str(i), "--delay", "0.5") for i in (1, 2)]
        ds = MongoheadDataset(config=cfg, output="numpy", timeout=60)
        dl = DataLoader(ds, batch_size=1, num_workers=workers, collate_fn=list, persistent_workers=True)
        deadline = time.monotonic() + 180
        while len(watch.read_gens) < 6:  # 4 inner generations, read whole or not (the first and last in part)
            assert time.monotonic() < deadline, f"only generations {watch.read_gens} were swapped in 180 s"
            for batch in dl:  # whole epochs: no batch a worker claimed tickets for is left unread
                got.extend(check_self_checking(s["image"], s["label"]) for s in batch)
        del dl
        committed = dict((i, sid) for gw in gens for sid, i in gw.committed())
    twice = {sid: gs for sid, gs in watch.member_of.items() if len(gs) > 1}
    assert not twice, f"samples in two generations: {twice}"
    member = {sid: min(gs) for sid, gs in watch.member_of.items()}
    per_gen = Counter(member[committed[i]] for i in got)
    assert max(Counter(got).values()) == 1  # REUSE_CAP 1: no sample twice
    inner = sorted(per_gen)[1:-1]  # the first and last generations were read only in part
    assert len(inner) >= 3, per_gen
    # every ticket claimed is served (all-or-none claims of one batch): the whole budget, one batch per worker slack
    assert all(per_gen[gen] >= swap_cap - workers for gen in inner), per_gen
    assert sum(per_gen[gen] for gen in inner) >= (swap_cap - 1) * len(inner), per_gen


def test_a_reader_whose_view_is_stale_gets_no_tickets_of_a_deleted_generation(make_config: Any) -> None:
    # a DataLoader worker paused between two looks at the state claims on a generation that the swapper deleted
    # meanwhile (RETIRED_GENERATIONS); its counter must not come back with every ticket unclaimed (REUSE_CAP)
    cfg = make_config(SWAP_CAP=2, REUSE_CAP=1, REUSE_POLICY="wait", RETIRED_GENERATIONS=0, POLL_SECONDS=600.0)
    store = Store(cfg)
    g = WireheadGenerator(config=cfg)
    _push(g, range(2))
    _swap(cfg, 0)
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        first = int(ds[0]["image"][0])  # one of generation 0's two tickets; this view now stays on generation 0
        assert first in (0, 1)
        _push(g, range(10, 12))
        _swap(cfg, 1)
        _push(g, range(20, 22))
        _swap(cfg, 2)
        _swap(cfg, 2)  # collects: generation 0 and 1 are deleted
        assert store.gen_doc(0) is None and store.counters.find_one({"_id": "reads:0"}) is None
        assert ds.reader.current().gen == 0  # the stale view
        assert store.claim_tickets(0, 1, 2) == (0, 0)  # a deleted generation hands out no tickets
        assert store.counters.find_one({"_id": "reads:0"}) is None, "the deleted generation's counter came back"
        got = sorted(int(s["image"][0]) for s in ds.__getitems__([0, 1]))
        assert got == [20, 21], f"served {got}: not the two tickets of the read generation 2"
        assert store.counters.find_one({"_id": "reads:2"})["claimed"] == 2
    g.close()


# -- item 5: a batch no generation can serve is refused at once ---------------------------------------------

def test_a_batch_larger_than_the_reuse_budget_is_refused_at_once(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=3, REUSE_CAP=2, REUSE_POLICY="wait", READ_TIMEOUT=60.0)
    g = WireheadGenerator(config=cfg)
    _push(g, range(3))
    g.close()
    _swap(cfg, 0)
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=60)
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"batch of 7 .*SWAP_CAP x REUSE_CAP = 3 x 2 = 6"):
        ds.__getitems__([0, 1, 2, 0, 1, 2, 0])
    assert time.monotonic() - t0 < 10
    assert len(ds.__getitems__([0, 1, 2, 0, 1, 2])) == 6  # exactly the budget is served


def test_a_batch_never_takes_fewer_tickets_than_it_serves(make_config: Any) -> None:
    # 3 tickets; after a batch of 2, one is left: the next batch of 2 takes none of it (all or none)
    cfg = make_config(SWAP_CAP=3, REUSE_CAP=1, REUSE_POLICY="warn")
    g = WireheadGenerator(config=cfg)
    _push(g, range(3))
    g.close()
    _swap(cfg, 0)
    store = Store(cfg)
    with MongoheadDataset(config=cfg, output="numpy", timeout=10) as ds:
        assert len(ds.__getitems__([0, 1])) == 2
        assert len(ds.__getitems__([0, 1])) == 2  # served whole (warn), not cut to the one ticket left
        assert store.counters.find_one({"_id": "reads:0"})["claimed"] == 2
        assert len(ds.__getitems__([2])) == 1
        assert store.counters.find_one({"_id": "reads:0"})["claimed"] == 3


def test_reuse_cap_never_serves_another_sample_in_a_broken_slots_place(make_config: Any) -> None:
    # a fenced writer died before restoring its sample: one member of the read generation has no chunks.  Its
    # tickets are spent unserved; no other sample is served in its place without a ticket of its own
    cfg = make_config(SWAP_CAP=4, REUSE_CAP=1, REUSE_POLICY="wait")
    g = WireheadGenerator(config=cfg)
    sids = _push(g, range(4))
    g.close()
    _swap(cfg, 0)
    store = Store(cfg)
    store.chunks.delete_many({"sid": sids[2]})
    served: list[int] = []
    with MongoheadDataset(config=cfg, output="numpy", timeout=1.0) as ds:
        for batch in ([0], [1, 2], [3], [0], [1]):  # more than the 3 readable samples' budget
            try:
                served += [int(s["image"][0]) for s in ds.__getitems__(batch)]
            except WaitTimeout:
                break
    assert max(Counter(served).values()) == 1, Counter(served)
    assert set(served) <= {0, 1, 3}, served


# -- item 11: a dataset stops its threads and closes its client ---------------------------------------------

def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WORKER_NAME and t.is_alive()]


def test_dataset_is_a_context_manager_and_garbage_collection_releases_it(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=40)
    g = WireheadGenerator(config=cfg)
    _push(g, range(40))
    g.close()
    _swap(cfg, 0)
    wait_until(lambda: not _prefetch_threads(), 30, "no prefetch thread from earlier tests")
    for cls in (MongoheadDataset, MongoTupleheadDataset):
        with cls(config=cfg, output="numpy", timeout=10) as ds:
            ds[0]
            assert ds.store.connection.connected
        assert not ds.store.connection.connected
        stats = ds.reader.stats()
        assert stats["cache_samples"] == 0 and stats["generation"] is None  # memory released
        wait_until(lambda: not _prefetch_threads(), 30, "the prefetch thread to stop after close")
        ds[1]  # usable again: reconnects
        ds.close()
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=10)
    ds[0]
    store = ds.store
    del ds
    gc.collect()
    assert not store.connection.connected
    wait_until(lambda: not _prefetch_threads(), 30, "the prefetch thread to stop after garbage collection")


# -- item 12: bfloat16 with output="numpy" --------------------------------------------------------------------

def test_bfloat16_tensor_read_as_numpy(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=1)
    values = torch.tensor([1.5, -2.0, 3.25], dtype=torch.bfloat16)
    g = WireheadGenerator(config=cfg)
    g.push((values, torch.tensor([1, 2, 3], dtype=torch.complex32)))
    g.close()
    _swap(cfg, 0)
    with MongoheadDataset(config=cfg, output="numpy", timeout=10) as ds:
        s = ds[0]
    assert s["image"].dtype == np.float32 and s["image"].tolist() == [1.5, -2.0, 3.25]
    assert s["label"].dtype == np.complex64 and s["label"].tolist() == [1, 2, 3]
    with MongoheadDataset(config=cfg, timeout=10) as ds:
        assert ds[0]["image"].dtype == torch.bfloat16 and torch.equal(ds[0]["image"], values)


# -- what a reader checks and reports -----------------------------------------------------------------------

def test_transform_is_applied_to_every_sample(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    g = WireheadGenerator(config=cfg)
    _push(g, range(2))
    g.close()
    _swap(cfg, 0)
    with MongoheadDataset(config=cfg, output="numpy", timeout=10,
                          transform=lambda s: {"doubled": s["image"] * 2}) as ds:
        assert set(ds[0]) == {"doubled"}
        assert sorted(int(s["doubled"][0]) for s in ds[[0, 1]].values()) == [0, 2]
    with MongoTupleheadDataset(config=cfg, output="numpy", timeout=10, transform=lambda t: t[::-1]) as ds:
        label, image = ds[0]
        assert label.dtype == np.int8 and image.dtype == np.float32


def test_reader_cache_evicts_to_stay_within_reader_cache_mb(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=6, READER_CACHE_MB=1, NODE_CACHE_MB=0)  # this process's own cache
    g = WireheadGenerator(config=cfg)
    for v in range(6):  # 6 samples of 400 kB: at most 2 fit in 1 MB
        g.push((np.full(100_000, v, np.float32), np.zeros(4, np.int8)))
    g.close()
    _swap(cfg, 0)
    reader = Reader(Store(cfg), timeout=10, prefetch=False)
    values = {int(reader.get([i])[0]["image"][0]) for i in range(6)}
    assert values == set(range(6))
    stats = reader.stats()
    assert stats["cache_bytes"] <= 1024 * 1024
    held = stats["cache_samples"]
    assert 1 <= held <= 2
    # least recently used go first: the last ``held`` samples read are served from the cache, the first is not
    for i in range(6 - held, 6):
        reader.get([i])
    after = reader.stats()
    assert after["cache_hits"] == stats["cache_hits"] + held and after["fetches"] == stats["fetches"]
    reader.get([0])
    assert reader.stats()["fetches"] == stats["fetches"] + 1


def test_a_sample_whose_size_differs_from_its_manifest_is_never_served(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    g = WireheadGenerator(config=cfg)
    sids = _push(g, range(2))
    g.close()
    _swap(cfg, 0)
    store = Store(cfg)
    # sample 0's last chunk gains bytes (its arrays still decode): the chunk count matches, the size does not
    chunks = sorted(store.chunks.find({"sid": sids[0]}), key=lambda d: d["i"])
    last = chunks[-1]
    store.chunks.update_one({"_id": last["_id"]}, {"$set": {"data": bytes(last["data"]) + bytes(64)}})
    reader = Reader(store, timeout=10, prefetch=False)
    slot = reader.current().members.index(sids[0])
    got = reader.get([slot])[0]
    assert int(got["image"][0]) == 1  # the whole sample is served in its place
    assert reader.skipped == 1


def test_time_waited_for_the_reuse_cap_is_reported(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2, REUSE_CAP=1, REUSE_POLICY="wait", READ_TIMEOUT=60.0)
    g = WireheadGenerator(config=cfg)
    _push(g, range(2))
    _swap(cfg, 0)
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=60)
    ds.__getitems__([0, 1])  # the whole budget of generation 0
    waiting = threading.Event()

    class Waiting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for the next swap" in record.getMessage():
                waiting.set()

    handler = Waiting(logging.INFO)
    logger = logging.getLogger("wirehead.reuse")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)

    def next_generation() -> None:
        if waiting.wait(60):
            _push(g, range(10, 12))
            _swap(cfg, 1)

    t = threading.Thread(target=next_generation)
    t.start()
    try:
        ds.__getitems__([0])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        t.join(60)
    assert ds.generation == 1 and ds._gate is not None and ds._gate.waited > 0
    ds.close()
    g.close()
    waited = {d.gen: d.wait_seconds for d in Store(cfg).gen_docs(members=False)}
    assert sum(waited.values()) >= ds._gate.waited * 0.99 > 0, waited


def test_min_fill_applies_to_the_first_generation_only(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=5, MIN_FILL=2)
    g = WireheadGenerator(config=cfg)
    mgr = WireheadManager(config=cfg)
    store = Store(cfg)
    _push(g, range(2))
    mgr.step()
    assert store.state().read_gen == 0
    _push(g, range(10, 14))  # 4 of 5: enough for MIN_FILL, not for a later generation
    mgr.step()
    mgr.step()
    assert store.state().read_gen == 0
    _push(g, range(14, 15))
    g.close()
    mgr.step()
    assert store.state().read_gen == 1
    with MongoheadDataset(config=cfg, timeout=10) as ds:
        assert len(ds) == 5


# -- a reader killed mid-read: the rest go on, nothing stale ------------------------------------------------

@pytest.mark.slow
def test_killed_reader_leaves_the_others_reading_and_nothing_stale(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(SWAP_CAP=4, GRACE_SECONDS=1.0)
    store = Store(cfg)
    with Workers(cfg) as w, GenWatcher(store) as watch:
        w.start("manager", "--duration", "60")
        w.start("generator", "--gid", "1", "--delay", "0.02")
        victim = w.start("reader", "--out", str(tmp_path / "victim.json"), "--duration", "60")
        other = w.start("reader", "--dataset", "--out", str(tmp_path / "other.json"), "--duration", "8")
        wait_until(lambda: sum(d.reads for d in store.gen_docs(members=False)) > 0, 60, "reads reported")
        victim.kill(signal.SIGKILL)
        assert victim.wait(30) == -signal.SIGKILL
        swaps = store.state().swaps
        assert other.wait(60) == 0, other.stderr()
        wait_until(lambda: store.state().swaps >= swaps + 3, 60, "three swaps after the kill")
    report = read_report(tmp_path / "other.json")
    assert report["errors"] == [], report["errors"][:1]
    check_reader_report(report, watch.member_of)
    assert report["reads"]
    # retired generations are still collected: nothing the dead reader used stays behind
    live = {d.gen for d in store.gen_docs(members=False)}
    first_read = watch.read_gens[0]
    wait_until(lambda: first_read not in {d.gen for d in store.gen_docs(members=False)}, 30,
               f"generation {first_read} (read by the killed reader) to be collected; live: {live}")


def test_a_sample_read_first_is_freed_when_dropped_without_a_garbage_collection(make_config: Any) -> None:
    """The first read of a process prepares the cache underneath (an insert that finds the state document there);
    pymongo keeps that handled error in a reference cycle, whose traceback must not keep the reader's callers'
    frames alive: a DataLoader worker's first batch stayed in memory until the next collection."""
    import weakref

    cfg = make_config(SWAP_CAP=2)
    g = WireheadGenerator(config=cfg)
    _push(g, range(2))
    g.close()
    _swap(cfg, 0)
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=30)

    def first_read() -> Any:
        sample = ds[0]  # this process's first read: it makes sure of the schema underneath
        return weakref.ref(sample["image"])

    gc.collect()
    gc.disable()
    try:
        image = first_read()
        assert image() is None, "the first sample read is still alive after its reader dropped it"
    finally:
        gc.enable()
        ds.close()


def test_a_read_never_waits_for_a_look_at_the_state_in_another_thread(make_config: Any) -> None:
    # a state poll of a slow server (here: held until released) must not hold up reads of the generation
    # this process serves: no lock is held across I/O
    cfg = make_config(SWAP_CAP=2)
    g = WireheadGenerator(config=cfg)
    _push(g, range(2))
    g.close()
    _swap(cfg, 0)
    store = Store(cfg)
    reader = Reader(store, timeout=30, prefetch=False)
    assert int(reader.get([0])[0]["image"][0]) in (0, 1)
    entered, release = threading.Event(), threading.Event()
    original = store.state

    def slow_state(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(60)
        return original(*args, **kwargs)

    store.state = slow_state  # type: ignore[method-assign]
    looking = threading.Thread(target=reader.current, kwargs={"force": True}, daemon=True)
    looking.start()
    try:
        assert entered.wait(30)
        done = threading.Event()
        threading.Thread(target=lambda: (reader.get([0, 1]), reader.flush(), done.set()), daemon=True).start()
        assert done.wait(30), "a read waited for another thread's look at the state"
        stats = reader.stats()
        assert stats["generation"] == 0 and stats["reads"] == 3 and stats["node"]
        assert stats["node_hits"] + stats["cache_hits"] >= 1 and stats["fetches"] >= 1
    finally:
        release.set()
        looking.join(30)
        reader.close()


def _holding_its_generation(make_config: Any) -> tuple[Any, Store, Reader]:
    """A config (POLL_SECONDS 0.01), its reader's store and a reader holding its whole generation of 2 samples."""
    cfg = make_config(SWAP_CAP=2, POLL_SECONDS=0.01)
    g = WireheadGenerator(config=cfg)
    _push(g, range(2))
    g.close()
    _swap(cfg, 0)
    store = Store(cfg)
    reader = Reader(store, timeout=30)
    reader.get([0, 1])  # the whole generation is in this process now
    return cfg, store, reader


def test_a_read_of_the_generation_served_makes_no_server_call_the_view_looks_in_the_background(
        make_config: Any) -> None:
    # a DataLoader worker's warm batch stalled on its state poll and its read-count report (up to the 0.5 s
    # best-effort deadline on a busy server, then a new connection): with the generation held, reads make
    # no server call; the looks at the state and the reports run in VIEW_THREAD, which follows a swap
    cfg, store, reader = _holding_its_generation(make_config)
    calls: list[tuple[str, str]] = []  # (thread, what) of every server call of this reader's store
    original = store.connection.call

    def recorded(what: str, fn: Any, deadline: Any = None) -> Any:
        calls.append((threading.current_thread().name, what))
        return original(what, fn, deadline)

    store.connection.call = recorded  # type: ignore[method-assign]
    try:
        served = 0
        # 64 reads report their count; POLL_SECONDS is over many times meanwhile
        while served < 64 or not {"read state", "count reads"} <= {what for _, what in calls}:
            assert served < 100_000, f"no background look and report after {served} reads: {calls}"
            reader.get([served % 2])
            served += 1
        mine = threading.current_thread().name
        assert [c for c in calls if c[0] == mine] == [], "a read of the generation served called the server"
        assert {thread for thread, _ in calls} == {VIEW_THREAD}
        with WireheadGenerator(config=cfg) as g2:
            _push(g2, range(10, 12))
        _swap(cfg, 1)
        wait_until(lambda: reader.get([0]) and reader.gen.gen == 1, 10, "the reader to follow the swap")
    finally:
        reader.close()


def test_the_looks_at_the_state_are_made_by_one_view_thread_which_ends_with_its_reader(
        make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # a thread started per look made the read that asked for it wait until the new thread ran (3-4 ms every
    # POLL_SECONDS on a busy 2-core machine): one thread makes them all, and holds its reader weakly
    from wirehead import reader as reader_module

    monkeypatch.setattr(reader_module, "_VIEW_IDLE_SECONDS", 0.5)
    cfg, store, reader = _holding_its_generation(make_config)
    lookers: list[threading.Thread] = []  # kept alive, so each thread object counts once
    original = store.state

    def state() -> Any:
        lookers.append(threading.current_thread())
        return original()

    store.state = state  # type: ignore[method-assign]
    try:
        served = 0
        while len(lookers) < 5:
            assert served < 100_000, f"{len(lookers)} looks after {served} reads"
            reader.get([served % 2])
            served += 1
            time.sleep(0.002)
        assert {t.name for t in lookers} == {VIEW_THREAD}
        assert len({id(t) for t in lookers}) == 1, f"{len({id(t) for t in lookers})} view threads for {len(lookers)} looks"
        view = lookers[0]
        wait_until(lambda: not view.is_alive(), 10, "the view thread to end after its idle time")
        monkeypatch.setattr(reader_module, "_VIEW_IDLE_SECONDS", 60.0)  # from now on only its reader's end ends it
        with WireheadGenerator(config=cfg) as g2:
            _push(g2, range(10, 12))
        _swap(cfg, 1)  # the next look, from a new view thread, follows it
        wait_until(lambda: reader.get([0]) and reader.gen.gen == 1, 10, "the reader to follow the swap")
        view = lookers[-1]
        assert view.name == VIEW_THREAD
        lookers.clear()
    finally:
        reader.close()
    dropped = weakref.ref(reader)
    reader = store = None  # type: ignore[assignment]  # the test's references go; the view thread's must not hold it
    # a look in progress holds it until it ends; a waiting view thread must not
    wait_until(lambda: gc.collect() >= 0 and dropped() is None, 10, "the dropped reader to be collected")
    wait_until(lambda: not view.is_alive(), 10, "the view thread of a dropped reader to end")


@pytest.mark.slow
def test_a_look_at_the_state_that_outlasts_a_busy_server_is_waited_for_not_abandoned(
        make_config: Any, mongo_server: Any, caplog: Any) -> None:
    # the look used to give up after 0.5 s (BEST_EFFORT_SECONDS): pymongo closes a connection whose operation
    # timed out, so the next call connected and authenticated again (more work for a busy server), and the
    # reader logged that the server was away.  In the background now, it waits for the answer (RETRY_DEADLINE)
    if mongo_server is None:
        pytest.skip("the session's own server is frozen (WIREHEAD_TEST_MONGO_URI names another)")
    cfg, store, reader = _holding_its_generation(make_config)
    probe = Store(cfg)

    def connections_made() -> int:
        return int(probe.client.admin.command("serverStatus")["connections"]["totalCreated"])

    looking, looked = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    original = store.connection.call

    def recorded(what: str, fn: Any, deadline: Any = None) -> Any:
        if what != "read state" or not frozen.is_set() or looking.is_set():
            return original(what, fn, deadline)
        looking.set()
        try:
            return original(what, fn, deadline)
        except BaseException as e:
            errors.append(e)
            raise
        finally:
            looked.set()

    frozen = threading.Event()
    store.connection.call = recorded  # type: ignore[method-assign]
    before = connections_made()
    pgid = os.getpgid(mongo_server.pid)
    caplog.set_level(logging.WARNING, logger="wirehead.reader")
    freeze_group(pgid)
    try:
        frozen.set()
        wait_until(lambda: reader.get([0]) and looking.is_set(), 10, "a look at the state of the frozen server")
        began = time.monotonic()
        served = 0
        while time.monotonic() - began < 1.5:  # the server stays frozen 1.5 s into the look, and reads go on
            reader.get([served % 2])
            served += 1
        assert not looked.is_set(), "the look at the frozen server ended before the server answered"
    finally:
        os.killpg(pgid, signal.SIGCONT)
    try:
        assert looked.wait(30)
        assert errors == [] and "away" not in caplog.text, (errors, caplog.text)
        assert connections_made() == before, "a look at a slow server cost a new connection"
    finally:
        reader.close()
        probe.close()


class _WatchedLock:
    """A lock that says when a thread starts waiting for it (a blocking acquire)."""

    def __init__(self, lock: Any) -> None:
        self.lock, self.waiting = lock, threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking:
            self.waiting.set()
        return self.lock.acquire(blocking, timeout)

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def test_a_forced_look_that_waited_for_a_background_look_serves_the_generation_that_look_found(
        make_config: Any) -> None:
    # a read that finds its samples gone forces a look at the state. When the background look (its read-count
    # report first) looked only after the forced call began, the forced call takes that look's answer: it must
    # serve the newer generation the look found, not the generation whose samples are gone (seen in CI: a
    # reader through SIGKILLed managers' swaps failed with "samples of generation 88 are gone")
    cfg, store, reader = _holding_its_generation(make_config)
    watched = _WatchedLock(reader._refresh_lock)
    reader._refresh_lock = watched  # type: ignore[assignment]
    reporting, view_looks = threading.Event(), []
    original = store.connection.call

    def recorded(what: str, fn: Any, deadline: Any = None) -> Any:
        if what == "count reads" and not reporting.is_set():
            reporting.set()
            assert watched.waiting.wait(30), "the forced look never waited for the background one"
        if what == "read state" and threading.current_thread().name == VIEW_THREAD and reporting.is_set():
            view_looks.append(time.monotonic())
        return original(what, fn, deadline)

    store.connection.call = recorded  # type: ignore[method-assign]
    try:
        served = 0
        while not reporting.is_set():  # 64 reads make the report due; it waits in VIEW_THREAD
            assert served < 100_000, "no background report of the read counts"
            reader.get([served % 2])
            served += 1
        with WireheadGenerator(config=cfg) as g2:
            _push(g2, range(10, 12))
        _swap(cfg, 1)  # while the background look waits behind its report
        gen = reader.current(force=True)
        assert view_looks, "the background look did not look at the state after its report"
        assert gen.gen == 1 and reader.gen.gen == 1, f"the forced look served generation {gen.gen}"
    finally:
        reader.close()
