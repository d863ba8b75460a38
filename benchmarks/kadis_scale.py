"""KADIS-700k at scale with `reshape distort --plan` (issue 30): throughput, projection, resume, journal.

    python benchmarks/kadis_scale.py [--refs 2000] [--size 512x384] [--workers 1] [--denoise-refs 1]
                                     [--entries 700000] [--dncnn-device cpu|cuda] [--skip-entries]
                                     [--rerun-refs 140000] [--rerun-base REV] [--only-rerun]

1. Synthesises ``--refs`` references (crops of scikit-image's natural photos, resized KADID-style) and a
   KADIS-like random plan (one type per reference, drawn uniformly; type 15 taken apart), and runs
   ``reshape distort --plan`` on it for PNG and for BMP, levels 1-5: images/s per core.
2. Type 15 apart: ``--denoise-refs`` references through a random-weight DnCNN-B of the real shape (20
   layers, 64 channels; MATLAB's weights are not public), as the stage runs it: s/image per core.
3. Projects the wall time of the full plan (140,000 references x 5 levels: 672,000 images of the 24 other
   types, 28,000 of type 15, the 1/25 share a uniform draw gives) on 1, 8 and 64 cores, and with one GPU
   for type 15 (measured when ``--dncnn-device cuda`` runs here, else an ESTIMATE from the network's
   FLOPs at an assumed sustained rate, and labelled so). Cores are assumed to scale linearly (optimistic).
4. The resume of the finished PNG run (nothing to do): seconds, and that it wrote nothing.
5. ``check_entries`` and the journal's take-over (load, listing, verification of every record) on
   ``--entries`` synthetic outputs (0-byte files with their journal records), and the manifest written
   from that many rows (streamed) with its peak traced memory.

6. The rerun of a finished ``--rerun-refs``-reference plan (default 140,000: 700,000 outputs) as whole
   ``reshape distort --plan`` processes: wall and CPU seconds, with every file the child opens for reading
   counted by an audit hook (goal: no image; for the sealed rerun, no journal segment either) and the
   output folder compared before and after (goal: nothing written). Three ways, interleaved: the sealed
   rerun (reshape.distort_seal), today's full take-over (the seal removed first, as after any change),
   and with ``--rerun-base REV`` the code at REV (git archive).

The full plan for comparison: the MATLAB script takes "around 1-2 days" (CONTRIQUE issue #26). On a
shared machine the numbers move with the load; say so when quoting them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from distortions_speed import archive_base  # this folder's benchmark: its git-archive helper
from PIL import Image

KADIS_REFS = 140_000
KADIS_DENOISE_IMAGES = 28_000  # 140,000 x 5 / 25
KADIS_OTHER_IMAGES = KADIS_REFS * 5 - KADIS_DENOISE_IMAGES
#: DnCNN-B FLOPs per pixel and plane: 2 x (3x3 x (1x64 + 18 x 64x64 + 64x1)) multiply-adds
DNCNN_FLOPS_PER_PIXEL = 2 * 9 * (64 + 18 * 64 * 64 + 64)
#: sustained rate assumed for the GPU ESTIMATE (fp32 convolutions on a current data-centre GPU)
ASSUMED_GPU_FLOPS = 20e12


def make_references(folder: Path, count: int, size: tuple[int, int], start: int = 0) -> list[str]:
    from skimage import data

    photos = [getattr(data, n)() for n in ("astronaut", "chelsea", "coffee", "rocket")]
    rng = np.random.default_rng(start)
    names = []
    for i in range(start, start + count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = int(h * 0.7), int(w * 0.7)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = Image.fromarray(photo[top : top + ch, left : left + cw]).convert("RGB")
        name = f"{i:06d}.png"
        crop.resize(size, Image.Resampling.LANCZOS).save(folder / name)
        names.append(name)
    return names


def write_plan(path: Path, names: list[str], types: list[int], seed: int) -> None:
    """One type per reference, drawn uniformly from ``types`` (KADIS-700k's shape)."""
    rng = np.random.default_rng(seed)
    drawn = rng.choice(types, size=len(names))
    path.write_text(
        "ref_im,dist_type\n" + "".join(f"{n},{int(t)}\n" for n, t in zip(names, drawn, strict=True))
    )


def random_dncnn(path: Path) -> None:
    """A DnCNN-B state_dict of the real shape (20 conv layers, 64 channels, BatchNorm) with random weights."""
    import torch

    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(1, 64, 3, padding=1), torch.nn.ReLU()]
    for _ in range(18):
        layers += [
            torch.nn.Conv2d(64, 64, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(64),
            torch.nn.ReLU(),
        ]
    layers.append(torch.nn.Conv2d(64, 1, 3, padding=1))
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(0.1)
    torch.save(net.state_dict(), path)


def timed_run(refs: Path, plan: Path, out: Path, fmt: str, workers: int, **options) -> tuple[float, object]:
    from reshape.distort import run_distort

    start = time.perf_counter()
    result = run_distort(refs, out, fmt=fmt, plan=plan, workers=workers, seed=0, **options)
    return time.perf_counter() - start, result


def hours(seconds: float) -> str:
    return f"{seconds / 3600:8.2f} h" if seconds >= 3600 else f"{seconds / 60:8.1f} min"


def synthetic_take_over(root: Path, entries: int) -> dict[str, float]:
    """``check_entries`` and the take-over of a finished run on ``entries`` recorded outputs."""
    from reshape.distort_output import settings_tag, take_over, write_manifest_rows
    from reshape.distort_plan import DistortJob, plan_jobs
    from reshape.outputs import check_entries
    from reshape.writer import FileRecord, Journal, OutputFolder

    out = root / "entries"
    out.mkdir()
    tag = settings_tag({"synthetic": True})
    n_refs = max(1, entries // 5)
    start = time.perf_counter()
    planned = plan_jobs([f"{i:06d}.png" for i in range(n_refs)], [f"/refs/{i:06d}.png" for i in range(n_refs)],
                        [3], [1, 2, 3, 4, 5], 0, "bmp")  # fmt: skip
    plan_seconds = time.perf_counter() - start
    del planned
    jobs = []
    for i in range(entries):
        ref, t, lv = f"{i // 5:06d}.png", 1 + (i // 5) % 25, 1 + i % 5
        jobs.append(DistortJob(ref, f"/refs/{ref}", t, lv, f"{i // 5:06d}_{t:02d}_{lv:02d}.bmp", i))
    start = time.perf_counter()
    for job in jobs:
        (out / job.dist_img).touch()
    made = time.perf_counter() - start
    folder = OutputFolder(out)
    listing = folder.listing()
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    records = [
        FileRecord(
            j.dist_img,
            empty,
            0,
            listing[j.dist_img].mtime_ns,
            {
                "dist_img": j.dist_img,
                "ref_img": j.ref_img,
                "dist_type": j.dist_type,
                "dist_name": "x",
                "dist_level": j.dist_level,
                "parameter": 1.0,
                "seed": j.seed,
                "sha256": empty,
                "denoiser": None,
                "settings": tag,
            },
        )  # fmt: skip
        for j in jobs
    ]
    timings = {
        "create files (not reshape)": made,
        f"plan_jobs ({n_refs} references x 5 levels)": plan_seconds,
    }
    start = time.perf_counter()
    Journal(folder).append(records)
    timings["journal append (one segment)"] = time.perf_counter() - start
    segment = sum(p.stat().st_size for p in (out / ".reshape-journal").iterdir())
    timings["journal segment size MiB"] = segment / 2**20
    spare = OutputFolder(root / "journal-memory")
    tracemalloc.start()  # apart from the timing: tracing slows allocation several-fold
    Journal(spare).append(records)
    timings["journal append (one segment) peak traced MiB beyond the records"] = (
        tracemalloc.get_traced_memory()[1] / 2**20
    )
    tracemalloc.stop()
    shutil.rmtree(root / "journal-memory")
    del records
    start = time.perf_counter()
    check_entries(str(out), [j.dist_img for j in jobs])
    timings["check_entries"] = time.perf_counter() - start
    start = time.perf_counter()
    state = take_over(folder, Journal(folder), jobs, manifest=str(root / "m.csv"), tag=tag, denoiser=None,
                      overwrite=False)  # fmt: skip
    timings["take-over (load + listing + verify)"] = time.perf_counter() - start
    assert len(state.done) == entries and not state.todo, (len(state.done), len(state.todo))
    start = time.perf_counter()
    write_manifest_rows(str(root / "m.csv"), state.done.values(), {"synthetic": True})
    timings["manifest write (streamed)"] = time.perf_counter() - start
    tracemalloc.start()
    write_manifest_rows(str(root / "m.csv"), state.done.values(), {"synthetic": True})
    timings["manifest write (streamed) peak traced MiB"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    # the same rows as one frame (how the manifest was written before): the baseline of the memory bound
    import pandas as pd

    from reshape.distort_output import write_manifest

    tracemalloc.start()
    frame = pd.DataFrame(list(state.done.values())).drop(columns=["settings"])  # rows carry the run's tag
    write_manifest(str(root / "m2.csv"), frame, {"synthetic": True})
    timings["manifest write (one frame, before) peak traced MiB"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    del frame
    same = (root / "m.csv").read_bytes() == (root / "m2.csv").read_bytes()
    print(f"  streamed manifest byte-identical to the one-frame manifest: {same}")
    return timings


#: Run in a child process: the CLI as a user runs it, with every file it opens for reading counted (an
#: audit hook on ``open``), printed at exit (the CLI ends with ``os._exit`` after the atexit handlers).
_COUNTING_CLI = """
import atexit, sys
opened = {"image": 0, "journal": 0, "other": 0}
def hook(event, args):
    if event == "open" and isinstance(args[0], str):
        mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
        name = args[0].lower()
        kind = "image" if name.endswith((".png", ".bmp")) else "journal" if name.endswith(".jsonl") else "other"
        if "r" in mode or mode == "":
            opened[kind] += 1
sys.addaudithook(hook)
atexit.register(lambda: print(
    f"OPENED images={opened['image']} journal={opened['journal']} other={opened['other']}", file=sys.stderr
))
from reshape.cli.main import main
sys.argv = ["reshape", *sys.argv[1:]]
main()
"""


def _timed_rerun(
    command: list[str], out: Path, env: dict[str, str], cwd: Path, *, unseal: bool = False
) -> tuple[float, float, int, int, int]:
    """(wall seconds, CPU seconds, images opened, journal segments opened, files written or changed) of
    one whole rerun process. CPU time (user + system of the child) moves less than wall time on a shared
    machine. ``unseal``: remove the seal first, so that the full take-over runs (it seals again)."""
    from reshape import storage
    from reshape.distort_seal import SEAL_NAME
    from reshape.writer import JOURNAL_DIR

    if unseal:
        (out / JOURNAL_DIR / SEAL_NAME).unlink(missing_ok=True)
    before = storage.list_files(out), (out / "manifest.csv").read_bytes()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    rerun = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=cwd)
    seconds = time.perf_counter() - start
    after_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after_usage.ru_utime + after_usage.ru_stime - usage.ru_utime - usage.ru_stime
    after = storage.list_files(out), (out / "manifest.csv").read_bytes()
    opened = re.search(r"OPENED images=(\d+) journal=(\d+) other=(\d+)", rerun.stderr)
    if not opened or "0 written" not in rerun.stdout:
        raise SystemExit(f"unexpected rerun output: {rerun.stdout[-500:]} {rerun.stderr[-2000:]}")
    changed = sum(before[0].get(k) != v for k, v in after[0].items()) + (before[1] != after[1])
    return seconds, cpu, int(opened.group(1)), int(opened.group(2)), changed


def finished_plan_rerun(
    root: Path,
    n_refs: int,
    workers: int,
    *,
    base_pkg: Path | None = None,
    base_label: str = "",
    repeats: int = 2,
) -> dict[str, float]:
    """The rerun of a finished ``n_refs``-reference plan (x 5 levels), as a whole ``reshape distort``
    process: seconds, images opened (goal 0), files written (goal 0).

    The finished state is made without distorting ``n_refs`` x 5 images: the CLI makes the first
    reference's five images for real (so the records are the stage's own), the other outputs are empty
    files recorded in the journal with the fields the stage records (``distort_shards._manifest_row``,
    the reference's size and mtime, the run's settings tag read from the real records), and one CLI run
    then finds everything done and writes the manifest. Nothing in the timed rerun reads the outputs'
    bytes (size and mtime are compared), so their content does not matter to what is measured."""
    from reshape.distort_plan import plan_jobs_per_reference, read_plan
    from reshape.distort_shards import _manifest_row
    from reshape.writer import FileRecord, Journal, OutputFolder

    refs, out = root / "rerun-refs", root / "rerun-out"
    refs.mkdir()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    one = make_references(refs, 1, (64, 48))[0]
    data = (refs / one).read_bytes()
    names = [one] + [f"r{i:06d}.png" for i in range(1, n_refs)]
    for name in names[1:]:
        (refs / name).write_bytes(data)
    write_plan(root / "rerun-plan.csv", names, [t for t in range(1, 26) if t != 15], seed=2)
    first = root / "rerun-first.csv"
    first.write_text("ref_im,dist_type\n" + (root / "rerun-plan.csv").read_text().splitlines()[1] + "\n")
    cli = [sys.executable, "-c", _COUNTING_CLI, "distort", str(refs), "--format", "bmp", "--out", str(out),
           "--workers", str(workers)]  # fmt: skip
    made = subprocess.run([*cli, "--plan", str(first)], check=True, capture_output=True, text=True, cwd=root)
    if "OPENED images=0 " in made.stderr:  # it read the reference: the counting hook must have seen it
        raise SystemExit("the audit hook counted no image read by a run that made five images")
    folder = OutputFolder(out)
    journal = Journal(folder)
    real = journal.load()
    tag = next(iter(real.values())).meta["settings"]
    plan = read_plan(root / "rerun-plan.csv", refs)
    jobs = plan_jobs_per_reference(plan, plan.paths, [1, 2, 3, 4, 5], 0, "bmp")
    empty = hashlib.sha256(b"").hexdigest()
    records = []
    for job in jobs:
        if job.dist_img in real:
            continue
        target = out / job.dist_img
        target.touch()
        ref = os.stat(job.ref_path)
        meta = {
            **_manifest_row(job, empty, None),
            "ref_stat": [ref.st_size, ref.st_mtime_ns],
            "settings": tag,
        }
        records.append(FileRecord(job.dist_img, empty, 0, target.stat().st_mtime_ns, meta))
    journal.append(records)
    del records, jobs, plan
    timings["make the finished state (not reshape)"] = time.perf_counter() - start

    full = [*cli, "--plan", str(root / "rerun-plan.csv")]
    start = time.perf_counter()
    finishing = subprocess.run(full, check=True, capture_output=True, text=True, cwd=root)
    timings["first full run: everything recorded, manifest written"] = time.perf_counter() - start
    print("  " + finishing.stdout.strip().splitlines()[-1])
    # (environment, remove the seal first): the sealed rerun, the full take-over of today's code (the seal
    # removed before each run, as after any change), and the code at --rerun-base
    codes = {
        "today's code, sealed": (dict(os.environ), False),
        "today's code, seal removed (full take-over)": (dict(os.environ), True),
    }
    if base_pkg is not None:
        codes[f"code at {base_label}"] = ({**os.environ, "PYTHONPATH": str(base_pkg)}, False)
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeats):  # interleaved, best of each
        for label, (env, unseal) in codes.items():
            seconds, cpu, opened, journal, changed = _timed_rerun(full, out, env, root, unseal=unseal)
            best[label] = min(best.get(label, (seconds, cpu)), (seconds, cpu))
            if opened or changed:
                raise SystemExit(f"{label}: the rerun opened {opened} image(s) and changed {changed} file(s)")
            if label.endswith("sealed") and journal:
                raise SystemExit(f"{label}: the sealed rerun opened {journal} journal segment(s)")
    for label, (seconds, cpu) in best.items():
        timings[f"RERUN of the finished plan, whole process, {label} (best of {repeats}; 0 images opened, "
                "0 files written)"] = seconds  # fmt: skip
        timings[f"  its CPU time (user + system), {label}"] = cpu
    sealed = best["today's code, sealed"]
    for label, (seconds, cpu) in best.items():
        if label != "today's code, sealed":
            timings[f"  ratio ({label} / sealed), wall"] = seconds / sealed[0]
            timings[f"  ratio ({label} / sealed), CPU"] = cpu / sealed[1]
    return timings


def throughput_and_projection(root: Path, args: argparse.Namespace) -> None:
    """Parts 1-4 of the module notes: images/s per core, type 15, the projection, the small resume."""
    size = tuple(int(v) for v in args.size.lower().split("x"))
    cores = args.workers
    refs = root / "refs"
    refs.mkdir()
    start = time.perf_counter()
    names = make_references(refs, args.refs, size)
    print(f"synthesised {args.refs} references {args.size} in {time.perf_counter() - start:.1f} s")
    others = [t for t in range(1, 26) if t != 15]
    write_plan(root / "plan.csv", names, others, seed=1)
    per_core: dict[str, float] = {}
    for fmt in ("png", "bmp"):
        seconds, result = timed_run(refs, root / "plan.csv", root / f"out-{fmt}", fmt, cores)
        per_core[fmt] = result.n_images / seconds / cores
        print(f"{fmt}: {result.n_images} images (24 types, no 15) in {seconds:.1f} s: "
              f"{per_core[fmt]:.1f} images/s per core")  # fmt: skip
    seconds, result = timed_run(refs, root / "plan.csv", root / "out-png", "png", cores)
    print(f"resume of the finished png run: {seconds:.2f} s, {result.n_written} written "
          f"({result.n_reused} reused)  [goal: seconds, 0 written]")  # fmt: skip

    weights = root / "dncnn_b_random.pth"
    random_dncnn(weights)
    denoise_names = names[: args.denoise_refs]
    (root / "plan15.csv").write_text("ref_im,dist_type\n" + "".join(f"{n},15\n" for n in denoise_names))
    seconds, result = timed_run(
        refs, root / "plan15.csv", root / "out-15", "bmp", cores, dncnn_weights=weights,
        dncnn_device=args.dncnn_device, dncnn_precision=args.dncnn_precision,
    )  # fmt: skip
    s15 = seconds / result.n_images
    print(f"type 15 ({args.dncnn_device}, {args.dncnn_precision}, {result.denoiser}): {result.n_images} "
          f"images in {seconds:.1f} s: {s15:.2f} s/image with {cores} worker(s)")  # fmt: skip

    other_core_s = 1.0 / per_core["bmp"]
    print("\nprojection, full KADIS-700k plan as BMP (140,000 references; linear scaling assumed):")
    print(f"  the 24 other types: {KADIS_OTHER_IMAGES} images, {other_core_s * 1000:.0f} ms/image/core")
    if args.dncnn_device == "cpu":
        s15_core = s15 * cores
        print(f"  type 15 on CPU: {KADIS_DENOISE_IMAGES} images, {s15_core:.2f} s/image/core")
        for n in (1, 8, 64):
            other = KADIS_OTHER_IMAGES * other_core_s / n
            den = KADIS_DENOISE_IMAGES * s15_core / n
            print(f"  {n:2d} cores: others {hours(other)} + type 15 {hours(den)} = {hours(other + den)}")
        gpu_s = 3 * size[0] * size[1] * DNCNN_FLOPS_PER_PIXEL / ASSUMED_GPU_FLOPS
        gpu_label = f"ESTIMATE ({ASSUMED_GPU_FLOPS / 1e12:.0f} TFLOP/s assumed, not measured)"
    else:
        gpu_s, gpu_label = s15, "measured here"
    for n in (1, 8, 64):
        other = KADIS_OTHER_IMAGES * other_core_s / n
        den = KADIS_DENOISE_IMAGES * gpu_s
        print(f"  {n:2d} cores + 1 GPU for type 15: max(others {hours(other)}, type 15 {hours(den)}) "
              f"= {hours(max(other, den))}  [GPU {gpu_s * 1000:.0f} ms/image, {gpu_label}]")  # fmt: skip
    print("  MATLAB generate_kadis700k.m: 'around 1-2 days' (CONTRIQUE issue #26)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refs", type=int, default=2000, help="synthetic references (default 2000)")
    parser.add_argument("--size", default="512x384", help="reference size WxH (default 512x384, as KADIS)")
    parser.add_argument("--workers", type=int, default=1, help="distort --workers (cores used)")
    parser.add_argument("--denoise-refs", type=int, default=1, help="type-15 references to time (x5 images)")
    parser.add_argument("--dncnn-device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dncnn-precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--entries", type=int, default=700_000, help="synthetic journal entries (default 700k)"
    )
    parser.add_argument("--skip-entries", action="store_true", help="skip the journal/check_entries part")
    parser.add_argument(
        "--rerun-base", metavar="REV", default=None,
        help="also rerun with the code at this git revision (git archive into a temporary folder), interleaved",
    )  # fmt: skip
    parser.add_argument("--only-rerun", action="store_true", help="run only the rerun part")
    parser.add_argument(
        "--rerun-refs", type=int, default=KADIS_REFS,
        help="references of the finished plan rerun as a whole process (default 140,000: 700k images; 0 skips)",
    )  # fmt: skip
    args = parser.parse_args()
    cores = args.workers
    root = Path(tempfile.mkdtemp(prefix="kadis-scale-"))
    try:
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; workers {cores}")
        if not args.only_rerun:
            throughput_and_projection(root, args)
        if args.rerun_refs:
            print(f"\nrerun of a finished {args.rerun_refs}-reference plan ({args.rerun_refs * 5} images):")
            base = archive_base(args.rerun_base, root) if args.rerun_base else None
            rerun = finished_plan_rerun(
                root, args.rerun_refs, cores, base_pkg=base, base_label=args.rerun_base
            )
            for what, value in rerun.items():
                print(f"  {what}: {value:.2f}" + ("x" if "ratio" in what else " s"))

        if not args.skip_entries and not args.only_rerun:
            print(f"\n{args.entries} synthetic recorded outputs:")
            for what, value in synthetic_take_over(root, args.entries).items():
                unit = "" if "MiB" in what else " s"
                print(f"  {what}: {value:.2f}{unit}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
