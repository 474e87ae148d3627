"""SliceViewer: axial, coronal and sagittal slices of a sample, with a label overlay and a crosshair.

State lives in traitlets (sample, kind, label kind, slice indices, channel, opacity, colormap)
with ``observe`` reactions, as in ipympl.  Pixels are made by the pure-numpy functions of
:mod:`wirehead.notebook.slicing` (only the visible slices are read, so 256³ volumes stay
responsive) and travel to the browser as PNG bytes in ``ipywidgets.Image`` buffers.  The last
rendered planes are kept in :attr:`SliceViewer.rendered` (``plane -> H x W x 3 uint8``); the
static fallback (nbconvert, consoles) is a PNG montage of the same arrays.

Samples come from the cache's read generation through :class:`~wirehead.reader.Reader` (with a
controller, a config or a config path), or from arrays given directly.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ..config import ConfigSource, WireheadConfig
from . import slicing
from ._widgets import b64, escape, require_ipywidgets, require_traitlets

widgets = require_ipywidgets()
traitlets = require_traitlets()

__all__ = ["SliceViewer"]

log = logging.getLogger(__name__)

_NO_LABEL = "(none)"


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _is_label(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iub"


class SliceViewer(widgets.VBox):
    """Planes of one sample side by side, with slice sliders, a crosshair and a label overlay.

    Build it from one source:

    * ``controller=`` a :class:`~wirehead.notebook.WireheadController` (or ``controller.viewer()``),
    * ``config_path=`` / ``config=`` (plus optional ``uri=``): samples of that cache's read generation,
    * ``arrays=`` a dict ``{kind: array}`` (one sample) or a list of such dicts.

    Args:
        kind: the kind shown as the image (default: the first kind that is not a label map).
        label_kind: the kind overlaid as labels, or ``None`` (default: ``"label"`` if present, else
            the first integer kind other than ``kind``).
        cmap: the image colormap, one of :data:`wirehead.notebook.slicing.COLORMAPS`.
        opacity: of the label overlay, in [0, 1].
        size: displayed width of each plane in pixels.
        timeout: seconds to wait for a read generation when reading from the cache.

    Traits (set them or move the sliders): ``sample``, ``kind``, ``label_kind``, ``axial``,
    ``coronal``, ``sagittal``, ``channel``, ``opacity``, ``cmap``, ``crosshair``; read-only:
    ``generation`` (the read generation shown, or -1 for arrays).
    """

    sample = traitlets.CInt(0)
    kind = traitlets.Unicode("")
    label_kind = traitlets.Unicode(_NO_LABEL, allow_none=True)
    axial = traitlets.CInt(0)
    coronal = traitlets.CInt(0)
    sagittal = traitlets.CInt(0)
    channel = traitlets.CInt(0)
    opacity = traitlets.CFloat(0.4)
    cmap = traitlets.Enum(list(slicing.COLORMAPS), default_value="gray")
    crosshair = traitlets.Bool(True)
    generation = traitlets.Int(-1, read_only=True)

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
        cmap: str = "gray",
        opacity: float = 0.4,
        size: int = 240,
        timeout: float = 10.0,
    ) -> None:
        given = [x is not None for x in (controller, arrays)] + [config is not None or config_path is not None]
        if sum(given) != 1:
            raise ValueError("SliceViewer needs exactly one source: controller=..., config_path=/config=..., "
                             "or arrays=...")
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity should be in [0, 1], but got opacity={opacity!r}")
        self._reader: Any = None
        self.config: Optional[WireheadConfig] = None
        self._samples: Optional[list[dict[str, np.ndarray]]] = None
        if arrays is not None:
            items = [arrays] if isinstance(arrays, Mapping) else list(arrays)
            if not items or not all(isinstance(a, Mapping) and a for a in items):
                raise ValueError("arrays should be a dict {kind: array} or a non-empty list of such dicts")
            self._samples = [{str(k): _to_numpy(v) for k, v in a.items()} for a in items]
            kinds = list(self._samples[0])
        else:
            from ..reader import Reader
            from ..store import Store

            if controller is not None:
                cfg, uri = controller.config, uri or controller.uri
            else:
                cfg = WireheadConfig.load(config, config_path)
            self.config = cfg
            self._reader = Reader(Store(cfg, uri=uri), timeout=timeout)
            kinds = list(cfg.sample)
        self._kinds = kinds
        self._size = int(size)
        self._cache: dict[int, dict[str, np.ndarray]] = {}
        self._volume: Optional[np.ndarray] = None
        self._labels: Optional[np.ndarray] = None
        self._n_samples = len(self._samples) if self._samples is not None else 0
        self.rendered: dict[str, np.ndarray] = {}
        self.message = ""

        # -- controls ---------------------------------------------------------------------------
        self.sample_slider = widgets.IntSlider(0, 0, 0, description="sample", continuous_update=False)
        self.kind_dropdown = widgets.Dropdown(options=kinds, description="image")
        self.label_dropdown = widgets.Dropdown(options=[_NO_LABEL, *kinds], description="labels")
        self.cmap_dropdown = widgets.Dropdown(options=list(slicing.COLORMAPS), value=cmap, description="colormap")
        self.opacity_slider = widgets.FloatSlider(opacity, min=0.0, max=1.0, step=0.05, description="opacity")
        self.channel_slider = widgets.IntSlider(0, 0, 0, description="channel",
                                                layout=widgets.Layout(display="none"))
        self.refresh_button = widgets.Button(description="newest generation", icon="refresh",
                                             layout=widgets.Layout(display="none" if self._reader is None else ""))
        self.info = widgets.HTML()
        self.plane_sliders = {p: widgets.IntSlider(0, 0, 0, description=p, layout=widgets.Layout(width=f"{size}px"))
                              for p in (*slicing.PLANES, "2d")}
        self.plane_images = {p: widgets.Image(format="png", layout=widgets.Layout(width=f"{size}px"))
                             for p in (*slicing.PLANES, "2d")}
        self.planes_box = widgets.HBox()
        for name, control in (("sample", self.sample_slider), ("kind", self.kind_dropdown),
                              ("cmap", self.cmap_dropdown), ("opacity", self.opacity_slider),
                              ("channel", self.channel_slider)):
            widgets.link((control, "value"), (self, name))
        for p in slicing.PLANES:
            widgets.link((self.plane_sliders[p], "value"), (self, p))
        widgets.link((self.label_dropdown, "value"), (self, "label_kind"))
        self.refresh_button.on_click(lambda _: self.refresh())
        super().__init__(children=[
            widgets.HBox([self.sample_slider, self.refresh_button, self.info]),
            widgets.HBox([self.kind_dropdown, self.label_dropdown]),
            widgets.HBox([self.cmap_dropdown, self.opacity_slider, self.channel_slider]),
            self.planes_box,
        ])
        # stable hooks for styling and for the browser test (tests/ui)
        self.add_class("wirehead-viewer")
        for p in self.plane_images:
            self.plane_images[p].add_class(f"wirehead-plane-{p}")
            self.plane_sliders[p].add_class(f"wirehead-slider-{p}")

        # -- initial state (observers are connected below, so this renders once) -----------------
        self._quiet = True
        self.cmap = cmap
        self.opacity = opacity
        self.kind = kind if kind is not None else self._default_kind()
        self.label_kind = label_kind if label_kind is not None else self._default_label_kind()
        self._quiet = False
        self.observe(self._on_source, names=["sample", "kind", "label_kind", "channel"])
        self.observe(self._on_view, names=["axial", "coronal", "sagittal", "opacity", "cmap", "crosshair"])
        if self._reader is not None:
            self.refresh()
        else:
            self._load()

    # -- choosing defaults -------------------------------------------------------------------------
    def _first_sample(self) -> Optional[dict[str, np.ndarray]]:
        if self._samples is not None:
            return self._samples[0]
        return None

    def _default_kind(self) -> str:
        first = self._first_sample()
        for k in self._kinds:
            if k != "label" and (first is None or not _is_label(first[k])):
                return k
        return self._kinds[0]

    def _default_label_kind(self) -> str:
        if "label" in self._kinds and self.kind != "label":
            return "label"
        first = self._first_sample()
        if first is not None:
            for k in self._kinds:
                if k != self.kind and _is_label(first[k]) and first[k].shape == first[self.kind].shape:
                    return k
        return _NO_LABEL

    @traitlets.validate("kind")
    def _valid_kind(self, proposal: Any) -> str:
        if proposal["value"] not in self._kinds:
            raise traitlets.TraitError(f"kind should be one of {self._kinds}, but got {proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("label_kind")
    def _valid_label_kind(self, proposal: Any) -> str:
        value = proposal["value"] or _NO_LABEL
        if value != _NO_LABEL and value not in self._kinds:
            raise traitlets.TraitError(f"label_kind should be one of {self._kinds} or None, got {value!r}")
        return value

    @traitlets.validate("opacity")
    def _valid_opacity(self, proposal: Any) -> float:
        return float(min(1.0, max(0.0, proposal["value"])))

    # -- data --------------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        """Samples available (of the read generation, or given as arrays)."""
        return self._n_samples

    def refresh(self) -> None:
        """Follow the newest read generation of the cache (arrays: just render again)."""
        if self._reader is not None:
            try:
                gen = self._reader.current(force=True)
            except Exception as e:  # noqa: BLE001 - shown in the widget
                self._show_message(f"no samples to show yet: {type(e).__name__}: {e}")
                return
            if gen.gen != self.generation:
                self._cache.clear()
                self.set_trait("generation", gen.gen)
            self._n_samples = gen.n
        self._load()

    def _sample_arrays(self, index: int) -> dict[str, np.ndarray]:
        if self._samples is not None:
            return self._samples[index]
        if index not in self._cache:
            (arrays,) = self._reader.get([index])
            if len(self._cache) > 8:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = {k: _to_numpy(v) for k, v in arrays.items()}
        return self._cache[index]

    def _on_source(self, change: Any) -> None:
        if change["name"] == "label_kind" and change["new"] is None:  # None skips validation: normalise
            self.label_kind = _NO_LABEL
            return
        if not self._quiet:
            self._load()

    def _on_view(self, change: Any) -> None:
        if not self._quiet:
            self.render()

    def _load(self) -> None:
        """Fetch the chosen sample, pick the volumes, set slider ranges, render."""
        if self._n_samples == 0:
            self._show_message("no samples to show yet")
            return
        self.sample_slider.max = max(0, self._n_samples - 1)
        index = min(max(0, self.sample), self._n_samples - 1)
        try:
            arrays = self._sample_arrays(index)
        except Exception as e:  # noqa: BLE001
            self._show_message(f"could not read sample {index}: {type(e).__name__}: {e}")
            return
        raw = arrays[self.kind]
        is4d = raw.ndim == 4
        self.channel_slider.layout.display = "" if is4d else "none"
        if is4d:
            self.channel_slider.max = raw.shape[0] - 1
        volume = slicing.as_volume(raw, self.channel if is4d else 0)
        labels = None
        if self.label_kind != _NO_LABEL and self.label_kind != self.kind:
            lab = arrays[self.label_kind]
            lab = slicing.as_volume(lab, min(self.channel, lab.shape[0] - 1) if lab.ndim == 4 else 0)
            if lab.shape == volume.shape:
                labels = lab
            else:
                log.info("label kind %r %s does not match image %r %s; not overlaid", self.label_kind,
                         lab.shape, self.kind, volume.shape)
        first = self._volume is None or self._volume.shape != volume.shape
        self._volume, self._labels = volume, labels
        self._quiet = True
        try:
            planes = slicing.planes_for(volume.ndim)
            for p in slicing.PLANES:
                if volume.ndim == 3:
                    n = volume.shape[slicing.PLANE_AXIS[p]]
                    self.plane_sliders[p].max = n - 1
                    if first:
                        setattr(self, p, n // 2)
            self.planes_box.children = [widgets.VBox([self.plane_images[p], self.plane_sliders[p]])
                                        if p != "2d" else self.plane_images[p] for p in planes]
        finally:
            self._quiet = False
        where = f"generation {self.generation}, " if self.generation >= 0 else ""
        self.info.value = (f"{where}sample {index} of {self._n_samples}; {escape(self.kind)} "
                           f"{raw.dtype} {tuple(raw.shape)}")
        self.render()

    def _show_message(self, text: str) -> None:
        self.message = text
        self.info.value = f"<i>{escape(text)}</i>"

    # -- rendering ---------------------------------------------------------------------------------
    @property
    def indices(self) -> dict[str, int]:
        """The slice index of each plane."""
        return {p: int(getattr(self, p)) for p in slicing.PLANES}

    def render(self) -> dict[str, np.ndarray]:
        """Render the visible planes from the current state; return (and keep in :attr:`rendered`) their RGB arrays."""
        if self._volume is None:
            return {}
        self.rendered = slicing.render_planes(
            self._volume, self.indices, labels=self._labels, opacity=float(self.opacity), cmap=self.cmap,
            show_crosshair=bool(self.crosshair))
        for p, rgb in self.rendered.items():
            self.plane_images[p].value = slicing.encode_png(rgb)
        return self.rendered

    def to_png(self) -> bytes:
        """A PNG of the rendered planes side by side (the static fallback)."""
        if not self.rendered:
            self.render()
        return slicing.encode_png(slicing.montage(list(self.rendered.values())), scale=2)

    def __repr__(self) -> str:
        if self._volume is None:
            return f"SliceViewer({self.message or 'nothing to show'})"
        where = f"generation {self.generation}, " if self.generation >= 0 else ""
        idx = ", ".join(f"{p}={i}" for p, i in self.indices.items()) if self._volume.ndim == 3 else "2-D"
        return (f"SliceViewer({where}sample {self.sample}/{self._n_samples}, kind={self.kind!r} "
                f"{tuple(self._volume.shape)}, labels={self.label_kind!r}, {idx})")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        data = super()._repr_mimebundle_(**kwargs) or {}
        data["text/plain"] = repr(self)
        if self._volume is not None:
            png = b64(self.to_png())
            data["image/png"] = png
            data["text/html"] = (f"<div><div style='font-family:sans-serif;font-size:12px'>{escape(repr(self))}"
                                 f"</div><img src='data:image/png;base64,{png}'/></div>")
        return data
