"""Fidelity and speed of the 25 KADID distortions against the reference generator's outputs.

Prints one row per type: PSNR and SSIM (8-bit, vs the Octave run of the original MATLAB code in
``kadid_reference``) at levels 1..5, the worst over the reference images, and the time per 512x384 image.
Random types (marked ``~``) cannot match pixel for pixel; their numbers only show the strength is alike.
Then the total time of the 75 outputs (25 types x levels 1, 3, 5) of one reference on one core, type 15
excluded, against the 1.5 s target, and the wrapper alone (stretch in and out) as a same-run baseline.

    python benchmarks/distortions_fidelity.py [--shared DIR] [--repeat N]

The reference folder is ``$RESHAPE_SHARED/kadid_reference`` or ``../shared/kadid_reference`` next to the
repository. Types without a registered kernel print ``n/a``.
"""

from __future__ import annotations

import os

# One core: set before numpy/OpenCV start their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402

import distortions  # noqa: E402
from distortions.params import TABLE  # noqa: E402
from distortions.registry import KERNELS, _load_kernels, as_rgb_float, minmax_stretch  # noqa: E402

TARGET_S = 1.5
SPEED_LEVELS = (1, 3, 5)
REPO = Path(__file__).resolve().parents[1]


def find_reference(explicit: str | None) -> Path | None:
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get("RESHAPE_SHARED"):
        candidates.append(Path(os.environ["RESHAPE_SHARED"]))
    candidates.append(REPO.parent / "shared")
    for cand in candidates:
        if (cand / "kadid_reference" / "manifest.csv").is_file():
            return cand / "kadid_reference"
    return None


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(image.astype(np.float64) * 255.0).astype(np.uint8)


def fidelity(ref_dir: Path, stems: list[str], dist_type: int) -> list[tuple[float, float] | None]:
    """(worst PSNR, worst SSIM) per level over the reference images that have an output, else None."""
    per_level: list[tuple[float, float] | None] = []
    for level in range(1, 6):
        scores = []
        for stem in stems:
            target = ref_dir / f"{stem}_{dist_type:02d}_{level:02d}.png"
            if not target.is_file():
                continue
            expected = load(target)
            out = to_uint8(
                distortions.apply(load(ref_dir / f"{stem}.png"), dist_type, level, rng=_rng(level))
            )
            ssim = structural_similarity(out, expected, channel_axis=2, data_range=255)
            scores.append((psnr(out, expected), ssim))
        per_level.append(tuple(np.min(scores, axis=0)) if scores else None)
    return per_level


def _rng(level: int) -> np.random.Generator:
    return np.random.default_rng(1000 + level)


def best_time(fn, repeat: int) -> tuple[float, float]:
    """Best-of-``repeat`` (wall seconds, CPU seconds of this process) of ``fn()``.

    CPU time is reported too because on a shared machine the wall clock also counts other jobs.
    """
    wall = cpu = float("inf")
    for _ in range(repeat):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - start_wall)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def time_type(image: np.ndarray, dist_type: int, repeat: int) -> tuple[float, float]:
    """Levels 1, 3 and 5 together."""

    def run() -> None:
        for level in SPEED_LEVELS:
            distortions.apply(image, dist_type, level, rng=_rng(level))

    return best_time(run, repeat)


def time_wrapper_only(image: np.ndarray, repeat: int) -> tuple[float, float]:
    """The input conversion and both stretches with no distortion: what every type pays at least."""

    def run() -> None:
        for _level in SPEED_LEVELS:
            x = minmax_stretch(as_rgb_float(image))
            np.clip(minmax_stretch(x), 0.0, 1.0).astype(np.float32)

    return best_time(run, repeat)


def fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "n/a"
    return "inf" if np.isinf(value) else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", help="folder holding kadid_reference/ (default: $RESHAPE_SHARED or ../shared)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timing repetitions per type (best is kept)")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    _load_kernels()
    ref_dir = find_reference(args.shared)
    if ref_dir is not None:
        stems = sorted({p.name.split("_")[0] for p in ref_dir.glob("*_01_01.png")})
        speed_image = load(ref_dir / f"{stems[0]}.png")
    else:
        print("kadid_reference not found: fidelity columns are n/a; timing on a synthetic 512x384 image")
        stems = []
        speed_image = (np.random.default_rng(0).random((384, 512, 3)) * 255).astype(np.uint8)
    if speed_image.shape[:2] != (384, 512):
        speed_image = np.asarray(Image.fromarray(speed_image).resize((512, 384), Image.LANCZOS))

    print(
        f"references: {ref_dir or 'none'} ({', '.join(stems) or 'no images'}); "
        f"one core; best of {args.repeat}"
    )
    header = (
        f"{'id':>2} {'name':<24} {'':1} "
        + " ".join(f"{'PSNR' + str(lv):>7}" for lv in range(1, 6))
        + " "
        + " ".join(f"{'SSIM' + str(lv):>6}" for lv in range(1, 6))
        + f" {'ms/img':>7} {'cpu ms':>7}"
    )
    print(header)
    print("-" * len(header))
    total = total_cpu = 0.0
    notes: set[str] = set()
    timed: list[int] = []
    for dist_type in sorted(TABLE):
        spec = TABLE[dist_type]
        kind = "" if spec.deterministic else "~"
        if dist_type not in KERNELS:
            cells = (
                " ".join(f"{'n/a':>7}" for _ in range(5)) + " " + " ".join(f"{'n/a':>6}" for _ in range(5))
            )
            print(f"{dist_type:>2} {spec.name:<24} {kind:1} {cells} {'n/a':>7} {'n/a':>7}")
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            levels = fidelity(ref_dir, stems, dist_type) if ref_dir is not None else [None] * 5
            seconds, cpu_seconds = time_type(speed_image, dist_type, args.repeat)
        notes.update(f"type {dist_type}: {w.message}" for w in caught)
        if dist_type != 15:
            total += seconds
            total_cpu += cpu_seconds
            timed.append(dist_type)
        psnr_cells = " ".join(f"{fmt(s[0] if s else None, '.2f'):>7}" for s in levels)
        ssim_cells = " ".join(f"{fmt(s[1] if s else None, '.4f'):>6}" for s in levels)
        ms, cpu_ms = (1000.0 * v / len(SPEED_LEVELS) for v in (seconds, cpu_seconds))
        print(f"{dist_type:>2} {spec.name:<24} {kind:1} {psnr_cells} {ssim_cells} {ms:7.1f} {cpu_ms:7.1f}")

    baseline, _ = time_wrapper_only(speed_image, args.repeat)
    missing = [t for t in sorted(TABLE) if t != 15 and t not in timed]
    print()
    print("~ = random type (statistical reference only); PSNR/SSIM: worst image, 8-bit round(255*x) outputs")
    for note in sorted(notes):
        print(f"note: {note}")
    print(
        f"total for {len(timed) * len(SPEED_LEVELS)} outputs "
        f"({len(timed)} types x levels 1,3,5, type 15 excluded): "
        f"{total:.3f} s; target {TARGET_S:.1f} s; ratio total/target = {total / TARGET_S:.2f}"
        + (" (within target)" if total <= TARGET_S else " (OVER target)")
    )
    print(
        f"same, CPU time of this process: {total_cpu:.3f} s; ratio total/target = {total_cpu / TARGET_S:.2f}"
        + (" (within target)" if total_cpu <= TARGET_S else " (OVER target)")
    )
    if missing:
        print(f"not timed (no kernel registered): types {', '.join(map(str, missing))}")
    per_output = total / max(1, len(timed) * len(SPEED_LEVELS))
    print(
        f"baseline (wrapper only, same run): {1000 * baseline / len(SPEED_LEVELS):.2f} ms/img; "
        f"mean distortion / baseline = {per_output / (baseline / len(SPEED_LEVELS)):.1f}x"
    )


if __name__ == "__main__":
    main()
