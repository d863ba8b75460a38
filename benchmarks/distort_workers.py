"""Throughput of `reshape distort` with 1 and N local worker processes on the same input.

    python benchmarks/distort_workers.py [--refs 8] [--size 512x384] [--preset livec] [--workers 2]

Prints images/s per configuration and the speed-up against workers=1 measured in the same run, and checks
that every configuration wrote byte-identical images. The Ray backend (issue #9) adds its row here.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from reshape.distort import parse_resize, run_distort


def make_references(folder: Path, n: int, size: tuple[int, int]) -> None:
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    folder.mkdir(parents=True)
    for i in range(n):
        img = Image.fromarray(photos[i % len(photos)]).resize(size, Image.Resampling.LANCZOS)
        # mirror every other copy so the references differ
        arr = np.asarray(img)[:, :: 1 if i % 2 == 0 else -1]
        Image.fromarray(np.ascontiguousarray(arr)).save(folder / f"ref{i:03d}.png")


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.png")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", type=int, default=8)
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--preset", default="livec")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        refs = Path(tmp) / "refs"
        make_references(refs, args.refs, parse_resize(args.size))
        results = []
        for workers in sorted({1, args.workers}):
            out = Path(tmp) / f"out{workers}"
            start = time.perf_counter()
            summary = run_distort(refs, out, preset=args.preset, workers=workers)
            elapsed = time.perf_counter() - start
            results.append((workers, summary.n_images, elapsed, digest(out)))
        base = results[0][1] / results[0][2]
        print(f"{'backend':<10} {'workers':>7} {'images':>7} {'seconds':>8} {'img/s':>7} {'speed-up':>8}")
        for workers, n, elapsed, _ in results:
            rate = n / elapsed
            print(f"{'local':<10} {workers:>7} {n:>7} {elapsed:>8.2f} {rate:>7.1f} {rate / base:>7.2f}x")
        same = len({d for *_, d in results}) == 1
        print(f"identical outputs across worker counts: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
