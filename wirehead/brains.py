"""A SynthSeg-style brain generator on real anatomy (the ``brains`` extra).

The anatomy is the ICBM 2009a nonlinear symmetric MNI152 template that nilearn ships inside its wheel
(T1 template plus grey- and white-matter probability maps, 1 mm, 197x233x189), so nothing is
downloaded.  :func:`anatomy` turns it once into a label map (see :data:`LABELS`) and caches it under
the wirehead home (``$WIREHEAD_HOME/brains``).  :func:`brain_generator` then makes samples the
SynthSeg way with a field library:

* ``backend="torchio"`` (the default; CPU): TorchIO's ``RandomAffine`` + ``RandomElasticDeformation``
  of the label map (nearest neighbour), ``RandomLabelsToImage`` (a Gaussian mixture: a random mean
  and spread per label), ``RandomBiasField``, ``RandomBlur`` (resolution loss), ``RandomNoise``,
  a rescale to ``[0, 1]`` and ``RandomGamma``.
* ``backend="cornucopia"`` (pure torch, runs on a CUDA device; the default for ``device="cuda"``):
  cornucopia's ``SynthFromLabelTransform`` (affine + elastic, GMM, bias, gamma, resolution loss,
  noise), then a rescale to ``[0, 1]``.

Each sample is ``(image float32 in [0, 1], label uint8, affine float64 4x4)`` (or without the
affine), padded or cropped around the template's centre to the requested ``shape``; the affine maps
voxel indices of that grid to MNI millimetres.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from ._lazy import installed, missing, require
from .labels import LabelTable
from .server import wirehead_home

__all__ = ["LABELS", "LABEL_TABLE", "T1_ORDER", "anatomy", "brain_sample", "brain_generator", "available"]

log = logging.getLogger("wirehead.brains")

#: Label values of the brain generator's label maps and their names (a legend for viewers).
LABELS: dict[int, str] = {0: "background", 1: "CSF", 2: "grey matter", 3: "white matter"}
#: Names and colours of :data:`LABELS` (grey and white matter in FreeSurfer's LUT colours of the cerebral
#: cortex and white matter; CSF in a blue that reads on a dark image), for viewers and QC:
#: ``SliceViewer(..., label_table=LABEL_TABLE)``, ``wirehead qc --labels brains``.  The QC flags a sample
#: in which one of these labels (other than the background) is empty.
LABEL_TABLE = LabelTable(names=dict(LABELS), colours={1: (70, 130, 230), 2: (205, 62, 78), 3: (245, 245, 245)},
                         source="wirehead.brains")

_CACHE_VERSION = 1
_BACKENDS = ("torchio", "cornucopia")


_NEEDS = ("nilearn", "nibabel", "scipy")


def available(backend: str = "torchio") -> bool:
    """True when the ``brains`` extra is installed (nilearn, nibabel and the given backend)."""
    return installed(*_NEEDS, backend)


def _cache_dir() -> Path:
    return wirehead_home() / "brains"


def _derive_1mm() -> tuple[np.ndarray, np.ndarray]:
    """Tissue probabilities ``(4, X, Y, Z)`` in :data:`LABELS` order and the template's affine."""
    datasets = require("nilearn.datasets", "the brain generator")
    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    # nilearn's template is skull-stripped: the brain is where the T1 is non-zero.  Inside it, what is
    # neither grey nor white matter is CSF (ventricles, sulci, cisterns).
    inside = (t1.get_fdata(dtype=np.float32) > 0).astype(np.float32)
    gm *= inside
    wm *= inside
    csf = np.clip(inside - gm - wm, 0.0, 1.0)
    probs = np.stack([1.0 - inside, csf, gm, wm]).astype(np.float32)
    return probs, np.asarray(t1.affine, dtype=np.float64)


def anatomy(resolution_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The MNI152 2009 label map at ``resolution_mm`` and its affine (voxel -> MNI mm).

    Derived once from nilearn's bundled template (tissue probabilities averaged over each coarser
    voxel, then the most probable label) and cached as ``.npz`` under ``$WIREHEAD_HOME/brains``.

    Raises:
        ValueError: for a resolution outside 0.5..8 mm.
        ImportError: without the ``brains`` extra (nilearn).
    """
    res = float(resolution_mm)
    if not 0.5 <= res <= 8.0:
        raise ValueError(f"resolution_mm should be between 0.5 and 8, but got resolution_mm={resolution_mm!r}")
    path = _cache_dir() / f"mni152_2009_labels_v{_CACHE_VERSION}_{res:g}mm.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return z["label"], z["affine"]
        except Exception as e:  # noqa: BLE001 - a torn or foreign file: derive again
            log.warning("brain anatomy cache %s unreadable (%s); deriving it again", path, e)
    probs, affine = _derive_1mm()
    if res != 1.0:
        n = np.array(probs.shape[1:])
        m = np.maximum(np.round(n / res).astype(int), 1)
        t = torch.nn.functional.interpolate(torch.from_numpy(probs)[None], size=tuple(int(x) for x in m),
                                            mode="area" if res > 1 else "trilinear")
        probs = t[0].numpy()
        scale = n / m  # 1 mm voxels per new voxel, per axis
        resample = np.eye(4)
        resample[:3, :3] = np.diag(scale)
        resample[:3, 3] = (scale - 1.0) / 2.0  # centre of the first new voxel, in old voxels
        affine = affine @ resample
    label = np.argmax(probs, axis=0).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, label=label, affine=affine)
    os.replace(tmp, path)
    log.info("derived the MNI152 2009 label map at %g mm into %s", res, path)
    return label, affine


def _fit(label: np.ndarray, affine: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Pad (background) or crop ``label`` around its centre to ``shape``; shift the affine to match."""
    out = np.zeros(shape, dtype=label.dtype)
    src, dst = [], []
    offset = np.zeros(3)
    for n, m in zip(label.shape, shape):
        off = (n - m) // 2  # output voxel j is input voxel j + off
        offset[len(src)] = off
        lo, hi = max(off, 0), min(off + m, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - off, hi - off))
    out[tuple(dst)] = label[tuple(src)]
    shift = np.eye(4)
    shift[:3, 3] = offset
    return out, affine @ shift


def _check(shape: Any, device: str, backend: Optional[str]) -> tuple[tuple[int, int, int], str, str]:
    try:
        shape_t = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"shape should be 3 ints, but got shape={shape!r}") from None
    if len(shape_t) != 3 or min(shape_t) < 8:
        raise ValueError(f"shape should be 3 ints >= 8, but got shape={shape!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but torch sees no CUDA device here; "
                         "use device='cpu' (the default)")
    if backend is None:
        backend = "cornucopia" if dev.type != "cpu" else "torchio"
    if backend not in _BACKENDS:
        raise ValueError(f"backend should be one of {_BACKENDS}, but got backend={backend!r}")
    if backend == "torchio" and dev.type != "cpu":
        raise ValueError("backend='torchio' runs on the CPU only; use backend='cornucopia' for "
                         f"device={device!r}")
    absent = [n for n in (*_NEEDS, backend) if not installed(n)]
    if absent:
        raise missing(absent[0], "the brain generator")
    return shape_t, str(dev), backend


#: The range of the tissue means (SynthSeg's uniform prior), and of their spreads, in the torchio backend.
_MEAN_RANGE, _STD_RANGE = (0.05, 0.95), (0.01, 0.06)
#: Label values from darkest to brightest in a T1-weighted scan (skull-stripped: the background is darkest).
T1_ORDER = (0, 1, 2, 3)


def _paint(means: Optional[Sequence[float]] = None) -> Any:
    """The pipeline's step that paints the tissues; ``means`` (one per label value) fixes their means, else
    each is drawn uniformly from :data:`_MEAN_RANGE`."""
    tio = require("torchio", "the brain generator")

    fixed = {} if means is None else {"mean": [(float(m), float(m)) for m in means]}
    return tio.RandomLabelsToImage(label_key="label", image_key="image", default_mean=_MEAN_RANGE,
                                   default_std=_STD_RANGE, ignore_background=False, **fixed)


def _torchio_pipeline(resolution_mm: float) -> Any:
    """The SynthSeg-style pipeline (the tissue means drawn by :func:`_paint`)."""
    tio = require("torchio", "the brain generator")

    return tio.Compose([
        tio.RandomAffine(scales=0.12, degrees=12, translation=4, image_interpolation="nearest",
                         label_interpolation="nearest", default_pad_value=0),
        tio.RandomElasticDeformation(num_control_points=6, max_displacement=min(8.0, 3.0 * resolution_mm),
                                     locked_borders=2, label_interpolation="nearest"),
        _paint(),
        tio.RandomBiasField(coefficients=0.4, order=3),
        tio.RandomBlur(std=(0.0, 1.0)),
        tio.RandomNoise(std=(0.0, 0.03)),
        tio.RescaleIntensity(out_min_max=(0.0, 1.0)),
        tio.RandomGamma(log_gamma=(-0.3, 0.3)),
    ])


def _cornucopia_pipeline(resolution_mm: float, device: str) -> Any:
    cc = require("cornucopia", "the brain generator on a GPU")

    return cc.SynthFromLabelTransform(patch=None, rotation=12, zooms=0.12, elastic=0.05, elastic_nodes=8,
                                      resolution=max(2.0, 4.0 / resolution_mm), snr=30, bias=5, gamma=0.3,
                                      motion_fwhm=2.0, order=1, device=device)


class _Synth:
    """One configured pipeline: ``synth(seed) -> (image, label, affine)``."""

    def __init__(self, shape: Sequence[int], resolution_mm: float, device: str, backend: Optional[str],
                 t1_fraction: float = 0.0):
        self.shape, self.device, self.backend = _check(shape, device, backend)
        if not 0.0 <= t1_fraction <= 1.0:
            raise ValueError(f"t1_fraction should be between 0 and 1, but got t1_fraction={t1_fraction!r}")
        if t1_fraction and self.backend != "torchio":
            raise ValueError(f"t1_fraction is implemented for backend='torchio' only, but got "
                             f"backend={self.backend!r}; use t1_fraction=0 with cornucopia")
        self.t1_fraction = float(t1_fraction)
        label, affine = anatomy(resolution_mm)
        self.label, self.affine = _fit(label, affine, self.shape)
        self.resolution_mm = float(resolution_mm)
        if self.backend == "torchio":
            self.pipeline = _torchio_pipeline(self.resolution_mm)
        else:
            self.pipeline = _cornucopia_pipeline(self.resolution_mm, self.device)

    def __call__(self, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lab = torch.from_numpy(self.label.astype(np.int64))[None]
        devices = [self.device] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            if self.backend == "torchio":
                tio = require("torchio", "the brain generator")
                pipeline = self.pipeline
                if self.t1_fraction and float(torch.rand(())) < self.t1_fraction:
                    # a T1-like contrast: the same uniform draws of the tissue means, sorted into T1_ORDER
                    drawn = torch.empty(len(T1_ORDER), dtype=torch.float64).uniform_(*_MEAN_RANGE).sort().values
                    means = np.empty(len(T1_ORDER))
                    means[list(T1_ORDER)] = drawn.numpy()
                    # the same pipeline with only its painting step replaced (building it anew costs ~4 ms)
                    pipeline = tio.Compose([_paint(means) if isinstance(t, tio.RandomLabelsToImage) else t
                                            for t in self.pipeline.transforms])
                # label_keys: labels move with nearest neighbour, the image is made from them afterwards
                subject = tio.Subject(label=tio.LabelMap(tensor=lab, affine=self.affine))
                out = pipeline(subject)
                image_t, label_t = out["image"].data[0], out["label"].data[0]
            else:
                out = self.pipeline(lab.to(self.device))
                image_t, label_t = out["image"][0], out["label"][0]
                lo, hi = image_t.min(), image_t.max()
                image_t = (image_t - lo) / torch.clamp(hi - lo, min=1e-6)
        image = image_t.detach().to("cpu", torch.float32).numpy()
        label = label_t.detach().to("cpu").numpy().astype(np.uint8)
        return np.ascontiguousarray(image), np.ascontiguousarray(label), self.affine.copy()


def brain_sample(shape: Sequence[int] = (96, 112, 96), resolution_mm: float = 2.0, device: str = "cpu",
                 seed: Optional[int] = None, backend: Optional[str] = None, t1_fraction: float = 0.0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One ``(image, label, affine)`` brain; see :func:`brain_generator`."""
    synth = _Synth(shape, resolution_mm, device, backend, t1_fraction)
    return synth(int(np.random.SeedSequence(seed).generate_state(1)[0]))


def brain_generator(shape: Sequence[int] = (96, 112, 96), resolution_mm: float = 2.0, device: str = "cpu",
                    seed: Optional[int] = None, n: Optional[int] = None, affine: bool = True,
                    backend: Optional[str] = None, rank: int = 0, delay: float = 0.0, t1_fraction: float = 0.0
                    ) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield SynthSeg-style brains ``(image, label, affine)`` forever, or ``n`` of them.

    Args:
        shape: output grid (3 ints >= 8); the anatomy is padded with background or cropped around
            the template's centre to fit, e.g. ``(256, 256, 256)`` at 1 mm.
        resolution_mm: isotropic voxel size of the anatomy and the output grid.
        device: ``"cpu"`` or a CUDA device (needs torch with CUDA; refused with a clear
            ``ValueError`` when torch sees none).
        seed: samples come from ``numpy.random.SeedSequence((seed, rank))``: the same seed repeats the
            sequence, different seeds (or ranks) differ; ``None`` draws fresh entropy.
        n: number of samples, ``None`` for endless.
        affine: yield the 4x4 float64 voxel-to-MNI-mm affine as a third element (for
            ``SAMPLE: [image, label, affine]``); ``False`` yields ``(image, label)``.
        backend: ``"torchio"`` (CPU, the default there) or ``"cornucopia"`` (default for CUDA).
        rank: mixed into the seed, so generator processes started with ``rank=`` differ.
        delay: extra seconds of sleep per sample (to imitate a slower generator).
        t1_fraction: the fraction of samples (drawn at random) whose tissue means are sorted into a T1-weighted
            scan's order (:data:`T1_ORDER`: background < CSF < grey < white matter); the rest keep SynthSeg's
            uniform prior, in which each tissue's mean is drawn independently (so a T1-like ordering is one of
            24).  0, the default, is the uniform prior only.  torchio backend only.

    The image is float32 in ``[0, 1]``, the label uint8 with values in :data:`LABELS`.

    Raises:
        ValueError: bad ``shape``, ``resolution_mm``, ``n``, ``backend``, ``t1_fraction`` or an absent CUDA device
            (at construction, before the first sample).
        ImportError: without the ``brains`` extra.
    """
    if n is not None and (not isinstance(n, (int, np.integer)) or n < 0):
        raise ValueError(f"n should be None or an int >= 0, but got n={n!r}")
    if not delay >= 0:
        raise ValueError(f"delay should be a number of seconds >= 0, but got delay={delay!r}")
    synth = _Synth(shape, resolution_mm, device, backend, t1_fraction)
    root = np.random.SeedSequence(None if seed is None else (int(seed), int(rank)))
    return _run(synth, root, n, affine, float(delay))


def _run(synth: _Synth, root: np.random.SeedSequence, n: Optional[int], affine: bool, delay: float
         ) -> Iterator[tuple[np.ndarray, ...]]:
    count = 0
    while n is None or count < n:
        if delay:
            time.sleep(delay)
        (child,) = root.spawn(1)
        image, label, aff = synth(int(child.generate_state(1)[0]))
        yield (image, label, aff) if affine else (image, label)
        count += 1
