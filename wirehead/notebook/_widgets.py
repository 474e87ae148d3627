"""Lazy imports of the notebook extras, with one clear error when they are missing."""

from __future__ import annotations

import base64
from typing import Any

INSTALL_HINT = "pip install 'wirehead[notebook]'"


def require_ipywidgets() -> Any:
    """The ``ipywidgets`` module.  Raises ImportError naming the extra to install."""
    try:
        import ipywidgets
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"the wirehead widgets need ipywidgets and matplotlib: {INSTALL_HINT}") from e
    return ipywidgets


def require_traitlets() -> Any:
    require_ipywidgets()
    import traitlets

    return traitlets


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a matplotlib Figure drawn with the Agg canvas (no pyplot, no GUI, thread-safe)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def escape(text: Any) -> str:
    import html

    return html.escape(str(text))
