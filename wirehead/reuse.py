"""ReuseGate: bounds how often a sample of a read generation is served (REUSE_CAP, REUSE_POLICY).

With ``REUSE_CAP: k`` every generation of ``n`` samples has ``k * n`` read *tickets*,
claimed by readers with one atomic update per batch, all or none (so the count is shared by
every DataLoader worker and every trainer, and no process holds tickets it does not serve).  Ticket ``t`` serves slot ``perm_r[t % n]``,
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

class ReuseGate:
    """Turns requested indices into admitted slots of the read generation.  One per process.

    Tickets are claimed per batch, all or none: a batch takes exactly the tickets it serves, so
    no process (a DataLoader worker) holds tickets that another could use, and none are left
    unused at a swap except fewer than one batch at the end of a generation's budget.
    """

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.config = reader.config
        self._warned_gen = -1
        self.waited = 0.0

    def admit(self, indices: Sequence[Any]) -> tuple[Optional[GenDoc], list[Any]]:
        """What to serve: ``(None, indices)`` without a cap, else ``(generation, slots of claimed tickets)``.

        Raises:
            ValueError: under ``wait`` or ``swap_early``, a batch larger than SWAP_CAP x REUSE_CAP
                (no generation has that many tickets, so it could never be served).
            WaitTimeout: the budget is spent and no new generation came within the read timeout.
        """
        cap = self.config.reuse_cap
        if not cap:
            return None, list(indices)
        policy = self.config.reuse_policy
        budget = cap * self.config.swap_cap
        if len(indices) > budget and policy != "warn":
            raise ValueError(
                f"a batch of {len(indices)} samples can never be served: a generation has at most "
                f"SWAP_CAP x REUSE_CAP = {self.config.swap_cap} x {cap} = {budget} read tickets "
                f"(REUSE_POLICY={policy}). Use a batch size of at most {budget}, or raise REUSE_CAP or SWAP_CAP.")
        current = self.reader.current()
        for i in indices:  # bad indices fail the same way with or without a cap
            self.reader.resolve(i, current)
        started = None
        deadline = 0.0
        looked = False
        while True:
            gen = self.reader.current(force=started is not None)
            out = self._claim(gen, len(indices), cap)
            if out is not None:
                break
            if not looked:
                # this process's view may be up to POLL_SECONDS old: the generation it claimed on may be
                # replaced (or deleted) already; claim on the newer one at once rather than wait
                looked = True
                if self.reader.current(force=True).gen != gen.gen:
                    continue
            # the budget of this generation is spent (or what is left is smaller than this batch)
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
        return gen, out

    def _claim(self, gen: GenDoc, want: int, cap: int) -> Optional[list[int]]:
        """``want`` slots of ``gen`` with a ticket each, or None when its budget cannot give them.  Tickets of
        slots this process found broken are spent without serving (no other sample may take a broken
        sample's ticket: REUSE_CAP would no longer bound it), and more are claimed in their place."""
        out: list[int] = []
        while len(out) < want:
            first, got = self.reader.store.claim_tickets(gen.gen, want - len(out), cap * gen.n)
            if not got:
                return None  # tickets claimed for part of the batch are dropped: spent, never served twice
            out += [s for s in (_slot(gen.gen, gen.n, t) for t in range(first, first + got))
                    if not self.reader.is_broken(gen, s)]
        return out


def _slot(gen: int, n: int, ticket: int) -> int:
    rnd, pos = divmod(ticket, n)
    perm = np.random.default_rng([gen, rnd]).permutation(n)
    return int(perm[pos])
