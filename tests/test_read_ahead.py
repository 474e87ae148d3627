"""Read-ahead: batches announced by a ReadAheadSampler (or Reader.read_ahead) are fetched in the background
by a process that reads, held until read, bounded by READ_AHEAD, dropped at a swap; a DataLoader's main
process that only hands indices to workers never fetches."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from helpers import fill, wait_until
from wirehead import MongoheadDataset, ReadAheadSampler
from wirehead.fetch import WORKER_NAME
from wirehead.store import Store

pytestmark = pytest.mark.timeout(300)

# no cache of any kind: every sample a read needs comes from the server, or from what was read ahead
_STREAMING = dict(NODE_CACHE_MB=0, READER_CACHE_MB=0)


def _fill(cfg: Any, values: range) -> None:
    """One read generation whose sample i holds the value values[i] (its image is 4 of them)."""
    fill(cfg, values, make=lambda v: (np.full(4, v, np.float32), np.full(4, v % 100, np.uint8)))
    assert Store(cfg).state().read_gen is not None


def _value(sample: Any) -> int:
    return int(sample["image"][0])


def _sids(ds: MongoheadDataset, indices: list[int]) -> set[str]:
    gen = ds.reader.current()
    return {gen.members[i] for i in indices}


def test_announced_batches_are_fetched_in_the_background_and_served_from_there(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=8, READ_AHEAD=1, **_STREAMING)
    _fill(cfg, range(100, 108))
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        first = _value(ds[0])  # a process reads ahead once it reads samples itself
        ds.read_ahead([[0], [1, 2], [3, 4]])  # the batch about to be read (held already), READ_AHEAD=1 more
        reader = ds.reader
        wait_until(lambda: reader.held_ahead == 2, 30, "batch [1, 2] to be read ahead")
        ds.read_ahead([[1, 2], [3, 4], [5, 6]])  # batch [1, 2] is read next: kept, and [3, 4] fetched
        wait_until(lambda: reader.held_ahead == 4, 30, "batch [3, 4] to be read ahead")
        got = ds[[1, 2]]
        assert reader.ahead_hits == 2 and reader.held_ahead == 2
        values = [first, *(_value(s) for s in got.values()), *(_value(ds[i]) for i in (3, 4))]
        assert reader.ahead_hits == 4 and reader.held_ahead == 0
        # the same samples a plain read gives
        gen = reader.current()
        assert values == [100 + int(sid_order) for sid_order in _order(ds, gen, [0, 1, 2, 3, 4])]


def _order(ds: MongoheadDataset, gen: Any, indices: list[int]) -> list[int]:
    """What a read of ``indices`` gives without read-ahead (another dataset, same generation), minus 100."""
    with MongoheadDataset(config=ds.config.replace(READ_AHEAD=0), output="numpy", timeout=30) as plain:
        assert plain.reader.current().gen == gen.gen
        return [_value(plain[i]) - 100 for i in indices]


def test_what_is_held_ahead_stays_within_the_announced_window(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=8, READ_AHEAD=1, **_STREAMING)
    _fill(cfg, range(8))
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        ds[7]
        reader = ds.reader
        ds.read_ahead([[6], [0, 1]])
        wait_until(lambda: reader.held_ahead == 2, 30, "the first window to be read ahead")
        # the reads went elsewhere: a new window replaces the old one, whose samples are dropped
        ds.read_ahead([[2, 3], [4, 5]])
        assert reader.held_ahead == 0  # [0, 1] are dropped at once
        wait_until(lambda: reader.held_ahead == 2, 30, "the second window to replace the first")
        fetches = reader.stats()["fetches"]
        ds[[4, 5]]
        assert reader.ahead_hits == 2 and reader.stats()["fetches"] == fetches  # what was held: samples 4 and 5


def test_a_process_that_has_not_read_does_not_read_ahead(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=8, **_STREAMING)
    _fill(cfg, range(8))
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        assert len(ds) == 8  # what a DataLoader's main process does: len() and announcements
        ds.read_ahead([[0, 1], [2, 3], [4, 5]])
        assert not ds.reader.stats()["worker"] and ds.reader.held_ahead == 0
        # its first read starts the read-ahead of what was announced
        assert _value(ds[0]) in range(8)
        wait_until(lambda: ds.reader.held_ahead == 4, 30, "batches 2 and 3 to be read ahead")
        fetches = ds.reader.stats()["fetches"]
        ds[[2, 3]]
        ds[[4, 5]]
        assert ds.reader.ahead_hits == 4 and ds.reader.stats()["fetches"] == fetches  # held: samples 2 to 5


def test_a_swap_drops_what_was_held_ahead(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=4, READ_AHEAD=2, **_STREAMING)
    _fill(cfg, range(4))
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        ds[0]
        old = ds.reader.current().gen
        ds.read_ahead([[0], [1, 2], [3]])
        wait_until(lambda: ds.reader.held_ahead == 3, 30, "the window to be read ahead")
        _fill(cfg, range(50, 54))
        assert ds.reader.current(force=True).gen != old
        assert ds.reader.held_ahead == 0
        assert {_value(ds[i]) for i in range(4)} == set(range(50, 54))  # never a sample of the old generation


def test_the_sampler_makes_the_batches_torch_would_and_a_loader_reads_them_ahead(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=12, READ_AHEAD=2, **_STREAMING)
    _fill(cfg, range(200, 212))
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        sampler = ReadAheadSampler(ds, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(7))
        expected = list(BatchSampler(RandomSampler(range(12), generator=torch.Generator().manual_seed(7)), 3, False))
        assert len(sampler) == 4
        assert list(ReadAheadSampler(ds, batch_size=3, shuffle=True,
                                     generator=torch.Generator().manual_seed(7))) == expected
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=list)
        seen = []
        for k, batch in enumerate(loader):
            seen += [_value(s) for s in batch]
            if k < len(sampler) - 1:  # the training step: long enough for the next batch to arrive
                wait_until(lambda: ds.reader.held_ahead >= 3, 30, "the next batch to be read ahead")
        assert sorted(seen) == list(range(200, 212))  # every sample once an epoch
        # the first batch is read on demand; the loader's other batches were announced and read ahead
        assert ds.reader.ahead_hits == 9, ds.reader.ahead_hits
        assert list(ReadAheadSampler(ds, batch_size=5, drop_last=True)) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_with_loader_workers_the_main_process_fetches_nothing(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=8, **_STREAMING)
    _fill(cfg, range(300, 308))
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        loader = DataLoader(ds, batch_sampler=ReadAheadSampler(ds, batch_size=2, shuffle=True), num_workers=2,
                            collate_fn=list)
        seen = sorted(_value(s) for batch in loader for s in batch)
        assert seen == list(range(300, 308))
        assert not ds.reader.stats()["worker"] and ds.reader.held_ahead == 0 and ds.reader.reads == 0


def test_a_main_process_that_peeked_at_a_sample_fetches_nothing_for_its_workers(
        make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_config(SWAP_CAP=8, READ_AHEAD=2, **_STREAMING)
    _fill(cfg, range(500, 508))
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        assert _value(ds[0]) in range(500, 508)  # a quick look, as the README's examples do
        fetched: list[str] = []
        original = Store.get_samples
        monkeypatch.setattr(Store, "get_samples", lambda self, sids: fetched.extend(sids) or original(self, sids))
        loader = DataLoader(ds, batch_sampler=ReadAheadSampler(ds, batch_size=2, shuffle=True), num_workers=2,
                            collate_fn=list)
        for _ in range(2):
            seen = sorted(_value(s) for batch in loader for s in batch)
            assert seen == list(range(500, 508))
        # the workers' fetches happen in their processes; this one (the sampler's) fetched nothing
        assert fetched == [] and ds.reader.held_ahead == 0 and ds.reader.reads == 1


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="needs a wirehead dataset"):
        ReadAheadSampler(list(range(4)), batch_size=2)  # type: ignore[arg-type]


def test_bad_sampler_arguments_are_named(config: Any) -> None:
    ds = MongoheadDataset(config=config)
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        ReadAheadSampler(ds, batch_size=0)
    with pytest.raises(ValueError, match="either sampler or shuffle"):
        ReadAheadSampler(ds, batch_size=2, shuffle=True, sampler=range(4))


def test_with_a_node_cache_what_is_read_ahead_goes_there_for_every_reader_of_the_node(make_config: Any) -> None:
    from wirehead import nodecache

    cfg = make_config(SWAP_CAP=6, READ_AHEAD=1, NODE_CACHE_MB=64, READER_CACHE_MB=0)
    _fill(cfg, range(400, 406))
    # no whole-generation prefetch: only the read and the read-ahead fill the node cache
    with MongoheadDataset(config=cfg, output="numpy", timeout=30, prefetch=False) as ds:
        ds[0]
        assert ds.reader.stats()["node"]
        ds.read_ahead([[0], [1, 2]])
        wanted = sorted(_sids(ds, [1, 2]))
        # count what the segment holds without claiming anything: a probe that claimed a sample while the
        # read-ahead asked for it would make the read-ahead skip it as another reader's
        wait_until(lambda: ds.reader.stats()["node_ready"] == 3, 30,
                   "the read-ahead to publish samples 1 and 2 in the node cache")
        store = Store(cfg)
        probe = nodecache.attach(cfg, store.uri, ds.reader.current())  # another reader of the node
        assert probe is not None
        try:
            status = probe.acquire(wanted)
        finally:
            probe.close()
        assert all(status[sid] == nodecache.READY for sid in wanted), status
        assert ds.reader.held_ahead == 0  # held once, by the node, not twice
        assert [_value(s) for s in ds[[1, 2]].values()] == [_value(s) for s in _plain(cfg, [1, 2])]


def _plain(cfg: Any, indices: list[int]) -> list[Any]:
    with MongoheadDataset(config=cfg.replace(READ_AHEAD=0, NODE_CACHE_MB=0), output="numpy", timeout=30) as plain:
        return [plain[i] for i in indices]


def test_the_background_worker_fetches_announced_batches_before_the_rest_of_the_generation(
        make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # one worker per process: announced read-ahead goes before the generation prefetch, whatever the prefetch's
    # progress (the worker's first prefetch query is held until the announcement is made)
    cfg = make_config(SWAP_CAP=40, READ_AHEAD=1, NODE_CACHE_MB=0, READER_CACHE_MB=64)
    _fill(cfg, range(40))
    entered, release = threading.Event(), threading.Event()
    worker_queries: list[list[str]] = []
    original = Store.get_samples

    def get_samples(self: Store, sids: list[str]) -> Any:
        if threading.current_thread().name == WORKER_NAME:
            worker_queries.append(list(sids))
            if len(worker_queries) == 1:
                entered.set()
                assert release.wait(60), "the test never released the worker's first query"
        return original(self, sids)

    monkeypatch.setattr(Store, "get_samples", get_samples)
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        members = ds.reader.current().members
        ds[39]  # the first read starts the prefetch, from the generation's first member on
        assert entered.wait(60), "the prefetch did not start"
        ds.read_ahead([[39], [20, 21]])
        release.set()
        wait_until(lambda: ds.reader.held_ahead == 2, 30, "batch [20, 21] to be read ahead")
        assert worker_queries[0] == [members[0]]  # the prefetch's first sample, in flight when announced
        assert worker_queries[1] == [members[20], members[21]]  # then the announced batch, one query
        wait_until(lambda: ds.reader.stats()["prefetched"] == 37, 30, "the prefetch to finish")
        assert ds.reader.stats()["cache_samples"] == 40 - 2  # the read-ahead's two are held ahead, not twice


def test_the_background_worker_gives_back_what_its_fetches_freed_before_it_waits(
        make_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # a thread's allocations live in a malloc arena of its own, which glibc shrinks only when its free top
    # exceeds a threshold that grows with the samples fetched: without a trim, a worker that fetched samples
    # of S MiB keeps up to about 2 S MiB resident for good (test_nodecache's streaming bound measured it)
    from wirehead import fetch

    cfg = make_config(SWAP_CAP=4, NODE_CACHE_MB=0, READER_CACHE_MB=64)
    _fill(cfg, range(4))
    given_back: list[int] = []
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        reader = ds.reader
        monkeypatch.setattr(fetch, "give_back_freed_memory", lambda: given_back.append(reader.stats()["prefetched"]))
        ds[3]  # the first read starts the prefetch of the other three samples
        wait_until(lambda: given_back and given_back[-1] == 3, 30,
                   "the worker to give back freed memory after its last prefetch")
        assert reader.stats()["cache_samples"] == 4
