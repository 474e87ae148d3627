"""Pure-numpy slicing, colouring and overlay for the slice viewer (no frontend, no matplotlib).

Everything the :class:`~wirehead.notebook.viewer.SliceViewer` shows is made here, so it can be
tested without a browser and gives the same pixels in a live widget and in its PNG fallback.

Conventions:

* A volume's axes are ``(x, y, z)``: the **sagittal** plane cuts axis 0, the **coronal** plane
  axis 1 and the **axial** plane axis 2 (as in RAS-ordered NIfTI volumes).
* A displayed slice is rotated by 90 degrees so the second in-plane axis points up
  (:func:`extract_slice`), the way radiology viewers show them.
* 4-D arrays are channels-first ``(c, x, y, z)`` (torch's layout); :func:`as_volume` picks one.
* Rendered images are ``H x W x 3`` ``uint8`` arrays.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "PLANES",
    "PLANE_AXIS",
    "COLORMAPS",
    "as_volume",
    "planes_for",
    "extract_slice",
    "crosshair",
    "normalize",
    "colormap_lut",
    "apply_colormap",
    "label_palette",
    "overlay_labels",
    "draw_crosshair",
    "render_plane",
    "render_planes",
    "montage",
    "encode_png",
    "to_numpy",
    "is_label_like",
    "spatial",
    "downsample",
    "robust_range",
    "quantize",
    "label_codes",
    "present_labels",
    "axcodes",
    "voxel_sizes",
    "thumbnail",
    "io_orientation",
    "DisplayOrientation",
    "display_orientation",
    "voxel_to_world",
]

#: The planes of a 3-D volume, in the order the viewer shows them.
PLANES = ("axial", "coronal", "sagittal")
#: Which volume axis each plane cuts.
PLANE_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}

# Colormaps as anchor colours spread evenly over [0, 1], linearly interpolated into 256 entries.
# viridis and magma anchors are matplotlib's values at 0, 1/4, 1/2, 3/4 and 1.
COLORMAPS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "gray": ((0, 0, 0), (255, 255, 255)),
    "bone": ((0, 0, 0), (84, 84, 116), (167, 199, 199), (255, 255, 255)),
    "hot": ((10, 0, 0), (255, 0, 0), (255, 255, 0), (255, 255, 255)),
    "viridis": ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)),
    "magma": ((0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191)),
}

# A categorical palette (matplotlib's tab10 then tab20's light shades): label l > 0 gets entry (l-1) % 20.
_PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
], dtype=np.uint8)


def as_volume(array: object, channel: int = 0) -> np.ndarray:
    """A 2-D or 3-D numpy view of ``array`` (a numpy array or a torch tensor).

    Leading axes of length 1 beyond the fourth are dropped; a 4-D array is channels-first and
    ``channel`` picks one.

    Raises:
        ValueError: the array has fewer than 2 or (after dropping) more than 4 axes, or ``channel``
            is out of range.
    """
    arr = array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)
    while arr.ndim > 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 4:
        if not 0 <= channel < arr.shape[0]:
            raise ValueError(f"channel should be in 0..{arr.shape[0] - 1} for an array of shape {arr.shape}, "
                             f"but got channel={channel}")
        arr = arr[channel]
    if arr.ndim not in (2, 3):
        raise ValueError(f"the slice viewer shows 2-D, 3-D or channels-first 4-D arrays, got shape {arr.shape}")
    return arr


def planes_for(ndim: int) -> tuple[str, ...]:
    """The planes shown for a volume of ``ndim`` axes: ``("2d",)`` for 2-D, else :data:`PLANES`."""
    return ("2d",) if ndim == 2 else PLANES


def extract_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2-D slice of ``volume`` in ``plane`` at ``index``, oriented for display.

    Only that slice is read (a view, no copy of the volume).  For 2-D arrays ``plane`` is
    ``"2d"`` and ``index`` is ignored.  ``index`` is clipped into range.

    Raises:
        ValueError: unknown plane for this array.
    """
    if volume.ndim == 2:
        if plane != "2d":
            raise ValueError(f"a 2-D array has one plane, '2d', not {plane!r}")
        return np.rot90(volume)
    if plane not in PLANE_AXIS:
        raise ValueError(f"plane should be one of {list(PLANES)}, but got plane={plane!r}")
    axis = PLANE_AXIS[plane]
    index = int(np.clip(index, 0, volume.shape[axis] - 1))
    return np.rot90(np.take(volume, index, axis=axis))


def crosshair(volume_shape: Sequence[int], plane: str, indices: Mapping[str, int]) -> Optional[tuple[int, int]]:
    """``(row, col)`` in the displayed slice of ``plane`` where the other two planes cut it.

    ``None`` for 2-D arrays.  Consistent with :func:`extract_slice`'s rotation: a slice of
    shape ``(a, b)`` is displayed as ``(b, a)`` with row ``b - 1 - j`` for in-plane index ``j``.
    """
    if len(volume_shape) == 2 or plane == "2d":
        return None
    axis = PLANE_AXIS[plane]
    first, second = [a for a in range(3) if a != axis]
    by_axis = {PLANE_AXIS[p]: int(np.clip(indices.get(p, 0), 0, volume_shape[PLANE_AXIS[p]] - 1))
               for p in PLANES}
    row = volume_shape[second] - 1 - by_axis[second]
    col = by_axis[first]
    return row, col


def normalize(image: np.ndarray, vmin: Optional[float] = None, vmax: Optional[float] = None) -> np.ndarray:
    """``image`` scaled into ``[0, 1]`` (float32) between ``vmin`` and ``vmax`` (default: its min and max)."""
    img = np.asarray(image, dtype=np.float32)
    finite = img[np.isfinite(img)]
    lo = float(vmin) if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if not hi > lo:
        return np.zeros(img.shape, np.float32)
    out = (img - lo) / (hi - lo)
    return np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)


def colormap_lut(name: str) -> np.ndarray:
    """A ``256 x 3`` ``uint8`` lookup table of colormap ``name`` (one of :data:`COLORMAPS`).

    Raises:
        ValueError: unknown colormap.
    """
    if name not in COLORMAPS:
        raise ValueError(f"colormap should be one of {list(COLORMAPS)}, but got colormap={name!r}")
    anchors = np.array(COLORMAPS[name], dtype=np.float32)
    x = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


def apply_colormap(norm: np.ndarray, name: str = "gray") -> np.ndarray:
    """An ``H x W x 3`` ``uint8`` image of ``norm`` (values in ``[0, 1]``) through colormap ``name``."""
    idx = (np.clip(norm, 0.0, 1.0) * 255).round().astype(np.intp)
    return colormap_lut(name)[idx]


def label_palette(labels: np.ndarray) -> np.ndarray:
    """The categorical colour (``... x 3`` ``uint8``) of each label; label 0 (background) maps to black."""
    lab = np.asarray(labels).astype(np.int64)
    out = _PALETTE[(np.maximum(lab, 1) - 1) % len(_PALETTE)]
    out[lab <= 0] = 0
    return out


def overlay_labels(rgb: np.ndarray, labels: np.ndarray, opacity: float,
                   colours: Optional[Mapping[int, Sequence[int]]] = None, hidden: Sequence[int] = ()) -> np.ndarray:
    """``rgb`` with every non-zero label blended in its colour at ``opacity``.

    ``colours``: ``{label: (r, g, b)}`` (labels missing there get :func:`wirehead.labels.default_colour`;
    default: the categorical palette of :func:`label_palette`).  Pixels whose label is 0 or in
    ``hidden`` are returned unchanged.

    Raises:
        ValueError: ``opacity`` outside ``[0, 1]`` or shapes that differ.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity should be in [0, 1], but got opacity={opacity!r}")
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"the label slice {labels.shape} and the image slice {rgb.shape[:2]} differ in shape; "
                         "are the image and label kinds of the same volume?")
    out = rgb.copy()
    lab = np.asarray(labels)
    mask = lab > 0
    if len(hidden):
        mask &= ~np.isin(lab, np.asarray(list(hidden)))
    if opacity == 0.0 or not mask.any():
        return out
    if colours is None:
        col = label_palette(lab[mask]).astype(np.float32)
    else:
        from ..labels import default_colour

        values, inverse = np.unique(lab[mask], return_inverse=True)
        table = np.array([colours.get(int(v)) or default_colour(int(v)) for v in values], np.float32)
        col = table[inverse.reshape(-1)]
    out[mask] = ((1.0 - opacity) * rgb[mask].astype(np.float32) + opacity * col).round().astype(np.uint8)
    return out


def draw_crosshair(rgb: np.ndarray, row: int, col: int, colour: tuple[int, int, int] = (255, 230, 0)) -> np.ndarray:
    """``rgb`` with a one-pixel horizontal line at ``row`` and vertical line at ``col`` (in place)."""
    rgb[int(row), :] = colour
    rgb[:, int(col)] = colour
    return rgb


def render_plane(
    image: np.ndarray,
    plane: str,
    indices: Mapping[str, int],
    *,
    labels: Optional[np.ndarray] = None,
    opacity: float = 0.4,
    colours: Optional[Mapping[int, Sequence[int]]] = None,
    hidden: Sequence[int] = (),
    cmap: str = "gray",
    vmin: Optional[float] = None,
    vmax: Optional[float] = None,
    show_crosshair: bool = True,
) -> np.ndarray:
    """One displayed plane: the image slice through ``cmap``, the label slice on top, the crosshair.

    ``image`` (and ``labels``, when given) are 2-D or 3-D arrays of the same shape (see
    :func:`as_volume`); ``indices`` maps plane names to slice indices.  Only the slices needed
    are read.  ``colours``/``hidden``: see :func:`overlay_labels`.  Returns an ``H x W x 3`` ``uint8`` array.
    """
    index = int(indices.get(plane, 0))
    rgb = apply_colormap(normalize(extract_slice(image, plane, index), vmin, vmax), cmap)
    if labels is not None:
        if labels.shape != image.shape:
            raise ValueError(f"the label volume {labels.shape} and the image volume {image.shape} differ in shape")
        rgb = overlay_labels(rgb, extract_slice(labels, plane, index), opacity, colours, hidden)
    if show_crosshair:
        cross = crosshair(image.shape, plane, indices)
        if cross is not None:
            draw_crosshair(rgb, *cross)
    return np.ascontiguousarray(rgb)


def render_planes(image: np.ndarray, indices: Mapping[str, int], planes: Optional[Sequence[str]] = None,
                  **kwargs: object) -> dict[str, np.ndarray]:
    """:func:`render_plane` for each of ``planes`` (default: every plane of the array)."""
    planes = tuple(planes) if planes is not None else planes_for(image.ndim)
    vmin = kwargs.pop("vmin", None)
    vmax = kwargs.pop("vmax", None)
    if vmin is None or vmax is None:  # one intensity scale for every plane
        finite = image[np.isfinite(image)] if np.issubdtype(image.dtype, np.floating) else image
        if finite.size:
            vmin = float(finite.min()) if vmin is None else vmin
            vmax = float(finite.max()) if vmax is None else vmax
    return {p: render_plane(image, p, indices, vmin=vmin, vmax=vmax, **kwargs) for p in planes}  # type: ignore[arg-type]


def montage(images: Sequence[np.ndarray], gap: int = 4, background: int = 255) -> np.ndarray:
    """The ``H x W x 3`` images side by side, top-aligned, ``gap`` pixels apart."""
    if not images:
        return np.full((1, 1, 3), background, np.uint8)
    height = max(im.shape[0] for im in images)
    width = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    out = np.full((height, width, 3), background, np.uint8)
    x = 0
    for im in images:
        out[: im.shape[0], x: x + im.shape[1]] = im
        x += im.shape[1] + gap
    return out


def encode_png(rgb: np.ndarray, scale: int = 1) -> bytes:
    """PNG bytes of an ``H x W x 3`` ``uint8`` image, each pixel repeated ``scale`` times (zlib only)."""
    img = np.ascontiguousarray(rgb, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"encode_png needs an H x W x 3 uint8 image, got shape {img.shape}")
    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    h, w = img.shape[:2]
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


# -- what the browser gets: axis order, roles, windowing, quantisation, orientation ---------------
#: At most this many distinct values make an integer array a label map (a T1 in int16 has more).
MAX_LABELS = 256
#: The largest volume sent at full resolution (256³); larger ones are strided down.
MAX_VOXELS = 256 ** 3


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array of ``value``: torch tensors (bfloat16/float16 become float32) or array-likes."""
    if hasattr(value, "detach"):
        t = value.detach().cpu()
        if str(t.dtype) in ("torch.bfloat16", "torch.float16"):
            t = t.float()
        return t.numpy()
    arr = np.asarray(value)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return arr


def is_label_like(arr: np.ndarray) -> bool:
    """Integer or boolean with at most :data:`MAX_LABELS` distinct values (checked on a subsample)."""
    if arr.dtype.kind not in "iub" or arr.size == 0:
        return False
    flat = arr.reshape(-1)
    step = max(1, flat.size // 1_000_000)
    return len(np.unique(flat[::step])) <= MAX_LABELS


def spatial(arr: np.ndarray, channel: int = 0, channel_axis: Optional[int] = None) -> tuple[np.ndarray, int, str]:
    """The 3-D ``(x, y, z)`` volume of ``arr`` to show, the number of channels, and a note on the layout.

    2-D arrays become ``(x, y, 1)``.  4-D arrays have a channel (or time) axis: ``channel_axis``
    when given (0 or -1/3), else guessed: a first axis of at most 16 means channels-first, a longer one the NIfTI
    layout ``(x, y, z, c)`` / ``(x, y, z, t)``.
    Leading axes of length 1 are dropped first.  ``channel`` is clipped into range.

    Raises:
        ValueError: an empty array, or one that is not 2-D, 3-D or 4-D.
    """
    while arr.ndim > 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.size == 0:
        raise ValueError(f"the array is empty (shape {tuple(arr.shape)}); there is nothing to show")
    note = ""
    n_channels = 1
    if arr.ndim == 4:
        if channel_axis is None:
            channel_axis = 0 if arr.shape[0] <= 16 else 3
        if channel_axis not in (0, 3, -1):
            raise ValueError(f"channel_axis should be 0 (channels-first) or -1 (channels-last), got {channel_axis}")
        axis = 0 if channel_axis == 0 else 3
        n_channels = arr.shape[axis]
        channel = int(min(max(0, channel), n_channels - 1))
        arr = np.take(arr, channel, axis=axis)
        note = f"{'channels-first' if axis == 0 else 'channels-last'}, channel {channel} of {n_channels}"
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise ValueError(f"the slice viewer shows 2-D, 3-D or 4-D arrays, got shape {tuple(arr.shape)}")
    return arr, n_channels, note


def downsample(arr: np.ndarray, max_voxels: int = MAX_VOXELS) -> tuple[np.ndarray, int]:
    """``arr`` strided by the smallest integer step that brings it to ``max_voxels`` or fewer, and the step."""
    step = 1
    while int(np.prod([-(-n // step) for n in arr.shape])) > max_voxels:
        step += 1
    return (arr[::step, ::step, ::step] if step > 1 else arr), step


def _subsample(arr: np.ndarray, target: int = 1_000_000) -> np.ndarray:
    """About ``target`` values of ``arr``, flat; a strided view's sample is taken without copying it whole."""
    if arr.flags.c_contiguous or arr.ndim < 2:
        flat = arr.reshape(-1)
        return flat[:: max(1, flat.size // target)]
    k = max(1, int(round((arr.size / target) ** (1.0 / arr.ndim))))
    return arr[(slice(None, None, k),) * arr.ndim].reshape(-1)


def robust_range(arr: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """The ``low``-th and ``high``-th percentiles of the finite values (a subsample of ~1M), widened if equal."""
    sample = _subsample(arr).astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    if not hi > lo:
        lo, hi = float(sample.min()), float(sample.max())
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def quantize(arr: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``arr`` as C-ordered ``uint8`` over its 0.1st–99.9th percentile range (outliers clip), with that range.

    Value ``q`` stands for ``lo + q * (hi - lo) / 255``.  NaN becomes 0, -inf 0, +inf 255.  Done in slabs of
    ~1M voxels, in place in one float32 slab (a 256³ float volume needs no full-size float copy).
    """
    lo, hi = robust_range(arr, 0.1, 99.9)
    out = np.empty(arr.shape, np.uint8)
    scale = np.float32(255.0 / (hi - lo))
    slab = max(1, (1 << 20) // max(1, int(np.prod(arr.shape[1:]))))
    for i in range(0, arr.shape[0], slab):
        part = arr[i:i + slab].astype(np.float32)
        part -= np.float32(lo)
        part *= scale
        np.fmax(part, 0, out=part)  # fmax/fmin skip NaN: NaN and -inf become 0, +inf 255
        np.fmin(part, 255, out=part)
        np.rint(part, out=part)
        out[i:i + slab] = part
    return out, lo, hi


def label_codes(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels as ``uint8`` (values 0..255) or ``uint16`` (larger), negatives as 0, and the bit width.

    A ``uint8`` or ``bool`` map comes back as it is (a view: nothing copied); others are converted once.
    """
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        return a, 8
    if a.dtype.kind == "b":
        return a.view(np.uint8), 8
    if a.dtype.kind == "f":
        a = np.rint(np.nan_to_num(a))
    if a.size and a.max() <= 255 and a.min() >= 0:
        return a.astype(np.uint8), 8
    a = np.clip(a, 0, 65535)
    if a.size and a.max() > 255:
        return a.astype(np.uint16), 16
    return a.astype(np.uint8), 8


def present_labels(codes: np.ndarray) -> list[int]:
    """The values present in label codes (``uint8``/``uint16``, from :func:`label_codes`), in order.

    One pass and no temporary (``np.bincount`` would first copy the codes as 8-byte integers: 128 MiB
    for a 256³ map).
    """
    seen = np.zeros(256 if codes.dtype == np.uint8 else 65536, bool)
    seen[codes] = True
    return [int(v) for v in np.flatnonzero(seen)]


_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


def axcodes(affine: Optional[Any]) -> tuple[str, str, str]:
    """The direction (RAS+ world) each voxel axis points to, e.g. ``("R", "A", "S")``; identity when ``None``.

    The world axis with the largest component of each column of the affine's 3x3 part wins (as
    :func:`nibabel.orientations.aff2axcodes`).

    Raises:
        ValueError: the affine is not 3x3/4x4 or its axes are degenerate.
    """
    if affine is None:
        return ("R", "A", "S")
    a = np.asarray(to_numpy(affine), dtype=np.float64)
    if a.shape not in ((4, 4), (3, 4), (3, 3)):
        raise ValueError(f"an affine should be 4x4 (or 3x3), got shape {a.shape}")
    m = a[:3, :3]
    codes = []
    used: set[int] = set()
    for col in range(3):
        order = np.argsort(-np.abs(m[:, col]))
        world = next(int(w) for w in order if int(w) not in used)
        if m[world, col] == 0:
            raise ValueError(f"the affine's voxel axis {col} has no direction: {m.tolist()}")
        used.add(world)
        code = "RAS"[world]
        codes.append(code if m[world, col] > 0 else _OPPOSITE[code])
    return tuple(codes)  # type: ignore[return-value]


def voxel_sizes(affine: Optional[Any], spacing: Optional[Sequence[float]] = None) -> tuple[float, float, float]:
    """Voxel sizes in mm: ``spacing`` when given, else the affine's column norms, else 1 mm."""
    if spacing is not None:
        s = [float(v) for v in spacing]
        if len(s) != 3 or not all(v > 0 for v in s):
            raise ValueError(f"spacing should be three positive voxel sizes, got {spacing!r}")
        return (s[0], s[1], s[2])
    if affine is None:
        return (1.0, 1.0, 1.0)
    m = np.asarray(to_numpy(affine), dtype=np.float64)[:3, :3]
    sizes = np.linalg.norm(m, axis=0)
    return tuple(float(v) if v > 0 else 1.0 for v in sizes)  # type: ignore[return-value]


def thumbnail(plane: np.ndarray, size: int = 64) -> np.ndarray:
    """A ``size x size`` ``uint8`` tile of a 2-D ``(x, y)`` slice: robustly windowed, nearest-neighbour
    scaled with its aspect kept (centred on black), displayed like the viewer's planes (x right, y up).
    """
    p = np.asarray(plane, dtype=np.float32)
    lo, hi = robust_range(p, 1.0, 99.0)
    img = np.clip((p - lo) / (hi - lo) * 255.0, 0, 255)
    img = np.rot90(np.nan_to_num(img))  # rows: y from the top down, columns: x
    h, w = img.shape
    scale = size / max(h, w)
    th, tw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    rows = np.minimum((np.arange(th) / scale).astype(int), h - 1)
    cols = np.minimum((np.arange(tw) / scale).astype(int), w - 1)
    out = np.zeros((size, size), np.uint8)
    top, left = (size - th) // 2, (size - tw) // 2
    out[top:top + th, left:left + tw] = np.rint(img[np.ix_(rows, cols)]).astype(np.uint8)
    return out


# -- display orientation: the closest canonical (RAS) order of any stored order ----------------------
def io_orientation(affine: Any) -> np.ndarray:
    """``(3, 2)`` array: for each voxel axis, the world (RAS+) axis it is closest to and the sign (+1/-1).

    The algorithm of :func:`nibabel.orientations.io_orientation`: the affine's columns are normalised
    by the voxel sizes, the closest shear-free matrix is found by polar decomposition (SVD), and each
    voxel axis takes the world axis it changes most, ties broken in axis order.  (Pure numpy, so the
    viewer needs no nibabel; the tests compare it with nibabel's.)

    Raises:
        ValueError: the affine is not 3x3/3x4/4x4, is not finite, or a voxel axis has no direction.
    """
    a = np.asarray(to_numpy(affine), dtype=np.float64)
    if a.shape not in ((4, 4), (3, 4), (3, 3)):
        raise ValueError(f"an affine should be 4x4 (or 3x3), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"the affine has non-finite values: {a.tolist()}")
    rzs = a[:3, :3]
    zooms = np.sqrt(np.sum(rzs * rzs, axis=0))
    zooms[zooms == 0] = 1
    rs = rzs / zooms
    p, sv, qs = np.linalg.svd(rs, full_matrices=False)
    tol = sv.max() * 3 * np.finfo(sv.dtype).eps
    keep = sv > tol
    r = p[:, keep] @ qs[keep]
    ornt = np.zeros((3, 2))
    for axis in range(3):
        col = r[:, axis]
        if np.allclose(col, 0):
            raise ValueError(f"the affine's voxel axis {axis} has no direction: {rzs.tolist()}")
        world = int(np.argmax(np.abs(col)))
        ornt[axis] = (world, -1.0 if col[world] < 0 else 1.0)
        r[world, :] = 0
    return ornt


class DisplayOrientation:
    """How a stored ``(i, j, k)`` volume is shown: axis permutation and flips only (no resampling).

    Display axis ``d`` shows stored axis ``perm[d]``, reversed when ``flip[d]``; the display axes point
    to ``codes`` (``("R", "A", "S")``, or ``("L", "A", "S")`` in radiological convention).  The stored
    array is never changed: :meth:`apply` returns a view.
    """

    def __init__(self, perm: Sequence[int], flip: Sequence[bool], codes: Sequence[str]) -> None:
        self.perm = tuple(int(p) for p in perm)
        self.flip = tuple(bool(f) for f in flip)
        self.codes = tuple(str(c) for c in codes)

    def apply(self, volume: np.ndarray) -> np.ndarray:
        """The display view of a stored 3-D ``volume`` (no copy)."""
        out = np.transpose(volume, self.perm)
        return out[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]

    def to_stored(self, index: Sequence[int], stored_shape: Sequence[int]) -> tuple[int, int, int]:
        """The stored voxel index of display voxel ``index`` (``stored_shape``: the stored volume's shape)."""
        out = [0, 0, 0]
        for d, (s, f) in enumerate(zip(self.perm, self.flip)):
            out[s] = int(stored_shape[s]) - 1 - int(index[d]) if f else int(index[d])
        return (out[0], out[1], out[2])

    def to_display(self, index: Sequence[int], stored_shape: Sequence[int]) -> tuple[int, int, int]:
        """The display voxel index of stored voxel ``index`` (the inverse of :meth:`to_stored`)."""
        out = [0, 0, 0]
        for d, (s, f) in enumerate(zip(self.perm, self.flip)):
            out[d] = int(stored_shape[s]) - 1 - int(index[s]) if f else int(index[s])
        return (out[0], out[1], out[2])

    def as_dict(self) -> dict[str, list[Any]]:
        return {"perm": list(self.perm), "flip": list(self.flip), "codes": list(self.codes)}

    def __repr__(self) -> str:
        return f"DisplayOrientation(perm={self.perm}, flip={self.flip}, codes={''.join(self.codes)})"


def display_orientation(affine: Optional[Any], radiological: bool = False) -> DisplayOrientation:
    """The display of a volume with ``affine`` in its closest canonical orientation.

    Neurological (default): display axes R, A, S, so the patient's right is on the screen's right in
    axial and coronal planes (nilearn, FSLeyes, niivue); ``radiological``: L, A, S (the patient's
    right on the screen's left, as a radiologist faces the patient).  ``None``: the stored order is
    taken as RAS (identity), as for arrays without an affine.

    Raises:
        ValueError: see :func:`io_orientation`.
    """
    ornt = (np.array([[0, 1], [1, 1], [2, 1]], float) if affine is None else io_orientation(affine))
    perm = [0, 0, 0]
    flip = [False, False, False]
    for stored, (world, sign) in enumerate(ornt):
        d = int(world)
        perm[d] = stored
        want = -1.0 if (radiological and d == 0) else 1.0
        flip[d] = sign != want
    return DisplayOrientation(perm, flip, ("L" if radiological else "R", "A", "S"))


def voxel_to_world(affine: Optional[Any], index: Sequence[float]) -> tuple[float, float, float]:
    """World (mm) coordinates of stored voxel ``index`` through ``affine`` (identity when ``None``)."""
    v = np.array([float(i) for i in index][:3] + [1.0])
    if affine is None:
        return (float(v[0]), float(v[1]), float(v[2]))
    a = np.asarray(to_numpy(affine), dtype=np.float64)
    m = np.eye(4)
    m[: a.shape[0], : a.shape[1]] = a
    w = m @ v
    return (float(w[0]), float(w[1]), float(w[2]))
