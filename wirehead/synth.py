"""A built-in SynthSeg-like generator of brain-ish volumes, for demos, tests and benchmarks.

Only numpy is needed.  Everything is seeded: the same seed gives the same arrays, bit for bit, on
the same numpy version.

* :func:`synth_label` draws a label map of nested, randomly deformed ellipsoid "tissues":
  background (0), an outer CSF-like shell (1), a grey-matter-like shell (2), a white-matter-like
  core (3) and small deep structures (4 .. ``n_labels - 1``) that always lie inside the core.
* :func:`synth_image` turns a label map into an intensity image the way SynthSeg does: a random
  mean intensity per label, a little within-tissue variation, separable smoothing, a smooth
  multiplicative bias field, Gaussian noise, a random gamma, then a rescale into ``[0, 1)``.
* :func:`synth_sample` and :func:`synth_generator` are the one-call and the endless (or ``n``)
  versions; ``delay`` imitates a slow GPU generator.
* :func:`make_self_checking` and :func:`check_self_checking` stamp a sample id and cross-checksums
  into an (image, label) pair so protocol tests can prove a pair read back is whole and unmixed.

Speed (2-core machine, numpy 2.4): a 64³ sample takes about 12 ms, a 128³ sample 65-75 ms, a 256³
sample about 1.1 s (best and median of 5).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator

import numpy as np

__all__ = [
    "synth_label",
    "synth_image",
    "synth_sample",
    "synth_generator",
    "make_self_checking",
    "check_self_checking",
]

logger = logging.getLogger(__name__)

#: Labels of the nested shells, outermost first; deep structures take the labels after them.
CSF, GREY, WHITE = 1, 2, 3
_FIRST_DEEP = 4

# Shell geometry in units of the (deformed) head radius.  The white-matter boundary has its own
# extra deformation of amplitude _WM_WOBBLE; (_WM_EDGE_MAX * (1 + _WM_WOBBLE)) < _GM_EDGE keeps the
# white matter strictly inside the grey matter, so the nesting holds by construction.
_GM_EDGE = 0.90
_WM_EDGE_MIN, _WM_EDGE_MAX = 0.66, 0.74
_WM_WOBBLE = 0.20
_HEAD_WOBBLE = 0.08


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as e:
        raise TypeError(f"shape should be a tuple of ints, but got shape={shape!r}") from e
    if len(shape) not in (2, 3) or min(shape) < 4:
        raise ValueError(f"shape should have 2 or 3 axes, each at least 4 long, but got shape={shape!r}")
    return shape


def _check_n_labels(n_labels: int) -> int:
    if not isinstance(n_labels, (int, np.integer)) or isinstance(n_labels, bool) or not 2 <= n_labels <= 256:
        raise ValueError(f"n_labels should be an int in 2..256, but got n_labels={n_labels!r}")
    return int(n_labels)


def _basis(n: int, knots: int) -> np.ndarray:
    """``(n, knots)`` smooth interpolation weights: normalised Gaussian bumps on evenly spaced knots.

    Each row sums to 1, so a field built from knot values in ``[-1, 1]`` stays in ``[-1, 1]``.
    """
    x = np.linspace(0.0, knots - 1.0, n)
    w = np.exp(-0.5 * ((x[:, None] - np.arange(knots)[None, :]) / 0.6) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, knots: int) -> np.ndarray:
    """A smooth random float32 field of ``shape`` with values in ``[-1, 1]``.

    A tiny grid of ``knots`` values per axis, uniform in ``[-1, 1]``, is upsampled separably: each
    ``tensordot`` contracts the first axis and appends the upsampled one, so after one pass per
    axis the axes are back in order.  Cost: about one multiply-add per voxel per knot.
    """
    field = rng.uniform(-1.0, 1.0, (knots,) * len(shape)).astype(np.float32)
    for n in shape:
        field = np.tensordot(field, _basis(n, knots), axes=([0], [1]))
    return field


def _axes(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Open-grid coordinates in ``[-1, 1]`` per axis, shaped to broadcast against each other."""
    ndim = len(shape)
    out = []
    for i, n in enumerate(shape):
        c = np.linspace(-1.0, 1.0, n, dtype=np.float32)
        out.append(c.reshape((n,) + (1,) * (ndim - 1 - i)))
    return out


def synth_label(shape: tuple[int, ...], rng: np.random.Generator, n_labels: int = 8) -> np.ndarray:
    """Draw a brain-like uint8 label map of ``shape`` (2-D or 3-D) with labels ``0 .. n_labels-1``.

    0 is background.  An ellipsoid "head" with random centre and radii (75-92 % of the half extent
    of each axis, so the corners are always background) holds nested shells: label 1 (CSF-like)
    outermost, label 2 (grey-matter-like), label 3 (white-matter-like); labels 4 and up are small
    deep structures inside the white matter, the first one around the centre (ventricle-like),
    the others on a ring around it.  The ellipsoid's radius is modulated by a smooth random field
    (a 4-knot grid per axis, upsampled), and the white-matter boundary by a finer one (7 knots),
    so each seed gives a different, plausible shape.  With fewer labels the innermost parts are
    left out (``n_labels=2``: background and head).  With many labels the deep structures get
    crowded and may hide one another.

    Args:
        shape: 2 or 3 axes, each at least 4 long; anisotropic shapes stretch the head to fit.
        rng: the only source of randomness.
        n_labels: number of distinct label values, 2..256.

    Raises:
        ValueError, TypeError: for a bad ``shape`` or ``n_labels``.
    """
    shape = _check_shape(shape)
    n_labels = _check_n_labels(n_labels)
    ndim = len(shape)
    coords = _axes(shape)
    centre = rng.uniform(-0.05, 0.05, ndim).astype(np.float32)
    radii = rng.uniform(0.75, 0.92, ndim).astype(np.float32)

    r2 = None
    for c, m, a in zip(coords, centre, radii):
        term = ((c - m) / a) ** 2
        r2 = term if r2 is None else r2 + term
    # Deformed normalised radius: the boundary of the head is r == 1.
    r = np.sqrt(r2)
    r *= 1.0 + _HEAD_WOBBLE * _smooth_field(shape, rng, 4)

    label = (r < 1.0).view(np.uint8)
    if n_labels > GREY:
        label += r < _GM_EDGE
    if n_labels > WHITE:
        wm_edge = rng.uniform(_WM_EDGE_MIN, _WM_EDGE_MAX)
        r_wm = r * (1.0 + _WM_WOBBLE * _smooth_field(shape, rng, 7))
        label += r_wm < wm_edge
        _add_deep_structures(label, coords, centre, radii, rng, n_labels)
    return label


def _add_deep_structures(label: np.ndarray, coords: list[np.ndarray], centre: np.ndarray,
                         radii: np.ndarray, rng: np.random.Generator, n_labels: int) -> None:
    """Paint labels ``4 .. n_labels-1`` as small ellipsoids, only over white matter (in place)."""
    shape = label.shape
    ndim = label.ndim
    n_deep = n_labels - _FIRST_DEEP
    if n_deep <= 0:
        return
    # Ring structures first, the central one last, so the centre voxel ends up a deep structure.
    order = list(range(1, n_deep)) + [0]
    phase = rng.uniform(0.0, 2.0 * np.pi)
    for k in order:
        if k == 0:
            where = rng.uniform(-0.04, 0.04, ndim)
            size = rng.uniform(0.15, 0.22, ndim)
        else:
            angle = phase + 2.0 * np.pi * (k - 1) / max(n_deep - 1, 1) + rng.uniform(-0.3, 0.3)
            where = rng.uniform(-0.06, 0.06, ndim)
            where[0] += 0.34 * np.cos(angle)
            where[1] += 0.34 * np.sin(angle)
            size = rng.uniform(0.11, 0.16, ndim)
        # Head-radius units -> [-1, 1] coordinates -> a voxel bounding box.
        mid = centre + where * radii
        half = size * radii
        box = []
        for n, m, h in zip(shape, mid, half):
            lo = int(np.floor((m - h + 1.0) * (n - 1) / 2.0))
            hi = int(np.ceil((m + h + 1.0) * (n - 1) / 2.0)) + 1
            box.append(slice(max(lo, 0), min(hi, n)))
        box_t = tuple(box)
        d2 = None
        for c, m, h, sl in zip(coords, mid, half, box):
            cc = c.reshape(-1)[sl].reshape((-1,) + c.shape[1:])
            term = ((cc - np.float32(m)) / np.float32(h)) ** 2
            d2 = term if d2 is None else d2 + term
        sub = label[box_t]
        sub[(d2 < 1.0) & (sub >= WHITE)] = _FIRST_DEEP + k


def _box_blur(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Mean over ``2*radius+1`` voxels along ``axis`` (edges replicated), via a cumulative sum."""
    if radius <= 0:
        return x
    width = 2 * radius + 1
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius + 1, radius)
    c = np.cumsum(np.pad(x, pad, mode="edge"), axis=axis, dtype=np.float32)
    n = x.shape[axis]
    hi = [slice(None)] * x.ndim
    lo = [slice(None)] * x.ndim
    hi[axis] = slice(width, width + n)
    lo[axis] = slice(0, n)
    out = c[tuple(hi)] - c[tuple(lo)]
    out *= np.float32(1.0 / width)
    return out


def synth_image(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A float32 intensity image in ``[0, 1)`` (strictly below 1) of the same shape as ``label``.

    SynthSeg-style contrast randomisation: every label value gets a random mean intensity (the
    means are a random permutation of evenly spaced levels with jitter, so two tissues never share
    a mean: they differ by at least 0.7 / (number of labels) before the steps below) and a small
    random spread; then a separable box blur (random radius 0-1 per axis), a smooth multiplicative
    bias field (exp of a 3-knot field, up to about ±25 %), Gaussian noise, a rescale to ``[0, 1]``,
    a random gamma (exp of N(0, 0.15)) and a final scale by the float32 just below 1.  As in
    SynthSeg, the bias field can bring two tissues' average intensities close (closer than 0.01 in
    about 2 % of 48³ seeds); the tissue still explains most of the image's variance.

    Raises:
        TypeError: if ``label`` is not an integer array.
    """
    label = np.asarray(label)
    if label.dtype.kind not in "iu":
        raise TypeError(f"label should be an integer array, but got dtype={label.dtype}")
    if label.size == 0:
        raise ValueError(f"label should not be empty, but got shape={label.shape}")
    n = int(label.max()) + 1
    if int(label.min()) < 0:
        raise ValueError(f"label values should be >= 0, but got min={int(label.min())}")
    means = ((rng.permutation(n) + rng.uniform(0.35, 0.65, n)) / n).astype(np.float32)
    spread = rng.uniform(0.0, 0.04, n).astype(np.float32)
    image = means[label]
    image += spread[label] * rng.standard_normal(label.shape, dtype=np.float32)
    for axis in range(label.ndim):
        image = _box_blur(image, int(rng.integers(0, 2)), axis)
    image *= np.exp(rng.uniform(0.05, 0.25) * _smooth_field(label.shape, rng, 3))
    image += np.float32(rng.uniform(0.0, 0.03)) * rng.standard_normal(label.shape, dtype=np.float32)
    lo, hi = float(image.min()), float(image.max())
    if hi <= lo:
        return np.zeros(label.shape, np.float32)
    image -= np.float32(lo)
    image *= np.float32(1.0 / (hi - lo))
    np.clip(image, 0.0, 1.0, out=image)
    gamma = float(np.exp(rng.normal(0.0, 0.15)))
    np.power(image, np.float32(gamma), out=image)
    # Exact float32 products of values <= 1 with the largest float32 below 1 stay below 1.
    image *= np.nextafter(np.float32(1.0), np.float32(0.0))
    return image


def _sample(shape: tuple[int, ...], rng: np.random.Generator, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    label = synth_label(shape, rng, n_labels)
    return synth_image(label, rng), label


def synth_sample(shape: tuple[int, ...] = (64, 64, 64), seed: int | None = None,
                 n_labels: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image float32 in [0, 1), label uint8)`` pair; the same ``seed`` gives the same pair.

    ``seed=None`` draws fresh entropy from the OS.  See :func:`synth_label` and :func:`synth_image`.
    """
    return _sample(_check_shape(shape), np.random.default_rng(seed), _check_n_labels(n_labels))


def synth_generator(shape: tuple[int, ...] = (64, 64, 64), seed: int | None = None, n: int | None = None,
                    delay: float = 0.0, n_labels: int = 8) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(image, label)`` pairs like :func:`synth_sample`, forever or ``n`` of them.

    Each sample has its own random stream, spawned from ``numpy.random.SeedSequence(seed)``, so the
    sequence is reproducible for an int ``seed`` and samples differ from one another.  Generators
    running side by side (processes, nodes) should get different seeds, e.g. ``seed + rank``.
    ``delay`` adds that many seconds of sleep per sample to imitate a slow GPU generator.

    Raises:
        ValueError: for a negative ``n`` or ``delay`` (raised at the first ``next``, as for any
        generator function), or a bad ``shape`` / ``n_labels``.
    """
    shape = _check_shape(shape)
    n_labels = _check_n_labels(n_labels)
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 0):
        raise ValueError(f"n should be None or an int >= 0, but got n={n!r}")
    if not delay >= 0:
        raise ValueError(f"delay should be a number of seconds >= 0, but got delay={delay!r}")
    root = np.random.SeedSequence(seed)
    count = 0
    while n is None or count < n:
        if delay:
            time.sleep(delay)
        (child,) = root.spawn(1)
        yield _sample(shape, np.random.default_rng(child), n_labels)
        count += 1


# --- self-checking samples -------------------------------------------------------------------

_ID_BYTES = 8
_DIGEST_BYTES = 8
_IMAGE_HEADER = _ID_BYTES + _DIGEST_BYTES          # voxels of the image: one byte each, as byte/256
_LABEL_HEADER = 2 * (_ID_BYTES + _DIGEST_BYTES)    # voxels of the label: one nibble (0..15) each


def _digest(arr: np.ndarray, skip: int) -> bytes:
    """8-byte BLAKE2b of dtype, shape and values (little-endian) of ``arr``, without its first ``skip`` voxels."""
    canon = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    h = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    h.update(f"{canon.dtype.str}{canon.shape}".encode())
    h.update(canon.reshape(-1)[skip:].tobytes())
    return h.digest()


def _check_pair_types(image: np.ndarray, label: np.ndarray) -> None:
    if image.dtype.kind != "f":
        raise TypeError(f"image should be a floating-point array, but got dtype={image.dtype}")
    if label.dtype.kind not in "iu":
        raise TypeError(f"label should be an integer array, but got dtype={label.dtype}")


def make_self_checking(image: np.ndarray, label: np.ndarray, sample_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Return copies of ``(image, label)`` that carry ``sample_id`` and check each other.

    The scheme (all positions in C order of the flattened arrays):

    * ``L = digest(label without its first 32 voxels)`` and, once the image header is written,
      ``I = digest(image)``; a digest is the 8-byte BLAKE2b of the dtype, the shape and the
      little-endian values, so a truncated or reshaped array never matches.
    * Image voxels 0..15 hold the 8 bytes of ``sample_id`` (uint64, little-endian) then the 8
      bytes of ``L``, one byte per voxel stored as ``byte / 256`` (exact in any float dtype, and
      inside ``[0, 1)``).
    * Label voxels 0..31 hold the 8 bytes of ``sample_id`` then the 8 bytes of ``I``, one nibble
      (0..15) per voxel, low nibble first, so any integer dtype can hold them.

    :func:`check_self_checking` recomputes both digests: a label from another sample carries
    another id and another image digest; a zeroed or partly written image changes ``I``; a zeroed
    label changes ``L``; a truncated array changes its shape.  The rest of both arrays is kept.

    Args:
        image: float array with at least 16 voxels (float32 in wirehead).
        label: integer array with at least 32 voxels (uint8 or int16 in wirehead).
        sample_id: int in ``0 .. 2**64 - 1``.

    Raises:
        TypeError: for a non-float image or a non-integer label.
        ValueError: for arrays too small or ``sample_id`` out of range.
    """
    image = np.array(image, copy=True)
    label = np.array(label, copy=True)
    _check_pair_types(image, label)
    if image.size < _IMAGE_HEADER or label.size < _LABEL_HEADER:
        raise ValueError(f"self-checking needs an image of >= {_IMAGE_HEADER} and a label of >= {_LABEL_HEADER} "
                         f"voxels, but got image.size={image.size}, label.size={label.size}")
    if not isinstance(sample_id, (int, np.integer)) or not 0 <= int(sample_id) < 2**64:
        raise ValueError(f"sample_id should be an int in 0..2**64-1, but got sample_id={sample_id!r}")
    id_bytes = int(sample_id).to_bytes(_ID_BYTES, "little")

    head = np.frombuffer(id_bytes + _digest(label, _LABEL_HEADER), np.uint8)
    image.reshape(-1)[:_IMAGE_HEADER] = head.astype(image.dtype) / image.dtype.type(256)

    head = np.frombuffer(id_bytes + _digest(image, 0), np.uint8)
    nibbles = np.stack([head & 0x0F, head >> 4], axis=1).reshape(-1)
    label.reshape(-1)[:_LABEL_HEADER] = nibbles.astype(label.dtype)
    return image, label


def check_self_checking(image: np.ndarray, label: np.ndarray) -> int:
    """Return the ``sample_id`` stamped by :func:`make_self_checking`, after checking the pair is whole.

    Raises:
        AssertionError: with the reason, when the pair is not one whole, unmixed self-checking
            sample (ids differ, a digest does not match, a header is not a valid stamp, an array is
            too small or of the wrong kind).
    """
    image = np.asarray(image)
    label = np.asarray(label)
    if image.dtype.kind != "f" or label.dtype.kind not in "iu":
        raise AssertionError(f"not a self-checking pair: image dtype {image.dtype}, label dtype {label.dtype}")
    if image.size < _IMAGE_HEADER or label.size < _LABEL_HEADER:
        raise AssertionError(f"not a self-checking pair: too small (image.size={image.size}, label.size={label.size})")

    scaled = image.reshape(-1)[:_IMAGE_HEADER].astype(np.float64) * 256.0
    if not (np.all(np.isfinite(scaled)) and np.all(scaled == np.round(scaled))
            and scaled.min() >= 0 and scaled.max() <= 255):
        raise AssertionError("image header is not a self-checking stamp (overwritten or never stamped)")
    image_head = scaled.astype(np.uint8).tobytes()

    nibbles = label.reshape(-1)[:_LABEL_HEADER].astype(np.int64)
    if nibbles.min() < 0 or nibbles.max() > 15:
        raise AssertionError("label header is not a self-checking stamp (overwritten or never stamped)")
    pairs = nibbles.reshape(-1, 2)
    label_head = (pairs[:, 0] | (pairs[:, 1] << 4)).astype(np.uint8).tobytes()

    image_id = int.from_bytes(image_head[:_ID_BYTES], "little")
    label_id = int.from_bytes(label_head[:_ID_BYTES], "little")
    if image_id != label_id:
        raise AssertionError(f"mixed sample: image carries id {image_id}, label carries id {label_id}")
    if _digest(image, 0) != label_head[_ID_BYTES:]:
        raise AssertionError(f"sample {image_id}: image does not match the digest in its label "
                             "(partial, altered, truncated or from another sample)")
    if _digest(label, _LABEL_HEADER) != image_head[_ID_BYTES:]:
        raise AssertionError(f"sample {image_id}: label does not match the digest in its image "
                             "(partial, altered, truncated or from another sample)")
    return image_id
