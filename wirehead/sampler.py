"""ReadAheadSampler: a DataLoader batch sampler that tells the dataset which batches come next.

A map-style dataset cannot see the order its DataLoader will ask for samples in, so it cannot fetch
ahead of the reads; this sampler can.  Pass it as ``batch_sampler``: it makes the same batches as
``batch_size``/``shuffle``/``drop_last`` (or a ``sampler`` of yours, e.g. a :class:`GenerationSampler`)
would, and each batch it hands out names the next READ_AHEAD (an :class:`AnnouncedBatch`).  The process that
reads the batch (the trainer itself with ``num_workers=0``) announces them to its dataset as it reads
(:meth:`~wirehead.dataset.MongoheadDataset.read_ahead`) and fetches them in the background while the
current one is used, so a generation larger than its caches streams without the step waiting for the
server.  Read-ahead happens only where the reads happen: a DataLoader's main process hands batches to its
workers and fetches nothing (also after reading a sample itself, e.g. ``ds[0]`` to look), and the workers
keep ``prefetch_factor`` batches each in flight themselves (the batches a batch names are other workers').

GenerationSampler: ``DistributedSampler`` for a dataset whose size changes at every swap.  torch's sampler
fixes its size when it is made, so the first epoch after a swap to a generation of another size fails
("Number of indices (10) does not match total_size (2)"); this one agrees on the read generation's size
with the other ranks at the start of every epoch.
"""

from __future__ import annotations

import collections
import itertools
import logging
from typing import TYPE_CHECKING, Iterable, Iterator, Optional, Sequence

import torch
from torch.utils.data import BatchSampler, RandomSampler, Sampler, SequentialSampler

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import MongoheadDataset

__all__ = ["ReadAheadSampler", "GenerationSampler", "AnnouncedBatch"]

log = logging.getLogger(__name__)


class AnnouncedBatch(list):  # type: ignore[type-arg]
    """A batch of dataset indices that names the batches read after it (``ahead``), in order.

    A plain ``list`` to everything else; it travels to a DataLoader worker with the batch (pickled, its
    ``ahead`` with it), so the process that reads the batch is the one that may read ahead."""

    def __init__(self, indices: Iterable[int] = (), ahead: Sequence[Sequence[int]] = ()) -> None:
        super().__init__(indices)
        self.ahead: list[list[int]] = [list(b) for b in ahead]


class ReadAheadSampler(Sampler[list[int]]):
    """Batches of dataset indices that announce what comes next, for ``DataLoader(batch_sampler=...)``.

    Args:
        dataset: the :class:`~wirehead.dataset.MongoheadDataset` (or tuple dataset) the loader reads.
        batch_size: samples a batch.
        shuffle: a new random order every epoch (``RandomSampler``), else 0, 1, 2, ...
        drop_last: leave out a last batch smaller than ``batch_size``.
        sampler: indices to batch instead of the shuffled or sequential ones (e.g. a
            ``DistributedSampler``; then ``shuffle`` must be False and ``generator`` None).
        generator: the ``torch.Generator`` of the shuffle (seeded: the same order every run).

    The number of batches follows ``len(dataset)`` when an epoch starts (the read generation's size).
    Example::

        loader = DataLoader(ds, batch_sampler=ReadAheadSampler(ds, batch_size=2, shuffle=True))
    """

    def __init__(self, dataset: "MongoheadDataset", batch_size: int = 1, shuffle: bool = False,
                 drop_last: bool = False, sampler: Optional[Iterable[int]] = None,
                 generator: Optional[torch.Generator] = None) -> None:
        if not hasattr(dataset, "read_ahead"):
            raise TypeError(f"ReadAheadSampler needs a wirehead dataset (one with read_ahead()), "
                            f"got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size should be a positive integer, but got batch_size={batch_size!r}")
        if sampler is not None and (shuffle or generator is not None):
            raise ValueError("give either sampler or shuffle/generator: the sampler decides the order")
        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = bool(drop_last)
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        self.sampler = sampler
        self._batches = BatchSampler(sampler, batch_size, self.drop_last)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        depth = self.dataset.config.read_ahead
        batches = iter(self._batches)
        window = collections.deque(itertools.islice(batches, depth + 1))
        while window:
            current = window.popleft()
            window.extend(itertools.islice(batches, 1))
            yield AnnouncedBatch(current, ahead=window)  # the batch handed out now names the next ``depth``

    def __len__(self) -> int:
        return len(self._batches)

    def set_epoch(self, epoch: int) -> None:
        """Passed on to the wrapped sampler when it has one (``DistributedSampler`` shuffles by epoch)."""
        set_epoch = getattr(self.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)

    def __repr__(self) -> str:
        return (f"ReadAheadSampler(batch_size={self.batch_size}, drop_last={self.drop_last}, "
                f"sampler={type(self.sampler).__name__})")


class GenerationSampler(Sampler[int]):
    """Indices for one rank of a distributed job, over whichever read generation is current when an epoch
    starts: ranks read disjoint samples of it, and every rank the same number.

    At the start of every epoch (``iter()``) each rank looks at the read generation, and the ranks agree
    (one ``all_gather`` over ``torch.distributed``) on the newest one any of them sees and on its size
    ``n``; a rank still on an older generation follows at its first read (an index beyond its generation
    makes it re-read the state).  The ``n`` indices are shuffled with ``seed + epoch`` (the same order on
    every rank) and dealt: rank ``r`` gets positions ``r, r + W, r + 2W, ...`` of the first
    ``W * (n // W)``, so every rank has ``n // W`` samples, none shared (which ``n % W`` are left out
    changes with the shuffle of each epoch).  With ``drop_last=False`` the order is padded by repeating
    its start instead, as ``DistributedSampler`` does: every sample is read, a few by two ranks.  A
    generation smaller than the world is always padded (each rank gets one sample).

    Args:
        dataset: the :class:`~wirehead.dataset.MongoheadDataset` (or tuple dataset) the loader reads.
        num_replicas, rank: the world size and this rank (default: from ``torch.distributed``).  Without an
            initialised process group the ranks cannot agree, and each uses the generation it sees.
        shuffle: a new order every epoch (call :meth:`set_epoch`), else 0, 1, 2, ...
        seed: the shuffle's seed, the same on every rank.
        drop_last: see above.

    Use it where ``DistributedSampler`` would go, also as ``ReadAheadSampler(ds, batch_size, sampler=...)``.
    ``len()`` is the number of indices of the last epoch started (before the first, from this rank's view).
    """

    def __init__(self, dataset: "MongoheadDataset", num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, shuffle: bool = True, seed: int = 0, drop_last: bool = True) -> None:
        if not hasattr(dataset, "reader"):
            raise TypeError(f"GenerationSampler needs a wirehead dataset, got {type(dataset).__name__}")
        dist = torch.distributed
        initialised = dist.is_available() and dist.is_initialized()
        if num_replicas is None:
            num_replicas = dist.get_world_size() if initialised else 1
        if rank is None:
            rank = dist.get_rank() if initialised else 0
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"num_replicas should be a positive integer, but got num_replicas={num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank should be an integer in [0, {num_replicas - 1}], but got rank={rank!r}")
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._count: Optional[int] = None

    def _agreed_size(self) -> int:
        """The size of the newest read generation any rank sees (this rank's, without a process group)."""
        doc = self.dataset.reader.current(force=True)
        dist = torch.distributed
        if self.num_replicas == 1 or not (dist.is_available() and dist.is_initialized()):
            return doc.n
        mine = torch.tensor([doc.gen, doc.n], dtype=torch.int64)
        seen = [torch.zeros_like(mine) for _ in range(self.num_replicas)]
        dist.all_gather(seen, mine)
        gen, n = max((int(t[0]), int(t[1])) for t in seen)
        if gen != doc.gen:
            log.debug("rank %d sees generation %d, another rank %d (%d samples)", self.rank, doc.gen, gen, n)
        return n

    def _per_rank(self, n: int) -> int:
        world = self.num_replicas
        return n // world if self.drop_last and n >= world else -(-n // world)

    def __iter__(self) -> Iterator[int]:
        n = self._agreed_size()
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        count = self._per_rank(n)
        total = count * self.num_replicas
        while len(order) < total:  # padded: repeat the start of the order
            order += order[:total - len(order)]
        self._count = count
        return iter(order[self.rank:total:self.num_replicas])

    def __len__(self) -> int:
        if self._count is None:
            return self._per_rank(len(self.dataset))
        return self._count

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next ``iter()`` shuffles for (the same on every rank)."""
        self.epoch = int(epoch)

    def __repr__(self) -> str:
        return (f"GenerationSampler(num_replicas={self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, "
                f"seed={self.seed}, drop_last={self.drop_last})")
