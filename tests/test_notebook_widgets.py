"""SwapDashboard and SliceViewer: their state and pixels, checked without a browser, on a real server."""

from __future__ import annotations

import io
import os
import re
import signal
import threading
import time
import zlib
from typing import Any

import numpy as np
import pytest

from helpers import swap_in, wait_until

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")
pytest.importorskip("anywidget")

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
def _decoded(v: SliceViewer) -> np.ndarray:
    """The volume the browser gets, as the JS module reads it."""
    return np.frombuffer(v._volume, np.uint8).reshape(v.shape)


def test_the_browser_gets_the_volume_once_and_slider_moves_send_no_pixels() -> None:
    image, label = _small_sample(1)
    v = SliceViewer(arrays={"image": image, "label": label})
    vol = _decoded(v)
    labels = zlib.decompress(v._labels)  # labels travel deflated; the browser inflates them
    assert vol.shape == image.shape and len(labels) == image.size and len(v._labels) < image.size / 4
    # quantised monotonically: brighter voxels never get a lower code
    order = np.argsort(image.reshape(-1))
    assert (np.diff(vol.reshape(-1)[order].astype(int)) >= 0).all()
    assert np.array_equal(np.frombuffer(labels, np.uint8).reshape(v.shape), label)
    sent = v._version
    before = {p: a.copy() for p, a in v.rendered.items()}
    v.axial = 3  # what a slider drag syncs
    assert v._version == sent, "a slice move must not resend the volume"
    assert not np.array_equal(before["axial"], v.rendered["axial"])
    # the axial cut moved, so the crosshair in the coronal and sagittal views moved with it
    assert not np.array_equal(before["coronal"], v.rendered["coronal"])
    v.sample = 0
    v.kind = "label"
    assert v._version > sent, "a kind change sends the new volume"


def test_traits_and_sliders_agree_out_of_range_values_are_clipped() -> None:
    image, label = _small_sample(1)
    v = SliceViewer(arrays={"image": image, "label": label})
    v.axial = 1000
    assert v.axial == image.shape[2] - 1
    v.coronal = -5
    assert v.coronal == 0
    v.sample = 7
    assert v.sample == 0
    multi = np.random.default_rng(3).random((2, 8, 9, 10), dtype=np.float32)
    m = SliceViewer(arrays={"x": multi})
    m.channel = 5
    assert m.channel == 1 and m.n_channels == 2 and not m.message.startswith("Traceback")


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
    v.label_kind = None
    assert np.array_equal(v.rendered["axial"], plain) and v._labels == b""


def test_readout_and_legend_name_the_label_under_the_crosshair() -> None:
    image, label = _small_sample(2)
    names = {int(k): f"tissue-{k}" for k in np.unique(label) if k > 0}
    v = SliceViewer(arrays={"image": image, "label": label}, label_names=names)
    x, y, z = np.argwhere(label > 0)[0]
    v.sagittal, v.coronal, v.axial = int(x), int(y), int(z)
    lab = int(label[x, y, z])
    assert f"voxel ({x}, {y}, {z})" in v.readout and f"tissue-{lab} ({lab})" in v.readout
    assert f"value {float(image[x, y, z]):.4g}" in v.readout
    assert set(v._label_values) - {0} == set(names)
    assert v.label_names[str(lab)] == f"tissue-{lab}"


def test_the_sample_count_says_what_is_true() -> None:
    image, label = _small_sample(5)
    one = SliceViewer(arrays={"image": image, "label": label})
    assert "sample" not in one.info and "sample" not in repr(one), (one.info, repr(one))  # was "sample 0/0"
    three = SliceViewer(arrays=[{"image": image}] * 3)
    three.sample = 2
    assert "sample 3/3; " in three.info and "sample 3/3, " in repr(three)


def test_robust_window_survives_an_outlier_voxel() -> None:
    image, _ = _small_sample(4)
    spiked = image.copy()
    spiked[0, 0, 0] = 1e6
    v = SliceViewer(arrays={"image": spiked})
    assert v.window[1] < 10, f"the window {v.window} follows the outlier"
    mid = v.rendered["axial"]
    assert len(np.unique(mid)) > 20, "the image went flat"
    assert _decoded(v).std() > 20


def test_quantize_maps_the_robust_range_to_uint8_and_nan_and_infinities_to_the_ends() -> None:
    rng = np.random.default_rng(1)
    vol = rng.normal(100.0, 10.0, (40, 30, 20)).astype(np.float32)
    vol[0, 0, :4] = [np.nan, -np.inf, np.inf, 1e9]
    q, lo, hi = slicing.quantize(vol)
    assert q.dtype == np.uint8 and q.shape == vol.shape and q.flags.c_contiguous
    assert list(q[0, 0, :4]) == [0, 0, 255, 255]
    good = np.isfinite(vol) & (vol >= lo) & (vol <= hi)
    want = np.rint((vol[good] - np.float32(lo)) * np.float32(255.0 / (hi - lo)))
    assert np.abs(q[good].astype(int) - want).max() <= 1  # float32 rounding at .5 only
    assert np.all(q[np.isfinite(vol) & (vol < lo)] == 0) and np.all(q[np.isfinite(vol) & (vol > hi)] == 255)
    assert slicing.quantize(rng.integers(-5, 900, (6, 5, 4)).astype(np.int16))[0].max() == 255


def test_label_codes_copy_nothing_for_uint8_and_present_labels_match_unique() -> None:
    lab = np.zeros((30, 20, 10), np.uint8)
    lab[3:9, 2:5] = 7
    lab[-1, -1, -1] = 255
    codes, bits = slicing.label_codes(lab)
    assert bits == 8 and np.shares_memory(codes, lab)
    assert slicing.present_labels(codes) == [0, 7, 255]
    flipped = codes[::-1, :, ::-2]  # a display view, not contiguous
    assert slicing.present_labels(flipped) == [int(v) for v in np.unique(flipped)]
    big = lab.astype(np.int32)
    big[0, 0, 0], big[1, 0, 0] = 3000, -4
    codes16, bits16 = slicing.label_codes(big)
    assert bits16 == 16 and codes16.dtype == np.uint16 and codes16[1, 0, 0] == 0
    assert slicing.present_labels(codes16) == [0, 7, 255, 3000]
    assert slicing.label_codes(np.array([[[True, False]]]))[0].tolist() == [[[1, 0]]]
    assert slicing.label_codes(np.array([[[2.6, -1.0, np.nan]]]))[0].tolist() == [[[3, 0, 0]]]


def test_orientation_letters_follow_the_affine_and_aspect_the_voxel_sizes() -> None:
    image, _ = _small_sample(5)
    plain = SliceViewer(arrays={"image": image})
    assert plain.axcodes == ["R", "A", "S"]
    assert plain.letters["axial"] == {"left": "L", "right": "R", "top": "A", "bottom": "P"}
    # stored L-R reversed: shown canonical, so the same letters, and the display is the stored array mirrored
    flipped = SliceViewer(arrays={"image": image}, affine=np.diag([-1.0, 1.0, 1.0, 1.0]))
    assert flipped.letters == plain.letters
    assert np.array_equal(flipped.volume, image[::-1]) and np.shares_memory(flipped.volume, image)
    aff = np.diag([1.0, 1.0, 5.0, 1.0])
    thick = SliceViewer(arrays={"image": image, "affine": aff})  # a per-sample affine kind
    assert thick.spacing == [1.0, 1.0, 5.0] and "affine" not in thick.kinds
    assert SliceViewer(arrays={"image": np.zeros((96, 96, 12))}, spacing=(2, 2, 8)).spacing == [2.0, 2.0, 8.0]


def _stored_as(image: np.ndarray, label: np.ndarray, affine: np.ndarray, codes: str) -> dict[str, np.ndarray]:
    """The same brain stored in the axis order ``codes`` (as nibabel reorients it), with the matching affine."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    t = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(codes))
    return {"image": apply_orientation(image, t), "label": apply_orientation(label, t),
            "affine": affine @ inv_ornt_aff(t, image.shape)}


@pytest.mark.parametrize("radiological", [False, True])
def test_a_brain_stored_ras_lia_or_lps_shows_the_same_anatomy_with_the_same_letters(radiological: bool) -> None:
    pytest.importorskip("nibabel")
    image, label = _small_sample(7, (24, 20, 16))
    affine = np.array([[2.0, 0, 0, -24], [0, 3.0, 0, -30], [0, 0, 4.0, -32], [0, 0, 0, 1]])
    views = {}
    for codes in ("RAS", "LIA", "LPS"):
        arrays = _stored_as(image, label, affine, codes)
        stored = {k: a.copy() for k, a in arrays.items()}
        v = SliceViewer(arrays=arrays, radiological=radiological, label_names={1: "one"})
        assert "".join(nibabel_codes(arrays["affine"])) == codes
        for k in arrays:  # the stored arrays are untouched
            assert np.array_equal(arrays[k], stored[k]), (codes, k)
        v.sagittal, v.coronal, v.axial = 5, 7, 9  # display terms: the same voxel whatever the stored order
        views[codes] = (v, arrays)
    ras, _ = views["RAS"]
    want = ["L", "A", "S"] if radiological else ["R", "A", "S"]
    for codes, (v, arrays) in views.items():
        assert v.axcodes == want and v.letters == ras.letters, codes
        assert v.spacing == [2.0, 3.0, 4.0] and v.shape == list(image.shape), codes
        assert np.array_equal(v.volume, ras.volume) and np.array_equal(v.labels, ras.labels), codes
        for plane, pixels in v.rendered.items():
            assert np.array_equal(pixels, ras.rendered[plane]), (codes, plane)
        assert v.world == ras.world, codes
        i, j, k = v.stored_index  # the stored voxel under the crosshair holds the value shown
        assert arrays["image"][i, j, k] == v.volume[5, 7, 9], codes
        assert v.readout.split("  ·  stored")[0] == ras.readout.split("  ·  stored")[0], codes
        assert f"stored ({i}, {j}, {k})" in v.readout and "mm" in v.readout, codes
    w = ras.world
    x = 5 if not radiological else image.shape[0] - 1 - 5
    assert w == (2.0 * x - 24, 3.0 * 7 - 30, 4.0 * 9 - 32)
    assert views["RAS"][0].letters["axial"]["right"] == ("L" if radiological else "R")
    assert views["RAS"][0].letters["sagittal"] == {"left": "P", "right": "A", "top": "S", "bottom": "I"}


def nibabel_codes(affine: np.ndarray) -> tuple[str, ...]:
    from nibabel.orientations import aff2axcodes

    return aff2axcodes(affine)


def test_io_orientation_and_the_display_view_are_nibabels() -> None:
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    rng = np.random.default_rng(3)
    vol = rng.normal(size=(5, 6, 7))
    for codes in ("RAS", "LIA", "LPS", "PIR", "SAL", "IPL"):
        affine = np.eye(4)
        affine[:3, :3] = 0
        for axis, (world, sign) in enumerate(axcodes2ornt(codes)):
            affine[int(world), axis] = sign * (axis + 1)
        affine[:3, :3] += rng.normal(0, 0.15, (3, 3))  # oblique: the closest canonical order
        assert np.array_equal(slicing.io_orientation(affine), io_orientation(affine)), codes
        for target, radiological in (("RAS", False), ("LAS", True)):
            shown = slicing.display_orientation(affine, radiological)
            want = apply_orientation(vol, ornt_transform(io_orientation(affine), axcodes2ornt(target)))
            assert np.array_equal(shown.apply(vol), want), (codes, target)
            j = shown.to_stored((1, 2, 3), vol.shape)
            assert shown.apply(vol)[1, 2, 3] == vol[j] and shown.to_display(j, vol.shape) == (1, 2, 3)


def test_clicks_and_slice_traits_are_display_terms_and_the_crosshair_keeps_its_stored_voxel() -> None:
    image, _ = _small_sample(8)
    v = SliceViewer(arrays={"image": image}, affine=np.diag([-1.0, 1.0, 1.0, 1.0]))
    v.sagittal = 2  # display axis R: stored index n - 1 - 2
    assert v.stored_index[0] == image.shape[0] - 3
    v.show_stored_voxel((4, 5, 6))
    assert (v.sagittal, v.coronal, v.axial) == (image.shape[0] - 5, 5, 6)
    v.radiological = True  # mirrored: the same stored voxel stays under the crosshair
    assert v.axcodes == ["L", "A", "S"] and v.stored_index == (4, 5, 6) and v.sagittal == 4


def test_roles_come_from_dtype_and_value_count_and_are_settable() -> None:
    image, label = _small_sample(6)
    t1 = (image * 3000).astype(np.int16)
    v = SliceViewer(arrays={"label": label.astype(np.int16), "image": t1})
    assert (v.kind, v.label_kind) == ("image", "label")
    w = SliceViewer(arrays={"seg": label, "t1": t1})
    assert (w.kind, w.label_kind) == ("t1", "seg")
    w.kind = "seg"
    w.label_kind = None
    assert w.kind == "seg" and w.label_kind == "(none)"


def test_channels_first_and_last_arrays_and_2d() -> None:
    rng = np.random.default_rng(3)
    first = SliceViewer(arrays={"x": rng.random((2, 30, 31, 12), dtype=np.float32)})
    assert first.shape == [30, 31, 12] and first.n_channels == 2 and "channels-first" in first.message
    last = SliceViewer(arrays={"x": rng.random((30, 31, 12, 3), dtype=np.float32)})
    assert last.shape == [30, 31, 12] and last.n_channels == 3 and "channels-last" in last.message
    timeseries = SliceViewer(arrays={"bold": rng.random((20, 20, 10, 40), dtype=np.float32)})
    assert timeseries.shape == [20, 20, 10] and timeseries.n_channels == 40
    forced = SliceViewer(arrays={"x": rng.random((30, 31, 12, 3), dtype=np.float32)}, channel_axis=0)
    assert forced.shape == [31, 12, 3]
    before = first.rendered["axial"].copy()
    first.channel = 1
    assert not np.array_equal(before, first.rendered["axial"])
    flat = SliceViewer(arrays={"slice": rng.random((8, 9), dtype=np.float32)})
    assert flat.shape == [8, 9, 1] and list(flat.rendered) == ["axial"]
    assert {"text/plain", "image/png", "text/html"} <= set(flat._repr_mimebundle_())


def test_odd_inputs_give_a_message_not_a_traceback() -> None:
    torch = pytest.importorskip("torch")
    image, label = _small_sample(7)
    empty = SliceViewer(arrays={"x": np.zeros((0, 4, 4), np.float32)})
    assert "empty" in empty.message and empty.volume is None
    bf = SliceViewer(arrays={"x": torch.rand(8, 9, 10).to(torch.bfloat16)})
    assert bf.shape == [8, 9, 10] and bf.message == ""
    mismatch = SliceViewer(arrays={"image": image, "label": label[:5]})
    assert "labels not overlaid" in mismatch.message and mismatch.labels is None
    assert mismatch.label_kind == "label"
    later = SliceViewer(arrays=[{"image": image, "label": label}, {"image": image}])
    later.sample = 1
    assert "no label kind 'label'" in later.message and later.volume is not None
    later.sample = 0
    assert later.message == "" and later.labels is not None


def test_big_volumes_are_strided_to_the_message_budget() -> None:
    vol = np.zeros((300, 40, 40), np.float32)
    v = SliceViewer(arrays={"x": vol}, max_voxels=100_000)
    assert len(v._volume) <= 100_000 and v.shape == [150, 20, 20] and v.spacing == [2.0, 2.0, 2.0]
    assert "every 2th voxel" in v.message


def test_standalone_html_embeds_the_module_and_the_volume_and_loads_nothing() -> None:
    image, label = _small_sample(8)
    v = SliceViewer(arrays={"image": image, "label": label})
    page = v.to_html()
    assert "function render" in page and "wirehead-plane-" in page
    assert not re.search(r"(src|href)=['\"]?https?:", page), "the standalone viewer must not load from the network"
    state = v.state()
    import base64

    assert base64.b64decode(state["_volume"]) == v._volume
    small = v.state(max_voxels=1000)
    assert len(base64.b64decode(small["_volume"])) == int(np.prod(small["shape"])) <= 1000


def test_displaying_a_viewer_adds_the_output_that_draws_it_in_exports_with_stored_state() -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    image, label = _small_sample(1)
    v = SliceViewer(arrays={"image": image, "label": label})
    with capture_output() as shown:
        v._ipython_display_()
    first, second = (o.data for o in shown.outputs)  # exactly two outputs
    assert first["application/vnd.jupyter.widget-view+json"]["model_id"] == v.model_id
    assert "text/html" in first and "image/png" in first  # the fallbacks for exports without stored state
    assert list(second) == ["text/html"] and "wirehead-offline-loader" in second["text/html"]
    assert second["text/html"].rstrip().endswith(f'("{v.model_id}");\n</script>')
    assert not re.search(r"(src|href)=['\"]?https?:|import\(['\"]https?:", second["text/html"]), "no network"


def test_from_nifti_reads_the_affine(tmp_path: Any) -> None:
    nib = pytest.importorskip("nibabel")
    image, label = _small_sample(9)
    aff = np.diag([-2.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(image, aff), str(tmp_path / "t1.nii.gz"))
    nib.save(nib.Nifti1Image(label.astype(np.int16), aff), str(tmp_path / "seg.nii.gz"))
    v = SliceViewer.from_nifti(tmp_path / "t1.nii.gz", tmp_path / "seg.nii.gz")
    assert v.axcodes == ["R", "A", "S"] and v.spacing == [2.0, 2.0, 3.0]  # stored LAS, shown RAS
    assert "stored LAS, shown RAS" in v.info
    assert v.labels is not None and np.array_equal(v.labels, label[::-1])


def test_viewer_reads_samples_of_the_read_generation_from_a_config(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    samples = [_small_sample(10), _small_sample(11)]
    swap_in(cfg, samples)
    v = SliceViewer(config=cfg, timeout=10)
    assert v.generation == 0 and v.n_samples == 2 and v._has_reader
    for index, (image, label) in enumerate(samples):
        v.sample = index
        assert np.array_equal(v.volume, image) and np.array_equal(v.labels, label), index
        assert f"sample {index + 1}/2; " in v.info  # counted from 1, as the browser counts
    v._refresh_clicks += 1  # the "newest generation" button
    assert v.generation == 0 and v.message == ""
    # viewing is not training: no read counted, no prefetch of the generation, at most a few samples held
    from wirehead.notebook.viewer import KEEP_SAMPLES

    for index in (0, 1, 0, 1):
        v.sample = index
    assert v._source.store.gen_doc(0).reads == 0
    assert v._source.held <= KEEP_SAMPLES
    assert not [t.name for t in threading.enumerate() if "prefetch" in t.name]
    fetched: list[str] = []
    real_fetch = v._source.fetch
    v._source.fetch = lambda sid: (fetched.append(sid), real_fetch(sid))[1]  # type: ignore[method-assign]
    v.make_thumbnails()  # both samples are held: their tiles come from them, nothing is read again
    assert fetched == [] and v._thumb_n == 2
    v._thumb_cache.clear()
    v._source.clear()
    v.make_thumbnails()
    assert len(fetched) == 2 and v._thumb_n == 2 and v._source.held == 0  # read one at a time, not held
    v.make_thumbnails()  # every sample seen: nothing read again
    assert len(fetched) == 2
    v.close()


def test_a_viewer_whose_generation_was_deleted_shows_the_read_generation(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    gen = WireheadGenerator(config=cfg, name="pusher")
    mgr = WireheadManager(config=cfg)
    try:
        mgr.step()
        for seed in (60, 61):
            gen.push(_small_sample(seed))
        assert mgr.step().swapped
        v = SliceViewer(config=cfg, timeout=10)
        assert v.generation == 0
        newer = [_small_sample(62), _small_sample(63)]
        for s in newer:
            gen.push(s)
        assert mgr.step().swapped
        v._source.store.drop_gen(0)  # retired, and its grace period over: its samples are deleted
        v.sample = 1  # not following: it kept generation 0 while it lasted
        assert v.generation == 1 and np.array_equal(v.volume, newer[1][0]), v.message
        assert "sample 2/2; " in v.info and v.message == ""
        v.close()
    finally:
        gen.close()


def test_a_viewer_made_before_the_first_swap_answers_at_once_and_shows_the_first_sample(make_config: Any) -> None:
    # issue 19 item 10: ctl.viewer() before the first swap must not block for the reader's timeout
    cfg = make_config(SWAP_CAP=2)
    t0 = time.monotonic()
    v = SliceViewer(config=cfg, timeout=60)
    took = time.monotonic() - t0
    try:
        # blocking for the reader's timeout would take 60 s; half of it is slack for a loaded machine
        assert took < 30, f"the viewer blocked {took:.1f} s before the first swap"
        assert "waiting for the first swap" in v.message and v.generation == -1
        # what the viewer shows at the moment it says it shows generation 0 (observers run in the setting thread)
        at_change: list[tuple[int, str, Any]] = []
        v.observe(lambda change: at_change.append((change["new"], v.message, v.volume)), names=["generation"])
        v.follow_interval = 0.1
        samples = [_small_sample(20), _small_sample(21)]
        with WireheadGenerator(config=cfg, name="pusher") as gen:  # no manager: the pusher swaps a full generation
            for s in samples:
                gen.push(s)
        wait_until(lambda: v.generation == 0, 60, "the viewer to show the first generation")
        assert v.message == "" and any(np.array_equal(v.volume, image) for image, _ in samples)
        assert [g for g, _, _ in at_change] == [0], at_change
        _, message, volume = at_change[0]
        assert message == "", f"generation 0 was announced while the viewer still said {message!r}"
        assert volume is not None and any(np.array_equal(volume, image) for image, _ in samples), \
            "generation 0 was announced before its sample was shown"
    finally:
        v.close()


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
        assert dash.plot.value.startswith("<svg") and "polyline" in dash.plot.value
        bundle = dash._repr_mimebundle_()
        assert re.search(r"write generation\s+1\b", bundle["text/plain"])
        assert {"image/png", "text/html"} <= set(bundle)
    finally:
        dash.stop()
        gen.close()


def test_dashboard_refresh_draws_no_matplotlib_and_its_fallback_shows_a_real_snapshot(
        make_config: Any, monkeypatch: Any) -> None:
    cfg = make_config(SWAP_CAP=4, LEASE_SECONDS=60.0)
    gen = WireheadGenerator(config=cfg, name="pusher")
    try:
        gen.push(_small_sample(1, (8, 8, 8)))
        gen.push(_small_sample(2, (8, 8, 8)))
    finally:
        gen.close()
    dash = SwapDashboard(config=cfg, autostart=False)
    # displayed before any refresh (as the quickstart does): the exported fallback must show numbers
    bundle = dash._repr_mimebundle_()
    assert "no snapshot yet" not in bundle["text/plain"] and re.search(r"write generation\s+0", bundle["text/plain"])
    assert "2 / 4" in bundle["text/html"] and bundle["image/png"]
    # every later refresh is matplotlib-free: the sparkline is SVG text
    monkeypatch.setattr(SwapDashboard, "_render_plot", lambda self: pytest.fail("refresh rendered matplotlib"))
    for _ in range(3):
        dash.refresh()
    assert dash.plot.value.count("<polyline") == 2
    # the health table is spaced and themed (JupyterLab variables, not fixed black/white)
    gen2 = WireheadGenerator(config=cfg, name="other")
    try:
        gen2.push(_small_sample(3, (8, 8, 8)))
        dash.refresh()
        html = dash.health.value
        assert "padding:" in html and "var(--jp-" in html and "#000" not in html
    finally:
        gen2.close()


def _endless(rank: int):  # importable, so process mode works without cloudpickle too
    import time as _t

    import numpy as _np

    while True:
        _t.sleep(0.05)
        yield _np.zeros((8, 8, 8), _np.float32), _np.zeros((8, 8, 8), _np.uint8)


@pytest.mark.slow  # seconds (a server of its own, deadlines): `-m "not slow"` skips it
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


def test_thumbnails_show_each_samples_mid_slice() -> None:
    samples = [_small_sample(s) for s in (20, 21, 22)]
    v = SliceViewer(arrays=[{"image": i, "label": lab} for i, lab in samples])
    assert v._thumb_n == 0 and v._thumbs == b""  # made on demand only
    made_in: list[str] = []
    v.observe(lambda _: made_in.append(threading.current_thread().name), names=["_thumbs"])
    v.thumbnails = True
    wait_until(lambda: v._thumb_n == 3 and len(v._thumbs) == 3 * 64 * 64, 30, "the thumbnails")
    assert made_in and set(made_in) == {"wirehead-refresher"}, "thumbnails must be made off the message thread"
    tiles = np.frombuffer(v._thumbs, np.uint8).reshape(3, 64, 64)
    assert v._thumb_n == 3
    for k, (image, _) in enumerate(samples):
        expected = slicing.thumbnail(image[:, :, image.shape[2] // 2], 64)
        assert np.array_equal(tiles[k], expected) and tiles[k].std() > 10, k
    assert not np.array_equal(tiles[0], tiles[1])
    v.sample = 2  # what clicking the third tile syncs
    assert np.array_equal(v.volume, samples[2][0])


def test_follow_moves_the_viewer_to_each_new_read_generation(make_config: Any) -> None:
    cfg = make_config(SWAP_CAP=2)
    gen = WireheadGenerator(config=cfg, name="pusher")
    mgr = WireheadManager(config=cfg)
    try:
        mgr.step()
        for seed in (30, 31):
            gen.push(_small_sample(seed))
        assert mgr.step().swapped
        v = SliceViewer(config=cfg, timeout=10)
        v.follow_interval = 0.1
        v.thumbnails = True
        v.follow = True
        assert v.generation == 0
        newer = [_small_sample(32), _small_sample(33)]
        for s in newer:
            gen.push(s)
        assert mgr.step().swapped
        wait_until(lambda: v.generation == 1, 30, "the viewer to follow generation 1")
        wait_until(lambda: np.array_equal(np.frombuffer(v._thumbs, np.uint8).reshape(-1, 64, 64)[0],
                                          slicing.thumbnail(newer[0][0][:, :, 8], 64)), 30, "new thumbnails")
        assert np.array_equal(v.volume, newer[0][0])
        v.follow = False
        v.close()
    finally:
        gen.close()



def test_thumbnails_never_read_while_a_load_holds_the_sample_it_replaces(make_config: Any, monkeypatch: Any) -> None:
    """A thumbnail read that came mid-load (the new sample read, the shown one still shown) would make three
    decoded samples at once; it waits for the load, then at most KEEP_SAMPLES exist."""
    import weakref

    from helpers import memory_owner
    from wirehead.notebook import viewer as viewer_module

    cfg = make_config(SWAP_CAP=4)
    swap_in(cfg, [_small_sample(50 + i) for i in range(4)])
    v = SliceViewer(config=cfg, timeout=10)
    alive: list[weakref.ref] = []
    most = [0]
    real_fetch = v._source.fetch

    def fetch(sid: str) -> dict[str, np.ndarray]:
        most[0] = max(most[0], sum(r() is not None for r in alive) + 1)
        arrays = real_fetch(sid)
        alive.append(weakref.ref(memory_owner(arrays["image"])))  # views shown keep it alive
        return arrays

    v._source.fetch = fetch  # type: ignore[method-assign]
    v._source.clear()
    v._load()  # the shown sample, read through the counting fetch
    key = (v.generation, v.kind, 0, False)
    real_quantize = slicing.quantize
    background: list[threading.Thread] = []

    def quantize_mid_load(vol: np.ndarray) -> Any:  # the new sample is read, the old one still shown
        steps = v._thumb_steps(v._source.gen, key, 4)
        t = threading.Thread(target=lambda: list(steps), name="test-thumbnails")
        background.append(t)
        t.start()
        t.join(1.0)  # a thumbnail read that does not wait for this load reads now
        return real_quantize(vol)

    monkeypatch.setattr(viewer_module.slicing, "quantize", quantize_mid_load)
    v.sample = 1
    monkeypatch.setattr(viewer_module.slicing, "quantize", real_quantize)
    for t in background:
        t.join(30)
        assert not t.is_alive()
    assert len(v._thumb_cache) == 4
    assert most[0] <= viewer_module.KEEP_SAMPLES, f"{most[0]} decoded samples at once"
    v.close()


# -- SampleGrid --------------------------------------------------------------------------------
def test_the_grid_shows_samples_side_by_side_linked_and_canonical_whatever_their_storage() -> None:
    pytest.importorskip("nibabel")
    from wirehead.notebook import SampleGrid

    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    brains = [_small_sample(s, (20, 18, 16)) for s in (40, 41, 42, 43)]
    ras = SampleGrid(arrays=[{"image": i, "label": lab, "affine": affine} for i, lab in brains], label_names={1: "a"})
    mixed = SampleGrid(arrays=[_stored_as(i, lab, affine, codes)
                               for (i, lab), codes in zip(brains, ("RAS", "LIA", "LPS", "LIA"))])
    mixed.window = ras.window
    assert ras.shape == mixed.shape == [20, 18, 16] and ras._shown == [0, 1, 2, 3]
    assert len(ras._volumes) == 4 * 20 * 18 * 16
    for a, b in zip(ras.rendered, mixed.rendered):
        assert np.array_equal(a, b)
    before = ras.rendered
    ras.axial = 3  # one slice for all panels
    assert all(not np.array_equal(a, b) for a, b in zip(before, ras.rendered))
    ras.samples = [2, 3]
    assert ras._shown == [2, 3] and len(ras.rendered) == 2
    assert "<canvas" not in ras.to_html() and "wirehead-grid" in ras.to_html()  # drawn by grid.js, no canvas inline
    bad = SampleGrid(arrays=[{"image": np.zeros((4, 4, 4))}, {"image": np.zeros((5, 4, 4))}])
    assert "one shape" in bad.message


def test_the_grid_runs_the_generation_qc_off_the_message_thread(make_config: Any) -> None:
    from wirehead.brains import LABEL_TABLE
    from wirehead.notebook import SampleGrid

    cfg = make_config(SWAP_CAP=4)
    gen = WireheadGenerator(config=cfg, name="pusher")
    mgr = WireheadManager(config=cfg)
    try:
        mgr.step()
        for seed in (50, 51, 52, 53):
            gen.push(_small_sample(seed))
        assert mgr.step().swapped
    finally:
        gen.close()
    grid = SampleGrid(config=cfg, samples=3, label_table=LABEL_TABLE)
    try:
        assert grid.generation == 0 and grid._shown == [0, 1, 2] and grid.message == ""
        seen: list[str] = []
        grid.observe(lambda _: seen.append(threading.current_thread().name), names=["qc_html"])
        report = grid.run_qc(wait=True, timeout=60)
        assert report is not None and len(report.samples) == 4 and report.generation == 0
        assert "QC of generation 0" in grid.qc_html and set(seen) == {"wirehead-refresher"}
        assert grid._source.store.gen_doc(0).reads == 0
    finally:
        grid.close()
    assert "qc" not in __import__("wirehead.notebook.refresher", fromlist=["x"]).REFRESHER.tasks(grid)
