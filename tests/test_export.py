"""`wirehead export` and wirehead.nifti: cached samples reopen with nibabel to the same arrays and affine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
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


def test_export_writes_each_kind_with_the_sample_affine(make_config: Any, tmp_path: Path) -> None:
    cfg = make_config(SWAP_CAP=2, SAMPLE=["image", "label", "affine"])
    samples = _samples(2)
    WireheadGenerator(iter(samples), config=cfg, n_samples=2).run_generator()
    store = Store(cfg)
    try:
        members = None
        for doc in store.gen_docs():
            if doc.n == 2:
                gen, members = doc.gen, list(doc.members)
        assert members is not None
    finally:
        store.close()
    path = _write_config(tmp_path / "cache.yaml", cfg)
    out = tmp_path / "nii"
    assert main(["export", str(path), "--out", str(out), "--generation", str(gen), "--samples", "2"]) == 0
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


def test_export_refuses_a_missing_generation(config: Any, tmp_path: Path, capsys: Any) -> None:
    path = _write_config(tmp_path / "cache.yaml", config)
    assert main(["export", str(path), "--out", str(tmp_path / "o"), "--generation", "99"]) == 2
    assert "generation 99" in capsys.readouterr().err
