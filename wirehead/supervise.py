"""Worker processes: spawning, watching the parent, stopping, calling a factory.

The one place where wirehead starts and stops the processes of generators and managers (the
CLI, the notebook controller and ``examples/local`` all use it):

* :func:`spawn` starts ``target(*args)`` in a *spawned* process (no fork: safe with threads and
  pymongo clients) that runs in **its own session** (``os.setsid``), so a terminal's Ctrl-C or a
  Jupyter kernel interrupt (SIGINT to the kernel's process group) never reaches it: only its
  owner decides when it stops.
* :func:`watch_parent` (called in the child) stops the worker when the process that spawned it
  is gone, even if that one was killed with SIGKILL, and exits after a grace period if the
  worker does not end by itself.
* :func:`stop_processes` asks every process to stop (SIGTERM), waits, and kills only what is
  still running after the timeout.
* :func:`call_factory` calls a user's sample factory the same way everywhere: ``rank=`` when it
  has a ``rank`` parameter, else the rank as its only positional argument when it takes one
  (and no keyword arguments are given), else no argument.
* :func:`interruptible` and :func:`stop_on_signals` make a signal stop a generator after the
  sample in hand, or at once when the signal arrives while the factory computes a sample (a
  stuck factory still ends); a second signal always ends it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import inspect
import logging
import multiprocessing
import os
import signal
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Optional

__all__ = ["call_factory", "spawn", "watch_parent", "stop_processes", "interruptible", "stop_on_signals",
           "run_generator", "Interrupted", "StopEvent", "pid_alive", "process_start", "same_process", "signal_recorded"]

log = logging.getLogger(__name__)


def pid_alive(pid: int, reap: bool = False) -> bool:
    """Whether process ``pid`` runs; a zombie counts as dead.

    ``reap``: when ``pid`` is a zombie child of this process, reap it on the way (only for children that
    nothing else waits for: reaping a ``multiprocessing`` or ``subprocess`` child here hides its exit from it).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if reap:
        try:  # a zombie child still answers kill(0)
            done, _ = os.waitpid(pid, os.WNOHANG)
            return done == 0
        except ChildProcessError:
            pass
    try:  # a zombie (of another parent, or not reaped): dead, whatever kill(0) says (Linux)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def process_start(pid: int) -> Optional[int]:
    """When process ``pid`` started (clock ticks after boot, field 22 of ``/proc/<pid>/stat``), or None
    where it does not run or this is not known (no ``/proc``).

    A pid alone names whatever process has it now: after a reboot, an OOM kill or enough time, a
    recorded pid belongs to another process.  ``(pid, start)`` names one process for good."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def same_process(pid: Any, start: Any) -> bool:
    """Whether the process recorded as ``(pid, start)`` (see :func:`process_start`) still runs.

    A record without a start time is trusted only where start times cannot be read (no ``/proc``)."""
    if not isinstance(pid, int) or pid <= 0 or not pid_alive(pid, reap=True):
        return False
    now = process_start(pid)
    if now is None and not os.path.isdir("/proc/self"):
        return True  # a platform without /proc: the pid is all there is
    return now is not None and now == start


def signal_recorded(pid: Any, start: Any, sig: int, *, group: bool = False, what: str = "process") -> bool:
    """Send ``sig`` to the recorded process ``(pid, start)`` (its process group with ``group``), only if
    :func:`same_process` says it is still that process; returns whether it was sent.

    Every signal wirehead sends to a process it recorded (rather than started in this process) goes
    through here: a stale record (the pid reused by an unrelated process) leads to a log line, never a signal.
    """
    if not same_process(pid, start):
        log.info("not signalling %s pid %s: it no longer runs (a stale record; the pid may belong to another "
                 "process now)", what, pid)
        return False
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def flock_within(fd: int, op: int, seconds: float, path: str) -> None:
    """``fcntl.flock(fd, op)`` (``LOCK_EX`` or ``LOCK_SH``), waiting at most ``seconds``: a process paused
    (SIGSTOP, a suspended job) while it holds the lock must not stall every other process for good.

    Raises:
        OSError: ``errno.ETIMEDOUT`` when ``path`` (named in the message) stayed locked that long.
    """
    try:
        fcntl.flock(fd, op | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    deadline = time.monotonic() + seconds
    pause = 0.0002
    while True:
        time.sleep(pause)
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise OSError(errno.ETIMEDOUT, f"{path} stayed locked for {seconds:g} s: a process that holds "
                              "it is paused or stuck") from None
        pause = min(pause * 2, 0.005)


#: Seconds a worker whose parent died gets to end by itself before it exits.
PARENT_GRACE_SECONDS = 5.0


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by :func:`stop_on_signals` to end a factory or a second-signal exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signum


def call_factory(factory: Callable[..., Any], rank: int, kwargs: Optional[dict[str, Any]] = None) -> Any:
    """Call a sample factory for the worker of index ``rank``.

    ``factory(**kwargs, rank=rank)`` when it has a parameter named ``rank``; otherwise
    ``factory(rank)`` when no ``kwargs`` are given and it takes a positional argument (a notebook's
    ``def factory(seed): ...``); otherwise ``factory(**kwargs)``.
    """
    kwargs = dict(kwargs or {})
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return factory(**kwargs)
    if "rank" in params and "rank" not in kwargs:
        return factory(**kwargs, rank=rank)
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                            p.VAR_POSITIONAL)]
    if positional and not kwargs:
        return factory(rank)
    return factory(**kwargs)


def _child_entry(target: Callable[..., None], args: tuple) -> None:
    """First code of every spawned worker: leave the parent's session, then run ``target``."""
    with contextlib.suppress(OSError):
        os.setsid()  # a Ctrl-C / kernel interrupt sent to the parent's process group no longer reaches us
    target(*args)


def spawn(target: Callable[..., None], args: tuple = (), name: Optional[str] = None,
          daemon: bool = False) -> multiprocessing.process.BaseProcess:
    """Start ``target(*args)`` in a spawned process in its own session; return the started process.

    ``target`` and ``args`` must be picklable (a module-level function and plain data).  The
    child should call :func:`watch_parent` so that it ends with its parent.
    """
    ctx = multiprocessing.get_context("spawn")
    # SIGINT is ignored from the fork until the child's os.setsid(): a Ctrl-C at that instant cannot kill it
    old = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if old is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = ctx.Process(target=_child_entry, args=(target, args), name=name, daemon=daemon)
        proc.start()
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    return proc


def watch_parent(stop: Optional[Callable[[], None]] = None, grace: float = PARENT_GRACE_SECONDS,
                 interval: float = 0.5, parent: Optional[int] = None) -> threading.Thread:
    """In a child: stop when the parent process is gone, then exit after ``grace`` seconds.

    ``stop`` defaults to sending SIGTERM to this process, so its own handler (see
    :func:`stop_on_signals`) stops the worker as a supervisor's stop would, interrupting a
    factory that computes a sample.  ``parent`` defaults to the current parent pid.  A daemon
    thread polls ``os.getppid()`` every ``interval`` seconds (the parent may have been killed
    with SIGKILL, so nothing tells us); when the worker has not ended ``grace`` seconds after
    the stop (e.g. it retries a private server that died with its owner), the process exits
    with code 3.
    """
    parent = os.getppid() if parent is None else parent

    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        log.warning("parent process %d is gone; stopping", parent)
        with contextlib.suppress(Exception):  # noqa: BLE001 - whatever stop() raises, the process exits below
            if stop is None:
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                stop()
        time.sleep(grace)
        os._exit(3)

    thread = threading.Thread(target=loop, name="wirehead-parent-watch", daemon=True)
    thread.start()
    return thread


def stop_processes(procs: Iterable[Any], timeout: float = 10.0, *, signal_first: bool = True) -> list[Any]:
    """SIGTERM every live process, wait up to ``timeout`` s in all, SIGKILL the rest; reap all.

    Returns the processes that had to be killed.
    """
    procs = list(procs)
    if signal_first:
        for p in procs:
            if p.is_alive():
                with contextlib.suppress(OSError, ValueError):  # gone or closed meanwhile
                    p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    killed = [p for p in procs if p.is_alive()]
    for p in killed:
        log.warning("process %s (pid %s) did not stop within %.0f s; killing it", p.name, p.pid, timeout)
        with contextlib.suppress(OSError, ValueError):  # gone or closed meanwhile
            p.kill()
    for p in killed:
        p.join(5)
    return killed


class _Interruptible:
    """Wraps a factory's iterable; knows whether the main thread is inside the factory right now."""

    def __init__(self, samples: Iterable[Any]) -> None:
        self._it = iter(samples)
        self.computing = False

    def __iter__(self) -> "_Interruptible":
        return self

    def __next__(self) -> Any:
        self.computing = True
        try:
            return next(self._it)
        finally:
            self.computing = False


def interruptible(samples: Iterable[Any]) -> _Interruptible:
    """Wrap a factory's samples for :func:`stop_on_signals` (``computing`` is true inside the factory)."""
    return _Interruptible(samples)


class StopEvent:
    """:class:`threading.Event`'s ``set``/``is_set``/``clear``/``wait``, safe to ``set()`` from a signal handler.

    A Python signal handler runs in the main thread between two bytecodes.  ``threading.Event`` guards its
    flag with a plain lock, which the main thread holds for a moment each time round an ``Event.wait()``
    loop: a handler that sets it (a ``signal.signal(SIGTERM, lambda *_: manager.stop())``) deadlocks when
    the signal lands in that moment, and the process hangs for good (a server's watchdog did, in CI).  This
    event's lock is re-entrant, so the handler takes it even then; a ``wait()`` interrupted before it began
    waiting returns at its timeout at the latest.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._flag = False

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._flag = False

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Until set or ``timeout`` seconds passed; whether it is set."""
        with self._cond:
            if not self._flag:
                self._cond.wait(timeout)
            return self._flag


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], None], samples: Optional[_Interruptible] = None,
                    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopEvent]:
    """On SIGINT/SIGTERM call ``stop()`` instead of raising; yields an event set by the first signal.

    The first signal lets the sample in hand be committed, unless it arrives while the main
    thread computes a sample in ``samples`` (see :func:`interruptible`): then :class:`Interrupted`
    is raised at once (nothing was written yet).  A second signal raises :class:`Interrupted`
    wherever the main thread is.  ``event.signum`` holds the first signal.  ``stop()`` runs in the
    signal handler: it must not take a plain lock (generators' and managers' ``stop()`` set a
    :class:`StopEvent`).  From a thread other than the main one, it does nothing but yield the event.
    """
    event = StopEvent()
    event.signum = None  # type: ignore[attr-defined]
    if threading.current_thread() is not threading.main_thread():
        yield event
        return

    def handler(signum: int, frame: Any) -> None:
        if event.is_set():
            raise Interrupted(signum)
        event.signum = signum  # type: ignore[attr-defined]
        event.set()
        stop()
        if samples is not None and samples.computing:
            raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield event
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_generator(gen: Any, samples: Iterable[Any],
                  signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> tuple[int, Optional[int]]:
    """Run a :class:`~wirehead.generator.WireheadGenerator` on ``samples`` until done or signalled.

    Returns ``(samples committed, the signal that stopped it or None)``.  The first of
    ``signals`` stops it after the sample in hand, or at once while the factory computes a
    sample (a stuck factory ends too); a second one ends it wherever it is.  Errors of the
    generator propagate.
    """
    wrapped = interruptible(samples)
    gen.generator = wrapped
    with stop_on_signals(gen.stop, wrapped, signals) as stopped:
        try:
            gen.run()
        except Interrupted:
            pass
    return gen.produced, stopped.signum
