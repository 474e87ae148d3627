"""SampleGrid: several samples of a generation side by side, linked, with the generation's QC table.

Every panel shows the same plane at the same slice, with the same crosshair and window; clicking one
moves them all (``grid.js`` draws them in the browser, as the SliceViewer does its planes).  Samples
are shown in their closest canonical orientation and coloured from a label table, as in the
:class:`~wirehead.notebook.SliceViewer`.  ``grid.run_qc()`` (or the *QC* button) measures the read
generation sample by sample in the kernel's refresher thread (:func:`wirehead.qc.qc_steps`) and shows
the table with its flags under the grid.
"""

from __future__ import annotations

import contextlib
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
from ..qc import AFFINE_KIND, GenerationSamples, QCReport, pick_kinds, qc_steps
from . import embed, slicing
from ._widgets import b64, require_ipywidgets, require_traitlets
from .refresher import REFRESHER, adopt

require_ipywidgets()
traitlets = require_traitlets()
import anywidget  # noqa: E402 - after the friendly checks above

__all__ = ["SampleGrid"]

log = logging.getLogger(__name__)
_HERE = Path(__file__).resolve().parent
#: Voxels per panel sent to the browser (larger samples are strided down).
GRID_MAX_VOXELS = 128 ** 3


class SampleGrid(anywidget.AnyWidget):
    """Samples side by side in one plane, linked (slice, crosshair, window), and the generation's QC.

    Build it from one source: ``controller=``, ``config_path=``/``config=`` (plus ``uri=``), or
    ``arrays=`` a list of dicts ``{kind: array}``.

    Args:
        samples: how many samples (the first ones) or which sample indices to show.
        kind, label_kind: image and label kinds (default: guessed as in :func:`wirehead.qc.pick_kinds`).
        label_table, label_names, radiological, affine: as for the SliceViewer.
        plane: ``"axial"``, ``"coronal"`` or ``"sagittal"``.
        size: displayed size of each panel's longest side in pixels.
        max_voxels: per panel; larger samples are strided down (default 128³).

    Traits: ``samples``, ``plane``, ``axial``/``coronal``/``sagittal`` (display terms), ``window``,
    ``opacity``, ``crosshair``, ``hidden_labels``; read-only ``generation``, ``shape``, ``spacing``,
    ``axcodes``, ``message``, ``qc_html``.
    """

    _esm = _HERE / "grid.js"
    _css = _HERE / "viewer.css"

    samples = traitlets.List(traitlets.Int()).tag(sync=True)
    plane = traitlets.Enum(list(slicing.PLANES), default_value="axial").tag(sync=True)
    axial = traitlets.CInt(0).tag(sync=True)
    coronal = traitlets.CInt(0).tag(sync=True)
    sagittal = traitlets.CInt(0).tag(sync=True)
    window = traitlets.List(traitlets.Float(), default_value=[0.0, 1.0], minlen=2, maxlen=2).tag(sync=True)
    opacity = traitlets.CFloat(0.4).tag(sync=True)
    crosshair = traitlets.Bool(True).tag(sync=True)
    size = traitlets.Int(200).tag(sync=True)
    label_names = traitlets.Dict().tag(sync=True)
    hidden_labels = traitlets.List(traitlets.Int()).tag(sync=True)
    generation = traitlets.Int(-1).tag(sync=True)
    n_samples = traitlets.Int(0).tag(sync=True)
    shape = traitlets.List(traitlets.Int(), default_value=[1, 1, 1]).tag(sync=True)
    spacing = traitlets.List(traitlets.Float(), default_value=[1.0, 1.0, 1.0]).tag(sync=True)
    axcodes = traitlets.List(traitlets.Unicode(), default_value=["R", "A", "S"]).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    qc_html = traitlets.Unicode("").tag(sync=True)
    _volumes = traitlets.Bytes(b"").tag(sync=True)
    _labels = traitlets.Bytes(b"").tag(sync=True)
    _label_bits = traitlets.Int(8).tag(sync=True)
    _qranges = traitlets.List().tag(sync=True)
    _shown = traitlets.List(traitlets.Int()).tag(sync=True)
    _label_colors = traitlets.Dict().tag(sync=True)
    _luts = traitlets.Dict().tag(sync=True)
    _qc_clicks = traitlets.Int(0).tag(sync=True)
    _version = traitlets.Int(0).tag(sync=True)

    def __init__(
        self,
        controller: Any = None,
        *,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        config: ConfigSource = None,
        uri: Optional[str] = None,
        arrays: Optional[Sequence[Mapping[str, Any]]] = None,
        samples: Union[int, Sequence[int]] = 4,
        kind: Optional[str] = None,
        label_kind: Optional[str] = None,
        label_table: LabelTableSource = None,
        label_names: Optional[Mapping[int, str]] = None,
        radiological: bool = False,
        affine: Any = None,
        plane: str = "axial",
        opacity: float = 0.4,
        size: int = 200,
        max_voxels: int = GRID_MAX_VOXELS,
    ) -> None:
        given = [controller is not None, arrays is not None, config is not None or config_path is not None]
        if sum(given) != 1:
            raise ValueError("SampleGrid needs exactly one source: controller=..., config_path=/config=..., "
                             "or arrays=[...]")
        if isinstance(samples, int) and samples < 1:
            raise ValueError(f"samples should be a positive count or a list of sample indices, got {samples!r}")
        self._arrays: Optional[list[dict[str, np.ndarray]]] = None
        self._source: Optional[GenerationSamples] = None
        if arrays is not None:
            items = list(arrays)
            if not items or not all(isinstance(a, Mapping) and a for a in items):
                raise ValueError("arrays should be a non-empty list of dicts {kind: array}")
            self._arrays = [{str(k): slicing.to_numpy(v) for k, v in a.items()} for a in items]
        else:
            if controller is not None:
                cfg, uri = controller.config, uri or controller.uri
            else:
                cfg = WireheadConfig.load(config, config_path)
            self._source = GenerationSamples(open_store(cfg, uri), keep=1)
        self._kind, self._label_kind = kind, label_kind
        self._table: LabelTable = load_label_table(label_table).merged(
            {int(k): str(v) for k, v in (label_names or {}).items()})
        self._radiological = bool(radiological)
        self._affine = None if affine is None else np.asarray(slicing.to_numpy(affine), np.float64)
        self._max_voxels = int(max_voxels)
        self._lock = threading.RLock()
        self._display: list[tuple[np.ndarray, Optional[np.ndarray]]] = []  # what the panels show (uint8, labels)
        self.report: Optional[QCReport] = None
        wanted = list(range(samples)) if isinstance(samples, int) else [int(i) for i in samples]
        super().__init__(plane=plane, opacity=float(opacity), size=int(size), samples=wanted,
                         label_names={str(k): v for k, v in self._table.names.items()},
                         _luts={"gray": slicing.colormap_lut("gray").reshape(-1).tolist()})
        self.observe(lambda _: self.refresh(), names=["samples"])
        self.observe(lambda _: self.run_qc(wait=False), names=["_qc_clicks"])
        if controller is not None:
            controller._register_widget(self)
        adopt(self)
        self.refresh()

    # -- data --------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Load the chosen samples (of the newest read generation, for a cache) and send them."""
        with self._lock:
            try:
                self._load()
            except Exception as e:  # noqa: BLE001 - one clear message in the widget
                self.message = str(e) if isinstance(e, (ValueError, LookupError, KeyError)) else \
                    f"{type(e).__name__}: {e}"
                log.info("sample grid: %s", self.message)

    def _sample(self, index: int) -> dict[str, np.ndarray]:
        if self._arrays is not None:
            return self._arrays[index]
        assert self._source is not None and self._source.gen is not None
        return self._source.fetch(self._source.gen.members[index])  # not held: the panels keep uint8 only

    def _load(self) -> None:
        if self._source is not None:
            gen = self._source.refresh()
            if gen is None:
                raise LookupError("waiting for the first swap: the cache has no read generation yet")
            n, g = gen.n, gen.gen
        else:
            n, g = len(self._arrays or []), -1
        shown = [i for i in self.samples if 0 <= i < n]
        if not shown:
            raise ValueError(f"none of samples {list(self.samples)} exists (the generation holds {n})")
        panels: list[tuple[np.ndarray, Optional[np.ndarray], float, float]] = []
        shape = spacing = codes = None
        colours_for: set[int] = set()
        for i in shown:
            arrays = self._sample(i)
            image, label = pick_kinds(arrays, self._kind, self._label_kind)
            vol, _, _ = slicing.spatial(arrays[image])
            full_shape = vol.shape
            vol, step = slicing.downsample(vol, self._max_voxels)
            affine = arrays.get(AFFINE_KIND, self._affine)
            orient = slicing.display_orientation(affine, self._radiological)
            sizes = slicing.voxel_sizes(affine)
            disp = orient.apply(vol)
            q, qlo, qhi = slicing.quantize(disp)
            lab = None
            if label is not None:
                lvol, _, _ = slicing.spatial(arrays[label])
                if lvol.shape == full_shape:
                    lab = np.ascontiguousarray(slicing.label_codes(orient.apply(lvol[::step, ::step, ::step]))[0])
                    colours_for.update(slicing.present_labels(lab))
            del arrays
            if shape is None:
                shape, codes = disp.shape, orient.codes
                spacing = [sizes[a] * step for a in orient.perm]
            elif disp.shape != shape:
                raise ValueError(f"sample {i} has display shape {disp.shape}, sample {shown[0]} {shape}: a grid "
                                 "shows samples of one shape")
            panels.append((np.ascontiguousarray(q), lab, qlo, qhi))
        assert shape is not None and spacing is not None and codes is not None
        bits = 16 if any(p[1] is not None and p[1].dtype == np.uint16 for p in panels) else 8
        labs = [p[1] if p[1] is not None else np.zeros(shape, np.uint8) for p in panels]
        has_labels = any(p[1] is not None for p in panels)
        first = list(self.shape) != [int(s) for s in shape]
        lo = float(np.median([p[2] for p in panels]))
        hi = float(np.median([p[3] for p in panels]))
        with self.hold_sync():
            self._display = [(p[0], p[1]) for p in panels]
            self.set_trait("generation", g)
            self.set_trait("n_samples", n)
            self.shape = [int(s) for s in shape]
            self.spacing = [float(s) for s in spacing]
            self.axcodes = list(codes)
            if first:
                self.sagittal, self.coronal, self.axial = (int(s) // 2 for s in shape)
                self.window = [lo, hi]
            self._volumes = b"".join(p[0].tobytes() for p in panels)
            self._labels = (zlib.compress(b"".join(np.ascontiguousarray(x.astype(np.uint16 if bits == 16 else np.uint8))
                                                   .tobytes() for x in labs), 1) if has_labels else b"")
            self._label_bits = bits
            self._qranges = [[p[2], p[3]] for p in panels]
            self._label_colors = {str(v): list(c) for v, c in self._table.colours_for(colours_for).items()}
            self._shown = shown
            self.message = ""
            self._version += 1

    # -- QC ----------------------------------------------------------------------------------------
    def run_qc(self, wait: bool = True, timeout: float = 600.0, **kwargs: Any) -> Optional[QCReport]:
        """QC of the read generation (see :func:`wirehead.qc.generation_qc`; ``kwargs`` passed on), sample by
        sample in the kernel's refresher thread; the table shows under the grid as it finishes.  With
        ``wait`` returns the report (``None`` if not finished within ``timeout``)."""
        if self._source is None:
            raise ValueError("QC reads a cache's read generation: build the grid from a controller or a config")
        kwargs.setdefault("table", self._table)
        kwargs.setdefault("image", self._kind)
        kwargs.setdefault("label", self._label_kind)
        qc_source = GenerationSamples(self._source.store, keep=1)

        def steps() -> Any:
            self.qc_html = "<i>QC running...</i>"
            work = qc_steps(qc_source, **kwargs)
            while True:
                try:
                    done, total = next(work)
                except StopIteration as end:
                    self.report = end.value
                    self.qc_html = end.value.to_html()
                    return
                except Exception as e:  # noqa: BLE001 - shown in the widget
                    self.qc_html = f"<i>QC failed: {type(e).__name__}: {e}</i>"
                    return
                self.qc_html = f"<i>QC: {done} of {total} samples measured</i>"
                yield done

        self.report = None
        finished = REFRESHER.job(self, "qc", steps())
        if wait:
            finished.wait(timeout)
            return self.report
        return None

    # -- lifecycle ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop the grid's background work (QC)."""
        REFRESHER.cancel(self)

    def close(self) -> None:
        """Stop the background work, close the server connection and the widget."""
        self.stop()
        if self._source is not None:
            with contextlib.suppress(Exception):  # noqa: BLE001 - closing: the server may be gone
                self._source.store.close()
        super().close()

    # -- without a frontend ------------------------------------------------------------------------
    @property
    def rendered(self) -> list[np.ndarray]:
        """Each panel as the browser draws it (``H x W x 3 uint8``; window from the first panel's range)."""
        out = []
        idx = {"axial": self.axial, "coronal": self.coronal, "sagittal": self.sagittal}
        colours = {int(k): tuple(v) for k, v in self._label_colors.items()}
        for (q, lab), (qlo, qhi) in zip(self._display, self._qranges):
            image = qlo + q.astype(np.float32) * ((qhi - qlo) / 255.0)
            out.append(slicing.render_plane(image, self.plane, idx, labels=lab, opacity=float(self.opacity),
                                            colours=colours, hidden=list(self.hidden_labels), vmin=self.window[0],
                                            vmax=self.window[1], show_crosshair=bool(self.crosshair)))
        return out

    def to_html(self) -> str:
        """A standalone HTML fragment of this grid (the same drawing module, no kernel, no network): slice,
        plane, clicks and the legend work; the samples are the ones shown."""
        names = ("samples", "plane", "axial", "coronal", "sagittal", "window", "opacity", "crosshair", "size",
                 "label_names", "hidden_labels", "generation", "n_samples", "shape", "spacing", "axcodes", "message",
                 "qc_html", "_label_bits", "_qranges", "_shown", "_label_colors", "_luts", "_version")
        state: dict[str, Any] = {n: getattr(self, n) for n in names}
        state["_volumes"], state["_labels"] = b64(self._volumes), b64(self._labels)
        return embed.standalone_html(_HERE / "grid.js", _HERE / "viewer.css", state, ("_volumes", "_labels"))

    def __repr__(self) -> str:
        where = f"generation {self.generation}, " if self.generation >= 0 else ""
        return f"SampleGrid({where}samples {list(self._shown)}, {self.plane}, shape {tuple(self.shape)})"

    def _ipython_display_(self) -> None:
        embed.display(self)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = super()._repr_mimebundle_(**kwargs)
        meta: dict[str, Any] = {}
        if isinstance(data, tuple):
            data, meta = data
        data = dict(data or {})
        data["text/plain"] = repr(self) + (("\n" + self.report.format_text()) if self.report else "")
        if self._display:
            data["image/png"] = b64(slicing.encode_png(slicing.montage(self.rendered), scale=1))
            data["text/html"] = self.to_html()
        return (data, meta) if meta else data
