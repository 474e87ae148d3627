"""``wirehead export``: write cached samples as NIfTI files (one ``.nii.gz`` per kind per sample)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .. import nifti
from ..connect import open_store
from ..qc import SampleGone, read_sample
from ._common import UsageError, add_config_arg, formatter, load_config

HELP = "write samples of a generation as .nii.gz files (with their affine) for FSLeyes, ITK-SNAP, Slicer"
DESCRIPTION = """\
Write every kind of the first N samples of a generation (default: the read generation) as
DIR/gen<G>_sample<I>_<kind>.nii.gz.  A sample's `affine` kind (a 4x4 array, as the brain
generator emits) becomes every file's affine and is not written itself; without it the
identity is used.  Each kind is written in the nearest NIfTI dtype that keeps every value
(label maps stay integer; int64 becomes int32 when every value fits, float16 float32), said
once per kind in the log; a kind NIfTI cannot hold (a 0-d scalar such as an age, an empty
array) is skipped with a warning that says why.  Needs nibabel (the `brains` extra).

examples:
  wirehead export cache.yaml --out nifti/
  wirehead export cache.yaml --out nifti/ --generation 3 --samples 2"""

AFFINE_KIND = "affine"
log = logging.getLogger("wirehead.cli.export")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help=HELP, description=DESCRIPTION, formatter_class=formatter)
    add_config_arg(p)
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the .nii.gz files into")
    p.add_argument("--generation", type=int, default=None, metavar="G",
                   help="generation to export (default: the current read generation)")
    p.add_argument("--samples", type=int, default=1, metavar="N", help="how many samples (default 1)")
    p.set_defaults(run=run, log_level=logging.INFO)


def sample_affine(arrays: dict[str, Any]) -> Optional[np.ndarray]:
    """The sample's ``affine`` kind as a float64 4x4 array, or None when it has none."""
    if AFFINE_KIND not in arrays:
        return None
    aff = np.asarray(arrays[AFFINE_KIND], dtype=np.float64)
    if aff.shape != (4, 4):
        raise UsageError(f"the sample's {AFFINE_KIND!r} kind should be 4x4, but it is {aff.shape}")
    return aff


def _say_once(said: set[tuple[str, str]], kind: str, message: str, level: int) -> None:
    """Log ``message`` about ``kind`` once per run (not once per sample)."""
    if (kind, message) not in said:
        said.add((kind, message))
        log.log(level, "%s", message)


def run(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise UsageError(f"--samples should be >= 1, got {args.samples}")
    config = load_config(args.config)
    store = open_store(config, start_server=False)
    try:
        gen = args.generation
        if gen is None:
            gen = store.state().read_gen
            if gen is None or gen < 0:
                raise UsageError("the cache has no read generation yet; wait for a swap or pass --generation")
        doc = store.gen_doc(gen)
        if doc is None or not doc.members:
            have = [d.gen for d in store.gen_docs(members=False)]
            raise UsageError(f"generation {gen} does not exist or holds no samples; existing generations: {have}")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        written = 0
        said: set[tuple[str, str]] = set()
        for i, sid in enumerate(list(doc.members)[:args.samples]):
            try:
                arrays = read_sample(store, sid)  # the viewer's read: one sample at a time, not a training read
            except SampleGone as e:
                log.warning("sample %d of generation %d skipped: %s", i, gen, e)
                continue
            written += _write_sample(arrays, out, gen, i, said)
            del arrays
    finally:
        store.close()
    print(f"wirehead export: {written} files from generation {gen} in {out}")
    return 0


def _write_sample(arrays: dict[str, Any], out: Path, gen: int, i: int, said: set[tuple[str, str]]) -> int:
    """Write every kind of one sample but its affine as ``gen<G>_sample<I>_<kind>.nii.gz``; returns how many."""
    affine = sample_affine(arrays)
    written = 0
    for kind, value in arrays.items():
        if kind == AFFINE_KIND:
            continue
        try:
            arr, note = nifti.nifti_array(value)
        except nifti.NiftiUnsupported as e:
            _say_once(said, kind, f"kind {kind!r} skipped: {e}", logging.WARNING)
            continue
        if note:
            _say_once(said, kind, f"kind {kind!r}: {note}", logging.INFO)
        path = nifti.save(arr, out / f"gen{gen}_sample{i}_{kind}.nii.gz", affine)
        print(path)
        written += 1
    return written
