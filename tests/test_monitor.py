"""Tests of wirehead.monitor: Snapshot numbers against ground truth on a real server."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import urlsplit

import numpy as np
import pytest

from wirehead import MongoheadDataset, Snapshot, WireheadGenerator, WireheadManager, snapshot
from wirehead.chunks import encode
from wirehead.errors import GeneratorError, StoreUnavailable
from wirehead.formatting import duration, rate, size
from wirehead.monitor import _rate, fill_bar, swap_log, swap_log_lines
from wirehead.store import Store


def _sample(i: int, shape: tuple[int, ...] = (6, 5, 4)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    return rng.random(shape, dtype=np.float32), rng.integers(0, 5, shape, dtype=np.uint8)


def _nbytes(cfg, samples) -> int:
    return sum(encode(s, cfg.sample, cfg.compression).stored_bytes for s in samples)


def test_snapshot_matches_ground_truth_across_swaps(make_config) -> None:
    cfg = make_config(SWAP_CAP=4, LEASE_SECONDS=120.0)
    store = Store(cfg)
    first = snapshot(cfg)
    assert not first.initialised and first.write_gen == 0 and first.read_gen is None and first.swaps == 0
    assert not store.database_exists(), "a snapshot must not create the cache"

    mgr = WireheadManager(config=cfg)
    mgr.step()  # the manager holds the lease, so generators never swap by themselves here
    gen = WireheadGenerator(None, config=cfg, name="g-test")
    samples = [_sample(i) for i in range(10)]
    rates = []
    try:
        for s in samples[:3]:
            gen.push(s)
        snap = snapshot(cfg)
        rates.append(snap.samples_per_second)
        assert (snap.write_gen, snap.read_gen, snap.write_fill, snap.swaps) == (0, None, 3, 0)
        assert snap.fill_fraction == pytest.approx(0.75) and snap.next_fill == 0
        assert snap.lease_holder == mgr.swapper.holder and snap.lease_expires_in > 100
        assert [g.name for g in snap.generators] == ["g-test"]
        assert snap.generators[0].status == "alive"  # its produced count arrives with the next heartbeat
        assert [m.kind for m in snap.managers] == ["manager"] and snap.managers[0].status == "alive"
        assert snap.generation_bytes == {0: _nbytes(cfg, samples[:3])}

        for s in samples[3:6]:  # fills generation 0, then two overflow into generation 1
            gen.push(s)
        snap = snapshot(cfg)
        rates.append(snap.samples_per_second)
        assert (snap.write_fill, snap.next_fill, snap.fill_fraction) == (4, 2, 1.0)

        assert mgr.step().swapped
        snap = snapshot(cfg)
        rates.append(snap.samples_per_second)
        assert (snap.write_gen, snap.read_gen, snap.write_fill, snap.swaps) == (1, 0, 2, 1)
        assert snap.read_gen_size == 4 and snap.last_swap_at is not None and snap.read_gen_age >= 0
        assert snap.generation_bytes == {0: _nbytes(cfg, samples[:4]), 1: _nbytes(cfg, samples[4:6])}
        assert snap.samples_per_second > 0

        ds = MongoheadDataset(config=cfg, output="numpy")
        for i in range(10):
            ds[i % 4]
        ds.close()  # reports the batched read count
        snap = snapshot(cfg)
        assert snap.read_gen_reads == 10 and snap.reads_per_sample == pytest.approx(2.5)

        for s in samples[6:8]:
            gen.push(s)
        assert mgr.step().swapped
        snap = snapshot(cfg)
        rates.append(snap.samples_per_second)
        assert (snap.write_gen, snap.read_gen, snap.write_fill, snap.swaps, snap.read_gen_size) == (2, 1, 0, 2, 4)
        assert snap.read_gen_reads == 0
        assert len(snap.swap_intervals) == 1 and snap.swap_intervals[0] >= 0
        assert all(r >= 0 for r in rates), rates

        log = swap_log(cfg)
        assert [(e["gen"], e["size"], e["reason"]) for e in log] == [(0, 4, "full"), (1, 4, "full")]
        lines = list(swap_log_lines(log))
        assert [json.loads(ln)["gen"] for ln in lines] == [0, 1]
    finally:
        gen.close()  # records the final count
        store.close()
    (info,) = snapshot(cfg).generators
    assert (info.status, info.produced) == ("stopped", 8)

    # JSON round trip keeps every field the dashboard renders
    data = json.loads(snap.to_json())
    for key in ("taken_at", "dbname", "uri", "swap_cap", "write_gen", "read_gen", "write_fill", "fill_fraction",
                "next_fill", "swaps", "last_swap_at", "swap_intervals", "samples_per_second", "read_gen_size",
                "read_gen_age", "read_gen_reads", "reads_per_sample", "reuse_wait_seconds", "generation_bytes",
                "orphan_samples", "lease_holder", "lease_expires_in", "generators", "managers", "errors"):
        assert key in data, key
    assert Snapshot.from_dict(data) == snap
    text = snap.format_text()
    assert "write generation  2" in text and "read generation   1" in text and "g-test" in text


def test_rate_never_negative_and_uses_the_window() -> None:
    now = 1000.0
    log = [{"at": 900.0, "size": 10}, {"at": 950.0, "size": 10}, {"at": 990.0, "size": 10}]
    # anchor: the newest swap at least 60 s old (t=900): 20 swapped after it + 5 pending over 100 s
    assert _rate(now, log, 5, None, []) == pytest.approx(0.25)
    # right after a swap the pending count drops to zero, but the rate stays positive
    assert _rate(now, log, 0, None, []) == pytest.approx(0.2)
    assert _rate(now, [], 0, None, []) == 0.0
    assert _rate(now, [], 8, 996.0, []) == pytest.approx(2.0)  # the write generation was created at 996
    assert fill_bar(0.5, 10) == "[#####.....]" and fill_bar(float("nan"), 4) == "[....]"


def test_formatters_shared_by_the_text_and_the_dashboard(make_config) -> None:
    assert [duration(None), duration(-1.0), duration(12.34), duration(150.0), duration(9000.0)] == \
        ["-", "-", "12.3 s", "2.5 min", "2.5 h"]
    assert [size(512), size(1536), size(3 * 2**20), size(5 * 2**30)] == ["512 B", "1.5 KiB", "3.0 MiB", "5.0 GiB"]
    assert rate(3.254) == "3.25 samples/s"
    pytest.importorskip("ipywidgets")
    from wirehead.notebook.dashboard import snapshot_html

    snap = dataclasses.replace(snapshot(make_config()), read_gen=0, read_gen_size=4, read_gen_age=150.0,
                               samples_per_second=3.254, generation_bytes={0: 1536})
    text, html = snap.format_text(), snapshot_html(snap)
    for shown in ("2.5 min", "3.25 samples/s"):  # the CLI's table and the widget say the same
        assert shown in text and shown in html, (shown, text, html)
    assert "gen 0: 1.5 KiB" in text


def test_errored_generator_is_reported(make_config) -> None:
    cfg = make_config()

    def broken():
        yield _sample(0)
        raise RuntimeError("scanner on fire")

    gen = WireheadGenerator(broken(), config=cfg, name="g-broken")
    with pytest.raises(GeneratorError):
        gen.run()
    snap = snapshot(cfg)
    (info,) = snap.generators
    assert info.status == "errored" and info.produced == 1
    assert any("g-broken" in e and "scanner on fire" in e for e in snap.errors), snap.errors


def test_unreachable_server_raises_quickly(config) -> None:
    cfg = config.replace(MONGO_URI="mongodb://127.0.0.1:1/", CONNECT_TIMEOUT=1.0)
    with pytest.raises(StoreUnavailable):
        snapshot(cfg)


def test_snapshot_accepts_a_store_and_a_mapping(config) -> None:
    store = Store(config)
    try:
        store.ensure_schema()
        a = snapshot(store)
        b = snapshot({**{k.upper(): v for k, v in config.to_dict().items() if v is not None}})
        assert a.initialised and b.initialised and a.dbname == b.dbname == config.dbname
        password = urlsplit(config.uri).password  # the embedded server's URI carries its credential
        assert a.uri.startswith("mongodb://") and (password is None or password not in a.uri)
    finally:
        store.close()


def test_uri_password_is_redacted(config) -> None:
    cfg = config.replace(MONGO_URI="mongodb://alice:s3cret@127.0.0.1:1/", CONNECT_TIMEOUT=1.0)
    with pytest.raises(StoreUnavailable) as info:
        snapshot(cfg)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


def test_orphans_are_counted_without_member_lists_or_chunk_ids(make_config, monkeypatch) -> None:
    # a dashboard takes a snapshot a second: its cost must not grow with SWAP_CAP, so no query may return
    # member lists (live_members) or every old chunk id (orphan_candidates)
    cfg = make_config(SWAP_CAP=3)
    store = Store(cfg)
    gen = WireheadGenerator(None, config=cfg, name="g-orphans")
    for i in range(4):  # generation 0 full, one in generation 1
        gen.push(_sample(i))
    gen.close()  # finished: nothing in flight
    enc = encode(_sample(9), cfg.sample, cfg.compression)
    manifest = {"meta": enc.meta, "stored_bytes": enc.stored_bytes, "raw_bytes": enc.raw_bytes}
    for sid in ("orphan-1", "orphan-2"):  # written, never committed: a dead writer's
        store.put_sample(sid, enc.chunks(cfg.chunk_bytes), manifest)

    def refused(*args, **kwargs):
        raise AssertionError("a snapshot read member lists or chunk ids")

    monkeypatch.setattr(Store, "live_members", refused)
    monkeypatch.setattr(Store, "orphan_candidates", refused)
    gen_docs = Store.gen_docs
    monkeypatch.setattr(Store, "gen_docs", lambda self, members=True: refused() if members else gen_docs(self, False))
    snap = snapshot(store)
    assert snap.stored_samples == 6 and snap.orphan_samples == 2, (snap.stored_samples, snap.orphan_samples)
    store.close()
