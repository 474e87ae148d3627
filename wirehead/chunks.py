"""A sample's stored byte layout: encode to meta + bytes, split into chunks, join, decode.

Pure functions, no database.  Arrays come from :mod:`wirehead.arrays` (dtype, shape and byte
order kept exactly) and each kind may be compressed by :mod:`wirehead.compression`.  Nothing here
ever pickles or unpickles, and :func:`decode` treats its ``meta`` as untrusted: a crafted or
corrupt meta raises ``ValueError("corrupt sample: ...")``; it never runs code and never reads
outside the buffer.

Stored layout
-------------
One sample is one byte stream: the kinds' payloads one after the other, in ``kinds`` order, each
starting at a 16-byte aligned offset (up to 15 zero bytes of padding between kinds), so that the
zero-copy views :func:`decode` returns are aligned for every dtype.  ``Encoded.meta`` holds one
BSON-safe dict per kind: ``kind, dtype (np.dtype.str), shape, codec, offset, length, nbytes, torch``.
A kind whose compressed form is not smaller than its raw bytes is stored as ``"none"``.
:meth:`Encoded.chunks` cuts the stream into the pieces the store writes as chunk documents, and
:func:`join_chunks` puts them back together for :func:`decode`.  :class:`StreamDecoder` decodes the same
stream chunk by chunk as it arrives, each byte copied once into the arrays it returns (no joined buffer):
a reader then holds a sample once, plus the chunk in hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from .arrays import is_numeric_dtype, normalize_sample, to_numpy, to_tensor
from .compression import CODEC_PACKAGES, alloc_bytes, codecs_for, compress, decompress
from .errors import corrupt_sample

__all__ = ["Encoded", "encode", "decode", "join_chunks", "StreamDecoder"]

_ALIGN = 16
_MAX_NDIM = 32
_MAX_DTYPE_STR = 8


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


def encode(
    sample: Any,
    kinds: Sequence[str],
    compression: Union[str, Mapping[str, str]] = "none",
) -> Encoded:
    """Encode one sample (tuple/list by position or dict by name) into meta and byte buffers.

    ``compression`` is one codec for every kind or a mapping kind -> codec (missing kinds:
    ``"none"``).  A compressed kind that does not shrink is stored as ``"none"``.

    Raises:
        SampleError: the sample does not match ``kinds`` (see :func:`wirehead.arrays.normalize_sample`).
        TypeError: a value is not a numeric array or tensor (see :func:`wirehead.arrays.to_numpy`).
        ValueError: ``compression`` is invalid (see :func:`wirehead.compression.codecs_for`), or a
            codec's package is not installed (the message says what to ``pip install``).
    """
    values = normalize_sample(sample, kinds)
    try:
        codecs = codecs_for(compression, list(values))
    except ValueError as e:
        raise ValueError(f"compression={compression!r} is invalid: {e}") from None
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
            packed = compress(codec, raw, arr.dtype.itemsize)
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
        raise corrupt_sample(kind, f"{key} must be a non-negative integer, got {v!r}")
    return int(v)


def _check_meta(m: Any, size: int, index: int) -> tuple[str, np.dtype, tuple[int, ...], str, int, int, int, Optional[str]]:
    if not isinstance(m, Mapping):
        raise ValueError(f"corrupt sample: meta entry {index} is a {type(m).__name__}, not a dict")
    kind = m.get("kind")
    if not isinstance(kind, str):
        raise ValueError(f"corrupt sample: meta entry {index} has kind {kind!r}, not a string")
    missing = [k for k in _META_KEYS if k not in m]
    if missing:
        raise corrupt_sample(kind, f"meta lacks {missing}")
    dstr = m["dtype"]
    if not isinstance(dstr, str) or not 0 < len(dstr) <= _MAX_DTYPE_STR:
        raise corrupt_sample(kind, f"dtype must be a short dtype string like '<f4', got {dstr!r}")
    try:
        dt = np.dtype(dstr)
    except Exception:  # noqa: BLE001 - np.dtype raises TypeError, ValueError or SyntaxError on odd strings: all corrupt
        raise corrupt_sample(kind, f"dtype {dstr!r} is not a numpy dtype") from None
    if not is_numeric_dtype(dt):
        raise corrupt_sample(kind, f"dtype {dstr!r} is not a numeric or bool dtype")
    shape = m["shape"]
    if not isinstance(shape, (list, tuple)) or len(shape) > _MAX_NDIM:
        raise corrupt_sample(kind, f"shape must be a list of at most {_MAX_NDIM} integers, got {shape!r}")
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise corrupt_sample(kind, f"shape must hold non-negative integers, got {shape!r}")
    shape_t = tuple(int(s) for s in shape)
    offset = _int(m, "offset", kind)
    length = _int(m, "length", kind)
    nbytes = _int(m, "nbytes", kind)
    if math.prod(shape_t) * dt.itemsize != nbytes:
        raise corrupt_sample(kind, f"shape {list(shape_t)} of {dt.str} needs {math.prod(shape_t) * dt.itemsize} bytes, meta says nbytes={nbytes}")
    if offset + length > size:
        raise corrupt_sample(kind, f"bytes {offset}..{offset + length} lie outside the {size}-byte buffer")
    codec = m["codec"]
    if not isinstance(codec, str) or codec not in CODEC_PACKAGES:
        raise ValueError(
            f"corrupt sample or unknown codec: kind {kind!r} uses compression codec {codec!r}, which this "
            f"wirehead does not know ({list(CODEC_PACKAGES)}); install the wirehead version and codec "
            "package that wrote it"
        )
    if codec == "none" and length != nbytes:
        raise corrupt_sample(kind, f"uncompressed length {length} != nbytes {nbytes}")
    torch_name = m.get("torch")
    if torch_name is not None and not isinstance(torch_name, str):
        raise corrupt_sample(kind, f"torch must be a dtype name or None, got {torch_name!r}")
    return kind, dt, shape_t, codec, offset, length, nbytes, torch_name


_Checked = tuple[str, np.dtype, tuple[int, ...], str, int, int, int, Optional[str]]


def _checked_meta(meta: Any, size: int) -> list[_Checked]:
    """Every kind's meta checked against a ``size``-byte stream: kinds unique, payloads inside it, no overlap."""
    if not isinstance(meta, (list, tuple)):
        raise ValueError(f"corrupt sample: meta must be a list of dicts, got {type(meta).__name__}")
    checked = [_check_meta(m, size, i) for i, m in enumerate(meta)]
    kinds = [c[0] for c in checked]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"corrupt sample: meta repeats kinds {kinds}")
    spans = sorted((c[4], c[4] + c[5], c[0]) for c in checked if c[5])
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise ValueError(f"corrupt sample: kinds {a!r} and {b!r} overlap in the buffer")
    return checked


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
    checked = _checked_meta(meta, len(mv))
    out: dict[str, Any] = {}
    for kind, dt, shape, codec, offset, length, nbytes, torch_name in checked:
        if codec == "none":
            arr = np.frombuffer(mv, dtype=dt, count=nbytes // dt.itemsize, offset=offset) if nbytes else np.empty(0, dt)
        else:
            raw = decompress(codec, mv[offset : offset + length], nbytes, kind)
            arr = raw.view(dt)
        arr = arr.reshape(shape)
        out[kind] = to_tensor(arr, torch_name, kind) if torch_name is not None else arr
    return out


class StreamDecoder:
    """Decode one sample from its byte stream fed piece by piece (its chunks, in order), without joining them.

    Each kind's bytes are copied once, as they arrive, into a buffer allocated for that kind alone: an
    uncompressed kind's buffer *is* the array :meth:`finish` returns (as :func:`decode`, writable and
    aligned; torch dtypes as tensors), a compressed kind's holds its compressed payload until
    :meth:`finish` decompresses it.  Alignment padding is skipped.  So a sample read chunk by chunk is in
    memory once, plus the chunk in hand, where :func:`join_chunks` + :func:`decode` hold the chunks, the
    joined stream and (compressed kinds) the arrays.  The meta is checked as by :func:`decode` (untrusted).

    Not thread-safe: one decoder per sample read.
    """

    def __init__(self, meta: Sequence[Mapping[str, Any]], total: Optional[int] = None) -> None:
        """``meta``: the manifest's per-kind meta; ``total``: the stream's length (the manifest's
        ``stored_bytes``; default: where the last kind's payload ends).

        Raises:
            ValueError: ``"corrupt sample: ..."`` as :func:`decode` (also when ``total`` is not a
                non-negative integer, or a kind's buffer cannot be allocated).
        """
        if total is None:
            ends = [m.get("offset", 0) + m.get("length", 0) for m in meta if isinstance(m, Mapping)] \
                if isinstance(meta, (list, tuple)) else []
            total = max([e for e in ends if isinstance(e, int)] or [0])
        if isinstance(total, bool) or not isinstance(total, (int, np.integer)) or total < 0:
            raise ValueError(f"corrupt sample: stored_bytes must be a non-negative integer, got {total!r}")
        self.total = int(total)
        self._kinds = _checked_meta(meta, self.total)
        self._fed = 0
        # (start, end, buffer) of each kind's payload in the stream, in stream order
        self._spans: list[tuple[int, int, np.ndarray]] = []
        self._buffers: dict[str, np.ndarray] = {}
        for kind, _dt, _shape, _codec, offset, length, _nbytes, _torch in self._kinds:
            buf = alloc_bytes(kind, length)
            self._buffers[kind] = buf
            if length:
                self._spans.append((offset, offset + length, buf))
        self._spans.sort(key=lambda s: s[0])

    @property
    def fed(self) -> int:
        """Bytes of the stream fed so far."""
        return self._fed

    def feed(self, data: Any) -> None:
        """The stream's next bytes (a chunk's payload: bytes-like).  The data is copied; it may be freed after.

        Raises:
            ValueError: the pieces hold more bytes than the stream's ``total``.
        """
        mv = memoryview(data).cast("B")
        start, end = self._fed, self._fed + len(mv)
        if end > self.total:
            raise ValueError(f"corrupt sample: its chunks hold more than the {self.total} bytes its manifest says")
        for s, e, buf in self._spans:
            if e <= start:
                continue
            if s >= end:
                break
            lo, hi = max(s, start), min(e, end)
            buf[lo - s:hi - s] = mv[lo - start:hi - start]
        self._fed = end

    def finish(self) -> dict[str, Any]:
        """The sample's arrays (``kind -> numpy array or torch tensor`` in meta order), once every byte came.

        Raises:
            ValueError: fewer bytes were fed than the stream holds; a compressed kind does not
                decompress to its ``nbytes`` (``"corrupt sample: ..."``, as :func:`decode`).
        """
        if self._fed != self.total:
            raise ValueError(f"chunks hold {self._fed} bytes, expected {self.total}")
        self._spans = []  # each kind's buffer goes with its array (a compressed payload once decompressed)
        out: dict[str, Any] = {}
        for kind, dt, shape, codec, _offset, length, nbytes, torch_name in self._kinds:
            buf = self._buffers.pop(kind)
            if codec == "none":
                arr = buf.view(dt) if nbytes else np.empty(0, dt)
            else:
                arr = decompress(codec, memoryview(buf)[:length], nbytes, kind).view(dt)
            del buf
            arr = arr.reshape(shape)
            out[kind] = to_tensor(arr, torch_name, kind) if torch_name is not None else arr
        return out

