"""ReuseGate: bounds how often a sample of a read generation is served (REUSE_CAP, REUSE_POLICY).

With ``REUSE_CAP: k`` every generation of ``n`` samples has ``k * n`` read *tickets*,
claimed by readers in batches with one atomic update per batch (so the count is shared by
every DataLoader worker and every trainer).  Ticket ``t`` serves slot ``perm_r[t % n]``,
where ``r = t // n`` and ``perm_r`` is a permutation fixed by the generation and round:
each round serves every sample once, so no sample is served more than ``k`` times.
With a cap the dataset's index therefore does not choose the sample; samples are dealt in
shuffled rounds.

When the tickets are spent, REUSE_POLICY decides:

* ``wait``: block until the next read generation (up to READ_TIMEOUT, then WaitTimeout);
* ``warn``: log a warning once per generation and keep serving the requested indices;
* ``swap_early``: ask the swapper to swap as soon as the write generation holds
  SWAP_EARLY_MIN samples, and wait for that swap.

With ``REUSE_CAP: 0`` (the default) reuse is unbounded and indices are served as given.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional, Sequence

import numpy as np

from .errors import WaitTimeout
from .reader import Reader
from .store import GenDoc

__all__ = ["ReuseGate"]

log = logging.getLogger(__name__)

_BATCH = 16


class ReuseGate:
    """Turns requested indices into admitted slots of the read generation.  One per process."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.config = reader.config
        self._gen = -1
        self._next = 0
        self._left = 0
        self._warned_gen = -1
        self.waited = 0.0

    def admit(self, indices: Sequence[Any]) -> tuple[Optional[GenDoc], list[Any]]:
        """What to serve: ``(None, indices)`` without a cap, else ``(generation, slots of claimed tickets)``."""
        cap = self.config.reuse_cap
        if not cap:
            return None, list(indices)
        current = self.reader.current()
        for i in indices:  # bad indices fail the same way with or without a cap
            self.reader.resolve(i, current)
        out: list[Any] = []
        started = None
        deadline = None
        served: Optional[GenDoc] = None
        while len(out) < len(indices):
            gen = self.reader.current(force=started is not None)
            if served is not None and gen.gen != served.gen:
                out, self._left = [], 0  # a swap came mid-batch: take the whole batch from the new one
            served = gen
            if gen.gen != self._gen:
                self._gen, self._next, self._left = gen.gen, 0, 0
            if self._left == 0:
                want = max(_BATCH, len(indices) - len(out))
                first, got = self.reader.store.claim_tickets(gen.gen, want, cap * gen.n)
                self._next, self._left = first, got
            if self._left:
                take = min(self._left, len(indices) - len(out))
                out.extend(_slot(gen.gen, gen.n, t) for t in range(self._next, self._next + take))
                self._next += take
                self._left -= take
                continue
            # the budget of this generation is spent
            policy = self.config.reuse_policy
            if policy == "warn":
                if self._warned_gen != gen.gen:
                    self._warned_gen = gen.gen
                    log.warning("every sample of read generation %d was read REUSE_CAP=%d times; serving "
                                "them again (REUSE_POLICY=warn). Generation is slower than training: add "
                                "generators or lower SWAP_CAP.", gen.gen, cap)
                return None, list(indices)
            if started is None:
                started = time.monotonic()
                deadline = started + self.reader.timeout
                if policy == "swap_early":
                    self.reader.store.request_swap(gen.gen)
                log.info("reuse cap reached on generation %d; waiting for the next swap (%s)", gen.gen, policy)
            if time.monotonic() >= deadline:
                raise WaitTimeout(f"every sample of read generation {gen.gen} was read REUSE_CAP={cap} times "
                                  f"and no new generation came within {self.reader.timeout:.0f} s "
                                  f"(REUSE_POLICY={policy}). Are generators running?")
            time.sleep(self.config.poll_seconds)
        if started is not None:
            waited = time.monotonic() - started
            self.waited += waited
            self.reader.add_wait(waited)
        return served, out


def _slot(gen: int, n: int, ticket: int) -> int:
    rnd, pos = divmod(ticket, n)
    perm = np.random.default_rng([gen, rnd]).permutation(n)
    return int(perm[pos])
