"""The invariant checker of the fault scenarios: reads the histories :mod:`recorder` wrote and says what broke.

:func:`check` returns a list of violations (empty: every guarantee held), one line each, naming the sample:

- **lost**: a sample whose ``push()`` returned (committed) never appeared in a generation the auditor saw;
- **two generations**: a sample (its uid, the identity inside its arrays) in more than one generation;
- **broken**: a sample served, or held in a generation, with another checksum than its generator recorded,
  or one no generator ever made;
- **reuse**: a sample served more than REUSE_CAP times, counting every trainer on every node;
- **failed reads**: a trainer's read that raised (outside the scenario's allowed window);
- **storage**: the server held more samples than the README's bound, ``(RETIRED_GENERATIONS + 3) × SWAP_CAP``
  committed ones plus one in flight per generator;
- **exit codes** and **leftovers** are checked by the scenario itself (they come from SLURM and the nodes).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Histories:
    """Every event of every recorder process of one scenario, by kind (``gen``, ``train``, ``audit``)."""

    events: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def load(cls, out: Path) -> "Histories":
        h = cls()
        for path in sorted(out.glob("*.jsonl")):
            kind = path.name.split("-", 1)[0]
            for line in path.read_text().splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line cut by a SIGKILL: the event did not happen as far as anyone knows
                event["process"] = path.stem
                h.events[kind].append(event)
        return h

    def of(self, kind: str, ev: str) -> list[dict[str, Any]]:
        return [e for e in self.events.get(kind, []) if e.get("ev") == ev]


def check(h: Histories, *, swap_cap: int, retired_generations: int, reuse_cap: int, generators: int,
          errors_allowed: tuple[float, float] | None = None) -> list[str]:
    """Every violation of the scenario's histories (see the module docstring).  ``errors_allowed``: a
    ``(start, end)`` time window (``time.time()``) in which failed reads are expected (a trainer cut off
    longer than RETRY_DEADLINE); outside it none may fail."""
    bad: list[str] = []
    attempted = {e["uid"]: e["crc"] for e in h.of("gen", "attempt")}
    committed = {e["uid"]: e["crc"] for e in h.of("gen", "commit")}
    # the auditor's view: uid -> generations it was a member of, and the checksum found there
    in_gens: dict[str, set[int]] = defaultdict(set)
    for e in h.of("audit", "gen"):
        for sid, uid, crc in e["members"]:
            in_gens[uid].add(e["gen"])
            if attempted.get(uid) != crc:
                bad.append(f"broken: generation {e['gen']} holds sample {uid} (sid {sid}) with checksum {crc}, "
                           f"its generator made {attempted.get(uid)}")
    if not h.of("audit", "gen"):
        bad.append("the auditor saw no generation at all")
    for uid in committed:
        if not in_gens.get(uid):
            bad.append(f"lost: sample {uid} was committed (push returned) but is in no generation")
    for uid, gens in in_gens.items():
        if len(gens) > 1:
            bad.append(f"two generations: sample {uid} is in generations {sorted(gens)}")
    reads: dict[str, int] = defaultdict(int)
    for e in h.of("train", "read"):
        reads[e["uid"]] += 1
        if attempted.get(e["uid"]) != e["crc"]:
            bad.append(f"broken: {e['process']} was served sample {e['uid']} with checksum {e['crc']}, its "
                       f"generator made {attempted.get(e['uid'])}")
    if not h.of("train", "read"):
        bad.append("no trainer read anything")
    if reuse_cap:
        for uid, n in reads.items():
            if n > reuse_cap:
                bad.append(f"reuse: sample {uid} was served {n} times, REUSE_CAP is {reuse_cap}")
    for e in h.of("train", "error"):
        if errors_allowed is None or not errors_allowed[0] <= e["t"] <= errors_allowed[1]:
            bad.append(f"failed read: {e['process']} at {e['t']:.1f}: {e['err']}")
    limit = (retired_generations + 3) * swap_cap + generators
    most = max((e["samples"] for e in h.of("audit", "storage")), default=0)
    if most > limit:
        bad.append(f"storage: the server held {most} samples, the bound is (RETIRED_GENERATIONS + 3) x SWAP_CAP "
                   f"+ generators = {limit}")
    return bad
