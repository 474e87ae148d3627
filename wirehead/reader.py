"""Reader: one process's view of the read generation, with a bounded cache of its samples' bytes.

The read generation is immutable (its member list never changes once it is read), so a
sample fetched once can be served again from memory until the next swap: the node cache
(:mod:`wirehead.nodecache`, NODE_CACHE_MB, shared by every reader of the node) keeps the stored
(possibly compressed) bytes once per node, this process's cache (READER_CACHE_MB) what does not
fit there (or everything, without a node cache), and the rest streams from the server, one
query per batch, so memory stays bounded whatever the generation's size.  Batches announced with
:meth:`Reader.read_ahead` (a :class:`~wirehead.sampler.ReadAheadSampler` does it) are fetched in the
background while the current one is used, READ_AHEAD at a time.  Each read decodes
the stored bytes into fresh arrays with one copy, so callers may write to what they get.  A reader
follows newer generations as they appear (it looks at the state at most every
POLL_SECONDS), and a batch is always taken from one generation: samples are never
mixed across generations, and never partial (a sample whose chunks are not all
there is skipped, never returned).  Any index below SWAP_CAP is served: one beyond the
read generation (a sampler built from a larger ``len()``, seen by this process or another
before a swap) makes the reader re-read the state, then wraps onto the read generation.

Reads are counted per generation and reported to the store in batches, for
monitoring and for the reuse cap.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import Any, Optional, Sequence

import numpy as np

from . import nodecache
from .chunks import decode, join_chunks
from .errors import StoreUnavailable, WaitTimeout
from .nodecache import BUSY, MINE, NOFIT, READY, NodeCache
from .store import BEST_EFFORT_SECONDS, GenDoc, Store

__all__ = ["Reader", "GenerationGone", "SamplesBroken"]

log = logging.getLogger(__name__)

_FLUSH_READS = 64
_FLUSH_SECONDS = 2.0
_AHEAD_IDLE_SECONDS = 5.0  # the read-ahead thread ends after this long without an announcement
_HINT_SECONDS = 10.0  # waiting this long for a first generation of an empty cache logs where other caches are
_OUTAGE_POLL_SECONDS = 2.0  # while the server is away, a reader serving its generation polls this much less often


class GenerationGone(Exception):
    """The generation a batch was admitted to (its reuse tickets claimed there) lost samples to a newer
    one before they were read: admit the batch again, so its tickets are claimed where it is served."""


class SamplesBroken(GenerationGone):
    """Samples of the generation a batch was admitted to are gone or incomplete (a fenced writer died
    before restoring them): no other sample may take their place without a ticket of its own, so the
    batch is admitted again; the reuse gate skips the tickets of slots known to be broken."""


class Reader:
    """Serves decoded samples of the current read generation.  Thread-safe."""

    def __init__(self, store: Store, timeout: Optional[float] = None, prefetch: bool = True) -> None:
        self.store = store
        self.prefetch = prefetch
        self.config = store.config
        self.timeout = self.config.read_timeout if timeout is None else float(timeout)
        self.gen: Optional[GenDoc] = None
        self._checked = 0.0
        self._lock = threading.RLock()  # the bookkeeping below; never held across I/O
        self._refresh_lock = threading.Lock()  # one look at the server's state at a time
        # sid -> (meta, stored chunk bytes, stored size): the read generation is immutable
        self._cache: "collections.OrderedDict[str, tuple[Any, list[bytes], int]]" = collections.OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = self.config.reader_cache_mb * 1024 * 1024
        self._pending_reads: "collections.Counter[int]" = collections.Counter()  # per generation
        self._pending_wait: "collections.Counter[int]" = collections.Counter()
        self._last_flush = time.monotonic()
        self.reads = 0
        self.skipped = 0
        self._broken: set[str] = set()
        self._demand = 0  # reads waiting for the server now (the prefetcher yields to them)
        self._no_demand = threading.Condition(self._lock)  # notified when the last of them is served
        self._inflight: dict[str, threading.Event] = {}  # samples the prefetcher is fetching now
        self._prefetch_due = False  # the read generation should be prefetched once samples are read
        self._node: Optional[NodeCache] = None  # the read generation's segment of the node cache
        self._left_node: Optional[NodeCache] = None  # one that failed for this generation (closed at the swap)
        # read-ahead: announced batches not fetched yet, and samples fetched for them not read yet
        self._plan: "collections.deque[list[int]]" = collections.deque()
        self._ahead: dict[str, tuple[Any, list[bytes], int]] = {}
        self._ahead_cap = 0  # most samples held ahead: READ_AHEAD batches of the largest batch announced
        self._ahead_wake = threading.Condition(self._lock)
        self._ahead_thread: Optional[threading.Thread] = None
        self._has_read = False  # only a process that reads samples itself reads ahead
        self._reading: "collections.Counter[str]" = collections.Counter()  # samples reads are fetching now
        self.ahead_hits = 0  # samples served from what was read ahead
        self._counts: "collections.Counter[str]" = collections.Counter()  # see stats()
        if self.config.node_cache_mb > 0:
            nodecache.sweep()  # segments left by readers that were all killed (cheap: one directory listing)

    # -- generations ---------------------------------------------------------------
    def current(self, force: bool = False) -> GenDoc:
        """The read generation, waiting up to the timeout for the first one.

        Raises:
            WaitTimeout: no read generation appeared in time (no generator or swapper running?).
        """
        started = time.monotonic()
        with self._lock:
            if self.gen is not None and not force and started - self._checked < self.config.poll_seconds:
                return self.gen
            seen = self.gen
        if not force and seen is not None:
            if not self._refresh_lock.acquire(blocking=False):
                return seen  # another thread is looking at the state now: this read need not wait for it
        else:
            self._refresh_lock.acquire()  # the first look, or a forced one: wait for the look in progress
        try:  # the bookkeeping lock is free meanwhile: reads of the current view go on
            with self._lock:  # another thread looked while this one waited for its turn
                if self.gen is not None and self._checked >= started:
                    return self.gen
            now = time.monotonic()
            deadline = now + self.timeout
            hint_at = now + _HINT_SECONDS  # then say once where other caches are, if this one is still empty
            while True:
                self.store.ensure_schema()
                try:  # holding a generation, a poll that finds no server keeps serving it (an outage, a failover)
                    state = self.store.state(BEST_EFFORT_SECONDS if self.gen is not None and not force else None)
                except StoreUnavailable as e:
                    with self._lock:
                        gen = self.gen
                        if gen is not None and not force:
                            self._checked = time.monotonic() + _OUTAGE_POLL_SECONDS
                    if gen is None or force:
                        raise
                    log.warning("serving generation %d from memory while the server is away: %s", gen.gen, e)
                    return gen
                with self._lock:
                    self._checked = time.monotonic()
                    gen = self.gen
                if state.read_gen is not None:
                    if gen is None or gen.gen != state.read_gen:
                        doc = self.store.gen_doc(state.read_gen)
                        if doc is not None and doc.n > 0:
                            gen = self._switch(doc)
                    if gen is not None:
                        return gen
                if time.monotonic() >= deadline:
                    counts = self.store.gen_counts()
                    filled = counts.get(state.write_gen, (0, False))[0]
                    raise WaitTimeout(
                        f"no read generation after {self.timeout:.0f} s: the write generation "
                        f"{state.write_gen} holds {filled} of SWAP_CAP={self.config.swap_cap} samples. "
                        "Are generators running (and a manager, or none at all)? Raise READ_TIMEOUT "
                        "or the dataset's timeout to wait longer." + (self._elsewhere() if filled == 0 else "")
                    )
                if time.monotonic() >= hint_at:
                    hint_at = math.inf
                    if not self.store.gen_counts().get(state.write_gen, (0, False))[0]:
                        hint = self._elsewhere()
                        if hint:
                            log.warning("still waiting for the first read generation.%s", hint)
                time.sleep(self.config.poll_seconds)
        finally:
            self._refresh_lock.release()

    def _elsewhere(self) -> str:
        """Where the data is when nothing was written to this cache: the other caches on its server (a
        process started with another DBNAME than the generators' waits for nothing), or ``""``."""
        others = self.store.other_caches()
        if not others:
            return ""
        listed = ", ".join(f"{name!r} ({swaps} swaps)" for name, swaps in sorted(others.items())[:10])
        return (f" Nothing was written to database {self.config.dbname!r} (DBNAME) on "
                f"{self.store.redacted_uri}, which holds other wirehead caches: {listed}. Were the generators "
                "started with another config (DBNAME, MONGO_URI, *_COLLECTION)?")

    def _switch(self, doc: GenDoc) -> GenDoc:
        """Serve ``doc`` from now on (called by the one thread that looks at the state); returns it."""
        self.flush()
        with self._lock:
            self.gen = doc
            self._cache.clear()
            self._cache_bytes = 0
            self._ahead.clear()
            self._broken.clear()
        self._detach_node()
        # attaching costs no transfer, and it keeps the segment alive for this process's DataLoader
        # workers of the next epochs; it first sweeps, so the older segments nobody uses (the one this
        # process just left included) are removed as the process moves on
        node = nodecache.attach(self.config, self.store.uri, doc)
        with self._lock:
            if self.gen is not doc:  # closed meanwhile
                if node is not None:
                    node.close()
                return doc
            self._node = node
            # prefetching starts with the first read of samples, not here: a process that only asks for
            # len() (a DataLoader's main process) must not pull a whole generation into its memory.  With
            # the node cache, the prefetchers of all processes fill it together up to NODE_CACHE_MB; without,
            # only a generation that fits in READER_CACHE_MB is prefetched (a larger one would thrash)
            self._prefetch_due = self.prefetch and (node is not None or 0 < doc.stored_bytes <= self._cache_limit)
        log.debug("reader now serves generation %d (%d samples)", doc.gen, doc.n)
        return doc

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

    def _start_prefetch(self, gen: GenDoc) -> None:
        with self._lock:
            if not self._prefetch_due or self.gen is not gen:
                return
            self._prefetch_due = False
        threading.Thread(target=self._prefetch, args=(gen,), daemon=True,
                         name=f"wirehead-prefetch-{gen.gen}").start()

    def _prefetch(self, gen: GenDoc) -> None:
        """Fetch a new read generation into the cache in the background, so the reads after a swap find
        their samples in memory.  Reads come first: one sample per query, and none while a read waits
        for the server, so a read waits at most for one sample's transfer.  Stops at the next swap or
        when the cache is full: the node cache (shared by every reader on the node, which fill it
        together by claiming samples) when there is one, else this process's (only generations that
        fit in READER_CACHE_MB are prefetched then)."""
        node = self._node_for(gen)
        if node is not None:
            self._prefetch_node(gen, node)
            return
        for sid in gen.members:
            self._after_demand()
            with self._lock:
                if self.gen is not gen or self._cache_bytes >= self._cache_limit:
                    return
                if sid in self._cache or sid in self._inflight:
                    continue
                done = self._inflight[sid] = threading.Event()
            try:
                manifest, chunks = self.store.get_samples([sid]).get(sid, (None, None))
                entry = self._check(sid, manifest, chunks)
                if entry is not None:
                    with self._lock:
                        if self.gen is gen:
                            self._remember(sid, entry)
            except Exception as e:  # noqa: BLE001 - prefetching is an optimisation; reads fetch on demand
                log.debug("prefetch of generation %d stopped: %s", gen.gen, e)
                return
            finally:
                with self._lock:
                    self._inflight.pop(sid, None)
                done.set()

    def _prefetch_node(self, gen: GenDoc, node: NodeCache) -> None:
        for sid in gen.members:
            self._after_demand()
            if self.gen is not gen or self._node is not node or node.full:
                return
            try:
                if node.acquire([sid])[sid] != MINE:
                    continue  # there, being fetched by another reader, or not fitting
                entry = None
                try:
                    entry = self._check(sid, *self.store.get_samples([sid]).get(sid, (None, None)))
                finally:
                    if entry is None:  # gone, or the query failed: another reader may try
                        node.release(sid)
                if entry is not None and not node.publish(sid, *entry) and node.full:
                    return
            except Exception as e:  # noqa: BLE001 - prefetching is an optimisation; reads fetch on demand
                log.debug("prefetch of generation %d into the node cache stopped: %s", gen.gen, e)
                return

    # -- read-ahead ----------------------------------------------------------------
    def read_ahead(self, batches: Sequence[Sequence[int]]) -> None:
        """Announce the batches to be read next (dataset indices, in order, starting with the one about
        to be read): the READ_AHEAD batches after that one are fetched in the background, one query a
        batch, and held until read (the first is fetched by its own read, or taken from what is held).

        Replaces what was announced before; samples held for batches no longer announced are dropped,
        so what is held ahead stays within READ_AHEAD + 1 batches (and a swap drops it all).  Only a
        process that has read samples itself acts on it: a DataLoader's main process that only hands
        indices to its workers never fetches (the workers keep batches in flight themselves,
        ``prefetch_factor`` each).  Indices that are not valid are left to the read, which raises.
        """
        depth = self.config.read_ahead
        if depth <= 0:
            return
        plan = [list(b) for b in list(batches)[:depth + 1]]
        with self._lock:
            self._plan = collections.deque(plan[1:])
            self._ahead_cap = max([self._ahead_cap] + [(depth + 1) * len(b) for b in plan])
            if self._ahead and self.gen is not None:
                wanted = set(self._sids(plan, self.gen))
                for sid in [sid for sid in self._ahead if sid not in wanted]:
                    del self._ahead[sid]
            self._start_read_ahead()

    def _sids(self, batches: Sequence[Sequence[int]], gen: GenDoc) -> list[str]:
        """The sample ids ``batches`` read in ``gen`` (invalid indices left out: the read raises for them)."""
        out = []
        for batch in batches:
            for index in batch:
                try:
                    out.append(gen.members[self.resolve(index, gen)])
                except (TypeError, IndexError):
                    pass
        return out

    @property
    def held_ahead(self) -> int:
        """Samples fetched ahead of their reads and held in this process now (not yet read)."""
        with self._lock:
            return len(self._ahead)

    def _start_read_ahead(self) -> None:
        """Wake the read-ahead thread, or start it (called with the lock held)."""
        if not self._plan or not self._has_read:
            return
        if self._ahead_thread is None:
            self._ahead_thread = threading.Thread(target=self._read_ahead_loop, daemon=True,
                                                  name="wirehead-read-ahead")
            self._ahead_thread.start()
        self._ahead_wake.notify_all()

    def _read_ahead_loop(self) -> None:
        """Fetch announced batches until none is left for a while (the thread ends, and starts again
        with the next announcement) or the reader is closed."""
        while True:
            with self._lock:
                if not self._plan:
                    self._ahead_wake.wait(_AHEAD_IDLE_SECONDS)
                if not self._plan or not self._has_read or self.gen is None:
                    self._ahead_thread = None
                    return
                batch, gen = self._plan.popleft(), self.gen
                sids = [sid for sid in dict.fromkeys(self._sids([batch], gen))
                        if sid not in self._cache and sid not in self._ahead and sid not in self._inflight
                        and sid not in self._reading]
                sids = sids[:max(0, self._ahead_cap - len(self._ahead))]
                events = {sid: threading.Event() for sid in sids}
                self._inflight.update(events)
            if not sids:
                continue
            try:
                self._after_demand()  # a read waiting for the server goes first
                self._fetch_ahead(gen, sids)
            except Exception as e:  # noqa: BLE001 - reading ahead is an optimisation; reads fetch on demand
                log.debug("read-ahead of generation %d failed: %s", gen.gen, e)
            finally:
                with self._lock:
                    for sid, done in events.items():
                        self._inflight.pop(sid, None)
                        done.set()

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
        try:
            fetched = self.store.get_samples(sids)
        except BaseException:
            for sid in mine:
                node.release(sid)  # type: ignore[union-attr]
            raise
        for sid in sids:
            entry = self._check(sid, *fetched.pop(sid, (None, None)))
            if entry is None:
                if sid in mine:
                    node.release(sid)  # type: ignore[union-attr]
                continue
            if sid in mine and node.publish(sid, *entry):  # type: ignore[union-attr]
                continue
            with self._lock:
                if self.gen is gen:
                    self._ahead[sid] = entry

    def __len__(self) -> int:
        return self.current().n

    def close(self, flush: bool = True) -> None:
        """Stop prefetching (the prefetch thread ends after the sample it is fetching) and drop the
        cache; with ``flush``, report pending read counts first.  The reader can be used again
        afterwards: it re-reads the state."""
        if flush:
            self.flush()
        with self._lock:
            self.gen = None  # the prefetcher stops when its generation is no longer the reader's
            self._prefetch_due = False
            self._cache.clear()
            self._cache_bytes = 0
            self._plan.clear()
            self._ahead.clear()
            self._has_read = False
            self._ahead_wake.notify_all()  # the read-ahead thread ends
            self._pending_reads.clear()
            self._pending_wait.clear()
        self._detach_node()

    def _detach_node(self) -> None:
        """Close this process's node-cache attachments (the one in use and one left after a failure)."""
        with self._lock:
            old = [n for n in (self._node, self._left_node) if n is not None]
            self._node = self._left_node = None
        for n in old:
            n.close()

    # -- samples -------------------------------------------------------------------
    def is_broken(self, gen: GenDoc, slot: int) -> bool:
        """Whether this process found the sample in ``slot`` of ``gen`` gone or incomplete."""
        with self._lock:
            return (self.gen is not None and self.gen.gen == gen.gen
                    and gen.members[slot] in self._broken)

    def bound(self) -> int:
        """Every index below this is served (wrapped onto the read generation).

        ``SWAP_CAP``: no generation can hold more samples, so no ``len()`` this dataset reported, in
        this process or another (a DataLoader's main process and its workers follow swaps at
        different moments), is larger.  The bound is the same in every process, which a per-process
        view of the generations could not give.
        """
        return max(self.config.swap_cap, self.gen.n if self.gen is not None else 0)

    def resolve(self, index: int, gen: GenDoc) -> int:
        """Map a user's index onto a slot of ``gen``: an index beyond ``gen.n`` (a sampler that saw a
        larger generation) wraps around.

        Raises:
            TypeError: not an integer.  IndexError: negative, or not below :meth:`bound` (SWAP_CAP).
        """
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset indices must be integers, got {type(index).__name__} ({index!r})")
        index = int(index)
        if index < 0:
            raise IndexError(f"dataset index {index} is negative; indices run from 0 to len(dataset)-1")
        if index >= max(gen.n, self.bound()):
            raise IndexError(f"dataset index {index} is out of range: no generation holds more than "
                             f"SWAP_CAP={self.config.swap_cap} samples (the read generation {gen.gen} "
                             f"holds {gen.n})")
        return index % gen.n

    def get(self, indices: Sequence[int], gen: Optional[GenDoc] = None,
            mapped: bool = False) -> list[dict[str, Any]]:
        """Decoded samples for ``indices``, all from one read generation, in order.

        ``gen``: read these slots of this generation (the reuse gate claimed them there) instead
        of the current one.  A sample that is gone or incomplete is never returned: after
        re-reading the state, a newer generation is used if there is one (with ``gen`` given,
        :class:`GenerationGone` is raised instead: the tickets were claimed on ``gen``), else
        another sample of the same generation is served in its place (and a warning logged); with
        ``gen`` given, :class:`SamplesBroken` is raised instead (another sample needs a ticket of its own).

        ``mapped``: large samples from the node cache may be copy-on-write mappings of its pages instead of
        copies (for a caller that drops them soon, like a DataLoader that collates them into a batch: a
        mapping kept across a swap holds the retired segment in memory; see :meth:`NodeCache.read`).
        """
        admitted = gen is not None
        if gen is None:
            gen = self.current()
            if any(_beyond(i, gen.n) for i in indices):
                # a sampler saw a larger len() (another process followed a swap first): re-read the
                # state before wrapping, so a newer generation is served when there is one
                gen = self.current(force=True)
        slots = [self.resolve(i, gen) for i in indices]
        for _ in range(20):
            self._start_prefetch(gen)
            samples, broken = self._fetch(gen, slots, mapped)
            if not broken:
                self._count(gen, len(samples))
                with self._lock:
                    if not self._has_read:  # what was announced before the first read, now that it is done
                        self._has_read = True
                        self._start_read_ahead()
                return samples
            newer = self.current(force=True)
            if newer.gen != gen.gen:
                if admitted:
                    raise GenerationGone(f"generation {gen.gen} lost samples to generation {newer.gen}")
                gen = newer
                slots = [s % gen.n for s in slots]
                continue
            with self._lock:
                self._broken.update(broken)
                self.skipped += len(broken)
                good = [s for s in range(gen.n) if gen.members[s] not in self._broken]
            if not good:
                break
            if admitted:  # the tickets were claimed for these slots: another sample needs its own ticket
                raise SamplesBroken(f"{len(broken)} sample(s) of generation {gen.gen} are gone or incomplete")
            log.warning("%d sample(s) of generation %d are gone or incomplete; serving others instead",
                        len(broken), gen.gen)
            slots = [s if gen.members[s] not in self._broken else good[s % len(good)] for s in slots]
        raise WaitTimeout(f"could not read whole samples of generation {gen.gen}: its samples are gone or "
                          "incomplete. Was the database dropped or cleaned while training ran?")

    def _fetch(self, gen: GenDoc, slots: list[int], mapped: bool) -> tuple[list[dict[str, Any]], set[str]]:
        """Samples for ``slots`` of ``gen``, and the ids of those that are gone or incomplete (then the
        list is empty).  Every sample is decoded afresh from stored bytes copied once (from the node
        cache, this process's cache, what was read ahead or the server's reply), so callers may write to
        what they get.  The samples found in none of them are fetched with one query."""
        unique = list(dict.fromkeys(gen.members[s] for s in slots))
        with self._lock:
            self._reading.update(unique)  # the read-ahead leaves them to this read
        try:
            return self._fetch_reading(gen, slots, unique, mapped)
        finally:
            with self._lock:
                self._reading -= collections.Counter(unique)  # ids no read holds any more are dropped

    def _fetch_reading(self, gen: GenDoc, slots: list[int], unique: list[str],
                       mapped: bool) -> tuple[list[dict[str, Any]], set[str]]:
        sids = [gen.members[s] for s in slots]
        local: dict[str, tuple[Any, list[bytes], int]] = {}
        with self._lock:
            for sid in unique:
                entry = self._held(sid)
                if entry is not None:
                    local[sid] = entry
        missing = [sid for sid in unique if sid not in local]
        for sid in list(missing):  # being prefetched or read ahead right now: wait for it rather than fetch it twice
            with self._lock:
                pending = self._inflight.get(sid)
            if pending is not None:
                with self._lock:
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
            fetched = self._get(missing)  # one query for the whole batch
            for sid in missing:
                entry = self._check(sid, *fetched.pop(sid, (None, None)))
                if entry is not None:
                    local[sid] = entry
                    self._remember(sid, entry)
            del fetched
        broken = {sid for sid in sids if sid not in local and sid not in shared}
        left = collections.Counter(sids)
        out: list[dict[str, Any]] = []
        for sid in sids:
            if sid in broken:
                continue
            left[sid] -= 1
            if sid in shared:
                with self._lock:
                    self._counts["node_hits"] += 1
                meta, buffer = node.read(sid, mapped=mapped)  # type: ignore[union-attr]
            else:
                meta, chunks, total = local[sid] if left[sid] else local.pop(sid)
                buffer = join_chunks(chunks, total)
                del chunks  # a streamed sample's chunks go as soon as it is joined: memory ~ one batch
            arrays = self._decode(sid, meta, buffer)
            if arrays is None:
                broken.add(sid)
                with self._lock:
                    self._forget(sid)
            else:
                out.append(arrays)
        return ([], broken) if broken else (out, broken)

    def _held(self, sid: str) -> Optional[tuple[Any, list[bytes], int]]:
        """``sid``'s entry from this process's cache, or from what was read ahead (handed over once, then
        kept by the cache if it fits there); called with the lock held."""
        entry = self._cache.get(sid)
        if entry is not None:
            self._cache.move_to_end(sid)
            self._counts["cache_hits"] += 1
            return entry
        entry = self._ahead.pop(sid, None)
        if entry is not None:
            self.ahead_hits += 1
            self._remember(sid, entry)
        return entry

    def _get(self, sids: list[str]) -> dict[str, tuple[dict[str, Any], list[bytes]]]:
        """One query for ``sids``; the background fetches yield to it."""
        with self._lock:
            self._demand += 1
            self._counts["fetches"] += 1
            self._counts["fetched_samples"] += len(sids)
        try:
            return self.store.get_samples(sids)
        finally:
            with self._lock:
                self._demand -= 1
                if not self._demand:
                    self._no_demand.notify_all()

    def _after_demand(self) -> None:
        """Return once no read waits for the server (background fetches call it: reads first)."""
        with self._lock:
            while self._demand:
                self._no_demand.wait()

    def _through_node(self, node: NodeCache, sids: list[str], local: dict[str, Any], shared: set[str]) -> None:
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
                try:
                    fetched = self._get(fetch)
                except BaseException:
                    for sid in mine:
                        node.release(sid)
                    raise
                for sid in fetch:
                    entry = self._check(sid, *fetched.get(sid, (None, None)))
                    if entry is None:
                        if sid in mine:
                            node.release(sid)
                    elif sid in mine and node.publish(sid, *entry):
                        shared.add(sid)
                    else:
                        local[sid] = entry
                        self._remember(sid, entry)
            elif busy:
                with self._lock:
                    self._counts["waits"] += 1
                node.wait(busy, deadline)
            pending = busy

    @staticmethod
    def _check(sid: str, manifest: Optional[dict[str, Any]],
               chunks: Optional[list[bytes]]) -> Optional[tuple[list[dict[str, Any]], list[bytes], int]]:
        """``(meta, chunks, stored bytes)`` of a whole sample, or None if it is gone or incomplete."""
        if manifest is None or chunks is None or len(chunks) != manifest.get("nchunks"):
            return None
        total = sum(len(c) for c in chunks)
        if total != manifest.get("stored_bytes"):
            return None
        return manifest.get("meta"), chunks, total

    @staticmethod
    def _decode(sid: str, meta: Any, buffer: Any) -> Optional[dict[str, Any]]:
        try:
            return decode(meta, buffer)
        except (ValueError, TypeError) as e:  # corrupt or crafted: treat like a broken sample, never serve it
            log.warning("sample %s cannot be decoded and is skipped: %s", sid, e)
            return None

    def _remember(self, sid: str, entry: tuple[Any, list[bytes], int]) -> None:
        size = entry[2]
        with self._lock:
            if sid in self._cache or size > self._cache_limit:
                return
            self._cache[sid] = entry
            self._cache_bytes += size
            while self._cache_bytes > self._cache_limit:
                _, (_, _, dropped) = self._cache.popitem(last=False)
                self._cache_bytes -= dropped

    def _forget(self, sid: str) -> None:
        entry = self._cache.pop(sid, None)
        if entry is not None:
            self._cache_bytes -= entry[2]

    # -- read accounting -----------------------------------------------------------
    def _count(self, gen: GenDoc, n: int) -> None:
        with self._lock:
            self.reads += n
            self._pending_reads[gen.gen] += n
            due = (sum(self._pending_reads.values()) >= _FLUSH_READS
                   or time.monotonic() - self._last_flush >= _FLUSH_SECONDS)
        if due:
            self.flush()

    def add_wait(self, seconds: float) -> None:
        """Record time spent waiting because of the reuse cap (on the generation served now)."""
        with self._lock:
            if self.gen is not None:
                self._pending_wait[self.gen.gen] += seconds

    def flush(self) -> None:
        """Report the batched read counts to the store (outside the lock: reads go on meanwhile)."""
        with self._lock:
            reads, wait = self._pending_reads, self._pending_wait
            self._pending_reads, self._pending_wait = collections.Counter(), collections.Counter()
            self._last_flush = time.monotonic()
        for gen in sorted(set(reads) | set(wait)):
            try:
                self.store.add_reads(gen, reads[gen], wait[gen])
            except Exception as e:  # noqa: BLE001 - counting must never fail a read
                log.debug("could not report %d reads of generation %d: %s", reads[gen], gen, e)

    def stats(self) -> dict[str, Any]:
        """What this process's tiers hold and did, for tests and dashboards (one consistent look).

        Now: ``generation`` (served now, or None); ``cache_samples``/``cache_bytes``/``cache_limit`` (this
        process's LRU cache, READER_CACHE_MB); ``ahead_samples``/``ahead_bytes`` (read ahead, not read yet);
        ``inflight`` (samples a background fetch is fetching now); ``worker`` (whether a background fetch
        thread runs); ``node`` (whether the node cache is used), ``node_segment`` (its files' path without
        suffix, or None), ``node_capacity`` (bytes), ``node_ready``/``node_bytes`` (samples and stored bytes
        the segment holds, fetched by any reader of the node).  Counters since the reader was made: ``reads``,
        ``skipped`` (broken samples), ``cache_hits``, ``ahead_hits``, ``node_hits``, ``fetches`` (queries of
        a read), ``fetched_samples``, ``waits`` (for a fetch in flight here or on another reader of the
        node)."""
        with self._lock:
            node = self._node
            out: dict[str, Any] = {
                "generation": self.gen.gen if self.gen is not None else None,
                "cache_samples": len(self._cache), "cache_bytes": self._cache_bytes, "cache_limit": self._cache_limit,
                "ahead_samples": len(self._ahead), "ahead_bytes": sum(e[2] for e in self._ahead.values()),
                "inflight": len(self._inflight),
                "worker": self._ahead_thread is not None,
                "node": node is not None,
                "node_segment": node.base if node is not None else None,
                "node_capacity": node.capacity if node is not None else 0,
                "reads": self.reads, "skipped": self.skipped, "ahead_hits": self.ahead_hits,
            }
            for key in ("cache_hits", "node_hits", "fetches", "fetched_samples", "waits"):
                out[key] = self._counts[key]
        try:
            out["node_ready"], out["node_bytes"] = node.usage() if node is not None else (0, 0)
        except OSError:
            out["node_ready"], out["node_bytes"] = 0, 0
        return out



def _beyond(index: Any, n: int) -> bool:
    return isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)) and index >= n
