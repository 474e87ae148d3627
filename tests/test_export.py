"""`wirehead export` and wirehead.nifti: cached samples reopen with nibabel to the same arrays and affine."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import torch
import yaml

nib = pytest.importorskip("nibabel")

from wirehead import WireheadGenerator, nifti  # noqa: E402
from wirehead.cli import main  # noqa: E402
from wirehead.store import Store  # noqa: E402


def _write_config(path: Path, cfg: Any) -> Path:
    path.write_text(yaml.safe_dump({k.upper(): v for k, v in cfg.to_dict().items() if v is not None}))
    return path


def _samples(n: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        image = rng.random((6, 7, 5), dtype=np.float32)
        label = rng.integers(0, 4, (6, 7, 5)).astype(np.uint8)
        affine = np.diag([2.0, 2.5, 3.0, 1.0])
        affine[:3, 3] = [-90.0 + i, -126.0, -72.0]
        out.append((image, label, affine))
    return out


def test_nifti_save_load_keeps_dtype_values_and_affine(tmp_path: Path) -> None:
    image, label, affine = _samples(1)[0]
    for arr in (image, label, label.astype(np.int16)):
        path = nifti.save(arr, tmp_path / f"x_{arr.dtype}.nii.gz", affine)
        back, aff = nifti.load(path)
        assert back.dtype == arr.dtype and np.array_equal(back, arr)
        assert np.allclose(aff, affine)
        img = nib.load(str(path))   # and plain nibabel agrees
        assert np.allclose(img.affine, affine) and img.get_data_dtype() == arr.dtype


def _export(make_config: Any, tmp_path: Path, kinds: Sequence[str],
            samples: Sequence[tuple[Any, ...]]) -> tuple[int, Path]:
    """Commit ``samples`` as one generation of a fresh cache, run ``wirehead export`` on it: (generation, out dir)."""
    n = len(samples)
    cfg = make_config(SWAP_CAP=n, SAMPLE=list(kinds))
    WireheadGenerator(iter(samples), config=cfg, n_samples=n).run_generator()
    store = Store(cfg)
    try:
        gens = [doc.gen for doc in store.gen_docs() if doc.n == n]
        assert gens, "the generator committed no full generation"
    finally:
        store.close()
    path = _write_config(tmp_path / "cache.yaml", cfg)
    out = tmp_path / "nii"
    assert main(["export", str(path), "--out", str(out), "--generation", str(gens[0]), "--samples", str(n)]) == 0
    return gens[0], out


def test_export_writes_each_kind_with_the_sample_affine(make_config: Any, tmp_path: Path) -> None:
    samples = _samples(2)
    gen, out = _export(make_config, tmp_path, ["image", "label", "affine"], samples)
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"gen{gen}_sample{i}_{k}.nii.gz" for i in range(2) for k in ("image", "label")]
    by_first_voxel = {s[0][0, 0, 0]: s for s in samples}
    for i in range(2):
        image, aff = nifti.load(out / f"gen{gen}_sample{i}_image.nii.gz")
        label, laff = nifti.load(out / f"gen{gen}_sample{i}_label.nii.gz")
        want = by_first_voxel[image[0, 0, 0]]
        assert image.dtype == np.float32 and np.array_equal(image, want[0])
        assert label.dtype == np.uint8 and np.array_equal(label, want[1])
        assert np.array_equal(aff, want[2]) and np.array_equal(laff, want[2])


def test_export_reads_as_the_viewer_does_one_sample_at_a_time_and_skips_a_sample_being_deleted(
        make_config: Any, tmp_path: Path, monkeypatch: Any, caplog: Any) -> None:
    samples = _samples(3)
    cfg = make_config(SWAP_CAP=3, SAMPLE=["image", "label", "affine"], CHUNKSIZE=1)
    WireheadGenerator(iter(samples), config=cfg, n_samples=3).run_generator()
    store = Store(cfg)
    try:
        doc = next(d for d in store.gen_docs() if d.n == 3)
        store.chunks.delete_one({"_id": f"{doc.members[1]}:0"})  # its generation being deleted
    finally:
        store.close()

    def whole_generation(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("export read samples with Store.get_samples, not the viewer's read (qc.read_sample)")

    monkeypatch.setattr(Store, "get_samples", whole_generation)
    caplog.set_level(logging.WARNING)
    path = _write_config(tmp_path / "cache.yaml", cfg)
    out = tmp_path / "nii"
    assert main(["export", str(path), "--out", str(out), "--generation", str(doc.gen), "--samples", "3"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"gen{doc.gen}_sample{i}_{k}.nii.gz"
                                                      for i in (0, 2) for k in ("image", "label")]
    assert f"sample 1 of generation {doc.gen} skipped" in caplog.text and "gone" in caplog.text


def test_export_refuses_a_missing_generation(config: Any, tmp_path: Path, capsys: Any) -> None:
    path = _write_config(tmp_path / "cache.yaml", config)
    assert main(["export", str(path), "--out", str(tmp_path / "o"), "--generation", "99"]) == 2
    assert "generation 99" in capsys.readouterr().err


# -- every kind wirehead can store exports faithfully, or is skipped with a clear message (issue 26 item 5) ----------

_BIG = 2**40


@pytest.mark.parametrize("values, want", [
    (np.array([[[True, False]]]), np.uint8),
    (np.array([[[0, 3, -7]]], dtype=np.int64), np.int32),            # a torch.long label map: values fit int32
    (np.array([[[0, _BIG, -_BIG]]], dtype=np.int64), np.int64),      # they do not: NIfTI's own int64
    (np.array([[[0, 3]]], dtype=np.uint64), np.uint32),
    (np.array([[[0, 2**63 + 5]]], dtype=np.uint64), np.uint64),
    (np.array([[[0.5, -1e-4, np.inf, np.nan]]], dtype=np.float16), np.float32),
    (np.array([[[0.5, 1e300, np.nan]]], dtype=np.longdouble), np.float64),    # every value a float64
    (np.array([[[0.5 + 1j, np.nan]]], dtype=np.clongdouble), np.complex128),
    (np.array([[[1, 2]]], dtype=">i4"), np.int32),                  # big-endian: same values, little-endian file
])
def test_nifti_writes_the_nearest_dtype_that_keeps_every_value(values: np.ndarray, want: Any, tmp_path: Path,
                                                               caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="wirehead.nifti")
    path = nifti.save(values, tmp_path / "x.nii.gz")
    back, _ = nifti.load(path)
    assert back.dtype == np.dtype(want) and back.shape == values.shape
    assert np.array_equal(back, values.astype(want), equal_nan=values.dtype.kind in "fc")
    if np.dtype(want) != values.dtype.newbyteorder("="):
        assert f"written as {np.dtype(want).name}" in caplog.text   # the change is said in a log line
    else:
        assert "written as" not in caplog.text


@pytest.mark.parametrize("dtype, want", [("bfloat16", np.float32), ("float16", np.float32),
                                         ("float8_e4m3fn", np.float32), ("complex32", np.complex64),
                                         ("int64", np.int32), ("uint16", np.uint16), ("bool", np.uint8)])
def test_nifti_writes_torch_tensors_of_every_storable_dtype(dtype: str, want: Any, tmp_path: Path) -> None:
    with warnings.catch_warnings():   # complex32 is experimental in torch
        warnings.simplefilter("ignore", UserWarning)
        t = torch.arange(0, 8).reshape(2, 2, 2).to(getattr(torch, dtype))
    back, _ = nifti.load(nifti.save(t, tmp_path / "t.nii.gz"))
    wide = torch.complex128 if t.is_complex() else torch.float64
    assert back.dtype == np.dtype(want) and back.shape == tuple(t.shape)
    assert np.array_equal(back, t.to(wide).numpy())


@pytest.mark.parametrize("values, reason", [
    (np.float32(42.0), "0-d"),
    (np.zeros((0, 3), np.float32), "no values"),
    (np.zeros((1,) * 8, np.float32), "8 dimensions"),
    (np.zeros((40000, 1), np.uint8), "32767"),
    # a long double finer than float64 can hold
    (np.full((1, 1, 2), np.longdouble(1) + np.longdouble(np.finfo(np.float64).eps) / 4), "float64"),
])
def test_nifti_refuses_what_it_cannot_hold_and_writes_nothing(values: np.ndarray, reason: str, tmp_path: Path) -> None:
    if reason == "float64" and np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps:
        pytest.skip("long double is float64 on this platform")
    with pytest.raises(nifti.NiftiUnsupported, match=reason):
        nifti.save(values, tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.nii.gz").exists()


def test_export_writes_long_labels_and_half_images_and_skips_scalars_with_a_message(
        make_config: Any, tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.INFO)
    rng = np.random.default_rng(3)
    samples = [(torch.from_numpy(rng.random((5, 6, 4), dtype=np.float32)).half(),        # float16 image
                torch.from_numpy(rng.integers(0, 40, (5, 6, 4))).long(),                 # torch.long labels
                torch.tensor(30.0 + i),                                                    # a 0-d "age"
                np.diag([2.0, 2.0, 2.0, 1.0])) for i in range(2)]
    gen, out = _export(make_config, tmp_path, ["image", "label", "age", "affine"], samples)
    assert sorted(p.name for p in out.iterdir()) == [f"gen{gen}_sample{i}_{k}.nii.gz"
                                                      for i in range(2) for k in ("image", "label")]
    by_age = {}
    for i in range(2):
        image, aff = nifti.load(out / f"gen{gen}_sample{i}_image.nii.gz")
        label, _ = nifti.load(out / f"gen{gen}_sample{i}_label.nii.gz")
        assert image.dtype == np.float32 and label.dtype == np.int32 and np.array_equal(aff, samples[0][3])
        by_age[i] = (image, label)
    got = {(im.tobytes(), lb.tobytes()) for im, lb in by_age.values()}
    assert got == {(s[0].float().numpy().tobytes(), s[1].int().numpy().tobytes()) for s in samples}
    text = caplog.text
    assert "'image': float16 written as float32" in text and "'label': int64 written as int32" in text
    assert "'age'" in text and "skipped" in text and "0-d" in text
    assert text.count("written as float32") == 1       # said once per kind, not once per sample
