"""A notebook with a SliceViewer exported to HTML WITHOUT its widget state, opened offline in headless Chromium.

Without stored widget state (JupyterLab's default save, or the state cleared when exporting, as here)
nbconvert picks the viewer's ``text/html`` output: a standalone viewer (the same drawing module, the
volume inline) that works with no kernel and no network.  The test blocks every http(s) request,
checks the page shows the planes, and that moving the axial slider changes the axial image.  Exports
WITH stored widget state: ``test_exported_widget_state.py``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from helpers import CANVAS_PIXELS_JS as _PIXELS
from helpers import route_offline, wait_drawn

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("nbconvert")
pytest.importorskip("anywidget")

ROOT = Path(__file__).resolve().parents[2]
PAGE_BUDGET = 3_000_000  # bytes of exported HTML for one 64³ viewer, nbconvert's own CSS included

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # slow: real processes for long; `-m "not slow"` skips



def test_exported_html_shows_the_viewer_and_its_slider_works_offline(tmp_path: Path, chromium: Any) -> None:
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from wirehead.notebook import SliceViewer\n"
        "from wirehead.synth import synth_sample\n"
        "image, label = synth_sample((64, 64, 64), seed=3)\n"
        "SliceViewer(arrays={'image': image, 'label': label})")]
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}},
                            store_widget_state=True)
    old = os.environ.get("PYTHONPATH")  # the kernel imports this checkout's wirehead
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), old or ""])
    try:
        client.execute()
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    assert "widgets" in nb.metadata, "nbclient stored no widget state"
    outputs = nb.cells[0].outputs
    assert outputs and "text/html" in outputs[0]["data"], outputs
    # metadata (and so the widget state) cleared, outputs kept: nbconvert picks the text/html outputs
    cfg = Config()
    cfg.ClearMetadataPreprocessor.enabled = True
    cfg.ClearMetadataPreprocessor.clear_notebook_metadata = True
    body, _ = HTMLExporter(config=cfg).from_notebook_node(nb)
    assert len(body.encode()) < PAGE_BUDGET, f"exported page is {len(body.encode())} bytes"
    html = tmp_path / "exported.html"
    html.write_text(body, encoding="utf-8")
    print(f"exported page: {len(body.encode()) / 1e6:.2f} MB")

    with chromium.browser() as browser:
        try:
            page = browser.new_context().new_page()
            route_offline(page)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(html.as_uri())
            sel = "canvas.wirehead-plane-axial"
            wait_drawn(page, sel)
            before: Any = page.evaluate(_PIXELS, sel)
            assert before["levels"] >= 8, f"the exported viewer shows no real image: {before}"
            slider = page.locator("input.wirehead-slider-axial")
            slider.focus()
            for _ in range(5):
                page.keyboard.press("ArrowRight")
            after = page.evaluate(_PIXELS, sel)
            assert after["hash"] != before["hash"], "the exported viewer's slider did not change the image"
            assert not errors, errors
            page.screenshot(path=str(tmp_path / "exported.png"), full_page=True)
        finally:
            browser.close()
