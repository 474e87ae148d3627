"""NIfTI in and out with nibabel (the ``brains`` extra): arrays with their 4x4 affine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

from ._lazy import require

__all__ = ["save", "load"]

PathLike = Union[str, Path]


def _nib():  # type: ignore[no-untyped-def]
    return require("nibabel", "NIfTI")


def save(array: np.ndarray, path: PathLike, affine: Optional[np.ndarray] = None) -> Path:
    """Write ``array`` (2-D..4-D, dtype kept: integer label maps stay integer) to ``path`` (``.nii``/``.nii.gz``).

    ``affine`` maps voxel indices to millimetres; ``None`` means the identity (1 mm voxels).

    Raises:
        ValueError: a bad affine or an array nibabel cannot store (e.g. bool is stored as uint8).
    """
    nib = _nib()
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise ValueError(f"affine should be a finite 4x4 array, but got shape {aff.shape}")
    img = nib.Nifti1Image(arr, aff)
    img.set_data_dtype(arr.dtype)
    img.header.set_xyzt_units("mm")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def load(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file: ``(array, affine)``; the array has the stored dtype (no scaling applied when
    the file has none), the affine is float64 4x4.

    Raises:
        FileNotFoundError: no such file.
    """
    nib = _nib()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no NIfTI file at {path}")
    img = nib.load(str(path))
    slope, inter = img.dataobj.slope, img.dataobj.inter
    if (slope in (None, 1.0) or np.isnan(slope)) and (inter in (None, 0.0) or np.isnan(inter)):
        arr = np.asanyarray(img.dataobj.get_unscaled())
    else:
        arr = img.get_fdata(dtype=np.float32)
    return np.asarray(arr), np.asarray(img.affine, dtype=np.float64)
