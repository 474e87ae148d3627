"""The invariant checker finds each violation it promises, on histories written the way recorder.py writes them
(each guarantee broken on purpose in an otherwise clean history); no cluster is needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from cluster.checker import Histories, check

T = 1000.0


def clean() -> dict[str, list[dict[str, Any]]]:
    """Two generators, two generations of two samples, a trainer that read each sample once."""
    gens = {"gen-n2-1": [], "gen-n3-2": []}
    members: dict[int, list[list[Any]]] = {1: [], 2: []}
    for k in range(4):
        proc = "gen-n2-1" if k % 2 else "gen-n3-2"
        uid, crc, sid = f"u{k}", 100 + k, f"s{k}"
        gens[proc] += [{"ev": "attempt", "uid": uid, "crc": crc, "t": T + k},
                       {"ev": "commit", "uid": uid, "crc": crc, "sid": sid, "t": T + k + 0.1}]
        members[1 + k // 2].append([sid, uid, crc])
    audit = [{"ev": "gen", "gen": g, "members": m, "t": T + 5} for g, m in members.items()]
    audit.append({"ev": "storage", "samples": 4, "gens": 2, "t": T + 5})
    train = [{"ev": "read", "uid": f"u{k}", "crc": 100 + k, "n": 2, "t": T + 6 + k} for k in range(4)]
    return {**gens, "audit-ctl-3": audit, "train-n4-4": train}


def write(tmp: Path, files: dict[str, list[dict[str, Any]]]) -> Histories:
    for name, events in files.items():
        (tmp / f"{name}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"ev": "cut')
    return Histories.load(tmp)


def judge(h: Histories, **kw: Any) -> list[str]:
    return check(h, **{"swap_cap": 2, "retired_generations": 1, "reuse_cap": 1, "generators": 2, **kw})


def lose(f: dict) -> None:  # a committed sample in no generation
    f["audit-ctl-3"][0]["members"].pop()


def twice(f: dict) -> None:  # one sample in two generations (a rewrite under a new sid committed again)
    f["audit-ctl-3"][1]["members"].append(["s9", "u0", 100])


def broken_read(f: dict) -> None:
    f["train-n4-4"][0]["crc"] = 7


def broken_at_rest(f: dict) -> None:
    f["audit-ctl-3"][0]["members"][0][2] = 7


def unknown_read(f: dict) -> None:
    f["train-n4-4"].append({"ev": "read", "uid": "nobody", "crc": 1, "n": 2, "t": T + 20})


def over_cap(f: dict) -> None:  # read on another node a second time, REUSE_CAP is 1
    f["train-n3-5"] = [dict(f["train-n4-4"][0])]


def failed_read(f: dict) -> None:
    f["train-n4-4"].append({"ev": "error", "err": "StoreUnavailable: ...", "t": T + 30})


def storage(f: dict) -> None:  # (1 + 3) x 2 + 2 = 10 is the bound
    f["audit-ctl-3"].append({"ev": "storage", "samples": 11, "gens": 5, "t": T + 40})


@pytest.mark.parametrize("breaks, word", [
    (lose, "lost:"), (twice, "two generations:"), (broken_read, "broken:"), (broken_at_rest, "broken:"),
    (unknown_read, "broken:"), (over_cap, "reuse:"), (failed_read, "failed read:"), (storage, "storage:")])
def test_each_violation_is_found(tmp_path: Path, breaks: Callable[[dict], None], word: str) -> None:
    (tmp_path / "ok").mkdir()
    assert judge(write(tmp_path / "ok", clean())) == []
    files = clean()
    breaks(files)
    (tmp_path / "bad").mkdir()
    found = judge(write(tmp_path / "bad", files))
    assert found and all(v.startswith(word) for v in found), found


def test_failed_reads_inside_the_allowed_window_are_expected(tmp_path: Path) -> None:
    files = clean()
    failed_read(files)
    h = write(tmp_path, files)
    assert judge(h, errors_allowed=(T + 29, T + 31)) == []
    assert judge(h, errors_allowed=(T + 31, T + 40)) != []


def test_an_empty_history_is_not_a_pass(tmp_path: Path) -> None:
    assert judge(write(tmp_path, {})) == ["the auditor saw no generation at all", "no trainer read anything"]
