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

import torch
from torch.utils.data import Dataset

from .config import ConfigSource, WireheadConfig
from .reader import Reader
from .reuse import ReuseGate
from .store import Store

__all__ = ["MongoheadDataset", "MongoTupleheadDataset", "Sample"]

log = logging.getLogger(__name__)

Transform = Callable[[dict[str, Any]], dict[str, Any]]

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
            kept) or ``"numpy"`` (arrays exactly as the generator gave them).
        uri: a server URI overriding the config's.
        prefetch: fetch each new read generation into this process's cache in the background
            (up to READER_CACHE_MB), so reads after a swap rarely wait for the server.

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
    ) -> None:
        self.config = WireheadConfig.load(config, config_path)
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
        self.store = Store(self.config, uri=uri)
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
        return state

    @property
    def reader(self) -> Reader:
        """This process's reader (made on first use, again after a fork)."""
        if self._reader is None or self._pid != os.getpid():
            self._pid = os.getpid()
            self._reader = Reader(self.store, timeout=self.timeout, prefetch=self.prefetch)
            self._gate = ReuseGate(self._reader)
        return self._reader

    @property
    def generation(self) -> int:
        """The number of the read generation this dataset serves now."""
        return self.reader.current().gen

    def __len__(self) -> int:
        return len(self.reader)

    # -- access --------------------------------------------------------------------
    def _samples(self, indices: Sequence[Any]) -> list[dict[str, Any]]:
        reader = self.reader
        assert self._gate is not None
        gen, indices = self._gate.admit(indices)
        return [self._finish(s) for s in reader.get(indices, gen)]

    def _finish(self, arrays: dict[str, Any]) -> dict[str, Any]:
        kinds = self.config.sample
        aliases = {a: k for a, k in zip(SEED_ALIASES, kinds) if a not in kinds}
        sample = Sample({k: _to_output(v, self.output) for k, v in arrays.items()}, aliases=aliases)
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
        """A batch for ``DataLoader`` (one query for the samples not cached yet), from one generation."""
        return self._samples(list(indices))

    def close(self) -> None:
        """Report pending read counts and close this process's connection."""
        if self._reader is not None:
            self._reader.flush()
        self.store.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config!r})"


class MongoTupleheadDataset(MongoheadDataset):
    """Like :class:`MongoheadDataset`, but a sample is a tuple in SAMPLE order.

    ``ds[i]`` returns ``(kind0, kind1, ...)``; ``ds[[i, j]]`` returns ``[sample_i, sample_j]``.
    A ``transform`` receives and returns the tuple.
    """

    def _finish(self, arrays: dict[str, Any]) -> Any:
        sample = tuple(_to_output(arrays[k], self.output) for k in self.config.sample)
        if self.transform is not None:
            sample = self.transform(sample)  # type: ignore[arg-type]
        return sample

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, torch.Tensor):
            index = index.tolist()
        if isinstance(index, (list, tuple)):
            return self._samples(list(index))
        return self._samples([index])[0]


def _to_output(value: Any, output: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value if output == "torch" else value.numpy()
    if output == "numpy":
        return value
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    return torch.from_numpy(value)
