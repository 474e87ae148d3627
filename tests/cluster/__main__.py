"""Developer tool: a SLURM cluster in a box on this machine (root, slurm-wlm and munge needed).

    python -m tests.cluster up [-n 3]     # build it; prints how to use it; stays up until `down`
    python -m tests.cluster shell         # a shell on its login node (SLURM_CONF set): sbatch, squeue, srun
    python -m tests.cluster status        # sinfo and squeue
    python -m tests.cluster down          # stop everything it started and remove its namespaces and files

Exit codes: 0 done, 1 the cluster failed, 2 it cannot run here (the reason is printed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from typing import Optional, Sequence

from .harness import Cluster, ClusterError, recorded, unavailable


def _cluster(prefix: str) -> Optional[Cluster]:
    state = recorded(prefix)
    return Cluster.attach(state) if state is not None else None


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("up", "down", "status", "shell"))
    p.add_argument("-n", "--nodes", type=int, default=3)
    p.add_argument("--prefix", default="whc", help="namespace prefix (one cluster per prefix)")
    args = p.parse_args(argv)
    if args.action == "up":
        reason = unavailable()
        if reason:
            print(f"cannot build a cluster here: {reason}", file=sys.stderr)
            return 2
        c = Cluster(args.nodes, prefix=args.prefix)
        t0 = time.monotonic()
        try:
            c.up()
        except ClusterError as e:
            print(e, file=sys.stderr)
            return 1
        c.keep()  # the daemons stay up after this process exits: they are recorded for `down`
        print(f"cluster {args.prefix} up in {time.monotonic() - t0:.1f} s: nodes {', '.join(c.nodes)} "
              f"({c.address(c.nodes[0])}…), partition debug, config {c.conf}")
        print(f"use it: python -m tests.cluster shell   (or: SLURM_CONF={c.conf} nsenter "
              f"--net=/run/netns/{c.netns('ctl')} bash)")
        return 0
    c = _cluster(args.prefix)
    if c is None:
        print(f"no cluster {args.prefix!r} recorded; nothing to do", file=sys.stderr)
        # namespaces of a crashed run are still removed
        Cluster(args.nodes, prefix=args.prefix).down()
        return 0 if args.action == "down" else 1
    if args.action == "down":
        c.down()
        print(f"cluster {args.prefix} down")
        return 0
    if args.action == "status":
        print(c.run(["sinfo"], check=False).stdout + c.run(["squeue"], check=False).stdout)
        return 0
    return subprocess.call(["nsenter", f"--net=/run/netns/{c.netns('ctl')}", os.environ.get("SHELL", "bash")],
                           env=c.env)


if __name__ == "__main__":
    raise SystemExit(main())
