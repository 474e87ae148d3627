"""The compression registry: codec names, the package each needs, one kind's bytes in and out.

Also the one validator of a COMPRESSION setting (:func:`codecs_for`), used by
:class:`~wirehead.config.WireheadConfig` and by :func:`wirehead.chunks.encode`.

The codecs (``COMPRESSION: <codec>`` or a mapping kind -> codec):

``"none"``    raw bytes; decoding is a zero-copy view (the default).
``"zstd"``    zstandard, level 1, one frame with its content size (package ``zstandard``).
``"lz4"``     LZ4 frame, default level, with its content size (package ``lz4``).
``"blosc2"``  Blosc2 with byte-shuffle (typesize = itemsize) and zstd level 1 (package ``blosc2``);
              arrays above 1 GiB are split into consecutive Blosc2 chunks.

Codec packages are imported when first used; a missing one raises a ``ValueError`` naming what to
``pip install``.  Decompression treats its input as untrusted: a frame whose size differs from the
size the meta claims, or that does not decompress, raises ``ValueError("corrupt sample: ...")``.
Measurements and the recommended setting per kind: the README's Compression section
(``python benchmarks/codec_compare.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from .errors import corrupt_sample

__all__ = ["CODEC_PACKAGES", "COMPRESSION_CODECS", "alloc_bytes", "codecs_for", "compress", "decompress"]

#: codec name -> the PyPI package it needs ("none" needs nothing).
CODEC_PACKAGES: dict[str, Optional[str]] = {
    "none": None,
    "zstd": "zstandard",
    "lz4": "lz4",
    "blosc2": "blosc2",
}
#: Compression codecs a kind may use ("none" stores raw bytes).
COMPRESSION_CODECS: tuple[str, ...] = tuple(CODEC_PACKAGES)

_BLOSC2_CHUNK = 1 << 30  # raw bytes per Blosc2 chunk (its limit is just under 2 GiB)


def codecs_for(setting: Any, kinds: Sequence[str]) -> dict[str, str]:
    """Validate a COMPRESSION setting and return the codec of every kind, in ``kinds`` order.

    ``setting`` is one codec for every kind or a mapping kind -> codec (kinds it leaves out:
    ``"none"``).

    Raises:
        ValueError: the setting is neither a known codec nor a mapping, the mapping names a kind
            not in ``kinds`` or a codec that is not known.  The message says what is allowed; the
            caller adds which setting it was (``COMPRESSION=... in config file ... is invalid: ``).
    """
    if isinstance(setting, Mapping):
        unknown = [k for k in setting if k not in kinds]
        if unknown:
            raise ValueError(f"names kinds not in SAMPLE {list(kinds)}: {unknown}")
        bad = {str(k): v for k, v in setting.items() if not isinstance(v, str) or v not in CODEC_PACKAGES}
        if bad:
            raise ValueError(f"codecs must be one of {list(COMPRESSION_CODECS)} (bad: {bad})")
        return {k: str(setting.get(k, "none")) for k in kinds}
    if not isinstance(setting, str) or setting not in CODEC_PACKAGES:
        raise ValueError(f"must be one of {list(COMPRESSION_CODECS)} or a mapping kind -> codec")
    return {k: setting for k in kinds}


def compress(codec: str, raw: memoryview, itemsize: int) -> bytes:
    """Compress one kind's raw bytes (``itemsize``: bytes per element, for byte-shuffle).

    Raises:
        ValueError: the codec's package is not installed (the message says what to install).
    """
    try:
        return _COMPRESS[codec](raw, itemsize)
    except ImportError as e:
        raise _missing_package(codec, e) from None


def decompress(codec: str, data: memoryview, nbytes: int, kind: str) -> np.ndarray:
    """Decompress one kind's stored bytes into a new ``uint8`` array of exactly ``nbytes`` bytes.

    Raises:
        ValueError: ``"corrupt sample: ..."`` when ``data`` is not a frame of ``codec`` holding
            ``nbytes`` bytes; the codec's package is not installed (naming what to install).
    """
    try:
        return _DECOMPRESS[codec](data, nbytes, kind)
    except ImportError as e:
        raise _missing_package(codec, e) from None


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


def alloc_bytes(kind: str, nbytes: int) -> np.ndarray:
    """An uninitialised ``uint8`` array of ``nbytes`` for ``kind``'s bytes (pages are touched only when written).

    Raises:
        ValueError: ``"corrupt sample: ..."`` when ``nbytes`` (from an untrusted meta) cannot be allocated.
    """
    try:
        return np.empty(nbytes, dtype=np.uint8)
    except (MemoryError, ValueError):
        raise corrupt_sample(kind, f"cannot allocate the {nbytes} bytes its meta claims") from None


def _decompress_zstd(data: memoryview, nbytes: int, kind: str) -> np.ndarray:
    import zstandard

    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as e:
        raise corrupt_sample(kind, f"not a zstd frame ({e})") from None
    if size != nbytes:
        raise corrupt_sample(kind, f"zstd frame holds {size} bytes, meta says {nbytes}")
    out = alloc_bytes(kind, nbytes)
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
        raise corrupt_sample(kind, f"zstd data does not decompress ({e})") from None
    if got != nbytes or trailing:
        raise corrupt_sample(kind, f"zstd data decompresses to a size other than {nbytes} bytes")
    return out


def _decompress_lz4(data: memoryview, nbytes: int, kind: str) -> np.ndarray:
    import lz4.frame

    try:
        size = lz4.frame.get_frame_info(data)["content_size"]
    except RuntimeError as e:
        raise corrupt_sample(kind, f"not an lz4 frame ({e})") from None
    if size != nbytes:
        raise corrupt_sample(kind, f"lz4 frame holds {size} bytes, meta says {nbytes}")
    if nbytes == 0:
        return alloc_bytes(kind, 0)
    try:
        raw = lz4.frame.decompress(data, return_bytearray=True)
    except MemoryError:
        raise corrupt_sample(kind, f"cannot allocate the {nbytes} bytes its meta claims") from None
    except RuntimeError as e:
        raise corrupt_sample(kind, f"lz4 data does not decompress ({e})") from None
    if len(raw) != nbytes:
        raise corrupt_sample(kind, f"lz4 data decompresses to {len(raw)} bytes, meta says {nbytes}")
    return np.frombuffer(raw, dtype=np.uint8)


def _decompress_blosc2(data: memoryview, nbytes: int, kind: str) -> np.ndarray:
    import blosc2

    out = alloc_bytes(kind, nbytes)
    pos = got = 0
    while pos < len(data):
        head = data[pos:]
        try:
            if len(head) < 32:
                raise ValueError("truncated header")
            raw_n, comp_n, _ = blosc2.get_cbuffer_sizes(head)
        except Exception as e:  # blosc2 raises several types on a bad header
            raise corrupt_sample(kind, f"not a blosc2 chunk at byte {pos} ({e})") from None
        if comp_n <= 0 or comp_n > len(head) or raw_n < 0 or got + raw_n > nbytes:
            raise corrupt_sample(kind, f"blosc2 chunk at byte {pos} does not fit its meta")
        try:
            blosc2.decompress2(head[:comp_n], dst=memoryview(out)[got : got + raw_n])
        except Exception as e:  # noqa: BLE001 - blosc2 raises RuntimeError or ValueError on bad data: both corrupt
            raise corrupt_sample(kind, f"blosc2 data does not decompress ({e})") from None
        pos += comp_n
        got += raw_n
    if got != nbytes or pos != len(data):
        raise corrupt_sample(kind, f"blosc2 data holds {got} bytes in {pos} of {len(data)}, meta says {nbytes}")
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
