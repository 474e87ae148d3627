"""Reader: one process's view of the read generation.

The view says which generation is served (a reader follows newer generations as they appear: it looks
at the state at most every POLL_SECONDS), what its members are, how an index maps onto a sample (any
index below SWAP_CAP is served: one beyond the read generation, from a sampler built on a larger
``len()`` seen by this process or another before a swap, makes the reader re-read the state, then wraps
onto the read generation), and counts reads.  A batch is always taken from one generation: samples are
never mixed across generations, and never partial (a sample whose chunks are not all there is skipped,
never returned).

Where a sample's bytes come from is the fetch engine's job (:mod:`wirehead.fetch`): what was read ahead
for batches announced with :meth:`Reader.read_ahead` (a :class:`~wirehead.sampler.ReadAheadSampler` does
it), this process's cache (READER_CACHE_MB), the node cache (NODE_CACHE_MB, shared by every reader of the
node) and the server, one query per batch, so memory stays bounded whatever the generation's size.  Each
read decodes the stored bytes into fresh arrays with one copy, so callers may write to what they get.

Reads are counted per generation and reported to the store in batches, for monitoring and for the reuse cap.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from typing import Any, Optional, Sequence

import numpy as np

from .chunks import decode
from .errors import StoreUnavailable, WaitTimeout
from .fetch import FetchEngine
from .store import BEST_EFFORT_SECONDS, GenDoc, Store

__all__ = ["Reader", "GenerationGone", "SamplesBroken"]

log = logging.getLogger(__name__)

_FLUSH_READS = 64
_FLUSH_SECONDS = 2.0
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
        self._lock = threading.Lock()  # the view's bookkeeping below; never held across I/O
        self._refresh_lock = threading.Lock()  # one look at the server's state at a time
        self._pending_reads: "collections.Counter[int]" = collections.Counter()  # per generation
        self._pending_wait: "collections.Counter[int]" = collections.Counter()
        self._last_flush = time.monotonic()
        self.reads = 0
        self.skipped = 0
        self._broken: set[str] = set()
        self.fetcher = FetchEngine(store, self._sids, prefetch=prefetch)  # the storage tiers behind the reads

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
            self._broken.clear()
        self.fetcher.serve(doc)
        with self._lock:
            closed = self.gen is not doc  # closed meanwhile
        if closed:
            self.fetcher.close()
        log.debug("reader now serves generation %d (%d samples)", doc.gen, doc.n)
        return doc

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
        if depth > 0:
            self.fetcher.announce(batches, depth)

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
        return self.fetcher.held_ahead

    @property
    def ahead_hits(self) -> int:
        """Samples served from what was read ahead, since the reader was made."""
        return self.fetcher.stats()["ahead_hits"]

    def __len__(self) -> int:
        return self.current().n

    def close(self, flush: bool = True) -> None:
        """Stop fetching in the background (the worker ends after the fetch in progress) and drop what
        this process's tiers hold; with ``flush``, report pending read counts first.  The reader can be used again
        afterwards: it re-reads the state."""
        if flush:
            self.flush()
        with self._lock:
            self.gen = None
            self._pending_reads.clear()
            self._pending_wait.clear()
        self.fetcher.close()  # background fetches end after the one in progress

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
            samples, broken = self._read(gen, slots, mapped)
            if not broken:
                self._count(gen, len(samples))
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

    def _read(self, gen: GenDoc, slots: list[int], mapped: bool) -> tuple[list[dict[str, Any]], set[str]]:
        """Decoded samples for ``slots`` of ``gen`` (fresh arrays: callers may write to them), and the ids
        of those that are gone, incomplete or undecodable (then the list is empty)."""
        sids = [gen.members[s] for s in slots]
        entries, broken = self.fetcher.fetch(gen, sids, mapped)
        if broken:
            return [], broken
        out: list[dict[str, Any]] = []
        entries.reverse()
        for sid in sids:
            meta, buffer = entries.pop()  # each stored buffer goes once decoded: memory ~ one batch
            arrays = self._decode(sid, meta, buffer)
            del buffer
            if arrays is None:
                broken.add(sid)
                self.fetcher.forget(sid)
            else:
                out.append(arrays)
        return ([], broken) if broken else (out, broken)

    @staticmethod
    def _decode(sid: str, meta: Any, buffer: Any) -> Optional[dict[str, Any]]:
        try:
            return decode(meta, buffer)
        except (ValueError, TypeError) as e:  # corrupt or crafted: treat like a broken sample, never serve it
            log.warning("sample %s cannot be decoded and is skipped: %s", sid, e)
            return None

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
        """What this process's view and tiers hold and did, for tests and dashboards.

        The view: ``generation`` (served now, or None), ``reads`` and ``skipped`` (broken samples) since the
        reader was made.  The fetch engine's tiers now: ``cache_samples``/``cache_bytes``/``cache_limit``
        (this process's LRU cache, READER_CACHE_MB); ``ahead_samples``/``ahead_bytes`` (read ahead, not read
        yet); ``inflight`` (samples the background worker is fetching now); ``worker`` (whether it runs);
        ``node`` (whether the node cache is used), ``node_segment`` (its files' path without suffix, or
        None), ``node_capacity`` (bytes), ``node_ready``/``node_bytes`` (samples and stored bytes the segment
        holds, fetched by any reader of the node).  Its counters: ``cache_hits``, ``ahead_hits``,
        ``node_hits``, ``fetches`` (queries of reads), ``fetched_samples``, ``waits`` (for a fetch in flight
        here or on another reader of the node), ``ahead_fetched`` and ``prefetched`` (samples fetched in the
        background)."""
        with self._lock:
            out: dict[str, Any] = {"generation": self.gen.gen if self.gen is not None else None,
                                   "reads": self.reads, "skipped": self.skipped}
        out.update(self.fetcher.stats())
        return out



def _beyond(index: Any, n: int) -> bool:
    return isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)) and index >= n
