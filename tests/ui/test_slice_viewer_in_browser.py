"""The slice viewer's drawing module in headless Chromium, on the page SliceViewer.to_html() writes.

That page runs the same ``viewer.js`` as the live widget (with a small model in place of the
kernel's), so what is checked here is what a notebook user sees, and what an exported page shows
without a kernel or a network:

* a 256³ volume: first display time, and the median time from a slider key press to new pixels;
* a click in the axial plane moves the coronal and sagittal slices; the readout names the label
  under the crosshair;
* the same brain stored RAS, LIA or LPS shows the same pixels and letters (canonical display), in
  neurological and radiological convention; the readout gives the stored voxel and world mm;
* label colours are distinct (FreeSurfer's 3 and 43) and labels hide from the legend;
* window/level by dragging, zoom, pan and reset.

Chromium is Debian's ``chromium`` (or ``$WIREHEAD_CHROMIUM``); when it or Playwright is missing the
test fails and says what to install.  The browser is closed in teardown, also when a check fails.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from helpers import wait_drawn

pytest.importorskip("anywidget")

from wirehead.notebook import SliceViewer  # noqa: E402

LATENCY_BOUND_MS = 500.0  # generous: the target is 50 ms, a loaded CI machine must not flake
FIRST_DISPLAY_BOUND_S = 10.0  # the target is 2 s

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]  # slow: real processes for long; `-m "not slow"` skips


@pytest.fixture()
def page(chromium: Any) -> Iterator[Any]:
    ctx = chromium.browser().new_context(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
    ctx.route("http*://**", lambda route: route.abort())  # offline, as an exported page may be
    yield ctx.new_page()


def _open(page: Any, tmp_path: Path, viewer: SliceViewer, name: str, max_voxels: int = 96 ** 3) -> float:
    html = tmp_path / f"{name}.html"
    html.write_text(f"<!doctype html><html><body>{viewer.to_html(max_voxels=max_voxels)}</body></html>")
    t0 = time.monotonic()
    page.goto(html.as_uri())
    wait_drawn(page, "canvas.wirehead-plane-axial")
    return time.monotonic() - t0


_PIXELS = """(sel) => {
  const c = document.querySelector(sel);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0, levels = new Set();
  for (let i = 0; i < d.length; i += 4) { h = (h * 31 + d[i] + 7 * d[i + 1]) | 0; levels.add(d[i]); }
  return {hash: h, levels: levels.size, w: c.width, h: c.height};
}"""

_LATENCY = """async () => {
  const s = document.querySelector('input.wirehead-slider-axial');
  const c = document.querySelector('canvas.wirehead-plane-axial');
  const times = [];
  for (let k = 0; k < 15; k++) {
    const drawn = Number(c.dataset.drawn);
    const t0 = performance.now();
    s.value = String(Number(s.value) + 3);
    s.dispatchEvent(new Event('input', {bubbles: true}));
    await new Promise((r) => requestAnimationFrame(() => r()));  // the frame that shows the new pixels
    if (Number(c.dataset.drawn) === drawn) return null;
    times.push(performance.now() - t0);
  }
  return times;
}"""


_CROSSHAIR = """(sel) => {  // [column, row] of the yellow crosshair lines of a canvas
  const c = document.querySelector(sel);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  const yellow = (x, y) => { const i = 4 * (y * c.width + x); return d[i] > 150 && d[i + 1] > 120 && d[i + 2] < 90; };
  let col = -1, row = -1;
  for (let x = 0; x < c.width && col < 0; x++) {
    let n = 0; for (let y = 0; y < c.height; y++) n += yellow(x, y);
    if (n > 0.9 * c.height) col = x;
  }
  for (let y = 0; y < c.height && row < 0; y++) {
    let n = 0; for (let x = 0; x < c.width; x++) n += yellow(x, y);
    if (n > 0.9 * c.width) row = y;
  }
  return [col, row];
}"""


def _brain(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A smooth ellipsoid 'brain' with three tissue labels (no download needed)."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    r = np.sqrt(sum(g * g for g in grids))
    image = np.where(r < 0.9, 1.0 - 0.5 * r, 0.0).astype(np.float32) + 0.05 * grids[0]
    label = np.zeros(shape, np.uint8)
    label[r < 0.9] = 1
    label[r < 0.6] = 2
    label[(r < 0.3) & (grids[0] > 0)] = 3
    return image, label


def test_slider_to_image_latency_and_first_display_at_256_cubed(page: Any, tmp_path: Path) -> None:
    image, label = _brain((256, 256, 256))
    v = SliceViewer(arrays={"image": image, "label": label})
    assert len(v._volume) == 256 ** 3, "a 256³ volume is sent whole"
    first = _open(page, tmp_path, v, "big", max_voxels=256 ** 3)
    before = page.evaluate(_PIXELS, "canvas.wirehead-plane-axial")
    times = page.evaluate(_LATENCY)
    assert times, "moving the axial slider did not redraw the axial plane"
    after = page.evaluate(_PIXELS, "canvas.wirehead-plane-axial")
    median = statistics.median(times)
    print(f"256^3: first display {first:.2f} s (page load with a 22 MB inline volume); "
          f"slider-to-image median {median:.1f} ms, max {max(times):.1f} ms over {len(times)} moves")
    assert after["hash"] != before["hash"] and after["levels"] >= 3
    assert first < FIRST_DISPLAY_BOUND_S
    assert median < LATENCY_BOUND_MS, f"median slider-to-image {median:.0f} ms"


def test_click_moves_the_other_planes_and_readout_names_the_label(page: Any, tmp_path: Path) -> None:
    image, label = _brain((64, 64, 40))
    names = {1: "grey matter", 2: "white matter", 3: "csf"}
    v = SliceViewer(arrays={"image": image, "label": label}, label_names=names)
    _open(page, tmp_path, v, "click")
    cor = page.evaluate(_PIXELS, "canvas.wirehead-plane-coronal")
    sag = page.evaluate(_PIXELS, "canvas.wirehead-plane-sagittal")
    canvas = page.locator("canvas.wirehead-plane-axial")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 0.8, "y": box["height"] * 0.5})  # right of centre: label 3 is x > 0
    readout = page.locator(".wirehead-readout").inner_text()
    assert page.locator("input.wirehead-slider-sagittal").input_value() != str(v.sagittal)
    assert page.locator("input.wirehead-slider-coronal").input_value() == str(64 - 1 - 32)  # the row clicked
    assert page.evaluate(_PIXELS, "canvas.wirehead-plane-coronal")["hash"] != cor["hash"]
    assert page.evaluate(_PIXELS, "canvas.wirehead-plane-sagittal")["hash"] != sag["hash"]
    assert "white matter" in readout or "grey matter" in readout or "csf" in readout, readout
    canvas.click(position={"x": box["width"] * 0.58, "y": box["height"] * 0.5})
    readout = page.locator(".wirehead-readout").inner_text()
    assert "csf (3)" in readout, readout
    legend = page.locator(".wirehead-legend").inner_text()
    assert all(n in legend for n in names.values()), legend
    coronal = int(page.locator("input.wirehead-slider-coronal").input_value())
    page.keyboard.press("ArrowUp")  # the focused axial plane: crosshair one voxel anterior
    assert int(page.locator("input.wirehead-slider-coronal").input_value()) == coronal + 1
    page.locator(".wirehead-viewer").screenshot(path=str(tmp_path / "viewer.png"))



def test_one_array_sample_shows_no_sample_counter_and_several_count_from_one(page: Any, tmp_path: Path) -> None:
    image, label = _brain((32, 32, 24))
    _open(page, tmp_path, SliceViewer(arrays={"image": image, "label": label}), "one")
    assert not page.locator(".wh-sample").is_visible(), "one array sample: nothing to choose, no '0/0'"
    assert "sample" not in page.locator(".wirehead-info").inner_text()
    two = SliceViewer(arrays=[{"image": image}, {"image": image[::-1].copy()}])
    two.sample = 1
    _open(page, tmp_path, two, "two")
    assert page.locator(".wh-sample").is_visible()
    assert page.locator(".wh-sample .wh-out").inner_text() == "2/2"
    assert "sample 2/2" in page.locator(".wirehead-info").inner_text()

def _reoriented(image: np.ndarray, label: np.ndarray, affine: np.ndarray, codes: str) -> dict[str, np.ndarray]:
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    t = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(codes))
    return {"image": apply_orientation(image, t), "label": apply_orientation(label, t),
            "affine": affine @ inv_ornt_aff(t, image.shape)}


@pytest.mark.parametrize("radiological", [False, True])
def test_a_brain_stored_ras_lia_or_lps_shows_the_same_pixels_and_letters(page: Any, tmp_path: Path,
                                                                          radiological: bool) -> None:
    pytest.importorskip("nibabel")
    image, label = _brain((40, 36, 32))
    image = image + np.linspace(0, 0.3, 32, dtype=np.float32)[None, None, :]  # superior brighter: asymmetric
    affine = np.array([[2.0, 0, 0, -40], [0, 2.5, 0, -45], [0, 0, 3.0, -48], [0, 0, 0, 1]])

    def seen() -> dict[str, Any]:
        out: dict[str, Any] = {"readout": page.locator(".wirehead-readout").inner_text()}
        for p in ("axial", "coronal", "sagittal"):
            out[p] = page.evaluate(_PIXELS, f"canvas.wirehead-plane-{p}")
            out[p + "-letters"] = {side: page.locator(f".wirehead-plane-{p} ~ .wh-{side}").inner_text()
                                   for side in ("left", "right", "top", "bottom")}
        return out

    shown = {}
    for codes in ("RAS", "LIA", "LPS"):
        v = SliceViewer(arrays=_reoriented(image, label, affine, codes), radiological=radiological)
        _open(page, tmp_path, v, codes)
        shown[codes] = seen()
    want = {"left": "R", "right": "L"} if radiological else {"left": "L", "right": "R"}
    assert shown["RAS"]["axial-letters"] == {**want, "top": "A", "bottom": "P"}
    assert shown["RAS"]["coronal-letters"] == {**want, "top": "S", "bottom": "I"}
    assert shown["RAS"]["sagittal-letters"] == {"left": "P", "right": "A", "top": "S", "bottom": "I"}
    for codes in ("LIA", "LPS"):
        for key, value in shown["RAS"].items():
            if key == "readout":  # the same display voxel and world mm; the stored index differs
                assert value.split("stored")[0] == shown[codes][key].split("stored")[0], codes
                assert value.split("world")[1] == shown[codes][key].split("world")[1], codes
            else:
                assert shown[codes][key] == value, (codes, key)
    assert " mm" in shown["RAS"]["readout"] and "stored (" in shown["LIA"]["readout"]


def test_label_colours_differ_and_labels_hide_from_the_legend(page: Any, tmp_path: Path) -> None:
    image, label = _brain((48, 48, 40))
    fs = label.astype(np.int16)
    fs[label == 1] = 3  # FreeSurfer: left cerebral cortex
    fs[label == 2] = 43  # right lateral ventricle: the same colour as 3 in a 20-colour cycle
    fs[label == 3] = 10
    v = SliceViewer(arrays={"image": image, "label": fs}, label_names={3: "Left-Cerebral-Cortex"})
    _open(page, tmp_path, v, "labels")
    swatches = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.wh-legend-item')].map(
        (e) => [e.textContent.split(' ')[0], e.querySelector('.wh-swatch').style.background]))""")
    assert set(swatches) == {"3", "10", "43"} and len(set(swatches.values())) == 3, swatches
    before = page.evaluate(_PIXELS, "canvas.wirehead-plane-axial")
    page.locator(".wirehead-legend-43").click()
    hidden = page.evaluate(_PIXELS, "canvas.wirehead-plane-axial")
    assert hidden["hash"] != before["hash"], "hiding label 43 changed nothing"
    page.locator(".wirehead-legend-43").click()
    assert page.evaluate(_PIXELS, "canvas.wirehead-plane-axial")["hash"] == before["hash"]


def test_window_drag_zoom_pan_and_reset(page: Any, tmp_path: Path) -> None:
    image, _ = _brain((64, 64, 48))
    _open(page, tmp_path, SliceViewer(arrays={"image": image}), "window")
    lo, hi = (page.locator(f"input.wirehead-window-{e}").input_value() for e in ("lo", "hi"))
    canvas = page.locator("canvas.wirehead-plane-axial")
    box = canvas.bounding_box()
    before = page.evaluate(_PIXELS, "canvas.wirehead-plane-axial")
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down(button="right")
    page.mouse.move(cx + 60, cy + 40, steps=5)
    page.mouse.up(button="right")
    assert (page.locator("input.wirehead-window-lo").input_value(),
            page.locator("input.wirehead-window-hi").input_value()) != (lo, hi), "dragging changed no window"
    dragged = page.evaluate(_PIXELS, "canvas.wirehead-plane-axial")
    assert dragged["hash"] != before["hash"]
    page.mouse.move(cx, cy)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -300)
    page.keyboard.up("Control")
    page.wait_for_function("() => true")
    zoomed = page.evaluate(_PIXELS, "canvas.wirehead-plane-axial")
    assert zoomed["hash"] != dragged["hash"], "ctrl-wheel did not zoom"
    page.mouse.move(cx, cy)
    page.mouse.down(button="middle")
    page.mouse.move(cx + 30, cy, steps=3)
    page.mouse.up(button="middle")
    panned = page.evaluate(_PIXELS, "canvas.wirehead-plane-axial")
    assert panned["hash"] != zoomed["hash"], "middle-drag did not pan"
    page.locator("button.wirehead-reset").click()
    assert page.evaluate(_PIXELS, "canvas.wirehead-plane-axial")["hash"] == before["hash"]
    assert page.locator("input.wirehead-window-lo").input_value() == lo


def test_a_grid_of_four_128_cubed_samples_is_drawn_and_a_click_moves_every_panel(page: Any, tmp_path: Path) -> None:
    from wirehead.notebook import SampleGrid

    samples = []
    for k in range(4):
        image, label = _brain((128, 128, 128))
        samples.append({"image": np.roll(image, 4 * k, axis=0), "label": np.roll(label, 4 * k, axis=0)})
    grid = SampleGrid(arrays=samples, plane="axial")
    html = tmp_path / "grid.html"
    html.write_text(f"<!doctype html><html><body>{grid.to_html()}</body></html>")
    t0 = time.monotonic()
    page.goto(html.as_uri())
    for k in range(4):
        wait_drawn(page, f"canvas.wirehead-grid-panel-{k}")
    drawn = time.monotonic() - t0
    print(f"grid of 4 x 128^3: drawn {drawn:.2f} s after the page was asked for")
    before = [page.evaluate(_PIXELS, f"canvas.wirehead-grid-panel-{k}") for k in range(4)]
    assert len({b["hash"] for b in before}) == 4, "the panels show the same sample"
    canvas = page.locator("canvas.wirehead-grid-panel-2")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.7})
    after = [page.evaluate(_PIXELS, f"canvas.wirehead-grid-panel-{k}") for k in range(4)]
    assert all(a["hash"] != b["hash"] for a, b in zip(after, before)), "a click moved not every crosshair"
    crosses = [page.evaluate(_CROSSHAIR, f"canvas.wirehead-grid-panel-{k}") for k in range(4)]
    assert len({tuple(c) for c in crosses}) == 1, f"the panels' crosshairs differ: {crosses}"
    col, row = crosses[0]
    assert abs(col - box["width"] * 0.3) <= 3 and abs(row - box["height"] * 0.7) <= 3, (crosses, box)
    slider = page.locator("input.wirehead-grid-slider")
    slider.focus()
    page.keyboard.press("ArrowRight")
    moved = [page.evaluate(_PIXELS, f"canvas.wirehead-grid-panel-{k}") for k in range(4)]
    assert all(a["hash"] != b["hash"] for a, b in zip(moved, after)), "the slice moved not every panel"
    assert drawn < 10.0  # the target is 1.5 s; a loaded CI machine must not flake
