"""Reader: one process's view of the read generation, with a bounded cache of decoded samples.

The read generation is immutable (its member list never changes once it is read), so a
sample fetched once can be served again from memory until the next swap.  A reader
follows newer generations as they appear (it looks at the state at most every
POLL_SECONDS), and a batch is always taken from one generation: samples are never
mixed across generations, and never partial (a sample whose chunks are not all
there is skipped, never returned).

Reads are counted per generation and reported to the store in batches, for
monitoring and for the reuse cap.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Optional, Sequence

import numpy as np

from .codec import decode, join_chunks
from .errors import WaitTimeout
from .store import GenDoc, Store

__all__ = ["Reader"]

log = logging.getLogger(__name__)

_FLUSH_READS = 64
_FLUSH_SECONDS = 2.0


class Reader:
    """Serves decoded samples of the current read generation.  Thread-safe."""

    def __init__(self, store: Store, timeout: Optional[float] = None) -> None:
        self.store = store
        self.config = store.config
        self.timeout = self.config.read_timeout if timeout is None else float(timeout)
        self.gen: Optional[GenDoc] = None
        self._checked = 0.0
        self._lock = threading.RLock()
        self._cache: "collections.OrderedDict[str, tuple[dict[str, Any], int]]" = collections.OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = self.config.reader_cache_mb * 1024 * 1024
        self._pending_reads = 0
        self._pending_wait = 0.0
        self._last_flush = time.monotonic()
        self.reads = 0
        self.max_len = 0
        self.skipped = 0
        self._broken: set[str] = set()

    # -- generations ---------------------------------------------------------------
    def current(self, force: bool = False) -> GenDoc:
        """The read generation, waiting up to the timeout for the first one.

        Raises:
            WaitTimeout: no read generation appeared in time (no generator or swapper running?).
        """
        with self._lock:
            now = time.monotonic()
            if self.gen is not None and not force and now - self._checked < self.config.poll_seconds:
                return self.gen
            deadline = now + self.timeout
            while True:
                self.store.ensure_schema()
                state = self.store.state()
                self._checked = time.monotonic()
                if state.read_gen is not None:
                    if self.gen is None or self.gen.gen != state.read_gen:
                        doc = self.store.gen_doc(state.read_gen)
                        if doc is not None and doc.n > 0:
                            self._switch(doc)
                    if self.gen is not None:
                        return self.gen
                if time.monotonic() >= deadline:
                    counts = self.store.gen_counts()
                    filled = counts.get(state.write_gen, (0, False))[0]
                    raise WaitTimeout(
                        f"no read generation after {self.timeout:.0f} s: the write generation "
                        f"{state.write_gen} holds {filled} of SWAP_CAP={self.config.swap_cap} samples. "
                        "Are generators running (and a manager, or none at all)? Raise READ_TIMEOUT "
                        "or the dataset's timeout to wait longer."
                    )
                time.sleep(self.config.poll_seconds)

    def _switch(self, doc: GenDoc) -> None:
        old = self.gen
        self.flush()
        self.gen = doc
        self.max_len = max(self.max_len, doc.n) if old is None else doc.n
        self._cache.clear()
        self._cache_bytes = 0
        self._broken.clear()
        log.debug("reader now serves generation %d (%d samples)", doc.gen, doc.n)

    def __len__(self) -> int:
        return self.current().n

    # -- samples -------------------------------------------------------------------
    def resolve(self, index: int, gen: GenDoc) -> int:
        """Map a user's index onto a slot of ``gen``.

        Raises:
            TypeError: not an integer.  IndexError: negative, or beyond every size reported.
        """
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset indices must be integers, got {type(index).__name__} ({index!r})")
        index = int(index)
        if index < 0:
            raise IndexError(f"dataset index {index} is negative; indices run from 0 to len(dataset)-1")
        if index >= max(gen.n, self.max_len):
            raise IndexError(f"dataset index {index} is out of range for the read generation "
                             f"{gen.gen} of {gen.n} samples")
        # a smaller generation than the one a sampler saw (early swap): wrap around
        return index % gen.n

    def get(self, indices: Sequence[int], gen: Optional[GenDoc] = None) -> list[dict[str, Any]]:
        """Decoded samples for ``indices``, all from one read generation, in order.

        ``gen``: read these slots of this generation (the reuse gate claimed them there) instead
        of the current one.  A sample that is gone or incomplete is never returned: after
        re-reading the state, a newer generation is used if there is one, else another sample of
        the same generation is served in its place (and a warning logged).
        """
        with self._lock:
            gen = gen or self.current()
            slots = [self.resolve(i, gen) for i in indices]
        for _ in range(20):
            samples, broken = self._fetch(gen, slots)
            if not broken:
                self._count(gen, len(samples))
                return samples
            newer = self.current(force=True)
            if newer.gen != gen.gen:
                gen = newer
                slots = [s % gen.n for s in slots]
                continue
            with self._lock:
                self._broken.update(broken)
                self.skipped += len(broken)
                good = [s for s in range(gen.n) if gen.members[s] not in self._broken]
            if not good:
                break
            log.warning("%d sample(s) of generation %d are gone or incomplete; serving others instead",
                        len(broken), gen.gen)
            slots = [s if gen.members[s] not in self._broken else good[s % len(good)] for s in slots]
        raise WaitTimeout(f"could not read whole samples of generation {gen.gen}: its samples are gone or "
                          "incomplete. Was the database dropped or cleaned while training ran?")

    def _fetch(self, gen: GenDoc, slots: list[int]) -> tuple[list[dict[str, Any]], set[str]]:
        """Samples for ``slots`` of ``gen`` (copies: callers may write to them), and the ids of those
        that are gone or incomplete (then the list is empty)."""
        sids = [gen.members[s] for s in slots]
        with self._lock:
            missing = [sid for sid in dict.fromkeys(sids) if sid not in self._cache]
        broken: set[str] = set()
        if missing:
            manifests = self.store.get_manifests(missing)
            chunks = self.store.get_chunks(missing) if manifests else {}
            for sid in missing:
                arrays = self._decode(sid, manifests.get(sid), chunks.get(sid))
                if arrays is None:
                    broken.add(sid)
                else:
                    self._remember(sid, arrays)
        if broken:
            return [], broken
        out = []
        with self._lock:
            for sid in sids:
                entry = self._cache.get(sid)
                if entry is None:  # evicted between fetch and use (cache smaller than a batch)
                    entry = self._refetch(sid)
                self._cache.move_to_end(sid) if sid in self._cache else None
                out.append({k: _copy(v) for k, v in entry[0].items()})
        return out, broken

    def _refetch(self, sid: str) -> tuple[dict[str, Any], int]:
        manifests = self.store.get_manifests([sid])
        arrays = self._decode(sid, manifests.get(sid), self.store.get_chunks([sid]).get(sid))
        if arrays is None:
            raise WaitTimeout(f"sample {sid} vanished while being read")
        return arrays, 0

    @staticmethod
    def _decode(sid: str, manifest: Optional[dict[str, Any]], chunks: Optional[list[bytes]]) -> Optional[dict[str, Any]]:
        if manifest is None or chunks is None or len(chunks) != manifest.get("nchunks"):
            return None
        total = sum(len(c) for c in chunks)
        if total != manifest.get("stored_bytes"):
            return None
        try:
            return decode(manifest.get("meta"), join_chunks(chunks, total))
        except (ValueError, TypeError) as e:  # corrupt or crafted: treat like a broken sample, never serve it
            log.warning("sample %s cannot be decoded and is skipped: %s", sid, e)
            return None

    def _remember(self, sid: str, arrays: dict[str, Any]) -> None:
        size = sum(int(getattr(a, "nbytes", 0)) for a in arrays.values())
        with self._lock:
            if sid in self._cache:
                return
            self._cache[sid] = (arrays, size)
            self._cache_bytes += size
            while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
                _, (_, dropped) = self._cache.popitem(last=False)
                self._cache_bytes -= dropped
            if self._cache_bytes > self._cache_limit:  # the limit is smaller than one sample
                self._cache.clear()
                self._cache_bytes = 0

    # -- read accounting -----------------------------------------------------------
    def _count(self, gen: GenDoc, n: int) -> None:
        with self._lock:
            self.reads += n
            self._pending_reads += n
            if (self._pending_reads >= _FLUSH_READS
                    or time.monotonic() - self._last_flush >= _FLUSH_SECONDS):
                self.flush()

    def add_wait(self, seconds: float) -> None:
        """Record time spent waiting because of the reuse cap."""
        with self._lock:
            self._pending_wait += seconds

    def flush(self) -> None:
        """Report the batched read count to the store."""
        with self._lock:
            if self.gen is None or (self._pending_reads == 0 and self._pending_wait == 0):
                self._last_flush = time.monotonic()
                return
            reads, wait = self._pending_reads, self._pending_wait
            self._pending_reads, self._pending_wait = 0, 0.0
            self._last_flush = time.monotonic()
            gen = self.gen.gen
        try:
            self.store.add_reads(gen, reads, wait)
        except Exception as e:  # noqa: BLE001 - counting must never fail a read
            log.debug("could not report %d reads of generation %d: %s", reads, gen, e)


def _copy(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.copy()
    clone = getattr(value, "clone", None)
    return clone() if clone is not None else value
