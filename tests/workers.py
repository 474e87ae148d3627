"""Worker processes for the concurrency and fault tests: real generators, managers and readers.

Run as ``python tests/workers.py ROLE CONFIG_JSON [options]``.  Each worker prints one line per
event on stdout (flushed), so the parent test can follow it and kill it at chosen moments:

* generator: ``CHUNK`` after each chunk document, ``COMMITTED <sid> <id>`` after each commit;
* manager: ``SEALED <gen>`` after sealing, ``SWAPPING <gen>`` before the state update, ``SWAPPED <gen>`` after;
* reader: writes a JSON report to ``--out`` when done: every (generation, sample id) read and errors.

Samples are self-checking (:func:`wirehead.synth.make_self_checking`): a reader detects a partial
or mixed sample from the arrays alone.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import traceback

from wirehead import MongoheadDataset, WireheadConfig, WireheadGenerator, WireheadManager
from wirehead.reader import Reader
from wirehead.store import Store
from wirehead.synth import check_self_checking, make_self_checking, synth_sample


def generator(cfg: WireheadConfig, args: argparse.Namespace) -> None:
    if args.slow_chunks:
        original = Store._insert_many

        def one_by_one(self, docs):  # type: ignore[no-untyped-def]
            for d in docs:
                original(self, [d])
                print("CHUNK", flush=True)
                time.sleep(args.slow_chunks)

        Store._insert_many = one_by_one  # type: ignore[method-assign]
    gen = WireheadGenerator(config=cfg, name=f"g{args.gid}")
    shape = tuple(args.shape)
    base, _ = synth_sample(shape, seed=args.gid)
    label = (base * 7).astype("uint8")
    k = 0
    try:
        while args.n is None or k < args.n:
            sample_id = args.gid * 1_000_000 + args.start + k
            image, lab = make_self_checking(base, label, sample_id)
            sid = gen.push((image, lab))
            print(f"COMMITTED {sid} {sample_id}", flush=True)
            k += 1
            if args.delay:
                time.sleep(args.delay)
    finally:
        gen.close()


def manager(cfg: WireheadConfig, args: argparse.Namespace) -> None:
    if args.pause_in_swap:
        original_seal, original_swap = Store.seal, Store.swap

        def seal(self, g):  # type: ignore[no-untyped-def]
            original_seal(self, g)
            print(f"SEALED {g}", flush=True)
            time.sleep(args.pause_in_swap)

        def swap(self, g):  # type: ignore[no-untyped-def]
            print(f"SWAPPING {g}", flush=True)  # decided (and sealed, if not full), state not yet changed
            time.sleep(args.pause_in_swap)
            done = original_swap(self, g)
            print(f"SWAPPED {g}", flush=True)
            time.sleep(args.pause_in_swap)
            return done

        Store.seal, Store.swap = seal, swap  # type: ignore[method-assign]
    mgr = WireheadManager(config=cfg)
    print("READY", flush=True)
    mgr.run(duration=args.duration)


def reader(cfg: WireheadConfig, args: argparse.Namespace) -> None:
    """Reads continuously; with --dataset through MongoheadDataset (and its reuse gate)."""
    if args.dataset:
        ds = MongoheadDataset(config=cfg, timeout=args.timeout, output="numpy")
        rd = ds.reader

        def get(idx: list[int]) -> list[dict]:
            return list(ds[idx].values()) if len(set(idx)) == len(idx) else [ds[i] for i in idx]
    else:
        rd = Reader(Store(cfg), timeout=args.timeout)
        get = rd.get
    reads: list[list[int]] = []
    errors: list[str] = []
    bad: list[str] = []
    slow: list[float] = []
    end = time.monotonic() + args.duration
    rng = random.Random(os.getpid())
    while time.monotonic() < end:
        try:
            n = len(rd)
            idx = rng.sample(range(n), min(4, n))
            t0 = time.monotonic()
            samples = get(idx)
            slow.append(time.monotonic() - t0)
            g = rd.gen.gen
            for s in samples:
                try:
                    reads.append([g, check_self_checking(s["image"], s["label"])])
                except AssertionError as e:
                    bad.append(f"gen {g}: {e}")
        except Exception:  # noqa: BLE001 - every error is a finding
            errors.append(traceback.format_exc()[-2000:])
            time.sleep(0.05)
    rd.flush()
    with open(args.out, "w") as f:
        json.dump({"reads": reads, "errors": errors, "bad": bad, "max_get_seconds": max(slow, default=0)}, f)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["generator", "manager", "reader"])
    p.add_argument("config")
    p.add_argument("--gid", type=int, default=0)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--shape", type=int, nargs="+", default=[16, 16, 16])
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--slow-chunks", type=float, default=0.0)
    p.add_argument("--pause-in-swap", type=float, default=0.0)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--out", default=None)
    p.add_argument("--dataset", action="store_true")
    args = p.parse_args()
    cfg = WireheadConfig.load(json.loads(args.config))
    {"generator": generator, "manager": manager, "reader": reader}[args.role](cfg, args)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
