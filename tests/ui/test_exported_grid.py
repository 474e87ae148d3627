"""A notebook with a SampleGrid of a live generation and its QC table, exported to HTML with and without its widget
state, opened offline in headless Chromium.

With stored widget state (``jupyter nbconvert --execute --to html``) nbconvert writes the grid as a bare widget
view; wirehead's offline loader (``wirehead/notebook/embed.js``) draws it from the stored state with the grid's
own module.  Without it (the state cleared, as JupyterLab's default save) nbconvert picks the grid's
``text/html`` output, a standalone grid.  Either way, with every non-``file:`` request blocked, the page must show
every panel (canonical letters for samples stored LPS) and the QC table, and its slider, clicks and legend must
work; what needs the kernel (the QC button) is not offered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import CANVAS_PIXELS_JS as _PIXELS
from helpers import nbconvert, route_offline, swap_in, wait_drawn

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("nbconvert")
pytest.importorskip("anywidget")

SHAPE = (48, 40, 32)
N = 3

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # slow: a kernel, nbconvert and Chromium


def _notebook(path: Path, cfg: Any) -> None:
    keys = {"MONGO_URI": cfg.mongo_uri, "DBNAME": cfg.dbname, "SWAP_CAP": cfg.swap_cap, "SAMPLE": list(cfg.sample)}
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from wirehead.notebook import SampleGrid\n"
            f"grid = SampleGrid(config={json.dumps(keys)}, samples={N},\n"
            "                  label_names={1: 'csf', 2: 'grey', 3: 'white'})\n"
            "grid.run_qc()\n"
            "grid"),
        # a later cell changes what was displayed: an export with stored state shows the state it was saved with
        nbformat.v4.new_code_cell("grid.axial = 9"),
    ]
    nbformat.write(nb, str(path))


def _samples() -> list[tuple[Any, ...]]:
    """Samples stored LPS (ITK's order), 2 mm: shown canonical (RAS)."""
    import numpy as np

    from wirehead.synth import synth_sample

    out = []
    for seed in range(N):
        image, label = synth_sample(SHAPE, seed=seed)
        out.append((image[::-1, ::-1].copy(), label[::-1, ::-1].copy(), np.diag([-2.0, -2.0, 2.0, 1.0])))
    return out


def _hashes(page: Any) -> list[Any]:
    return [page.evaluate(_PIXELS, f"canvas.wirehead-grid-panel-{k}") for k in range(N)]


@pytest.mark.parametrize("state", ["stored", "cleared"])
def test_an_exported_grid_draws_every_panel_offline_and_its_slider_clicks_and_legend_work(
        state: str, tmp_path: Path, make_config: Any, chromium: Any) -> None:
    cfg = make_config(SWAP_CAP=N, SAMPLE=["image", "label", "affine"])
    swap_in(cfg, _samples())
    _notebook(tmp_path / "nb.ipynb", cfg)
    nbconvert("--to", "notebook", "--execute", "nb.ipynb", "--output", "run.ipynb", cwd=tmp_path)
    saved = nbformat.read(str(tmp_path / "run.ipynb"), as_version=4)
    assert "application/vnd.jupyter.widget-state+json" in saved.metadata.get("widgets", {}), "no stored state"
    if state == "cleared":  # JupyterLab's default save: outputs kept, no widget state
        saved.metadata.pop("widgets")
        nbformat.write(saved, str(tmp_path / "run.ipynb"))
    nbconvert("--to", "html", "run.ipynb", "--output", "out.html", cwd=tmp_path)
    html = tmp_path / "out.html"
    text = html.read_text(encoding="utf-8")
    if state == "stored":  # nbconvert chose the widget view, which only the offline loader draws
        assert text.count('<script type="application/vnd.jupyter.widget-view+json">') == 1
        assert "wirehead-standalone" not in text, "the page shows the text/html fallback, not the stored state"
    else:
        assert "wirehead-standalone" in text

    browser = chromium.browser()
    page = browser.new_context(viewport={"width": 1200, "height": 1000}).new_page()
    route_offline(page)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(html.as_uri())
    for k in range(N):
        wait_drawn(page, f"canvas.wirehead-grid-panel-{k}")
    before = _hashes(page)
    assert all(b["levels"] >= 8 for b in before), f"a panel shows no real image: {before}"
    assert len({b["hash"] for b in before}) == N, "the panels do not show different samples"
    slider = page.locator("input.wirehead-grid-slider")
    if state == "stored":
        assert slider.input_value() == "9", "not the slice the notebook was saved at"
    assert page.locator(".wirehead-grid-panel-0 ~ .wh-right").inner_text() == "R"
    assert page.locator(".wirehead-grid-panel-0 ~ .wh-top").inner_text() == "A"
    assert not page.locator("button.wirehead-grid-qc").is_visible(), "QC needs the kernel: not offered offline"
    qc = page.locator(".wirehead-qc-table").inner_text()
    assert f"QC of generation 0: {N} samples" in qc and "grey" in qc, qc

    at = slider.input_value()
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert int(slider.input_value()) == int(at) + 3
    moved = _hashes(page)
    assert all(m["hash"] != b["hash"] for m, b in zip(moved, before)), "the slider did not move every panel"

    canvas = page.locator("canvas.wirehead-grid-panel-1")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.6})
    clicked = _hashes(page)
    assert all(c["hash"] != m["hash"] for c, m in zip(clicked, moved)), "a click did not move every crosshair"

    page.locator(".wirehead-legend-2").click()  # hide grey matter in every panel
    hidden = _hashes(page)
    assert all(h["hash"] != c["hash"] for h, c in zip(hidden, clicked)), "hiding a label changed no panel"
    assert not errors, errors
    page.screenshot(path=str(tmp_path / "exported-grid.png"), full_page=True)
