"""Speed of the brain generator (wirehead.brains): seconds per sample, per backend and resolution.

    python benchmarks/brains.py                              # torchio and cornucopia at 2 mm, 2 threads
    python benchmarks/brains.py --mm 2 1 --n 3 --backend torchio
    python benchmarks/brains.py --device cuda --backend cornucopia --mm 1

Both backends are timed in the same run, so their ratio holds on a loaded machine; the absolute figures
move with the load (the uptime load average is printed).  Shapes are the template grid at each
resolution (197x233x189 at 1 mm, 98x116x94 at 2 mm) unless --shape is given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mm", type=float, nargs="+", default=[2.0], help="resolutions in mm (default 2)")
    ap.add_argument("--backend", nargs="+", default=["torchio", "cornucopia"], choices=["torchio", "cornucopia"])
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--n", type=int, default=3, help="timed samples per case after one warm-up (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--shape", type=int, nargs=3, default=None, help="output shape (default: the template grid)")
    args = ap.parse_args()

    import torch

    from wirehead import brains

    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch threads {args.threads}; "
          f"device {args.device}")
    for mm in args.mm:
        label, _ = brains.anatomy(mm)
        shape = tuple(args.shape) if args.shape else label.shape
        for backend in args.backend:
            if not brains.available(backend):
                print(f"{backend:11s} {mm:g} mm: not installed")
                continue
            gen = brains.brain_generator(shape, mm, device=args.device, seed=0, backend=backend)
            next(gen)  # warm-up (imports, first allocation)
            times = []
            for _ in range(args.n):
                t = time.perf_counter()
                next(gen)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            print(f"{backend:11s} {mm:g} mm {'x'.join(map(str, shape)):>12s}: median {statistics.median(times):.2f} s "
                  f"per sample (min {min(times):.2f}, n {args.n})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
