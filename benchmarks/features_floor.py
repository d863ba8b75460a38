"""`reshape features` against the floor of the machine it runs on (issue #28).

    python benchmarks/features_floor.py [--images 160] [--size 512x384] [--batch-size 32] [--device cpu]
                                        [--workers N] [--base REV] [--repeats 1]

On the same N generated PNG references (random-init ResNet-50, ``--weights none``: the same arithmetic as
the pretrained weights, no download), each measured as a whole process:

* **stage**: ``run_features`` with its defaults (``--precision auto``, channels-last, default workers);
* **start-up**: the same stage on one image (imports, model build, workers, write);
* **compute floor**: the bare forward of the stage's encoder at its precision and memory format, on random
  tensors of the stage's batch shapes (what no input pipeline can beat);
* **decode floor**: decoding and cropping every image in one process (the I/O floor; ``workers``
  processes share it);
* **today**: the code before issue #28 (``git archive`` of ``--base``, default the parent of the commit
  that split ``reshape/features.py``) with its defaults, run with ``PYTHONPATH`` pointing there.

Prints the stage against the bound max(compute, decode / workers) + start-up and against today's default,
with the goals of the issue: the stage within 1.3x of the bound, and at least 2x faster than today. It
also checks that ``--precision fp32 --memory-format contiguous`` gives today's features byte for byte (on
the CPU, where today's default is fp32). Run it on an idle machine: timings of a shared machine are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

REPO = Path(__file__).resolve().parents[1]
GOAL_BOUND = 1.3
GOAL_TODAY = 2.0


def make_images(folder: Path, n: int, size: tuple[int, int]) -> None:
    """``n`` distinct PNGs of ``size``: four photos, resized, mirrored and shifted in turn."""
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    folder.mkdir(parents=True)
    for i in range(n):
        img = np.asarray(Image.fromarray(photos[i % 4]).resize(size, Image.Resampling.BILINEAR))
        img = np.roll(img[:, :: 1 if (i // 4) % 2 == 0 else -1], i // 8, axis=1)
        Image.fromarray(np.ascontiguousarray(img)).save(folder / f"ref{i:05d}.png")


def timed(code: str, env: dict[str, str] | None = None) -> tuple[float, dict]:
    """Run ``code`` in a fresh interpreter; returns (wall seconds, the JSON it printed on its last line)."""
    start = time.perf_counter()
    # cwd: not the repository, whose reshape/ folder would shadow the installed package's layout
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False,
                         cwd=tempfile.gettempdir())  # fmt: skip
    elapsed = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"a measured process failed:\n{res.stderr[-3000:]}")
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    return elapsed, json.loads(lines[-1]) if lines else {}


#: the code under PYTHONPATH, not the editable install's finder (which would map ``reshape`` to this tree)
ONLY_PYTHONPATH = """
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
"""

STAGE = """
import json, reshape
from reshape.features import run_features
r = run_features([{folder!r}], {out!r}, weights="none", device={device!r}, {options})
print(json.dumps({{"file": reshape.__file__, "precision": r.precision,
                  "settings": r.settings.describe() if getattr(r, "settings", None) else ""}}))
"""

COMPUTE = """
import json, time, numpy as np, torch
from reshape.features import build_encoder
enc = build_encoder("resnet50", "none", {device!r})
enc.set_memory_format({memory_format!r})
sizes = [{batch}] * ({n} // {batch}) + ([{n} % {batch}] if {n} % {batch} else [])
rng = np.random.default_rng(0)
batches = [rng.standard_normal((s, 3, 224, 224), dtype=np.float32) for s in sizes]
enc.embed(batches[0], {precision!r})  # warm-up (oneDNN primitive creation, cuDNN autotuning)
best = float("inf")
for _ in range({repeats}):
    start = time.perf_counter()
    for b in batches:
        enc.embed(b, {precision!r})
    best = min(best, time.perf_counter() - start)
print(json.dumps({{"seconds": best}}))
"""

DECODE = """
import json, time
from pathlib import Path
from reshape.features import centre_crop_normalise
from reshape.features._loading import _ImageSet
paths = sorted(Path({folder!r}).glob("*.png"))
dataset = _ImageSet(paths, centre_crop_normalise, 224)
start = time.perf_counter()
for i in range(len(dataset)):
    dataset[i]
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""


def base_commit(rev: str | None) -> str:
    """``rev``, or the parent of the commit that turned reshape/features.py into a package."""
    if rev:
        return rev
    split = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%H", "--diff-filter=D", "--",
                            "reshape/features.py"], capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    if not split:
        sys.exit("cannot find the commit that split reshape/features.py; pass --base REV")
    return f"{split}^"


def export(rev: str, dest: Path) -> None:
    """The packages of ``rev`` in ``dest``, laid out as installed (``data_manifests`` and ``cli`` under
    ``reshape``, as pyproject's package-dir maps them)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "reshape", "distortions", "cli",
                              "data_manifests"], capture_output=True, check=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "data_manifests").rename(dest / "reshape" / "data_manifests")
    (dest / "cli").rename(dest / "reshape" / "cli")


def embeddings(path: Path) -> np.ndarray:
    from reshape.artifacts import read_features

    return read_features(path).embeddings


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    folder, one = tmp / "images", tmp / "one"
    w, h = (int(v) for v in args.size.lower().split("x"))
    make_images(folder, args.images, (w, h))
    make_images(one, 1, (w, h))
    options = f"batch_size={args.batch_size}" + (
        f", workers={args.workers}" if args.workers is not None else ""
    )
    env = dict(os.environ)  # this tree, as installed (editable)
    t: dict[str, float] = {}
    t["startup"], _ = timed(STAGE.format(folder=str(one), out=str(tmp / "one.parquet"), device=args.device,
                                         options=options), env)  # fmt: skip
    t["stage"], info = timed(STAGE.format(folder=str(folder), out=str(tmp / "stage.parquet"), device=args.device,
                                          options=options), env)  # fmt: skip
    settings = info["settings"]
    workers = int(settings.split(", ")[-1].split()[0])
    memory_format = settings.split(", ")[2]
    compute = COMPUTE.format(device=args.device, memory_format=memory_format, batch=args.batch_size,
                             n=args.images, precision=info["precision"], repeats=args.repeats)  # fmt: skip
    _, got = timed(compute, env)
    t["compute"] = got["seconds"]
    _, got = timed(DECODE.format(folder=str(folder)), env)
    t["decode"] = got["seconds"]
    t["workers"] = workers
    print(f"stage settings: {settings}")
    if not args.skip_today:
        old = tmp / "today"
        old.mkdir()
        rev = base_commit(args.base)
        export(rev, old)
        env_old = {**os.environ, "PYTHONPATH": str(old)}
        t["today"], info_old = timed(ONLY_PYTHONPATH + STAGE.format(folder=str(folder), out=str(tmp / "today.parquet"),
                                                  device=args.device, options=options.split(", workers")[0]),
                                     env_old)  # fmt: skip
        if not info_old["file"].startswith(str(old)):
            sys.exit(f"today's code was not the one imported ({info_old['file']})")
        print(f"today = {rev} ({info_old['precision']}, its defaults)")
        if args.device == "cpu":
            timed(STAGE.format(folder=str(folder), out=str(tmp / "repro.parquet"), device=args.device,
                               options=options + ', precision="fp32", memory_format="contiguous"'), env)  # fmt: skip
            same = np.array_equal(embeddings(tmp / "repro.parquet"), embeddings(tmp / "today.parquet"))
            print(f"--precision fp32 --memory-format contiguous reproduces today's features byte for byte: "
                  f"{'yes' if same else 'NO'}")  # fmt: skip
    return t


def report(t: dict[str, float], n: int) -> None:
    io_floor = t["decode"] / max(1, t["workers"])
    bound = max(t["compute"], io_floor) + t["startup"]
    rows = [("stage (whole process, defaults)", t["stage"]), ("start-up (stage on 1 image)", t["startup"]),
            ("compute floor (bare forward)", t["compute"]), ("decode, one process", t["decode"]),
            (f"I/O floor (decode / {t['workers']} workers)", io_floor), ("bound", bound)]  # fmt: skip
    if "today" in t:
        rows.append(("today's default (whole process)", t["today"]))
    for name, seconds in rows:
        print(f"{name:<36} {seconds:8.2f} s  {n / seconds:7.1f} img/s")
    ratio = t["stage"] / bound
    print(
        f"stage / bound = {ratio:.2f}x  (goal <= {GOAL_BOUND}x: {'met' if ratio <= GOAL_BOUND else 'NOT met'})"
    )
    if "today" in t:
        speedup = t["today"] / t["stage"]
        print(
            f"today / stage = {speedup:.2f}x  (goal >= {GOAL_TODAY}x: {'met' if speedup >= GOAL_TODAY else 'NOT met'})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=160, help="references to embed (default 160)")
    ap.add_argument("--size", default="512x384", help="their size WxH (default 512x384, as KADIS)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default: the stage's default)")
    ap.add_argument("--base", default=None, help="git revision of 'today' (default: before the split)")
    ap.add_argument("--repeats", type=int, default=1, help="bare-forward repeats, the best is kept")
    ap.add_argument("--skip-today", action="store_true", help="do not run the code before the change")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="features-floor-") as tmp:
        t = measure(args, Path(tmp))
    print(
        textwrap.dedent(f"""\
        {args.images} images of {args.size}, batch {args.batch_size}, device {args.device}, {os.cpu_count()} CPUs""")
    )
    report(t, args.images)


if __name__ == "__main__":
    main()
