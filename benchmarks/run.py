"""Run the wirehead benchmark: ``python benchmarks/run.py --quick --json out.json``.

A thin wrapper over :func:`wirehead.bench.main` (also ``wirehead bench``); see benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from wirehead.bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
