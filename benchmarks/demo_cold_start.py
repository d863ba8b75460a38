"""Cold versus warm `reshape demo`: where does a first run's extra time go?

Runs `reshape demo` twice, each time in a fresh Python process under ``python -X importtime`` with a
fresh ``--out``:

* **cold**: first, with a fresh, empty matplotlib config/cache folder (``MPLCONFIGDIR``) and, with
  ``--drop-caches`` (root on Linux), the kernel's page cache dropped first, so every shared library
  (torch's CUDA build maps about 4 GB of them) is read from disk again, as on a machine that just booted;
* **warm**: second, same settings, caches as the cold run left them.

Both runs set ``PYTHONDONTWRITEBYTECODE=1``, so neither reuses bytecode written by the other; torch's hub
cache is left as it is (the demo uses cached ResNet-50 weights when present, random weights otherwise; the
report says which). It prints the wall time of both, their ratio, and per phase: the import of
``reshape.cli.main``, the demo's data build, each pipeline stage, encoder (model) construction, process
pool start-up (time to the first shard result), verify; then the slowest imports of the whole run from
``-X importtime`` (imports done lazily inside a stage included) and the bytes each phase read from disk
(``/proc/self/io``), which is what makes a cold run slow.

    python benchmarks/demo_cold_start.py [--drop-caches] [--smoke] [--keep DIR]

The timing wrappers below call the real functions; they only record when a phase starts and ends.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# ------------------------------------------------------------------------------------------- child side
def _io_read_bytes() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _sample() -> tuple[float, int, int]:
    return time.perf_counter(), _io_read_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_majflt


class PhaseLog:
    """Phases in the order they ran: name -> [seconds, bytes read from disk, major page faults]."""

    def __init__(self) -> None:
        self.phases: dict[str, list[float]] = {}

    def add(self, name: str, start: tuple[float, int, int]) -> None:
        end = _sample()
        row = self.phases.setdefault(name, [0.0, 0, 0])
        row[0] += end[0] - start[0]
        row[1] += end[1] - start[1]
        row[2] += end[2] - start[2]

    def wrap(self, owner: object, attr: str, name: str | None = None) -> None:
        fn = getattr(owner, attr)
        log = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = _sample()
            try:
                return fn(*args, **kwargs)
            finally:
                log.add(name or attr, start)

        setattr(owner, attr, timed)

    def wrap_pool(self, backends: object) -> None:
        """Process pool start-up = from opening the pool to its first shard result."""
        run_pool = backends._run_pool
        log = self

        def timed_pool(*args, **kwargs):
            start = _sample()
            first = True
            for item in run_pool(*args, **kwargs):
                if first:
                    log.add("process pool start-up (to first result)", start)
                    first = False
                yield item

        backends._run_pool = timed_pool


def child(out: Path, report: Path, smoke: bool) -> None:
    log = PhaseLog()
    start = _sample()
    import reshape.cli.main as cli_main

    log.add("import reshape.cli.main", start)
    import reshape.backends
    import reshape.demo
    import reshape.features
    import reshape.pipeline
    import reshape.verify

    log.wrap(reshape.demo, "build_demo_data", "demo data build")
    log.wrap(reshape.demo, "local_resnet_weights", "look up cached weights (imports torch)")
    log.wrap(reshape.features, "_build_encoder", "encoder (model) construction")
    log.wrap(reshape.verify, "verify_dataset", "verify")
    log.wrap_pool(reshape.backends)
    invoke = reshape.pipeline._invoke

    def timed_invoke(plan, command, config):
        begin = _sample()
        try:
            return invoke(plan, command, config)
        finally:
            log.add(f"stage {plan.name}", begin)

    reshape.pipeline._invoke = timed_invoke
    args = ["-q", "demo", "--out", str(out)] + (["--smoke"] if smoke else [])
    begin = _sample()
    cli_main.cli.main(args, prog_name="reshape", standalone_mode=False)
    log.add("reshape demo (whole command)", begin)
    stages = json.loads((out / "run" / "run.json").read_text())["stages"]
    weights = "cached ImageNet" if "default" in (out / "pipeline.toml").read_text() else "random init"
    report.write_text(json.dumps({"phases": log.phases, "stages": stages, "weights": weights}))


# ------------------------------------------------------------------------------------------ parent side
def drop_caches() -> str:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        return f"not dropped ({exc.strerror})"
    return "dropped"


def parse_importtime(stderr: str) -> dict[str, float]:
    """Top-level imports (no importer above them in this process) -> cumulative seconds."""
    top: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        if name.startswith("  "):  # indented: imported by the entry above
            continue
        top[name.strip()] = top.get(name.strip(), 0.0) + int(cumulative) / 1e6
    return top


def run_once(label: str, work: Path, env: dict[str, str], smoke: bool) -> dict:
    out, report = work / f"{label}-out", work / f"{label}.json"
    cmd = [sys.executable, "-X", "importtime", __file__, "--child", str(out), str(report)]
    start = time.perf_counter()
    res = subprocess.run(cmd + (["--smoke"] if smoke else []), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"{label} run failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    data = json.loads(report.read_text())
    data["wall"] = wall
    data["imports"] = parse_importtime(res.stderr)
    return data


def print_report(cold: dict, warm: dict, caches: str) -> None:
    print(f"page cache before the cold run: {caches}; encoder weights: {cold['weights']}")
    print(f"\n{'phase':<44}{'cold s':>9}{'warm s':>9}{'cold-warm':>10}{'cold MB read':>14}")
    for name, (sec, read, _flt) in cold["phases"].items():
        w = warm["phases"].get(name, [0.0])[0]
        print(f"{name:<44}{sec:9.2f}{w:9.2f}{sec - w:10.2f}{read / 1e6:14.1f}")
    stage_sum = sum(s["seconds"] for s in cold["stages"].values())
    warm_sum = sum(s["seconds"] for s in warm["stages"].values())
    print(f"{'sum of the stage times reshape prints':<44}{stage_sum:9.2f}{warm_sum:9.2f}")
    print(f"{'process wall time (start to exit)':<44}{cold['wall']:9.2f}{warm['wall']:9.2f}")
    print(f"\ncold / warm wall time: {cold['wall'] / warm['wall']:.2f}x")
    print(
        f"outside the stages (imports, data build, verify, exit): cold {cold['wall'] - stage_sum:.1f} s, "
        f"warm {warm['wall'] - warm_sum:.1f} s"
    )
    print("\nslowest top-level imports of the whole run (python -X importtime, cumulative):")
    print(f"{'module':<44}{'cold s':>9}{'warm s':>9}")
    for name, sec in sorted(cold["imports"].items(), key=lambda kv: -kv[1])[:12]:
        print(f"{name:<44}{sec:9.2f}{warm['imports'].get(name, 0.0):9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache first (root)")
    parser.add_argument("--smoke", action="store_true", help="time `reshape demo --smoke` instead")
    parser.add_argument("--keep", type=Path, help="keep the demo outputs in this (new) folder")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.smoke)
        return
    work = Path(tempfile.mkdtemp(prefix="demo-cold-")) if args.keep is None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MPLCONFIGDIR": str(work / "mplconfig"), "PYTHONDONTWRITEBYTECODE": "1"}
    caches = drop_caches() if args.drop_caches else "left warm (no --drop-caches)"
    try:
        cold = run_once("cold", work, env, args.smoke)
        warm = run_once("warm", work, env, args.smoke)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print_report(cold, warm, caches)


if __name__ == "__main__":
    main()
