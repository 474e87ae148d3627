"""``wirehead demo``: the whole pipeline on a private local server, with a summary and a slice preview."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .._lazy import require
from ..config import WireheadConfig
from ..connect import open_store
from ..errors import GeneratorError
from ..monitor import snapshot
from ..server import LocalMongo

from ._common import (UsageError, formatter, generator_child, manager_child, sigterm_as_interrupt, spawn,
                      stop_processes)

HELP = "run the whole pipeline on a private local server; print a summary, save a slice preview"
DESCRIPTION = """\
The main job with no set-up: a private local server in a temporary directory, a manager
process, two generator processes and a training-style loop reading through a torch
DataLoader with two workers across several swaps.  The generators make SynthSeg-style brains
on the MNI152 anatomy (wirehead.brains: 64^3 voxels of 3 mm, image, label and affine) when
the `brains` extra is installed, else the numpy toy volumes of wirehead.synth (64^3).
Prints a summary (swaps, samples/s, reuse, how long making a sample takes against training
on it, where the trainer spent its time) and writes wirehead-demo-slices.png (axial, coronal and
sagittal slices with the label overlaid) into --out.  Takes about a minute at most; stops
everything it started, also on error or Ctrl-C.

examples:
  wirehead demo
  wirehead demo --out previews/ --swaps 6"""

PNG_NAME = "wirehead-demo-slices.png"
BRAIN_MM = 3.0
#: label names of wirehead.brains (kept here too so the demo's help needs no torch import)
BRAIN_LABELS = {0: "background", 1: "CSF", 2: "grey matter", 3: "white matter"}
log = logging.getLogger("wirehead.cli.demo")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help=HELP, description=DESCRIPTION, formatter_class=formatter)
    p.add_argument("--out", default=".", metavar="DIR", help="where to write the PNG (default: current directory)")
    p.add_argument("--swaps", type=int, default=4, metavar="N", help="train until N swaps happened (default 4)")
    p.add_argument("--seconds", type=float, default=60.0, metavar="S",
                   help="stop training after S seconds even with fewer swaps (default 60)")
    p.add_argument("--swap-cap", type=int, default=6, metavar="K", help="SWAP_CAP of the demo cache (default 6)")
    p.add_argument("--generator", choices=("auto", "brains", "synth"), default="auto",
                   help="brains (wirehead.brains), synth (numpy toy volumes) or auto: brains when the "
                        "`brains` extra is installed (default)")
    p.add_argument("--size", type=int, default=None, metavar="L",
                   help="volumes are L^3 voxels (default 64: 192 mm at 3 mm for brains)")
    p.add_argument("--delay", type=float, default=None, metavar="S",
                   help="seconds each generator sleeps per sample on top of its own work (default: 0 for "
                        "brains, 0.25 for synth, imitating a slow GPU generator)")
    p.set_defaults(run=run)


def _pick_generator(choice: str) -> str:
    """``brains`` or ``synth``; ``auto`` picks brains when its extra is installed, else says why not."""
    from ..brains import available  # imports torch: only when a demo runs, never for `wirehead --help`

    if choice == "synth":
        return "synth"
    if available():
        return "brains"
    if choice == "brains":
        raise UsageError("--generator brains needs the brains extra: pip install 'wirehead[brains]'")
    print("demo: the brains extra is not installed (pip install 'wirehead[brains]'); using the numpy toy "
          "generator wirehead.synth instead", flush=True)
    return "synth"


def run(args: argparse.Namespace) -> int:
    kind = _pick_generator(args.generator)
    if args.size is None:
        args.size = 64
    if args.delay is None:
        args.delay = 0.0 if kind == "brains" else 0.25
    if args.swaps < 1 or args.swap_cap < 1 or not args.seconds > 0 or not 8 <= args.size <= 256 or args.delay < 0:
        raise UsageError(f"need --swaps >= 1, --swap-cap >= 1, --seconds > 0, 8 <= --size <= 256 and --delay >= 0; got "
                         f"--swaps {args.swaps} --swap-cap {args.swap_cap} --seconds {args.seconds} --size {args.size} --delay {args.delay}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="wirehead-demo-") as tmp, sigterm_as_interrupt():
        server = LocalMongo(Path(tmp) / "db")
        try:
            t0 = time.monotonic()
            server.start()
            print(f"demo: private {server.engine} server at {server.uri} (started in {time.monotonic() - t0:.1f} s)",
                  flush=True)
            sample_kinds = ["image", "label", "affine"] if kind == "brains" else ["image", "label"]
            config = WireheadConfig.load(dict(
                MONGO_URI=server.uri, DBNAME="wirehead_demo", SWAP_CAP=args.swap_cap, SAMPLE=sample_kinds,
                POLL_SECONDS=0.05, LEASE_SECONDS=3.0, GRACE_SECONDS=2.0, HEARTBEAT_SECONDS=1.0,
                DEAD_AFTER_SECONDS=5.0, READ_TIMEOUT=60.0, CONNECT_TIMEOUT=5.0, ORPHAN_SECONDS=60.0))
            cfg = config.to_dict()
            level = args.log_level
            procs.append(spawn(manager_child, (cfg, server.uri, os.getpid(), level), "manager"))
            shape = (args.size,) * 3
            if kind == "brains":
                spec, kwargs, what = ("wirehead.brains:brain_generator",
                                      {"shape": shape, "resolution_mm": BRAIN_MM, "seed": 0},
                                      f"SynthSeg-style brains ({args.size}^3 at {BRAIN_MM:g} mm, wirehead.brains)")
                if args.delay:
                    kwargs["delay"] = args.delay
            else:
                spec, kwargs, what = ("wirehead.synth:synth_generator", {"shape": shape, "delay": args.delay},
                                      f"{args.size}^3 numpy toy volumes (wirehead.synth)")
            for rank in range(2):
                procs.append(spawn(generator_child, (cfg, server.uri, spec, rank, None, kwargs, os.getpid(), level),
                                   f"generator-{rank}"))
            print(f"demo: started a manager and 2 generator processes of {what} (SWAP_CAP {args.swap_cap})",
                  flush=True)
            summary = _train(config, server.uri, procs, args)
            png = out / PNG_NAME
            affine = summary.pop("affine")
            save_slice_preview(summary.pop("image"), summary.pop("label"), png, affine=affine,
                               legend=BRAIN_LABELS if kind == "brains" else None,
                               title=f"wirehead demo: generation {summary['gen']}, sample 0")
        finally:
            stop_processes(procs)
            server.stop()
    _print_summary(summary, png)
    return 0


def _train(config: Any, uri: str, procs: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """The training-style loop: a per-voxel classifier fed by a DataLoader with two workers."""
    import torch  # torch, the dataset and the DataLoader only when a demo trains: every other command goes without
    from torch.utils.data import DataLoader

    from ..dataset import MongoheadDataset

    torch.manual_seed(0)
    ds = MongoheadDataset(config=config, uri=uri)
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, multiprocessing_context="spawn",
                        persistent_workers=True)
    model = torch.nn.Conv3d(1, 8, kernel_size=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    store = open_store(config, uri, start_server=False)
    batches = reads = 0
    waited = stepped = 0.0
    snap = None
    start = time.monotonic()
    first_batch_at: Optional[float] = None
    try:
        print("demo: waiting for the first full generation, then training ...", flush=True)
        done = False
        next_look = 0.0
        swaps0: Optional[int] = None
        while not done:
            waited_from = time.monotonic()
            for batch in loader:
                got = time.monotonic()
                if first_batch_at is not None:
                    waited += got - waited_from
                # a tiny per-voxel classifier on a 4x coarser grid keeps the step cheap on a CPU
                image = torch.nn.functional.avg_pool3d(batch["image"].float().unsqueeze(1), 4)
                label = batch["label"][:, 2::4, 2::4, 2::4].long().clamp(0, 7)
                loss = torch.nn.functional.cross_entropy(model(image), label)
                opt.zero_grad()
                loss.backward()
                opt.step()
                batches += 1
                reads += int(label.shape[0])
                stepped += time.monotonic() - got
                if first_batch_at is None:
                    first_batch_at = time.monotonic()
                now = time.monotonic()
                if now >= next_look:
                    next_look = now + 1.0
                    for p in procs:
                        if not p.is_alive():
                            raise GeneratorError(f"demo: {p.name} (pid {p.pid}) exited with code {p.exitcode}")
                    snap = snapshot(store)
                    print(f"demo: {snap.swaps} swaps, read generation {snap.read_gen}, write fill "
                          f"{snap.write_fill}/{snap.swap_cap}, {batches} batches, loss {loss.item():.3f}", flush=True)
                    if swaps0 is None:
                        swaps0 = snap.swaps
                    if snap.swaps - swaps0 >= args.swaps or now - start >= args.seconds:
                        done = True
                        break
                waited_from = time.monotonic()
        sample = ds[0]
        snap = snapshot(store)
        train_s = time.monotonic() - (first_batch_at or start)
        affine = sample["affine"].numpy() if "affine" in sample else None
        return {"gen": ds.generation, "image": sample["image"].numpy(), "label": sample["label"].numpy(),
                "affine": affine, "waited": waited, "stepped": stepped,
                "snap": snap, "swaps_trained": snap.swaps - (swaps0 or 0), "batches": batches, "reads": reads, "train_seconds": train_s,
                "seconds": time.monotonic() - start, "loss": float(loss.item())}
    finally:
        del loader  # its persistent workers stop with it (torch's iterator shuts them down when dropped)
        gc.collect()
        ds.close()
        store.close()


def _print_summary(s: dict[str, Any], png: Path) -> None:
    snap = s["snap"]
    committed = snap.swaps * snap.swap_cap + snap.write_fill + snap.next_fill
    reuse = s["reads"] / committed if committed else 0.0
    print(f"wirehead demo: {snap.swaps} swaps in {s['seconds']:.1f} s, {s['swaps_trained']} of them while training")
    print(f"  generated   {snap.samples_per_second:.1f} samples/s committed by "
          f"{len(snap.generators)} generators ({committed} samples)")
    print(f"  trained     {s['batches']} batches, {s['reads']} samples read, "
          f"{s['reads'] / max(s['train_seconds'], 1e-9):.1f} samples/s, final loss {s['loss']:.3f}")
    print(f"  reuse       {reuse:.1f} reads per committed sample (reads reported by datasets: "
          f"{snap.read_gen_reads} of read generation {snap.read_gen})")
    per_gen = len(snap.generators) / snap.samples_per_second if snap.samples_per_second else float("nan")
    per_train = s["stepped"] / max(s["reads"], 1)
    print(f"  cost        making a sample takes {per_gen:.2f} s per generator, training on it {per_train * 1000:.0f} ms "
          f"({per_gen / max(per_train, 1e-9):.0f}x)")
    # fed straight from the generators, every sample read would have waited for its making
    direct = s["reads"] * per_gen / max(len(snap.generators), 1)
    print(f"  trainer     {s['reads']} samples in {s['train_seconds']:.1f} s after its first batch, none of them waiting "
          f"for a generator (fed straight from the generators: about {direct:.0f} s); "
          f"{s['waited']:.1f} s of it in the DataLoader, reading and collating from the cache on cores shared "
          f"with the generators")
    print(f"  preview     {png}")


def save_slice_preview(image: np.ndarray, label: np.ndarray, path: Path, title: Optional[str] = None,
                       affine: Optional[np.ndarray] = None, legend: Optional[dict[int, str]] = None) -> Path:
    """Write a PNG of the axial, coronal and sagittal centre slices of a 3-D ``image``, ``label`` overlaid.

    ``affine`` (4x4, voxel -> mm, e.g. a sample's ``affine`` kind) sets the voxel aspect ratio and
    puts millimetre coordinates on the axes; ``legend`` (label value -> name, e.g.
    ``wirehead.brains.LABELS``) adds a legend of the overlay colours.  Uses matplotlib's Agg canvas
    directly (no pyplot, no display needed).
    """
    needed_by = "the demo's slice figure"
    Figure = require("matplotlib.figure", needed_by).Figure  # noqa: N806 - the class, under its own name
    FigureCanvasAgg = require("matplotlib.backends.backend_agg", needed_by).FigureCanvasAgg  # noqa: N806
    Patch = require("matplotlib.patches", needed_by).Patch  # noqa: N806

    image = np.asarray(image, dtype=np.float32)
    label = np.asarray(label)
    if image.ndim != 3 or image.shape != label.shape:
        raise ValueError(f"image and label should be 3-D arrays of one shape, got {image.shape} and {label.shape}")
    cx, cy, cz = (s // 2 for s in image.shape)
    # extents in mm along each voxel axis (voxel centres at origin + i * zoom), or voxel indices
    if affine is not None:
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"affine should be 4x4, got {aff.shape}")
        zooms = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
        origin = aff[:3, 3]
        unit = "mm"
    else:
        zooms, origin, unit = np.ones(3), np.zeros(3), "voxel"
    span = [(origin[a] - zooms[a] / 2, origin[a] + zooms[a] * (image.shape[a] - 0.5)) for a in range(3)]
    planes = [("axial", cz, image[:, :, cz], label[:, :, cz], (0, 1)),
              ("coronal", cy, image[:, cy, :], label[:, cy, :], (0, 2)),
              ("sagittal", cx, image[cx, :, :], label[cx, :, :], (1, 2))]
    fig = Figure(figsize=(12, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    vmax = max(9, int(label.max()))
    cmap = "tab10"
    for ax, (name, k, im, lab, (a, b)) in zip(axes, planes):
        extent = (*span[a], *span[b])
        ax.imshow(im.T, cmap="gray", origin="lower", interpolation="nearest", extent=extent)
        ax.imshow(np.ma.masked_equal(lab.T, 0), cmap=cmap, vmin=0, vmax=vmax, alpha=0.35, origin="lower",
                  interpolation="nearest", extent=extent)
        ax.set_title(f"{name} (slice {k})")
        if affine is not None:
            ax.set_xlabel("xyz"[a] + f" ({unit})", fontsize=8)
            ax.set_ylabel("xyz"[b] + f" ({unit})", fontsize=8)
            ax.tick_params(labelsize=7)
        else:
            ax.set_axis_off()
    if legend:
        cm = require("matplotlib", needed_by).colormaps[cmap]
        handles = [Patch(color=cm(v / vmax), alpha=0.6, label=n) for v, n in sorted(legend.items()) if v != 0]
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    fig.savefig(path)
    return path
