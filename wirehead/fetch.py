"""Fetch engine: the storage tiers behind one process's reads of the read generation.

:class:`FetchEngine` answers one call, :meth:`~FetchEngine.fetch` ``(generation, sample ids) -> entries``
(each sample's manifest meta and stored bytes, copied once), from the first tier that holds a sample:

1. what was *read ahead* for batches announced with :meth:`~FetchEngine.announce` (held until read);
2. this process's LRU cache of stored bytes (READER_CACHE_MB);
3. the node cache (:mod:`wirehead.nodecache`, NODE_CACHE_MB: one copy per node, shared by every reader of
   the node): a sample is *claimed* by one reader, fetched and *published*; the others wait for it;
4. the server: one query for the samples of a read found nowhere else (a *demand* fetch).

One background worker per engine fetches what reads will want next, in this order: nothing while a read
is in progress (reads first: from the call to its answer, waits for other fetches included, so a read
never competes with a background query it could have pre-empted; the worker's one query in flight when
the read came is finished), then the announced read-ahead (one query per batch, READ_AHEAD batches), then
the generation *prefetch* (one sample per query, into the node cache when there is one, else into the
LRU cache when the whole generation fits), which also holds back until no read came for as long as the
last read's own server query took: reads that come back to back (a cold pass, a DataLoader worker's
batches) have the server and the cores to themselves, and a caller that pauses between reads has the
prefetch fetch in the pause.  A demand read that needs a sample the worker is fetching
waits for that fetch instead of fetching it twice.

The bookkeeping lock is never held across I/O (server queries, node-cache files); waits within the
process are on conditions and events, never sleeps (a wait for another process's claim in the node cache
polls the segment's index: :meth:`NodeCache.wait`).  The engine serves one generation at a time (:meth:`serve`); a
swap drops every per-process tier.  What a generation is, which one is served and how indices map onto
samples is the view's job (:class:`wirehead.reader.Reader`).
"""

from __future__ import annotations

import collections
import ctypes
import logging
import threading
import time
from typing import Any, Callable, Optional, Sequence

from . import nodecache
from .chunks import join_chunks
from .nodecache import BUSY, MINE, NOFIT, READY, NodeCache
from .store import GenDoc, Store

__all__ = ["FetchEngine", "Entry", "WORKER_NAME", "whole"]

log = logging.getLogger(__name__)

WORKER_NAME = "wirehead-prefetch"  # the background worker's thread (it fetches ahead of reads)
_IDLE_SECONDS = 5.0  # the background worker ends after this long with nothing to do (and starts again when needed)

Entry = tuple[Any, list[bytes], int]  # a whole sample as stored: (manifest meta, chunk bytes, stored size)


def _find_malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def give_back_freed_memory() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim(0)``; nothing elsewhere).

    A thread other than the main one allocates in an arena of its own, and glibc shrinks such an arena only
    when its free top exceeds the trim threshold, which grows to twice the largest block freed after being
    mapped: a background fetch of samples of S MiB leaves up to about 2 S MiB free but resident in the
    worker's arena for as long as the process lives (3 MiB on a 24 MiB bound of a test streaming 1.25 MiB
    samples).  The worker calls this before it waits, so what its fetches freed leaves the process's RSS."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class FetchEngine:
    """The storage tiers of one process's reads, behind :meth:`fetch`.  Thread-safe.

    ``sids_of(batches, gen)``: the sample ids of ``gen`` that announced batches (of the view's indices)
    read, invalid indices left out; called with the engine's lock held, so it must not block.
    ``prefetch``: fetch the generation served in the background once samples are read.
    """

    def __init__(self, store: Store, sids_of: Callable[[Sequence[Sequence[int]], GenDoc], list[str]],
                 prefetch: bool = True) -> None:
        self.store = store
        self.config = store.config
        self.prefetch = prefetch
        self._sids_of = sids_of
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the worker: work arrived, or no demand fetch waits now
        self._awaiting_demand = False  # the worker waits for the reads in progress to end (not for a time)
        self._gen: Optional[GenDoc] = None  # the generation served
        # sid -> entry: the LRU cache of the generation served (immutable, so valid until the next swap)
        self._cache: "collections.OrderedDict[str, Entry]" = collections.OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = self.config.reader_cache_mb * 1024 * 1024
        self._node: Optional[NodeCache] = None  # the served generation's segment of the node cache
        self._left_node: Optional[NodeCache] = None  # one that failed for this generation (closed at the swap)
        self._demand = 0  # reads in progress now (the worker starts no fetch until they are answered)
        self._inflight: dict[str, threading.Event] = {}  # samples the worker is fetching now
        self._reading: "collections.Counter[str]" = collections.Counter()  # samples reads are fetching now
        # read-ahead: announced batches not fetched yet, and samples fetched for them not read yet
        self._plan: "collections.deque[list[int]]" = collections.deque()
        self._ahead: dict[str, Entry] = {}
        self._ahead_cap = 0  # most samples held ahead: READ_AHEAD + 1 batches of the largest batch announced
        self._has_read = False  # only a process that reads samples itself fetches in the background
        self._prefetch_due = False  # the served generation should be prefetched once samples are read
        self._prefetching: Optional[GenDoc] = None  # the generation being prefetched, and where it is
        self._prefetch_at = 0
        # what the fill's hold (_fill_held) is measured from
        self._read_done = 0.0  # when the last read was answered (time.monotonic())
        self._read_query = 0.0  # seconds the last read's own server query took
        self._worker: Optional[threading.Thread] = None
        self._counts: "collections.Counter[str]" = collections.Counter()  # see stats()
        if self.config.node_cache_mb > 0:
            nodecache.sweep()  # segments left by readers that were all killed (cheap: one directory listing)

    # -- the generation served -----------------------------------------------------
    def serve(self, gen: GenDoc) -> None:
        """Serve ``gen`` from now on: drop what the tiers of this process hold, attach the node cache.

        Attaching costs no transfer, and it keeps the segment alive for this process's DataLoader workers of
        the next epochs; it first sweeps, so the older segments nobody uses (the one just left included)
        are removed as the process moves on."""
        with self._lock:
            self._gen = gen
            self._drop()
        self._detach_node()
        node = nodecache.attach(self.config, self.store.uri, gen)
        with self._lock:
            if self._gen is not gen:  # closed, or another generation served meanwhile
                stale, node = node, None
            else:
                stale = None
                self._node = node
                # prefetching starts with the first read of samples, not here: a process that only asks for
                # len() (a DataLoader's main process) must not pull a whole generation into its memory.  With
                # the node cache, the prefetchers of all processes fill it together up to NODE_CACHE_MB;
                # without, only a generation that fits in READER_CACHE_MB is prefetched (a larger one would
                # thrash)
                self._prefetch_due = self.prefetch and (node is not None
                                                        or 0 < gen.stored_bytes <= self._cache_limit)
        if stale is not None:
            stale.close()

    def close(self) -> None:
        """Serve nothing: drop every tier, forget announcements and detach the node cache; the worker ends
        after the fetch it is doing.  The engine can serve again afterwards."""
        with self._lock:
            self._gen = None
            self._drop()
            self._plan.clear()
            self._has_read = False
            self._wake.notify_all()
        self._detach_node()

    def _drop(self) -> None:
        """Forget what the per-process tiers hold for the generation served (called with the lock held).
        Announced batches stay: they are indices, resolved in the generation served when fetched."""
        self._cache.clear()
        self._cache_bytes = 0
        self._ahead.clear()
        self._prefetch_due = False
        self._prefetching = None

    def _detach_node(self) -> None:
        """Close the node-cache attachments (the one in use and one left after a failure)."""
        with self._lock:
            old = [n for n in (self._node, self._left_node) if n is not None]
            self._node = self._left_node = None
        for n in old:
            n.close()

    def _leave_node(self, node: NodeCache) -> None:
        """Stop using ``node`` for its generation (it failed): later reads use this process's cache.  The
        attachment stays open until the next swap, so samples read from it stay valid and other threads
        using it finish."""
        with self._lock:
            if self._node is node:
                self._left_node = node
                self._node = None

    def _node_for(self, gen: GenDoc) -> Optional[NodeCache]:
        node = self._node
        return node if node is not None and node.gen == gen.gen and node.members == gen.members else None

    # -- demand reads --------------------------------------------------------------
    def fetch(self, gen: GenDoc, sids: Sequence[str],
              mapped: bool = False) -> tuple[list[tuple[Any, Any]], set[str]]:
        """``(meta, stored bytes)`` of each of ``sids`` (members of ``gen``, in order, repeats allowed), and
        the ids of those that are gone or incomplete (then the list is empty).

        Each buffer is a fresh copy (from the node cache, this process's cache, what was read ahead or the
        server's reply), so callers may decode into arrays they write to; ``mapped``: large samples of the
        node cache may be copy-on-write mappings instead (:meth:`NodeCache.read`).  The samples found in no
        tier are fetched with one query.  The first read of a generation starts its prefetch, and a
        successful read lets the announced read-ahead start.

        Raises:
            StoreUnavailable: the server could not be reached for samples no tier holds.
        """
        unique = list(dict.fromkeys(sids))
        with self._lock:
            self._reading.update(unique)  # the background fetches leave them to this read
            self._demand += 1  # and start nothing until it is answered
        try:
            self._start_prefetch(gen)
            out, broken = self._fetch(gen, list(sids), unique, mapped)
        finally:
            with self._lock:
                self._reading -= collections.Counter(unique)  # ids no read holds any more are dropped
                self._demand -= 1
                if not self._demand:
                    self._read_done = time.monotonic()
                    if self._awaiting_demand:  # a worker in a timed wait (hold, idle) needs no wake-up per read
                        self._wake.notify_all()
        if not broken:
            with self._lock:
                if not self._has_read:  # what was announced before the first read, now that it is done
                    self._has_read = True
                    self._kick()
        return out, broken

    def forget(self, sid: str) -> None:
        """Drop ``sid`` from this process's cache (its bytes could not be decoded)."""
        with self._lock:
            entry = self._cache.pop(sid, None)
            if entry is not None:
                self._cache_bytes -= entry[2]

    def _fetch(self, gen: GenDoc, sids: list[str], unique: list[str],
               mapped: bool) -> tuple[list[tuple[Any, Any]], set[str]]:
        local: dict[str, Entry] = {}
        with self._lock:
            for sid in unique:
                entry = self._held(sid)
                if entry is not None:
                    local[sid] = entry
        missing = [sid for sid in unique if sid not in local]
        for sid in list(missing):  # being fetched in the background now: wait for it rather than fetch it twice
            with self._lock:
                pending = self._inflight.get(sid)
                if pending is not None:
                    self._counts["waits"] += 1
            if pending is not None and pending.wait(self.config.connect_timeout):
                with self._lock:
                    entry = self._held(sid)
                if entry is not None:
                    local[sid] = entry
                    missing.remove(sid)
        node = self._node_for(gen)
        shared: set[str] = set()
        here = node is None  # fetch what is missing in this process
        if missing and node is not None:
            try:
                self._through_node(node, missing, local, shared)
            except OSError as e:  # a broken segment file, or its lock held by a paused process
                log.warning("node cache %s failed (%s); this process reads generation %d from the server and "
                            "caches it itself", node.base, e, gen.gen)
                self._leave_node(node)
                here = True
                missing = [sid for sid in missing if sid not in local and sid not in shared]
        if missing and here:
            fetched = self._demand_get(missing)  # one query for the whole batch
            for sid in missing:
                entry = whole(*fetched.pop(sid, (None, None)))
                if entry is not None:
                    local[sid] = entry
                    self._remember(gen, sid, entry)
            del fetched
        broken = {sid for sid in unique if sid not in local and sid not in shared}
        if broken:
            return [], broken
        left = collections.Counter(sids)
        out: list[tuple[Any, Any]] = []
        for sid in sids:
            left[sid] -= 1
            if sid in shared:
                with self._lock:
                    self._counts["node_hits"] += 1
                out.append(node.read(sid, mapped=mapped))  # type: ignore[union-attr]
            else:
                meta, chunks, total = local[sid] if left[sid] else local.pop(sid)
                out.append((meta, join_chunks(chunks, total)))
                del chunks  # a streamed sample's chunks go as soon as it is joined: memory ~ one batch
        return out, set()

    def _held(self, sid: str) -> Optional[Entry]:
        """``sid``'s entry from this process's cache, or from what was read ahead (handed over once, then
        kept by the cache if it fits there); called with the lock held."""
        entry = self._cache.get(sid)
        if entry is not None:
            self._cache.move_to_end(sid)
            self._counts["cache_hits"] += 1
            return entry
        entry = self._ahead.pop(sid, None)
        if entry is not None:
            self._counts["ahead_hits"] += 1
            self._insert(sid, entry)
        return entry

    def _demand_get(self, sids: list[str]) -> dict[str, tuple[dict[str, Any], list[bytes]]]:
        """One query for ``sids`` by a read (the worker starts no fetch while a read is in progress)."""
        with self._lock:
            self._counts["fetches"] += 1
            self._counts["fetched_samples"] += len(sids)
        started = time.monotonic()
        try:
            return self.store.get_samples(sids)
        finally:
            with self._lock:
                self._read_query = time.monotonic() - started

    def _through_node(self, node: NodeCache, sids: list[str], local: dict[str, Entry], shared: set[str]) -> None:
        """Find ``sids`` in the node cache, fetching (one query per round) those this process claims
        and publishing them there; wait for those other readers fetch.  Samples that do not fit go to
        ``local`` (and this process's cache); those that are gone or incomplete to neither."""
        deadline = time.monotonic() + node.claim_seconds
        pending = sids
        while pending:
            status = node.acquire(pending)
            shared.update(sid for sid in pending if status[sid] == READY)
            mine = [sid for sid in pending if status[sid] == MINE]
            fetch = mine + [sid for sid in pending if status[sid] == NOFIT]
            busy = [sid for sid in pending if status[sid] == BUSY]
            if busy and time.monotonic() >= deadline:  # their claimers are slow: fetch them here too
                fetch, busy = fetch + busy, []
            if fetch:
                published, kept = self._fetch_claimed(node, fetch, mine, self._demand_get)
                shared.update(published)
                for sid, entry in kept.items():
                    local[sid] = entry
                    self._remember(None, sid, entry)
            elif busy:
                with self._lock:
                    self._counts["waits"] += 1
                node.wait(busy, deadline)  # another process's claim: the segment's entries are polled
            pending = busy

    def _remember(self, gen: Optional[GenDoc], sid: str, entry: Entry) -> None:
        """Keep ``entry`` in this process's cache, if ``gen`` (when given) is still the one served."""
        with self._lock:
            if gen is None or self._gen is gen:
                self._insert(sid, entry)

    def _insert(self, sid: str, entry: Entry) -> None:
        """Add to the LRU cache, evicting the least recently used beyond READER_CACHE_MB (lock held)."""
        size = entry[2]
        if sid in self._cache or size > self._cache_limit:
            return
        self._cache[sid] = entry
        self._cache_bytes += size
        while self._cache_bytes > self._cache_limit:
            _, (_, _, dropped) = self._cache.popitem(last=False)
            self._cache_bytes -= dropped

    # -- the background worker: read-ahead, then prefetch ------------------------------------
    def announce(self, batches: Sequence[Sequence[int]], depth: int) -> None:
        """The batches to be read next (the view's indices, in order, starting with the one about to be
        read): the ``depth`` after the first are fetched in the background, one query a batch, and held
        until read (at most ``depth`` + 1 batches).  Replaces what was announced before; samples held for
        batches no longer announced are dropped.  Only acted on once this process has read samples itself."""
        plan = [list(b) for b in list(batches)[:depth + 1]]
        with self._lock:
            self._plan = collections.deque(plan[1:])
            self._ahead_cap = max([self._ahead_cap] + [(depth + 1) * len(b) for b in plan])
            if self._ahead and self._gen is not None:
                wanted = set(self._sids_of(plan, self._gen))
                for sid in [sid for sid in self._ahead if sid not in wanted]:
                    del self._ahead[sid]
            self._kick()

    @property
    def held_ahead(self) -> int:
        """Samples fetched ahead of their reads and held in this process now (not yet read)."""
        with self._lock:
            return len(self._ahead)

    def _start_prefetch(self, gen: GenDoc) -> None:
        with self._lock:
            if not self._prefetch_due or self._gen is not gen:
                return
            self._prefetch_due = False
            self._prefetching, self._prefetch_at = gen, 0
            self._kick()

    def _kick(self) -> None:
        """Wake the worker, or start it when it has something to do (called with the lock held)."""
        if not self._has_read and self._prefetching is None:
            return
        if not self._plan and self._prefetching is None:
            return
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, daemon=True, name=WORKER_NAME)
            self._worker.start()
        self._wake.notify_all()

    def _work(self) -> None:
        """The worker's loop: one job at a time, none while a read is in progress; ends after
        _IDLE_SECONDS without a job, or when the engine serves nothing."""
        idle_until = time.monotonic() + _IDLE_SECONDS
        freed = False  # a fetch ended since the worker last gave its freed memory back
        while True:
            job = None
            with self._lock:
                while True:
                    if self._gen is None:
                        if not freed:
                            self._worker = None
                            return
                        break
                    if not self._demand:
                        job = self._next_job()
                        if job is not None or freed:
                            break
                        now = time.monotonic()
                        held = self._fill_held(now)
                        left = held if held > 0 else idle_until - now
                        if left <= 0:
                            self._worker = None
                            return
                        self._wake.wait(left)
                    elif freed:
                        break
                    else:
                        self._awaiting_demand = True
                        try:
                            self._wake.wait()  # notified when the last demand fetch is answered
                        finally:
                            self._awaiting_demand = False
            if job is None:  # about to wait or end: first give back what the fetches freed (outside the lock)
                give_back_freed_memory()
                freed = False
                continue
            kind, gen, sids, events = job
            try:
                if kind == "ahead":
                    self._fetch_ahead(gen, sids)
                else:
                    self._prefetch_one(gen, sids[0])
            except Exception as e:  # noqa: BLE001 - background fetches are an optimisation; reads fetch on demand
                log.debug("background %s fetch for generation %d stopped: %s", kind, gen.gen, e)
                if kind == "prefetch":
                    with self._lock:
                        if self._prefetching is gen:
                            self._prefetching = None
            finally:
                with self._lock:
                    for sid, done in events.items():
                        self._inflight.pop(sid, None)
                        done.set()
            del job, sids, events
            freed = True
            idle_until = time.monotonic() + _IDLE_SECONDS

    def _next_job(self) -> Optional[tuple[str, GenDoc, list[str], dict[str, threading.Event]]]:
        """The next background fetch, its samples registered as in flight; called with the lock held."""
        gen = self._gen
        assert gen is not None
        while self._plan and self._has_read:
            batch = self._plan.popleft()
            sids = [sid for sid in dict.fromkeys(self._sids_of([batch], gen)) if not self._busy(sid)]
            sids = sids[:max(0, self._ahead_cap - len(self._ahead))]
            if sids:
                return "ahead", gen, sids, self._register(sids)
        while self._prefetching is gen and self._fill_held(time.monotonic()) <= 0:
            node = self._node_for(gen)
            if (node.full if node is not None else self._cache_bytes >= self._cache_limit) \
                    or self._prefetch_at >= len(gen.members):
                self._prefetching = None  # done, or the cache is full: reads fetch the rest on demand
                break
            sid = gen.members[self._prefetch_at]
            self._prefetch_at += 1
            if not self._busy(sid):
                return "prefetch", gen, [sid], self._register([sid])
        return None

    def _fill_held(self, now: float) -> float:
        """Seconds the generation's fill still holds back (lock held): until no read came for as long as the last
        read's server query took.  Reads that come back to back (a cold pass, a DataLoader worker's batches) then
        have the server and the cores to themselves, where a fill query beside each of them made it take twice
        a raw ``find``; a caller that pauses between reads (a training step) has the fill fetch in the pause."""
        return self._read_done + self._read_query - now if self._prefetching is not None else 0.0

    def _busy(self, sid: str) -> bool:
        """Held by this process, or being fetched by it now (lock held)."""
        return sid in self._cache or sid in self._ahead or sid in self._inflight or sid in self._reading

    def _register(self, sids: list[str]) -> dict[str, threading.Event]:
        events = {sid: threading.Event() for sid in sids}
        self._inflight.update(events)
        return events

    def _fetch_claimed(self, node: Optional[NodeCache], sids: list[str], mine: list[str],
                       query: Callable[[list[str]], dict[str, tuple[dict[str, Any], list[bytes]]]]
                       ) -> tuple[set[str], dict[str, Entry]]:
        """One ``query`` for ``sids``; those of ``mine`` (claimed by this process in ``node``) are published
        there.  Returns the ids published and the entries of the other whole samples (not published: not
        claimed, or they did not fit).  A claim is released when its sample is gone or incomplete, and every
        claim when the query fails (then its error is raised): another reader may try."""
        try:
            fetched = query(sids)
        except BaseException:
            for sid in mine:
                node.release(sid)  # type: ignore[union-attr]
            raise
        published: set[str] = set()
        kept: dict[str, Entry] = {}
        for sid in sids:
            entry = whole(*fetched.pop(sid, (None, None)))
            if entry is None:
                if sid in mine:
                    node.release(sid)  # type: ignore[union-attr]
            elif sid in mine and node.publish(sid, *entry):  # type: ignore[union-attr]
                published.add(sid)
            else:
                kept[sid] = entry
        return published, kept

    def _fetch_ahead(self, gen: GenDoc, sids: list[str]) -> None:
        """One query for ``sids``: into the node cache where this process claims them there, else held
        ahead in this process; samples there already, or being fetched by another reader, are skipped."""
        node = self._node_for(gen)
        mine: list[str] = []
        if node is not None:
            status = node.acquire(sids)
            mine = [sid for sid in sids if status[sid] == MINE]
            sids = mine + [sid for sid in sids if status[sid] == NOFIT]
        if not sids:
            return
        _, kept = self._fetch_claimed(node, sids, mine, self.store.get_samples)
        with self._lock:
            self._counts["ahead_fetched"] += len(sids)
            if self._gen is gen:
                self._ahead.update(kept)

    def _prefetch_one(self, gen: GenDoc, sid: str) -> None:
        """Fetch one sample of the generation being prefetched: into the node cache when this process
        claims it there (skipped when it is there, or another reader fetches it), else this process's cache."""
        node = self._node_for(gen)
        if node is not None and node.acquire([sid])[sid] != MINE:
            return
        _, kept = self._fetch_claimed(node, [sid], [sid] if node is not None else [], self.store.get_samples)
        if node is None:  # with the node cache, a sample that did not fit there is not kept here either
            for sid, entry in kept.items():
                self._remember(gen, sid, entry)
        with self._lock:
            self._counts["prefetched"] += 1

    # -- what the tiers hold ---------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """What the tiers hold now and did since the engine was made (see :meth:`Reader.stats`)."""
        with self._lock:
            node = self._node
            out: dict[str, Any] = {
                "cache_samples": len(self._cache), "cache_bytes": self._cache_bytes, "cache_limit": self._cache_limit,
                "ahead_samples": len(self._ahead), "ahead_bytes": sum(e[2] for e in self._ahead.values()),
                "inflight": len(self._inflight),
                "worker": self._worker is not None,
                "node": node is not None,
                "node_segment": node.base if node is not None else None,
                "node_capacity": node.capacity if node is not None else 0,
            }
            for key in ("cache_hits", "ahead_hits", "node_hits", "fetches", "fetched_samples", "waits",
                        "ahead_fetched", "prefetched"):
                out[key] = self._counts[key]
        try:
            out["node_ready"], out["node_bytes"] = node.usage() if node is not None else (0, 0)
        except OSError:
            out["node_ready"], out["node_bytes"] = 0, 0
        return out


def whole(manifest: Optional[dict[str, Any]], chunks: Optional[list[bytes]]) -> Optional[Entry]:
    """``(meta, chunks, stored bytes)`` of a whole sample, or None if it is gone or incomplete."""
    if manifest is None or chunks is None or len(chunks) != manifest.get("nchunks"):
        return None
    total = sum(len(c) for c in chunks)
    if total != manifest.get("stored_bytes"):
        return None
    return manifest.get("meta"), chunks, total
