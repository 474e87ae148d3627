"""The product on a GPU: SynthSeg-style brains made on the GPU feed a GPU trainer through wirehead.

    python benchmarks/gpu.py --json gpu.json            # 256^3 at 1 mm, cornucopia on cuda, 4 generators, 60 s
    python benchmarks/gpu.py --device cpu --backend torchio --edge 32 --mm 4 --generators 1 --seconds 5  # CPU

One run measures, on one device:

1. ``brain_seconds``: one brain made by :func:`wirehead.brains.brain_generator` alone (the copy to the host
   included), median of ``--n`` after one warm-up;
2. ``step_seconds``: one training step alone (the ``SmallUNet`` of ``examples/train_on_synthetic_brains.py``,
   a batch of ``--batch`` already on the device, cross-entropy + soft Dice, Adam), median of ``--n``;
3. the same training loop for ``--seconds``, fed two ways: **on the fly** (each batch generated inline, the
   way a loop without a cache works) and **through wirehead** (a :class:`~wirehead.WireheadController` with a
   private server, a manager, ``--generators`` generator processes making brains on the device, a
   ``MongoheadDataset`` read by a ``DataLoader`` with ``--workers`` workers, a new epoch at each generation).
   For each: steps/s and the trainer's wait fraction (time in ``next(batch)`` and the batch's copy to the
   device / the loop's time); for wirehead also brains committed per second, reads per brain, and the seconds
   before the first generation was readable (reported apart, not in the loop's time).

``speedup`` is wirehead's steps/s over on the fly's.  Absolute figures: they belong to the device they were
taken on, which the report names (torch, CUDA, the device's name, CPU count).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # wirehead from a checkout
sys.path.insert(0, str(ROOT / "examples"))  # the example's network and loss: one copy of them

import torch  # noqa: E402

from bench_common import say  # noqa: E402
from train_on_synthetic_brains import SmallUNet, loss_fn, samples_generated  # noqa: E402
from wirehead import WireheadController  # noqa: E402
from wirehead.brains import brain_generator  # noqa: E402


def make_brains(rank: int, *, edge: int, mm: float, device: str, backend: Optional[str]) -> Iterator[tuple]:
    """The generators' factory: ``(image, label)`` brains of ``edge``^3 at ``mm`` on ``device``, seeded by rank."""
    torch.set_num_threads(1)
    return brain_generator((edge,) * 3, mm, device=device, seed=7, rank=rank, affine=False, backend=backend)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """The loop's step: a SmallUNet on ``device``, Adam, the example's loss."""

    def __init__(self, device: torch.device, width: int) -> None:
        torch.manual_seed(0)
        self.device = device
        self.model = SmallUNet(width=width).to(device)
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def step(self, image: torch.Tensor, label: torch.Tensor) -> float:
        loss = loss_fn(self.model(image.float()[:, None]), label.long())
        self.optimiser.zero_grad()
        loss.backward()
        self.optimiser.step()
        return float(loss.detach())  # waits for the device: a step's time is its whole time


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (batch["image"].to(device, non_blocking=True), batch["label"].to(device, non_blocking=True))


def timed_loop(trainer: Trainer, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
               seconds: float, min_steps: int = 3) -> dict[str, float]:
    """Steps until ``seconds`` passed (at least ``min_steps``): steps/s and the wait fraction."""
    waited = 0.0
    steps = 0
    t_start = time.perf_counter()
    while steps < min_steps or time.perf_counter() - t_start < seconds:
        t0 = time.perf_counter()
        image, label = next_batch()
        sync(trainer.device)
        waited += time.perf_counter() - t0
        trainer.step(image, label)
        steps += 1
    wall = time.perf_counter() - t_start
    return {"steps": steps, "seconds": wall, "steps_per_s": steps / wall, "wait_fraction": waited / wall}


def on_the_fly(trainer: Trainer, args: argparse.Namespace) -> dict[str, float]:
    gen = make_brains(99, edge=args.edge, mm=args.mm, device=args.device, backend=args.backend)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [next(gen) for _ in range(args.batch)]
        image = torch.stack([torch.from_numpy(p[0]) for p in pairs])
        label = torch.stack([torch.from_numpy(p[1]) for p in pairs])
        return image.to(trainer.device), label.to(trainer.device)

    return timed_loop(trainer, next_batch, args.seconds)


def through_wirehead(trainer: Trainer, args: argparse.Namespace) -> dict[str, Any]:
    from torch.utils.data import DataLoader

    factory = functools.partial(make_brains, edge=args.edge, mm=args.mm, device=args.device, backend=args.backend)
    with WireheadController(SWAP_CAP=args.cap, SAMPLE=["image", "label"], DBNAME=f"wirehead_gpu_bench_{os.getpid()}",
                            GRACE_SECONDS=5.0, HEARTBEAT_SECONDS=1.0, uri=args.uri) as ctl:
        t0 = time.perf_counter()
        ctl.start_manager()
        ctl.start_generators(factory, n=args.generators, mode="process")
        ds = ctl.dataset(timeout=600)
        first = time.perf_counter() - t0
        say(f"first generation readable after {first:.1f} s")
        committed_at_start = samples_generated(ctl)
        pin = trainer.device.type == "cuda"
        loader = DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
                            pin_memory=pin)
        epoch: Optional[Iterator[Any]] = None
        generations: set[int] = set()
        reads = 0

        def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal epoch, reads
            while True:
                if epoch is None:
                    epoch = iter(loader)  # each epoch reads the newest read generation
                batch = next(epoch, None)
                if batch is not None:
                    generations.add(ds.generation)
                    reads += len(batch["image"])
                    return to_device(batch, trainer.device)
                epoch = None

        t_loop = time.perf_counter()
        out: dict[str, Any] = timed_loop(trainer, next_batch, args.seconds)
        committed = samples_generated(ctl) - committed_at_start
        wall = time.perf_counter() - t_loop
        ctl.stop(drop=True)
    out.update(first_generation_seconds=first, generations=len(generations), reads=reads,
               brains_committed=committed, brains_per_s=committed / wall,
               reads_per_brain=reads / committed if committed else None)
    return out


def median_seconds(fn: Callable[[], Any], n: int, device: torch.device) -> float:
    fn()  # warm-up: imports, first allocations, cuDNN's choice of kernels
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--backend", default=None, choices=["torchio", "cornucopia"],
                    help="the brain generator's backend (default: cornucopia on cuda, torchio on cpu)")
    ap.add_argument("--edge", type=int, default=256, help="brains of edge^3 voxels (default 256; a multiple of 4)")
    ap.add_argument("--mm", type=float, default=1.0, help="voxel size in mm (default 1)")
    ap.add_argument("--batch", type=int, default=1, help="brains per training step (default 1)")
    ap.add_argument("--width", type=int, default=8, help="the U-Net's first-level channels (default 8)")
    ap.add_argument("--generators", type=int, default=4, help="generator processes (default 4)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    ap.add_argument("--cap", type=int, default=8, help="SWAP_CAP (default 8)")
    ap.add_argument("--seconds", type=float, default=60.0, help="seconds of each fed loop (default 60)")
    ap.add_argument("--n", type=int, default=5, help="timed brains and steps alone (default 5)")
    ap.add_argument("--uri", default=None, help="a server to use (default: a private one, started and stopped)")
    ap.add_argument("--json", default=None, help="write the report here")
    args = ap.parse_args(argv)
    if args.edge % 4 or args.edge < 8:
        ap.error(f"--edge should be a multiple of 4, at least 8, but got {args.edge}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda was asked for but torch sees no CUDA device here; use --device cpu")
    torch.backends.cudnn.benchmark = True
    machine = {"torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(),
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    say(f"{machine}; brains of {args.edge}^3 at {args.mm:g} mm, batch {args.batch}")

    gen = make_brains(0, edge=args.edge, mm=args.mm, device=args.device, backend=args.backend)
    brain_s = median_seconds(lambda: next(gen), args.n, device)
    say(f"a brain alone: {brain_s:.3f} s")
    image, label = next(gen)
    images = torch.from_numpy(image)[None].repeat(args.batch, 1, 1, 1).to(device)
    labels = torch.from_numpy(label)[None].repeat(args.batch, 1, 1, 1).to(device)
    trainer = Trainer(device, args.width)
    step_s = median_seconds(lambda: trainer.step(images, labels), args.n, device)
    say(f"a training step alone: {step_s:.3f} s")
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None

    fly = on_the_fly(trainer, args)
    say(f"on the fly: {fly['steps_per_s']:.2f} steps/s, wait fraction {fly['wait_fraction']:.3f}")
    cached = through_wirehead(trainer, args)
    say(f"through wirehead: {cached['steps_per_s']:.2f} steps/s, wait fraction {cached['wait_fraction']:.3f}, "
        f"{cached['brains_per_s']:.2f} brains/s committed, {cached['reads_per_brain'] or 0:.1f} reads per brain")
    report = {"machine": machine, "args": vars(args), "brain_seconds": brain_s, "step_seconds": step_s,
              "trainer_peak_gib": peak_gib, "on_the_fly": fly, "wirehead": cached,
              "speedup": cached["steps_per_s"] / fly["steps_per_s"]}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
