"""ReadAheadSampler: a DataLoader batch sampler that tells the dataset which batches come next.

A map-style dataset cannot see the order its DataLoader will ask for samples in, so it cannot fetch
ahead of the reads; this sampler can.  Pass it as ``batch_sampler``: it makes the same batches as
``batch_size``/``shuffle``/``drop_last`` (or a ``sampler`` of yours, e.g. a ``DistributedSampler``)
would, and as it hands out each batch it announces that one and the next READ_AHEAD to the dataset
(:meth:`~wirehead.dataset.MongoheadDataset.read_ahead`).  A process that reads samples (the trainer
itself with ``num_workers=0``) then fetches them in the background while it uses the current batch,
so a generation larger than its caches streams without the step waiting for the server.  With
DataLoader workers the announcements reach only the main process, which reads nothing and so fetches
nothing: the workers keep ``prefetch_factor`` batches each in flight themselves.
"""

from __future__ import annotations

import collections
import itertools
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import torch
from torch.utils.data import BatchSampler, RandomSampler, Sampler, SequentialSampler

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import MongoheadDataset

__all__ = ["ReadAheadSampler"]


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
            self.dataset.read_ahead(list(window))  # the batch handed out now, then the next ``depth``
            current = window.popleft()
            window.extend(itertools.islice(batches, 1))
            yield current

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
