"""wirehead: a MongoDB cache between slow synthetic-data generators and a fast PyTorch training loop.

Public names are imported lazily, so a generator node needs neither torch nor
ipywidgets unless it uses them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.2.0"

_EXPORTS = {
    "WireheadConfig": "wirehead.config",
    "ConfigError": "wirehead.errors",
    "WireheadError": "wirehead.errors",
    "SampleError": "wirehead.errors",
    "StoreError": "wirehead.errors",
    "StoreUnavailable": "wirehead.errors",
    "ServerNotFound": "wirehead.errors",
    "WaitTimeout": "wirehead.errors",
    "GeneratorError": "wirehead.errors",
    "LocalMongo": "wirehead.server",
    "WireheadGenerator": "wirehead.generator",
    "WireheadManager": "wirehead.manager",
    "MongoheadDataset": "wirehead.dataset",
    "MongoTupleheadDataset": "wirehead.dataset",
    "ReadAheadSampler": "wirehead.sampler",
    "GenerationSampler": "wirehead.sampler",
    "SwapLog": "wirehead.logger",
    "WireheadSnapshot": "wirehead.logger",
    "WireheadLogger": "wirehead.logger",
    "Snapshot": "wirehead.monitor",
    "snapshot": "wirehead.monitor",
    "WireheadController": "wirehead.notebook.controller",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover
    from .config import WireheadConfig
    from .dataset import MongoheadDataset, MongoTupleheadDataset
    from .errors import (ConfigError, SampleError, ServerNotFound, StoreError, StoreUnavailable,
                         WaitTimeout, WireheadError)
    from .generator import WireheadGenerator
    from .logger import SwapLog, WireheadLogger, WireheadSnapshot
    from .manager import WireheadManager
    from .sampler import GenerationSampler, ReadAheadSampler
    from .monitor import Snapshot, snapshot
    from .notebook.controller import WireheadController
    from .server import LocalMongo


__getattr__, __dir__ = lazy_exports('wirehead', _EXPORTS, globals(), __all__)
