"""wirehead in notebooks: a controller for background workers, a live dashboard, a slice viewer and a
linked grid of samples with the generation's QC.

``WireheadController`` needs only wirehead itself (plus ``cloudpickle`` for generator factories
defined in notebook cells in process mode).  ``SwapDashboard``, ``SliceViewer`` and ``SampleGrid`` need
ipywidgets and matplotlib: ``pip install 'wirehead[notebook]'``.  Every name is imported on first
use, so ``import wirehead.notebook`` works without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wirehead._lazy import lazy_exports

__all__ = ["WireheadController", "SwapDashboard", "SliceViewer", "SampleGrid"]

_EXPORTS = {
    "WireheadController": "wirehead.notebook.controller",
    "SwapDashboard": "wirehead.notebook.dashboard",
    "SliceViewer": "wirehead.notebook.viewer",
    "SampleGrid": "wirehead.notebook.grid",
}

if TYPE_CHECKING:  # pragma: no cover
    from .controller import WireheadController
    from .dashboard import SwapDashboard
    from .grid import SampleGrid
    from .viewer import SliceViewer


__getattr__, __dir__ = lazy_exports('wirehead.notebook', _EXPORTS, globals(), __all__)
