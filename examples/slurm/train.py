"""The training job of the SLURM example: a 3D segmentation model fed by the wirehead cache.

    python train.py --config config.yaml --steps 10000 --batch-size 1 --workers 4

The server comes from WIREHEAD_MONGO_URI (train.sbatch exports it) or the config.  The loop
reads random samples of the current read generation; a swap gives it fresh samples without any
pause.  Replace :func:`build_model` with your network; for several GPUs wrap it in
DistributedDataParallel and start this script with ``torchrun`` (each rank samples at random, so
no DistributedSampler is needed).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

log = logging.getLogger("train")


def build_model(n_labels: int) -> Any:
    """A deliberately small 3D network.  CHANGE: put your U-Net / MeshNet here."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv3d(16, 16, 3, padding=2, dilation=2), torch.nn.ReLU(),
        torch.nn.Conv3d(16, n_labels, 1),
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(Path(__file__).resolve().parent / "config.yaml"))
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--n-labels", type=int, default=8, help="classes of the label maps")
    p.add_argument("--checkpoint", help="save the model's state_dict here at the end")
    p.add_argument("--log-every", type=int, default=50)
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "n_labels", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} should be a positive integer, got {getattr(args, name)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from wirehead import MongoheadDataset

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = MongoheadDataset(config_path=args.config)
    log.info("cache %s on %s; waiting for the first full generation", dataset.config.dbname,
             dataset.config.redacted_uri)
    # indices come from the read generation of the moment; the dataset follows swaps by itself
    sampler = RandomSampler(dataset, replacement=True, num_samples=args.steps * args.batch_size)
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    model = build_model(args.n_labels).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    t0, step, seen = time.monotonic(), 0, 0
    try:
        for batch in loader:
            image = batch["image"].to(device, non_blocking=True).float().unsqueeze(1)  # (B, 1, D, H, W)
            label = batch["label"].to(device, non_blocking=True).long()                # (B, D, H, W)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                loss = loss_fn(model(image), label)
            loss.backward()
            optimiser.step()
            step += 1
            seen += image.shape[0]
            if step % args.log_every == 0 or step == args.steps:
                rate = seen / (time.monotonic() - t0)
                log.info("step %d loss %.4f  %.2f samples/s  read generation %d", step, loss.detach().item(),
                         rate, dataset.generation)
    finally:
        dataset.close()
    if args.checkpoint:
        torch.save(model.state_dict(), args.checkpoint)
        log.info("saved %s", args.checkpoint)
    print(f"trained {step} steps on {seen} samples in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
