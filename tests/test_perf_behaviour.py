"""Performance behaviour (issue 15): what the fast paths must keep doing, checked without timings."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from helpers import fill
from wirehead import MongoheadDataset, WireheadGenerator, WireheadManager
from wirehead.dataset import Sample


def _fill(cfg: Any, n: int) -> None:
    fill(cfg, range(n), make=lambda i: (np.full((4, 4, 4), i, np.float32), np.full((4, 4, 4), i, np.uint8)))


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_carry_seed_aliases_without_a_second_stack(make_config: Any, workers: int) -> None:
    cfg = make_config(SWAP_CAP=4, SAMPLE=["image", "seg"])
    _fill(cfg, 4)
    ds = MongoheadDataset(config=cfg)
    sample = ds[1]
    assert sample["input"] is sample["image"] and sample["label"] is sample["seg"]
    assert "input" in sample and sample.get("label") is sample["seg"]
    assert sorted(sample) == ["image", "seg"]  # the aliases are views, not stored keys
    loader = DataLoader(ds, batch_size=2, num_workers=workers)
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        assert sorted(batch) == ["image", "seg"]  # each kind collated once
        assert batch["image"].shape == (2, 4, 4, 4)
        assert batch["input"].data_ptr() == batch["image"].data_ptr()
        assert batch["label"].data_ptr() == batch["seg"].data_ptr()
    assert sorted(int(v) for b in batches for v in b["input"][:, 0, 0, 0]) == [0, 1, 2, 3]


def test_a_kind_named_like_an_alias_is_itself_and_setting_an_alias_shadows_it(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2, SAMPLE=["image", "label"])
    _fill(cfg, 2)
    sample = MongoheadDataset(config=cfg)[0]
    assert sample["input"] is sample["image"] and sorted(sample) == ["image", "label"]
    assert sample["label"].dtype == torch.uint8
    sample["input"] = torch.zeros(1)  # a transform replacing the seed name stores a real key
    assert sample["input"].shape == (1,) and sample["image"].shape == (4, 4, 4)


def test_sample_survives_pickle_copy_and_default_collate() -> None:
    a = Sample({"image": torch.ones(2), "seg": torch.zeros(2)}, aliases={"input": "image", "label": "seg"})
    for other in (pickle.loads(pickle.dumps(a)), copy.copy(a), a.copy()):
        assert isinstance(other, Sample) and torch.equal(other["input"], a["image"])
        assert other["label"] is other["seg"]
    batch = default_collate([a, a])
    assert isinstance(batch, Sample) and sorted(batch) == ["image", "seg"]
    assert batch["input"] is batch["image"] and batch["input"].shape == (2, 2)
    with pytest.raises(KeyError):
        Sample({"image": torch.ones(1)}, aliases={"label": "seg"})["label"]


def test_upstream_sample_choice_moves_the_alias_and_collates_the_chosen_kind_once(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2, SAMPLE=["image", "label", "seg"])
    gen = WireheadGenerator(config=cfg)
    for i in range(2):
        gen.push((np.full((4, 4, 4), i, np.float32), np.zeros((4, 4, 4), np.uint8), np.full((4, 4, 4), 7, np.uint8)))
    gen.close()
    WireheadManager(config=cfg).step()
    batch = next(iter(DataLoader(MongoheadDataset(config=cfg, sample=("image", "seg")), batch_size=2)))
    assert sorted(batch) == ["image", "seg"]  # the real "label" kind gives way to the chosen one, stacked once
    assert batch["label"].data_ptr() == batch["seg"].data_ptr() and int(batch["label"].max()) == 7


def _mapped(array: Any) -> bool:
    """Whether ``array``'s memory is a mapping (of the node cache's pages) rather than a copy."""
    import mmap

    owner = array
    while isinstance(owner, (np.ndarray, memoryview)):
        owner = owner.base if isinstance(owner, np.ndarray) else owner.obj
    return isinstance(owner, mmap.mmap)


def _report_mapping(batch: list[Any]) -> list[tuple[bool, int]]:
    """A DataLoader ``collate_fn``: in the worker, whether each sample was mapped; then write to it."""
    out = []
    for sample in batch:
        image = sample["image"]
        out.append((_mapped(image), int(image[0, 0, 0])))
        image[...] = 7  # copy-on-write: the worker's pages only
    return out


def test_a_loader_reads_a_large_node_cached_sample_without_a_copy(make_config: Any) -> None:
    # the read a DataLoader (or its worker) makes of a warm generation: no memcpy of the sample (the collation
    # that follows is the one copy, as with np.load's read of a page-cached .npy file); ds[i], which a trainer
    # may keep across swaps, copies (a mapping would keep the whole retired segment in memory)
    cfg = make_config(SWAP_CAP=2)
    gen = WireheadGenerator(config=cfg)
    big = (64, 64, 64)  # 1 MiB image: large enough to be mapped rather than copied
    for i in range(2):
        gen.push((np.full(big, i, np.float32), np.full(big, i, np.uint8)))
    gen.close()
    WireheadManager(config=cfg).step()
    with MongoheadDataset(config=cfg, output="numpy") as ds:
        first = ds[0]["image"]
        assert not _mapped(first)  # the trainer's own read: a copy
        loader = DataLoader(ds, batch_size=2, num_workers=1, collate_fn=_report_mapping)
        for _ in range(2):
            got = [item for batch in loader for item in batch]
            assert [m for m, _ in got] == [True, True], "a worker's read was a copy, not a mapping"
            assert sorted(v for _, v in got) == [0, 1]  # what the worker wrote stayed in its pages
        assert (ds[0]["image"] == first).all() and int(first[0, 0, 0]) in (0, 1)
        assert [m for m, _ in _report_mapping(ds.__getitems__([0, 1]))] == [True, True]  # num_workers=0
        assert sorted(int(s["image"][0, 0, 0]) for s in ds.__getitems__([0, 1])) == [0, 1]  # the 7s stayed private
