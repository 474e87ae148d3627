"""What the widgets share: the notebook extra's modules (through :func:`wirehead._lazy.require`), PNG figures,
base64 and HTML escaping."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from .._lazy import require


def require_ipywidgets() -> Any:
    """The ``ipywidgets`` module.  Raises ImportError naming the extra to install."""
    return require("ipywidgets", "a wirehead widget")


def require_traitlets() -> Any:
    """The ``traitlets`` module (installed with ipywidgets)."""
    return require("traitlets", "a wirehead widget")


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib ``Figure`` (no pyplot, no GUI): ``Figure(**kwargs)``."""
    return require("matplotlib.figure", "a wirehead figure").Figure(**kwargs)


def figure_png(fig: Any) -> bytes:
    """PNG bytes of a matplotlib Figure drawn with the Agg canvas (no pyplot, no GUI, thread-safe)."""
    require("matplotlib.backends.backend_agg", "a wirehead figure").FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def escape(text: Any) -> str:
    """``text`` as HTML-escaped text."""
    return html.escape(str(text))
