"""SwapDashboard and SliceViewer: their state and pixels, checked without a browser, on a real server."""

from __future__ import annotations

import io
import os
import re
import signal
from typing import Any

import numpy as np
import pytest

from procs import wait_until

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from wirehead import WireheadController, WireheadGenerator, WireheadManager  # noqa: E402
from wirehead.notebook import SliceViewer, SwapDashboard, slicing  # noqa: E402
from wirehead.synth import synth_sample  # noqa: E402



def _small_sample(seed: int, shape: tuple[int, int, int] = (24, 20, 16)) -> tuple[np.ndarray, np.ndarray]:
    return synth_sample(shape, seed=seed)


# -- pure slicing ------------------------------------------------------------------------------
def test_crosshair_marks_the_voxel_where_the_planes_meet() -> None:
    vol = np.zeros((9, 11, 13), np.float32)
    vol[3, 5, 7] = 1.0
    indices = {"sagittal": 3, "coronal": 5, "axial": 7}
    for plane in slicing.PLANES:
        sl = slicing.extract_slice(vol, plane, indices[plane])
        row, col = slicing.crosshair(vol.shape, plane, indices)
        assert sl[row, col] == 1.0 and sl.sum() == 1.0, plane
        other = slicing.extract_slice(vol, plane, indices[plane] + 1)
        assert other.sum() == 0.0


def test_png_fallback_decodes_to_the_rendered_pixels() -> None:
    import matplotlib.image

    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    back = matplotlib.image.imread(io.BytesIO(slicing.encode_png(rgb, scale=2)), format="png")
    back = (back[..., :3] * 255).round().astype(np.uint8)
    assert back.shape == (14, 10, 3)
    assert np.array_equal(back[::2, ::2], rgb)


# -- SliceViewer -------------------------------------------------------------------------------
def test_moving_a_slice_slider_changes_that_plane_and_the_crosshair_elsewhere() -> None:
    image, label = _small_sample(1)
    v = SliceViewer(arrays={"image": image, "label": label})
    before = {p: a.copy() for p, a in v.rendered.items()}
    assert set(before) == set(slicing.PLANES)
    assert v.axial == image.shape[2] // 2
    v.plane_sliders["axial"].value = 3  # what a user's drag does
    assert v.axial == 3
    assert not np.array_equal(before["axial"], v.rendered["axial"])
    expected = slicing.render_planes(image, v.indices, labels=label, opacity=v.opacity, cmap=v.cmap)
    for p in slicing.PLANES:
        assert np.array_equal(v.rendered[p], expected[p]), p
    # the axial cut moved, so the crosshair in the coronal and sagittal views moved with it
    assert not np.array_equal(before["coronal"], v.rendered["coronal"])
    assert not np.array_equal(before["sagittal"], v.rendered["sagittal"])
    # a colormap change repaints; the PNG the browser gets is the rendered array
    v.cmap = "viridis"
    assert not np.array_equal(expected["axial"], v.rendered["axial"])
    assert v.plane_images["axial"].value == slicing.encode_png(v.rendered["axial"])


def test_label_overlay_changes_pixels_where_labels_are_and_nowhere_else() -> None:
    image, label = _small_sample(2)
    v = SliceViewer(arrays={"image": image, "label": label}, opacity=0.0)
    plain = v.rendered["axial"].copy()
    v.opacity = 0.6
    over = v.rendered["axial"]
    changed = (plain != over).any(axis=2)
    labelled = slicing.extract_slice(label, "axial", v.axial) > 0
    row, col = slicing.crosshair(image.shape, "axial", v.indices)
    off_cross = np.ones_like(labelled)
    off_cross[row, :] = False
    off_cross[:, col] = False
    assert labelled.any() and (~labelled & off_cross).any()
    assert not (changed & ~labelled).any(), "the overlay changed pixels where there is no label"
    assert changed[labelled & off_cross].mean() > 0.95
    # no label kind: the plain image again
    v.label_kind = None
    assert np.array_equal(v.rendered["axial"], plain)


def test_4d_arrays_get_a_channel_slider_and_2d_arrays_one_image() -> None:
    rng = np.random.default_rng(3)
    multi = rng.random((2, 8, 9, 10), dtype=np.float32)
    v = SliceViewer(arrays={"x": multi})
    assert v.channel_slider.layout.display != "none" and v.channel_slider.max == 1
    first = v.rendered["axial"].copy()
    v.channel_slider.value = 1
    assert not np.array_equal(first, v.rendered["axial"])
    flat = SliceViewer(arrays={"slice": multi[0, :, :, 4]})
    assert list(flat.rendered) == ["2d"] and flat.rendered["2d"].shape == (9, 8, 3)
    bundle = flat._repr_mimebundle_()
    assert {"text/plain", "image/png", "text/html"} <= set(bundle)


def test_viewer_reads_samples_of_the_read_generation_from_a_config(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    samples = [_small_sample(10), _small_sample(11)]
    gen = WireheadGenerator(config=cfg, name="pusher")
    mgr = WireheadManager(config=cfg)
    try:
        mgr.step()  # the manager holds the lease, so the pusher does not swap
        for s in samples:
            gen.push(s)
        assert mgr.step().swapped
    finally:
        gen.close()
    v = SliceViewer(config=cfg, timeout=10)
    assert v.generation == 0 and v.n_samples == 2
    for index, (image, label) in enumerate(samples):
        v.sample = index
        expected = slicing.render_planes(image, v.indices, labels=label, opacity=v.opacity, cmap=v.cmap)
        for p in slicing.PLANES:
            assert np.array_equal(v.rendered[p], expected[p]), (index, p)


# -- SwapDashboard -----------------------------------------------------------------------------
def test_progress_equals_committed_count_and_swaps_rise_after_a_swap(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=4, LEASE_SECONDS=60.0)
    mgr = WireheadManager(config=cfg)
    gen = WireheadGenerator(config=cfg, name="pusher")
    dash = SwapDashboard(config=cfg, autostart=False)
    try:
        assert mgr.step().has_lease
        dash.refresh()
        assert dash.progress.value == 0 and dash.swaps == 0
        for n in range(1, 5):
            gen.push(_small_sample(n, (8, 8, 8)))
            dash.refresh()
            assert dash.progress.value == n, f"after {n} commits the bar shows {dash.progress.value}"
        assert dash.progress.max == 4
        assert mgr.step().swapped
        dash.refresh()
        assert dash.swaps == 1 and dash.progress.value == 0
        assert "<b>1</b> swaps" in dash.stats.value
        assert dash.plot.value[:8] == b"\x89PNG\r\n\x1a\n"
        bundle = dash._repr_mimebundle_()
        assert re.search(r"write generation\s+1\b", bundle["text/plain"])
        assert {"image/png", "text/html"} <= set(bundle)
    finally:
        dash.stop()
        gen.close()


def _endless(rank: int):  # importable, so process mode works without cloudpickle too
    import time as _t

    import numpy as _np

    while True:
        _t.sleep(0.05)
        yield _np.zeros((8, 8, 8), _np.float32), _np.zeros((8, 8, 8), _np.uint8)


def test_a_killed_generator_turns_the_health_display_to_dead(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=8, HEARTBEAT_SECONDS=0.2, DEAD_AFTER_SECONDS=1.0)
    ctl = WireheadController(config=cfg)
    try:
        (state,) = ctl.start_generators(_endless, n=1, mode="process")
        dash = ctl.dashboard(autostart=False)

        def status() -> str:
            dash.refresh()
            rows = [r for r in dash.health_rows if r[1] == "gen-0"]
            return rows[0][3] if rows else ""

        wait_until(lambda: status() == "alive", 60, "the generator to report alive")
        assert "alive" in dash.health.value
        os.kill(state.pid, signal.SIGKILL)
        wait_until(lambda: status() == "dead", 30, "the killed generator to show as dead")
        assert ">dead<" in dash.health.value
        assert dash.progress.bar_style == "warning"
    finally:
        ctl.stop(timeout=10)


def test_an_erroring_generator_shows_its_traceback_while_another_keeps_producing(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=4, HEARTBEAT_SECONDS=0.2, DEAD_AFTER_SECONDS=5.0)

    def broken_brains():
        yield _small_sample(0, (8, 8, 8))
        raise ValueError("boom-4711 in the sample generator")

    ctl = WireheadController(config=cfg)
    try:
        ctl.start_manager()
        ctl.start_generators(_endless, n=1, name="good")
        ctl.start_generators(broken_brains, n=1, name="bad")
        dash = ctl.dashboard(interval=0.1)
        wait_until(lambda: "boom-4711" in dash.errors.value, 30, "the error on the dashboard")
        shown = dash.errors.value
        assert "Traceback" in shown and "boom-4711" in shown and "broken_brains" in shown
        status = {r[1]: r for r in dash.health_rows}
        assert status["bad-0"][3] == "errored"
        produced = status["good-0"][4]
        wait_until(lambda: {r[1]: r for r in dash.health_rows}["good-0"][4] > produced + 3, 30,
               "the good generator to keep producing")
        assert {r[1]: r for r in dash.health_rows}["good-0"][3] == "alive"
        assert dash.running
    finally:
        ctl.stop(timeout=10)
    assert not dash.running, "the dashboard's refresher must stop with the controller"
