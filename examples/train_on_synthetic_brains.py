#!/usr/bin/env python
"""Train on streaming synthetic brains, segment a real MRI: what wirehead is for, on a CPU, in minutes.

A :class:`~wirehead.WireheadController` starts a manager and generator processes that make SynthSeg-style
brains (:mod:`wirehead.brains`: random deformations of the MNI152 label map, a random contrast per tissue,
bias, blur, noise) on a coarse grid; a small 3-D U-Net (plain torch) trains on them through a ``DataLoader``
across swaps, and every few steps segments a *real* T1 it never trained on (the MNI152 T1 that nilearn ships,
on the same grid) and scores it with Dice against the tissue labels wirehead derives from the same template.
Two baselines are scored the same way: the untrained network and a 4-class k-means on the T1's intensities.

What the test shows: a network that saw only synthetic contrasts segments a real T1 contrast.  What it does
not show: generalisation to other anatomy (the synthetic label maps are deformations of this very template).

    python examples/train_on_synthetic_brains.py                 # 500 steps (5.6 min on an idle 2-core machine)
    python examples/train_on_synthetic_brains.py --steps 20      # a quick look

``notebooks/04_train_on_synthetic_brains.ipynb`` imports the pieces below and shows the same run live.
Needs the ``brains`` extra (nilearn, nibabel, TorchIO).  Set ``WIREHEAD_MONGO_URI`` to use your own server.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The training grid: the whole brain at 4 mm (the template is 197x233x189 at 1 mm).
SHAPE, MM = (44, 56, 48), 4.0
#: The tissues scored (label values of :data:`wirehead.brains.LABELS`; 0 is background).
TISSUES = {1: "CSF", 2: "grey matter", 3: "white matter"}
N_LABELS = 4
#: nilearn's copy of the MNI152 2009 T1 template (inside its wheel: nothing is downloaded).
T1_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
#: Steps of a full run; ``WIREHEAD_EXAMPLE_STEPS`` overrides it (the tests run a few).
DEFAULT_STEPS = 500
#: Samples per training step.  Two brains cost ~1.2 steps of one (measured) and halve the gradient noise;
#: four fit 2 cores as well but not Binder's 1 GB (~200 MB more activations than two).
BATCH_SIZE = 2
#: The share of synthetic brains whose random tissue intensities are sorted into a T1's order (background < CSF
#: < grey < white matter; ``wirehead.brains.brain_generator(t1_fraction=...)``): all of them, the prior that the
#: k-means baseline assumes too (its classes are ordered by intensity).  SynthSeg's uniform prior gives that order
#: to one draw in 24; measured offline (300 steps on a pool of 200 brains, CSF weight 5), CSF / grey / white matter
#: Dice on the real T1: 0.60 / 0.89 / 0.87 with every brain sorted, 0.38 / 0.85 / 0.78 with three in four.
T1_FRACTION = 1.0
#: Adam's peak learning rate, reached after the first :data:`WARMUP` share of the steps (one cycle: cosine up,
#: then cosine down to ~0).  Measured offline (300 steps on a pool of 200 brains, grey / white matter Dice at 250
#: steps): 0.87 / 0.83 against 0.84 / 0.79 for a cosine from 3e-3 and 0.83 / 0.77 for one from 6e-3.
LEARNING_RATE, WARMUP = 6e-3, 0.1
#: Cross-entropy weights of background, CSF, grey and white matter (:func:`loss_fn`).  CSF is ~0.8 % of the voxels
#: at 4 mm (the ventricles): with equal weights the network stopped predicting it within the first 50 steps, on the
#: synthetic brains as on the real T1, and never recovered (the soft Dice's pull vanishes once CSF's softmax is ~0;
#: measured offline, 300 steps on a pool of 200 brains: no CSF voxel predicted from step 50 on, with weight 3 too;
#: with 5, CSF appears after 150-250 steps; 10 over-predicts it on the real T1 at grey matter's expense).
CLASS_WEIGHTS = (1.0, 5.0, 1.0, 1.0)
#: glibc's mmap threshold for the trainer and the generators (:func:`fix_mmap_threshold`): 32 MiB, glibc's
#: largest, so the heap holds a step's activations (the largest: 24 channels x 2 x 44x56x48 float32, 23 MB).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Seconds a generator rests before each brain.  A brain costs ~0.2 CPU s here and the trainer reuses the read
#: generation until the next one is full, so a generator at full speed only takes CPU from the trainer on a
#: 2-core machine (measured: 1.05 s a notebook step with the generator thread at full speed, 0.64 s with it
#: stopped); resting 1 s makes one brain a ~1.2 s (a new generation of 4 every ~5 s) for ~1/6 of a core.
GENERATOR_DELAY = 1.0


def steps_from_env(default: int = DEFAULT_STEPS) -> int:
    """The number of training steps: ``$WIREHEAD_EXAMPLE_STEPS`` when set, else ``default``."""
    value = os.environ.get("WIREHEAD_EXAMPLE_STEPS", "")
    steps = int(value) if value.strip() else default
    if steps < 1:
        raise ValueError(f"WIREHEAD_EXAMPLE_STEPS should be a positive integer, but got {value!r}")
    return steps


def fix_mmap_threshold(nbytes: int = MMAP_THRESHOLD) -> None:
    """Fix glibc's mmap threshold at ``nbytes`` (no-op elsewhere), so a training step's memory stays bounded.

    glibc serves blocks over its mmap threshold from their own mappings, but raises that threshold as large
    blocks are freed, so the activations of every training step then come from a heap that grows (measured
    here: a trainer grew by 330 MB in four steps).  Fixed at 128 KiB, every activation is mapped and faulted in
    anew at every step (~190,000 page faults a step here, 0.9 against 0.7 CPU s offline); fixed at
    :data:`MMAP_THRESHOLD` the heap keeps one step's activations and reuses them (~40,000 faults a step) and
    stays flat (measured over 40 steps).  Binder gives 1-2 GB: the notebook's kernel peaks at ~0.95 GB with it
    (the notebook's test holds it under 1 GiB).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, int(nbytes))


def trainer_threads(busy_cores: int = 0) -> int:
    """Give this thread's torch operations the cores that ``busy_cores`` (generator processes) leave; returns that.

    Call it in the trainer's thread once the generators make samples (after ``ctl.dataset()`` returns): a generator
    *thread* sets torch to 1 thread (:func:`brains`), and torch can take that for the whole process (seen here:
    the notebook's kernel then trained on one core of two, ~1.0 CPU s a second on an idle machine).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)  # macOS: none
    threads = max(1, cores - busy_cores)
    torch.set_num_threads(threads)
    return threads


# -- the generators' factory --------------------------------------------------------------------------------------
def brains(rank: int) -> Iterator[tuple[np.ndarray, ...]]:
    """SynthSeg-style ``(image, label, affine)`` samples on the training grid, seeded by ``rank``.

    One torch thread per generator, resting :data:`GENERATOR_DELAY` s before each brain, so a generator and the
    trainer share two cores without oversubscribing them.
    """
    from wirehead.brains import brain_generator

    fix_mmap_threshold()
    torch.set_num_threads(1)
    return brain_generator(SHAPE, MM, seed=2024, rank=rank, t1_fraction=T1_FRACTION, delay=GENERATOR_DELAY)


# -- the network --------------------------------------------------------------------------------------------------
def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.1, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1), nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.1, inplace=True),
    )


class SmallUNet(nn.Module):
    """A three-level 3-D U-Net (~90 k parameters at ``width=8``): ``(B, 1, X, Y, Z)`` -> ``(B, n_labels, X, Y, Z)``
    logits; X, Y and Z must be multiples of 4."""

    def __init__(self, width: int = 8, n_labels: int = N_LABELS) -> None:
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(1, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.dec2, self.dec1 = _block(6 * w, 2 * w), _block(3 * w, w)
        self.out = nn.Conv3d(w, n_labels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.enc1(x)
        b = self.enc2(F.max_pool3d(a, 2))
        c = self.enc3(F.max_pool3d(b, 2))
        b = self.dec2(torch.cat([F.interpolate(c, scale_factor=2.0, mode="trilinear"), b], 1))
        a = self.dec1(torch.cat([F.interpolate(b, scale_factor=2.0, mode="trilinear"), a], 1))
        return self.out(a)


def loss_fn(logits: torch.Tensor, label: torch.Tensor,
            class_weights: Optional[tuple[float, ...]] = CLASS_WEIGHTS) -> torch.Tensor:
    """Cross-entropy weighted per label (:data:`CLASS_WEIGHTS`; ``None``: equal) plus soft Dice over the tissues."""
    weight = None if class_weights is None else torch.tensor(class_weights, dtype=logits.dtype, device=logits.device)
    ce = F.cross_entropy(logits, label, weight=weight)
    prob = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(label, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].to(prob.dtype)
    inter = (prob * onehot).sum((0, 2, 3, 4))
    soft_dice = (2 * inter + 1) / (prob.sum((0, 2, 3, 4)) + onehot.sum((0, 2, 3, 4)) + 1)
    return ce + (1 - soft_dice.mean())


@torch.no_grad()
def segment(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """The network's label map (uint8) of one 3-D image."""
    was_training = model.training
    model.eval()
    try:
        logits = model(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None])
    finally:
        model.train(was_training)
    return logits[0].argmax(0).to(torch.uint8).numpy()


# -- the real scan and its labels -----------------------------------------------------------------------------------
def _voxel_mm(affine: np.ndarray) -> float:
    return float(np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0)).mean())


def _template_t1() -> tuple[np.ndarray, np.ndarray]:
    """nilearn's MNI152 2009 T1 (1 mm) and its affine, read with nibabel (importing nilearn costs ~130 MB)."""
    import importlib.util

    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the real T1 is nilearn's MNI152 template: pip install 'wirehead[brains]'")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / T1_FILE
    if not path.exists():   # another nilearn layout: ask nilearn
        from nilearn.datasets import MNI152_FILE_PATH as path   # type: ignore[no-redef]
    img = nib.load(str(path))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def _onto_grid(volume: np.ndarray, volume_affine: np.ndarray, affine: np.ndarray,
               shape: tuple[int, int, int]) -> np.ndarray:
    """``volume`` (on the grid ``volume_affine``) cropped or padded with 0 onto the grid ``(affine, shape)``,
    which must be the same grid shifted by whole voxels (as the brain generator's grids are)."""
    to_volume = np.linalg.solve(volume_affine, affine)    # grid voxel -> volume voxel
    offset = np.rint(to_volume[:3, 3]).astype(int)
    if not (np.allclose(to_volume[:3, :3], np.eye(3), atol=1e-4) and np.allclose(to_volume[:3, 3], offset, atol=1e-3)):
        raise ValueError("the samples' grid is not the template's grid at their voxel size shifted by whole voxels")
    out = np.zeros(shape, dtype=volume.dtype)
    src, dst = [], []
    for off, n, m in zip(offset, volume.shape, shape):
        lo, hi = max(off, 0), min(off + m, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - off, hi - off))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def template_labels(affine: np.ndarray, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """The tissue labels wirehead derives from the template (:func:`wirehead.brains.anatomy`) on the samples'
    grid ``(affine, shape)``: the label map the synthetic brains are deformed from."""
    from wirehead.brains import anatomy

    label, label_affine = anatomy(_voxel_mm(affine))
    return _onto_grid(label, label_affine, affine, shape)


def real_t1(affine: np.ndarray, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    """nilearn's MNI152 T1 on the samples' grid ``(affine, shape)``, in [0, 1] like the synthetic images.

    It is averaged over each coarse voxel exactly as :func:`wirehead.brains.anatomy` averages the tissue maps into
    the labels (so image and labels share their grid), then cropped or padded like the samples."""
    from wirehead.brains import anatomy

    label, label_affine = anatomy(_voxel_mm(affine))
    t1, _ = _template_t1()
    coarse = F.interpolate(torch.from_numpy(t1)[None, None], size=label.shape, mode="area")[0, 0].numpy()
    data = _onto_grid(coarse, label_affine, affine, shape)
    lo, hi = float(data.min()), float(data.max())
    return (data - lo) / max(hi - lo, 1e-6)


def dice_per_tissue(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice of each tissue of :data:`TISSUES` (1.0 when neither map has it)."""
    out = {}
    for value, name in TISSUES.items():
        p, t = pred == value, truth == value
        total = int(p.sum() + t.sum())
        out[name] = 1.0 if total == 0 else 2.0 * float((p & t).sum()) / total
    return out


def kmeans_baseline(image: np.ndarray, iterations: int = 100) -> np.ndarray:
    """An intensity-only baseline: 4-class k-means on the voxel values, classes ordered by mean intensity
    (background < CSF < grey < white matter, the order of a T1's contrast)."""
    v = image.ravel().astype(np.float64)
    inside = v[v > 0.02 * v.max()]
    centres = np.concatenate([[0.0], np.percentile(inside, [10, 50, 90])])
    for _ in range(iterations):
        assign = np.abs(v[:, None] - centres[None]).argmin(1)
        new = np.array([v[assign == k].mean() if (assign == k).any() else centres[k] for k in range(4)])
        new = np.sort(new)   # class k stays the k-th darkest
        if np.allclose(new, centres):
            break
        centres = new
    assign = np.abs(v[:, None] - centres[None]).argmin(1)
    return assign.astype(np.uint8).reshape(image.shape)


# -- training -------------------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """The real T1's Dice per tissue at one step, and the trainer's wait fraction up to it."""

    step: int
    dice: dict[str, float]
    wait_fraction: float
    seconds: float
    """Seconds since training started."""


@dataclass
class Run:
    """What one training run did: its steps, samples read, time waiting for data, and its evaluations."""

    steps: int = 0
    samples_read: int = 0
    wait_seconds: float = 0.0
    step_seconds: float = 0.0
    generations: set[int] = field(default_factory=set)
    evaluations: list[Evaluation] = field(default_factory=list)

    @property
    def wait_fraction(self) -> float:
        """Time waiting for the next batch / time of all steps (waiting included)."""
        return self.wait_seconds / self.step_seconds if self.step_seconds else 0.0


def train(ds: Any, model: nn.Module, steps: int, *, t1: np.ndarray, truth: np.ndarray, eval_every: int = 10,
          batch_size: int = BATCH_SIZE, lr: float = LEARNING_RATE,
          on_eval: Optional[Callable[[Run], None]] = None) -> Run:
    """Train ``model`` for ``steps`` steps on the cache of ``ds`` (``ctl.dataset()``), segmenting ``t1`` before the
    first step and every ``eval_every`` steps (``on_eval(run)`` after each).  Adam with a one-cycle schedule:
    the learning rate rises to ``lr`` over the first tenth of the ``steps``, then decays to ~0 (cosine).

    The ``DataLoader`` reads the read generation; each pass over it is one epoch, and the next epoch reads
    whatever generation is current then (the generators keep filling the next one).  The wait is the time
    ``next(batch)`` took: what the trainer spent waiting for data.
    """
    from torch.utils.data import DataLoader

    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    # a short warm-up lets the peak rate be twice the cosine's 3e-3 without diverging; the decay to ~0 lets the
    # last steps settle instead of jumping around
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=WARMUP)
    run = Run()
    model.train()
    t_start = time.monotonic()

    def evaluate() -> None:
        run.evaluations.append(Evaluation(run.steps, dice_per_tissue(segment(model, t1), truth), run.wait_fraction,
                                          time.monotonic() - t_start))
        if on_eval is not None:
            on_eval(run)

    evaluate()   # the untrained network
    while run.steps < steps:
        batches = iter(loader)
        while run.steps < steps:
            t0 = time.monotonic()
            batch = next(batches, None)
            waited = time.monotonic() - t0
            if batch is None:
                break   # end of this generation's epoch: the next one reads the newest generation
            run.generations.add(ds.generation)
            logits = model(batch["image"].float()[:, None])
            loss = loss_fn(logits, batch["label"].long())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            run.steps += 1
            run.samples_read += len(batch["image"])
            run.wait_seconds += waited
            run.step_seconds += time.monotonic() - t0
            if run.steps % eval_every == 0 or run.steps == steps:
                evaluate()
    return run


def samples_generated(ctl: Any) -> int:
    """Samples the controller's generators committed so far."""
    return sum(g.produced for g in ctl.snapshot().generators)


def summary(run: Run, generated: int, baselines: dict[str, dict[str, float]]) -> str:
    """This run's numbers as text: steps, samples, reads per sample, wait fraction, Dice against the baselines."""
    last = run.evaluations[-1]
    lines = [f"steps {run.steps} in {last.seconds:.0f} s, {run.samples_read} samples read, {generated} generated "
             f"({run.samples_read / max(generated, 1):.1f} reads per sample), {len(run.generations)} generations",
             f"trainer wait fraction {run.wait_fraction:.3f} ({run.wait_seconds:.1f} s of {run.step_seconds:.0f} s)",
             f"{'Dice on the real T1':<24}" + "".join(f"{name:>14}" for name in TISSUES.values())]
    rows = {**baselines, f"trained ({run.steps} steps)": last.dice}
    for what, dice in rows.items():
        lines.append(f"{what:<24}" + "".join(f"{dice[name]:>14.3f}" for name in TISSUES.values()))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help=f"training steps (default {DEFAULT_STEPS}, "
                        "or $WIREHEAD_EXAMPLE_STEPS)")
    parser.add_argument("--eval-every", type=int, default=25, help="segment the real T1 every N steps")
    parser.add_argument("--generators", type=int, default=1, help="generator processes (default 1)")
    args = parser.parse_args(argv)
    steps = args.steps if args.steps is not None else steps_from_env()

    from wirehead import WireheadController

    torch.manual_seed(0)
    fix_mmap_threshold()
    # the generator processes each keep a core busy: a trainer whose OpenMP threads share a core with one waits
    # for its slowest thread at every operation (measured here, 2 cores, one generator at full speed: 3.5 s a step
    # with 2 threads, 1.06 s with 1)
    trainer_threads(args.generators)
    with WireheadController(SWAP_CAP=4, SAMPLE=["image", "label", "affine"], DBNAME="wirehead_synthetic_brains",
                            GRACE_SECONDS=5.0, HEARTBEAT_SECONDS=1.0, NODE_CACHE_MB=0) as ctl:
        ctl.start_manager()
        ctl.start_generators(brains, n=args.generators, mode="process")
        ds = ctl.dataset(timeout=300)                   # waits for the first generation
        affine = ds[0]["affine"].numpy()                # the samples' grid: voxel -> MNI millimetres
        t1, truth = real_t1(affine), template_labels(affine)
        model = SmallUNet()
        baselines = {"untrained network": dice_per_tissue(segment(model, t1), truth),
                     "k-means on intensity": dice_per_tissue(kmeans_baseline(t1), truth)}

        def report(run: Run) -> None:
            e = run.evaluations[-1]
            print(f"step {e.step:4d}  {e.seconds:5.0f} s  wait {e.wait_fraction:.3f}  Dice "
                  + "  ".join(f"{k} {v:.3f}" for k, v in e.dice.items()), flush=True)

        run = train(ds, model, steps, t1=t1, truth=truth, eval_every=args.eval_every, on_eval=report)
        generated = samples_generated(ctl)
        ctl.stop(drop=True)
    print(summary(run, generated, baselines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
