"""wirehead.brains: SynthSeg-style samples on the MNI152 anatomy (small, 4 mm, to keep CI fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nilearn")
pytest.importorskip("torchio")

from wirehead import brains  # noqa: E402
from wirehead.cli.demo import BRAIN_LABELS, save_slice_preview  # noqa: E402

SHAPE = (44, 56, 48)   # 176 x 224 x 192 mm at 4 mm: the whole brain
MM = 4.0


@pytest.fixture(scope="module")
def two() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return list(brains.brain_generator(SHAPE, MM, seed=3, n=2))


def test_shape_dtypes_labels_and_affine(two: list) -> None:
    for image, label, affine in two:
        assert image.shape == SHAPE and label.shape == SHAPE
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.05
        assert set(np.unique(label).tolist()) == set(brains.LABELS)   # every documented label, nothing else
        assert affine.shape == (4, 4) and affine.dtype == np.float64
        assert np.allclose(np.abs(np.diag(affine)[:3]), MM, rtol=0.05)
    assert brains.LABELS == BRAIN_LABELS


def test_same_seed_repeats_two_seeds_differ(two: list) -> None:
    again = next(brains.brain_generator(SHAPE, MM, seed=3, n=1))
    assert np.array_equal(again[0], two[0][0]) and np.array_equal(again[1], two[0][1])
    other = next(brains.brain_generator(SHAPE, MM, seed=4, n=1))
    assert not np.array_equal(other[0], two[0][0])
    assert not np.array_equal(two[0][1], two[1][1]), "samples of one generator differ"


def test_affine_places_the_centre_of_the_grid_near_mni_origin(two: list) -> None:
    _, label, affine = two[0]
    centre = affine @ np.array([(s - 1) / 2 for s in SHAPE] + [1.0])
    assert np.all(np.abs(centre[:3]) < 30), centre   # the MNI brain is centred near (0, -18, 18) mm


def test_padding_and_cropping_to_the_requested_shape() -> None:
    big = (64, 64, 64)
    image, label, affine = next(brains.brain_generator(big, MM, seed=0, n=1))
    assert image.shape == big and label[0].max() == 0 and label[:, :, -1].max() == 0   # padded: empty borders
    small = (24, 24, 24)
    image, label, _ = next(brains.brain_generator(small, MM, seed=0, n=1))
    assert image.shape == small and (label > 0).mean() > 0.5   # cropped into the brain


def test_white_matter_lies_inside_grey_matter_along_a_line_through_the_centre() -> None:
    label, _ = brains.anatomy(MM)
    cx, cy, cz = (s // 2 for s in label.shape)
    # left-right through the centre, and front-back 24 mm lateral (the midline is the interhemispheric fissure)
    for line in (label[:, cy, cz + 3], label[cx + 6, :, cz + 3]):
        wm = np.flatnonzero(line == 3)
        gm = np.flatnonzero(line == 2)
        brain = np.flatnonzero(line > 0)
        assert len(wm) and len(gm)
        assert brain.min() < gm.min() + 2 and gm.min() < wm.min() and wm.max() < gm.max()
        assert line[0] == 0 and line[-1] == 0


def test_anatomy_is_cached_under_the_wirehead_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WIREHEAD_HOME", str(tmp_path))
    label, affine = brains.anatomy(8.0)
    files = list((tmp_path / "brains").glob("*.npz"))
    assert len(files) == 1
    again, aff2 = brains.anatomy(8.0)
    assert np.array_equal(again, label) and np.array_equal(aff2, affine)


def test_cuda_is_refused_clearly_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():
        image, label, _ = next(brains.brain_generator(SHAPE, MM, device="cuda", seed=0, n=1))
        assert image.shape == SHAPE and label.dtype == np.uint8
    else:
        with pytest.raises(ValueError, match="CUDA"):
            brains.brain_generator(SHAPE, MM, device="cuda")


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="shape"):
        brains.brain_generator((4, 4), MM)
    with pytest.raises(ValueError, match="resolution_mm"):
        brains.anatomy(0.1)
    with pytest.raises(ValueError, match="backend"):
        brains.brain_generator(SHAPE, MM, backend="nope")
    with pytest.raises(ValueError, match="t1_fraction"):
        brains.brain_generator(SHAPE, MM, t1_fraction=1.5)


def _in_t1_order(image: np.ndarray, label: np.ndarray) -> bool:
    means = [image[label == k].mean() for k in brains.T1_ORDER]
    return bool(np.all(np.diff(means) > 0))


def test_t1_fraction_sorts_the_tissue_means_of_that_share_of_samples() -> None:
    """t1_fraction=1: the tissues of every sample are ordered like a T1 (background < CSF < grey < white);
    the default uniform prior gives that order to about one sample in 24."""
    t1_like = [_in_t1_order(image, label) for image, label, _ in
               brains.brain_generator(SHAPE, MM, seed=5, n=6, t1_fraction=1.0)]
    uniform = [_in_t1_order(image, label) for image, label, _ in brains.brain_generator(SHAPE, MM, seed=5, n=6)]
    assert sum(t1_like) >= 5 and sum(uniform) <= 2, (t1_like, uniform)


def test_image_contrast_follows_the_labels() -> None:
    """The label explains most of the image's variance inside the brain (GMM per tissue)."""
    ratios = []
    for image, label, _ in brains.brain_generator(SHAPE, MM, seed=11, n=3):
        inside = label > 0
        x, lab = image[inside], label[inside]
        means = np.array([x[lab == k].mean() for k in (1, 2, 3)])
        explained = sum(((lab == k).sum() * (means[k - 1] - x.mean()) ** 2) for k in (1, 2, 3))
        ratios.append(explained / (x.var() * x.size))
    assert np.median(ratios) > 0.5, ratios


def test_demo_preview_shows_a_brain(two: list, tmp_path: Path) -> None:
    """The demo's PNG: the label overlay covers one brain-shaped region in the middle of each panel."""
    import matplotlib.image as mpimg
    from scipy import ndimage

    image, label, affine = two[0]
    png = save_slice_preview(image, label, tmp_path / "p.png", affine=affine, legend=BRAIN_LABELS, title="t")
    rgb = mpimg.imread(png)[..., :3]
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.08   # the overlay is coloured, the MRI is grey
    h, w = coloured.shape
    body = coloured[int(0.12 * h):int(0.85 * h)]
    for i in range(3):
        panel = body[:, i * w // 3:(i + 1) * w // 3]
        blobs, n = ndimage.label(ndimage.binary_closing(panel, iterations=2))
        sizes = np.bincount(blobs.ravel())[1:]
        assert n >= 1
        main = blobs == (np.argmax(sizes) + 1)
        assert sizes.max() > 0.9 * sizes.sum(), "one connected brain"
        ys, xs = np.nonzero(main)
        fill = main.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
        assert 0.45 < fill < 0.95, f"panel {i}: a rounded shape fills its box partly ({fill:.2f})"
        assert 0.03 < main.mean() < 0.6, f"panel {i}: the brain covers part of the panel"
        cy, cx = ys.mean() / panel.shape[0], xs.mean() / panel.shape[1]
        assert 0.25 < cy < 0.75 and 0.25 < cx < 0.75, f"panel {i}: brain off centre ({cy:.2f}, {cx:.2f})"
