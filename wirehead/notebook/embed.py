"""Wirehead widgets in HTML exports of notebooks saved with widget state, offline.

A notebook saved *with* widget state (``jupyter nbconvert --execute``, ``--to notebook --execute``,
JupyterLab's *Save Widget State*) exports to HTML with each widget output as a bare widget view:
nbconvert picks ``application/vnd.jupyter.widget-view+json`` over the ``text/html`` fallback when
the model is in the stored state, and drawing it needs ``@jupyter-widgets/html-manager`` from a
CDN, so offline the outputs are blank.

:func:`display` shows a wirehead widget as usual, followed by a tiny ``text/html`` output carrying
``embed.js`` and the widget's model id.  In the exported page that script claims the widget's view
and draws it from the stored state: the SliceViewer with its own module (its sliders, clicks and
window work, on the samples it held), the dashboard as the snapshot it last showed.  With nothing
but the plain ``jupyter nbconvert --to html`` (no CDN, no option).  In JupyterLab, Notebook and VS
Code the script finds nothing to do.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Sequence

__all__ = ["display", "loader_html", "standalone_html"]

_JS = Path(__file__).resolve().parent / "embed.js"
#: Marks the loader output, so tools (and tests) can tell it from other HTML outputs.
LOADER_CLASS = "wirehead-offline-loader"


def loader_html(model_id: str) -> str:
    """The ``text/html`` that draws the widget ``model_id`` from a page's stored widget state (offline)."""
    js = _JS.read_text(encoding="utf-8").rstrip().rstrip(";")
    if "</script" in js.lower():  # pragma: no cover - guards an edit of embed.js
        raise ValueError("embed.js must not contain '</script'")
    return (f'<script type="text/javascript" class="{LOADER_CLASS}">\n{js}({json.dumps(model_id)});\n</script>')


def display(widget: Any) -> None:
    """Display ``widget`` (its usual mime bundle), then the loader that draws it in offline HTML exports.

    Used as the ``_ipython_display_`` of wirehead's widgets.  Without a model id (no comm: a closed
    widget, or no kernel) only the bundle is shown.
    """
    from IPython.display import display as ipy_display

    bundle = widget._repr_mimebundle_()
    data, meta = bundle if isinstance(bundle, tuple) else (bundle, {})
    ipy_display(data, metadata=meta or None, raw=True)
    model_id = getattr(widget, "model_id", None)
    if model_id and "application/vnd.jupyter.widget-view+json" in (data or {}):
        ipy_display({"text/html": loader_html(model_id)}, raw=True)


def standalone_html(esm: Path, css: Path, state: dict[str, Any], binary: Sequence[str]) -> str:
    """A standalone HTML fragment running the anywidget module ``esm`` on ``state`` with a tiny model shim:
    no kernel, no network (as nilearn's ``view_img``).  ``binary``: keys of ``state`` holding base64 bytes
    (given to the module as ArrayBuffers)."""
    code = esm.read_text(encoding="utf-8").replace("export default { render };", "return { render };")
    style = css.read_text(encoding="utf-8")
    data = json.dumps(state).replace("</", "<\\/")
    div = f"wirehead-viewer-{uuid.uuid4().hex[:12]}"
    return f"""<div id="{div}" class="wirehead-standalone"><style>{style}</style></div>
<script>(function() {{
const STATE = {data};
const mod = (function() {{ {code} }})();
for (const k of {json.dumps(list(binary))}) {{
  const s = STATE[k] || "";
  let b;
  if (Uint8Array.fromBase64) b = Uint8Array.fromBase64(s);
  else {{ const t = atob(s); b = new Uint8Array(t.length); for (let i = 0; i < t.length; i++) b[i] = t.charCodeAt(i); }}
  STATE[k] = b.buffer;
}}
const handlers = {{}};
const model = {{
  get: (k) => STATE[k],
  set: (k, v) => {{ STATE[k] = v; (handlers["change:" + k] || []).slice().forEach((f) => f()); }},
  on: (e, f) => {{ (handlers[e] = handlers[e] || []).push(f); }},
  off: (e, f) => {{ handlers[e] = (handlers[e] || []).filter((g) => g !== f); }},
  save_changes: () => {{}},
  offline: true,
}};
const host = document.createElement("div");
document.getElementById("{div}").appendChild(host);
mod.render({{ model, el: host }});
}})();</script>"""
