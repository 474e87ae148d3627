"""Generation QC and reading a generation without training on it (wirehead.qc, ``wirehead qc``), on a real server."""

from __future__ import annotations

import json
import threading
import tracemalloc
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import memory_owner, swap_in, write_config
from wirehead.cli import main
from wirehead.connect import open_store
from wirehead.qc import GenerationSamples, SampleGone, flag_generation, generation_qc, read_sample, sample_qc


def test_sample_qc_measures_label_volumes_in_ml_and_mean_intensity_per_label() -> None:
    image = np.zeros((10, 10, 10), np.float32)
    label = np.zeros((10, 10, 10), np.uint8)
    label[:5, :5, :5] = 1  # 125 voxels of 2 x 2 x 2 mm = 1 mL
    image[:5, :5, :5] = 3.0
    label[5:, :, :] = 2  # 500 voxels = 4 mL
    image[5:, :, :] = np.arange(10, dtype=np.float32)[None, None, :]
    s = sample_qc({"image": image, "label": label, "affine": np.diag([2.0, 2.0, 2.0, 1.0])})
    assert (s.image_kind, s.label_kind) == ("image", "label")
    assert s.volumes_ml[1] == pytest.approx(1.0) and s.volumes_ml[2] == pytest.approx(4.0)
    assert s.means[1] == pytest.approx(3.0) and s.means[2] == pytest.approx(4.5)
    assert s.flags == [] and not s.constant and s.nonfinite == 0
    assert sample_qc({"image": image, "label": label}).volumes_ml[1] == pytest.approx(0.125)  # 1 mm³ voxels


def _shells(seed: int, shape: tuple[int, int, int] = (24, 24, 20)) -> tuple[np.ndarray, np.ndarray]:
    """Labels 1-3 as concentric shells whose radii vary a little from seed to seed, and an image of them."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt(sum(g * g for g in grids))
    label = np.zeros(shape, np.uint8)
    for value, radius in ((1, 0.9), (2, 0.65), (3, 0.35)):
        label[r < radius * rng.uniform(0.95, 1.05)] = value
    image = (label * 0.3 + rng.normal(0, 0.02, shape)).astype(np.float32)
    return image, label


def test_flags_catch_nan_constant_images_empty_expected_labels_and_outlier_volumes() -> None:
    samples = [dict(zip(("image", "label"), _shells(seed))) for seed in range(8)]
    samples[1]["image"][3, 3, 3] = np.nan
    samples[2]["image"][:] = 0.5
    top = int(samples[3]["label"].max())
    samples[3]["label"][samples[3]["label"] == top] = 0  # an expected label gone
    big = samples[4]["label"]
    big[big == 0] = 1  # label 1 everywhere the background was: its volume far from the others'
    measured = [sample_qc(s, i) for i, s in enumerate(samples)]
    expected, median = flag_generation(measured)
    flags = {s.index: " ".join(s.flags) for s in measured}
    assert "NaN/inf" in flags[1] and "constant image" in flags[2]
    assert f"empty label {top}" in flags[3] and top in expected
    assert "label 1 volume" in flags[4] and "far from" in flags[4]
    assert not flags[0] and not flags[5] and not flags[7], flags
    assert set(median) >= set(expected)


def test_reading_a_generation_for_viewing_or_qc_is_not_a_training_read_and_holds_few_samples(
        make_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_config(SWAP_CAP=6, SAMPLE=["image", "label", "affine"])
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    samples = [(*_shells(s), affine) for s in range(6)]
    bad = samples[5][0].copy()
    bad[0, 0, 0] = np.inf
    samples[5] = (bad, samples[5][1], affine)
    swap_in(cfg, samples)
    store = open_store(cfg)
    try:
        view = GenerationSamples(store, keep=2)
        gen = view.refresh()
        assert gen is not None and gen.n == 6
        for i in range(6):
            got = view.get(i)
            assert any(np.array_equal(got["image"], s[0]) for s in samples)
            assert view.held <= 2
        assert not [t.name for t in threading.enumerate() if "prefetch" in t.name]
        report = generation_qc(view)
        assert len(report.flagged) == 1 and "NaN/inf" in report.flagged[0].flags[0], report.format_text()
        assert store.gen_doc(gen.gen).reads == 0, "viewing and QC must not count as training reads"
        with pytest.raises(LookupError, match="out of range"):
            view.get(6)
    finally:
        store.close()
    path = write_config(tmp_path / "cache.yaml", cfg)
    assert main(["qc", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_samples"] == 6 and len(out["flagged"]) == 1
    flagged = out["samples"][out["flagged"][0]]
    assert "NaN/inf" in " ".join(flagged["flags"]) and flagged["voxel_mm3"] == pytest.approx(8.0)
    assert main(["qc", str(path), "--fail-on-flags"]) == 1
    text = capsys.readouterr().out
    assert "QC of generation" in text and "1 flagged" in text
    assert main(["qc", str(path), "--expected", "x"]) == 2
    assert main(["qc", "--help"]) == 0


def test_a_sample_is_read_chunk_by_chunk_into_its_arrays_once_never_joined(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=1, SAMPLE=["image", "label"], CHUNKSIZE=1)
    rng = np.random.default_rng(0)
    image = rng.random((128, 128, 64), dtype=np.float32)  # 4 MiB in 1 MiB chunks
    label = rng.integers(0, 9, (128, 128, 64), dtype=np.uint8)
    swap_in(cfg, [(image, label)])
    store = open_store(cfg)
    try:
        sid = store.gen_doc(store.state().read_gen).members[0]
        store.ping()  # connected before measuring
        tracemalloc.start()  # numpy's buffers and pymongo's replies are both traced
        try:
            got = read_sample(store, sid)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert np.array_equal(got["image"], image) and np.array_equal(got["label"], label)
        assert got["image"].flags.writeable
        one = image.nbytes + label.nbytes
        # the sample once, plus the chunk in hand (its reply and its bytes); joined reads hold it twice
        print(f"peak {peak / 2**20:.1f} MiB reading a {one / 2**20:.1f} MiB sample")
        assert peak < one + 3 * cfg.chunk_bytes, f"peak {peak} bytes reading a {one}-byte sample"
        del got
        store.chunks.delete_one({"_id": f"{sid}:2"})  # a retired generation being deleted
        with pytest.raises(SampleGone, match="incomplete"):
            read_sample(store, sid)
        store.delete_samples([sid])
        with pytest.raises(SampleGone, match="gone"):
            read_sample(store, sid)
    finally:
        store.close()


def test_at_most_keep_decoded_samples_exist_through_a_viewing_source_the_one_read_included(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=5)
    swap_in(cfg, [_shells(s) for s in range(5)])
    store = open_store(cfg)
    try:
        view = GenerationSamples(store, keep=2)
        view.refresh()
        alive: list[weakref.ref] = []
        most = [0]
        real_fetch = view.fetch

        def fetch(sid: str) -> dict[str, np.ndarray]:
            most[0] = max(most[0], sum(r() is not None for r in alive) + 1)  # those alive, and this one
            arrays = real_fetch(sid)
            alive.append(weakref.ref(memory_owner(arrays["image"])))  # one per sample
            return arrays

        view.fetch = fetch  # type: ignore[method-assign]
        for i in (0, 1, 2, 3, 1, 4, 0):
            view.get(i)
            assert view.look(i, lambda arrays: arrays["image"].shape) == (24, 24, 20)  # held: not read again
            view.look((i + 2) % 5, lambda arrays: float(arrays["image"].mean()))  # background work
        assert most[0] == 2, f"{most[0]} decoded samples at once through a source that keeps 2"
        assert view.held <= 2
    finally:
        store.close()
