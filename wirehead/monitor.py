"""Monitoring: a :class:`Snapshot` of the whole cache, and the swap log.

One source of truth for "what is the system doing", collected here and rendered elsewhere: as
text by :mod:`wirehead.formatting` (``wirehead status`` / ``wirehead watch``), as widgets by the
notebook dashboard (the same fields, through the same formatters).  ``fill_bar`` and
``swap_log_lines`` are re-exported from :mod:`wirehead.formatting` for older imports.

A snapshot is read from the store in a few cheap queries (the state document,
the generation documents without their member lists, the worker heartbeats, the
recent swap log and document counts) and never writes: looking at a cache that
does not exist yet does not create it.  No query returns a member list or a chunk
id, and the document counts (which scan the chunks: 0.25 s at SWAP_CAP 1000 here) are
taken at most every COUNT_SECONDS per cache and process, so what a snapshot costs does
not grow with SWAP_CAP (a dashboard takes one a second): orphans are counted as stored
samples less those the generations hold.

``samples_per_second`` is the committed rate over a recent window: the sizes of
the generations swapped since the window's start plus what the write generation
(and the one after it) hold now, divided by the window's length.  Every term is
a count of committed samples, so it can never go negative across swaps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from . import connect
from .config import ConfigSource
from .formatting import fill_bar, json_safe, snapshot_text, swap_log_lines
from .store import Store

__all__ = ["Snapshot", "WorkerInfo", "snapshot", "swap_log", "swap_log_lines", "fill_bar"]

#: Swap log entries a snapshot reads (for the intervals and the rate window).
SWAP_HISTORY = 20
#: The rate window reaches back at least this far (when the swap log allows it).
RATE_WINDOW_SECONDS = 60.0

#: Document counts (chunks, stored samples) are re-taken at most this often per cache in a process.
COUNT_SECONDS = 30.0

SnapshotSource = Union[ConfigSource, Store]

_counted: dict[tuple[str, str], tuple[float, dict[str, int]]] = {}  # (uri, dbname) -> (when, counts)


@dataclass
class WorkerInfo:
    """One generator or manager as its heartbeat record shows it."""

    id: str
    kind: str
    """``"generator"`` or ``"manager"``."""
    name: str
    host: Optional[str]
    pid: Optional[int]
    status: str
    """``"alive"``, ``"stalled"`` (a generator that beats but committed nothing for :func:`stalled_after`
    seconds), ``"dead"`` (silent past DEAD_AFTER_SECONDS), ``"errored"``, ``"finished"`` or ``"stopped"``."""
    produced: int
    """Samples committed (generators); swaps done (managers)."""
    last_error: Optional[str]
    seconds_since_beat: float
    started: Optional[float] = None
    samples_per_second: float = 0.0
    """Lifetime mean commit rate of this generator (0 for managers)."""
    seconds_since_progress: Optional[float] = None
    """Seconds since the generator committed its last sample (or started); ``None`` when not recorded."""

    @property
    def last_error_line(self) -> Optional[str]:
        """The last non-empty line of ``last_error`` (the exception), or ``None``."""
        if not self.last_error:
            return None
        lines = [ln.strip() for ln in str(self.last_error).splitlines() if ln.strip()]
        return lines[-1] if lines else None


@dataclass
class Snapshot:
    """The state of one cache at one moment; JSON-serialisable with :meth:`to_json`."""

    taken_at: float
    dbname: str
    uri: str
    """The server URI with any password replaced by ``***``."""
    swap_cap: int
    write_gen: int
    read_gen: Optional[int]
    write_fill: int
    """Samples committed to the write generation."""
    fill_fraction: float
    """``write_fill / swap_cap``, in [0, 1]."""
    next_fill: int
    """Samples already committed to the generation after the write generation (overflow)."""
    swaps: int
    last_swap_at: Optional[float]
    swap_intervals: list[float]
    """Seconds between consecutive recent swaps, oldest first."""
    samples_per_second: float
    """Committed samples per second over a recent window; never negative."""
    read_gen_size: int
    read_gen_age: Optional[float]
    """Seconds since the read generation became readable."""
    read_gen_reads: int
    """Reads of the read generation's samples reported by datasets (batched, so a little behind)."""
    reads_per_sample: float
    reuse_wait_seconds: float
    """Seconds readers waited because of REUSE_CAP on the read generation."""
    generation_bytes: dict[int, int]
    """Stored bytes of every live generation."""
    orphan_samples: int
    """Stored samples that no generation holds, beyond one being written per live generator: left by
    writers that died, awaiting the orphan sweep (counted from document counts, not member lists)."""
    lease_holder: Optional[str]
    """Who holds the swap lease, or ``None`` when nobody holds an unexpired one."""
    lease_expires_in: float
    generators: list[WorkerInfo]
    managers: list[WorkerInfo]
    errors: list[str]
    # -- extras -----------------------------------------------------------------
    initialised: bool = True
    """False when the cache's state document does not exist yet (nothing ever ran)."""
    sample: list[str] = field(default_factory=list)
    dead_after_seconds: float = 30.0
    reuse_cap: int = 0
    chunk_docs: int = 0
    """Chunk documents stored (re-counted at most every COUNT_SECONDS)."""
    stored_samples: int = 0
    """Samples stored, committed or not (re-counted at most every COUNT_SECONDS)."""
    swap_request: Optional[int] = None

    # -- views ------------------------------------------------------------------
    @property
    def alive_generators(self) -> int:
        return sum(1 for g in self.generators if g.status == "alive")

    @property
    def health(self) -> str:
        """One word for the generators, as the dashboard's bar colour shows it.

        ``"ok"`` (some generator alive and committing), ``"stalled"`` (none committing, some
        stalled), ``"errored"`` (none alive or stalled; some errored), ``"dead"`` (the same, some
        silent past DEAD_AFTER_SECONDS: killed or paused), ``"stopped"`` (all
        finished or stopped) or ``"idle"`` (no generator seen).
        """
        statuses = {g.status for g in self.generators}
        if "alive" in statuses:
            return "ok"
        if "stalled" in statuses:
            return "stalled"
        if "errored" in statuses:
            return "errored"
        if "dead" in statuses:
            return "dead"
        return "stopped" if statuses else "idle"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts, numbers, strings); ``generation_bytes`` keeps int keys."""
        return dataclasses.asdict(self)

    def to_json(self, indent: Optional[int] = None) -> str:
        """The snapshot as JSON (``generation_bytes`` keys become strings)."""
        return json.dumps(json_safe(self.to_dict()), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Snapshot":
        """Rebuild a snapshot from :meth:`to_dict` or parsed :meth:`to_json` output."""
        d = dict(data)
        d["generators"] = [WorkerInfo(**w) for w in d.get("generators", [])]
        d["managers"] = [WorkerInfo(**w) for w in d.get("managers", [])]
        d["generation_bytes"] = {int(k): int(v) for k, v in d.get("generation_bytes", {}).items()}
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def format_text(self, width: int = 40) -> str:
        """A readable table: what ``wirehead status`` prints and ``wirehead watch`` refreshes
        (see :func:`wirehead.formatting.snapshot_text`)."""
        return snapshot_text(self, width)

    def __str__(self) -> str:
        return self.format_text()


# -- reading a snapshot ------------------------------------------------------------------
def _store_for(source: SnapshotSource, uri: Optional[str]) -> Store:
    """``source`` itself when it is a Store, else a store that only looks: a config with no server
    reads the shared local server when it runs and never starts one (StoreUnavailable instead)."""
    return source if isinstance(source, Store) else connect.open_store(source, uri, start_server=False)


def snapshot(source: SnapshotSource, *, uri: Optional[str] = None) -> Snapshot:
    """Take a :class:`Snapshot` of a cache.

    Args:
        source: a :class:`WireheadConfig`, a YAML path, a mapping of keys, or a :class:`Store`.
        uri: a server URI overriding the config's.

    Raises:
        ConfigError: the config is invalid.  StoreUnavailable / StoreError: the server cannot be used.
    """
    store = _store_for(source, uri)
    try:
        return _take(store)
    finally:
        if store is not source:
            store.close()


def _take(store: Store) -> Snapshot:
    cfg = store.config
    now = time.time()
    state = store.peek_state()
    gens = {d.gen: d for d in store.gen_docs(members=False)}
    log = store.swap_log(SWAP_HISTORY)
    records = store.workers()
    counts = _counts(store) if state is not None else {}

    write_gen = state.write_gen if state else 0
    read_gen = state.read_gen if state else None
    wdoc = gens.get(write_gen)
    write_fill = wdoc.n if wdoc else 0
    next_fill = gens[write_gen + 1].n if write_gen + 1 in gens else 0
    rdoc = gens.get(read_gen) if read_gen is not None else None
    read_size = rdoc.n if rdoc else 0
    read_since = (rdoc.read_since if rdoc else None) or (state.swapped_at if state else None)
    reads = rdoc.reads if rdoc else 0

    generators: list[WorkerInfo] = []
    managers: list[WorkerInfo] = []
    errors: list[str] = []
    for rec in records:
        info = _worker(rec, now, cfg.dead_after_seconds)
        (generators if info.kind == "generator" else managers).append(info)
        where = f"{info.kind} {info.name} (host {info.host}, pid {info.pid})"
        if info.last_error_line:
            errors.append(f"{where}: {info.last_error_line}")
        elif info.status == "dead":
            errors.append(f"{where} silent for {info.seconds_since_beat:.0f} s "
                          f"(DEAD_AFTER_SECONDS={cfg.dead_after_seconds:g}): presumed dead")
        elif info.status == "stalled":
            errors.append(f"{where} alive but committed nothing for {info.seconds_since_progress:.0f} s "
                          f"(after {info.produced} samples): its sample factory may be stuck")
    generators.sort(key=lambda w: w.started or 0.0)
    # what no generation holds, less the one sample each live writer may have written and not committed yet
    writing = sum(1 for g in generators if g.status in ("alive", "stalled"))
    orphans = max(0, int(counts.get("samples", 0)) - sum(d.n for d in gens.values()) - writing)
    managers.sort(key=lambda w: w.started or 0.0)

    times = [float(e["at"]) for e in log if e.get("at") is not None]
    intervals = [b - a for a, b in zip(times, times[1:])]
    rate = _rate(now, log, write_fill + next_fill, wdoc.created if wdoc else None, generators)

    holder = state.lease_holder if state else None
    expires_in = (state.lease_expires - now) if state else 0.0
    if holder is None or expires_in <= 0:
        holder, expires_in = None, 0.0

    return Snapshot(
        taken_at=now,
        dbname=cfg.dbname,
        uri=store.redacted_uri,
        swap_cap=cfg.swap_cap,
        write_gen=write_gen,
        read_gen=read_gen,
        write_fill=write_fill,
        fill_fraction=min(1.0, write_fill / cfg.swap_cap),
        next_fill=next_fill,
        swaps=state.swaps if state else 0,
        last_swap_at=state.swapped_at if state else None,
        swap_intervals=intervals,
        samples_per_second=rate,
        read_gen_size=read_size,
        read_gen_age=None if read_since is None else max(0.0, now - float(read_since)),
        read_gen_reads=reads,
        reads_per_sample=reads / read_size if read_size else 0.0,
        reuse_wait_seconds=rdoc.wait_seconds if rdoc else 0.0,
        generation_bytes={g: d.stored_bytes for g, d in sorted(gens.items())},
        orphan_samples=orphans,
        lease_holder=holder,
        lease_expires_in=expires_in,
        generators=generators,
        managers=managers,
        errors=errors,
        initialised=state is not None,
        sample=list(cfg.sample),
        dead_after_seconds=cfg.dead_after_seconds,
        reuse_cap=cfg.reuse_cap,
        chunk_docs=int(counts.get("chunks", 0)),
        stored_samples=int(counts.get("samples", 0)),
        swap_request=state.swap_request if state else None,
    )


def _counts(store: Store) -> dict[str, int]:
    """The store's document counts, re-taken at most every COUNT_SECONDS (they scan the chunks)."""
    key = (store.redacted_uri, store.config.dbname)
    taken = _counted.get(key)
    now = time.monotonic()
    if taken is None or now - taken[0] >= COUNT_SECONDS:
        taken = _counted[key] = (now, store.counts())
    return taken[1]


def _worker(rec: Mapping[str, Any], now: float, dead_after: float) -> WorkerInfo:
    beat = rec.get("beat")
    since = max(0.0, now - float(beat)) if beat is not None else math.inf
    recorded = str(rec.get("status") or "running")
    kind = "manager" if rec.get("kind") == "manager" else "generator"
    produced = int(rec.get("produced" if kind == "generator" else "swaps", 0) or 0)
    started = rec.get("started")
    progress_at = rec.get("progress_at")
    stalled_for = max(0.0, now - float(progress_at)) if progress_at is not None else None
    if recorded in ("errored", "finished", "stopped"):
        status = recorded
    elif since > dead_after:
        status = "dead"
    elif (kind == "generator" and stalled_for is not None and started is not None
          and stalled_for > stalled_after(dead_after, produced, float(progress_at) - float(started))):
        status = "stalled"
    else:
        status = "alive"
    rate = 0.0
    if kind == "generator" and started is not None and beat is not None and float(beat) > float(started):
        rate = produced / (float(beat) - float(started))
    pid = rec.get("pid")
    return WorkerInfo(id=str(rec.get("_id")), kind=kind, name=str(rec.get("name") or rec.get("_id")),
                      host=rec.get("host"), pid=int(pid) if pid is not None else None, status=status,
                      produced=produced, last_error=rec.get("last_error"),
                      seconds_since_beat=since if math.isfinite(since) else -1.0,
                      started=float(started) if started is not None else None, samples_per_second=rate,
                      seconds_since_progress=stalled_for)


def stalled_after(dead_after: float, produced: int, busy_seconds: float) -> float:
    """Seconds without a committed sample after which a beating generator shows as ``stalled``.

    DEAD_AFTER_SECONDS, or five times the generator's mean seconds per sample when that is
    longer (a generator that takes a minute per sample is not stalled after 30 s).
    """
    mean = busy_seconds / produced if produced > 0 else 0.0
    return max(dead_after, 5.0 * mean)


def _rate(now: float, log: list[dict[str, Any]], pending: int, created: Optional[float],
          generators: list[WorkerInfo]) -> float:
    """Committed samples per second over a recent window (see the module docstring)."""
    if generators and not any(g.status in ("alive", "stalled") for g in generators):
        return 0.0  # every generator stopped, finished, errored or died: nothing is being committed
    swaps = [e for e in log if e.get("at") is not None]
    if swaps:
        # anchor: the newest swap at least RATE_WINDOW_SECONDS old, else the oldest one we have
        anchor = 0
        for i, e in enumerate(swaps):
            if now - float(e["at"]) >= RATE_WINDOW_SECONDS:
                anchor = i
        since = float(swaps[anchor]["at"])
        committed = sum(max(0, int(e.get("size", 0) or 0)) for e in swaps[anchor + 1:]) + max(0, pending)
        span = now - since
        if span > 0.5 or (span > 0 and committed):
            return max(0.0, committed / span)
        return 0.0
    # no swap yet: the generators' own lifetime rates, else the write generation's age
    alive = [g.samples_per_second for g in generators if g.status == "alive"]
    if any(alive):
        return float(sum(alive))
    if created and pending and now > created:
        return pending / (now - created)
    return 0.0


# -- the swap log ----------------------------------------------------------------------------
def swap_log(source: SnapshotSource, *, uri: Optional[str] = None, limit: int = 100) -> list[dict[str, Any]]:
    """The ``limit`` most recent swap log entries, oldest first.

    Each entry: ``gen`` (the generation that became readable), ``size``, ``reason`` (``full``,
    ``sealed``, ``swap_early``, ``min_fill``), ``swap_seconds``, ``by`` (the swapper), ``stored_bytes``,
    ``at`` (epoch seconds).
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit should be a positive integer, but got limit={limit!r}")
    store = _store_for(source, uri)
    try:
        return [{k: v for k, v in e.items() if k != "kind"} for e in store.swap_log(limit)]
    finally:
        if store is not source:
            store.close()
