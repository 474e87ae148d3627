"""examples/train_on_synthetic_brains.py (and notebook 04, which imports it): Dice, the k-means baseline, the real
T1 and its labels on the training grid, the network, and one short run of the script on the test server."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import ROOT, child_env, drop_database

pytest.importorskip("nilearn")
pytest.importorskip("torchio")

sys.path.insert(0, str(ROOT / "examples"))
import train_on_synthetic_brains as ex  # noqa: E402

sys.path.remove(str(ROOT / "examples"))


def test_dice_per_tissue_scores_each_tissue() -> None:
    truth = np.array([0, 1, 1, 2, 2, 2, 3, 3])
    assert ex.dice_per_tissue(truth, truth) == {"CSF": 1.0, "grey matter": 1.0, "white matter": 1.0}
    pred = np.array([0, 1, 2, 2, 2, 3, 3, 0])
    # CSF: 1 shared, 1 + 2 voxels; grey: 2 shared, 3 + 3; white: 1 shared, 2 + 2
    assert ex.dice_per_tissue(pred, truth) == pytest.approx({"CSF": 2 / 3, "grey matter": 4 / 6, "white matter": 2 / 4})
    assert ex.dice_per_tissue(np.zeros(8, int), truth)["grey matter"] == 0.0
    assert ex.dice_per_tissue(np.zeros(8, int), np.zeros(8, int))["CSF"] == 1.0   # absent from both: perfect


def test_kmeans_baseline_labels_classes_from_dark_to_bright() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (12, 10, 8)).astype(np.uint8)
    means = np.array([0.0, 0.25, 0.55, 0.85])
    image = (means[truth] + rng.normal(0, 0.02, truth.shape)).clip(0, 1)
    assert np.array_equal(ex.kmeans_baseline(image), truth)


def test_network_segments_a_volume_and_its_loss_has_a_gradient() -> None:
    torch.manual_seed(0)
    model = ex.SmallUNet()
    shape = (8, 12, 4)   # any multiple of 4 (the grid's 44x56x48 is slower for a fast test)
    image = np.random.default_rng(1).random(shape, dtype=np.float32)
    pred = ex.segment(model, image)
    assert pred.shape == shape and pred.dtype == np.uint8 and pred.max() < ex.N_LABELS
    assert model.training   # segment() restores the mode it found
    logits = model(torch.from_numpy(image)[None, None])
    loss = ex.loss_fn(logits, torch.from_numpy(pred.astype(np.int64))[None])
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


def test_the_loss_weighs_a_missed_csf_voxel_above_a_missed_white_matter_voxel() -> None:
    """CSF, ~1 % of the voxels, gets a larger cross-entropy weight: with equal weights the network stopped
    predicting it early in training and never recovered."""
    logits = torch.zeros(1, ex.N_LABELS, 4, 4, 4)
    logits[:, 2] = 4.0   # grey matter everywhere, confidently
    missed = {}
    for tissue in (1, 3):   # one voxel of CSF, or of white matter, in grey matter: the same Dice penalty either way
        label = torch.full((1, 4, 4, 4), 2, dtype=torch.long)
        label[0, 1, 1, 1] = tissue
        missed[tissue] = float(ex.loss_fn(logits, label))
    assert ex.CLASS_WEIGHTS[1] > ex.CLASS_WEIGHTS[3]
    assert missed[1] > missed[3] + 0.1, missed
    assert float(ex.loss_fn(logits, label, class_weights=None)) == pytest.approx(missed[3])


def test_steps_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WIREHEAD_EXAMPLE_STEPS", raising=False)
    assert ex.steps_from_env() == ex.DEFAULT_STEPS
    monkeypatch.setenv("WIREHEAD_EXAMPLE_STEPS", "7")
    assert ex.steps_from_env() == 7
    monkeypatch.setenv("WIREHEAD_EXAMPLE_STEPS", "0")
    with pytest.raises(ValueError, match="WIREHEAD_EXAMPLE_STEPS"):
        ex.steps_from_env()


@pytest.mark.slow   # makes two brains on the training grid
def test_the_generators_rest_before_each_brain(monkeypatch: pytest.MonkeyPatch) -> None:
    """A paced generator: on 2 cores a generator at full speed only takes CPU from the trainer, which reuses the
    read generation until the next one is full."""
    import types

    from wirehead import brains

    rests: list[float] = []
    monkeypatch.setattr(brains, "time", types.SimpleNamespace(sleep=rests.append))
    threads = torch.get_num_threads()
    try:
        gen = ex.brains(0)   # sets this thread's torch threads to 1, as in a generator
        image, label, affine = next(gen)
        next(gen)
    finally:
        torch.set_num_threads(threads)
    assert image.shape == label.shape == ex.SHAPE and affine.shape == (4, 4)
    assert ex.GENERATOR_DELAY > 0 and rests == [ex.GENERATOR_DELAY] * 2


def test_the_trainer_takes_the_cores_its_generator_processes_leave() -> None:
    threads = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        torch.set_num_threads(1)   # what a generator thread's brains() can leave to the trainer's thread
        assert ex.trainer_threads() == torch.get_num_threads() == cores
        assert ex.trainer_threads(cores - 1) == torch.get_num_threads() == 1
        assert ex.trainer_threads(cores + 3) == 1   # never fewer than one
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow   # loads the 1 mm template (a few seconds)
def test_the_real_t1_and_its_labels_lie_on_the_training_grid() -> None:
    from wirehead.brains import brain_sample

    image, label, affine = brain_sample(ex.SHAPE, ex.MM, seed=0)
    t1, truth = ex.real_t1(affine), ex.template_labels(affine)
    assert t1.shape == truth.shape == image.shape and t1.dtype == np.float32
    assert t1.min() == 0.0 and t1.max() == pytest.approx(1.0)
    assert set(np.unique(truth)) == {0, 1, 2, 3}
    # the same grid: the brain of the real T1 is where the template's labels are, and a T1's contrast holds
    inside = truth > 0
    assert t1[inside].mean() > 5 * t1[~inside].mean()
    assert t1[truth == 3].mean() > t1[truth == 2].mean() > t1[truth == 1].mean()
    # the synthetic sample is a deformation of the same labels (not identical; mostly overlapping)
    assert 0.3 < ex.dice_per_tissue(label, truth)["white matter"] < 1.0


@pytest.mark.slow   # a manager, a generator process and a few training steps
def test_the_script_trains_a_few_steps_and_reports_its_numbers(mongo_uri: str) -> None:
    drop_database(mongo_uri, "wirehead_synthetic_brains")
    try:
        r = subprocess.run([sys.executable, str(ROOT / "examples" / "train_on_synthetic_brains.py"),
                            "--eval-every", "1"], cwd=ROOT, capture_output=True, text=True, timeout=400,
                           env=child_env(mongo_uri, WIREHEAD_EXAMPLE_STEPS="3"))
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert [ln.split()[1] for ln in lines if ln.startswith("step ")] == ["0", "1", "2", "3"]
        assert any(ln.startswith("steps 3 in ") and "reads per sample" in ln for ln in lines), r.stdout
        assert any(ln.startswith("trainer wait fraction ") for ln in lines), r.stdout
        rows = {ln.split("  ")[0] for ln in lines if ln.startswith(("untrained", "k-means", "trained ("))}
        assert rows == {"untrained network", "k-means on intensity", "trained (3 steps)"}, r.stdout
        import pymongo

        client = pymongo.MongoClient(mongo_uri, serverSelectionTimeoutMS=10_000)
        try:
            assert "wirehead_synthetic_brains" not in client.list_database_names()   # stop(drop=True)
        finally:
            client.close()
    finally:
        drop_database(mongo_uri, "wirehead_synthetic_brains")
