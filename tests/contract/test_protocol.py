"""The generation protocol, step by step, against the real server (single process, deterministic)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from helpers import fill, push, sample, wait_until
from wirehead import (GeneratorError, MongoheadDataset, SampleError, WaitTimeout, WireheadGenerator,
                      WireheadManager)
from wirehead.chunks import encode
from wirehead.store import Store
from wirehead.swapper import Swapper


def write_uncommitted(store: Store, sid: str, value: int) -> None:
    enc = encode(sample(value), store.config.sample)
    store.put_sample(sid, enc.chunks(store.config.chunk_bytes),
                     {"meta": enc.meta, "stored_bytes": enc.stored_bytes, "raw_bytes": enc.raw_bytes})


def test_commits_fill_slots_then_spill_into_the_next_generation(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=3)
    push(cfg, range(5))  # no manager: 3 fill generation 0; generator swaps itself...
    store = Store(cfg)
    docs = {d.gen: d for d in store.gen_docs()}
    assert sum(d.n for d in docs.values()) == 5  # nothing thrown away
    assert all(d.n <= 3 for d in docs.values())


def test_a_generator_swaps_the_generation_it_fills_unless_a_manager_holds_the_lease(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    store = Store(cfg)
    store.ensure_schema()
    assert store.acquire_lease("generator@elsewhere:1:x", 60)  # another generator, busy making its sample
    push(cfg, range(4))
    st = store.state()
    assert (st.read_gen, st.write_gen, st.swaps) == (1, 2, 2)  # no full generation waits for that generator
    assert st.lease_holder == "generator@elsewhere:1:x"  # ... and its lease was left alone
    store.release_lease("generator@elsewhere:1:x")
    assert store.acquire_lease("manager@elsewhere:2:y", 60)  # a live manager: it does the swapping
    push(cfg, range(4, 6))
    st = store.state()
    assert (st.read_gen, st.swaps) == (1, 2) and store.gen_counts()[2][0] == 2


@pytest.mark.parametrize("manager", [False, True], ids=["no-manager", "manager-holds-lease"])
def test_a_generator_that_ends_swaps_the_full_write_generation_a_dead_writer_left(make_config: Any,
                                                                                   manager: bool) -> None:
    # the writer that took the last slot died before its swap (or its swap lost a race): nothing else
    # would swap before some process's next step, so the last generator to end would leave a full
    # generation unread for good when no manager runs
    cfg = make_config(SWAP_CAP=2, POLL_SECONDS=60.0)  # no periodic step comes during the test
    store = Store(cfg)
    store.ensure_schema()
    if manager:
        assert store.acquire_lease("manager@elsewhere:2:y", 60)  # a live manager: the swap is its job
    g = WireheadGenerator(config=cfg)
    try:
        g.push(sample(0))  # generation 0: 1 of 2 (its first commit does the step; nothing to swap)
        write_uncommitted(store, "dead-writer", 1)
        assert store.commit("dead-writer", 0, 2) == 1  # the last slot, and that writer dies before its swap
        g.push(sample(2))  # spills into generation 1
        assert store.state().swaps == 0
    finally:
        g.close()
    st = store.state()
    assert (st.swaps, st.write_gen) == ((0, 0) if manager else (1, 1))
    assert store.gen_counts()[1][0] == 1  # the spilled sample waits in the new write generation


def test_a_full_cache_with_a_silent_lease_holder_waits_and_stop_ends_the_wait(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    store = Store(cfg)
    store.ensure_schema()
    store.ensure_gen(1)
    for i, g in enumerate((0, 0, 1, 1)):  # generations 0 and 1 full, nobody swapped (the filler died)
        write_uncommitted(store, f"s{i}", i)
        assert store.commit(f"s{i}", g, 2) is not None
    assert store.acquire_lease("manager@elsewhere:1:x", 60)
    gen = WireheadGenerator(iter([sample(9)]), config=cfg)
    threading.Timer(0.5, gen.stop).start()
    t0 = time.monotonic()
    assert gen.run() == 0  # it waited for a swap that the lease holder owes, and stopping ended the wait
    assert time.monotonic() - t0 < 10
    assert store.state().read_gen is None and store.gen_counts()[0][0] == 2


def test_commit_is_idempotent_and_refused_when_full_or_sealed(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    store = Store(cfg)
    store.ensure_schema()
    for sid in ("a", "b", "c", "d"):
        write_uncommitted(store, sid, 1)
    assert store.commit("a", 0, 2) == 0
    assert store.commit("a", 0, 2) == 0  # a retry after a lost reply commits nothing twice
    assert store.commit("a", 1, 2) == 0  # ... not even into another generation
    assert store.commit("b", 0, 2) == 1
    assert store.commit("c", 0, 2) is None  # full
    store.ensure_gen(1)
    store.seal(1)
    assert store.commit("c", 1, 2) is None  # sealed
    assert store.gen_doc(0).members == ("a", "b")


def test_swap_is_one_conditional_update(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    store = Store(cfg)
    push(cfg, [])
    store.ensure_schema()
    assert store.swap(0) is True
    assert store.swap(0) is False  # a second swapper with a stale view does nothing
    st = store.state()
    assert (st.read_gen, st.write_gen, st.swaps) == (0, 1, 1)


def test_manager_swaps_only_when_full(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=3)
    store = Store(cfg)
    assert store.acquire_lease("blocker", 60)
    push(cfg, range(2))
    store.release_lease("blocker")
    mgr = WireheadManager(config=cfg)
    assert not mgr.step().swapped
    assert store.state().read_gen is None
    push(cfg, range(2, 3))  # generator could swap itself here: either way, exactly one swap
    mgr.step()
    st = store.state()
    assert (st.read_gen, st.write_gen, st.swaps) == (0, 1, 1)
    assert store.gen_doc(0).n == 3


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_half_written_samples_are_invisible_and_swept_as_orphans(make_config: Any) -> None:
    # 4 s: what runs between writing the half-written samples and the first sweep must take less, also loaded
    cfg = make_config(SWAP_CAP=2, ORPHAN_SECONDS=4.0)
    store = Store(cfg)
    store.ensure_schema()
    write_uncommitted(store, "dead-generator-sample", 666)  # chunks + manifest, never committed
    store.chunks.insert_one({"_id": "only-chunks:1", "sid": "only-chunks", "i": 1, "data": b"x", "t": time.time()})
    written = time.time()  # every half-written chunk is older than this
    push(cfg, range(2))
    mgr = WireheadManager(config=cfg)
    assert mgr.step().deleted_orphans == 0  # too young to be an orphan
    ds = MongoheadDataset(config=cfg, output="numpy")
    values = {int(ds[i]["image"].flat[0]) for i in range(len(ds))}
    assert values == {0, 1} and len(ds) == 2  # the half-written one is not served
    time.sleep(max(0.0, written + cfg.orphan_seconds + 0.2 - time.time()))  # the samples age past ORPHAN_SECONDS
    mgr.swapper._next_orphan_sweep = 0.0  # sweep now rather than at the next interval
    res = mgr.step()
    assert res.deleted_orphans == 2
    assert store.chunks.count_documents({"sid": {"$in": ["dead-generator-sample", "only-chunks"]}}) == 0
    assert len(ds) == 2 and int(ds[1]["image"].flat[0]) in (0, 1)  # committed samples untouched


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_old_read_generation_stays_readable_for_the_grace_period(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2, GRACE_SECONDS=5.0)  # the checks "within grace" must take less, also loaded
    store = Store(cfg)
    mgr = WireheadManager(config=cfg)
    push(cfg, range(2))
    mgr.step()
    ds = MongoheadDataset(config=cfg, output="numpy")
    assert ds.generation == 0
    old_members = store.gen_doc(0).members
    push(cfg, range(2, 4))
    mgr.step()
    assert store.state().read_gen == 1
    mgr.step()
    # within grace: generation 0 is intact
    assert store.gen_doc(0) is not None
    assert store.chunks.count_documents({"sid": {"$in": list(old_members)}}) == 2
    time.sleep(max(0.0, store.gen_doc(0).retired_at + cfg.grace_seconds + 0.1 - time.time()))  # grace passes
    mgr.step()
    assert store.gen_doc(0) is None
    assert store.chunks.count_documents({"sid": {"$in": list(old_members)}}) == 0
    assert ds.reader.current(force=True).gen == 1  # follows the swap at its next look at the state
    assert ds.generation == 1 and {int(ds[i]["image"].flat[0]) for i in range(2)} == {2, 3}


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_lease_excludes_other_swappers_until_it_expires(make_config: Any) -> None:
    cfg = make_config(LEASE_SECONDS=3.0)  # the take, the refused take and the renewal must come within it, loaded
    store = Store(cfg)
    store.ensure_schema()
    a, b = Swapper(store), Swapper(store)
    assert a.try_lease() and not b.try_lease()
    assert a.try_lease()  # renew
    time.sleep(cfg.lease_seconds + 0.1)  # the lease expires
    assert b.try_lease() and not a.try_lease()  # expired: taken over
    b.release()
    assert a.try_lease()


def test_reader_follows_new_generations_and_never_mixes_a_batch(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=4)
    mgr = WireheadManager(config=cfg)
    ds = MongoheadDataset(config=cfg, output="numpy")
    seen_gens = set()
    for g in range(3):
        push(cfg, range(g * 4, g * 4 + 4))
        mgr.step()
        wait_until(lambda: ds.reader.current().gen == g, 10, f"the reader to follow generation {g}")
        batch = ds[[0, 1, 2, 3]]
        values = {int(s["image"].flat[0]) for s in batch.values()}
        assert values == set(range(g * 4, g * 4 + 4))  # all four from one generation
        seen_gens.add(ds.generation)
    assert seen_gens == {0, 1, 2}


def test_incomplete_sample_is_never_returned(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2, CHUNKSIZE=1)
    gen = WireheadGenerator(config=cfg)
    big = (np.full((64, 64, 64), 5, np.float32), np.zeros((64, 64, 64), np.int32))  # 2 MiB: 2+ chunks
    sids = [gen.push(big), gen.push(big)]
    gen.close()
    WireheadManager(config=cfg).step()
    store = Store(cfg)
    store.chunks.delete_one({"sid": sids[0], "i": 1})  # damage one sample
    ds = MongoheadDataset(config=cfg, output="numpy")
    for i in range(4):
        got = ds[i % 2]
        assert got["image"].shape == (64, 64, 64) and np.all(got["image"] == 5)
    assert ds.reader.skipped >= 1


def test_seed_style_indexing_and_dataloader_with_workers(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=6)
    fill(cfg, range(6))
    ds = MongoheadDataset(config=cfg)
    assert len(ds) == 6
    data = ds[[0]]
    assert set(data) == {0} and data[0]["input"].shape == (4, 4, 4)
    image, label = sample(int(data[0]["image"].flatten()[0]))  # what was pushed into this slot
    assert torch.equal(data[0]["input"], torch.from_numpy(image))
    assert torch.equal(data[0]["label"], torch.from_numpy(label))
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=True)
    seen = []
    for batch in loader:
        assert batch["image"].shape == (3, 4, 4, 4)
        seen += batch["image"][:, 0, 0, 0].tolist()
    assert sorted(seen) == [0, 1, 2, 3, 4, 5]


def test_reads_are_counted_in_batches(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    fill(cfg, range(2))
    ds = MongoheadDataset(config=cfg, output="numpy")
    for i in range(10):
        ds[i % 2]
    ds.close()
    assert Store(cfg).gen_doc(0).reads == 10


def test_dataset_waits_with_a_deadline_and_a_clear_error(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=5)
    ds = MongoheadDataset(config=cfg, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"no read generation after 0 s|no read generation after 1 s|SWAP_CAP=5"):
        len(ds)
    assert time.monotonic() - t0 < 5


def test_bad_indices(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    fill(cfg, range(2))
    ds = MongoheadDataset(config=cfg)
    with pytest.raises(IndexError, match="out of range"):
        ds[2]
    with pytest.raises(IndexError, match="negative"):
        ds[-1]
    with pytest.raises(TypeError, match="integers"):
        ds["0"]
    with pytest.raises(TypeError, match="integers"):
        ds[1.0]


def test_a_mismatching_sample_fails_before_anything_is_written(make_config: Any) -> None:
    cfg = make_config()
    gen = WireheadGenerator(config=cfg)
    store = Store(cfg)
    with pytest.raises(SampleError, match="image"):
        gen.push((np.zeros(3),))
    with pytest.raises(SampleError):
        gen.push({"image": np.zeros(3), "mask": np.zeros(3)})
    with pytest.raises(TypeError, match="label"):
        gen.push((np.zeros(3), np.array(["a", "b"])))
    store.ensure_schema()
    assert store.counts() == {"chunks": 0, "samples": 0}


def test_run_ends_on_exhaustion_n_samples_and_stop(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=100)
    assert WireheadGenerator(iter([sample(i) for i in range(3)]), config=cfg).run() == 3
    assert WireheadGenerator((sample(i) for i in range(100)), config=cfg, n_samples=4).run_generator() == 4

    def forever():
        i = 0
        while True:
            i += 1
            yield sample(i)

    g = WireheadGenerator(forever(), config=cfg)
    threading.Timer(0.5, g.stop).start()
    t0 = time.monotonic()
    n = g.run()
    assert n > 0 and time.monotonic() - t0 < 10
    early = WireheadGenerator(forever(), config=cfg)
    early.stop()  # a stop that comes before run() is not lost
    assert early.run() == 0
    mgr = WireheadManager(config=cfg)
    mgr.stop()
    t0 = time.monotonic()
    assert mgr.run() == 0 and time.monotonic() - t0 < 5


def test_generator_exception_is_tagged_and_recorded(make_config: Any) -> None:
    cfg = make_config()

    def broken():
        yield sample(1)
        raise ValueError("synthesis diverged")

    g = WireheadGenerator(broken(), config=cfg, name="gpu-7")
    with pytest.raises(GeneratorError, match=r"gpu-7.*pid \d+.*ValueError: synthesis diverged"):
        g.run()
    workers = Store(cfg).workers()
    rec = [w for w in workers if w.get("name") == "gpu-7"][0]
    assert rec["status"] == "errored" and "synthesis diverged" in rec["last_error"]
    assert rec["produced"] == 1


def test_a_dataloader_batch_is_one_query_and_warm_reads_are_none(make_config: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(SWAP_CAP=8)
    fill(cfg, range(8))
    calls: list[int] = []
    original = Store.get_samples

    def counting(self: Store, sids: Any) -> Any:
        calls.append(len(sids))
        return original(self, sids)

    monkeypatch.setattr(Store, "get_samples", counting)
    ds = MongoheadDataset(config=cfg, prefetch=False)
    loader = DataLoader(ds, batch_size=4, num_workers=0, shuffle=False)
    first = [b["image"][:, 0, 0, 0].tolist() for b in loader]
    assert first == [[0, 1, 2, 3], [4, 5, 6, 7]] and calls == [4, 4]  # one query per batch
    again = [b["image"][:, 0, 0, 0].tolist() for b in loader]
    assert again == first and calls == [4, 4]  # the immutable read generation is served from memory
    batch = next(iter(loader))
    batch["image"][:] = -1  # what a caller gets is its own: the cache is not changed by writing to it
    assert next(iter(loader))["image"][:, 0, 0, 0].tolist() == [0, 1, 2, 3]


def test_a_new_read_generation_is_prefetched_in_the_background(make_config: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(SWAP_CAP=6, NODE_CACHE_MB=0)  # this process's cache (the node cache: test_nodecache.py)
    mgr = WireheadManager(config=cfg)
    push(cfg, range(6))
    mgr.step()
    ds = MongoheadDataset(config=cfg, output="numpy")
    assert len(ds) == 6
    assert ds.reader.stats()["cache_samples"] == 0  # len() alone (a DataLoader's main process) prefetches nothing
    assert not ds.reader.stats()["worker"]
    assert int(ds[0]["image"].flat[0]) in range(6)  # the first read starts prefetching generation 0
    reader = ds.reader
    wait_until(lambda: reader.stats()["cache_samples"] == 6, 10, "the generation to be prefetched")
    calls: list[int] = []
    original = Store.get_samples
    monkeypatch.setattr(Store, "get_samples", lambda self, sids: calls.append(1) or original(self, sids))
    assert sorted(int(ds[i]["image"].flat[0]) for i in range(6)) == list(range(6))
    assert calls == []  # every read came from memory
    monkeypatch.setattr(Store, "get_samples", original)
    push(cfg, range(6, 12))
    mgr.step()
    wait_until(lambda: ds.generation == 1, 10, "the reader to follow generation 1")
    ds[0]
    wait_until(lambda: reader.stats()["cache_samples"] == 6 and reader.gen.gen == 1, 10,
               "generation 1 to be prefetched")
    assert {int(ds[i]["image"].flat[0]) for i in range(6)} == set(range(6, 12))
