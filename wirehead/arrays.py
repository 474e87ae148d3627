"""Sample values <-> numpy arrays: dtype, shape and byte order kept exactly; torch tensors in and out.

Pure functions, no database, no bytes layout (that is :mod:`wirehead.chunks`).  torch is never
imported here unless a tensor is given to :func:`to_numpy` (then torch is already loaded) or a
stored kind records a torch dtype for :func:`to_tensor`.  Only numeric and bool dtypes pass:
nothing here ever pickles or unpickles.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np

from .errors import SampleError, corrupt_sample

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = ["to_numpy", "to_tensor", "normalize_sample", "is_numeric_dtype", "TORCH_DTYPES"]

_ALLOWED_KINDS = "biufc"  # bool, signed, unsigned, float, complex

# torch dtypes that have no numpy equivalent are stored as their raw bits, viewed as an integer type
# of the same size: itemsize -> (torch view dtype name, numpy view dtype).
_RAW_BITS_VIEW: dict[int, tuple[str, str]] = {1: ("uint8", "|u1"), 2: ("uint16", "<u2"), 4: ("int32", "<i4")}
#: The torch dtype names :func:`to_numpy` records and :func:`to_tensor` accepts (no other name is looked up).
TORCH_DTYPES = frozenset(
    "bool uint8 int8 int16 int32 int64 uint16 uint32 uint64 float16 bfloat16 float32 float64 "
    "complex32 complex64 complex128 float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz "
    "float8_e8m0fnu".split()
)


def is_numeric_dtype(dt: np.dtype) -> bool:
    """True for plain bool, integer, float and complex dtypes (no objects, fields or sub-arrays)."""
    return dt.kind in _ALLOWED_KINDS and not dt.hasobject and dt.fields is None and dt.subdtype is None


def _torch_module() -> Any:
    """The torch module if it is already imported, else None (a tensor cannot exist without it)."""
    return sys.modules.get("torch")


def _is_tensor(value: Any) -> bool:
    torch = _torch_module()
    # torch may be half-imported by another thread: then no tensor can exist yet either
    tensor_type = getattr(torch, "Tensor", None) if torch is not None else None
    return tensor_type is not None and isinstance(value, tensor_type)


def _type_error(kind: str, what: str) -> TypeError:
    return TypeError(
        f"sample kind {kind!r}: {what} cannot be stored; give a numeric numpy array or torch tensor"
    )


def to_numpy(value: Any, kind: str) -> tuple[np.ndarray, Optional[str]]:
    """Turn one value of a sample into a numpy array, keeping dtype, byte order and shape.

    Accepts a numpy array (any numeric or bool dtype, any shape including 0-d and empty,
    non-contiguous, either byte order), a numpy scalar, a Python ``bool``/``int``/``float``/
    ``complex`` (stored as a 0-d array), or a torch tensor on any device (detached and moved to
    CPU).  torch dtypes without a numpy equivalent (bfloat16, float8 types, complex32) are
    returned as their raw bits viewed as an unsigned/int type of the same size.

    Returns:
        ``(array, torch_dtype_name)``; the name (e.g. ``"float32"``, ``"bfloat16"``) is set when
        ``value`` was a tensor, else ``None``.  The array may share memory with ``value``.

    Raises:
        TypeError: object, string, bytes, unicode, void/structured or datetime arrays; lists,
            tuples (ask for an array), ``None`` and any other non-numeric value; sparse or
            quantized tensors.  The message names ``kind``.
    """
    if _is_tensor(value):
        return _tensor_to_numpy(value, kind)
    if isinstance(value, np.ndarray):
        arr = value
    elif isinstance(value, np.generic):
        arr = np.asarray(value)
    elif isinstance(value, (bool, int, float, complex)):
        try:
            arr = np.asarray(value)
        except OverflowError:
            raise _type_error(kind, f"the Python int {value!r} (too large for int64)") from None
    elif value is None:
        raise _type_error(kind, "None")
    elif isinstance(value, (list, tuple)):
        raise TypeError(
            f"sample kind {kind!r}: a Python {type(value).__name__} cannot be stored; "
            "give a numeric numpy array or torch tensor (e.g. np.asarray(value, dtype=np.float32))"
        )
    else:
        raise _type_error(kind, f"a value of type {type(value).__name__}")
    dt = arr.dtype
    if not is_numeric_dtype(dt):
        what = {
            "O": "object arrays",
            "U": "unicode string arrays",
            "S": "bytes arrays",
            "V": "void/structured arrays",
            "M": "datetime64 arrays",
            "m": "timedelta64 arrays",
        }.get(dt.kind, f"arrays of dtype {dt}")
        raise _type_error(kind, what)
    return arr, None


def _tensor_to_numpy(t: "torch.Tensor", kind: str) -> tuple[np.ndarray, Optional[str]]:
    import torch

    if t.layout != torch.strided:
        raise _type_error(kind, f"a {t.layout} tensor (give a dense tensor, e.g. t.to_dense())")
    if t.is_quantized:
        raise _type_error(kind, "a quantized tensor (give t.dequantize() or t.int_repr())")
    name = str(t.dtype).removeprefix("torch.")
    if name not in TORCH_DTYPES:
        raise _type_error(kind, f"a tensor of dtype torch.{name}")
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.resolve_conj().resolve_neg()
    try:
        return t.numpy(), name
    except (TypeError, RuntimeError):
        pass
    size = t.element_size()
    if name in TORCH_DTYPES and (t.is_floating_point() or t.is_complex()):
        if size in _RAW_BITS_VIEW:
            view = getattr(torch, _RAW_BITS_VIEW[size][0])
            return t.contiguous().view(view).numpy(), name
    raise _type_error(kind, f"a tensor of dtype torch.{name}")


def normalize_sample(sample: Any, kinds: Sequence[str]) -> dict[str, object]:
    """Match a sample's values to the configured kinds.

    A tuple or list is matched by position, a mapping by name.

    Returns:
        A dict ``kind -> value`` in ``kinds`` order.

    Raises:
        SampleError: ``sample`` is None or not a tuple/list/mapping; a tuple/list has the wrong
            number of values; a mapping misses kinds or has names that are not kinds.
    """
    kinds = list(kinds)
    if sample is None:
        raise SampleError(f"a sample must be a tuple of {len(kinds)} arrays {kinds} or a dict by name; got None")
    if isinstance(sample, Mapping):
        missing = [k for k in kinds if k not in sample]
        extra = [str(k) for k in sample if k not in kinds]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unexpected {extra}")
            raise SampleError(f"sample dict does not match SAMPLE {kinds}: " + "; ".join(parts))
        return {k: sample[k] for k in kinds}
    if isinstance(sample, (tuple, list)):
        if len(sample) != len(kinds):
            raise SampleError(
                f"sample has {len(sample)} value(s) but SAMPLE expects {len(kinds)}: {kinds}"
            )
        return dict(zip(kinds, sample))
    hint = " (for a single kind, yield a 1-tuple: (array,))" if len(kinds) == 1 else ""
    raise SampleError(
        f"a sample must be a tuple of {len(kinds)} arrays {kinds} or a dict by name; "
        f"got {type(sample).__name__}{hint}"
    )


def to_tensor(arr: np.ndarray, torch_name: str, kind: str) -> "torch.Tensor":
    """Turn a decoded array back into the CPU tensor of the torch dtype its meta recorded.

    ``torch_name`` comes from stored meta, so it is checked: only names in :data:`TORCH_DTYPES`
    whose item size matches ``arr`` are accepted; raw-bits views become their torch dtype again.

    Raises:
        ValueError: ``"corrupt sample: ..."`` when the name is unknown or does not fit ``arr``.
    """
    import torch

    tdt = getattr(torch, torch_name, None) if torch_name in TORCH_DTYPES else None
    if not isinstance(tdt, torch.dtype):
        raise corrupt_sample(kind, f"torch dtype {torch_name!r} does not exist")
    if tdt.itemsize != arr.dtype.itemsize:
        raise corrupt_sample(kind, f"torch dtype {torch_name} does not match stored dtype {arr.dtype.str}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    t = torch.from_numpy(arr)
    if t.dtype == tdt:
        return t
    if tdt.is_floating_point or tdt.is_complex:
        if arr.dtype.kind in "iu" and arr.dtype.itemsize in _RAW_BITS_VIEW:
            return t.view(tdt)
    raise corrupt_sample(kind, f"torch dtype {torch_name} does not match stored dtype {arr.dtype.str}")
