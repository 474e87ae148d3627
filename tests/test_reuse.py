"""Reuse control (REUSE_CAP, REUSE_POLICY, SWAP_EARLY_MIN, MIN_FILL) with slow generators and fast readers."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import Workers, read_report, wait_until
from wirehead import MongoheadDataset, WireheadGenerator, WireheadManager
from wirehead.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # slow: real processes for long; `-m "not slow"` skips


def test_defaults_keep_unbounded_reuse(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    assert cfg.reuse_cap == 0 and cfg.min_fill == 0
    g = WireheadGenerator(config=cfg)
    for i in range(2):
        g.push((np.full(4, i, np.float32), np.zeros(4, np.int8)))
    g.close()
    WireheadManager(config=cfg).step()
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=5)
    first = {i: int(ds[i]["image"][0]) for i in range(2)}
    assert sorted(first.values()) == [0, 1]
    for _ in range(50):  # no cap: never blocks, the index chooses the sample
        assert {i: int(ds[i]["image"][0]) for i in range(2)} == first


def test_wait_policy_caps_reads_per_sample_across_two_reader_processes(make_config: Any, tmp_path: Path) -> None:
    cap = 2
    cfg = make_config(SWAP_CAP=4, REUSE_CAP=cap, REUSE_POLICY="wait", GRACE_SECONDS=5.0)
    outs = [tmp_path / "r1.json", tmp_path / "r2.json"]
    with Workers(cfg) as w:
        w.start("manager", "--duration", "60")
        w.start("generator", "--gid", "1", "--delay", "0.15")  # slow: ~1 swap every 0.6 s or more
        readers = [w.start("reader", "--dataset", "--out", str(o), "--duration", "6", "--timeout", "30")
                   for o in outs]
        # the readers wait for swaps, and that time is reported (read while they run: retired generations,
        # with their counts, are deleted soon after)
        store = Store(cfg)
        wait_until(lambda: any(d.wait_seconds > 0 for d in store.gen_docs(members=False)), 30,
                   "time waited because of the reuse cap to be reported")
        for r in readers:
            assert r.wait(60) == 0, r.stderr()
    reports = [read_report(o) for o in outs]
    for rep in reports:
        assert rep["errors"] == [] and rep["bad"] == [], (rep["errors"][:1], rep["bad"][:1])
    counts = Counter((g, sid) for rep in reports for g, sid in rep["reads"])
    assert counts, "the readers read nothing"
    assert max(counts.values()) <= cap, counts.most_common(3)
    assert all(len(rep["reads"]) > 0 for rep in reports)  # both readers were served
    gens = {g for g, _ in counts}
    assert len(gens) >= 2


def test_warn_policy_never_blocks_and_warns_once_per_generation(make_config: Any,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    cfg = make_config(SWAP_CAP=3, REUSE_CAP=1, REUSE_POLICY="warn")
    g = WireheadGenerator(config=cfg)
    mgr = WireheadManager(config=cfg)
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=10)
    for gen in range(2):
        for i in range(3):
            g.push((np.full(4, gen * 10 + i, np.float32), np.zeros(4, np.int8)))
        mgr.step()
        wait_until(lambda: ds.reader.current(force=True).gen == gen, 30, f"generation {gen} to be read")
        with caplog.at_level(logging.WARNING, logger="wirehead.reuse"):
            t0 = time.monotonic()
            for _ in range(12):  # 4x the cap's budget
                ds[0]
            assert time.monotonic() - t0 < 5
    g.close()
    warnings = [r for r in caplog.records if "REUSE_POLICY=warn" in r.getMessage()]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert "generation 0" in warnings[0].getMessage() and "generation 1" in warnings[1].getMessage()


def test_swap_early_makes_smaller_generations_but_never_below_the_minimum(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(SWAP_CAP=20, REUSE_CAP=1, REUSE_POLICY="swap_early", SWAP_EARLY_MIN=3, GRACE_SECONDS=5.0)
    store = Store(cfg)
    with Workers(cfg) as w:
        w.start("manager", "--duration", "60")
        w.start("generator", "--gid", "1", "--delay", "0.05")
        r = w.start("reader", "--dataset", "--out", str(tmp_path / "r.json"), "--duration", "8", "--timeout", "60")
        assert r.wait(60) == 0, r.stderr()
        wait_until(lambda: store.state().swaps >= 3, 30, "three swaps")
    sizes = [e["size"] for e in store.swap_log()]
    reasons = {e["reason"] for e in store.swap_log()}
    assert "swap_early" in reasons
    assert min(sizes) >= 3 and min(sizes) < 20, sizes
    report = read_report(tmp_path / "r.json")
    assert report["errors"] == [] and report["bad"] == []
    counts = Counter((g, sid) for g, sid in report["reads"])
    assert max(counts.values()) <= 1


def test_min_fill_allows_an_early_first_read(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=10, MIN_FILL=2)
    g = WireheadGenerator(config=cfg)
    g.push((np.zeros(4, np.float32), np.zeros(4, np.int8)))
    mgr = WireheadManager(config=cfg)
    mgr.step()
    assert Store(cfg).state().read_gen is None  # one is not enough
    g.push((np.ones(4, np.float32), np.zeros(4, np.int8)))
    g.close()
    mgr.step()
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=5)
    assert len(ds) == 2


def test_a_batch_whose_generation_is_deleted_after_its_claim_is_claimed_again_where_it_is_served(
        make_config: Any) -> None:
    """Between the gate's claim on generation 0 and the read, 0 is replaced and deleted: the batch is served
    from generation 1 with tickets claimed there, so no sample is read past REUSE_CAP."""
    cfg = make_config(SWAP_CAP=2, REUSE_CAP=1, REUSE_POLICY="wait", GRACE_SECONDS=600.0)
    g = WireheadGenerator(config=cfg)
    mgr = WireheadManager(config=cfg)
    store = Store(cfg)
    for v in (1, 2):
        g.push((np.full(4, v, np.float32), np.zeros(4, np.int8)))
    mgr.step()
    assert store.state().read_gen == 0
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=30)
    assert ds.reader is not None  # made with its gate
    gate_admit = ds._gate.admit  # type: ignore[union-attr]

    def admit_then_lose_the_generation(indices: Any) -> Any:
        admitted = gate_admit(indices)
        if admitted[0] is not None and admitted[0].gen == 0:
            for v in (11, 12):
                g.push((np.full(4, v, np.float32), np.zeros(4, np.int8)))
            mgr.step()
            assert store.state().read_gen == 1
            store.drop_gen(0)
        return admitted

    ds._gate.admit = admit_then_lose_the_generation  # type: ignore[union-attr, method-assign]
    value = int(ds[0]["image"][0])
    assert value in (11, 12)
    assert store.claim_tickets(1, 1, 2) == (1, 1)  # ticket 0 of generation 1 went to that read
    g.close()
    ds.close()
