"""The tests' helpers, in one module (fixtures live in conftest.py; worker processes in workers.py).

Paths and child processes (``ROOT``, :func:`child_env`, :func:`run_py`), waiting on a condition with a
deadline (:func:`wait_until`), processes and their end (:func:`gone`, :func:`kill_tree`), workers that
print what they do (:class:`Worker`, :class:`Workers`), a watcher of generations (:class:`GenWatcher`)
and reader reports; :func:`drop_database` cleans up a database a test made itself.  Samples and caches:
:func:`sample` (every voxel carries its number), :func:`push` (commit samples), :func:`fill` (commit them and
swap them in); :func:`clear_env_credentials` (no server or credentials from the environment).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import psutil

from wirehead import WireheadConfig, WireheadGenerator, WireheadManager
from wirehead.store import Store

ROOT = Path(__file__).resolve().parent.parent
WORKERS = str(Path(__file__).resolve().parent / "workers.py")

#: Browser tests (Playwright ``page.evaluate(CANVAS_PIXELS_JS, selector)``): ``{hash, levels}`` of a drawn canvas
#: (a hash of its pixels, and how many grey levels it shows), or ``null`` before the viewer drew it.
CANVAS_PIXELS_JS = """(sel) => {
  const c = document.querySelector(sel);
  if (!c || !Number(c.dataset.drawn)) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0; const levels = new Set();
  for (let i = 0; i < d.length; i += 4) { h = (h * 31 + d[i] + 7 * d[i + 1]) | 0; levels.add(d[i]); }
  return {hash: h, levels: levels.size};
}"""


def wait_drawn(page: Any, sel: str, timeout_ms: int = 30_000) -> None:
    """Wait until the viewer canvas ``sel`` of a Playwright ``page`` is drawn (its ``data-drawn`` count is above 0)."""
    page.wait_for_function(f"() => Number(document.querySelector('{sel}')?.dataset.drawn) > 0", timeout=timeout_ms)


def route_offline(page: Any) -> list[str]:
    """Abort every request of a Playwright ``page`` but ``file:`` ones (offline); returns the list of aborted URLs."""
    blocked: list[str] = []

    def offline(route: Any) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    return blocked


def drop_database(target: "WireheadConfig | str", dbname: Optional[str] = None) -> None:
    """Drop a config's database, or database ``dbname`` of the server at URI ``target`` (cleaning up after a test)."""
    config = target if isinstance(target, WireheadConfig) else WireheadConfig(SWAP_CAP=1, MONGO_URI=target,
                                                                              DBNAME=dbname)
    store = Store(config)
    try:
        store.drop_database()
    finally:
        store.close()


def sample(i: int, shape: tuple[int, ...] = (4, 4, 4)) -> tuple[np.ndarray, np.ndarray]:
    """A sample (image float32, label int32) whose every voxel carries its number: mixing or partial data shows."""
    return np.full(shape, i, np.float32), np.full(shape, i, np.int32)


def push(cfg: WireheadConfig, values: Any, make: Any = sample) -> list[str]:
    """Commit ``make(v)`` for each of ``values`` with one generator (closed after); return the sample ids."""
    gen = WireheadGenerator(config=cfg)
    try:
        return [gen.push(make(v)) for v in values]
    finally:
        gen.close()


def fill(cfg: WireheadConfig, values: Any, make: Any = sample) -> list[str]:
    """:func:`push` the samples, then swap them in with one manager step (they are the next read generation)."""
    sids = push(cfg, values, make)
    with WireheadManager(config=cfg) as manager:
        manager.step()
    return sids


def swap_in(cfg: WireheadConfig, samples: Any) -> None:
    """Commit ``samples`` while a manager holds the swap lease (so the pusher never swaps them in itself),
    then swap them in with that manager's step; they must fill the generation."""
    gen = WireheadGenerator(config=cfg, name="pusher")
    mgr = WireheadManager(config=cfg)
    try:
        mgr.step()  # the manager holds the lease, so the pusher does not swap
        for s in samples:
            gen.push(s)
        assert mgr.step().swapped
    finally:
        gen.close()


def fill_self_checking(cfg: WireheadConfig, n: int, shape: tuple[int, ...] = (16, 16, 16), start: int = 0) -> list[str]:
    """:func:`fill` with ``n`` self-checking samples (``wirehead.synth.make_self_checking``) numbered from ``start``."""
    from wirehead.synth import make_self_checking

    rng = np.random.default_rng(start)
    return fill(cfg, range(start, start + n), make=lambda i: make_self_checking(
        rng.random(shape, dtype=np.float32), rng.integers(0, 9, shape, dtype=np.uint8), i))


def memory_owner(arr: np.ndarray) -> np.ndarray:
    """The array that owns ``arr``'s memory (views of it keep it alive, not ``arr`` itself): weakref it to see
    whether a decoded sample still takes memory."""
    while isinstance(arr.base, np.ndarray):
        arr = arr.base
    return arr


def trap_unpickling(monkeypatch: Any) -> list[str]:
    """Make every unpickling / torch.load / np.load entry point record its call and fail; return the calls."""
    import _pickle
    import pickle

    import torch

    calls: list[str] = []

    def trap(name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> None:
            calls.append(name)
            raise AssertionError(f"{name} was called on stored bytes")
        return fail

    for mod, attr in ((pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (pickle, "_loads"),
                      (_pickle, "loads"), (_pickle, "load"), (torch, "load"), (np, "load")):
        monkeypatch.setattr(mod, attr, trap(f"{mod.__name__}.{attr}"))
    return calls


def clear_env_credentials(monkeypatch: Any) -> None:
    """Unset the environment's server URI and credentials for one test (``monkeypatch`` restores them)."""
    for var in ("WIREHEAD_MONGO_URI", "WIREHEAD_MONGO_USERNAME", "WIREHEAD_MONGO_PASSWORD"):
        monkeypatch.delenv(var, raising=False)


def child_env(uri: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for child processes: the repo importable, the test server as the default."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    if uri:
        env["WIREHEAD_MONGO_URI"] = uri
    env.update(extra)
    return env


def nbconvert(*args: str, cwd: Path) -> None:
    """``jupyter nbconvert ARGS`` in ``cwd``, its kernel importing this checkout; fails the test on an error."""
    proc = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", *args], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]


def run_py(code: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run Python code in a child process with a deadline."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, **kwargs)


class Lines:
    """The lines a child process writes to a pipe (stripped), collected by a thread."""

    def __init__(self, pipe: Any) -> None:
        self.lines: list[str] = []
        self.ended = False  # the pipe was closed (the child exited)
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe: Any) -> None:
        for line in pipe:
            with self._cond:
                self.lines.append(line.strip())
                self._cond.notify_all()
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def wait_for(self, match: Any, count: int = 1, timeout: float = 60.0) -> list[str]:
        """The lines ``match(line)`` is true of, once there are ``count`` (fewer: the deadline passed, or the
        pipe was closed first)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                hits = [ln for ln in self.lines if match(ln)]
                left = deadline - time.monotonic()
                if len(hits) >= count or left <= 0 or self.ended:
                    return hits
                self._cond.wait(min(left, 0.5))

    def text(self) -> str:
        with self._cond:
            return "\n".join(self.lines)


class Worker:
    """One worker process whose stdout lines are collected by a thread."""

    def __init__(self, role: str, config: dict[str, Any], *args: str) -> None:
        self.role = role
        self.proc = subprocess.Popen(
            [sys.executable, WORKERS, role, json.dumps(config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=str(ROOT),
        )
        self.out = Lines(self.proc.stdout)

    @property
    def lines(self) -> list[str]:
        return self.out.lines

    def wait_for(self, prefix: str, count: int = 1, timeout: float = 60.0) -> str:
        """Block until ``count`` lines starting with ``prefix`` were printed; return the last one."""
        hits = self.out.wait_for(lambda ln: ln.startswith(prefix), count, timeout)
        if len(hits) < count:
            raise AssertionError(f"{self.role} printed {len(hits)}/{count} {prefix!r} lines; "
                                 f"exit={self.proc.poll()} stderr={self.stderr()[-2000:]}")
        return hits[count - 1]

    def committed(self) -> list[tuple[str, int]]:
        return [(ln.split()[1], int(ln.split()[2])) for ln in list(self.lines) if ln.startswith("COMMITTED")]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.proc.wait(10)

    def stderr(self) -> str:
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        try:
            return self.proc.stderr.read()
        except ValueError:
            return ""

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)


class Workers:
    """Starts workers and kills every one of them on exit, also when the test fails."""

    def __init__(self, config: Any) -> None:
        self.keys = {k.upper(): v for k, v in config.to_dict().items() if v is not None}
        self.all: list[Worker] = []

    def start(self, role: str, *args: str, **overrides: Any) -> Worker:
        w = Worker(role, {**self.keys, **overrides}, *args)
        self.all.append(w)
        return w

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: Any) -> None:
        for w in self.all:
            if w.proc.poll() is None:
                w.proc.kill()
        for w in self.all:
            try:
                w.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (w.proc.stdout, w.proc.stderr):
                if stream is not None:
                    stream.close()


class GenWatcher:
    """Polls the generation documents and records which generation each sample was in."""

    def __init__(self, store: Any, interval: float = 0.05) -> None:
        self.store = store
        self.interval = interval
        self.member_of: dict[str, set[int]] = {}
        self.read_gens: list[int] = []
        self.sizes: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval)

    def poll(self) -> None:
        try:
            docs = self.store.gen_docs()
            state = self.store.state()
        except Exception:  # noqa: BLE001 - the server may be down in fault tests
            return
        for d in docs:
            if d.sealed or (state.read_gen is not None and d.gen <= state.read_gen):
                self.sizes[d.gen] = d.n
            for sid in d.members:
                self.member_of.setdefault(sid, set()).add(d.gen)
        if state.read_gen is not None and (not self.read_gens or self.read_gens[-1] != state.read_gen):
            self.read_gens.append(state.read_gen)

    def __enter__(self) -> "GenWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self.poll()


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned); fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def freeze_group(pgid: int, timeout: float = 10.0) -> None:
    """SIGSTOP process group ``pgid`` (a server and its watchdog) and wait until every process of it is stopped:
    the signal is delivered asynchronously, and a request sent at once may be answered first."""
    os.killpg(pgid, signal.SIGSTOP)

    def stopped() -> bool:
        members = []
        for proc in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(proc.pid) == pgid:
                    members.append(proc.status())
            except (ProcessLookupError, psutil.Error):
                continue
        return bool(members) and all(st == psutil.STATUS_STOPPED for st in members)

    wait_until(stopped, timeout, f"process group {pgid} to be stopped", interval=0.01)


def gone(*pids: int) -> bool:
    """Whether every process of ``pids`` has ended (exited, or a zombie waiting to be reaped)."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill a child and everything under it, and reap it (for finally blocks)."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        family = []
    for p in family:
        try:
            p.kill()
        except psutil.Error:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def read_report(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def check_reader_report(report: dict[str, Any], member_of: Optional[dict[str, set[int]]] = None) -> dict[int, set[int]]:
    """Assert a reader saw no partial/mixed sample and no sample in two generations; return id -> gens."""
    assert report["bad"] == [], report["bad"][:3]
    seen: dict[int, set[int]] = {}
    for gen, sample_id in report["reads"]:
        seen.setdefault(sample_id, set()).add(gen)
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    assert not twice, f"samples served in two read generations: {list(twice.items())[:5]}"
    return seen


def write_config(path: Path, cfg: "WireheadConfig", **changes: Any) -> Path:
    """``cfg`` (plus ``changes``) as a YAML config file at ``path``, for the command line."""
    import yaml

    keys = {k.upper(): v for k, v in cfg.to_dict().items() if v is not None}
    keys.update(changes)
    path.write_text(yaml.safe_dump(keys))
    return path
