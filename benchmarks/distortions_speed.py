"""Speed of the 25 KADID kernels and of type 15 (DnCNN-B) against the code before issue 30, same run.

    python benchmarks/distortions_speed.py [--base-commit REV] [--repeats 3] [--types 1-25]
        [--denoise-images 2] [--denoise-repeats 1] [--skip-kernels] [--skip-denoise] [--skip-bf16]

The code before the change is taken with ``git archive REV`` (distortions, reshape, cli) into a temporary folder. For the
kernels it is imported there under the name ``distortions_base`` (its imports rewritten) and timed call by
call, interleaved with the current code, on 512x384 photos, every level in turn, the same seed for both;
each pair of outputs is also compared (``same`` = identical float32 arrays).

Type 15 is timed as the stage runs it: whole ``reshape distort --types denoise --levels 3`` processes on
``--denoise-images`` references, with a random-weight DnCNN-B of the real shape (20 layers, 64 channels,
written as a torch state_dict in the temporary folder); the old code's process sees the archived
``distortions`` and ``reshape`` (with its CLI) first on PYTHONPATH. The new code's bf16 is timed through ``--dncnn-precision bf16`` when the
CLI has it, else in-process against the old code in-process (said in the output). Goals (issue 30): type 15
fp32 >= 1.6x, bf16 >= 3x, jitter >= 2x, no kernel slower. Measure on an idle machine: timings on a shared
one are noise.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import distortions
from distortions.denoisers import random_dncnn_state_dict

REPO = Path(__file__).resolve().parents[1]
#: the commit before issue 30's kernel changes (the branch point of issue-30a)
BASE_COMMIT = "26705cb900da308437f8310e919e1a5939103385"
SIZE = (512, 384)
GOALS = {"denoise fp32": 1.6, "denoise bf16": 3.0, "jitter": 2.0}
#: a kernel counts as slower below this ratio (timing noise allowance)
SLOWER_BELOW = 0.95


def archive_base(commit: str, folder: Path) -> Path:
    """``git archive`` of distortions/, reshape/ and cli/ at ``commit`` into ``folder/pkg``; returns it.

    cli/ goes to ``pkg/reshape/cli`` (where the install puts it), so the old process runs the old stage
    and CLI with the old library, not today's CLI over the old library."""
    tar = subprocess.run(
        ["git", "archive", "--format=tar", commit, "distortions", "reshape", "cli", "data_manifests"],
        cwd=REPO, check=True, capture_output=True,
    ).stdout  # fmt: skip
    root = folder / "pkg"
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(root, filter="data")
    (root / "cli").rename(root / "reshape" / "cli")
    (root / "data_manifests").rename(root / "reshape" / "data_manifests")
    return root


def import_renamed(pkg_root: Path, folder: Path) -> object:
    """The archived package as ``distortions_base`` (a copy with its own imports rewritten)."""
    renamed = folder / "renamed" / "distortions_base"
    renamed.mkdir(parents=True)
    for source in (pkg_root / "distortions").glob("*.py"):
        text = re.sub(r"\b(from|import) distortions\b", r"\1 distortions_base", source.read_text())
        text = text.replace('f"distortions.{name}"', 'f"distortions_base.{name}"')
        (renamed / source.name).write_text(text)
    sys.path.insert(0, str(renamed.parent))
    return importlib.import_module("distortions_base")


def photos() -> list[np.ndarray]:
    """Two natural photos at 512x384 (scikit-image's coffee and chelsea, Lanczos-resized)."""
    from skimage import data

    return [
        np.asarray(Image.fromarray(p).resize(SIZE, Image.Resampling.LANCZOS))
        for p in (data.coffee(), data.chelsea())
    ]


def time_kernels(base: object, types: list[int], repeats: int) -> dict[int, tuple[float, float, bool]]:
    """Fastest ms per call of old and new for each type, and whether every output pair was identical."""
    images = photos()
    results = {}
    for tid in types:
        old_ms, new_ms, same = [], [], True
        for apply in (base.apply, distortions.apply):  # warm-up: lazy imports, numba's compile or cache load
            apply(images[0], tid, 1, rng=np.random.default_rng(0))
        for rep in range(repeats):
            for level in range(1, 6):
                image = images[(rep + level) % len(images)]
                seed = 1000 * tid + 10 * rep + level
                calls = [("old", base.apply), ("new", distortions.apply)]
                outputs = {}
                for name, apply in calls if (rep + level) % 2 else calls[::-1]:  # alternate who goes first
                    start = time.perf_counter()
                    outputs[name] = apply(image, tid, level, rng=np.random.default_rng(seed))
                    (old_ms if name == "old" else new_ms).append(1000 * (time.perf_counter() - start))
                same = same and np.array_equal(outputs["old"], outputs["new"])
        results[tid] = (statistics.median(old_ms), statistics.median(new_ms), same)
        name = distortions.TABLE[tid].name
        old, new, _ = results[tid]
        print(
            f"  {tid:>2} {name:<24} old {old:8.1f} ms  new {new:8.1f} ms  ratio {old / new:5.2f}x  same {same}"
        )
    return results


def _distort(refs: Path, out: Path, weights: Path, env: dict[str, str], extra: list[str]) -> float:
    command = [sys.executable, "-m", "reshape.cli.main", "distort", str(refs), "--out", str(out)]
    command += ["--types", "denoise", "--levels", "3", "--dncnn-weights", str(weights), *extra]
    start = time.perf_counter()
    # cwd: the temporary folder, so no checkout's distortions/ shadows the one PYTHONPATH names
    subprocess.run(command, env=env, check=True, capture_output=True, cwd=refs.parent)
    return time.perf_counter() - start


def _cli_has(option: str) -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "reshape.cli.main", "distort", "--help"], capture_output=True, text=True
    ).stdout
    return option in help_text


def _eight_bit_differences(a: Path, b: Path) -> tuple[int, int]:
    differing = total = 0
    for path in sorted(a.glob("*.png")):
        x, y = np.asarray(Image.open(path)), np.asarray(Image.open(b / path.name))
        differing += int((x != y).sum())
        total += x.size
    return differing, total


def time_denoise(pkg_root: Path, folder: Path, n_images: int, repeats: int, bf16: bool) -> dict[str, float]:
    """Seconds per image of whole `reshape distort --types denoise` processes: old fp32, new fp32 (, bf16)."""
    refs = folder / "refs"
    refs.mkdir()
    images = photos()
    for i in range(n_images):
        arr = images[i % len(images)][:, :: 1 if i % 4 < 2 else -1]  # mirrored copies differ
        Image.fromarray(np.ascontiguousarray(arr)).save(refs / f"ref{i:03d}.png")
    weights = folder / "dncnn_b.pth"
    import torch

    torch.save(random_dncnn_state_dict(depth=20, channels=64), weights)
    old_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pkg_root), os.environ.get("PYTHONPATH", "")])}
    seen = subprocess.run(
        [
            sys.executable,
            "-c",
            "import distortions, reshape.distort; print(distortions.__file__, reshape.distort.__file__)",
        ],
        cwd=folder,
        env=old_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not all(path.startswith(str(pkg_root)) for path in seen.split()):
        raise SystemExit(f"the old code's process imported {seen}, not the archived copy")
    runs = [("old fp32", old_env, []), ("new fp32", dict(os.environ), [])]
    cli_bf16 = bf16 and _cli_has("--dncnn-precision")
    if cli_bf16:
        runs.append(("new bf16", dict(os.environ), ["--dncnn-precision", "bf16"]))
    seconds: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for rep in range(repeats):
        for name, env, extra in runs if rep % 2 == 0 else runs[::-1]:
            out = folder / f"out-{name.replace(' ', '-')}-{rep}"
            seconds[name].append(_distort(refs, out, weights, env, extra) / n_images)
            print(f"  {name}: {seconds[name][-1]:.2f} s per image (whole process, {n_images} images)")
    differing, total = _eight_bit_differences(folder / "out-old-fp32-0", folder / "out-new-fp32-0")
    print(f"  fp32 old vs new: {differing} of {total} 8-bit values differ")
    result = {name: statistics.median(v) for name, v in seconds.items()}
    if bf16 and not cli_bf16:
        result.update(_bf16_in_process(pkg_root, weights, images[0]))
    return result


def _bf16_in_process(pkg_root: Path, weights: Path, image: np.ndarray) -> dict[str, float]:
    """Old fp32 vs new bf16 per image inside this process (the CLI has no --dncnn-precision yet)."""
    print("  (reshape distort has no --dncnn-precision here: bf16 timed in-process, old fp32 likewise)")
    base = sys.modules["distortions_base"]
    old = base.load_denoiser(str(weights))
    new = distortions.load_denoiser(str(weights), precision="bf16")
    timings = {}
    for name, module, denoiser in (
        ("old fp32 in-process", base, old),
        ("new bf16 in-process", distortions, new),
    ):
        start = time.perf_counter()
        module.apply(image, 15, 3, rng=np.random.default_rng(0), denoiser=denoiser)
        timings[name] = time.perf_counter() - start
        print(f"  {name}: {timings[name]:.2f} s per image")
    return timings


def _goal_line(label: str, ratio: float, goal: float) -> str:
    return f"GOAL {label}: {ratio:.2f}x (goal >= {goal}x) {'MET' if ratio >= goal else 'NOT MET'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-commit", default=BASE_COMMIT)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the 5 levels per kernel")
    ap.add_argument("--types", default="1-25", help="kernel types to time, e.g. 19 or 1-14,16-25")
    ap.add_argument("--denoise-images", type=int, default=2)
    ap.add_argument("--denoise-repeats", type=int, default=1)
    ap.add_argument("--skip-kernels", action="store_true")
    ap.add_argument("--skip-denoise", action="store_true")
    ap.add_argument("--skip-bf16", action="store_true")
    args = ap.parse_args()
    types = sorted(
        {t for part in args.types.split(",") for t in _span(part) if t != distortions.registry.DENOISE_TYPE}
    )
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pkg_root = archive_base(args.base_commit, folder)
        base = import_renamed(pkg_root, folder)
        print(f"old code: distortions/ at {args.base_commit[:12]}; machine: {os.cpu_count()} CPUs")
        if not args.skip_kernels:
            print(f"kernels, 512x384, fastest of {5 * args.repeats} calls (ms):")
            kernels = time_kernels(base, types, args.repeats)
            slower = [t for t, (old, new, _) in kernels.items() if old / new < SLOWER_BELOW]
            if 19 in kernels:
                lines.append(_goal_line("jitter", kernels[19][0] / kernels[19][1], GOALS["jitter"]))
            names = ", ".join(f"{t} ({kernels[t][0] / kernels[t][1]:.2f}x)" for t in slower) or "none"
            lines.append(
                f"GOAL no kernel slower (ratio < {SLOWER_BELOW}): {names} -> {'NOT MET' if slower else 'MET'}"
            )
            changed = [t for t, (_, _, same) in kernels.items() if not same]
            lines.append(
                f"outputs identical to the old code for the same seed: {'all' if not changed else changed}"
            )
        if not args.skip_denoise:
            print("type 15 (denoise), DnCNN-B shape with random weights, seconds per image:")
            per_image = time_denoise(
                pkg_root, folder, args.denoise_images, args.denoise_repeats, not args.skip_bf16
            )
            lines.append(
                _goal_line(
                    "denoise fp32 (whole process)",
                    per_image["old fp32"] / per_image["new fp32"],
                    GOALS["denoise fp32"],
                )
            )
            if "new bf16" in per_image:
                lines.append(
                    _goal_line(
                        "denoise bf16 (whole process)",
                        per_image["old fp32"] / per_image["new bf16"],
                        GOALS["denoise bf16"],
                    )
                )
            elif "new bf16 in-process" in per_image:
                ratio = per_image["old fp32 in-process"] / per_image["new bf16 in-process"]
                lines.append(_goal_line("denoise bf16 (in-process)", ratio, GOALS["denoise bf16"]))
    print("\n".join(lines))


def _span(part: str) -> range:
    first, _, last = part.partition("-")
    return range(int(first), int(last or first) + 1)


if __name__ == "__main__":
    main()
