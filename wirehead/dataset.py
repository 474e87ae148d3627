"""MongoheadDataset and MongoTupleheadDataset: torch datasets over the cache's read generation.

A dataset holds a config, never a client: pickled into DataLoader workers (or
spawned processes) each process connects lazily on first use.  ``len(ds)`` is the
size of the current read generation; indices pick samples of it.  The read
generation is reused until the next swap, then the dataset follows the new one.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .config import ConfigSource
from .connect import open_store
from .errors import WaitTimeout
from .isolation import finalize
from .reader import GenerationGone, Reader
from .reuse import ReuseGate
from .store import Store

__all__ = ["MongoheadDataset", "MongoTupleheadDataset", "Sample", "unit_interval_normalize", "quantile_normalize"]

#: Upstream's default ``sample``: "the first two SAMPLE kinds" here when the config names others.
UPSTREAM_SAMPLE = ("data", "label")

log = logging.getLogger(__name__)

Transform = Callable[[dict[str, Any]], dict[str, Any]]

#: Admissions of one batch before giving up (each found its generation deleted before it was read).
_ADMISSIONS = 20

#: The seed's names, in SAMPLE order: alias -> position of the kind it names.
SEED_ALIASES = ("input", "label")


class Sample(dict):  # type: ignore[type-arg]
    """A sample dict ``{kind: tensor}`` whose seed names ``"input"``/``"label"`` are views, not keys.

    ``s["input"]``, ``s.get("input")`` and ``"input" in s`` resolve to the first SAMPLE kind
    (``"label"`` to the second) while no key of that name was set; iteration, ``keys()``,
    ``items()``, ``len()`` and ``dict(s)`` see the kinds only.  So ``default_collate`` (and
    ``pin_memory``), which copy a mutable mapping and update it key by key, stack every kind
    once, and the batch's aliases resolve to the stacked tensors: ``batch["input"] is
    batch["image"]``.  Setting ``s["input"] = x`` stores a real key that shadows the alias.
    """

    def __init__(self, *args: Any, aliases: Optional[dict[str, str]] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases: dict[str, str] = dict(aliases or {})

    def _resolve(self, key: Any) -> Any:
        if not dict.__contains__(self, key):
            alias = self.__dict__.get("aliases", {}).get(key) if isinstance(key, str) else None
            if alias is not None and dict.__contains__(self, alias):
                return alias
        return key

    def __getitem__(self, key: Any) -> Any:
        return dict.__getitem__(self, self._resolve(key))

    def __contains__(self, key: Any) -> bool:
        return dict.__contains__(self, self._resolve(key))

    def get(self, key: Any, default: Any = None) -> Any:
        return dict.get(self, self._resolve(key), default)

    def copy(self) -> "Sample":
        return Sample(self, aliases=self.aliases)

    def __repr__(self) -> str:
        return f"Sample({dict.__repr__(self)}, aliases={self.aliases!r})"


class MongoheadDataset(Dataset):
    """Random access to the samples of the cache's read generation, as dicts.

    ``ds[i]`` (an int) returns one sample, a :class:`Sample`: ``{kind: tensor}`` for every SAMPLE
    kind, whose seed names ``"input"`` and ``"label"`` resolve to the first two kinds without being
    extra keys (so a ``DataLoader`` batch stacks each kind once and ``batch["input"]`` is
    ``batch[kind0]``).
    ``ds[[i, j]]`` (a list) returns ``{i: sample_i, j: sample_j}``, all from one generation (the
    seed's call: ``ds[[0]][0]["input"]``).

    Args:
        config_path: path of the YAML config (the seed's argument).
        config: a :class:`WireheadConfig` or a mapping instead.
        timeout: seconds to wait for the first read generation (default READ_TIMEOUT).
        transform: called on every sample dict; returns the dict to serve.
        output: ``"torch"`` (tensors; arrays in non-native byte order are byte-swapped, values
            kept) or ``"numpy"`` (arrays exactly as the generator gave them; a tensor whose dtype
            numpy lacks, such as bfloat16, comes as float32, complex32 as complex64).
        uri: a server URI overriding the config's.
        prefetch: fetch each new read generation in the background from the first read on, so
            reads after a swap rarely wait for the server: into the node cache shared by every
            reading process of the node (up to NODE_CACHE_MB; each sample is fetched once per node),
            or, without one, into this process's cache when the generation fits READER_CACHE_MB.

    Upstream wirehead 0.9.x's keywords are accepted too:
        collection: the read collection's name; must be ``None`` or the config's READ_COLLECTION
            (the generations live in the config's collections).
        sample: the kinds served as ``"input"`` and ``"label"`` (and, for the tuple dataset, the
            tuple), in that order; names of SAMPLE.  The upstream default ``("data", "label")``
            means the config's SAMPLE kinds when the config names others.
        normalize: applied to the input (the first of ``sample``) after decoding, before ``transform``;
            see :func:`unit_interval_normalize` and :func:`quantile_normalize`.
        id: upstream's index field; here a sample's index is its position in the read generation,
            so only ``"id"`` is accepted.
        keeptrying: upstream retried failed reads; here reads always retry server errors up to
            RETRY_DEADLINE and wait up to ``timeout`` for a read generation.  ``False`` is accepted
            and changes nothing.
    Upstream's ``transform`` decoded stored bytes; here samples arrive decoded, and a
    ``transform`` only ever receives decoded samples (a dict, or a tuple for the tuple dataset).

    Raises (on access): :class:`~wirehead.errors.WaitTimeout` when no read generation appears in
    time; ``IndexError`` / ``TypeError`` for bad indices.
    """

    def __init__(
        self,
        config_path: Union[str, "os.PathLike[str]", None] = None,
        config: ConfigSource = None,
        *,
        timeout: Optional[float] = None,
        transform: Optional[Transform] = None,
        output: str = "torch",
        uri: Optional[str] = None,
        prefetch: bool = True,
        collection: Optional[str] = None,
        sample: Sequence[str] = UPSTREAM_SAMPLE,
        normalize: Optional[Callable[[Any], Any]] = None,
        id: str = "id",  # noqa: A002 - upstream's keyword
        keeptrying: bool = True,
    ) -> None:
        self.store = open_store(config, uri, config_path=config_path or None)
        self.config = self.store.config
        if collection is not None and collection != self.config.read_collection:
            raise ValueError(f"collection should be None or the config's READ_COLLECTION "
                             f"{self.config.read_collection!r}, but got collection={collection!r}; "
                             f"set READ_COLLECTION in the config instead")
        self.kinds = _kinds(sample, self.config.sample)
        if normalize is not None and not callable(normalize):
            raise TypeError(f"normalize should be callable, but got {type(normalize).__name__}")
        if id != "id":
            raise ValueError(f"id should be 'id' (a sample's index is its position in the read generation), "
                             f"but got id={id!r}")
        self.normalize = normalize
        self.keeptrying = bool(keeptrying)
        if output not in ("torch", "numpy"):
            raise ValueError(f"output should be 'torch' or 'numpy', but got output={output!r}")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout should be a positive number of seconds, but got timeout={timeout!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform should be callable, but got {type(transform).__name__}")
        self.timeout = timeout
        self.transform = transform
        self.output = output
        self.prefetch = prefetch
        self._reader: Optional[Reader] = None
        self._gate: Optional[ReuseGate] = None
        self._pid = os.getpid()

    # -- process-local state -------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._reader is not None:
            self._reader.flush()
        state["_reader"] = None
        state["_gate"] = None
        state.pop("_finalizer", None)
        return state

    @property
    def reader(self) -> Reader:
        """This process's reader (made on first use, again after a fork)."""
        if self._reader is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._reader = Reader(self.store, timeout=self.timeout, prefetch=self.prefetch)
            self._gate = ReuseGate(self._reader)
            # garbage collection or the end of the process stops the prefetch thread and closes the client
            self._finalizer = finalize(self, _release, self._reader, self.store, self._pid)
        return self._reader

    @property
    def generation(self) -> int:
        """The number of the read generation this dataset serves now."""
        return self.reader.current().gen

    def __len__(self) -> int:
        return len(self.reader)

    # -- access --------------------------------------------------------------------
    def _samples(self, indices: Sequence[Any], mapped: bool = False) -> list[dict[str, Any]]:
        reader = self.reader
        assert self._gate is not None
        for _ in range(_ADMISSIONS):
            gen, admitted = self._gate.admit(indices)
            try:
                return [self._finish(s) for s in reader.get(admitted, gen, mapped)]
            except GenerationGone:  # deleted between the claim and the read: claim where it is served
                continue
        raise WaitTimeout(f"{_ADMISSIONS} generations in a row were deleted between claiming a batch's reuse "
                          f"tickets and reading it; is GRACE_SECONDS far shorter than a read?")

    def _finish(self, arrays: dict[str, Any]) -> dict[str, Any]:
        kinds = self.kinds
        sample = Sample({k: _to_output(v, self.output) for k, v in arrays.items()})
        if self.normalize is not None:
            sample[kinds[0]] = self.normalize(sample[kinds[0]])
        for pos, alias in enumerate(SEED_ALIASES[:len(kinds)]):
            # the seed name is a view of the chosen kind (no second key, so no second stack in a batch);
            # a real kind of that name gives way when ``sample`` picks another kind for it
            if alias != kinds[pos] and (alias not in arrays or kinds[pos] != self.config.sample[pos]):
                sample.pop(alias, None)
                sample.aliases[alias] = kinds[pos]
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, torch.Tensor):
            index = index.tolist()
        if isinstance(index, (list, tuple)):
            keys = list(index)
            return dict(zip(keys, self._samples(keys)))
        return self._samples([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """A batch for ``DataLoader`` (one query for the samples not cached yet), from one generation.

        The DataLoader collates the samples into a batch and drops them, so large ones from the node cache
        are copy-on-write mappings of its pages, not copies (``ds[i]`` copies: a sample a trainer keeps
        across a swap would otherwise hold the retired generation's shared memory).

        A batch from a :class:`~wirehead.sampler.ReadAheadSampler` names the batches after it: this process
        reads them ahead, unless it is a DataLoader worker (workers keep ``prefetch_factor`` batches in
        flight themselves, and the batches named are mostly other workers')."""
        ahead = getattr(indices, "ahead", None)
        if ahead is not None and get_worker_info() is None:
            self.read_ahead([list(indices), *ahead])
        return self._samples(list(indices), mapped=True)

    def read_ahead(self, batches: Sequence[Sequence[int]]) -> None:
        """Announce the batches this process reads next (indices, starting with the one about to be
        read): the first READ_AHEAD + 1 are fetched in the background and held until read.  The batches
        of a :class:`~wirehead.sampler.ReadAheadSampler` announce themselves when they are read; see
        :meth:`wirehead.reader.Reader.read_ahead`."""
        self.reader.read_ahead(batches)

    def close(self) -> None:
        """Report pending read counts, stop this process's prefetching, leave the node cache (the last
        reader of the node to leave removes the generation's shared memory) and close its connection.

        The dataset reconnects if it is used again.  ``with MongoheadDataset(...) as ds:`` calls it;
        garbage collection or the end of the process also stop the threads and close the client, but
        without reporting the last read counts (the server may be gone by then).
        """
        if self._reader is not None and self._pid == os.getpid():
            self._reader.close()
        self.store.close()

    def __enter__(self) -> "MongoheadDataset":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config!r})"


class MongoTupleheadDataset(MongoheadDataset):
    """Like :class:`MongoheadDataset`, but a sample is a tuple in SAMPLE order.

    ``ds[i]`` returns ``(kind0, kind1, ...)``; ``ds[[i, j]]`` returns ``[sample_i, sample_j]``.
    A ``transform`` receives and returns the tuple.
    """

    def _finish(self, arrays: dict[str, Any]) -> Any:
        sample = tuple(_to_output(arrays[k], self.output) for k in self.kinds)
        if self.normalize is not None:
            sample = (self.normalize(sample[0]), *sample[1:])
        if self.transform is not None:
            sample = self.transform(sample)  # type: ignore[arg-type]
        return sample

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, torch.Tensor):
            index = index.tolist()
        if isinstance(index, (list, tuple)):
            return self._samples(list(index))
        return self._samples([index])[0]


def _kinds(sample: Sequence[str], kinds: Sequence[str]) -> tuple[str, ...]:
    """The kinds a dataset serves, from upstream's ``sample`` keyword (see MongoheadDataset)."""
    if isinstance(sample, str) or not all(isinstance(k, str) for k in sample) or not sample:
        raise TypeError(f"sample should be a sequence of SAMPLE kind names, but got sample={sample!r}")
    chosen = tuple(sample)
    if all(k in kinds for k in chosen):
        return chosen
    if chosen == UPSTREAM_SAMPLE:
        return tuple(kinds)
    raise ValueError(f"sample should name kinds of the config's SAMPLE {list(kinds)}, but got sample={list(chosen)}")


def unit_interval_normalize(img: Any) -> Any:
    """Scale ``img`` (tensor or array) linearly to [0, 1]; a constant image becomes zeros."""
    lo, hi = img.min(), img.max()
    span = hi - lo
    if float(span) == 0:
        return img * 0
    return (img - lo) / span


def quantile_normalize(img: Any, qmin: float = 0.01, qmax: float = 0.99) -> Any:
    """Scale ``img`` so its ``qmin`` and ``qmax`` quantiles map to 0 and 1, clipped to [0, 1]."""
    if not 0.0 <= qmin < qmax <= 1.0:
        raise ValueError(f"quantiles should satisfy 0 <= qmin < qmax <= 1, but got qmin={qmin}, qmax={qmax}")
    if isinstance(img, torch.Tensor):
        flat = img.flatten().double()
        lo, hi = (float(torch.quantile(flat, q)) if flat.numel() <= 16_000_000
                  else float(flat.kthvalue(max(1, int(round(q * flat.numel()))))[0]) for q in (qmin, qmax))
        out = img.double() if not img.is_floating_point() else img
        return ((out - lo) / (hi - lo)).clamp(0, 1) if hi > lo else out * 0
    arr = np.asarray(img)
    lo, hi = np.quantile(arr, [qmin, qmax])
    return np.clip((arr - lo) / (hi - lo), 0, 1) if hi > lo else arr * 0


def _release(reader: Reader, store: Store, pid: int) -> None:
    """Finalizer of a dataset (garbage collection, or the end of the process): stops prefetching and closes
    the client without talking to the server (which may be gone at exit: no wait), so read counts not
    yet reported are dropped; ``close()`` reports them.  Only in the process that made the reader."""
    if os.getpid() != pid:
        return
    try:
        reader.close(flush=False)
        store.close()
    except Exception as e:  # noqa: BLE001 - clean-up at exit must not raise
        log.debug("closing a dataset's reader failed: %s", e)


def _to_output(value: Any, output: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value if output == "torch" else _tensor_to_numpy(value)
    if output == "numpy":
        return value
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    return torch.from_numpy(value)


def _tensor_to_numpy(value: "torch.Tensor") -> Any:
    """A tensor as a numpy array; torch dtypes numpy lacks (bfloat16, float8, complex32) are widened
    losslessly to float32 / complex64."""
    try:
        return value.numpy()
    except TypeError:
        wide = torch.complex64 if value.is_complex() else torch.float32
        return value.to(wide).numpy()
