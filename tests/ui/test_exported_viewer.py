"""A notebook with a SliceViewer exported to HTML WITHOUT its widget state, opened offline in headless Chromium.

Without stored widget state (JupyterLab's default save, or the state cleared when exporting, as here)
nbconvert picks the viewer's ``text/html`` output: a standalone viewer (the same drawing module, the
volume inline) that works with no kernel and no network.  The test blocks every http(s) request,
checks the page shows the planes, and that moving the axial slider changes the axial image.  Exports
WITH stored widget state: ``test_exported_widget_state.py``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("nbconvert")
pytest.importorskip("anywidget")

CHROMIUM = os.environ.get("WIREHEAD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
PAGE_BUDGET = 3_000_000  # bytes of exported HTML for one 64³ viewer, nbconvert's own CSS included

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]  # slow: real processes for long; `-m "not slow"` skips

_PIXELS = """(sel) => {
  const c = document.querySelector(sel);
  if (!c || !Number(c.dataset.drawn)) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0; const levels = new Set();
  for (let i = 0; i < d.length; i += 4) { h = (h * 31 + d[i] + 7 * d[i + 1]) | 0; levels.add(d[i]); }
  return {hash: h, levels: levels.size};
}"""


def test_exported_html_shows_the_viewer_and_its_slider_works_offline(tmp_path: Path) -> None:
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

    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"the browser test needs Playwright's Python driver ({e}): pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set WIREHEAD_CHROMIUM)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=60_000,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_context().new_page()
            page.route("http*://**", lambda route: route.abort())  # offline
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(html.as_uri())
            sel = "canvas.wirehead-plane-axial"
            page.wait_for_function(f"() => Number(document.querySelector('{sel}')?.dataset.drawn) > 0",
                                   timeout=30_000)
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
