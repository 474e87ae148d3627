"""Looking at a read generation without training on it: one sample at a time, and its QC.

:class:`GenerationSamples` reads samples of the read generation one at a time straight from the
store: no prefetch of the generation, no reader cache, and no read count (viewing is not training:
the dashboard's reads per sample stay the trainers').  It holds at most ``keep`` decoded samples.

:func:`sample_qc` measures one sample (per-label volume in mL and mean intensity, NaN/inf and constant
image checks); :func:`generation_qc` does it sample by sample (memory: one sample at a time) and then
flags what a synthesis bug produces: NaN or infinite values, an expected label that is empty, a
constant image, label volumes far from the generation's (a robust z-score over the samples).  The
notebook's QC table and ``wirehead qc --json`` print the same :class:`QCReport`.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, TypeVar

import numpy as np

from .chunks import StreamDecoder
from .labels import LabelTable
from .notebook.slicing import is_label_like, spatial, to_numpy  # pure numpy: no notebook extra needed
from .store import GenDoc, Store

__all__ = ["AFFINE_KIND", "SampleGone", "read_sample", "GenerationSamples", "SampleQC", "QCReport", "sample_qc",
           "generation_qc", "voxel_volume_mm3", "pick_kinds", "OUTLIER_Z",
           "MAX_EXPECTED_FROM_TABLE", "flag_generation", "qc_steps"]

log = logging.getLogger(__name__)
T = TypeVar("T")

AFFINE_KIND = "affine"
#: A label volume this many robust standard deviations (1.4826 x MAD) from the generation's median is flagged.
OUTLIER_Z = 5.0
#: A label table of at most this many labels says which labels every sample should hold (a whole
#: FreeSurfer LUT lists far more than any one label map holds, and does not).
MAX_EXPECTED_FROM_TABLE = 64


class SampleGone(LookupError):
    """The sample was deleted: its generation was retired and its grace period (``GRACE_SECONDS``) is over."""


def read_sample(store: Store, sid: str) -> dict[str, Any]:
    """Sample ``sid`` of any generation, read from the store chunk by chunk and decoded as the chunks come
    (:meth:`Store.sample_chunks` into a :class:`~wirehead.chunks.StreamDecoder`): in memory once, plus one
    chunk, never joined.  Not counted as a training read.  Kinds come back as stored (as
    :func:`wirehead.chunks.decode` gives them: numpy arrays, torch tensors for kinds written as tensors).
    The one read of a sample outside training: the viewer, the grid, QC and ``wirehead export``.

    Raises:
        SampleGone: the sample is gone, or incomplete (its retired generation is being deleted).
        ValueError: the stored sample cannot be decoded (``"corrupt sample: ..."``).
    """
    decoder: Optional[StreamDecoder] = None
    nchunks = got = 0
    for doc in store.sample_chunks(sid):
        if decoder is None:
            nchunks = doc.get("nchunks")
            decoder = StreamDecoder(doc.get("meta"), doc.get("stored_bytes"))
        data = doc.pop("data", b"")
        if decoder.fed + len(data) > decoder.total:
            break  # more bytes than the manifest says: treated below as a sample that is not whole
        decoder.feed(data)
        got += 1
        del doc, data  # one chunk's bytes at a time
    if decoder is None:
        raise SampleGone(f"sample {sid} is gone (its generation was retired and deleted)")
    if got != nchunks or decoder.fed != decoder.total:
        # a committed sample loses chunks only while its retired generation is being deleted
        raise SampleGone(f"sample {sid} is incomplete ({got} of {nchunks} chunks, {decoder.fed} of "
                         f"{decoder.total} bytes): its generation is being deleted")
    return decoder.finish()


class GenerationSamples:
    """Samples of a cache's read generation, read one at a time, never counted as training reads.

    Thread-safe.  ``keep``: how many decoded samples are held (least recently used dropped first); a read
    through :meth:`get` or :meth:`look` makes room before it starts and reads run one at a time, so at
    most ``keep`` decoded samples exist through this object, the one being read included.  The
    generation is the one read by :meth:`refresh` (it changes only then), so a sample index keeps
    meaning the same sample while it is shown.
    """

    def __init__(self, store: Store, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError(f"keep should be >= 1, but got keep={keep!r}")
        self.store = store
        self.keep = int(keep)
        self.gen: Optional[GenDoc] = None
        self._held: "collections.OrderedDict[tuple[int, int], dict[str, np.ndarray]]" = collections.OrderedDict()
        self._lock = threading.Lock()  # the held samples and the generation
        self._reading = threading.Lock()  # one read at a time (interactive and background)

    def refresh(self) -> Optional[GenDoc]:
        """Re-read which generation is the read generation; ``None`` before the first swap."""
        state = self.store.state()
        doc = self.store.gen_doc(state.read_gen) if state.read_gen is not None else None
        with self._lock:
            if doc is not None and (self.gen is None or doc.gen != self.gen.gen):
                self._held.clear()
            self.gen = doc if doc is not None else self.gen
            return self.gen

    def __len__(self) -> int:
        return 0 if self.gen is None else self.gen.n

    @property
    def held(self) -> int:
        """How many decoded samples are held now."""
        with self._lock:
            return len(self._held)

    def _key(self, index: int, gen: Optional[GenDoc]) -> tuple[GenDoc, tuple[int, int]]:
        gen = gen or self.gen or self.refresh()
        if gen is None:
            raise LookupError("the cache has no read generation yet (no swap so far)")
        if not 0 <= index < gen.n:
            raise LookupError(f"sample index {index} is out of range: generation {gen.gen} holds {gen.n}")
        return gen, (gen.gen, int(index))

    def _held_or_room(self, key: tuple[int, int]) -> Optional[dict[str, np.ndarray]]:
        """The held sample ``key`` (now the most recently used), or ``None`` after dropping the least recently
        used ones until there is room for one more."""
        with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
                return self._held[key]
            while len(self._held) >= self.keep:
                self._held.popitem(last=False)
            return None

    def get(self, index: int, gen: Optional[GenDoc] = None) -> dict[str, np.ndarray]:
        """Sample ``index`` of ``gen`` (default: the generation of the last :meth:`refresh`) as numpy arrays,
        held for the next calls.

        Raises:
            LookupError: no read generation yet, or ``index`` out of range;
                :class:`SampleGone` when the sample is gone (a retired generation's samples are deleted after its
                grace period: :meth:`refresh` moves to the read generation).
            ValueError: the stored sample cannot be decoded.
        """
        gen, key = self._key(index, gen)
        with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
                return self._held[key]
        with self._reading:
            arrays = self._held_or_room(key)
            if arrays is None:
                arrays = self.fetch(gen.members[index])
                with self._lock:
                    self._held[key] = arrays
                    while len(self._held) > self.keep:
                        self._held.popitem(last=False)
            return arrays

    def look(self, index: int, fn: Callable[[dict[str, np.ndarray]], T], gen: Optional[GenDoc] = None) -> T:
        """``fn(arrays)`` of sample ``index`` of ``gen`` (default: as :meth:`get`), without holding it after:
        a held sample is used as it is; another is read (after the room :meth:`get` makes) and dropped when
        ``fn`` returns, ``fn`` running before the next read starts.  For background work over many samples
        (thumbnails) that must not add to what an interactive viewer holds.

        Raises:
            as :meth:`get`, and what ``fn`` raises.
        """
        gen, key = self._key(index, gen)
        with self._lock:
            arrays = self._held.get(key)
        if arrays is not None:
            return fn(arrays)
        with self._reading:
            arrays = self._held_or_room(key)
            if arrays is None:
                arrays = self.fetch(gen.members[index])
            return fn(arrays)

    def fetch(self, sid: str) -> dict[str, np.ndarray]:
        """Sample ``sid`` read from the store (:func:`read_sample`; not held, not counted) as numpy arrays for
        display (see :func:`wirehead.notebook.slicing.to_numpy`: tensors converted, half floats as float32).

        Raises:
            SampleGone: gone or incomplete (being deleted).  ValueError: cannot be decoded.
        """
        return {k: to_numpy(v) for k, v in read_sample(self.store, sid).items()}

    def clear(self) -> None:
        """Drop the held samples."""
        with self._lock:
            self._held.clear()


def pick_kinds(arrays: Mapping[str, np.ndarray], image: Optional[str] = None,
               label: Optional[str] = None) -> tuple[str, Optional[str]]:
    """The image kind (default: the first that is not a label map, see
    :func:`wirehead.notebook.slicing.is_label_like`) and the label kind (default:
    ``"label"`` if it is a label map, else the first label map of the image's shape, else ``None``).

    Raises:
        KeyError: a named kind is not in the sample.
    """
    kinds = [k for k in arrays if k != AFFINE_KIND]
    for k in (image, label):
        if k is not None and k not in arrays:
            raise KeyError(f"the sample has no kind {k!r}; it has {sorted(kinds)}")
    if image is None:
        image = next((k for k in kinds if not is_label_like(arrays[k])), kinds[0])
    if label is None:
        maps = [k for k in kinds if k != image and is_label_like(arrays[k])
                and arrays[k].shape[-3:] == arrays[image].shape[-3:]]
        maps.sort(key=lambda k: k != "label")
        label = maps[0] if maps else None
    return image, label


def voxel_volume_mm3(affine: Optional[Any]) -> float:
    """The volume of one voxel in mm³ (the affine's 3x3 determinant; 1 without an affine)."""
    if affine is None:
        return 1.0
    a = np.asarray(affine, dtype=np.float64)
    if a.shape not in ((4, 4), (3, 4), (3, 3)) or not np.all(np.isfinite(a)):
        return 1.0
    v = abs(float(np.linalg.det(a[:3, :3])))
    return v if v > 0 else 1.0


@dataclass
class SampleQC:
    """One sample's measures and flags.  ``volumes_ml``/``means`` are keyed by label value."""

    index: int
    image_kind: str
    label_kind: Optional[str]
    shape: list[int]
    voxel_mm3: float
    nonfinite: int = 0
    constant: bool = False
    minimum: float = math.nan
    maximum: float = math.nan
    volumes_ml: dict[int, float] = field(default_factory=dict)
    means: dict[int, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    error: Optional[str] = None


def sample_qc(arrays: Mapping[str, Any], index: int = 0, image: Optional[str] = None,
              label: Optional[str] = None) -> SampleQC:
    """Measure one sample: per-label volume (mL) and mean image intensity, non-finite values, constancy.

    4-D arrays use their first channel (see :func:`wirehead.notebook.slicing.spatial`).
    """
    arrays = {k: to_numpy(v) for k, v in arrays.items()}
    image, label = pick_kinds(arrays, image, label)
    img = spatial(arrays[image])[0]
    vox = voxel_volume_mm3(arrays.get(AFFINE_KIND))
    out = SampleQC(index, image, label, [int(n) for n in img.shape], vox)
    fimg = img if img.dtype.kind == "f" else img.astype(np.float32)
    finite = np.isfinite(fimg)
    out.nonfinite = int(fimg.size - np.count_nonzero(finite))
    if out.nonfinite:
        out.flags.append(f"{out.nonfinite} NaN/inf values in {image!r}")
    good = fimg[finite] if out.nonfinite else fimg.reshape(-1)
    if good.size:
        out.minimum, out.maximum = float(good.min()), float(good.max())
        out.constant = not out.maximum > out.minimum
        if out.constant:
            out.flags.append(f"constant image {image!r} (every value {out.minimum:g})")
    del good
    if label is not None:
        lab = spatial(arrays[label])[0]
        if lab.shape != img.shape:
            out.flags.append(f"label {label!r} {lab.shape} and image {img.shape} differ in shape")
        else:
            # uint8/uint16 maps are counted as they are (no int64 copy); others clipped at 0 first
            codes = lab.reshape(-1) if lab.dtype in (np.uint8, np.uint16) else \
                np.clip(lab.reshape(-1).astype(np.int64), 0, None)
            counts = np.bincount(codes)
            sums = np.bincount(codes, weights=(np.where(finite, fimg, 0) if out.nonfinite else fimg).reshape(-1))
            for v in np.flatnonzero(counts):
                out.volumes_ml[int(v)] = float(counts[v]) * vox / 1000.0
                out.means[int(v)] = float(sums[v] / counts[v])
    return out


@dataclass
class QCReport:
    """QC of a generation: each sample's :class:`SampleQC` and the generation's summary."""

    generation: int
    samples: list[SampleQC]
    expected: list[int]
    median_ml: dict[int, float]
    names: dict[int, str] = field(default_factory=dict)

    @property
    def flagged(self) -> list[SampleQC]:
        """The samples with at least one flag (or an error)."""
        return [s for s in self.samples if s.flags or s.error]

    def to_dict(self) -> dict[str, Any]:
        def fix(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            if isinstance(v, dict):
                return {str(k): fix(x) for k, x in v.items()}
            if isinstance(v, list):
                return [fix(x) for x in v]
            return v

        return fix({"generation": self.generation, "n_samples": len(self.samples),
                    "flagged": [s.index for s in self.flagged], "expected_labels": self.expected,
                    "label_names": self.names, "median_volume_ml": self.median_ml,
                    "samples": [asdict(s) for s in self.samples]})

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_html(self) -> str:
        """The table as HTML (flagged samples highlighted, mean intensity per label in each cell's title)."""
        from html import escape

        labels = self.label_values()
        head = "".join(f"<th>{escape(self.names.get(v, f'label {v}'))}<br>mL</th>" for v in labels)
        rows = []
        for s in self.samples:
            cells = "".join(f"<td title='mean intensity {s.means.get(v, float('nan')):.3g}'>"
                            f"{s.volumes_ml.get(v, 0.0):.1f}</td>" for v in labels)
            flags = escape("; ".join(s.flags) or ("error: " + s.error if s.error else "ok"))
            bad = " class='wh-flagged'" if (s.flags or s.error) else ""
            rows.append(f"<tr{bad}><td>{s.index}</td>{cells}<td>{flags}</td></tr>")
        return (f"<div class='wirehead-qc'><b>QC of generation {self.generation}</b>: {len(self.samples)} samples, "
                f"{len(self.flagged)} flagged<table><tr><th>sample</th>{head}<th>flags</th></tr>{''.join(rows)}"
                "</table></div>")

    def label_values(self) -> list[int]:
        return sorted({v for s in self.samples for v in s.volumes_ml if v != 0} | set(self.expected))

    def format_text(self) -> str:
        """A plain table: one row per sample, label volumes in mL, then the flags."""
        labels = self.label_values()
        head = ["sample"] + [self.names.get(v, f"label {v}")[:14] + " mL" for v in labels] + ["flags"]
        rows = [head]
        for s in self.samples:
            rows.append([str(s.index)] + [f"{s.volumes_ml.get(v, 0.0):.1f}" for v in labels]
                        + ["; ".join(s.flags) or ("error: " + s.error if s.error else "ok")])
        widths = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
        lines = [f"QC of generation {self.generation}: {len(self.samples)} samples, "
                 f"{len(self.flagged)} flagged"]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
        return "\n".join(lines)


def flag_generation(samples: Sequence[SampleQC], expected: Optional[Iterable[int]] = None,
                    z: float = OUTLIER_Z) -> tuple[list[int], dict[int, float]]:
    """Add the generation-level flags to ``samples`` (in place): empty expected labels and label volumes
    more than ``z`` robust standard deviations (1.4826 x MAD, at least 10% of the label's median volume
    and 1% of the median labelled volume) from the generation's median.  Returns the expected labels and the median volume of each label.

    ``expected``: labels that should be in every sample (default: those present in more than half of
    the samples).
    """
    good = [s for s in samples if s.error is None and s.label_kind is not None]
    seen = collections.Counter(v for s in good for v in s.volumes_ml if v != 0)
    exp = (sorted(int(v) for v in expected if int(v) != 0) if expected is not None
           else sorted(v for v, c in seen.items() if c > len(good) / 2))
    median: dict[int, float] = {}
    # a label's spread is at least 10% of its median and 1% of the median labelled volume: small labels
    # that come and go are not outliers
    total = float(np.median([sum(x for k, x in s.volumes_ml.items() if k != 0) for s in good])) if good else 0.0
    for v in sorted(set(seen) | set(exp)):
        vols = np.array([s.volumes_ml.get(v, 0.0) for s in good])
        med = float(np.median(vols)) if vols.size else 0.0
        median[v] = med
        mad = float(np.median(np.abs(vols - med))) * 1.4826 if vols.size else 0.0
        scale = max(mad, 0.1 * abs(med), 0.01 * total, 1e-9)
        for s, vol in zip(good, vols):
            if v in exp and vol == 0.0:
                s.flags.append(f"empty label {v}")
            elif len(good) >= 4 and abs(vol - med) / scale > z:
                s.flags.append(f"label {v} volume {vol:.1f} mL far from the generation's {med:.1f} mL")
    return exp, median


def qc_steps(samples: GenerationSamples, *, image: Optional[str] = None, label: Optional[str] = None,
             table: Optional[LabelTable] = None, expected: Optional[Iterable[int]] = None,
             max_samples: Optional[int] = None) -> Iterator[tuple[int, int]]:
    """:func:`generation_qc` one sample per ``next()``: yields ``(done, total)``; the report is the value of
    the ``StopIteration`` that ends it (``report = yield from qc_steps(...)``).  For a refresher thread that
    shares its time with other widgets."""
    gen = samples.refresh()
    if gen is None:
        raise LookupError("the cache has no read generation yet (no swap so far); wait for the first swap")
    n = gen.n if max_samples is None else min(gen.n, int(max_samples))
    out: list[SampleQC] = []
    for i in range(n):
        try:
            arrays = samples.fetch(gen.members[i])  # not held: QC streams the generation
            out.append(sample_qc(arrays, i, image, label))
            del arrays
        except (LookupError, ValueError, KeyError) as e:
            out.append(SampleQC(i, image or "", label, [], 1.0, error=f"{type(e).__name__}: {e}"))
        yield i + 1, n
    if expected is None and table is not None and 0 < len(table.names) <= MAX_EXPECTED_FROM_TABLE:
        expected = [v for v in table.names if v != 0]
    exp, median = flag_generation(out, expected)
    names = dict(table.names) if table is not None else {}
    return QCReport(gen.gen, out, exp, median, names)


def generation_qc(samples: GenerationSamples, *, image: Optional[str] = None, label: Optional[str] = None,
                  table: Optional[LabelTable] = None, expected: Optional[Iterable[int]] = None,
                  max_samples: Optional[int] = None) -> QCReport:
    """QC of the read generation, sample by sample (one decoded sample in memory at a time).

    ``expected``: labels every sample should hold (default: the table's labels other than 0 when a
    table of at most :data:`MAX_EXPECTED_FROM_TABLE` labels is given, such as wirehead's brains'; else,
    e.g. for a whole FreeSurfer LUT, those present in more than half of the samples).

    Raises:
        LookupError: the cache has no read generation yet.
    """
    steps = qc_steps(samples, image=image, label=label, table=table, expected=expected, max_samples=max_samples)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
