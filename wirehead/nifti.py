"""NIfTI in and out with nibabel (the ``brains`` extra): arrays with their 4x4 affine.

Every value wirehead can store is either written faithfully or refused: :func:`nifti_array` picks the
nearest NIfTI-1 dtype that keeps every value (bool as uint8; float16 and torch's bfloat16/float8 as
float32; complex32 as complex64; int64/uint64 as int32/uint32 when every value fits, which more tools
read, else as they are; long double as float64 when that is exact) and says so; what NIfTI cannot hold
(a 0-d scalar, an empty array, more than 7 dimensions, a dimension over 32767, long doubles float64
would round) raises :class:`NiftiUnsupported`, so a wrong file is never written.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ._lazy import require
from .arrays import _is_tensor

__all__ = ["save", "load", "nifti_array", "NiftiUnsupported"]

PathLike = Union[str, Path]
log = logging.getLogger("wirehead.nifti")

#: Dtypes NIfTI-1 stores and nibabel writes without being asked twice (the integer ones of 64 bits need
#: an explicit dtype in nibabel and are unread by some tools, so they are narrowed when every value fits).
_NATIVE = {np.dtype(t) for t in ("u1", "i1", "i2", "u2", "i4", "u4", "f4", "f8", "c8", "c16")}
#: NIfTI-1 keeps each dimension in an int16 and at most 7 of them.
MAX_DIM, MAX_NDIM = 32767, 7


class NiftiUnsupported(ValueError):
    """An array NIfTI cannot hold faithfully (the message says why); nothing was written."""


def _nib():  # type: ignore[no-untyped-def]
    return require("nibabel", "NIfTI")


def _tensor_array(t: Any) -> tuple[np.ndarray, Optional[str]]:
    """A CPU numpy array of a torch tensor; dtypes numpy lacks (bfloat16, float8, complex32) widen exactly."""
    t = t.detach().cpu().resolve_conj().resolve_neg()
    name = str(t.dtype).removeprefix("torch.")
    try:
        return t.numpy(), None
    except (TypeError, RuntimeError):
        import torch

        wide = torch.complex64 if t.is_complex() else torch.float32
        arr = t.to(wide).numpy()
        return arr, f"{name} written as {arr.dtype.name} (every value kept)"


def _fits(arr: np.ndarray, dt: np.dtype) -> bool:
    info = np.iinfo(dt)
    return arr.size == 0 or (int(arr.min()) >= info.min and int(arr.max()) <= info.max)


def nifti_array(value: Any) -> tuple[np.ndarray, Optional[str]]:
    """``value`` (a numpy array or torch tensor) as NIfTI will store it, and what changed (``None``: nothing).

    The returned array is little-endian and of a dtype NIfTI-1 holds, with every value of ``value``
    (compare with ``np.array_equal``); the note reads e.g. ``"int64 written as int32 (every value fits)"``.

    Raises:
        NiftiUnsupported: a 0-d value, an empty array, more than 7 dimensions or one over 32767, a long
            double array that float64 would round, or a dtype NIfTI has no type for.
    """
    note: Optional[str] = None
    arr, note = _tensor_array(value) if _is_tensor(value) else (np.asarray(value), None)
    if arr.ndim == 0:
        raise NiftiUnsupported(f"a 0-d value ({arr.item()!r}) is a scalar, not an image; NIfTI holds 1-7 dimensions")
    if arr.size == 0:
        raise NiftiUnsupported(f"the array of shape {arr.shape} holds no values")
    if arr.ndim > MAX_NDIM:
        raise NiftiUnsupported(f"shape {arr.shape} has {arr.ndim} dimensions; NIfTI holds at most {MAX_NDIM}")
    if max(arr.shape) > MAX_DIM:
        raise NiftiUnsupported(f"shape {arr.shape} has a dimension over NIfTI's limit of {MAX_DIM}")
    dt = arr.dtype.newbyteorder("=") if arr.dtype.byteorder in "<>" else arr.dtype
    out = dt
    if dt == np.bool_:
        out = np.dtype(np.uint8)
    elif dt == np.float16:
        out = np.dtype(np.float32)
    elif dt in (np.dtype(np.int64), np.dtype(np.uint64)):
        narrow = np.dtype(np.int32 if dt == np.int64 else np.uint32)
        out = narrow if _fits(arr, narrow) else dt
    elif dt.kind in "fc" and dt not in _NATIVE:   # long double / complex long double
        wide = np.dtype(np.float64 if dt.kind == "f" else np.complex128)
        if not np.array_equal(arr.astype(wide).astype(dt), arr, equal_nan=True):
            raise NiftiUnsupported(f"{dt.name} values that float64 would round; NIfTI (nibabel) has no {dt.name}")
        out = wide
    elif dt not in _NATIVE:
        raise NiftiUnsupported(f"NIfTI has no type for {dt.name}")
    if out != dt:
        why = "every value fits" if out.kind in "iu" and dt.kind in "iu" else "every value kept"
        note = f"{dt.name} written as {out.name} ({why})" if note is None else note
    elif dt in (np.dtype(np.int64), np.dtype(np.uint64)):
        note = f"{dt.name} kept (its values need it; some NIfTI tools do not read {dt.name})"
    arr = arr.astype(out.newbyteorder("<"), copy=False)
    return arr, note


def save(array: Any, path: PathLike, affine: Optional[np.ndarray] = None) -> Path:
    """Write ``array`` (numpy or torch, 1 to 7 dimensions) to ``path`` (``.nii``/``.nii.gz``) in the nearest
    NIfTI dtype that keeps every value (integer label maps stay integer; see :func:`nifti_array`); a change
    of dtype is logged (INFO, logger ``wirehead.nifti``).

    ``affine`` maps voxel indices to millimetres; ``None`` means the identity (1 mm voxels).

    Raises:
        NiftiUnsupported: an array NIfTI cannot hold faithfully (nothing is written).
        ValueError: a bad affine.
    """
    nib = _nib()
    arr, note = nifti_array(array)
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise ValueError(f"affine should be a finite 4x4 array, but got shape {aff.shape}")
    path = Path(path)
    if note:
        log.info("%s: %s", path.name, note)
    img = nib.Nifti1Image(arr, aff, dtype=arr.dtype)
    img.header.set_xyzt_units("mm")
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
