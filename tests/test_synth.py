"""Tests of wirehead.synth: the built-in SynthSeg-like generator and the self-checking samples.

Fast and server-free.  The timing test asserts best-of-5 < 0.2 s for a 64³ sample: the target is
well under 50 ms (about 12 ms measured on a 2-core machine), and the 4x margin keeps the test
stable on a loaded CI runner while still catching a pathological slow-down (a Python loop over
voxels, an accidental float64 or 3-D convolution would take seconds).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from wirehead.synth import (check_self_checking, make_self_checking, synth_generator, synth_image, synth_label,
                            synth_sample)

SHAPES = [(64, 64, 64), (48, 40, 32), (40, 56, 72), (64, 48), (33, 70)]


# --- determinism ------------------------------------------------------------------------------

def test_same_seed_same_sample() -> None:
    img_a, lab_a = synth_sample((32, 40, 24), seed=123)
    img_b, lab_b = synth_sample((32, 40, 24), seed=123)
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_array_equal(lab_a, lab_b)


def test_different_seeds_differ() -> None:
    img_a, lab_a = synth_sample((32, 40, 24), seed=1)
    img_b, lab_b = synth_sample((32, 40, 24), seed=2)
    assert not np.array_equal(lab_a, lab_b)
    assert not np.array_equal(img_a, img_b)


def test_label_and_image_functions_follow_the_rng() -> None:
    lab_a = synth_label((32, 32, 32), np.random.default_rng(5))
    lab_b = synth_label((32, 32, 32), np.random.default_rng(5))
    np.testing.assert_array_equal(lab_a, lab_b)
    np.testing.assert_array_equal(synth_image(lab_a, np.random.default_rng(9)),
                                  synth_image(lab_a, np.random.default_rng(9)))
    assert not np.array_equal(synth_image(lab_a, np.random.default_rng(9)),
                              synth_image(lab_a, np.random.default_rng(10)))


# --- dtypes, shapes, ranges -------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_dtypes_shapes_and_ranges(shape: tuple[int, ...]) -> None:
    for seed in range(3):
        image, label = synth_sample(shape, seed=seed)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.shape == shape and label.shape == shape
        assert image.min() >= 0.0 and image.max() < 1.0
        assert np.all(np.isfinite(image))
        assert label.max() <= 7
        assert image.max() > 0.9 and image.min() < 0.1  # really rescaled onto [0, 1)


@pytest.mark.parametrize("n_labels", [2, 3, 4, 5, 12])
def test_n_labels(n_labels: int) -> None:
    _, label = synth_sample((48, 48, 48), seed=3, n_labels=n_labels)
    assert set(np.unique(label).tolist()) == set(range(n_labels))


@pytest.mark.parametrize("bad", [dict(shape=(64,)), dict(shape=(8, 8, 8, 8)), dict(shape=(2, 64, 64)),
                                 dict(n_labels=1), dict(n_labels=257)])
def test_bad_arguments_are_named(bad: dict) -> None:
    kwargs = {"shape": (32, 32, 32), "seed": 0, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        synth_sample(**kwargs)


# --- plausibility of the label map --------------------------------------------------------------

@pytest.mark.parametrize("shape", [(64, 64, 64), (48, 40, 72), (96, 80)])
def test_every_tissue_covers_a_meaningful_fraction(shape: tuple[int, ...]) -> None:
    for seed in range(5):
        _, label = synth_sample(shape, seed=seed)
        frac = np.bincount(label.reshape(-1), minlength=8) / label.size
        assert len(frac) == 8
        assert 0.2 < frac[0] < 0.9, frac           # background present, head not vanishing
        assert np.all(frac[1:4] > 0.03), frac       # CSF-, grey- and white-matter-like shells
        assert np.all(frac[4:] > 2e-4), frac        # every deep structure present (> ~50 voxels at 64³)


@pytest.mark.parametrize("shape", [(64, 64, 64), (48, 40, 72), (96, 80)])
def test_tissues_are_nested(shape: tuple[int, ...]) -> None:
    for seed in range(5):
        _, label = synth_sample(shape, seed=seed)
        # The centre voxel is a deep structure, inside everything else.
        assert label[tuple(n // 2 for n in shape)] >= 4
        # Depth 0 background, 1 CSF, 2 grey, 3 white, 4 any deep structure: face neighbours differ
        # by at most one level, so every shell is closed and surrounds the ones inside it.
        depth = np.minimum(label, 4).astype(np.int8)
        for axis in range(label.ndim):
            step = np.abs(np.diff(depth, axis=axis))
            assert step.max() <= 1, f"seed {seed}: shells not nested along axis {axis}"
        # The volume's border is background.
        for axis in range(label.ndim):
            assert not np.take(label, [0, -1], axis=axis).any()


def test_shapes_differ_between_seeds() -> None:
    heads = [synth_sample((48, 48, 48), seed=s)[1] > 0 for s in range(4)]
    for a, b in itertools.combinations(heads, 2):
        assert (a != b).mean() > 0.005


# --- the image follows the labels ---------------------------------------------------------------

def test_image_intensity_depends_on_tissue() -> None:
    for seed in range(10):
        image, label = synth_sample((64, 64, 64), seed=seed)
        means = np.array([image[label == k].mean() for k in range(8)])
        for a, b in itertools.combinations(range(4), 2):
            assert abs(means[a] - means[b]) > 0.01, (seed, a, b, means)
        # Tissue explains most of the variance (contrast randomisation, not noise).
        explained = np.var(means[label]) / np.var(image)
        assert explained > 0.5, (seed, explained)


def test_contrast_is_randomised() -> None:
    orders = set()
    for seed in range(8):
        image, label = synth_sample((32, 32, 32), seed=seed)
        orders.add(tuple(np.argsort([image[label == k].mean() for k in range(4)])))
    assert len(orders) > 2


# --- the generator ----------------------------------------------------------------------------

def test_generator_yields_n_then_stops() -> None:
    samples = list(itertools.islice(synth_generator((24, 24, 24), seed=7, n=3), 10))  # islice: no hang if n is ignored
    assert len(samples) == 3
    for image, label in samples:
        assert image.dtype == np.float32 and label.dtype == np.uint8 and image.shape == (24, 24, 24)
    for (ia, _), (ib, _) in itertools.combinations(samples, 2):
        assert not np.array_equal(ia, ib)
    again = list(synth_generator((24, 24, 24), seed=7, n=3))
    for (ia, la), (ib, lb) in zip(samples, again):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    assert list(synth_generator((24, 24, 24), seed=7, n=0)) == []


def test_generator_is_endless_without_n() -> None:
    gen = synth_generator((16, 16), seed=0)
    assert len(list(itertools.islice(gen, 25))) == 25
    assert next(gen)[0].shape == (16, 16)


def test_generator_delay_slows_each_sample() -> None:
    start = time.perf_counter()
    assert len(list(synth_generator((16, 16), seed=0, n=2, delay=0.05))) == 2
    assert time.perf_counter() - start >= 0.1


@pytest.mark.parametrize("bad", [dict(n=-1), dict(delay=-0.5)])
def test_generator_rejects_bad_arguments(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        next(synth_generator((16, 16), seed=0, **bad))


# --- speed ------------------------------------------------------------------------------------

def test_64_cubed_sample_is_fast() -> None:
    """Target well under 50 ms; assert best of 5 < 0.2 s (see the module docstring)."""
    synth_sample((64, 64, 64), seed=0)  # warm-up
    best = float("inf")
    for seed in range(5):
        start = time.perf_counter()
        synth_sample((64, 64, 64), seed=seed)
        best = min(best, time.perf_counter() - start)
    assert best < 0.2, f"a 64³ sample took {best * 1000:.0f} ms (best of 5)"


# --- self-checking samples ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 4, 4), (64, 64, 64), (30, 20), (8, 8)])
@pytest.mark.parametrize("label_dtype", [np.uint8, np.int16])
@pytest.mark.parametrize("sample_id", [0, 1, 123456789, 2**64 - 1])
def test_self_checking_round_trip(shape: tuple[int, ...], label_dtype: type, sample_id: int) -> None:
    image, label = synth_sample(shape, seed=sample_id % 1000)
    label = label.astype(label_dtype)
    image0, label0 = image.copy(), label.copy()
    img, lab = make_self_checking(image, label, sample_id)
    assert check_self_checking(img, lab) == sample_id
    # Inputs untouched; outputs keep dtype, shape and range, and differ only in the header voxels.
    np.testing.assert_array_equal(image, image0)
    np.testing.assert_array_equal(label, label0)
    assert img.dtype == np.float32 and lab.dtype == label_dtype
    assert img.shape == shape and lab.shape == shape
    assert img.min() >= 0.0 and img.max() < 1.0
    np.testing.assert_array_equal(img.reshape(-1)[16:], image0.reshape(-1)[16:])
    np.testing.assert_array_equal(lab.reshape(-1)[32:], label0.reshape(-1)[32:])


def _stamped(seed: int, sample_id: int, shape: tuple[int, ...] = (32, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    return make_self_checking(*synth_sample(shape, seed=seed), sample_id)


def test_self_checking_detects_swapped_labels() -> None:
    img_a, lab_a = _stamped(1, 101)
    img_b, lab_b = _stamped(2, 102)
    with pytest.raises(AssertionError, match="mixed"):
        check_self_checking(img_a, lab_b)
    with pytest.raises(AssertionError, match="mixed"):
        check_self_checking(img_b, lab_a)


def test_self_checking_detects_swap_between_samples_with_the_same_id() -> None:
    img_a, lab_a = _stamped(1, 7)
    img_b, lab_b = _stamped(2, 7)
    with pytest.raises(AssertionError, match="digest"):
        check_self_checking(img_a, lab_b)


def test_self_checking_detects_zeroed_image_chunk() -> None:
    img, lab = _stamped(3, 5)
    flat = img.reshape(-1)
    flat[flat.size // 2: flat.size // 2 + 4096] = 0.0  # a chunk written as zeros, past the header
    with pytest.raises(AssertionError, match="image does not match"):
        check_self_checking(img, lab)


def test_self_checking_detects_zeroed_label_chunk() -> None:
    img, lab = _stamped(3, 5)
    lab[16] = 0  # the central slab: head tissues, so zeroing it changes the label
    with pytest.raises(AssertionError, match="label does not match"):
        check_self_checking(img, lab)


def test_self_checking_detects_one_changed_voxel() -> None:
    img, lab = _stamped(3, 5)
    img.reshape(-1)[-1] = np.nextafter(img.reshape(-1)[-1], np.float32(1.0))
    with pytest.raises(AssertionError):
        check_self_checking(img, lab)


@pytest.mark.parametrize("which", ["image", "label"])
def test_self_checking_detects_truncated_arrays(which: str) -> None:
    img, lab = _stamped(4, 9)
    if which == "image":
        img = img.reshape(-1)[:-1]
    else:
        lab = lab.reshape(-1)[: lab.size // 2]
    with pytest.raises(AssertionError):
        check_self_checking(img, lab)
    with pytest.raises(AssertionError):
        check_self_checking(img.reshape(-1)[:10], lab)  # shorter than the header


def test_self_checking_detects_unstamped_and_zeroed_headers() -> None:
    image, label = synth_sample((32, 32, 32), seed=6)
    with pytest.raises(AssertionError):
        check_self_checking(image, label)
    img, lab = make_self_checking(image, label, 11)
    lab.reshape(-1)[:32] = 0
    with pytest.raises(AssertionError):
        check_self_checking(img, lab)


def test_self_checking_survives_byte_order_and_layout() -> None:
    img, lab = _stamped(8, 77)
    assert check_self_checking(img.astype(">f4"), np.asfortranarray(lab)) == 77


def test_make_self_checking_rejects_bad_input() -> None:
    image, label = synth_sample((8, 8), seed=0)
    with pytest.raises(ValueError, match="sample_id"):
        make_self_checking(image, label, -1)
    with pytest.raises(ValueError, match="sample_id"):
        make_self_checking(image, label, 2**64)
    with pytest.raises(ValueError, match="voxels"):
        make_self_checking(image.reshape(-1)[:8], label, 1)
    with pytest.raises(TypeError, match="image"):
        make_self_checking(label, label, 1)
    with pytest.raises(TypeError, match="label"):
        make_self_checking(image, image, 1)
