"""Arrays go through the real server and come back bit-exact (upstream stored float [0, 1) as zeros)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from wirehead import MongoheadDataset, MongoTupleheadDataset, WireheadGenerator, WireheadManager
from wirehead.store import Store


def _fill_and_swap(cfg: Any, samples: list[Any]) -> None:
    gen = WireheadGenerator(config=cfg)
    for s in samples:
        gen.push(s)
    gen.close()
    WireheadManager(config=cfg).step()


def test_float_in_unit_interval_and_negative_int16_round_trip(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=1)
    rng = np.random.default_rng(0)
    image = rng.random((17, 9, 5), dtype=np.float32)  # values in [0, 1)
    label = rng.integers(-300, 300, (17, 9, 5)).astype(np.int16)
    _fill_and_swap(cfg, [(image, label)])
    ds = MongoheadDataset(config=cfg, output="numpy")
    got = ds[0]
    assert got["image"].dtype == np.float32 and got["label"].dtype == np.int16
    assert got["image"].tobytes() == image.tobytes() and got["label"].tobytes() == label.tobytes()
    assert got["image"].max() > 0.5  # not zeros
    t = MongoheadDataset(config=cfg)[0]
    assert t["image"].dtype == torch.float32 and torch.equal(t["label"], torch.from_numpy(label))


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_256_cubed_volume_is_chunked_under_16_mib_and_exact(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=1, CHUNKSIZE=15)
    rng = np.random.default_rng(1)
    image = rng.random((256, 256, 256), dtype=np.float32)  # 64 MiB
    label = (image * 7).astype(np.uint8)
    _fill_and_swap(cfg, [(image, label)])
    store = Store(cfg)
    sizes = [len(d["data"]) for d in store.chunks.find({}, {"data": 1})]
    assert len(sizes) >= 5 and max(sizes) <= 15 * 1024 * 1024
    import bson

    biggest = max(len(bson.encode(d)) for d in store.chunks.find())
    assert biggest < 16 * 1024 * 1024
    got = MongoTupleheadDataset(config=cfg, output="numpy")[0]
    assert got[0].tobytes() == image.tobytes() and got[1].tobytes() == label.tobytes()


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4", "blosc2"])
def test_compression_round_trips_through_the_server(make_config: Any, compression: str) -> None:
    from wirehead.synth import synth_sample

    cfg = make_config(SWAP_CAP=1, COMPRESSION=compression)
    image, label = synth_sample((32, 32, 32), seed=3)
    _fill_and_swap(cfg, [(image, label)])
    got = MongoheadDataset(config=cfg, output="numpy")[0]
    assert got["image"].tobytes() == image.tobytes() and got["label"].tobytes() == label.tobytes()


def test_torch_tensors_and_dicts_round_trip(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=1)
    image = torch.arange(24, dtype=torch.bfloat16).reshape(2, 3, 4).transpose(0, 2)  # non-contiguous bfloat16
    label = torch.tensor([[True, False]])
    _fill_and_swap(cfg, [{"label": label, "image": image}])
    got = MongoheadDataset(config=cfg)[0]
    assert got["image"].dtype == torch.bfloat16 and torch.equal(got["image"], image)
    assert got["label"].dtype == torch.bool and torch.equal(got["label"], label)
