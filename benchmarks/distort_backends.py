"""Throughput of `reshape distort` per backend, side by side on the same input (issue #9).

    python benchmarks/distort_backends.py [--refs 8] [--preset livec] [--levels 1,3,5] [--size 512x384]

Runs the same job with the local backend (1 process, then a pool of 2) and on a local Ray with 2 CPUs
(once including the cluster start, once on a cluster that is already up), checks that every run wrote the
same bytes, and prints images/s with the ratio to local workers=1. References are crops of the natural
photos bundled with scikit-image, resized KADID-style to --size. On a shared machine the numbers move with
the load: use --repeat to keep the fastest of several runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_references(folder: Path, count: int, size: tuple[int, int]) -> None:
    from skimage import data

    photos = [getattr(data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")]
    rng = np.random.default_rng(0)
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = int(h * 0.8), int(w * 0.8)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(photo[top : top + ch, left : left + cw]).convert("RGB")
        crop.resize(size, Image.Resampling.LANCZOS).save(folder / f"ref{i:03d}.png")


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        if p.suffix in (".png", ".bmp", ".csv"):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=8, help="number of references (default 8)")
    parser.add_argument("--preset", default="livec", help="type preset (default livec: 6 types)")
    parser.add_argument("--levels", default="1,3,5")
    parser.add_argument("--size", default="512x384", help="reference size WxH (default 512x384, as KADID)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per backend, the fastest is shown")
    args = parser.parse_args()

    import distortions
    from reshape.backends import ray_available
    from reshape.distort import parse_resize, resolve_types, run_distort

    types = []
    for t in resolve_types(preset=args.preset):
        try:
            distortions.get_kernel(t)
            types.append(t)
        except NotImplementedError:
            print(f"note: type {t} is not in the installed distortions library, left out", file=sys.stderr)

    size = parse_resize(args.size)
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="reshape-bench-"))
    try:
        refs = work / "refs"
        refs.mkdir()
        make_references(refs, args.refs, size)

        def run(label: str, out: str, **kwargs) -> tuple[str, int, float, str]:
            best = float("inf")
            for _ in range(max(1, args.repeat)):
                shutil.rmtree(work / out, ignore_errors=True)  # every run writes all images
                t0 = time.perf_counter()
                summary = run_distort(refs, work / out, types=types, levels=levels, seed=0, **kwargs)
                best = min(best, time.perf_counter() - t0)
            return label, summary.n_written, best, digest(work / out)

        rows = [
            run("local, workers=1", "local1", workers=1),
            run("local, workers=2", "local2", workers=2),
        ]
        if ray_available():
            import ray

            rows.append(run("ray, 2 CPUs (incl. cluster start)", "ray_cold", workers=2, backend="ray"))
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            try:
                # the first tasks of a new cluster also pay for worker processes importing numpy/OpenCV
                run("ray warm-up", "ray_warmup", workers=2, backend="ray")
                rows.append(run("ray, 2 CPUs (cluster already up)", "ray_warm", workers=2, backend="ray"))
            finally:
                ray.shutdown()
        else:
            print("ray is not installed (pip install reshape-iqa[ray]): Ray rows skipped", file=sys.stderr)

        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"machine: {os.cpu_count()} cores, load average {load} (other work on the machine skews ratios)"
        )
        n_images = rows[0][1]
        base = n_images / rows[0][2]
        print(
            f"distort: {args.refs} references {args.size}, types {','.join(map(str, types))}, "
            f"levels {args.levels} = {n_images} images per run"
        )
        print(f"{'backend':<36} {'seconds':>8} {'images/s':>9} {'vs local w=1':>13} {'same bytes':>11}")
        for label, n, seconds, dig in rows:
            rate = n / seconds
            print(f"{label:<36} {seconds:8.2f} {rate:9.1f} {rate / base:12.2f}x {str(dig == rows[0][3]):>11}")
        return 0 if all(r[3] == rows[0][3] for r in rows) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
