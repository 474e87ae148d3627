"""Several real processes at once: three generators, a manager and readers, through many swaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import GenWatcher, Workers, check_reader_report, read_report, wait_until
from wirehead.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # slow: real processes for long; `-m "not slow"` skips


def _no_sample_in_two_generations(watcher: GenWatcher) -> None:
    twice = {sid: g for sid, g in watcher.member_of.items() if len(g) > 1}
    assert not twice, f"samples committed to two generations: {list(twice.items())[:5]}"


@pytest.mark.parametrize("managers", [1, 0, 2])
def test_generators_manager_and_reader_through_ten_swaps(make_config: Any, tmp_path: Path, managers: int) -> None:
    # RETIRED_GENERATIONS: a replaced generation stays GRACE_SECONDS, so the watcher (a thread of this
    # process, starved on a loaded machine) sees every generation before it is deleted; with the default 1
    # a generation can be deleted two swaps later, between two polls, and its samples then count as "lost"
    cfg = make_config(SWAP_CAP=6, GRACE_SECONDS=3.0, LEASE_SECONDS=1.0, RETIRED_GENERATIONS=1000)
    store = Store(cfg)
    store.ensure_schema()
    report = tmp_path / "reader.json"
    with Workers(cfg) as w, GenWatcher(store) as watcher:
        for _ in range(managers):
            w.start("manager", "--duration", "120")
        gens = [w.start("generator", "--gid", str(i + 1)) for i in range(3)]
        rd = w.start("reader", "--out", str(report), "--duration", "12", "--timeout", "60")
        wait_until(lambda: store.state().swaps >= 10, 90, "ten swaps")
        assert rd.wait(60) == 0, rd.stderr()
        for g in gens:
            g.kill()
    result = read_report(report)
    assert result["errors"] == [], result["errors"][:2]
    seen = check_reader_report(result)
    assert len(seen) >= 12 and len({g for gens_ in seen.values() for g in gens_}) >= 3
    _no_sample_in_two_generations(watcher)
    # every sample a generator reported committed is in a generation: nothing lost
    committed = {sid for g in gens for sid, _ in g.committed()}
    lost = committed - set(watcher.member_of)
    assert not lost, f"{len(lost)} committed samples never appeared in a generation"
    # generations are consecutive, each read once, each of SWAP_CAP samples
    assert watcher.read_gens == sorted(set(watcher.read_gens))
    full = [n for g, n in watcher.sizes.items() if g in watcher.read_gens]
    assert full and all(n == 6 for n in full)
