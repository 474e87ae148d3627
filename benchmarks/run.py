"""Run the wirehead benchmark: ``python benchmarks/run.py --quick --json out.json``.

The benchmark is ``benchmarks/bench.py`` (outside the installed package); ``wirehead bench`` finds and
runs this file from a source checkout.  See benchmarks/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # bench.py, and wirehead from a checkout without installing

from bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
