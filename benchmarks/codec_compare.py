"""Compare wirehead's compression codecs on brain-like volumes.

For each codec, volume size and kind (float32 image, int16 and uint8 label maps) this prints
the ratio (raw/stored bytes), encode MB/s and decode MB/s (raw bytes, best of ``--repeat``),
measured through :func:`wirehead.chunks.encode` / :func:`wirehead.chunks.decode`, i.e. the real
code path.  Volumes come from :func:`wirehead.synth.synth_sample` when that module exists,
otherwise from a stand-in built here (nested tissue regions with per-tissue intensity + noise).

Usage::

    python benchmarks/codec_compare.py [--sizes 64 128] [--repeat 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any, Callable

import numpy as np

from wirehead import chunks
from wirehead.compression import COMPRESSION_CODECS


def standin_sample(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A SynthSeg-like (image float32 in [0, 1), label int16) pair: nested tissues + noise."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    coarse = rng.standard_normal((8, 8, 8)).astype(np.float32)
    reps = [max(n // 8, 1) for n in shape]
    wobble = np.kron(coarse, np.ones(reps, np.float32))[: shape[0], : shape[1], : shape[2]]
    r = np.sqrt(x**2 / 0.8 + y**2 + z**2 / 0.9) + 0.04 * wobble
    label = np.zeros(shape, np.int16)
    for thresh, lab in zip([0.9, 0.8, 0.65, 0.45, 0.3, 0.15], [2, 3, 41, 4, 10, 17]):
        label[r < thresh] = lab
    means = rng.uniform(0.1, 0.9, size=64).astype(np.float32)
    means[0] = 0.0
    image = means[label] + 0.03 * rng.standard_normal(shape).astype(np.float32) * (label > 0)
    image = np.clip(image, 0.0, np.nextafter(np.float32(1), np.float32(0))).astype(np.float32)
    return image, label


def volumes(n: int, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(source, image, label)] of shape n^3: wirehead.synth when it exists, and the stand-in."""
    out = []
    try:
        from wirehead.synth import synth_sample  # type: ignore[attr-defined]
    except ImportError:
        pass
    else:
        image, label = synth_sample((n, n, n), seed)
        out.append(("synth", np.asarray(image), np.asarray(label)))
    image, label = standin_sample((n, n, n), seed)
    out.append(("stand-in", image, label))
    return out


def best_seconds(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    rows = []
    codecs = [c for c in COMPRESSION_CODECS if c != "none"]
    for n, (source, image, label) in ((n, v) for n in sizes for v in volumes(n)):
        arrays = {
            f"image {image.dtype.str}": image,
            f"label {label.dtype.str}": label,
        }
        if label.dtype != np.uint8:
            arrays["label |u1"] = label.astype(np.uint8)
        for name, arr in arrays.items():
            for c in codecs:
                enc = chunks.encode((arr,), ["x"], c)
                buf = chunks.join_chunks(enc.chunks(1 << 30), enc.stored_bytes)
                out = chunks.decode(enc.meta, buf)["x"]
                assert out.dtype == arr.dtype and out.tobytes() == arr.tobytes()
                t_enc = best_seconds(lambda: chunks.encode((arr,), ["x"], c), repeat)
                t_dec = best_seconds(lambda: chunks.decode(enc.meta, buf), repeat)
                rows.append({
                    "shape": f"{n}^3", "kind": name, "dtype": arr.dtype.str, "codec": c,
                    "stored_as": enc.meta[0]["codec"], "source": source,
                    "raw_bytes": enc.raw_bytes, "stored_bytes": enc.stored_bytes,
                    "ratio": enc.raw_bytes / max(enc.stored_bytes, 1),
                    "encode_MBps": enc.raw_bytes / t_enc / 1e6,
                    "decode_MBps": enc.raw_bytes / t_dec / 1e6,
                })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = measure(args.sizes, args.repeat)
    try:
        import blosc2

        threads = f"blosc2 threads={blosc2.nthreads}"
    except ImportError:
        threads = "blosc2 missing"
    print(f"# {platform.machine()}, {threads}, zstd/lz4 single-threaded; best of {args.repeat}")
    print(f"{'source':9s} {'shape':6s} {'kind':10s} {'codec':7s} {'ratio':>7s} {'enc MB/s':>9s} {'dec MB/s':>9s}")
    for r in rows:
        note = "" if r["stored_as"] == r["codec"] else f"  (stored as {r['stored_as']})"
        print(f"{r['source']:9s} {r['shape']:6s} {r['kind']:10s} {r['codec']:7s} {r['ratio']:7.2f} "
              f"{r['encode_MBps']:9.0f} {r['decode_MBps']:9.0f}{note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "argv": argv}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
