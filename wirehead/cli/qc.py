"""``wirehead qc``: per-sample label volumes, mean intensity per label and flags of the read generation."""

from __future__ import annotations

import argparse
from typing import Optional

from ..connect import open_store
from ..labels import LabelTable, load_label_table
from ..qc import GenerationSamples, generation_qc
from ._common import UsageError, add_config_arg, formatter, load_config

HELP = "QC of the read generation: label volumes (mL), mean intensity per label, flags (table or --json)"
DESCRIPTION = """\
Read the read generation of the cache CONFIG describes one sample at a time (not counted as
training reads) and print, per sample, each label's volume in mL (voxels x the affine's voxel
volume; 1 mm^3 without an affine kind) and mean image intensity, with flags for what a synthesis
bug produces: NaN or infinite values, a constant image, an expected label that is empty, and
label volumes far from the generation's median (robust z-score > 5).  Expected labels: --expected,
else the label table's (when it lists at most 64), else those present in most samples.
--fail-on-flags exits with 1 when a sample is flagged (for CI and scripts).

examples:
  wirehead qc cache.yaml
  wirehead qc cache.yaml --labels brains --json | jq '.flagged'
  wirehead qc cache.yaml --labels FreeSurferColorLUT.txt --expected 2,3,41,42 --fail-on-flags"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("qc", help=HELP, description=DESCRIPTION, formatter_class=formatter)
    add_config_arg(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--labels", metavar="TABLE", default=None,
                   help="label table: 'brains' (wirehead's brains), a FreeSurfer *ColorLUT.txt or an ITK-SNAP "
                        "label description file")
    p.add_argument("--image", metavar="KIND", default=None, help="the image kind (default: the first non-label kind)")
    p.add_argument("--label", metavar="KIND", default=None, help="the label kind (default: 'label' or the first "
                                                                   "label map)")
    p.add_argument("--expected", metavar="L,L,...", default=None, help="labels every sample should hold")
    p.add_argument("--samples", type=int, default=None, metavar="N", help="only the first N samples")
    p.add_argument("--fail-on-flags", action="store_true", help="exit 1 when a sample is flagged")
    p.set_defaults(run=run)


def _table(spec: Optional[str]) -> Optional[LabelTable]:
    if spec is None:
        return None
    if spec == "brains":
        from ..brains import LABEL_TABLE  # torch: the brains module's own import

        return LABEL_TABLE
    try:
        return load_label_table(spec)
    except (OSError, ValueError) as e:
        raise UsageError(f"--labels {spec!r}: {e}") from e


def run(args: argparse.Namespace) -> int:
    if args.samples is not None and args.samples < 1:
        raise UsageError(f"--samples should be a positive integer, but got {args.samples}")
    expected = None
    if args.expected is not None:
        try:
            expected = [int(v) for v in args.expected.split(",") if v.strip()]
        except ValueError as e:
            raise UsageError(f"--expected should be comma-separated label values, got {args.expected!r}") from e
    table = _table(args.labels)
    config = load_config(args.config)
    store = open_store(config, start_server=False)
    try:
        try:
            report = generation_qc(GenerationSamples(store, keep=1), image=args.image, label=args.label,
                                   table=table, expected=expected, max_samples=args.samples)
        except LookupError as e:
            raise UsageError(f"{e}") from e
    finally:
        store.close()
    print(report.to_json(indent=2) if args.json else report.format_text())
    return 1 if args.fail_on_flags and report.flagged else 0
