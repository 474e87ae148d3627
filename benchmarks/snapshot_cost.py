"""The dashboard's cost: the time one ``snapshot()`` takes at SWAP_CAP 10 and 1000 (issue 28, item 5).

``python benchmarks/snapshot_cost.py [--uri URI] [--json out.json]``

Two caches on one server, each with a full read generation and a full write generation of 8^3 samples whose
chunks are older than ORPHAN_SECONDS (so every chunk is an orphan candidate to a query that looks for them).
Reported per cap: the median seconds of ``wirehead.snapshot`` over 20 calls, and, for comparison, of the two
queries a snapshot made before it stopped reading member lists and chunk ids (``live_members`` and
``orphan_candidates``).  Figure: ``snapshot_seconds_ratio`` = 1000 / 10 (target: about 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from wirehead import WireheadConfig, WireheadGenerator, WireheadManager, snapshot  # noqa: E402
from wirehead.store import Store  # noqa: E402

CAPS = (10, 1000)
CALLS = 20


def _median_seconds(call: Callable[[], Any], n: int = CALLS) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(cap: int, uri: Optional[str]) -> dict[str, float]:
    keys: dict[str, Any] = dict(DBNAME=f"bench_snap_{cap}_{uuid.uuid4().hex[:6]}", SWAP_CAP=cap,
                                SAMPLE=["image", "label"], ORPHAN_SECONDS=1.0)
    if uri:
        keys["MONGO_URI"] = uri
    cfg = WireheadConfig.load(keys)
    store = Store(cfg)
    try:
        manager = WireheadManager(config=cfg)
        manager.step()  # holds the lease: the generator does not swap by itself
        g = WireheadGenerator(config=cfg)
        sample = (np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 8), np.uint8))
        for _ in range(cap):
            g.push(sample)
        manager.step()
        for _ in range(cap):
            g.push(sample)
        g.close()
        time.sleep(cfg.orphan_seconds)  # every chunk is old enough to be an orphan candidate
        old = time.time() - cfg.orphan_seconds
        return {
            "snapshot_seconds": _median_seconds(lambda: snapshot(store)),
            "member_lists_seconds": _median_seconds(store.live_members),
            "orphan_candidates_seconds": _median_seconds(lambda: store.orphan_candidates(old)),
        }
    finally:
        store.drop_database()
        store.close()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="benchmark this server (default: the embedded local server)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--caps", default=",".join(map(str, CAPS)), help="the small and the large SWAP_CAP")
    args = parser.parse_args(argv)
    caps = [int(c) for c in args.caps.split(",")]
    if len(caps) != 2:
        parser.error(f"--caps should name two SWAP_CAPs, but got {args.caps!r}")
    out: dict[str, Any] = {f"cap_{cap}": measure(cap, args.uri) for cap in caps}
    small, large = (out[f"cap_{cap}"]["snapshot_seconds"] for cap in caps)
    out["snapshot_seconds_ratio"] = large / small
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
