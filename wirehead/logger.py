"""Upstream wirehead 0.9.x's logger API (``SwapLog``, ``WireheadSnapshot``, ``WireheadLogger``).

A thin view over :mod:`wirehead.monitor`: every figure comes from the project's own
:class:`~wirehead.monitor.Snapshot` and swap log; nothing here queries the server itself.
Upstream counted samples in a counter collection and renamed collections on a swap;
here buffers are generations (see the README), so each upstream field holds the nearest
true figure of this design, documented on the dataclasses below.

The ``print`` calls of :meth:`WireheadLogger.run` and :meth:`WireheadLogger.run_daemon` are
the upstream API (they write JSON Lines to stdout on request); the rest of the library logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, TextIO, Union

from .config import WireheadConfig
from .connect import open_store
from .monitor import Snapshot, snapshot as take_snapshot, swap_log

__all__ = ["SwapLog", "WireheadSnapshot", "WireheadLogger"]

log = logging.getLogger(__name__)

#: Swap log entries :meth:`WireheadLogger.history` reads (the server keeps the newest 1000).
HISTORY_LIMIT = 1000
#: Swaps a snapshot carries in ``recent_swaps`` (as upstream).
RECENT_SWAPS = 10


@dataclass
class SwapLog:
    """One swap: a full generation became the read generation.

    Fields:
        swap_timestamp: epoch seconds of the swap (the swap log's ``at``).
        prev_swap_timestamp: epoch seconds of the swap before it (``None`` for the first one logged).
        swap_duration: seconds the swapped-out buffer was live, i.e. how long the previous read
            generation served readers: ``swap_timestamp - prev_swap_timestamp`` (``None`` for the first).
        swap_count: the number of swaps of this cache up to and including this one (the state
            document's ``swaps`` counter, not only the swaps this logger saw).
        db_name: the cache's database (DBNAME).
    """

    swap_timestamp: float
    prev_swap_timestamp: Optional[float] = None
    swap_duration: Optional[float] = None
    swap_count: int = 0
    db_name: str = ""

    def to_jsonl(self) -> str:
        """This swap as one JSON line."""
        return json.dumps(dataclasses.asdict(self))

    def __str__(self) -> str:
        return self.to_jsonl()


@dataclass
class WireheadSnapshot:
    """Upstream's snapshot of a cache, filled from :class:`wirehead.monitor.Snapshot`.

    Fields (what each means here):
        samples_completed: samples committed to the write generation (``Snapshot.write_fill``);
            like upstream's counter it starts again at 0 after each swap.
        in_flight: generators alive now (each writes at most one sample at a time, so this bounds the
            samples being written but not yet committed).
        samples_started: ``samples_completed + in_flight``.
        swap_cap: SWAP_CAP.  fill_pct: ``100 * samples_completed / swap_cap``.
        is_swapping: always ``False``: a swap is one atomic update here, never seen half-done.
        swap_lock_duration: always ``None`` (no swap lock is held across a swap; the swap lease is
            ``Snapshot.lease_holder``).
        swap_count: swaps of this cache so far.  swap_timestamp: epoch seconds of the last swap.
        swap_duration: seconds the previous read generation was live (the last :class:`SwapLog`'s).
        time_since_last_swap: seconds since the last swap (how long the read generation has been live).
        avg_swap_duration: mean seconds between the recent swaps (``Snapshot.swap_intervals``).
        samples_per_s: committed samples per second over a recent window (``Snapshot.samples_per_second``).
        swaps_per_s: swaps per second since this logger's previous snapshot (0 on the first).
        write_mb_per_s: ``samples_per_s`` times the mean stored size of a sample of the write
            generation, in MiB/s.
        write_docs, write_size_mb: samples committed to the write generation and the one after it,
            and their stored MiB.  read_docs, read_size_mb: samples of the read generation and its
            stored MiB.
        mongo_active_ops: processes working on this cache now (alive generators and managers, by
            their heartbeats); upstream counted the server's current operations.
        db_name: DBNAME.  poll_interval: seconds between snapshots of this logger.
        timestamp: epoch seconds the snapshot was taken.  recent_swaps: the last 10 :class:`SwapLog`.
    """

    samples_started: int = 0
    samples_completed: int = 0
    in_flight: int = 0
    swap_cap: int = 0
    fill_pct: float = 0.0
    is_swapping: bool = False
    swap_lock_duration: Optional[float] = None
    swap_count: int = 0
    swap_timestamp: Optional[float] = None
    swap_duration: Optional[float] = None
    time_since_last_swap: Optional[float] = None
    avg_swap_duration: Optional[float] = None
    samples_per_s: float = 0.0
    swaps_per_s: float = 0.0
    write_mb_per_s: float = 0.0
    write_docs: int = 0
    write_size_mb: float = 0.0
    read_docs: int = 0
    read_size_mb: float = 0.0
    mongo_active_ops: int = 0
    db_name: str = ""
    poll_interval: float = 2.0
    timestamp: float = 0.0
    recent_swaps: list[SwapLog] = field(default_factory=list)

    def to_jsonl(self) -> str:
        """This snapshot as one JSON line (``recent_swaps`` as a list of objects)."""
        return json.dumps(dataclasses.asdict(self))

    def __str__(self) -> str:
        return self.to_jsonl()


def swap_logs(entries: list[Mapping[str, Any]], total_swaps: int, db_name: str) -> list[SwapLog]:
    """:class:`SwapLog` entries from the swap log (oldest first); ``total_swaps`` numbers the newest."""
    out: list[SwapLog] = []
    prev: Optional[float] = None
    times = [float(e["at"]) for e in entries if e.get("at") is not None]
    first = max(1, total_swaps - len(times) + 1)
    for i, at in enumerate(times):
        out.append(SwapLog(swap_timestamp=at, prev_swap_timestamp=prev,
                           swap_duration=None if prev is None else at - prev,
                           swap_count=first + i, db_name=db_name))
        prev = at
    return out


def to_upstream(snap: Snapshot, swaps: list[SwapLog], poll_interval: float,
                swaps_per_s: float = 0.0) -> WireheadSnapshot:
    """Fill a :class:`WireheadSnapshot` from the project's :class:`Snapshot` (see its field docs)."""
    mib = 1024 * 1024
    alive = sum(1 for w in snap.generators + snap.managers if w.status == "alive")
    in_flight = snap.alive_generators
    gb = snap.generation_bytes
    write_bytes = gb.get(snap.write_gen, 0) + gb.get(snap.write_gen + 1, 0)
    write_docs = snap.write_fill + snap.next_fill
    per_sample = write_bytes / write_docs if write_docs else 0.0
    intervals = snap.swap_intervals
    return WireheadSnapshot(
        samples_started=snap.write_fill + in_flight,
        samples_completed=snap.write_fill,
        in_flight=in_flight,
        swap_cap=snap.swap_cap,
        fill_pct=100.0 * snap.fill_fraction,
        is_swapping=False,
        swap_lock_duration=None,
        swap_count=snap.swaps,
        swap_timestamp=snap.last_swap_at,
        swap_duration=swaps[-1].swap_duration if swaps else None,
        time_since_last_swap=None if snap.last_swap_at is None else max(0.0, snap.taken_at - snap.last_swap_at),
        avg_swap_duration=sum(intervals) / len(intervals) if intervals else None,
        samples_per_s=snap.samples_per_second,
        swaps_per_s=swaps_per_s,
        write_mb_per_s=snap.samples_per_second * per_sample / mib,
        write_docs=write_docs,
        write_size_mb=write_bytes / mib,
        read_docs=snap.read_gen_size,
        read_size_mb=(gb.get(snap.read_gen, 0) if snap.read_gen is not None else 0) / mib,
        mongo_active_ops=alive,
        db_name=snap.dbname,
        poll_interval=poll_interval,
        timestamp=snap.taken_at,
        recent_swaps=swaps[-RECENT_SWAPS:],
    )


class WireheadLogger:
    """Upstream's logger: swap history, snapshots, a JSON Lines stream and a terminal view.

    Args:
        config_path: path of the YAML config (or a :class:`WireheadConfig` / mapping).
        poll_interval: seconds between polls of :meth:`run`, :meth:`run_daemon` and :meth:`run_tui`.

    :meth:`run` and :meth:`run_daemon` loop until :meth:`stop` (from any thread) or Ctrl-C.

    Raises:
        ConfigError: the config is invalid.  StoreUnavailable / StoreError (on use): the server cannot be used.
        ValueError: ``poll_interval`` is not a positive number.
    """

    def __init__(self, config_path: Union[str, "os.PathLike[str]", WireheadConfig, Mapping[str, Any]],
                 poll_interval: float = 2.0) -> None:
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or not poll_interval > 0:
            raise ValueError(f"poll_interval should be a positive number of seconds, "
                             f"but got poll_interval={poll_interval!r}")
        self._store = open_store(config_path, start_server=False)
        self.config = self._store.config
        self.poll_interval = float(poll_interval)
        self.db_name = self.config.dbname
        self._stop = threading.Event()
        self._prev: Optional[tuple[float, int]] = None  # (taken_at, swaps) of the previous snapshot

    def stop(self) -> None:
        """Make :meth:`run` / :meth:`run_daemon` / :meth:`run_tui` return after the current poll."""
        self._stop.set()

    def close(self) -> None:
        """Close this logger's connection."""
        self._store.close()

    def _history(self, limit: int = HISTORY_LIMIT) -> tuple[list[SwapLog], Snapshot]:
        snap = take_snapshot(self._store)
        return swap_logs(swap_log(self._store, limit=limit), snap.swaps, self.db_name), snap

    def history(self) -> list[SwapLog]:
        """The logged swaps of this cache, oldest first (up to the newest 1000)."""
        return self._history()[0]

    def snapshot(self) -> WireheadSnapshot:
        """A :class:`WireheadSnapshot` of the cache now."""
        swaps, snap = self._history(RECENT_SWAPS + 1)
        rate = 0.0
        if self._prev is not None and snap.taken_at > self._prev[0]:
            rate = max(0, snap.swaps - self._prev[1]) / (snap.taken_at - self._prev[0])
        self._prev = (snap.taken_at, snap.swaps)
        return to_upstream(snap, swaps, self.poll_interval, rate)

    def run(self, out: Optional[TextIO] = None) -> None:
        """Print every logged swap, then each new swap as it happens (JSON Lines), until :meth:`stop`."""
        out = out or sys.stdout
        self._stop.clear()
        last: Optional[float] = None
        while True:
            for entry in self.history():
                if last is None or entry.swap_timestamp > last:
                    print(entry.to_jsonl(), file=out, flush=True)
                    last = entry.swap_timestamp
            if self._stop.wait(self.poll_interval):
                return

    def run_daemon(self, out: Optional[TextIO] = None) -> None:
        """Print a :class:`WireheadSnapshot` as a JSON line every ``poll_interval`` seconds, until :meth:`stop`."""
        out = out or sys.stdout
        self._stop.clear()
        while True:
            print(self.snapshot().to_jsonl(), file=out, flush=True)
            if self._stop.wait(self.poll_interval):
                return

    def run_tui(self) -> None:
        """A curses dashboard: the project's ``wirehead watch`` frame plus the recent swaps; ``q`` quits."""
        import curses  # not in every Python build (an optional stdlib module): only the TUI needs it

        self._stop.clear()
        curses.wrapper(self._tui)

    def _tui(self, screen: Any) -> None:
        import curses  # as in run_tui

        try:
            curses.curs_set(0)
        except curses.error:  # some terminals cannot hide the cursor
            pass
        screen.timeout(int(self.poll_interval * 1000))
        while not self._stop.is_set():
            height, width = screen.getmaxyx()
            snap = take_snapshot(self._store)
            swaps = swap_logs(swap_log(self._store, limit=RECENT_SWAPS), snap.swaps, self.db_name)
            lines = snap.format_text(width=max(10, min(40, width - 60))).splitlines()
            lines.append("  recent swaps")
            lines += [f"    #{s.swap_count:<5d} at {time.strftime('%H:%M:%S', time.localtime(s.swap_timestamp))}"
                      + (f"  lived {s.swap_duration:.2f} s" if s.swap_duration is not None else "")
                      for s in reversed(swaps[-5:])] or ["    (none yet)"]
            lines.append(f"  every {self.poll_interval:g} s; q to quit")
            screen.erase()
            for y, line in enumerate(lines[:max(0, height - 1)]):
                screen.addnstr(y, 0, line, max(1, width - 1))
            screen.refresh()
            key = screen.getch()
            if key in (ord("q"), ord("Q")):
                return
