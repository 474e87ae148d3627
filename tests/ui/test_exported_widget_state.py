"""A notebook saved WITH widget state, exported by plain nbconvert, opened offline in headless Chromium.

``jupyter nbconvert --execute --to html`` (and ``--to notebook --execute`` then ``--to html``) store
the widget state in the notebook, so nbconvert writes each widget output as a bare widget view that
only ``@jupyter-widgets/html-manager`` from a CDN can draw.  Wirehead's widgets carry their own
offline drawing (``wirehead/notebook/embed.js``): the exported page must show the slice viewer from
the stored state (the slice it was left at, its slider changing the image, clicks moving the other
planes) and the dashboard's last snapshot, with every non-``file:`` request blocked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from helpers import CANVAS_PIXELS_JS as _PIXELS
from helpers import nbconvert, route_offline, wait_drawn

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("nbconvert")
pytest.importorskip("anywidget")

SHAPE = (96, 80, 64)
#: Stated size budget of an export: the shown volume once (1 byte a voxel, base64: 4/3), the labels
#: deflated (a few % of a byte a voxel), plus nbconvert's page and the viewer module (0.45 MB measured).
BYTES_PER_VOXEL = 4 / 3 * 1.1
PAGE_OVERHEAD = 600_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # slow: real processes for long; `-m "not slow"` skips



_FAKE_MANAGER = """
document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').forEach((s) => {
  const d = document.createElement('div'); d.className = 'fake-html-manager'; s.parentNode.insertBefore(d, s);
});
window.__fakeManagerRan = true;
"""


def _notebook(path: Path, cfg: Any) -> None:
    keys = {"MONGO_URI": cfg.mongo_uri, "DBNAME": cfg.dbname, "SWAP_CAP": cfg.swap_cap, "SAMPLE": list(cfg.sample)}
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from wirehead.notebook import SliceViewer, SwapDashboard\n"
            "from wirehead.synth import synth_sample\n"
            f"image, label = synth_sample({SHAPE!r}, seed=3)\n"
            "import numpy as np\n"  # stored LPS (ITK's order), 2 mm: shown canonical (RAS) in the export too
            "lps = {'image': image[::-1, ::-1].copy(), 'label': label[::-1, ::-1].copy(),\n"
            "       'affine': np.diag([-2.0, -2.0, 2.0, 1.0])}\n"
            "v = SliceViewer(arrays=lps, label_names={1: 'csf', 2: 'grey', 3: 'white'})\n"
            "v"),
        nbformat.v4.new_code_cell(f"dash = SwapDashboard(config={json.dumps(keys)}, autostart=False)\ndash"),
        # later cells change what was displayed: the export shows the state the notebook was saved with
        nbformat.v4.new_code_cell("v.axial = 9\ndash.refresh(); dash.refresh()\nprint(dash.snapshot.write_gen)"),
    ]
    nbformat.write(nb, str(path))


@pytest.fixture()
def browser(chromium: Any) -> Any:
    return chromium.browser()  # closed by the chromium fixture (tests/ui/conftest.py)


@pytest.mark.parametrize("how", ["execute-to-html", "execute-to-notebook-then-html"])
def test_export_with_stored_widget_state_shows_viewer_and_dashboard_offline(
        how: str, tmp_path: Path, config: Any, browser: Any) -> None:
    _notebook(tmp_path / "nb.ipynb", config)
    if how == "execute-to-html":
        nbconvert("--execute", "--to", "html", "nb.ipynb", "--output", "out.html", cwd=tmp_path)
    else:
        nbconvert("--to", "notebook", "--execute", "nb.ipynb", "--output", "run.ipynb", cwd=tmp_path)
        saved = nbformat.read(str(tmp_path / "run.ipynb"), as_version=4)
        assert "application/vnd.jupyter.widget-state+json" in saved.metadata.get("widgets", {}), "no stored state"
        nbconvert("--to", "html", "run.ipynb", "--output", "out.html", cwd=tmp_path)
    html = tmp_path / "out.html"
    text = html.read_text(encoding="utf-8")
    # nbconvert chose the widget views (the state is stored), not the text/html fallbacks
    assert 'type="application/vnd.jupyter.widget-state+json"' in text
    assert text.count('<script type="application/vnd.jupyter.widget-view+json">') == 2
    assert "wirehead-standalone" not in text, "the page shows the text/html fallback, not the stored state"
    size = len(text.encode())
    budget = BYTES_PER_VOXEL * SHAPE[0] * SHAPE[1] * SHAPE[2] + PAGE_OVERHEAD
    print(f"{how}: exported page {size / 1e6:.2f} MB (budget {budget / 1e6:.2f} MB)")
    assert size < budget, f"exported page is {size} bytes, over the budget {budget:.0f}"

    page = browser.new_context(viewport={"width": 1200, "height": 1400}).new_page()
    blocked = route_offline(page)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(html.as_uri())
    sel = "canvas.wirehead-plane-axial"
    wait_drawn(page, sel)
    assert any("html-manager" in u or "require" in u for u in blocked), f"nothing from a CDN was blocked: {blocked}"
    before = page.evaluate(_PIXELS, sel)
    assert before["levels"] >= 8, f"the exported viewer shows no real image: {before}"
    # the slice the notebook left it at (set in a later cell), not the one first displayed
    assert page.locator("input.wirehead-slider-axial").input_value() == "9"
    assert page.locator(".wh-kind select").is_disabled(), "a control that needs the kernel is offered offline"
    slider = page.locator("input.wirehead-slider-axial")
    slider.focus()
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    assert page.locator("input.wirehead-slider-axial").input_value() == "13"
    after = page.evaluate(_PIXELS, sel)
    assert after["hash"] != before["hash"], "the exported viewer's slider did not change the image"
    sagittal = page.locator("input.wirehead-slider-sagittal").input_value()
    readout = page.locator(".wirehead-readout").inner_text()
    canvas = page.locator(sel)
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.5})
    assert page.locator("input.wirehead-slider-sagittal").input_value() != sagittal, "a click moved nothing"
    moved = page.locator(".wirehead-readout").inner_text()
    assert moved != readout and re.search(r"voxel \(\d+, \d+, 13\)", moved), (readout, moved)
    # canonical display from the stored state: R on the right, and the readout maps back to the stored LPS voxel
    assert page.locator(".wirehead-plane-axial ~ .wh-right").inner_text() == "R"
    x, y = (int(page.locator(f"input.wirehead-slider-{p}").input_value()) for p in ("sagittal", "coronal"))
    assert f"stored ({SHAPE[0] - 1 - x}, {SHAPE[1] - 1 - y}, 13)" in moved and " mm" in moved, moved

    dash = page.locator(".wirehead-dashboard")
    dash.wait_for(timeout=10_000)
    shown = dash.inner_text()
    assert config.dbname in shown and "write generation" in shown and "swaps" in shown, shown
    assert "waiting for the first snapshot" not in shown and "no snapshot yet" not in shown, shown
    assert page.locator(".wirehead-dashboard .wh-offline-progress").count() == 1
    assert page.locator(".wirehead-plot svg").count() == 1, "the dashboard's history plot is missing"
    assert not errors, errors
    page.screenshot(path=str(tmp_path / "exported.png"), full_page=True)

    # online: nbconvert's loader gets an html-manager (a stand-in that marks every view it would draw), and
    # leaves wirehead's views to wirehead: each widget is drawn once, the same as offline
    online = browser.new_context().new_page()
    online.route("**/*", lambda route: route.fulfill(status=200, content_type="text/javascript", body=_FAKE_MANAGER)
                 if "html-manager" in route.request.url else
                 route.continue_() if route.request.url.startswith("file:") else route.abort())
    online.goto(html.as_uri())
    online.wait_for_function("() => window.__fakeManagerRan === true", timeout=30_000)
    wait_drawn(online, sel)
    assert online.locator(".fake-html-manager").count() == 0, "nbconvert's html-manager would draw wirehead's views too"
    assert online.locator(sel).count() == 1 and online.locator(".wirehead-dashboard").count() == 1
