"""One background thread per kernel for every wirehead widget, and the widgets' lifecycle.

Widgets never start threads of their own.  They hand their background work to the kernel's
:data:`REFRESHER`: periodic calls (a dashboard's snapshot, a viewer following new generations) and
jobs written as generators, one step at a time (thumbnails one sample per step, QC one sample per
step), so a long job never holds up a dashboard for more than one step.  The thread runs while there
is work and ends when there is none.

Every widget's work stops when the widget is closed, when its controller stops, and when the notebook
cell that made it runs again (:func:`adopt` records the cell; IPython's ``pre_run_cell`` event closes
what the previous run of that cell made, so re-running ``ctl.dashboard()`` five times leaves one).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import weakref
from typing import Any, Callable, Iterator, Optional

__all__ = ["Refresher", "REFRESHER", "adopt", "current_cell"]

log = logging.getLogger(__name__)

THREAD_NAME = "wirehead-refresher"


class _Task:
    __slots__ = ("owner", "interval", "fn", "steps", "due", "name", "done")

    def __init__(self, owner: Any, name: str, interval: float, fn: Optional[Callable[[], Any]],
                 steps: Optional[Iterator[Any]]) -> None:
        self.owner = weakref.ref(owner)
        self.name = name
        self.interval = interval
        self.fn = fn
        self.steps = steps
        self.due = time.monotonic()
        self.done = threading.Event()


class Refresher:
    """Runs periodic calls and stepwise jobs of many owners in one daemon thread (thread-safe).

    A task is keyed by ``(owner, name)``: adding one with the same key replaces it (a viewer's new
    thumbnail job replaces the one in progress).  Errors of a task are logged and end that task only.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._tasks: dict[tuple[int, str], _Task] = {}
        self._thread: Optional[threading.Thread] = None

    def every(self, owner: Any, name: str, interval: float, fn: Callable[[], Any]) -> None:
        """Call ``fn()`` every ``interval`` seconds (first call at once) until cancelled."""
        self._add(_Task(owner, name, float(interval), fn, None))

    def job(self, owner: Any, name: str, steps: Iterator[Any]) -> threading.Event:
        """Advance ``steps`` one ``next()`` per turn until it ends; returns an event set when it ends."""
        task = _Task(owner, name, 0.0, None, steps)
        self._add(task)
        return task.done

    def _add(self, task: _Task) -> None:
        owner = task.owner()
        with self._lock:
            old = self._tasks.pop((id(owner), task.name), None)
            if old is not None:
                old.done.set()
            self._tasks[(id(owner), task.name)] = task
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def cancel(self, owner: Any, name: Optional[str] = None, timeout: float = 10.0) -> None:
        """Drop ``owner``'s tasks (or its task ``name``); a step in progress finishes first (waited for up
        to ``timeout`` s, unless called from the refresher itself).  With no task left the thread ends."""
        with self._lock:
            for key in [k for k in self._tasks if k[0] == id(owner) and (name is None or k[1] == name)]:
                self._tasks.pop(key).done.set()
            self._lock.notify_all()
            thread = self._thread
            idle = not self._tasks
        if idle and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def tasks(self, owner: Any = None) -> list[str]:
        """Names of the tasks (of ``owner``), e.g. ``["follow", "thumbnails"]``."""
        with self._lock:
            return [t.name for k, t in self._tasks.items() if owner is None or k[0] == id(owner)]

    @property
    def running(self) -> bool:
        """Whether the refresher thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _next(self) -> Optional[tuple[tuple[int, str], _Task]]:
        with self._lock:
            while True:
                for key, task in list(self._tasks.items()):
                    if task.owner() is None:  # its widget was garbage-collected
                        self._tasks.pop(key).done.set()
                if not self._tasks:
                    self._thread = None
                    return None
                key, task = min(self._tasks.items(), key=lambda kv: kv[1].due)
                wait = task.due - time.monotonic()
                if wait <= 0:
                    task.due = time.monotonic() + task.interval if task.fn is not None else time.monotonic()
                    return key, task
                self._lock.wait(min(wait, 1.0))

    def _run(self) -> None:
        while True:
            picked = self._next()
            if picked is None:
                return
            key, task = picked
            finished = False
            try:
                if task.fn is not None:
                    task.fn()
                else:
                    next(task.steps)  # type: ignore[arg-type]
            except StopIteration:
                finished = True
            except Exception as e:  # noqa: BLE001 - one widget's failure must not stop the others' work
                log.warning("wirehead widget task %s failed: %s: %s", task.name, type(e).__name__, e)
                finished = task.fn is None
            if finished:
                with self._lock:
                    if self._tasks.get(key) is task:
                        del self._tasks[key]
                task.done.set()


#: The kernel's one refresher.
REFRESHER = Refresher()

# -- cells: a widget made by a cell is closed when that cell runs again ---------------------------------
_current: Optional[str] = None
_by_cell: dict[str, "weakref.WeakSet[Any]"] = {}
_hooked = False
_hook_lock = threading.Lock()


def _cell_key(info: Any) -> Optional[str]:
    cell_id = getattr(info, "cell_id", None)
    if cell_id:
        return f"id:{cell_id}"
    raw = getattr(info, "raw_cell", None)
    if raw:  # a console sends no cell id: the same code run again is the same cell
        return "code:" + hashlib.sha1(raw.encode("utf-8", "replace")).hexdigest()
    return None


def _pre_run_cell(info: Any) -> None:
    global _current
    key = _cell_key(info)
    _current = key
    if key is None:
        return
    for widget in list(_by_cell.pop(key, ())):
        with contextlib.suppress(Exception):  # noqa: BLE001 - a widget's close failing must not fail the cell
            widget.close()


def _hook() -> None:
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        try:
            from IPython import get_ipython
        except ImportError:
            return
        ip = get_ipython()
        if ip is None:
            return
        ip.events.register("pre_run_cell", _pre_run_cell)
        _hooked = True
        # the cell running now (the hook was not there when it started)
        global _current
        with contextlib.suppress(Exception):  # noqa: BLE001 - no cell info: nothing to close later
            parent = ip.kernel.get_parent() if hasattr(ip, "kernel") else {}
            cell_id = (parent or {}).get("metadata", {}).get("cellId")
            code = (parent or {}).get("content", {}).get("code")
            _current = _cell_key(type("Info", (), {"cell_id": cell_id, "raw_cell": code})())


def current_cell() -> Optional[str]:
    """The key of the notebook cell running now (``None`` outside IPython)."""
    _hook()
    return _current


def adopt(widget: Any) -> None:
    """Close ``widget`` (which has ``close()``) when the cell running now runs again."""
    key = current_cell()
    if key is not None:
        _by_cell.setdefault(key, weakref.WeakSet()).add(widget)
