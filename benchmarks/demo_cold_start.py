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
(``getrusage``'s block input, page faults included), which is what makes a cold run slow, and (with
util-linux ``fincore``) how much of torch's shared libraries the cold run pulled into the page cache, CUDA-only
libraries apart. Other processes on the machine that use torch keep some of it cached; the load average is
printed since CPU contention shows up as wall time well above CPU time.

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
def _sample() -> tuple[float, float, int]:
    """(wall clock, CPU seconds of this process, bytes it read from disk, page faults included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter(), usage.ru_utime + usage.ru_stime, usage.ru_inblock * 512


class PhaseLog:
    """Phases in the order they ran: name -> [wall seconds, CPU seconds, bytes read from disk]."""

    def __init__(self) -> None:
        self.phases: dict[str, list[float]] = {}

    def add(self, name: str, start: tuple[float, float, int]) -> None:
        end = _sample()
        row = self.phases.setdefault(name, [0.0, 0.0, 0])
        for i in range(3):
            row[i] += end[i] - start[i]

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
    started = time.time()
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
    before = _sample()
    report.write_text(
        json.dumps(
            {
                "phases": log.phases, "stages": stages, "weights": weights, "started": started,
                "finished": time.time(), "cpu": before[1], "read": before[2],
            }
        )
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ parent side
def drop_caches() -> str:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        return f"not dropped ({exc.strerror})"
    return "dropped"


def torch_libraries() -> list[Path]:
    """The shared libraries of torch and of the nvidia-* wheels its CUDA build loads (found without importing)."""
    import importlib.util

    found: list[Path] = []
    for package in ("torch", "nvidia"):
        spec = importlib.util.find_spec(package)
        for root in (spec.submodule_search_locations or []) if spec else []:
            found += [p for p in Path(root).rglob("*.so*") if p.is_file()]
    return found


def resident_bytes(paths: list[Path]) -> dict[str, int]:
    """Bytes of each file in the page cache (util-linux ``fincore``); empty without fincore."""
    if not paths or shutil.which("fincore") is None:
        return {}
    res = subprocess.run(
        ["fincore", "-b", "-n", "-o", "RES,FILE", *map(str, paths)], capture_output=True, text=True
    )
    out = {}
    for line in res.stdout.splitlines():
        size, _, name = line.strip().partition(" ")
        if size.isdigit():
            out[name.strip()] = int(size)
    return out


def print_libraries(before: dict[str, int], after: dict[str, int]) -> None:
    """What the cold run pulled into the page cache from torch's libraries: CUDA-only ones vs the rest."""
    if not after:
        return
    grown = {name: after[name] - before.get(name, 0) for name in after}
    cuda = sum(v for k, v in grown.items() if "/nvidia/" in k or "cuda" in Path(k).name)
    print(
        f"\ntorch's shared libraries read into the page cache by the cold run: {sum(grown.values()) / 1e6:.0f} MB, "
        f"of which CUDA-only libraries (nvidia-*, libtorch_cuda*): {cuda / 1e6:.0f} MB"
    )
    for name, size in sorted(grown.items(), key=lambda kv: -kv[1])[:6]:
        print(f"  {size / 1e6:7.1f} MB  {Path(name).name}")


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
    load = os.getloadavg()[0]
    spawned = time.time()
    start = time.perf_counter()
    res = subprocess.run(cmd + (["--smoke"] if smoke else []), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    returned = time.time()
    if res.returncode != 0:
        sys.exit(f"{label} run failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    data = json.loads(report.read_text())
    data["wall"] = wall
    data["load"] = load
    data["startup"] = data["started"] - spawned  # interpreter and site start-up, up to the child's first line
    data["exit"] = returned - data["finished"]  # interpreter shut-down (and the report write)
    data["imports"] = parse_importtime(res.stderr)
    return data


def print_report(cold: dict, warm: dict, caches: str) -> None:
    print(f"page cache before the cold run: {caches}; encoder weights: {cold['weights']}")
    print(
        f"1-min load average before the runs: cold {cold['load']:.1f}, warm {warm['load']:.1f} (2 = both cores busy)"
    )
    head = f"{'phase':<42}{'cold s':>8}{'cpu s':>7}{'MB read':>9}{'warm s':>8}{'cpu s':>7}{'cold-warm':>10}"
    print("\n" + head)
    rows = [("python start-up (to the first line)", [cold["startup"], 0.0, 0], [warm["startup"], 0.0, 0])]
    rows += [(name, row, warm["phases"].get(name, [0.0, 0.0, 0])) for name, row in cold["phases"].items()]
    rows.append(("python exit", [cold["exit"], 0.0, 0], [warm["exit"], 0.0, 0]))
    for name, (sec, cpu, read), (wsec, wcpu, _wread) in rows:
        print(f"{name:<42}{sec:8.2f}{cpu:7.2f}{read / 1e6:9.1f}{wsec:8.2f}{wcpu:7.2f}{sec - wsec:10.2f}")
    if not any(name.startswith("process pool") for name in cold["phases"]):
        print(f"{'process pool start-up':<42}  none: no stage started a pool (distort ran with 1 worker)")
    stage_sum = sum(s["seconds"] for s in cold["stages"].values())
    warm_sum = sum(s["seconds"] for s in warm["stages"].values())
    print(f"{'sum of the stage times reshape prints':<42}{stage_sum:8.2f}{'':16}{warm_sum:8.2f}")
    print(
        f"{'whole process':<42}{cold['wall']:8.2f}{cold['cpu']:7.2f}{cold['read'] / 1e6:9.1f}"
        f"{warm['wall']:8.2f}{warm['cpu']:7.2f}{cold['wall'] - warm['wall']:10.2f}"
    )
    print(f"\ncold / warm wall time: {cold['wall'] / warm['wall']:.2f}x")
    print(
        f"outside the stages (start-up, imports, data build, verify, exit): cold {cold['wall'] - stage_sum:.1f} s, "
        f"warm {warm['wall'] - warm_sum:.1f} s; waiting (wall - CPU) cold {cold['wall'] - cold['cpu']:.1f} s, "
        f"warm {warm['wall'] - warm['cpu']:.1f} s"
    )
    print("\nslowest top-level imports of the whole run (python -X importtime, cumulative):")
    print(f"{'module':<42}{'cold s':>8}{'warm s':>8}")
    for name, sec in sorted(cold["imports"].items(), key=lambda kv: -kv[1])[:12]:
        print(f"{name:<42}{sec:8.2f}{warm['imports'].get(name, 0.0):8.2f}")


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
    libraries = torch_libraries()
    resident_before = resident_bytes(libraries)
    try:
        cold = run_once("cold", work, env, args.smoke)
        resident_after = resident_bytes(libraries)
        warm = run_once("warm", work, env, args.smoke)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print_report(cold, warm, caches)
    print_libraries(resident_before, resident_after)


if __name__ == "__main__":
    main()
