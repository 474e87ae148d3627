"""The node cache on the real server with real processes: one fetch per node (DataLoader workers, forked
and spawned, and two trainer processes), no segment left after SIGKILL of every user, after a normal exit
or after a generation retires, streaming a generation larger than both caches with bounded memory, and
the fallback to per-process caches."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import ROOT, child_env, fill_self_checking, wait_until
from wirehead import nodecache
from wirehead.fetch import WORKER_NAME
from wirehead.reader import Reader
from wirehead.store import Store
from wirehead.synth import check_self_checking

pytestmark = pytest.mark.timeout(300)


def _key(cfg: Any) -> str:
    return nodecache.cache_key(Store(cfg).uri, cfg.dbname, (cfg.write_collection, cfg.read_collection))


@pytest.fixture
def no_leftovers(make_config: Any) -> Iterator[Any]:
    """The test's configs; afterwards no segment of their caches is left in the node cache directory."""
    made: list[Any] = []

    def make(**keys: Any) -> Any:
        cfg = make_config(**keys)
        made.append(cfg)
        return cfg

    yield make
    import gc

    gc.collect()  # readers the test dropped detach when collected
    left = {n for cfg in made for n in nodecache.segments(_key(cfg))}
    assert not left, f"node cache segments left behind: {sorted(left)}"


def _fill(cfg: Any, n: int, shape: tuple[int, ...] = (16, 16, 16), start: int = 0) -> None:
    """Commit ``n`` self-checking samples and swap them in (the next read generation)."""
    fill_self_checking(cfg, n, shape, start)


def _child(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or child_env(), cwd=str(ROOT))


def _finish(proc: subprocess.Popen, timeout: float = 180) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, f"exit {proc.returncode}: {err[-3000:]}"
    return out


# -- one fetch per node -------------------------------------------------------------------------------------

TRAINER = '''
import json, os, sys
from pymongo import monitoring

LOG = sys.argv[2]

class Chunks(monitoring.CommandListener):
    """Records every sample chunk a server reply carries to this process: (sid, i) per line."""
    def started(self, event): pass
    def failed(self, event): pass
    def succeeded(self, event):
        cursor = event.reply.get("cursor") if isinstance(event.reply, dict) else None
        docs = (cursor or {}).get("firstBatch") or (cursor or {}).get("nextBatch") or []
        got = [f"{d['sid']} {d['i']}" for d in docs if isinstance(d, dict) and "data" in d and "sid" in d]
        if got:
            with open(os.path.join(LOG, f"{os.getpid()}.txt"), "a") as f:
                f.write("\\n".join(got) + "\\n")

def listen(_worker=None):
    monitoring.register(Chunks())

if __name__ == "__main__":
    listen()
    from torch.utils.data import DataLoader
    from wirehead import MongoheadDataset
    from wirehead.synth import check_self_checking
    cfg, context = json.loads(sys.argv[1]), sys.argv[3]
    ds = MongoheadDataset(config=cfg, output="numpy", timeout=60)
    len(ds)  # attached to the node cache (its shared lock keeps the segment while this trainer runs)
    print("READY", flush=True)
    sys.stdin.readline()  # both trainers attached: neither can be alone on the node, whatever the load
    dl = DataLoader(ds, batch_size=2, shuffle=True, num_workers=2, collate_fn=list,
                    multiprocessing_context=context, worker_init_fn=listen if context == "spawn" else None)
    seen = set()
    for epoch in range(2):
        for batch in dl:
            seen.update(check_self_checking(s["image"], s["label"]) for s in batch)
    ds.close()
    print("SEEN", json.dumps(sorted(seen)))
'''


@pytest.mark.slow
def test_every_sample_is_fetched_once_per_node_by_two_trainers_with_two_workers_each(
        no_leftovers: Any, tmp_path: Path) -> None:
    cfg = no_leftovers(SWAP_CAP=8, POLL_SECONDS=0.2)
    _fill(cfg, 8)
    members = Store(cfg).gen_doc(0).members
    script = tmp_path / "trainer.py"  # a file: spawned workers import the main module
    script.write_text(TRAINER)
    logs = tmp_path / "fetched"
    logs.mkdir()
    trainers = [subprocess.Popen([sys.executable, str(script), json.dumps(cfg.to_dict()), str(logs), context],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=child_env(), cwd=str(ROOT)) for context in ("fork", "spawn")]
    try:
        # they run at once: a trainer that ended before the other attached took the segment with it (the last
        # user out deletes it) and the other fetched everything again (1 run in 3 on a loaded machine)
        for t in trainers:
            assert t.stdout is not None and t.stdout.readline().strip() == "READY", _finish(t)
        for t in trainers:
            assert t.stdin is not None
            t.stdin.write("go\n")
            t.stdin.flush()
    except BaseException:
        for t in trainers:
            t.kill()
        raise
    outs = [_finish(t) for t in trainers]
    for out in outs:  # each trainer read the whole generation, in two epochs
        assert json.loads(out.split("SEEN", 1)[1]) == list(range(8))
    fetched = [line for f in logs.glob("*.txt") for line in f.read_text().split()]
    chunks = [" ".join(p) for p in zip(fetched[::2], fetched[1::2])]
    assert {c.split()[0] for c in chunks} == set(members)  # the listener saw every sample's chunks
    twice = {c: n for c, n in __import__("collections").Counter(chunks).items() if n > 1}
    assert not twice, f"chunks fetched more than once on this node: {twice}"


# -- a small /dev/shm ---------------------------------------------------------------------------------------------

@pytest.fixture
def small_shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A 16 MiB tmpfs as the node cache's directory (Docker's and Binder's /dev/shm is 64 MiB); unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where = tmp_path / "shm"
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=1777", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    monkeypatch.setenv(nodecache.DIR_ENV, str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.slow
def test_a_small_dev_shm_is_never_filled_by_the_node_cache(small_shm: Path, make_config: Any) -> None:
    # 12 samples of 1.25 MiB (15 MiB) with the default NODE_CACHE_MB (2048) in a 16 MiB /dev/shm: the node cache
    # took all of it, and DataLoader workers died handing batches over ("No space left on device").  A segment
    # takes at most half of the free space when it is made; the rest is read per process.
    def free() -> int:
        st = os.statvfs(small_shm)
        return st.f_bavail * st.f_frsize

    cfg = make_config(SWAP_CAP=12)
    _fill(cfg, 12, shape=(64, 64, 64))
    before = free()
    reader = Reader(Store(cfg), timeout=30, prefetch=False)
    try:
        values = [check_self_checking(*reader.get([i])[0].values()) for i in range(12)]
        assert sorted(values) == list(range(12))
        stats = reader.stats()
        assert stats["node"] and 0 < stats["node_ready"] < 12  # part in the node cache, the rest not
        left = free()
        assert left >= before // 2 - (1 << 20), f"the node cache left {left >> 20} of {before >> 20} MiB free"
    finally:
        reader.close()


# -- a reader that dies between its claim and its publish ------------------------------------------------------

CLAIMER = """
import json, sys, time
from wirehead import WireheadConfig, nodecache
from wirehead.store import Store
cfg = WireheadConfig.load(json.loads(sys.argv[1]))
store = Store(cfg)
node = nodecache.attach(cfg, store.uri, store.gen_doc(store.state().read_gen))
got = node.acquire([sys.argv[2]])
print("CLAIMED", got[sys.argv[2]], flush=True)
time.sleep(300)  # killed here: claimed, never published
"""


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "while"])
def test_a_claim_of_a_reader_killed_before_it_published_is_taken_over_at_once(
        no_leftovers: Any, when: str) -> None:
    # ``before``: the claimer is dead when the next reader asks (acquire takes the slot over); ``while``: it dies
    # while the next reader waits for it (wait returns).  Either way well within CONNECT_TIMEOUT (60 s here),
    # which is how long a late but live claimer is waited for.
    cfg = no_leftovers(SWAP_CAP=2, CONNECT_TIMEOUT=60.0)
    _fill(cfg, 2)
    store = Store(cfg)
    gen = store.gen_doc(store.state().read_gen)
    sid = gen.members[0]
    claimer = _child(CLAIMER, json.dumps(cfg.to_dict()), sid)
    node = None
    try:
        assert claimer.stdout is not None and claimer.stdout.readline().split() == ["CLAIMED", nodecache.MINE]
        node = nodecache.attach(cfg, store.uri, gen)
        assert node is not None
        if when == "while":
            assert node.acquire([sid]) == {sid: nodecache.BUSY}  # alive: its claim holds
        claimer.kill()
        claimer.wait(30)
        t0 = time.monotonic()
        if when == "while":
            node.wait([sid], time.monotonic() + 60)
        got = node.acquire([sid])
        took = time.monotonic() - t0
        assert got == {sid: nodecache.MINE}, got
        assert took < 10, f"the dead claimer's slot was taken over after {took:.1f} s (CONNECT_TIMEOUT 60 s)"
        node.release(sid)
    finally:
        if claimer.poll() is None:
            claimer.kill()
        claimer.communicate(timeout=30)
        if node is not None:
            node.close()


# -- no stale shared memory ---------------------------------------------------------------------------------

HOLDER = '''
import json, sys, threading
from wirehead.reader import Reader
from wirehead.store import Store
from wirehead import WireheadConfig
cfg = WireheadConfig.load(json.loads(sys.argv[1]))
reader = Reader(Store(cfg), timeout=30)
reader.get([0, 1])
print("ATTACHED", reader.stats()["node_segment"], flush=True)
if sys.argv[2] == "wait":
    sys.stdin.readline()
'''


@contextlib.contextmanager
def _holders(cfg: Any, n: int) -> Iterator[list[subprocess.Popen]]:
    """``n`` processes that each read two samples of ``cfg``'s read generation, print ``ATTACHED <segment>``
    and hold their reader until killed (their stdin is a pipe nobody writes); all killed when the block ends."""
    procs = [subprocess.Popen([sys.executable, "-c", HOLDER, json.dumps(cfg.to_dict()), "wait"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env(), cwd=str(ROOT)) for _ in range(n)]
    try:
        yield procs
    finally:
        _sigkill(procs)
        for p in procs:
            p.communicate()


def _sigkill(procs: list[subprocess.Popen]) -> None:
    """SIGKILL every process of ``procs`` still running, and wait until each is gone."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(30)


def _kill_watchers(key: str) -> None:
    """SIGKILL the watcher processes of this cache's segments (everything on the node killed at once)."""
    def watchers() -> list[int]:
        found = []
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f"/{key}-g".encode() in f.read():
                        found.append(int(pid))
            except (OSError, ValueError):
                continue
        return found

    def killed_none() -> bool:  # a starter killed after it forked the watcher leaves one the scan missed
        found = watchers()
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not found

    wait_until(killed_none, 30, "the watchers gone")


def test_sigkill_of_every_user_removes_the_segment_with_no_other_reader(no_leftovers: Any) -> None:
    """Nobody else reads on the node: the segment's watcher deletes it once its last user is killed."""
    cfg = no_leftovers(SWAP_CAP=4)
    _fill(cfg, 4)
    with _holders(cfg, 3) as procs:
        for p in procs:
            assert p.stdout.readline().startswith("ATTACHED")  # type: ignore[union-attr]
        _sigkill(procs[:2])
        assert nodecache.segments(_key(cfg)), "a user is alive: the segment stays"
        _sigkill(procs[2:])
        wait_until(lambda: not nodecache.segments(_key(cfg)), 30, "the segment removed by its watcher")


def test_sigkill_of_every_user_leaves_no_segment_after_the_next_reader(no_leftovers: Any) -> None:
    cfg = no_leftovers(SWAP_CAP=4)
    _fill(cfg, 4)
    with _holders(cfg, 3) as procs:
        bases = {p.stdout.readline().split()[1] for p in procs}  # type: ignore[union-attr]
        assert len(bases) == 1 and bases != {"None"}, bases
        assert nodecache.segments(_key(cfg)), "the readers made no segment"
        _kill_watchers(_key(cfg))  # everything killed at once, the segment's watcher too
        _sigkill(procs)
        assert nodecache.segments(_key(cfg))  # SIGKILL ran no clean-up: the files are there ...
        Reader(Store(cfg)).close()  # ... until the next reader on the node starts (it sweeps; attaching does too)
        assert not nodecache.segments(_key(cfg))


def test_a_reader_of_another_cache_sweeps_segments_whose_users_were_all_killed(no_leftovers: Any) -> None:
    cfg = no_leftovers(SWAP_CAP=4)
    _fill(cfg, 4)
    with _holders(cfg, 2) as procs:
        for p in procs:
            assert p.stdout.readline().startswith("ATTACHED")  # type: ignore[union-attr]
        _kill_watchers(_key(cfg))  # everything killed at once, the segment's watcher too
        _sigkill(procs)
        assert nodecache.segments(_key(cfg))
        other = no_leftovers(SWAP_CAP=4, READ_COLLECTION="o_read", WRITE_COLLECTION="o_write",
                             COUNTER_COLLECTION="o_counter", TEMP_COLLECTION="o_temp")  # a second cache
        _fill(other, 4)
        reader = Reader(Store(other), timeout=30)  # any later reader on the node, of any cache ...
        reader.get([2])
        assert reader.stats()["node"]
        assert not nodecache.segments(_key(cfg))  # ... removes the dead users' segment
        reader.close()


def test_wirehead_clean_removes_the_segments_of_killed_readers(no_leftovers: Any, tmp_path: Path) -> None:
    cfg = no_leftovers(SWAP_CAP=4)
    _fill(cfg, 4)
    with _holders(cfg, 1) as procs:
        assert procs[0].stdout.readline().startswith("ATTACHED")  # type: ignore[union-attr]
        _kill_watchers(_key(cfg))  # everything killed at once, the segment's watcher too
        _sigkill(procs)
        assert nodecache.segments(_key(cfg))
        path = tmp_path / "cache.yaml"
        path.write_text("".join(f"{k.upper()}: {json.dumps(v)}\n" for k, v in cfg.to_dict().items() if v is not None))
        from wirehead.cli import main

        assert main(["clean", str(path), "--yes"]) == 0
        assert not nodecache.segments(_key(cfg))


def test_the_last_user_to_exit_removes_the_segment(no_leftovers: Any) -> None:
    cfg = no_leftovers(SWAP_CAP=4)
    _fill(cfg, 4)
    holders = [_child(HOLDER, json.dumps(cfg.to_dict()), "exit") for _ in range(2)]
    for h in holders:
        assert "ATTACHED" in _finish(h)
    assert not nodecache.segments(_key(cfg))


def test_the_last_user_out_leaves_no_file_or_directory_on_the_node(make_config: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of wirehead's stays in the node cache directory once its last user is gone, by exit or by
    SIGKILL (then the segment's watcher): not the segment, not this user's directory."""
    monkeypatch.setenv(nodecache.DIR_ENV, str(tmp_path))  # this test's own "/dev/shm": no other test's segments
    cfg = make_config(SWAP_CAP=4)
    _fill(cfg, 4)
    for h in [_child(HOLDER, json.dumps(cfg.to_dict()), "exit") for _ in range(2)]:
        assert "ATTACHED" in _finish(h)
    assert os.listdir(tmp_path) == []
    with _holders(cfg, 2) as procs:
        for p in procs:
            assert p.stdout.readline().startswith("ATTACHED")  # type: ignore[union-attr]
        assert os.listdir(tmp_path) == [f"wirehead-{os.geteuid()}"]
        _sigkill(procs)
        wait_until(lambda: os.listdir(tmp_path) == [], 30, "the watcher to remove the segment and the directory")


@pytest.mark.slow  # about 5 s: a watcher's starter that takes 3 s to start
def test_the_first_read_does_not_wait_for_the_segment_watcher_to_start(make_config: Any, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The watcher's interpreter starts beside the read that created the segment (10-15 ms a generation
    otherwise spent on it), and it still removes the segment once its user is killed before it started."""
    shm = tmp_path / "shm"
    shm.mkdir()
    monkeypatch.setenv(nodecache.DIR_ENV, str(shm))  # this test's own "/dev/shm"
    started = tmp_path / "started"
    slow = tmp_path / "slow-python"  # the interpreter the reader starts its watcher with, 3 s late
    slow.write_text(f"#!/bin/sh\nsleep 3\ntouch {shlex.quote(str(started))}\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    slow.chmod(0o755)
    cfg = make_config(SWAP_CAP=4)
    _fill(cfg, 4)
    script = f"import sys\nsys.executable = {str(slow)!r}\n{HOLDER}"
    proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(cfg.to_dict()), "wait"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=str(ROOT))
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("ATTACHED"), proc.communicate()[1][-3000:] if not line else line
        assert not started.exists(), "the read waited for the watcher's interpreter to start"
        assert os.listdir(shm) == [f"wirehead-{os.geteuid()}"]
    finally:
        _sigkill([proc])
        proc.communicate()
    wait_until(started.exists, 30, "the watcher's start to go on after its reader was killed")
    wait_until(lambda: os.listdir(shm) == [], 30, "the watcher to remove the segment and the directory")


def test_a_reader_moving_to_a_newer_generation_removes_the_old_segment(no_leftovers: Any) -> None:
    cfg = no_leftovers(SWAP_CAP=2, POLL_SECONDS=0.01)
    _fill(cfg, 2)
    reader = Reader(Store(cfg), timeout=30)
    reader.get([0, 1])
    old = reader.stats()["node_segment"]
    assert os.path.exists(old + ".data")
    _fill(cfg, 2, start=10)
    assert reader.current(force=True).gen == 1
    reader.get([0])
    assert not any(os.path.exists(old + s) for s in (".data", ".idx", ".lock"))
    assert [n for n in nodecache.segments(_key(cfg)) if "-g1-" in n]
    reader.close()
    assert not nodecache.segments(_key(cfg))


# -- generations larger than memory -------------------------------------------------------------------------

STREAM = '''
import json, sys
from wirehead.reader import Reader
from wirehead.store import Store
from wirehead import WireheadConfig
from wirehead.synth import check_self_checking

def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096

cfg = WireheadConfig.load(json.loads(sys.argv[1]))
reader = Reader(Store(cfg), timeout=30)
n = len(reader)
base = rss()
seen = []
for epoch in range(2):
    for i in range(0, n, 2):
        seen += [check_self_checking(s["image"], s["label"]) for s in reader.get([i, i + 1])]
# VmHWM: this program's peak (ru_maxrss would start at the forking parent's RSS: Linux keeps it across exec)
peak = [int(ln.split()[1]) * 1024 for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0]
stats = reader.stats()
print("RESULT", json.dumps({"seen": seen, "growth": peak - base, "node": stats["node_capacity"],
                            "node_bytes": stats["node_bytes"]}))
reader.close()
'''


@pytest.mark.slow
@pytest.mark.parametrize("node_mb", [8, 0])
def test_a_generation_four_times_the_caches_streams_whole_with_bounded_memory(
        no_leftovers: Any, node_mb: int) -> None:
    # 52 samples of 1.25 MiB (64³ float32 + uint8): 65 MiB, four times NODE_CACHE_MB + READER_CACHE_MB (8 + 8)
    # or READER_CACHE_MB alone (16).  A batch (2.5 MiB) is small next to the caches, as 256³ samples are
    # next to the default caches; the RSS of a process holds its own cache and about two batches in flight
    n, reader_mb = 52, 8 if node_mb else 16
    cfg = no_leftovers(SWAP_CAP=n, NODE_CACHE_MB=node_mb, READER_CACHE_MB=reader_mb, CHUNKSIZE=1)
    _fill(cfg, n, shape=(64, 64, 64))
    gen = Store(cfg).gen_doc(0)
    caches = (node_mb + reader_mb) * 1024 * 1024
    assert gen.stored_bytes >= 4 * caches
    # one malloc arena: what the reader holds, not glibc's slack.  The prefetch thread's frees stay in a second
    # arena, where a few MiB are not given back at once: in one of two CI runs the peak was 24.2 MiB against
    # 21.2 MiB with one arena (the same every run); that slack is bounded too, not more with a larger generation
    out = _finish(_child(STREAM, json.dumps(cfg.to_dict()), env=child_env(MALLOC_ARENA_MAX="1")))
    result = json.loads(out.split("RESULT", 1)[1])
    assert sorted(result["seen"]) == sorted(list(range(n)) * 2)  # whole and correct, twice
    assert result["node"] <= node_mb * 1024 * 1024
    assert result["growth"] <= 1.5 * caches, f"peak RSS grew by {result['growth'] / 2**20:.0f} MiB"


# -- fallback -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["off", "missing", "not-a-directory", "cannot-create"])
def test_without_a_usable_node_cache_each_process_caches_its_own(
        no_leftovers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any, where: str) -> None:
    cfg = no_leftovers(SWAP_CAP=4, NODE_CACHE_MB=0 if where == "off" else 64)
    _fill(cfg, 4)
    (tmp_path / "file").write_text("")
    directory = {"missing": str(tmp_path / "nope"), "not-a-directory": str(tmp_path / "file"),
                 "cannot-create": "/proc"}.get(where)
    if directory:
        monkeypatch.setenv(nodecache.DIR_ENV, directory)
    monkeypatch.setattr(nodecache, "_said", set())
    with caplog.at_level(logging.INFO, logger="wirehead.nodecache"):
        reader = Reader(Store(cfg), timeout=30)
        values = {check_self_checking(s["image"], s["label"]) for s in reader.get([0, 1, 2, 3])}
        reader.get([0, 1])
    assert values == {0, 1, 2, 3}
    stats = reader.stats()
    assert not stats["node"] and stats["node_segment"] is None
    assert stats["cache_samples"] == 4  # this process's cache holds the generation
    lines = [r.getMessage() for r in caplog.records if r.name == "wirehead.nodecache"]
    assert len(lines) == 1 and "READER_CACHE_MB" in lines[0], lines
    reader.close()
    assert not nodecache.segments(_key(cfg))


LOCK_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("LOCKED", flush=True)
time.sleep(120)
"""


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
def test_a_reader_paused_while_it_holds_the_segment_lock_stalls_no_other_reader(no_leftovers: Any) -> None:
    # a trainer suspended (SIGSTOP) inside the segment's critical section keeps its lock: the other readers
    # of the node waited for it without a deadline.  Now they wait CONNECT_TIMEOUT once, then read from the
    # server with their own caches for the rest of the generation.
    cfg = no_leftovers(SWAP_CAP=4, CONNECT_TIMEOUT=2.0)
    _fill(cfg, 4)
    reader = Reader(Store(cfg), timeout=30, prefetch=False)
    assert check_self_checking(*reader.get([0])[0].values()) == 0  # attached, sample 0 in the segment
    segment = reader.stats()["node_segment"]
    assert segment is not None
    holder = _child(LOCK_HOLDER, segment + ".idx")
    try:
        assert holder.stdout.readline().strip() == "LOCKED"  # type: ignore[union-attr]
        holder.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        got = [check_self_checking(*s.values()) for s in reader.get([1, 2])]
        first = time.monotonic() - t0
        t0 = time.monotonic()
        got += [check_self_checking(*s.values()) for s in reader.get([3, 0])]
        second = time.monotonic() - t0
    finally:
        holder.kill()
        holder.communicate(timeout=30)
        reader.close()
    assert got == [1, 2, 3, 0]
    assert first < 2.0 + 10, f"the first read waited {first:.1f} s for a lock held by a paused process"
    assert second < 1.5, f"the next read waited {second:.1f} s again: the node cache was not left"


def test_a_node_cached_sample_is_served_from_the_segment_as_a_writable_copy(no_leftovers: Any) -> None:
    cfg = no_leftovers(SWAP_CAP=2)
    _fill(cfg, 2)
    reader = Reader(Store(cfg), timeout=30, prefetch=False)
    a = reader.get([0])[0]
    stats = reader.stats()
    assert stats["node"] and stats["node_ready"] == 1 and stats["cache_samples"] == 0  # in the node cache only
    b = reader.get([0])[0]
    a["image"][...] = -1  # callers may write to what they get: the next read is unchanged
    assert check_self_checking(b["image"], b["label"]) == 0
    assert check_self_checking(*reader.get([0])[0].values()) == 0
    reader.close()


def test_the_first_read_prefetches_the_generation_into_the_node_cache(no_leftovers: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = no_leftovers(SWAP_CAP=6)
    _fill(cfg, 6)
    reader = Reader(Store(cfg), timeout=30)
    assert len(reader) == 6 and reader.stats()["node"]
    assert reader.stats()["node_ready"] == 0  # len() alone (a DataLoader's main process) fetches nothing
    reader.get([0])
    wait_until(lambda: reader.stats()["node_ready"] == 6, 20, "the generation to be prefetched into the node cache")
    calls: list[int] = []
    original = Store.get_samples
    monkeypatch.setattr(Store, "get_samples", lambda self, sids: calls.append(1) or original(self, sids))
    other = Reader(Store(cfg), timeout=30, prefetch=False)  # another reader on the node: every read from memory
    assert sorted(check_self_checking(s["image"], s["label"]) for s in other.get(list(range(6)))) == list(range(6))
    assert calls == []
    other.close()
    reader.close()


@pytest.mark.slow  # about 1 s: it waits 0.5 s for a fill query that must not come
def test_a_read_goes_before_the_node_cache_fill(no_leftovers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # reads first: from the moment a read starts until it is answered, the background fill of the node cache
    # starts no query.  The read here first waits for the sample the fill has in flight, then queries the
    # server for its other sample: the moment the fill slipped its next query in beside the read's when only
    # the read's own query counted as demand (a cold read then fetched at 2.5 times a raw find)
    cfg = no_leftovers(SWAP_CAP=12, NODE_CACHE_MB=64)
    _fill(cfg, 12)
    log: list[str] = []
    held, release, fill_again = threading.Event(), threading.Event(), threading.Event()
    original = Store.get_samples

    def get_samples(self: Store, sids: list[str]) -> Any:
        if threading.current_thread().name == WORKER_NAME:
            log.append("fill query")
            if not held.is_set():  # the fill's first query is held until the read waits for it
                held.set()
                assert release.wait(60), "the test never released the fill's first query"
            else:
                fill_again.set()
            return original(self, sids)
        log.append("read query")
        try:
            return original(self, sids)
        finally:
            if threading.current_thread().name == "second read":
                fill_again.wait(0.5)  # a fill query started during this read would be here by now
                log.append("read query answered")

    monkeypatch.setattr(Store, "get_samples", get_samples)
    reader = Reader(Store(cfg), timeout=30)
    try:
        reader.get([11])  # the first read: the fill starts after it, from the generation's first member
        assert held.wait(60), "the fill did not start"
        assert log == ["read query", "fill query"]
        got: list[Any] = []

        def second_read() -> None:
            log.append("read starts")
            got.extend(reader.get([0, 5]))  # 0 is in the fill's hands: the read waits for it, then fetches 5

        thread = threading.Thread(target=second_read, name="second read")
        thread.start()
        wait_until(lambda: reader.stats()["waits"] == 1, 30, "the read to wait for the fill's sample")
        release.set()
        thread.join(60)
        assert [check_self_checking(s["image"], s["label"]) for s in got] == [0, 5]
        wait_until(lambda: reader.stats()["node_ready"] == 12, 30, "the fill to finish")
        # the fill's next query waited for the read (its query, and the node cache's publish, were done alone)
        assert log[2:6] == ["read starts", "read query", "read query answered", "fill query"], log
        assert log.count("read query") == 2 and reader.stats()["prefetched"] == 10  # the fill fetched the rest
    finally:
        release.set()
        reader.close()
