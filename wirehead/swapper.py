"""Swapper: the swap and the garbage collection of the generation protocol.

One :class:`Swapper` step, done by whoever holds the swap lease (a manager, or a
generator when no manager runs):

1. take or renew the lease (it expires, so a dead swapper is replaced);
2. swap when the write generation is full (SWAP_CAP committed samples), or sealed, or
   when readers asked for an early swap (REUSE_POLICY ``swap_early``) and it holds at
   least SWAP_EARLY_MIN samples: seal it, then one conditional update of the state;
3. start the grace period of generations that stopped being read, and delete those
   whose grace period is over, and the oldest beyond RETIRED_GENERATIONS retired ones
   whatever their grace: before and after every swap, whoever swaps, and generators make a
   next write generation only while fewer than RETIRED_GENERATIONS + 3 exist (so storage is
   bounded at every moment, whatever the swap rate);
4. now and then, delete orphans: uncommitted samples whose writer is dead by its
   heartbeat (silent for ORPHAN_SECONDS and for three of the writer's own heartbeat
   periods, or never seen, and the chunks ORPHAN_SECONDS old).
   The writer is *fenced* first (one conditional update of its heartbeat record), so a
   writer that was only paused (SIGSTOP, a suspended job) and resumes never commits a
   sample whose chunks were deleted: it sees the fence and writes the sample again.

Every step is idempotent: a swapper killed at any instruction leaves a state the
next step (its own after a restart, or another process's) completes.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Optional

from .store import State, Store

__all__ = ["Swapper", "StepResult", "CLEANUP_SECONDS"]

log = logging.getLogger(__name__)

#: Seconds the final writes of a stopping generator or manager (lease release, last heartbeat) may retry.
CLEANUP_SECONDS = 2.0
#: heartbeat periods of its own a writer must miss (beyond ORPHAN_SECONDS) before the orphan sweep fences it
_BEATS_OF_SILENCE = 3


@dataclass(frozen=True)
class StepResult:
    """What one swapper step did."""

    has_lease: bool
    swapped: bool = False
    read_gen: Optional[int] = None
    deleted_gens: int = 0
    deleted_orphans: int = 0


class Swapper:
    """Performs lease, swap and garbage collection steps for one process.

    Not thread-safe; each process (or thread) that swaps makes its own.
    """

    def __init__(self, store: Store, role: str = "manager") -> None:
        if role not in ("manager", "generator"):
            raise ValueError(f"role should be 'manager' or 'generator', but got role={role!r}")
        self.store = store
        self.config = store.config
        self.role = role
        self.holder = f"{role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._next_orphan_sweep = 0.0

    def try_lease(self) -> bool:
        """Take or renew the lease; False if another live swapper holds it.

        A manager also takes the lease from a generator (generators only swap while no
        manager runs).
        """
        preempt = "generator@" if self.role == "manager" else None
        return self.store.acquire_lease(self.holder, self.config.lease_seconds, preempt=preempt)

    def release(self) -> None:
        """Give the lease back (e.g. on a clean stop), so another swapper need not wait for it to expire."""
        self.store.release_lease(self.holder)

    def step(self) -> StepResult:
        """One round: lease, maybe swap, maybe collect garbage.  Raises StoreUnavailable / StoreError."""
        if not self.try_lease():
            return StepResult(has_lease=False)
        state = self.store.state()
        swapped = self._maybe_swap(state)
        if swapped:
            state = self.store.state()
        deleted = self._collect(state)
        orphans = self._sweep_orphans()
        return StepResult(has_lease=True, swapped=swapped, read_gen=state.read_gen,
                          deleted_gens=deleted, deleted_orphans=orphans)

    # -- swap --------------------------------------------------------------------
    def _swap_due(self, state: State, n: int, sealed: bool) -> Optional[str]:
        cfg = self.config
        if sealed:
            return "sealed"
        if n >= cfg.swap_cap:
            return "full"
        if (cfg.reuse_cap and cfg.reuse_policy == "swap_early" and state.swap_request is not None
                and state.swap_request == state.read_gen and n >= cfg.swap_early_min):
            return "swap_early"
        if state.read_gen is None and cfg.min_fill and n >= cfg.min_fill:
            return "min_fill"
        return None

    def swap_full(self, gen: Optional[int] = None, *, full: bool = False, deadline: Optional[float] = None) -> bool:
        """Swap generation ``gen`` (default: the write generation) if it is the full write generation and no
        manager holds the lease.

        For a generator that just took the last slot while another generator holds the lease (``full=True``:
        its commit's slot shows the generation full, so its count is not read again), and for a generator
        that ends (a writer that filled the generation may have died before its swap): the swap of a full
        generation is one conditional update, safe whoever does it, so the generation does not wait for
        another process's next step.  A live manager's lease is respected (it swaps).  ``deadline``: seconds
        the reads of the state and the counts may retry (default RETRY_DEADLINE).  Returns True if this
        call swapped.
        """
        state = self.store.state(deadline=deadline)
        manager_holds = (state.lease_holder is not None and state.lease_holder.startswith("manager@")
                         and state.lease_expires >= time.time())
        gen = state.write_gen if gen is None else gen
        if state.write_gen != gen or manager_holds:
            return False
        n = self.config.swap_cap if full else self.store.gen_counts(deadline=deadline).get(gen, (0, False))[0]
        return n >= self.config.swap_cap and self._swap(state, n, "full")

    def _maybe_swap(self, state: State) -> bool:
        g = state.write_gen
        counts = self.store.gen_counts()
        if g not in counts:
            self.store.ensure_gen(g)
            return False
        n, sealed = counts[g]
        reason = self._swap_due(state, n, sealed)
        return reason is not None and self._swap(state, n, reason)

    def _swap(self, state: State, n: int, reason: str) -> bool:
        g = state.write_gen
        t0 = time.perf_counter()
        if reason != "full":  # a full generation refuses commits already; others are closed first
            self.store.seal(g)
        # storage bound: at most RETIRED_GENERATIONS retired before the swap, so the swap (which retires the
        # read generation and may create the next write generation) leaves at most RETIRED_GENERATIONS + 3
        self._collect(state)
        if not self.store.swap(g):
            return False
        took = time.perf_counter() - t0
        if state.read_gen is not None:
            self.store.mark_retired(state.read_gen, time.time())
        doc = next((d for d in self.store.gen_docs(members=False) if d.gen == g), None)
        size = doc.n if doc else n
        log.info("swap: generation %d (%d samples, %s) is now read; writing generation %d", g, size, reason, g + 1)
        self.store.log_swap({"gen": g, "size": size, "reason": reason, "swap_seconds": took, "by": self.holder,
                             "stored_bytes": doc.stored_bytes if doc else 0})
        if (state.swaps + 1) % 100 == 0:
            self.store.trim_swap_log()
        # and the generation it retired beyond RETIRED_GENERATIONS goes now, whoever swapped (a generator's
        # swap_full too), so generators find room for the next write generation (see has_room)
        self._collect(self.store.state())
        return True

    def has_room(self) -> bool:
        """Whether one more generation may be made now: fewer than RETIRED_GENERATIONS + 3 exist (retired
        ones, the read, the write and the next write generation).  Generators make the next write
        generation only then, so the server never holds more than ``(RETIRED_GENERATIONS + 3) × SWAP_CAP``
        committed samples, whoever swaps and however fast."""
        return len(self.store.gen_counts()) < self.config.retired_generations + 3

    # -- garbage -------------------------------------------------------------------
    def _collect(self, state: State) -> int:
        if state.read_gen is None:
            return 0
        now = time.time()
        deleted = 0
        retired = [g for g in self.store.gen_docs(members=False) if g.gen < state.read_gen]
        excess = max(0, len(retired) - self.config.retired_generations)
        for k, gen in enumerate(retired):
            if k < excess:  # beyond RETIRED_GENERATIONS: the oldest go now, whatever their grace
                size = self.store.drop_gen(gen.gen)
                deleted += 1
                log.info("deleted generation %d (%d samples): more than RETIRED_GENERATIONS=%d retired",
                         gen.gen, size, self.config.retired_generations)
            elif gen.retired_at is None:
                # the swapper that retired it died before recording when: start its grace now
                self.store.mark_retired(gen.gen, now)
            elif now - gen.retired_at >= self.config.grace_seconds:
                size = self.store.drop_gen(gen.gen)
                deleted += 1
                log.info("deleted generation %d (%d samples) after its grace period", gen.gen, size)
        return deleted

    def _sweep_orphans(self) -> int:
        now = time.time()
        if now < self._next_orphan_sweep:
            return 0
        self._next_orphan_sweep = now + max(1.0, min(60.0, self.config.orphan_seconds / 4))
        stale = now - self.config.orphan_seconds
        candidates = self.store.orphan_candidates(stale)
        if not candidates:
            return 0
        by_writer: dict[Optional[str], set[str]] = {}
        for sid, writer in candidates.items():
            by_writer.setdefault(writer, set()).add(sid)
        # fence first, then read the members: a writer that committed before its fence is seen as a
        # member here; one that commits after it sees the fence and restores its chunks
        # a writer is silent only once ORPHAN_SECONDS and three of its own heartbeat periods have passed:
        # one that beats more slowly than this process's ORPHAN_SECONDS is not dead between two beats
        periods = self.store.heartbeat_periods([w for w in by_writer if w is not None])
        fenced = {w for w in by_writer
                  if w is None or self.store.fence_writer(w, min(stale, now - _BEATS_OF_SILENCE * periods.get(w, 0.0)))}
        if not fenced:
            return 0
        live = self.store.live_members()
        deleted = 0
        for writer in fenced:
            orphans = by_writer[writer] - live
            if orphans:
                self.store.delete_samples(orphans, writer=writer)
                deleted += len(orphans)
        if deleted:
            log.info("deleted %d orphan samples (never committed; their writers silent for over %.0f s)",
                     deleted, self.config.orphan_seconds)
        return deleted
