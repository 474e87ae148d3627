"""WireheadController: runs a manager and generators in the background of a notebook (or script).

The controller owns what it starts: threads, spawned processes and, with no server named in
the config or the environment, a private :class:`~wirehead.server.LocalMongo`.  :meth:`stop`
(also called on ``with`` exit, when the controller is garbage collected, and at interpreter
exit, i.e. kernel shutdown) ends every one of them within a deadline: it asks politely, then
terminates, then kills.

It never talks to the database itself: workers are :class:`~wirehead.generator.WireheadGenerator`
and :class:`~wirehead.manager.WireheadManager`, figures come from :func:`wirehead.monitor.snapshot`,
samples from :class:`~wirehead.dataset.MongoheadDataset`.

Process mode uses the multiprocessing *spawn* context (no forked pymongo clients, works the
same on Linux and macOS).  The factory is pickled by value with ``cloudpickle`` so a function
defined in a notebook cell (module ``__main__``) works; the child gets the config and the URI,
never a client.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Union

from ..config import ConfigSource, WireheadConfig, redact_uri
from ..connect import open_store
from ..errors import GeneratorError, WireheadError
from ..generator import WireheadGenerator
from ..isolation import finalize
from ..manager import WireheadManager
from ..monitor import snapshot as take_snapshot
from ..supervise import StopEvent, call_factory, interruptible, run_generator, spawn, watch_parent
from ..server import LocalMongo  # imported first: its exit hook must run after ours (atexit is LIFO)

__all__ = ["WireheadController", "ControllerStatus", "WorkerState"]

log = logging.getLogger(__name__)

#: Seconds stop() waits for a thread that is inside its sample factory (threads cannot be interrupted).
THREAD_GRACE_SECONDS = 2.0
#: Default SWAP_CAP when the controller is built from nothing.
DEFAULT_SWAP_CAP = 16
Factory = Callable[..., Iterable[Any]]

_INSTALL_HINT = "pip install 'wirehead[notebook]'"


@dataclass
class WorkerState:
    """One thread or process the controller started, as :meth:`WireheadController.status` reports it."""

    name: str
    role: str  # "generator" | "manager"
    mode: str  # "thread" | "process"
    pid: Optional[int]
    alive: bool
    exitcode: Optional[int]
    error: Optional[str]
    """The traceback of the exception that ended it, if one did."""
    stopping: bool = False
    """Asked to stop (by :meth:`WireheadController.stop` or ``stop_generators``)."""

    @property
    def state(self) -> str:
        """``running``, ``stopping`` (asked to stop, still running: e.g. a thread stuck in its factory),
        ``errored`` or ``finished``."""
        if self.alive:
            return "stopping" if self.stopping else "running"
        return "errored" if self.error or (self.exitcode not in (None, 0)) else "finished"


@dataclass
class ControllerStatus:
    """A :class:`~wirehead.monitor.Snapshot` of the cache plus the controller's own workers."""

    snapshot: Any
    workers: list[WorkerState] = field(default_factory=list)
    uri: str = ""
    owns_server: bool = False
    snapshot_error: Optional[str] = None
    stopped: bool = False
    """The controller was stopped: no snapshot is taken, workers show how they ended."""

    @property
    def errors(self) -> list[str]:
        """Tracebacks of the controller's workers that failed."""
        return [f"{w.name}: {w.error}" for w in self.workers if w.error]

    def format_text(self) -> str:
        lines = []
        if self.snapshot is not None:
            lines.append(self.snapshot.format_text())
        elif self.snapshot_error:
            lines.append(f"snapshot unavailable: {self.snapshot_error}")
        lines.append(f"controller: server {self.uri}{' (private, owned)' if self.owns_server else ''}")
        for w in self.workers:
            pid = f" pid {w.pid}" if w.pid else ""
            code = f" exit {w.exitcode}" if w.exitcode is not None else ""
            lines.append(f"  {w.role:9s} {w.name:12s} {w.mode:7s} {w.state}{pid}{code}")
        for e in self.errors:
            lines.append(e.rstrip())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_text()


# -- the workers' bodies ------------------------------------------------------------------------
def _format_exc(e: BaseException) -> str:
    return "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]


def _generator_process(payload: bytes, config: dict[str, Any], uri: str, name: str, rank: int,
                       n_samples: Optional[int], conn: Any) -> None:
    """Entry point of a spawned generator process (in its own session: a kernel interrupt never reaches it)."""
    gen = None
    try:
        stop = StopEvent()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        factory = _loads(payload)
        gen = WireheadGenerator(None, config=config, n_samples=n_samples, name=name, uri=uri)
        watch_parent()  # SIGTERMs us when the kernel is gone: stops us as stop() does
        if stop.is_set():
            gen.stop()
        # SIGTERM (stop()): stop after the sample in hand, or at once while the factory computes one
        count, _ = run_generator(gen, _until(stop, call_factory(factory, rank)), signals=(signal.SIGTERM,))
        conn.send(("done", count))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, then a non-zero exit
        tb = (gen.last_error if gen is not None and gen.last_error else None) or _format_exc(e)
        with contextlib.suppress(OSError, ValueError):  # the parent is gone: exit all the same
            conn.send(("error", tb))
        os._exit(1)


def _manager_process(config: dict[str, Any], uri: str, name: str, conn: Any) -> None:
    """Entry point of a spawned manager process."""
    try:
        mgr = WireheadManager(config=config, uri=uri, name=name)
        signal.signal(signal.SIGTERM, lambda *_: mgr.stop())
        watch_parent(mgr.stop)
        conn.send(("done", mgr.run()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, then a non-zero exit
        with contextlib.suppress(OSError, ValueError):  # the parent is gone: exit all the same
            conn.send(("error", _format_exc(e)))
        os._exit(1)


def _until(stop: threading.Event, samples: Iterable[Any]) -> Iterable[Any]:
    """``samples`` until ``stop`` is set (so a stop that races with the start of ``run()`` still ends it)."""
    for sample in samples:
        if stop.is_set():
            return
        yield sample


def _dumps(factory: Factory) -> bytes:
    # cloudpickle (the notebook extra) is optional here: without it, what plain pickle can send still goes
    try:
        import cloudpickle
    except ImportError:
        try:
            return pickle.dumps(factory)
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            raise ImportError(
                f"a generator factory defined in a notebook cell or in __main__ ({factory!r}) can only be sent to a "
                f"spawned process with cloudpickle: {_INSTALL_HINT} (or use mode='thread')"
            ) from e
    return cloudpickle.dumps(factory)


def _loads(payload: bytes) -> Any:
    try:  # as in _dumps: cloudpickle when installed, else what plain pickle sent
        import cloudpickle

        return cloudpickle.loads(payload)
    except ImportError:
        return pickle.loads(payload)


class _Handle:
    """A thread or process the controller started (no reference back to the controller)."""

    def __init__(self, name: str, role: str, mode: str) -> None:
        self.name = name
        self.role = role
        self.mode = mode
        self.thread: Optional[threading.Thread] = None
        self.worker: Any = None  # WireheadGenerator / WireheadManager in thread mode
        self.process: Any = None
        self.conn: Any = None
        self.error: Optional[str] = None
        self.result: Any = None
        self.stopping = False
        self.samples: Any = None  # a thread's factory iterable (interruptible: knows when it computes)

    @property
    def alive(self) -> bool:
        if self.thread is not None:
            return self.thread.is_alive()
        return self.process is not None and self.process.is_alive()

    def poll(self) -> None:
        """Collect what a process sent back (its result or its traceback)."""
        if self.conn is None:
            return
        with contextlib.suppress(EOFError, OSError):
            while self.conn.poll():
                kind, value = self.conn.recv()
                if kind == "error":
                    self.error = value
                else:
                    self.result = value

    def ask_stop(self) -> None:
        self.stopping = True
        if self.worker is not None:
            self.worker.stop()
        if self.process is not None and self.process.is_alive():
            with contextlib.suppress(OSError, ValueError):  # gone or closed meanwhile
                self.process.terminate()  # SIGTERM: the child stops after the sample in hand

    def state(self) -> WorkerState:
        self.poll()
        exitcode = self.process.exitcode if self.process is not None else None
        error = self.error
        stopped_by_us = self.stopping and exitcode in (-signal.SIGTERM, -signal.SIGKILL)
        if error is None and exitcode not in (None, 0) and not stopped_by_us:
            error = f"process exited with code {exitcode}"
        return WorkerState(self.name, self.role, self.mode, self.process.pid if self.process is not None else
                           os.getpid(), self.alive, exitcode, error, self.stopping)


class _Runtime:
    """Everything a controller started; stopped by the controller, its finaliser, or at exit."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.handles: list[_Handle] = []
        self.server: Any = None
        self.widgets: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.closed = False

    def stop_workers(self, handles: list[_Handle], timeout: float) -> list[str]:
        """Stop ``handles`` within ``timeout`` seconds; return the names of threads that would not end.

        A thread whose sample factory is computing cannot be interrupted: it gets at most
        :data:`THREAD_GRACE_SECONDS`, then is reported (it ends after the sample in hand, as a
        daemon thread that commits nothing more).
        """
        for h in handles:
            h.ask_stop()
        deadline = time.monotonic() + timeout
        grace = time.monotonic() + min(timeout, THREAD_GRACE_SECONDS)
        stuck = []
        for h in handles:
            if h.thread is not None:
                while h.thread.is_alive() and time.monotonic() < deadline:
                    h.worker.stop()  # run() clears the stop flag when it starts: ask again until it ends
                    h.thread.join(0.05)
                    if h.samples is not None and h.samples.computing and time.monotonic() > grace:
                        break  # stuck in the user's factory: waiting longer would only freeze the caller
                if h.thread.is_alive():
                    stuck.append(h.name)
            elif h.process is not None:
                h.process.join(max(0.0, deadline - time.monotonic()))
                if h.process.is_alive():
                    log.warning("%s (pid %s) did not stop within %.0f s; killing it", h.name, h.process.pid,
                                timeout)
                    h.process.kill()
                    h.process.join(5)
                h.poll()
                with contextlib.suppress(OSError):
                    h.conn.close()
                h.conn = None
        return stuck

    def shutdown(self, timeout: float = 15.0) -> None:
        self.closed = True
        # widgets first and outside the lock: a refresher in progress may be waiting for it (workers())
        for w in list(self.widgets):
            with contextlib.suppress(Exception):  # noqa: BLE001 - one widget's failure must not stop the shutdown
                w.stop()
        with self.lock:
            stuck = self.stop_workers([h for h in self.handles if h.alive or h.conn is not None], timeout)
            if stuck:
                log.warning("threads %s are still inside their sample factory; they commit nothing more and end "
                            "with their sample in hand (or with the process)", stuck)
            if self.server is not None:
                with contextlib.suppress(Exception):  # noqa: BLE001 - shutting down: the workers are stopped already
                    self.server.stop()
                self.server = None
        # then each widget shows the stop at once (workers "stopped", no rate), as a saved or exported notebook keeps it
        for w in list(self.widgets):
            show_stopped = getattr(w, "show_stopped", None)
            if show_stopped is not None:
                with contextlib.suppress(Exception):  # noqa: BLE001 - one widget's failure must not stop the shutdown
                    show_stopped()


_RUNTIMES: "weakref.WeakSet[_Runtime]" = weakref.WeakSet()
#: The live runtime of each cache in this process (kernel): a new controller of the same cache replaces it.
_BY_CACHE: "weakref.WeakValueDictionary[tuple[str, str], _Runtime]" = weakref.WeakValueDictionary()


@atexit.register
def _shutdown_all() -> None:
    for runtime in list(_RUNTIMES):
        with contextlib.suppress(Exception):  # noqa: BLE001 - at exit: every runtime gets its turn
            runtime.shutdown(timeout=10.0)


class WireheadController:
    """Starts, watches and stops a cache's manager and generators from one Python process.

    Args:
        config_path: path of a YAML config.
        config: a :class:`WireheadConfig` or a mapping, instead of ``config_path``.
        uri: a server URI overriding the config's and ``$WIREHEAD_MONGO_URI``.
        **keys: config keys (``SWAP_CAP=8, SAMPLE=["image", "label"]``) replacing the loaded ones;
            built from nothing, ``SWAP_CAP`` defaults to 16.

    With no server named (no URI argument, no ``$WIREHEAD_MONGO_URI``, no MONGO_URI or MONGOHOST
    in the config) the controller starts a private :class:`~wirehead.server.LocalMongo` and stops
    it in :meth:`stop`.

    ``start_*`` methods are idempotent while their workers run, so re-running a notebook cell
    does not start duplicates.  Methods may be called from any thread.

    Raises (at construction): :class:`~wirehead.errors.ConfigError` for a bad config;
    :class:`~wirehead.errors.ServerNotFound` / :class:`~wirehead.errors.WaitTimeout` when the
    private server cannot start.
    """

    def __init__(
        self,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        config: ConfigSource = None,
        *,
        uri: Optional[str] = None,
        **keys: Any,
    ) -> None:
        if config is None and config_path is None and not any(k.lower() == "swap_cap" for k in keys):
            keys["SWAP_CAP"] = DEFAULT_SWAP_CAP
        self.config = WireheadConfig.load(config, config_path, **keys)
        self._runtime = _Runtime()
        # garbage collection stops what it started; interpreter exit (kernel shutdown) is _shutdown_all's job,
        # which runs before LocalMongo's own exit hook, so workers stop while their server still answers
        self._finalizer = finalize(self, self._runtime.shutdown)
        self._finalizer.atexit = False
        _RUNTIMES.add(self._runtime)
        self._uri = uri or self.config.uri
        key = (self.config.dbname, self._uri or "private server")
        previous = _BY_CACHE.get(key)
        if previous is not None and not previous.closed:
            # a re-run notebook cell: Out[n] keeps the old controller alive; its workers must not run on
            log.warning("stopping the previous WireheadController of cache %r in this process (one per cache)",
                        self.config.dbname)
            previous.shutdown()
        _BY_CACHE[key] = self._runtime
        if self._uri is None:
            self._runtime.server = LocalMongo().start()
            self._uri = self._runtime.server.uri
            log.info("started a private local server at %s; it stops with this controller", self._uri)
        self._owned_server = self._runtime.server is not None

    # -- properties --------------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        """The server URI the controller and its workers use."""
        return self._uri

    @property
    def redacted_uri(self) -> str:
        return redact_uri(self._uri) or ""

    @property
    def owns_server(self) -> bool:
        """Whether this controller started (and will stop) its own server."""
        return self._runtime.server is not None

    @property
    def server_pid(self) -> Optional[int]:
        """The pid of the private server, if this controller owns one."""
        return self._runtime.server.pid if self._runtime.server is not None else None

    @property
    def running(self) -> bool:
        """Whether any thread or process it started is alive."""
        return any(h.alive for h in self._runtime.handles)

    def _config_payload(self) -> dict[str, Any]:
        return self.config.to_dict()

    def _live(self, role: str, prefix: str) -> list[_Handle]:
        return [h for h in self._runtime.handles if h.role == role and h.name.startswith(prefix) and h.alive]

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` ran (also when a newer controller of the same cache replaced this one)."""
        return self._runtime.closed

    def _check_open(self) -> None:
        if self._runtime.closed:
            raise RuntimeError("this WireheadController was stopped (by stop(), or replaced by a newer controller "
                               "of the same cache); make a new one")

    # -- starting ----------------------------------------------------------------------------------
    def start_manager(self, mode: str = "thread", *, name: str = "manager") -> WorkerState:
        """Start a :class:`~wirehead.manager.WireheadManager` (a thread or a spawned process).

        Idempotent: while a manager of this controller runs, returns it and starts nothing.
        """
        self._check_open()
        _check_mode(mode)
        with self._runtime.lock:
            live = self._live("manager", name)
            if live:
                log.info("manager %s already runs; not starting another", live[0].name)
                return live[0].state()
            handle = _Handle(name, "manager", mode)
            if mode == "thread":
                handle.worker = WireheadManager(config=self.config, uri=self._uri, name=name)
                handle.thread = threading.Thread(target=_run_in_thread, args=(handle,), name=f"wirehead-{name}",
                                                 daemon=True)
                handle.thread.start()
            else:
                self._spawn(handle, _manager_process, (self._config_payload(), self._uri, name))
            self._runtime.handles.append(handle)
            return handle.state()

    def start_generators(
        self,
        factory: Factory,
        n: int = 1,
        mode: str = "thread",
        *,
        n_samples: Optional[int] = None,
        name: str = "gen",
        restart: bool = False,
    ) -> list[WorkerState]:
        """Start ``n`` generators, each feeding the samples of ``factory()`` (or ``factory(rank)``) into the cache.

        Args:
            factory: a callable returning an iterable of samples (e.g. a generator function).
                Called once per generator, in the worker; if it takes an argument it gets the
                generator's rank ``0..n-1`` (use it to seed).
            n: how many generators.
            mode: ``"thread"`` (in this process) or ``"process"`` (spawned processes; the factory
                is pickled by value, so one defined in a notebook cell works).
            n_samples: stop each generator after this many samples (default: until the factory's
                iterable ends or :meth:`stop`).
            name: prefix of the generators' names (``gen-0``, ``gen-1``, ...), shown in status.
            restart: stop generators of this name that still run, then start new ones.

        Idempotent: while generators of this ``name`` run, returns them and starts nothing (a
        re-run cell does not double them); pass ``restart=True`` to replace them.

        Raises:
            ValueError: bad ``n`` or ``mode``.  TypeError: ``factory`` is not callable.
            ImportError: process mode with a factory that needs cloudpickle, which is missing.
        """
        self._check_open()
        if not callable(factory):
            raise TypeError(f"factory should be a callable returning an iterable of samples, got "
                            f"{type(factory).__name__}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n should be a positive integer, but got n={n!r}")
        _check_mode(mode)
        with self._runtime.lock:
            live = self._live("generator", f"{name}-")
            if live and restart:
                self._runtime.stop_workers(live, timeout=15.0)
            elif live:
                log.info("%d generators named %s-* already run; not starting more (pass restart=True to "
                         "replace them)", len(live), name)
                return [h.state() for h in live]
            payload = _dumps(factory) if mode == "process" else b""
            if mode == "thread":
                # wirehead.arrays treats an already-imported torch as usable; a torch import in progress in
                # another thread (e.g. dataset()) would make the generator threads fail.  Import it first.
                with contextlib.suppress(ImportError):
                    importlib.import_module("torch")
            started = []
            for rank in range(n):
                handle = _Handle(f"{name}-{rank}", "generator", mode)
                if mode == "thread":
                    handle.worker = WireheadGenerator(None, config=self.config, n_samples=n_samples,
                                                      name=handle.name, uri=self._uri)
                    handle.thread = threading.Thread(target=_run_in_thread, args=(handle, factory, rank),
                                                     name=f"wirehead-{handle.name}", daemon=True)
                    handle.thread.start()
                else:
                    self._spawn(handle, _generator_process,
                                (payload, self._config_payload(), self._uri, handle.name, rank, n_samples))
                self._runtime.handles.append(handle)
                started.append(handle)
            return [h.state() for h in started]

    def _spawn(self, handle: _Handle, target: Callable[..., None], args: tuple) -> None:
        parent_conn, child_conn = multiprocessing.get_context("spawn").Pipe(duplex=False)
        handle.process = spawn(target, (*args, child_conn), name=f"wirehead-{handle.name}", daemon=True)
        child_conn.close()
        handle.conn = parent_conn

    # -- stopping ----------------------------------------------------------------------------------
    def stop_generators(self, name: Optional[str] = None, timeout: float = 15.0) -> None:
        """Stop the generators (of ``name``, or all) this controller started."""
        with self._runtime.lock:
            handles = [h for h in self._runtime.handles
                       if h.role == "generator" and (name is None or h.name.startswith(f"{name}-"))]
            self._runtime.stop_workers(handles, timeout)

    def stop(self, timeout: float = 15.0, *, drop: bool = False) -> None:
        """Stop every widget refresher, thread and process this controller started, and its private server.

        Each worker is asked to stop after its sample in hand; a process still running after
        ``timeout`` seconds is killed; a thread stuck inside its sample factory is waited for at
        most :data:`THREAD_GRACE_SECONDS` (it stays ``running``/``stopping`` in :meth:`workers`
        until its factory returns).  Safe to call twice.

        Args:
            drop: also delete the cache's database (its samples, generations and worker records)
                from the server, e.g. at the end of a notebook run against ``$WIREHEAD_MONGO_URI``,
                so nothing is left and the next run starts empty.  A private server's data goes
                with the server anyway.
        """
        self._finalizer.detach()
        self._runtime.shutdown(timeout)
        if drop and not self._owned_server:
            store = open_store(self.config, self._uri)
            try:
                store.drop_database()
                log.info("dropped database %r", self.config.dbname)
            finally:
                store.close()

    close = stop

    def __enter__(self) -> "WireheadController":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- looking -----------------------------------------------------------------------------------
    def workers(self) -> list[WorkerState]:
        """The threads and processes this controller started, with their state and errors."""
        with self._runtime.lock:
            return [h.state() for h in self._runtime.handles]

    def snapshot(self) -> Any:
        """A :class:`~wirehead.monitor.Snapshot` of the cache (read through :mod:`wirehead.monitor`)."""
        if self._runtime.closed and self._owned_server:
            raise RuntimeError("this WireheadController was stopped and its private server with it: no snapshot")
        return take_snapshot(self.config, uri=self._uri)

    def status(self) -> ControllerStatus:
        """The cache's snapshot plus this controller's threads and processes (errors with tracebacks)."""
        snap, err = None, None
        if self._runtime.closed:
            return ControllerStatus(snapshot=None, workers=self.workers(), uri=self.redacted_uri,
                                    owns_server=self.owns_server, snapshot_error="controller stopped", stopped=True)
        try:
            snap = self.snapshot()
        except (WireheadError, RuntimeError) as e:  # status shows what it can: the server's error, or a stopped controller
            err = f"{type(e).__name__}: {e}"
        return ControllerStatus(snapshot=snap, workers=self.workers(), uri=self.redacted_uri,
                                owns_server=self.owns_server, snapshot_error=err)

    def dataset(self, **kwargs: Any) -> Any:
        """A :class:`~wirehead.dataset.MongoheadDataset` on this controller's server (kwargs passed on)."""
        from ..dataset import MongoheadDataset  # imports torch: only for those who ask for a dataset

        self._check_open()
        ds = MongoheadDataset(config=self.config, uri=self._uri, **kwargs)
        self._wait_first_generation(ds.timeout if ds.timeout is not None else self.config.read_timeout)
        return ds

    def _wait_first_generation(self, timeout: float) -> None:
        """Until the cache has a read generation; fail at once when every generator of ours has ended with an error.

        Raises:
            GeneratorError: every generator this controller started failed (their errors are in the message).
        """
        gens = [h for h in self._runtime.handles if h.role == "generator"]
        if not gens:
            return  # generators run elsewhere: the dataset waits (READ_TIMEOUT) and says so
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [h.state() for h in gens]
            if all(not w.alive for w in states) and all(w.state == "errored" for w in states):
                errors = "\n".join(f"  {w.name}: {((w.error or '').strip().splitlines() or ['?'])[-1]}"
                                    for w in states)
                raise GeneratorError(f"every generator of this controller failed, so no sample will come:\n{errors}\n"
                                     f"see ctl.status() for their tracebacks; fix the factory and start_generators("
                                     f"..., restart=True)")
            with contextlib.suppress(WireheadError, RuntimeError):  # not readable yet: keep waiting
                if self.snapshot().read_gen is not None:
                    return
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def dashboard(self, **kwargs: Any) -> Any:
        """A :class:`~wirehead.notebook.SwapDashboard` of this cache; its refresher stops with the controller."""
        from .dashboard import SwapDashboard  # ipywidgets (the notebook extra): the controller runs without it

        return SwapDashboard(controller=self, **kwargs)

    def viewer(self, **kwargs: Any) -> Any:
        """A :class:`~wirehead.notebook.SliceViewer` of this cache's read generation."""
        from .viewer import SliceViewer  # anywidget (the notebook extra): the controller runs without it

        return SliceViewer(controller=self, **kwargs)

    def grid(self, **kwargs: Any) -> Any:
        """A :class:`~wirehead.notebook.SampleGrid` of this cache's read generation (``grid.run_qc()`` for its QC)."""
        from .grid import SampleGrid  # anywidget (the notebook extra): the controller runs without it

        return SampleGrid(controller=self, **kwargs)

    def _register_widget(self, widget: Any) -> None:
        self._runtime.widgets.add(widget)

    def __repr__(self) -> str:
        alive = sum(h.alive for h in self._runtime.handles)
        return (f"WireheadController(uri={self.redacted_uri!r}, dbname={self.config.dbname!r}, "
                f"swap_cap={self.config.swap_cap}, workers_alive={alive}, owns_server={self.owns_server})")


def _check_mode(mode: str) -> None:
    if mode not in ("thread", "process"):
        raise ValueError(f"mode should be 'thread' or 'process', but got mode={mode!r}")


def _run_in_thread(handle: _Handle, factory: Optional[Factory] = None, rank: int = 0) -> None:
    """Body of a worker thread: errors are kept on the handle, never raised into the kernel."""
    try:
        if factory is not None:
            handle.samples = interruptible(call_factory(factory, rank))
            handle.worker.generator = handle.samples
        handle.result = handle.worker.run()
    except BaseException as e:  # noqa: BLE001 - kept on the handle and shown by status(), never raised into the kernel
        handle.error = getattr(handle.worker, "last_error", None) or _format_exc(e)
        log.error("%s %s failed: %s", handle.role, handle.name, e)
