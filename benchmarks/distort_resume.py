"""Resume cost of `reshape distort`: a rerun over finished outputs, trusted by size and mtime, against the
same rerun when every mtime has changed (so every output is read and hashed, as before issue #16).

    python benchmarks/distort_resume.py [--refs 40] [--size 512x384] [--repeat 3]

Prints seconds per rerun and the ratio, measured in the same run on the same folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from reshape.distort import parse_resize, run_distort


def make_references(folder: Path, n: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = (np.sin(xx / (7 + i)) + np.cos(yy / (5 + i))) * 60 + 128
        img = np.clip(base[..., None] + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"ref{i:04d}.png")


def rerun_seconds(refs: Path, out: Path, repeat: int, touch: bool) -> float:
    best = float("inf")
    for _ in range(repeat):
        if touch:  # new mtimes, same bytes: every output must be hashed to be trusted
            now = time.time_ns()
            for p in out.glob("*.png"):
                os.utime(p, ns=(now, now))
        t0 = time.perf_counter()
        summary = run_distort(refs, out, types=[1, 18], levels=[1, 3, 5])
        best = min(best, time.perf_counter() - t0)
        assert summary.n_written == 0, "a rerun over finished outputs must not redo any"
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=40)
    parser.add_argument("--size", default="512x384")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        refs = work / "refs"
        refs.mkdir()
        make_references(refs, args.refs, parse_resize(args.size))
        out = work / "out"
        t0 = time.perf_counter()
        first = run_distort(refs, out, types=[1, 18], levels=[1, 3, 5])
        made = time.perf_counter() - t0
        size_mb = sum(p.stat().st_size for p in out.glob("*.png")) / 2**20
        cheap = rerun_seconds(refs, out, args.repeat, touch=False)
        hashed = rerun_seconds(refs, out, args.repeat, touch=True)
    print(f"{first.n_written} images ({size_mb:.1f} MiB), first run {made:.2f} s")
    print(f"rerun, size+mtime trusted : {cheap:.3f} s")
    print(f"rerun, every output hashed: {hashed:.3f} s")
    print(f"hashing / cheap = {hashed / cheap:.2f}x")


if __name__ == "__main__":
    main()
