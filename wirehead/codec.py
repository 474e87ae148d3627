"""Arrays <-> bytes: dtype, shape and byte order kept exactly; optional compression; chunking.

Pure functions, no database.  torch is imported lazily: only when a tensor is given to
:func:`to_numpy`/:func:`encode` or a stored kind records a torch dtype for :func:`decode`.
Nothing here ever pickles or unpickles, and :func:`decode` treats its ``meta`` as untrusted:
a crafted or corrupt meta raises ``ValueError("corrupt sample: ...")``; it never runs code and
never reads outside the buffer.

Stored layout
-------------
One sample is one byte stream: the kinds' payloads one after the other, in ``kinds`` order, each
starting at a 16-byte aligned offset (up to 15 zero bytes of padding between kinds), so that the
zero-copy views :func:`decode` returns are aligned for every dtype.  ``Encoded.meta`` holds one
BSON-safe dict per kind: ``kind, dtype (np.dtype.str), shape, codec, offset, length, nbytes, torch``.

Compression (chosen by measurement)
-----------------------------------
``COMPRESSION_CODECS`` in :mod:`wirehead.config` lists the accepted names:

``"none"``    raw bytes; decoding is a zero-copy view (the default).
``"zstd"``    zstandard, level 1, one frame with its content size (package ``zstandard``).
``"lz4"``     LZ4 frame, default level, with its content size (package ``lz4``).
``"blosc2"``  Blosc2 with byte-shuffle (typesize = itemsize) and zstd level 1 (package ``blosc2``);
              arrays above 1 GiB are split into consecutive Blosc2 chunks.

A kind whose compressed form is not smaller than its raw bytes is stored as ``"none"``.

Measured with ``python benchmarks/codec_compare.py`` (x86_64 container with 2 CPU cores; zstd and
lz4 single-threaded, Blosc2 with its default 2 threads; best of 5; ratio = raw/stored bytes, MB/s of
raw bytes through :func:`encode` / :func:`decode`).  "synth" is :func:`wirehead.synth.synth_sample`
(noisy intensities everywhere, uint8 labels); "stand-in" is nested tissues with noise only inside
the brain and int16 labels::

    source    shape  kind       codec   ratio  enc MB/s  dec MB/s
    synth     64^3   image <f4  zstd     1.17       979      1283
    synth     64^3   image <f4  lz4      1.00      3597         -  (no gain: stored as none)
    synth     64^3   image <f4  blosc2   1.38      2000      3607
    synth     64^3   label |u1  zstd    28.48      1619      2320
    synth     64^3   label |u1  lz4      9.83      2728      5032
    synth     64^3   label |u1  blosc2  26.43      1372      1360
    synth     128^3  image <f4  zstd     1.18      1010      1413
    synth     128^3  image <f4  lz4      1.00      3118         -  (no gain: stored as none)
    synth     128^3  image <f4  blosc2   1.42      2279      4913
    synth     128^3  label |u1  zstd    41.52      2229      3334
    synth     128^3  label |u1  lz4     13.08      3337      4367
    synth     128^3  label |u1  blosc2  44.31      1882      2025
    stand-in  128^3  image <f4  zstd     3.52      1387      3578
    stand-in  128^3  image <f4  lz4      3.03      2759      7770
    stand-in  128^3  image <f4  blosc2   3.89      1750      4918
    stand-in  128^3  label <i2  zstd    60.19      2648      3964
    stand-in  128^3  label <i2  lz4     14.93      3344      3936
    stand-in  128^3  label <i2  blosc2  62.32      3403      6282
    stand-in  128^3  label |u1  zstd    39.92      1963      3251
    stand-in  128^3  label |u1  lz4      9.92      2387      3345
    stand-in  128^3  label |u1  blosc2  31.28      1601      1960

Recommendation, per kind:

* float images: ``"blosc2"``.  Byte-shuffle puts the exponent bytes together, which is the only
  thing that compresses in noisy float32 data: 1.4x on synth images where zstd gets 1.17x and lz4
  nothing, 3.9x vs 3.5x/3.0x on the cleaner stand-in, at 1.4-2.3 GB/s encode and 2.4-4.9 GB/s decode.
* label maps: ``"zstd"``.  28-60x on large constant regions for both uint8 and int16, 2-4 GB/s
  decode; shuffle gains nothing on 1-byte labels (blosc2 is slower there and sometimes worse), and
  lz4 is 3-4x larger.  ``"blosc2"`` is as good for int16 labels.
* ``"lz4"`` only when encode CPU time matters more than bytes stored.

So a typical setting is ``COMPRESSION: {image: blosc2, label: zstd}``.  The config default stays
``"none"``: with the server on the same machine raw bytes decode zero-copy, and compression pays
off when the network or the server's disk is the bottleneck (multi-node clusters).
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import SampleError

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch

__all__ = [
    "Encoded",
    "to_numpy",
    "normalize_sample",
    "encode",
    "decode",
    "join_chunks",
    "CODEC_PACKAGES",
]

log = logging.getLogger(__name__)

#: codec name -> the PyPI package it needs ("none" needs nothing).
CODEC_PACKAGES: dict[str, Optional[str]] = {
    "none": None,
    "zstd": "zstandard",
    "lz4": "lz4",
    "blosc2": "blosc2",
}

_ALIGN = 16
_ALLOWED_KINDS = "biufc"  # bool, signed, unsigned, float, complex
_MAX_NDIM = 32
_MAX_DTYPE_STR = 8
_BLOSC2_CHUNK = 1 << 30  # raw bytes per Blosc2 chunk (its limit is just under 2 GiB)

# torch dtypes that have no numpy equivalent are stored as their raw bits, viewed as an integer type
# of the same size: itemsize -> (torch view dtype name, numpy view dtype).
_RAW_BITS_VIEW: dict[int, tuple[str, str]] = {1: ("uint8", "|u1"), 2: ("uint16", "<u2"), 4: ("int32", "<i4")}
# The torch dtype names encode records and decode accepts (decode never looks up other names).
_TORCH_DTYPES = frozenset(
    "bool uint8 int8 int16 int32 int64 uint16 uint32 uint64 float16 bfloat16 float32 float64 "
    "complex32 complex64 complex128 float8_e4m3fn float8_e4m3fnuz float8_e5m2 float8_e5m2fnuz "
    "float8_e8m0fnu".split()
)


# --------------------------------------------------------------------------------------------------
# arrays in
# --------------------------------------------------------------------------------------------------


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
    if dt.kind not in _ALLOWED_KINDS or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
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
    if name not in _TORCH_DTYPES:
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
    if name in _TORCH_DTYPES and (t.is_floating_point() or t.is_complex()):
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


# --------------------------------------------------------------------------------------------------
# compression
# --------------------------------------------------------------------------------------------------


def _missing_package(codec: str, err: ImportError) -> ValueError:
    pkg = CODEC_PACKAGES[codec]
    return ValueError(f"compression codec {codec!r} needs the {pkg} package: pip install {pkg} ({err})")


def _compress_zstd(raw: memoryview, itemsize: int) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=1, write_content_size=True).compress(raw)


def _compress_lz4(raw: memoryview, itemsize: int) -> bytes:
    import lz4.frame

    return lz4.frame.compress(raw, store_size=True)


def _compress_blosc2(raw: memoryview, itemsize: int) -> bytes:
    import blosc2

    out = []
    for start in range(0, max(len(raw), 1), _BLOSC2_CHUNK):
        out.append(
            blosc2.compress2(
                raw[start : start + _BLOSC2_CHUNK],
                typesize=min(itemsize, 255),
                clevel=1,
                codec=blosc2.Codec.ZSTD,
                filters=[blosc2.Filter.SHUFFLE],
            )
        )
    return out[0] if len(out) == 1 else b"".join(out)


def _corrupt(kind: str, what: str) -> ValueError:
    return ValueError(f"corrupt sample: kind {kind!r}: {what}")


def _alloc(kind: str, nbytes: int) -> np.ndarray:
    try:
        return np.empty(nbytes, dtype=np.uint8)
    except (MemoryError, ValueError):
        raise _corrupt(kind, f"cannot allocate the {nbytes} bytes its meta claims") from None


def _decompress_zstd(data: memoryview, nbytes: int, kind: str) -> np.ndarray:
    import zstandard

    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as e:
        raise _corrupt(kind, f"not a zstd frame ({e})") from None
    if size != nbytes:
        raise _corrupt(kind, f"zstd frame holds {size} bytes, meta says {nbytes}")
    out = _alloc(kind, nbytes)
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(data)
        view = memoryview(out)
        got = 0
        while got < nbytes:
            n = reader.readinto(view[got:])
            if not n:
                break
            got += n
        trailing = reader.read(1)
    except zstandard.ZstdError as e:
        raise _corrupt(kind, f"zstd data does not decompress ({e})") from None
    if got != nbytes or trailing:
        raise _corrupt(kind, f"zstd data decompresses to a size other than {nbytes} bytes")
    return out


def _decompress_lz4(data: memoryview, nbytes: int, kind: str) -> np.ndarray:
    import lz4.frame

    try:
        size = lz4.frame.get_frame_info(data)["content_size"]
    except RuntimeError as e:
        raise _corrupt(kind, f"not an lz4 frame ({e})") from None
    if size != nbytes:
        raise _corrupt(kind, f"lz4 frame holds {size} bytes, meta says {nbytes}")
    if nbytes == 0:
        return _alloc(kind, 0)
    try:
        raw = lz4.frame.decompress(data, return_bytearray=True)
    except MemoryError:
        raise _corrupt(kind, f"cannot allocate the {nbytes} bytes its meta claims") from None
    except RuntimeError as e:
        raise _corrupt(kind, f"lz4 data does not decompress ({e})") from None
    if len(raw) != nbytes:
        raise _corrupt(kind, f"lz4 data decompresses to {len(raw)} bytes, meta says {nbytes}")
    return np.frombuffer(raw, dtype=np.uint8)


def _decompress_blosc2(data: memoryview, nbytes: int, kind: str) -> np.ndarray:
    import blosc2

    out = _alloc(kind, nbytes)
    pos = got = 0
    while pos < len(data):
        head = data[pos:]
        try:
            if len(head) < 32:
                raise ValueError("truncated header")
            raw_n, comp_n, _ = blosc2.get_cbuffer_sizes(head)
        except Exception as e:  # blosc2 raises several types on a bad header
            raise _corrupt(kind, f"not a blosc2 chunk at byte {pos} ({e})") from None
        if comp_n <= 0 or comp_n > len(head) or raw_n < 0 or got + raw_n > nbytes:
            raise _corrupt(kind, f"blosc2 chunk at byte {pos} does not fit its meta")
        try:
            blosc2.decompress2(head[:comp_n], dst=memoryview(out)[got : got + raw_n])
        except Exception as e:
            raise _corrupt(kind, f"blosc2 data does not decompress ({e})") from None
        pos += comp_n
        got += raw_n
    if got != nbytes or pos != len(data):
        raise _corrupt(kind, f"blosc2 data holds {got} bytes in {pos} of {len(data)}, meta says {nbytes}")
    return out


_COMPRESS: dict[str, Callable[[memoryview, int], bytes]] = {
    "zstd": _compress_zstd,
    "lz4": _compress_lz4,
    "blosc2": _compress_blosc2,
}
_DECOMPRESS: dict[str, Callable[[memoryview, int, str], np.ndarray]] = {
    "zstd": _decompress_zstd,
    "lz4": _decompress_lz4,
    "blosc2": _decompress_blosc2,
}


# --------------------------------------------------------------------------------------------------
# encode
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    """One encoded sample: per-kind meta plus the buffers that make up its byte stream.

    ``parts`` may be memoryviews of the caller's arrays (no copy): do not modify those arrays
    until the sample has been written.
    """

    meta: list[dict]
    """One BSON-safe dict per kind, in ``kinds`` order (see the module docstring)."""
    parts: list
    """Bytes-like buffers whose concatenation is the stored byte stream."""
    stored_bytes: int
    """Length of the stored byte stream (payloads plus alignment padding)."""
    raw_bytes: int
    """Sum of the kinds' raw ``nbytes``."""

    def chunks(self, chunk_bytes: int) -> list[bytes]:
        """Split the byte stream into consecutive pieces of at most ``chunk_bytes`` bytes.

        The last piece may be shorter; an empty stream gives one empty chunk.

        Raises:
            ValueError: ``chunk_bytes`` is not a positive integer.
        """
        if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be a positive integer, got {chunk_bytes!r}")
        views = [memoryview(p).cast("B") for p in self.parts]
        views = [v for v in views if len(v)]
        if not views:
            return [b""]
        out: list[bytes] = []
        pending: list[memoryview] = []
        room = chunk_bytes
        for v in views:
            pos = 0
            while pos < len(v):
                take = min(room, len(v) - pos)
                pending.append(v[pos : pos + take])
                pos += take
                room -= take
                if room == 0:
                    out.append(b"".join(pending))
                    pending, room = [], chunk_bytes
        if pending:
            out.append(b"".join(pending))
        return out


def _codec_for(compression: Union[str, Mapping[str, str]], kinds: Sequence[str]) -> dict[str, str]:
    if isinstance(compression, str):
        chosen = {k: compression for k in kinds}
    elif isinstance(compression, Mapping):
        unknown = [k for k in compression if k not in kinds]
        if unknown:
            raise ValueError(f"compression names kinds not in SAMPLE {list(kinds)}: {unknown}")
        chosen = {k: str(compression.get(k, "none")) for k in kinds}
    else:
        raise ValueError(
            f"compression must be a codec name or a mapping kind -> codec, got {type(compression).__name__}"
        )
    for k, c in chosen.items():
        if c not in CODEC_PACKAGES:
            raise ValueError(
                f"unknown compression codec {c!r} for kind {k!r}; choose one of {list(CODEC_PACKAGES)}"
            )
    return chosen


def encode(
    sample: Any,
    kinds: Sequence[str],
    compression: Union[str, Mapping[str, str]] = "none",
) -> Encoded:
    """Encode one sample (tuple/list by position or dict by name) into meta and byte buffers.

    ``compression`` is one codec for every kind or a mapping kind -> codec (missing kinds:
    ``"none"``).  A compressed kind that does not shrink is stored as ``"none"``.

    Raises:
        SampleError: the sample does not match ``kinds`` (see :func:`normalize_sample`).
        TypeError: a value is not a numeric array or tensor (see :func:`to_numpy`).
        ValueError: an unknown codec, a mapping naming unknown kinds, or a codec whose package
            is not installed (the message says what to ``pip install``).
    """
    values = normalize_sample(sample, kinds)
    codecs = _codec_for(compression, list(values))
    meta: list[dict] = []
    parts: list = []
    offset = 0
    raw_total = 0
    for kind, value in values.items():
        arr, torch_name = to_numpy(value, kind)
        if not arr.flags.c_contiguous:
            arr = arr.copy(order="C")
        nbytes = int(arr.nbytes)
        raw = memoryview(arr.reshape(-1).view(np.uint8))
        codec = codecs[kind]
        payload: Any = raw
        if codec != "none" and nbytes:
            try:
                packed = _COMPRESS[codec](raw, arr.dtype.itemsize)
            except ImportError as e:
                raise _missing_package(codec, e) from None
            if len(packed) < nbytes:
                payload = packed
            else:
                codec = "none"
        elif codec != "none":
            codec = "none"
        pad = (-offset) % _ALIGN
        if pad:
            parts.append(bytes(pad))
            offset += pad
        length = len(payload)
        if length:
            parts.append(payload)
        meta.append(
            {
                "kind": kind,
                "dtype": arr.dtype.str,
                "shape": [int(s) for s in arr.shape],
                "codec": codec,
                "offset": offset,
                "length": length,
                "nbytes": nbytes,
                "torch": torch_name,
            }
        )
        offset += length
        raw_total += nbytes
    return Encoded(meta=meta, parts=parts, stored_bytes=offset, raw_bytes=raw_total)


def join_chunks(chunks: Sequence[Any], total: int) -> np.ndarray:
    """Concatenate chunk payloads into one preallocated writable buffer of ``total`` bytes.

    The buffer is an uninitialised ``uint8`` array, so the bytes are written once (a zero-filled
    ``bytearray`` would touch every page twice); it supports the buffer protocol like a bytearray.

    Raises:
        ValueError: the chunks' lengths do not add up to ``total``.
    """
    views = [memoryview(c).cast("B") for c in chunks]
    got = sum(len(v) for v in views)
    if got != total:
        raise ValueError(f"chunks hold {got} bytes in {len(views)} piece(s), expected {total}")
    out = np.empty(total, dtype=np.uint8)
    pos = 0
    for v in views:
        out[pos : pos + len(v)] = v
        pos += len(v)
    return out


# --------------------------------------------------------------------------------------------------
# decode
# --------------------------------------------------------------------------------------------------

_META_KEYS = ("kind", "dtype", "shape", "codec", "offset", "length", "nbytes")


def _int(m: Mapping, key: str, kind: str) -> int:
    v = m.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise _corrupt(kind, f"{key} must be a non-negative integer, got {v!r}")
    return int(v)


def _check_meta(m: Any, size: int, index: int) -> tuple[str, np.dtype, tuple[int, ...], str, int, int, int, Optional[str]]:
    if not isinstance(m, Mapping):
        raise ValueError(f"corrupt sample: meta entry {index} is a {type(m).__name__}, not a dict")
    kind = m.get("kind")
    if not isinstance(kind, str):
        raise ValueError(f"corrupt sample: meta entry {index} has kind {kind!r}, not a string")
    missing = [k for k in _META_KEYS if k not in m]
    if missing:
        raise _corrupt(kind, f"meta lacks {missing}")
    dstr = m["dtype"]
    if not isinstance(dstr, str) or not 0 < len(dstr) <= _MAX_DTYPE_STR:
        raise _corrupt(kind, f"dtype must be a short dtype string like '<f4', got {dstr!r}")
    try:
        dt = np.dtype(dstr)
    except Exception:
        raise _corrupt(kind, f"dtype {dstr!r} is not a numpy dtype") from None
    if dt.kind not in _ALLOWED_KINDS or dt.hasobject or dt.fields is not None or dt.subdtype is not None:
        raise _corrupt(kind, f"dtype {dstr!r} is not a numeric or bool dtype")
    shape = m["shape"]
    if not isinstance(shape, (list, tuple)) or len(shape) > _MAX_NDIM:
        raise _corrupt(kind, f"shape must be a list of at most {_MAX_NDIM} integers, got {shape!r}")
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise _corrupt(kind, f"shape must hold non-negative integers, got {shape!r}")
    shape_t = tuple(int(s) for s in shape)
    offset = _int(m, "offset", kind)
    length = _int(m, "length", kind)
    nbytes = _int(m, "nbytes", kind)
    if math.prod(shape_t) * dt.itemsize != nbytes:
        raise _corrupt(kind, f"shape {list(shape_t)} of {dt.str} needs {math.prod(shape_t) * dt.itemsize} bytes, meta says nbytes={nbytes}")
    if offset + length > size:
        raise _corrupt(kind, f"bytes {offset}..{offset + length} lie outside the {size}-byte buffer")
    codec = m["codec"]
    if not isinstance(codec, str) or codec not in CODEC_PACKAGES:
        raise ValueError(
            f"corrupt sample or unknown codec: kind {kind!r} uses compression codec {codec!r}, which this "
            f"wirehead does not know ({list(CODEC_PACKAGES)}); install the wirehead version and codec "
            "package that wrote it"
        )
    if codec == "none" and length != nbytes:
        raise _corrupt(kind, f"uncompressed length {length} != nbytes {nbytes}")
    torch_name = m.get("torch")
    if torch_name is not None and not isinstance(torch_name, str):
        raise _corrupt(kind, f"torch must be a dtype name or None, got {torch_name!r}")
    return kind, dt, shape_t, codec, offset, length, nbytes, torch_name


def _to_tensor(arr: np.ndarray, torch_name: str, kind: str) -> "torch.Tensor":
    import torch

    tdt = getattr(torch, torch_name, None) if torch_name in _TORCH_DTYPES else None
    if not isinstance(tdt, torch.dtype):
        raise _corrupt(kind, f"torch dtype {torch_name!r} does not exist")
    if tdt.itemsize != arr.dtype.itemsize:
        raise _corrupt(kind, f"torch dtype {torch_name} does not match stored dtype {arr.dtype.str}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    t = torch.from_numpy(arr)
    if t.dtype == tdt:
        return t
    if tdt.is_floating_point or tdt.is_complex:
        if arr.dtype.kind in "iu" and arr.dtype.itemsize in _RAW_BITS_VIEW:
            return t.view(tdt)
    raise _corrupt(kind, f"torch dtype {torch_name} does not match stored dtype {arr.dtype.str}")


def decode(meta: Sequence[Mapping[str, Any]], buffer: Any) -> dict[str, Any]:
    """Rebuild a sample's arrays from its meta and its joined byte stream.

    Arrays keep dtype (byte order included), shape and bits exactly.  Uncompressed kinds are
    zero-copy, aligned ``np.frombuffer`` views into ``buffer`` (a read-only buffer such as
    ``bytes`` is copied once into a ``bytearray`` first, so results are always writable).  Kinds
    whose meta records a torch dtype come back as CPU tensors of that dtype.

    Returns:
        A dict ``kind -> numpy array or torch tensor`` in meta order.

    Raises:
        ValueError: ``"corrupt sample: ..."`` when meta is malformed, names a non-numeric or
            object dtype, a shape that does not match ``nbytes``, bytes outside ``buffer``,
            overlapping kinds, or data that does not decompress to ``nbytes``; a codec this
            version does not know, or whose package is missing (naming what to install).
    """
    if not isinstance(meta, (list, tuple)):
        raise ValueError(f"corrupt sample: meta must be a list of dicts, got {type(meta).__name__}")
    mv = memoryview(buffer).cast("B")
    if mv.readonly:
        buffer = bytearray(mv)
        mv = memoryview(buffer)
    size = len(mv)
    checked = [_check_meta(m, size, i) for i, m in enumerate(meta)]
    kinds = [c[0] for c in checked]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"corrupt sample: meta repeats kinds {kinds}")
    spans = sorted((c[4], c[4] + c[5], c[0]) for c in checked if c[5])
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"corrupt sample: kinds {a!r} and {b!r} overlap in the buffer")
    out: dict[str, Any] = {}
    for kind, dt, shape, codec, offset, length, nbytes, torch_name in checked:
        if codec == "none":
            arr = np.frombuffer(mv, dtype=dt, count=nbytes // dt.itemsize, offset=offset) if nbytes else np.empty(0, dt)
        else:
            try:
                raw = _DECOMPRESS[codec](mv[offset : offset + length], nbytes, kind)
            except ImportError as e:
                raise _missing_package(codec, e) from None
            arr = raw.view(dt)
        arr = arr.reshape(shape)
        out[kind] = _to_tensor(arr, torch_name, kind) if torch_name is not None else arr
    return out
