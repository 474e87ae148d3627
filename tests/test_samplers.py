"""GenerationSampler: distributed training over generations of any size, with two real ranks (gloo, CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import child_env, kill_tree

pytestmark = pytest.mark.timeout(300)

SIZES = (2, 8, 5)  # MIN_FILL's first generation, a full one, a sealed one of odd size

RANK = r'''
import json, sys
from datetime import timedelta

import numpy as np
import torch.distributed as dist
from torch.utils.data import DataLoader

from helpers import wait_until
from wirehead import (GenerationSampler, MongoheadDataset, ReadAheadSampler, WireheadConfig, WireheadGenerator,
                      WireheadManager)
from wirehead.store import Store

rank, world, init, out, keys, sizes = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                       json.loads(sys.argv[5]), json.loads(sys.argv[6]))
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world, timeout=timedelta(seconds=120))
cfg = WireheadConfig.load(keys)
ds = MongoheadDataset(config=cfg, output="numpy", timeout=60)
plain = DataLoader(ds, batch_size=2, sampler=GenerationSampler(ds, seed=3))
ahead = DataLoader(ds, batch_sampler=ReadAheadSampler(ds, batch_size=2, sampler=GenerationSampler(ds, seed=4)))
if rank == 0:
    g, mgr, store = WireheadGenerator(config=cfg), WireheadManager(config=cfg), Store(cfg)
epochs = []
for k, size in enumerate(sizes):
    if rank == 0:  # the next generation, of another size
        for i in range(size):
            g.push((np.full(4, 100 * k + i, np.float32), np.zeros(4, np.int8)))
        if k and size < cfg.swap_cap:
            store.seal(k)
        wait_until(lambda: (mgr.step(), store.state().read_gen == k)[1], 60, f"generation {k}")
    dist.barrier()
    got = {}
    for name, loader in (("plain", plain), ("ahead", ahead)):
        loader.batch_sampler.set_epoch(k) if name == "ahead" else loader.sampler.set_epoch(k)
        got[name] = [[int(v) for v in b["image"][:, 0]] for b in loader]
    epochs.append(got)
with open(out, "w") as f:
    json.dump(epochs, f)
dist.barrier()
dist.destroy_process_group()
ds.close()
'''


@pytest.mark.slow
def test_two_ranks_read_disjoint_equal_shares_of_generations_of_any_size(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(SWAP_CAP=8, MIN_FILL=2)
    keys = {k.upper(): v for k, v in cfg.to_dict().items() if v is not None}
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    init = f"file://{tmp_path / 'rendezvous'}"
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    env = child_env(GLOO_SOCKET_IFNAME="lo")
    procs = [subprocess.Popen([sys.executable, str(script), str(r), "2", init, str(outs[r]), json.dumps(keys),
                               json.dumps(SIZES)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for r in range(2)]
    try:
        for p in procs:
            output, _ = p.communicate(timeout=240)
            assert p.returncode == 0, output[-3000:]
    finally:
        for p in procs:
            kill_tree(p)
    ranks = [json.loads(o.read_text()) for o in outs]
    for k, size in enumerate(SIZES):
        generation = {100 * k + i for i in range(size)}
        for name in ("plain", "ahead"):
            batches = [r[k][name] for r in ranks]
            assert len(batches[0]) == len(batches[1]), (k, name, batches)  # the same number of steps
            seen = [[v for b in bs for v in b] for bs in batches]
            assert all(len(s) == size // 2 for s in seen), (k, name, seen)
            assert not set(seen[0]) & set(seen[1]), (k, name, seen)  # disjoint
            assert set(seen[0]) | set(seen[1]) <= generation, (k, name, seen)  # the current generation's


@pytest.mark.slow
def test_shares_follow_the_generations_size_without_a_process_group(make_config: Any) -> None:
    import numpy as np

    from wirehead import GenerationSampler, MongoheadDataset, WireheadGenerator, WireheadManager
    from wirehead.store import Store

    cfg = make_config(SWAP_CAP=8, MIN_FILL=3)
    g, mgr, store = WireheadGenerator(config=cfg), WireheadManager(config=cfg), Store(cfg)
    with MongoheadDataset(config=cfg, output="numpy", timeout=30) as ds:
        samplers = [GenerationSampler(ds, num_replicas=2, rank=r, seed=1) for r in range(2)]
        for k, size in enumerate((3, 8)):
            for i in range(size):
                g.push((np.full(4, i, np.float32), np.zeros(4, np.int8)))
            mgr.step()
            assert store.state().read_gen == k
            shares = [list(s) for s in samplers]
            assert [len(s) for s in samplers] == [size // 2] * 2
            assert all(len(share) == size // 2 for share in shares), shares
            assert not set(shares[0]) & set(shares[1]) and set(shares[0]) | set(shares[1]) <= set(range(size))
        padded = [list(GenerationSampler(ds, num_replicas=3, rank=r, drop_last=False)) for r in range(3)]
        assert sorted(v for share in padded for v in share) == sorted([*range(8), padded[0][0]])
        with pytest.raises(ValueError, match="rank=2"):
            GenerationSampler(ds, num_replicas=2, rank=2)
        with pytest.raises(TypeError, match="wirehead dataset"):
            GenerationSampler(list(range(4)))  # type: ignore[arg-type]
    g.close()
