"""SliceViewer: axial, coronal and sagittal slices of a sample, drawn in the browser.

The kernel sends a sample's volume to the browser once, as ``uint8`` after robust windowing (labels
as ``uint8``/``uint16``), and the small JavaScript module ``viewer.js`` (an anywidget) draws the
three planes in canvases: slider moves, clicks, arrow keys, window and opacity changes never wait
for the kernel.  The kernel is asked only when the sample, kind, channel or generation changes.

Every volume is shown in its closest canonical orientation (RAS, as nibabel's ``io_orientation``
defines it: axis permutations and flips only, no resampling), whatever its stored order (LIA,
LPS, ...), from the sample's affine (a kind named ``affine`` in the sample, or the ``affine=``
argument; the stored order is taken as RAS when neither).  Neurological convention by default (the
patient's right on the screen's right, as nilearn, FSLeyes and niivue); ``radiological=True`` mirrors
axial and coronal planes.  The stored array is never changed; slice indices, clicks and the readout
are in display terms, and the readout also gives the stored voxel index and the world coordinate
(mm).  Plane aspect follows the voxel sizes.  Label colours and names come from a label table
(:mod:`wirehead.labels`); labels can be hidden one by one from the legend.

Reading from a cache, the viewer reads one sample at a time straight from the store, chunk by chunk
(:class:`wirehead.qc.GenerationSamples`, :func:`wirehead.qc.read_sample`: no prefetch of the generation,
not counted as a training read) and at most :data:`KEEP_SAMPLES` decoded samples exist through it, the
one being read included (thumbnails too).  Its background work (following new
generations, thumbnails one sample at a time, only for samples not seen yet) runs in the kernel's one
refresher thread (:mod:`wirehead.notebook.refresher`) and stops when the widget is closed, its
controller stops, or its cell runs again.  The same module
runs without a kernel in :meth:`SliceViewer.to_html` (a standalone page, as nilearn's ``view_img``),
which is also the viewer's ``text/html`` fallback in a notebook's outputs.  The pixels of the PNG
fallback come from the pure-numpy functions of :mod:`wirehead.notebook.slicing`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import zlib
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ..config import ConfigSource, WireheadConfig
from ..connect import open_store
from ..labels import LabelTable, LabelTableSource, load_label_table
from ..qc import GenerationSamples, SampleGone
from . import embed, slicing
from ._widgets import b64, escape, require_ipywidgets, require_traitlets
from .refresher import REFRESHER, adopt

require_ipywidgets()
traitlets = require_traitlets()
try:
    import anywidget
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("the wirehead slice viewer needs anywidget: pip install 'wirehead[notebook]'") from e

__all__ = ["SliceViewer"]

log = logging.getLogger(__name__)

_NO_LABEL = "(none)"
_HERE = Path(__file__).resolve().parent
_AFFINE_KIND = "affine"
#: Voxels embedded in the ``text/html`` fallback (a standalone viewer); larger volumes are strided.
HTML_MAX_VOXELS = 96 ** 3
#: Thumbnails: side in pixels, and at most this many samples in the grid.
THUMB_SIZE = 64
THUMB_MAX = 64
#: Decoded samples a viewer of a cache holds at most (the one shown and the last few looked at).
KEEP_SAMPLES = 2


def _deflate(codes: np.ndarray) -> bytes:
    """Label codes as the browser inflates them (zlib): a 256³ label map is ~0.3 MB instead of 16 MB.

    Slab by slab along the first axis (C order), so a strided or flipped display view is never copied whole."""
    z = zlib.compressobj(1)
    step = max(1, (1 << 20) // max(1, int(np.prod(codes.shape[1:]))))
    parts = [z.compress(np.ascontiguousarray(codes[i:i + step])) for i in range(0, codes.shape[0], step)]
    return b"".join(parts) + z.flush()


def _luts() -> dict[str, list[int]]:
    return {name: slicing.colormap_lut(name).reshape(-1).tolist() for name in slicing.COLORMAPS}


class SliceViewer(anywidget.AnyWidget):
    """Planes of one sample side by side, drawn in the browser, with a crosshair and a label overlay.

    Build it from one source:

    * ``controller=`` a :class:`~wirehead.notebook.WireheadController` (or ``controller.viewer()``),
    * ``config_path=`` / ``config=`` (plus optional ``uri=``): samples of that cache's read generation,
    * ``arrays=`` a dict ``{kind: array}`` (one sample) or a list of such dicts (numpy or torch),
    * :meth:`from_nifti` a NIfTI image (and label map).

    Args:
        kind: the kind shown as the image (default: the first kind that is not a label map; a label
            map is integer with at most 256 distinct values).
        label_kind: the kind overlaid as labels, or ``None`` (default: ``"label"`` if it is a label
            map, else the first label map of the image's shape).
        label_names: ``{label value: name}`` shown in the readout and the legend (win over the table's).
        label_table: colours and names of labels: a dict ``{value: name}`` or ``{value: (name, (r, g, b))}``,
            a FreeSurfer ``*ColorLUT.txt``, an ITK-SNAP label description file, or a
            :class:`~wirehead.labels.LabelTable`.  Labels without a colour get distinct colours (no two
            labels present share one).
        radiological: show axial and coronal planes in radiological convention (the patient's right on
            the left); default ``False``, neurological, as nilearn, FSLeyes and niivue.
        affine: a 4x4 voxel-to-world (RAS+) matrix for samples without an ``affine`` kind.
        spacing: voxel sizes in mm (default: from the affine, else 1 mm).
        channel_axis: 0 (channels-first) or -1 (channels-last) for 4-D arrays (default: guessed,
            see :func:`wirehead.notebook.slicing.spatial`).
        cmap: the image colormap, one of :data:`wirehead.notebook.slicing.COLORMAPS`.
        opacity: of the label overlay, in [0, 1].
        size: displayed size of the longest side of each plane in pixels.
        timeout: seconds to wait for a read generation when reading from the cache.
        max_voxels: larger volumes are strided down before they are sent (default 256³).

    Traits (set them in Python or use the controls): ``sample``, ``kind``, ``label_kind``,
    ``axial``, ``coronal``, ``sagittal``, ``channel``, ``opacity``, ``cmap``, ``crosshair``,
    ``window`` (``[low, high]`` in image units; 1st–99th percentile by default), ``label_names``,
    ``hidden_labels``, ``radiological``; read-only: ``generation`` (the read generation shown, or -1 for
    arrays), ``shape``, ``spacing`` and ``axcodes`` (of the display), ``message`` (why something is not
    shown), ``info``.  ``axial``/``coronal``/``sagittal`` index the display axes S, A and R (L when
    radiological).
    """

    _esm = _HERE / "viewer.js"
    _css = _HERE / "viewer.css"

    sample = traitlets.CInt(0).tag(sync=True)
    n_samples = traitlets.Int(0).tag(sync=True)
    kinds = traitlets.List(traitlets.Unicode()).tag(sync=True)
    kind = traitlets.Unicode("").tag(sync=True)
    label_kind = traitlets.Unicode(_NO_LABEL, allow_none=True).tag(sync=True)
    axial = traitlets.CInt(0).tag(sync=True)
    coronal = traitlets.CInt(0).tag(sync=True)
    sagittal = traitlets.CInt(0).tag(sync=True)
    channel = traitlets.CInt(0).tag(sync=True)
    n_channels = traitlets.Int(1).tag(sync=True)
    opacity = traitlets.CFloat(0.4).tag(sync=True)
    cmap = traitlets.Enum(list(slicing.COLORMAPS), default_value="gray").tag(sync=True)
    crosshair = traitlets.Bool(True).tag(sync=True)
    window = traitlets.List(traitlets.Float(), default_value=[0.0, 1.0], minlen=2, maxlen=2).tag(sync=True)
    label_names = traitlets.Dict().tag(sync=True)
    size = traitlets.Int(240).tag(sync=True)
    generation = traitlets.Int(-1, read_only=True).tag(sync=True)
    shape = traitlets.List(traitlets.Int(), default_value=[1, 1, 1]).tag(sync=True)
    spacing = traitlets.List(traitlets.Float(), default_value=[1.0, 1.0, 1.0]).tag(sync=True)
    axcodes = traitlets.List(traitlets.Unicode(), default_value=["R", "A", "S"]).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    info = traitlets.Unicode("").tag(sync=True)
    _volume = traitlets.Bytes(b"").tag(sync=True)
    _labels = traitlets.Bytes(b"").tag(sync=True)
    _label_bits = traitlets.Int(8).tag(sync=True)
    _label_values = traitlets.List(traitlets.Int()).tag(sync=True)
    _qrange = traitlets.List(traitlets.Float(), default_value=[0.0, 1.0]).tag(sync=True)
    _luts = traitlets.Dict().tag(sync=True)
    _palette = traitlets.List().tag(sync=True)
    _has_reader = traitlets.Bool(False).tag(sync=True)
    _refresh_clicks = traitlets.Int(0).tag(sync=True)
    _version = traitlets.Int(0).tag(sync=True)
    thumbnails = traitlets.Bool(False).tag(sync=True)
    follow = traitlets.Bool(False).tag(sync=True)
    _thumbs = traitlets.Bytes(b"").tag(sync=True)
    _thumb_n = traitlets.Int(0).tag(sync=True)
    radiological = traitlets.Bool(False).tag(sync=True)
    hidden_labels = traitlets.List(traitlets.Int()).tag(sync=True)
    _label_colors = traitlets.Dict().tag(sync=True)
    _to_stored = traitlets.Dict().tag(sync=True)
    _default_window = traitlets.List(traitlets.Float(), default_value=[0.0, 1.0]).tag(sync=True)

    def __init__(
        self,
        controller: Any = None,
        *,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        config: ConfigSource = None,
        uri: Optional[str] = None,
        arrays: Union[Mapping[str, Any], Sequence[Mapping[str, Any]], None] = None,
        kind: Optional[str] = None,
        label_kind: Optional[str] = None,
        label_names: Optional[Mapping[int, str]] = None,
        label_table: LabelTableSource = None,
        radiological: bool = False,
        affine: Any = None,
        spacing: Optional[Sequence[float]] = None,
        channel_axis: Optional[int] = None,
        cmap: str = "gray",
        opacity: float = 0.4,
        size: int = 240,
        timeout: float = 10.0,
        max_voxels: int = slicing.MAX_VOXELS,
    ) -> None:
        given = [x is not None for x in (controller, arrays)] + [config is not None or config_path is not None]
        if sum(given) != 1:
            raise ValueError("SliceViewer needs exactly one source: controller=..., config_path=/config=..., "
                             "or arrays=...")
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity should be in [0, 1], but got opacity={opacity!r}")
        if channel_axis not in (None, 0, -1, 3):
            raise ValueError(f"channel_axis should be 0 (channels-first), -1 (channels-last) or None, "
                             f"got {channel_axis!r}")
        self._source: Optional[GenerationSamples] = None
        self.config: Optional[WireheadConfig] = None
        self._controller_runtime: Any = None
        self._samples: Optional[list[dict[str, np.ndarray]]] = None
        if arrays is not None:
            items = [arrays] if isinstance(arrays, Mapping) else list(arrays)
            if not items or not all(isinstance(a, Mapping) and a for a in items):
                raise ValueError("arrays should be a dict {kind: array} or a non-empty list of such dicts")
            self._samples = [{str(k): slicing.to_numpy(v) for k, v in a.items()} for a in items]
            kinds = [k for k in self._samples[0] if k != _AFFINE_KIND]
        else:
            if controller is not None:
                cfg, uri = controller.config, uri or controller.uri
            else:
                cfg = WireheadConfig.load(config, config_path)
            self.config = cfg
            self._source = GenerationSamples(open_store(cfg, uri), keep=KEEP_SAMPLES)
            kinds = [k for k in cfg.sample if k != _AFFINE_KIND]
        self._affine = None if affine is None else np.asarray(slicing.to_numpy(affine), np.float64)
        self._spacing_arg = spacing
        self._channel_axis = channel_axis
        self._max_voxels = int(max_voxels)
        self._image: Optional[np.ndarray] = None  # the 3-D volume shown (display order, after channel/stride)
        self._labelvol: Optional[np.ndarray] = None
        self._orient = slicing.display_orientation(None, bool(radiological))
        self._stored_shape: tuple[int, ...] = (1, 1, 1)  # of the (strided) stored volume
        self._step = 1
        self._shown_affine: Optional[np.ndarray] = None
        self._table: LabelTable = load_label_table(label_table).merged(
            {int(k): str(v) for k, v in (label_names or {}).items()})
        self._load_lock = threading.RLock()  # interactive and background loads, one at a time
        self._thumb_cache: dict[tuple[int, int, str, int, bool], np.ndarray] = {}
        self._follow_interval = 2.0
        self._quiet: Optional[int] = threading.get_ident()  # the thread setting traits that must not reload
        super().__init__(kinds=kinds, size=int(size), cmap=cmap, opacity=float(opacity), _luts=_luts(),
                         _palette=slicing.label_palette(np.arange(1, 21)).tolist(),
                         _has_reader=self._source is not None, radiological=bool(radiological),
                         label_names={str(k): v for k, v in self._table.names.items()})
        self.kind = kind if kind is not None else self._default_kind()
        self.label_kind = label_kind if label_kind is not None else self._default_label_kind()
        self._quiet = None
        self.observe(self._on_source, names=["sample", "kind", "label_kind", "channel", "radiological"])
        self.observe(lambda _: self.refresh(), names=["_refresh_clicks"])
        self.observe(self._on_thumbnails, names=["thumbnails"])
        self.observe(self._on_follow, names=["follow"])
        self.observe(self._on_names, names=["label_names"])
        if controller is not None:
            controller._register_widget(self)  # its background work stops with the controller
        adopt(self)  # ... and when its cell runs again
        if self._source is not None:
            self.refresh()
        else:
            self.set_trait("n_samples", len(self._samples or []))
            self._load()

    # -- alternative sources ---------------------------------------------------------------------
    @classmethod
    def from_nifti(cls, image_path: Union[str, "os.PathLike[str]"],
                   label_path: Union[str, "os.PathLike[str]", None] = None, **kwargs: Any) -> "SliceViewer":
        """A viewer of a NIfTI image (and label map), with their affine's orientation and voxel sizes.

        Raises:
            ImportError: nibabel is missing.
            ValueError: the label map's shape differs from the image's (shown, not raised, by the viewer).
        """
        from .. import nifti  # the one NIfTI loader (nibabel, the brains extra)

        image, affine = nifti.load(image_path)
        arrays: dict[str, Any] = {"image": image, _AFFINE_KIND: affine}
        if label_path is not None:
            data, _ = nifti.load(label_path)
            arrays["label"] = data if data.dtype.kind in "iub" else np.rint(data).astype(np.int32)
        kwargs.setdefault("channel_axis", -1)
        return cls(arrays=arrays, **kwargs)

    # -- choosing defaults -------------------------------------------------------------------------
    def _first_sample(self) -> Optional[dict[str, np.ndarray]]:
        return self._samples[0] if self._samples is not None else None

    def _default_kind(self) -> str:
        first = self._first_sample()
        for k in self.kinds:
            if first is None and k != "label" or first is not None and not slicing.is_label_like(first[k]):
                return k
        return self.kinds[0]

    def _default_label_kind(self) -> str:
        first = self._first_sample()
        if first is None:
            return "label" if "label" in self.kinds and self.kind != "label" else _NO_LABEL
        img_shape = first[self.kind].shape
        candidates = [k for k in self.kinds if k != self.kind and slicing.is_label_like(first[k])]
        candidates.sort(key=lambda k: (k != "label", first[k].shape[-3:] != img_shape[-3:]))
        return candidates[0] if candidates else _NO_LABEL

    @traitlets.validate("kind")
    def _valid_kind(self, proposal: Any) -> str:
        if proposal["value"] not in self.kinds:
            raise traitlets.TraitError(f"kind should be one of {self.kinds}, but got {proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("label_kind")
    def _valid_label_kind(self, proposal: Any) -> str:
        value = proposal["value"] or _NO_LABEL
        if value != _NO_LABEL and value not in self.kinds:
            raise traitlets.TraitError(f"label_kind should be one of {self.kinds} or None, got {value!r}")
        return value

    @traitlets.validate("opacity")
    def _valid_opacity(self, proposal: Any) -> float:
        return float(min(1.0, max(0.0, proposal["value"])))

    @traitlets.validate("axial", "coronal", "sagittal")
    def _valid_index(self, proposal: Any) -> int:
        n = self.shape[slicing.PLANE_AXIS[proposal["trait"].name]]
        return int(min(max(0, proposal["value"]), n - 1))

    @traitlets.validate("sample")
    def _valid_sample(self, proposal: Any) -> int:
        return int(min(max(0, proposal["value"]), max(0, self.n_samples - 1)))

    @traitlets.validate("channel")
    def _valid_channel(self, proposal: Any) -> int:
        return int(min(max(0, proposal["value"]), max(0, self.n_channels - 1)))

    @traitlets.validate("window")
    def _valid_window(self, proposal: Any) -> list[float]:
        lo, hi = (float(v) for v in proposal["value"])
        if not hi > lo:
            raise traitlets.TraitError(f"window should be [low, high] with high > low, got {[lo, hi]}")
        return [lo, hi]

    # -- data --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Show the newest read generation of the cache (arrays: load the sample again)."""
        with self._load_lock:
            if self._source is None:
                self._load()
                return
            try:
                gen = self._source.refresh()
            except Exception as e:  # noqa: BLE001 - shown in the widget
                self._show_message(f"no samples to show yet: {type(e).__name__}: {e}")
                return
            if gen is None:
                # before the first swap: say so at once (no wait) and show the first sample when it comes
                self._show_message("waiting for the first swap: the cache has no read generation yet; the "
                                   "first sample shows here when the first generation is full")
                self._watch_generations()
                return
            self.set_trait("n_samples", gen.n)
            # ``generation`` changes with what is shown (after the sample is read, in one sync), never before:
            # a viewer that says it shows a generation shows its sample, or says why not
            self._load(generation=gen.gen)

    def _sample_arrays(self, index: int) -> tuple[dict[str, np.ndarray], Optional[int]]:
        """Sample ``index`` and the generation it was read from (``None`` for arrays)."""
        if self._samples is not None:
            return self._samples[index], None
        assert self._source is not None
        gen = self._source.gen  # the generation read is the one the viewer then says it shows
        if gen is None:
            raise LookupError("the cache has no read generation yet (no swap so far)")
        return self._source.get(index, gen), gen.gen

    def _on_source(self, change: Any) -> None:
        if change["name"] == "label_kind" and change["new"] is None:  # None skips validation: normalise
            self.label_kind = _NO_LABEL
            return
        if self._quiet != threading.get_ident():  # a change by the user (or code), not by a load publishing
            self._load()
            if self.thumbnails and change["name"] in ("kind", "channel", "radiological"):
                self.make_thumbnails(wait=False)

    def _on_names(self, change: Any) -> None:
        names = {int(k): str(v) for k, v in (change["new"] or {}).items()}
        self._table = LabelTable(names, dict(self._table.colours), self._table.source)

    def _sample_text(self, index: int, end: str = "; ") -> str:
        """Which sample of how many, counted from 1 as the browser's counter (``"sample 3/16; "`` for index 2);
        nothing for a viewer of one array sample (there is nothing to choose)."""
        if self._source is None and self.n_samples <= 1:
            return ""
        return f"sample {index + 1}/{self.n_samples}{end}"

    def _show_message(self, text: str) -> None:
        log.info("slice viewer: %s", text)
        self.message = text

    def _load(self, generation: Optional[int] = None) -> None:
        """Fetch the chosen sample, pick the volumes, send them to the browser.  Problems become ``message``.

        ``generation``: the read generation the sample comes from, published last, with the sample (or the
        message saying why it cannot be shown).  Loads run one at a time (a background refresh and a
        sample chosen in the browser never interleave), each with the traits as they are when it runs.
        """
        with self._load_lock:
            try:
                try:
                    self._load_or_raise(generation)
                except SampleGone:
                    # the generation shown was retired and deleted (a viewer that does not follow keeps its
                    # generation while it lasts): show the same sample index of the read generation now
                    gen = self._source.refresh() if self._source is not None else None
                    if gen is None or gen.gen == self.generation:
                        raise
                    log.info("slice viewer: generation %d is gone; showing generation %d", self.generation, gen.gen)
                    self.set_trait("n_samples", gen.n)
                    self._load_or_raise(gen.gen)
                    if self.thumbnails:
                        self.make_thumbnails(wait=False)
            except Exception as e:  # noqa: BLE001 - one clear message in the widget, never a callback traceback
                self._image = self._labelvol = None
                with self.hold_sync():
                    self._volume = b""
                    self._labels = b""
                    self._version += 1
                    self._show_message(str(e) if isinstance(e, (ValueError, KeyError, LookupError)) and str(e)
                                       else f"{type(e).__name__}: {e}")
                    if generation is not None:
                        self.set_trait("generation", generation)

    def _load_or_raise(self, generation: Optional[int] = None) -> None:
        if self.n_samples == 0:
            raise ValueError("no samples to show yet")
        index = min(max(0, self.sample), self.n_samples - 1)
        try:
            arrays, read_from = self._sample_arrays(index)
        except SampleGone:
            raise
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"could not read sample {index}: {type(e).__name__}: {e}") from e
        if read_from is not None:
            generation = read_from
        notes: list[str] = []
        if self.kind not in arrays:
            raise ValueError(f"sample {index} has no kind {self.kind!r} (it has {sorted(arrays)}); "
                             "choose another image kind")
        raw = arrays[self.kind]
        stored, n_channels, layout = slicing.spatial(raw, self.channel, self._channel_axis)
        full_shape = stored.shape
        stored, step = slicing.downsample(stored, self._max_voxels)
        if step > 1:
            notes.append(f"shown at every {step}th voxel ({tuple(full_shape)} -> {tuple(stored.shape)})")
        if layout:
            notes.append(layout)
        slabels = None
        if self.label_kind not in (_NO_LABEL, self.kind):
            if self.label_kind not in arrays:
                notes.append(f"sample {index} has no label kind {self.label_kind!r}; shown without labels")
            else:
                lab = arrays[self.label_kind]
                try:
                    lvol, _, _ = slicing.spatial(lab, self.channel, self._channel_axis)
                except ValueError as e:
                    lvol = None
                    notes.append(f"label kind {self.label_kind!r}: {e}")
                if lvol is not None and lvol.shape != full_shape:
                    notes.append(f"label kind {self.label_kind!r} has shape {tuple(lvol.shape)} but the image "
                                 f"{self.kind!r} has {tuple(full_shape)}; labels not overlaid")
                elif lvol is not None:
                    slabels = lvol[::step, ::step, ::step] if step > 1 else lvol
        affine = arrays.get(_AFFINE_KIND, self._affine)
        try:
            orient = slicing.display_orientation(affine, bool(self.radiological))
            sizes = slicing.voxel_sizes(affine, self._spacing_arg)
            shown_affine = None if affine is None else np.asarray(slicing.to_numpy(affine), np.float64)
        except ValueError as e:
            notes.append(f"affine ignored: {e}")
            orient = slicing.display_orientation(None, bool(self.radiological))
            sizes, shown_affine = (1.0, 1.0, 1.0), None
        vol = orient.apply(stored)  # a view: the stored array is never changed
        labels = orient.apply(slabels) if slabels is not None else None
        sizes = tuple(sizes[a] * step for a in orient.perm)
        q, qlo, qhi = slicing.quantize(vol)
        lo, hi = slicing.robust_range(vol, 1.0, 99.0)
        lo, hi = max(lo, qlo), min(hi, qhi)
        if not hi > lo:
            lo, hi = qlo, qhi
        first = self._image is None or self._image.shape != vol.shape
        # the crosshair stays on the same stored voxel when the geometry stays (a new sample, the convention)
        keep = (self._image is not None and self._stored_shape == tuple(stored.shape))
        where = self._orient.to_stored([self.indices[p] for p in ("sagittal", "coronal", "axial")],
                                       self._stored_shape) if keep else None
        codes_l, bits = (slicing.label_codes(labels) if labels is not None else (None, 8))
        present = slicing.present_labels(codes_l) if codes_l is not None else []
        colours = self._table.colours_for(present)
        self._quiet = threading.get_ident()
        try:
            with self.hold_sync():
                self._image, self._labelvol = vol, labels
                self._orient, self._stored_shape, self._step = orient, tuple(stored.shape), step
                self._shown_affine = shown_affine
                self.shape = [int(n) for n in vol.shape]
                self.n_channels = n_channels
                self.spacing = [float(s) for s in sizes]
                self.axcodes = list(orient.codes)
                display = orient.to_display(where, stored.shape) if where is not None else None
                for d, p in enumerate(("sagittal", "coronal", "axial")):
                    n = vol.shape[d]
                    setattr(self, p, display[d] if display is not None else (n // 2 if first else getattr(self, p)))
                self._volume = np.ascontiguousarray(q).tobytes()
                self._labels = b"" if codes_l is None else _deflate(codes_l)
                self._label_bits = bits
                self._label_values = present
                self._label_colors = {str(v): list(c) for v, c in colours.items()}
                self._to_stored = {"perm": list(orient.perm), "flip": list(orient.flip),
                                   "shape": [int(n) for n in stored.shape], "step": int(step), "dstep": 1,
                                   "affine": None if shown_affine is None else shown_affine.tolist()}
                self._qrange = [qlo, qhi]
                self._default_window = [lo, hi]
                if first or not (qlo <= self.window[0] < self.window[1] <= qhi):
                    self.window = [lo, hi]
                shown_gen = self.generation if generation is None else generation
                where_txt = f"generation {shown_gen}, " if shown_gen >= 0 else ""
                stored_codes = "".join(slicing.axcodes(shown_affine)) if shown_affine is not None else "RAS"
                self.info = (f"{where_txt}{self._sample_text(index)}{self.kind} {raw.dtype} "
                             f"{tuple(raw.shape)} stored {stored_codes}, shown {''.join(orient.codes)}; voxels "
                             f"{' x '.join(f'{s:g}' for s in sizes)} mm")
                self.message = "; ".join(notes)
                self._version += 1
                if generation is not None:
                    self.set_trait("generation", generation)
        finally:
            self._quiet = None
        if notes:
            log.info("slice viewer: %s", self.message)

    # -- browsing a generation ---------------------------------------------------------------------
    def _on_thumbnails(self, change: Any) -> None:
        if change["new"]:
            self.make_thumbnails(wait=False)
        else:
            REFRESHER.cancel(self, "thumbnails")

    def make_thumbnails(self, max_samples: int = THUMB_MAX, wait: bool = True, timeout: float = 300.0) -> int:
        """Send the grid of thumbnails (mid axial slice of :attr:`kind` of each sample, up to ``max_samples``).

        Made in the kernel's refresher thread, one sample at a time and only for samples not seen
        before (a tile is kept per generation, sample, kind and channel); ``wait``: return when all
        are sent.  Clicking a thumbnail in the browser opens that sample.  Returns the number of
        thumbnails; samples that cannot be shown get a blank tile (and a message).
        """
        n = min(self.n_samples, int(max_samples))
        gen = self._source.gen if self._source is not None else None
        key = (-1 if gen is None else gen.gen, self.kind, int(self.channel), bool(self.radiological))
        done = REFRESHER.job(self, "thumbnails", self._thumb_steps(gen, key, n))
        if wait:
            done.wait(timeout)
        return n

    def _thumb_steps(self, gen: Any, key: tuple[int, str, int, bool], n: int) -> Any:
        g, kind, channel, radiological = key
        # tiles of other generations are never shown again
        self._thumb_cache = {k: t for k, t in self._thumb_cache.items() if k[0] == g}
        bad: list[str] = []
        for i in range(n):
            tkey = (g, i, kind, channel, radiological)
            if tkey not in self._thumb_cache:
                def tile(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
                    vol, _, _ = slicing.spatial(arrays[kind], channel, self._channel_axis)
                    orient = slicing.display_orientation(arrays.get(_AFFINE_KIND, self._affine), radiological)
                    vol = orient.apply(vol)
                    return slicing.thumbnail(vol[:, :, vol.shape[2] // 2], THUMB_SIZE)

                try:
                    # a sample the viewer holds is used as it is; another is read between the viewer's loads (never
                    # while one holds the sample it replaces) and dropped at once: at most KEEP_SAMPLES decoded
                    with self._load_lock:
                        self._thumb_cache[tkey] = (tile(self._samples[i]) if self._samples is not None
                                                   else self._source.look(i, tile, gen))  # type: ignore[union-attr]
                except SampleGone:  # the generation was retired and deleted: thumbnails of the read one now
                    now = self._source.refresh() if self._source is not None else None
                    if now is not None and gen is not None and now.gen != gen.gen:
                        self._thumb_cache.clear()
                        self.refresh()
                        self.make_thumbnails(wait=False)  # replaces this job
                        return
                    bad.append(f"{i} (gone)")
                    self._thumb_cache[tkey] = np.zeros((THUMB_SIZE, THUMB_SIZE), np.uint8)
                except Exception as e:  # noqa: BLE001 - a blank tile and a message, not a traceback
                    bad.append(f"{i} ({type(e).__name__}: {e})")
                    self._thumb_cache[tkey] = np.zeros((THUMB_SIZE, THUMB_SIZE), np.uint8)
                if i + 1 < n and (i % 4 == 3):
                    self._publish_thumbs(key, n, bad)
                    yield i
        self._publish_thumbs(key, n, bad)

    def _publish_thumbs(self, key: tuple[int, str, int, bool], n: int, bad: list[str]) -> None:
        g, kind, channel, radiological = key
        blank = np.zeros((THUMB_SIZE, THUMB_SIZE), np.uint8)
        tiles = np.stack([self._thumb_cache.get((g, i, kind, channel, radiological), blank) for i in range(n)]
                         or [blank])[:n]
        with self._load_lock, self.hold_sync():  # never inside a load's sync from another thread
            self._thumbs = np.ascontiguousarray(tiles).tobytes()
            self._thumb_n = n
            if bad:
                self.message = f"no thumbnail for samples {', '.join(bad)[:300]}"

    @property
    def follow_interval(self) -> float:
        """Seconds between looks for a new read generation (with ``follow``, or until the first one)."""
        return self._follow_interval

    @follow_interval.setter
    def follow_interval(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"follow_interval should be a positive number of seconds, got {value!r}")
        self._follow_interval = float(value)
        if "follow" in REFRESHER.tasks(self):
            self._watch_generations()

    def _on_follow(self, change: Any) -> None:
        if change["new"] and self._source is not None:
            self._watch_generations()
        elif self.generation >= 0:
            REFRESHER.cancel(self, "follow")

    def _watch_generations(self) -> None:
        """Look for new read generations in the background (with ``follow``, or until the first one)."""
        REFRESHER.every(self, "follow", self._follow_interval, self._follow_tick)

    def _follow_tick(self) -> None:
        assert self._source is not None
        try:
            read_gen = self._source.store.state().read_gen
        except Exception as e:  # noqa: BLE001 - keep following; say why nothing new shows
            log.debug("viewer follow: %s", e)
            return
        if read_gen is not None and read_gen != self.generation:
            self.refresh()
            if self.thumbnails:
                self.make_thumbnails(wait=False)
        if not self.follow and self.generation >= 0:
            REFRESHER.cancel(self, "follow")  # it only waited for the first generation, and shows it now

    def stop(self) -> None:
        """Stop the viewer's background work (following, thumbnails); the widget keeps what it shows."""
        REFRESHER.cancel(self)

    def close(self) -> None:
        """Stop the background work, let go of the samples and the server connection, and close the widget."""
        self.stop()
        if self._source is not None:
            self._source.clear()
            with contextlib.suppress(Exception):  # noqa: BLE001 - closing: the server may be gone already
                self._source.store.close()
        super().close()

    # -- what is shown -----------------------------------------------------------------------------
    @property
    def indices(self) -> dict[str, int]:
        """The slice index of each plane."""
        return {p: int(getattr(self, p)) for p in slicing.PLANES}

    @property
    def volume(self) -> Optional[np.ndarray]:
        """The 3-D image volume shown (after channel choice and downsampling), or ``None``."""
        return self._image

    @property
    def labels(self) -> Optional[np.ndarray]:
        """The 3-D label volume overlaid, or ``None``."""
        return self._labelvol

    @property
    def letters(self) -> dict[str, dict[str, str]]:
        """Orientation letters at each plane's ``left``/``right``/``top``/``bottom`` edge (as the browser shows)."""
        opp = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}
        out = {}
        for p in slicing.PLANES:
            a, b = [x for x in range(3) if x != slicing.PLANE_AXIS[p]]
            out[p] = {"left": opp[self.axcodes[a]], "right": self.axcodes[a],
                      "top": self.axcodes[b], "bottom": opp[self.axcodes[b]]}
        return out

    @property
    def orientation(self) -> "slicing.DisplayOrientation":
        """How the stored volume is shown (axis permutation and flips; see :func:`slicing.display_orientation`)."""
        return self._orient

    @property
    def stored_index(self) -> tuple[int, int, int]:
        """The stored (array) voxel index under the crosshair, of the full-resolution array."""
        i = self.indices
        j = self._orient.to_stored((i["sagittal"], i["coronal"], i["axial"]), self._stored_shape)
        return (j[0] * self._step, j[1] * self._step, j[2] * self._step)

    @property
    def world(self) -> tuple[float, float, float]:
        """The world coordinate (mm, from the affine; voxel units without one) under the crosshair."""
        return slicing.voxel_to_world(self._shown_affine, self.stored_index)

    def show_stored_voxel(self, index: Sequence[int]) -> None:
        """Move the crosshair to stored (array) voxel ``index`` (of the full-resolution array)."""
        j = [int(v) // self._step for v in index]
        d = self._orient.to_display(j, self._stored_shape)
        with self.hold_sync():
            self.sagittal, self.coronal, self.axial = d

    @property
    def readout(self) -> str:
        """Display voxel, image value and label under the crosshair, then the stored voxel index and the
        world coordinate in mm (exact values, unlike the browser's)."""
        if self._image is None:
            return ""
        i = self.indices
        x, y, z = i["sagittal"], i["coronal"], i["axial"]
        text = f"voxel ({x}, {y}, {z})  value {float(self._image[x, y, z]):.4g}"
        if self._labelvol is not None:
            lab = int(self._labelvol[x, y, z])
            text += f"  ·  {self._table.name(lab)} ({lab})"
        si = self.stored_index
        w = self.world
        text += (f"  ·  stored ({si[0]}, {si[1]}, {si[2]})  ·  "
                 f"{'world' if self._shown_affine is not None else 'voxel units'} "
                 f"({w[0]:.1f}, {w[1]:.1f}, {w[2]:.1f}){' mm' if self._shown_affine is not None else ''}")
        return text

    @property
    def rendered(self) -> dict[str, np.ndarray]:
        """The planes as the PNG fallback draws them (``plane -> H x W x 3 uint8``), at the current state."""
        if self._image is None:
            return {}
        vol = self._image
        planes = ("axial",) if vol.shape[2] == 1 else slicing.PLANES
        colours = {int(k): tuple(v) for k, v in self._label_colors.items()}
        return slicing.render_planes(vol, self.indices, planes=planes, labels=self._labelvol,
                                     colours=colours, hidden=list(self.hidden_labels),
                                     opacity=float(self.opacity), cmap=self.cmap, vmin=self.window[0],
                                     vmax=self.window[1], show_crosshair=bool(self.crosshair) and vol.shape[2] > 1)

    def render(self) -> dict[str, np.ndarray]:
        """Same as :attr:`rendered` (kept for code that called it to repaint; the browser repaints by itself)."""
        return self.rendered

    def to_png(self) -> bytes:
        """A PNG of the planes side by side (the static fallback)."""
        return slicing.encode_png(slicing.montage(list(self.rendered.values())), scale=2)

    def state(self, max_voxels: Optional[int] = None) -> dict[str, Any]:
        """The synced state the browser module reads, with binary traits base64-encoded (for :meth:`to_html`).

        ``max_voxels`` strides the volume further down to keep a page small.
        """
        names = [n for n in self.trait_names(sync=True) if not n.startswith("_model") and not n.startswith("_view")
                 and n not in ("_esm", "_css", "_anywidget_id", "layout", "tabbable", "tooltip", "_dom_classes",
                               "keys", "comm", "log")]
        out: dict[str, Any] = {}
        for n in names:
            value = getattr(self, n)
            if isinstance(value, (bytes, bytearray, memoryview)):
                continue
            try:
                json.dumps(value)
            except TypeError:
                continue
            out[n] = value
        vol, lab = self._image, self._labelvol
        if vol is None:
            out["_volume"] = out["_labels"] = ""
            return out
        step = 1
        if max_voxels is not None:
            vol, step = slicing.downsample(vol, max_voxels)
            lab = lab[::step, ::step, ::step] if (lab is not None and step > 1) else lab
        if step > 1:
            out["shape"] = [int(n) for n in vol.shape]
            out["spacing"] = [s * step for s in self.spacing]
            for p in slicing.PLANES:
                out[p] = int(getattr(self, p)) // step
            out["_to_stored"] = {**self._to_stored, "dstep": int(step)}  # display voxel i is i * dstep shown
            q = ((vol.astype(np.float32) - self._qrange[0]) * (255.0 / (self._qrange[1] - self._qrange[0])))
            out["_volume"] = b64(np.rint(np.clip(np.nan_to_num(q), 0, 255)).astype(np.uint8).tobytes())
        else:
            out["_volume"] = b64(self._volume)
        out["_labels"] = "" if lab is None else b64(_deflate(slicing.label_codes(lab)[0]))
        out["_has_reader"] = False
        out["thumbnails"] = out["follow"] = False  # a page without a kernel cannot open another sample
        return out

    def to_html(self, max_voxels: int = HTML_MAX_VOXELS) -> str:
        """A standalone HTML fragment of this viewer: the same drawing module, its sliders and clicks work
        without a kernel (no network needed).  Volumes above ``max_voxels`` (default 96³, about 1.2 MB of
        page) are strided down; the sample, kind and channel controls show the current choice only.
        """
        return embed.standalone_html(_HERE / "viewer.js", _HERE / "viewer.css", self.state(max_voxels),
                                     ("_volume", "_labels"))

    def __repr__(self) -> str:
        if self._image is None:
            return f"SliceViewer({self.message or 'nothing to show'})"
        where = f"generation {self.generation}, " if self.generation >= 0 else ""
        idx = ", ".join(f"{p}={i}" for p, i in self.indices.items())
        return (f"SliceViewer({where}{self._sample_text(self.sample, ', ')}kind={self.kind!r} "
                f"{tuple(self._image.shape)}, labels={self.label_kind!r}, {idx})")

    def _ipython_display_(self) -> None:
        embed.display(self)  # the widget, then what draws it in an HTML export with stored widget state

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = super()._repr_mimebundle_(**kwargs)
        meta: dict[str, Any] = {}
        if isinstance(data, tuple):
            data, meta = data
        data = dict(data or {})
        data["text/plain"] = repr(self)
        if self._image is not None:
            data["image/png"] = b64(self.to_png())
            data["text/html"] = self.to_html()
        else:
            data["text/html"] = f"<div class='wirehead-viewer'><i>{escape(repr(self))}</i></div>"
        return (data, meta) if meta else data
