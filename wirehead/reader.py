"""Reader: one process's view of the read generation.

The view says which generation is served (a reader follows newer generations as they appear: it looks
at the state at most every POLL_SECONDS; once it serves one, in the background, so a read never waits on
the server for the view), what its members are, how an index maps onto a sample (any
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

Reads are counted per generation and reported to the store in batches (in the background), for monitoring
and for the reuse cap.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
import weakref
from typing import Any, Optional, Sequence

import numpy as np

from .chunks import decode
from .errors import StoreUnavailable, WaitTimeout
from .fetch import FetchEngine
from .store import GenDoc, State, Store

__all__ = ["Reader", "GenerationGone", "SamplesBroken", "VIEW_THREAD"]

log = logging.getLogger(__name__)

_FLUSH_READS = 64
_FLUSH_SECONDS = 2.0
_HINT_SECONDS = 10.0  # waiting this long for a first generation of an empty cache logs where other caches are
_OUTAGE_POLL_SECONDS = 2.0  # while the server is away, a reader serving its generation polls this much less often
VIEW_THREAD = "wirehead-view"  # the thread that looks at the state and reports read counts behind a reader's reads
#: A reader's view thread ends after this long with no look asked of it (the next read that needs one starts it).
_VIEW_IDLE_SECONDS = 10.0


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
        self._checked = 0.0  # the next look is due POLL_SECONDS after this (time.monotonic())
        self._looked = 0.0  # when the last look that found the state began
        self._lock = threading.Lock()  # the view's bookkeeping below; never held across I/O
        self._refresh_lock = threading.Lock()  # one look at the state at a time (the background one included)
        self._flush_lock = threading.Lock()  # one report of read counts at a time (reads never take it)
        self._opened = 0  # counts close(): a look begun before a close serves nothing after it
        self._failed: Optional[BaseException] = None  # a background look's refusal, raised by the next read
        self._found: Optional[GenDoc] = None  # a newer generation a background look found, served by the next read
        self._view_wake = threading.Event()  # a look is asked of the view thread (see _behind)
        self._view_running = False  # the view thread runs, or is being started
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

        Serving a generation, this never waits on the server: when a look at the state is due (POLL_SECONDS
        after the last one began), it is made in the background (thread :data:`VIEW_THREAD`, which also
        reports the read counts) and the generation served now is returned; the first call after the look
        found a newer generation serves that one (so :attr:`gen` changes only within a call of this
        reader).  A look that finds no server keeps the generation served (an outage, a failover: it is
        logged, and the state is looked at less often until the server answers).
        ``force``: look now and wait for the answer (a read found samples gone; a sampler saw a larger
        ``len()``); it waits for a look in progress first.

        Raises:
            WaitTimeout: no read generation appeared in time (no generator or swapper running?).
            StoreUnavailable: no server answered a look this call waits for (the first one, or a forced one).
            ConfigError: the cache's settings differ from this process's (also found by a background look).
        """
        started = time.monotonic()
        with self._lock:
            seen, opened = self.gen, self._opened
            due = started - self._checked >= self.config.poll_seconds
            failed, self._failed = self._failed, None
        if failed is not None:
            raise failed
        if seen is not None and not force:
            seen = self._take_found(opened) or seen
            if due:
                self._behind()
            return seen
        with self._refresh_lock:  # the first look, or a forced one: after the look in progress
            with self._lock:
                looked = self.gen is not None and self._looked >= started
            if looked:  # another thread looked while this one waited for its turn: its answer serves
                gen = self._take_found(opened)  # what a background look found is in _found, not yet served
                if gen is not None:
                    return gen
            now = time.monotonic()
            deadline = now + self.timeout
            hint_at = now + _HINT_SECONDS  # then say once where other caches are, if this one is still empty
            while True:
                self.store.ensure_schema()
                state = self._state()
                gen = self._follow(state, opened, stage=False)
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

    def _take_found(self, opened: int) -> Optional[GenDoc]:
        """Serve the newer generation a background look found, if it found one; returns the generation served
        (None when the reader was closed since ``opened``)."""
        with self._lock:
            found, self._found = self._found, None
            gen = self.gen
        return gen if found is None else self._switch(found, opened)

    def _state(self) -> State:
        """The state document, the time this look began recorded (called with the refresh lock held)."""
        looked = time.monotonic()
        state = self.store.state()
        with self._lock:
            self._looked = max(self._looked, looked)
            self._checked = max(self._checked, looked)
        return state

    def _follow(self, state: State, opened: int, stage: bool) -> Optional[GenDoc]:
        """The generation to serve after a look found ``state``: the newer read generation (switched to, or
        with ``stage`` kept for the next :meth:`current` to switch to), else the one served; None while
        there is none (called with the refresh lock held)."""
        with self._lock:
            gen = self.gen
        if state.read_gen is not None and (gen is None or gen.gen != state.read_gen):
            doc = self.store.gen_doc(state.read_gen)
            if doc is not None and doc.n > 0:
                if not stage:
                    return self._switch(doc, opened)
                with self._lock:
                    if self._opened == opened and self.gen is gen:
                        self._found = doc
        return gen

    def _behind(self) -> None:
        """Ask the view thread (:data:`VIEW_THREAD`) for a look at the state and a report of read counts.

        The thread stays for :data:`_VIEW_IDLE_SECONDS` after its last look, so a read that asks for one only
        sets an event: starting a thread waits until the new thread runs, several ms on a busy machine, every
        POLL_SECONDS.  It holds the reader weakly: a dropped reader is collected, and its thread then ends."""
        with self._lock:
            self._view_wake.set()
            if self._view_running:
                return
            self._view_running = True
        wake = self._view_wake  # a collected reader wakes its thread, which then ends
        started = False
        try:
            threading.Thread(target=_view, args=(weakref.ref(self, lambda _: wake.set()), wake), name=VIEW_THREAD,
                             daemon=True).start()
            started = True
        except RuntimeError as e:  # no new threads (the interpreter is exiting): the read goes on without it
            log.debug("no background look at the state: %s", e)
        finally:
            if not started:  # the next read that wants a look tries again
                with self._lock:
                    self._view_running = False

    def _view_idle(self) -> bool:
        """The view thread's end after its idle time: True when no look was asked for meanwhile."""
        with self._lock:
            if self._view_wake.is_set():
                return False
            self._view_running = False
            return True

    def _look_behind(self) -> None:
        """The view thread's look (it holds the refresh lock for it): report read counts when due, then look at
        the state when due and follow a newer generation.  Its errors never reach a read, but a refusal
        (other settings: ConfigError, StoreError) is raised by the next :meth:`current`."""
        try:
            with self._lock:
                flush = self._flush_due()
            if flush:
                self.flush()
            with self._lock:  # due now, after the report (which may have waited for a busy server)
                gen, opened = self.gen, self._opened
                look = gen is not None and time.monotonic() - self._checked >= self.config.poll_seconds
            if not look:
                return
            try:
                self._follow(self._state(), opened, stage=True)
            except StoreUnavailable as e:
                with self._lock:
                    self._checked = time.monotonic() + _OUTAGE_POLL_SECONDS
                log.warning("serving generation %d from memory while the server is away: %s", gen.gen, e)
            except Exception as e:  # noqa: BLE001 - a refusal: the next read raises it
                with self._lock:
                    if self._opened == opened:
                        self._failed = e
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

    def _switch(self, doc: GenDoc, opened: int) -> Optional[GenDoc]:
        """Serve ``doc`` from now on; returns it, or None when the reader was closed since the look that found
        it began (``opened``: :attr:`_opened` then).  No server call: the read counts of the generation left
        are reported in the background soon after."""
        with self._lock:
            if self._opened != opened:
                return None
            self.gen = doc
            self._found = None
            self._broken.clear()
            self._last_flush = -math.inf  # report the counts of the generation left with the next read
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
            self._opened += 1
            self._failed = self._found = None
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
            due = self._flush_due()
        if due:
            self._behind()  # reported in the background: a read never waits for its count

    def _flush_due(self) -> bool:
        """Whether read counts are due to be reported (called with the lock held)."""
        return bool(self._pending_reads or self._pending_wait) and (
            sum(self._pending_reads.values()) >= _FLUSH_READS
            or time.monotonic() - self._last_flush >= _FLUSH_SECONDS)

    def add_wait(self, seconds: float) -> None:
        """Record time spent waiting because of the reuse cap (on the generation served now)."""
        with self._lock:
            if self.gen is not None:
                self._pending_wait[self.gen.gen] += seconds

    def flush(self) -> None:
        """Report the batched read counts to the store (outside the lock: reads go on meanwhile); returns
        when they are reported, those of a report in progress in the background included."""
        with self._flush_lock:
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



def _view(ref: "weakref.ref[Reader]", wake: threading.Event) -> None:
    """The view thread of the reader ``ref``: a look each time one is asked for (none while a forced look is in
    progress: that one serves); ends after :data:`_VIEW_IDLE_SECONDS` without one, or when the reader is gone."""
    while True:
        asked = wake.wait(_VIEW_IDLE_SECONDS)
        reader = ref()
        if reader is None:
            return
        if not asked:
            if reader._view_idle():
                return
            continue
        wake.clear()
        if reader._refresh_lock.acquire(blocking=False):
            reader._look_behind()  # releases the refresh lock
        del reader  # held weakly while waiting


def _beyond(index: Any, n: int) -> bool:
    return isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)) and index >= n
