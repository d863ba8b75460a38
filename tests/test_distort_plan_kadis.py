"""`reshape distort --plan` / `--random-types` (issue 30): KADIS-700k plans, locally and on Ray.

A plan gives each reference its own types; every level 1-5 is written as ``<stem>_<tt>_<ll>.<ext>``,
the same bytes as the same cell of a grid run, whatever the worker count or backend. Bad plans are one
line, exit 2, before any work; a rerun of a finished plan reads no image.
"""

from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import pytest
from cli_output import without_steps
from click.testing import CliRunner
from opened_files import opened_files
from PIL import Image
from ray_helpers import local_ray, needs_ray
from shard_toys import folder_bytes

from reshape.backends import map_shards
from reshape.cli.main import cli
from reshape.distort import run_distort
from reshape.distort_seal import SEAL_NAME
from reshape.writer import JOURNAL_DIR

PLAN = "ref_im,dist_type\nI01.png,1\nI02.png,denoise\nI03.png,11\nI03.png,18\nI04.png,gaussian_blur\n"


@pytest.fixture(scope="module")
def refs(kadid_named_refs, stand_ins) -> Path:
    return kadid_named_refs


@pytest.fixture(scope="module")
def plan_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plan") / "kadis700k_ref_imgs.csv"
    path.write_text(PLAN)
    return path


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory, refs, plan_csv) -> Path:
    """The plan run in this process: what every other run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("one") / "out"
    code, _, stderr = invoke(refs, "--plan", plan_csv, "--format", "bmp", "--out", out, "--seed", "3")
    assert code == 0, stderr
    return out


def invoke(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["distort", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, without_steps(result.stderr)


def plan_rows(path: Path) -> list[tuple[str, int]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ref_im", "dist_type"]
    return [(ref, int(t)) for ref, t in rows[1:]]


def test_plan_writes_every_level_of_each_row_in_kadis_names(one_worker, refs, tmp_path):
    names = sorted(p.name for p in one_worker.glob("*.bmp"))
    rows = [("I01", 1), ("I02", 15), ("I03", 11), ("I03", 18), ("I04", 1)]
    assert names == sorted(f"{stem}_{t:02d}_{lv:02d}.bmp" for stem, t in rows for lv in range(1, 6))
    with Image.open(one_worker / "I03_18_05.bmp") as im:
        assert im.format == "BMP" and im.size == (64, 48)
    # a plan row makes the same bytes as the same cell of a grid run (names and seeds per cell)
    grid = tmp_path / "grid"
    code, _, stderr = invoke(
        refs, "--types", "11", "--levels", "1-5", "--format", "bmp", "--out", grid, "--seed", "3"
    )
    assert code == 0, stderr
    for lv in range(1, 6):
        name = f"I03_11_{lv:02d}.bmp"
        assert (grid / name).read_bytes() == (one_worker / name).read_bytes()


def test_plan_is_byte_identical_for_two_workers(one_worker, refs, plan_csv, tmp_path):
    out = tmp_path / "out"
    code, _, stderr = invoke(
        refs, "--plan", plan_csv, "--format", "bmp", "--out", out, "--seed", "3", "--workers", "2"
    )
    assert code == 0, stderr
    assert folder_bytes(out) == folder_bytes(one_worker)
    assert len(folder_bytes(out)) == 25 + 1


def test_plan_resumes_only_missing_images(one_worker, refs, plan_csv, tmp_path):
    out = tmp_path / "out"
    run_distort(refs, out, fmt="bmp", plan=plan_csv, seed=3)
    (out / "I03_18_02.bmp").unlink()
    (out / "I02_15_04.bmp").unlink()
    result = run_distort(refs, out, fmt="bmp", plan=plan_csv, seed=3)
    assert (result.n_written, result.n_reused) == (2, 23)
    assert folder_bytes(out) == folder_bytes(one_worker)
    # the journal alone still records all 25 (a resume once numbered its segment 1 again, replacing the
    # first run's records; only the manifest's rows hid it): without the manifest nothing is foreign
    (out / "manifest.csv").unlink()
    (out / "manifest.csv.meta.json").unlink()
    result = run_distort(refs, out, fmt="bmp", plan=plan_csv, seed=3)
    assert (result.n_written, result.n_reused) == (0, 25)
    assert folder_bytes(out) == folder_bytes(one_worker)


def test_random_types_draw_is_seeded_and_rerunnable_as_a_plan(refs, tmp_path):
    first = run_distort(refs, tmp_path / "a", random_types=2, seed=5, levels=[1])
    drawn = plan_rows(tmp_path / "a" / "manifest.plan.csv")
    by_ref: dict[str, list[int]] = {}
    for ref, t in drawn:
        by_ref.setdefault(ref, []).append(t)
    assert sorted(by_ref) == ["I01.png", "I02.png", "I03.png", "I04.png"]
    assert all(len(set(ts)) == 2 and all(1 <= t <= 25 for t in ts) for ts in by_ref.values())
    assert first.n_images == 8
    # the same seed draws the same plan (in the driver, whatever the workers); another seed another plan
    run_distort(refs, tmp_path / "b", random_types=2, seed=5, levels=[1], workers=2)
    assert plan_rows(tmp_path / "b" / "manifest.plan.csv") == drawn
    assert folder_bytes(tmp_path / "b") == folder_bytes(tmp_path / "a")
    run_distort(
        refs, tmp_path / "c", random_types=2, seed=6, levels=[1], types=[1, 2, 3, 9, 10, 11, 16, 17, 18]
    )
    other = plan_rows(tmp_path / "c" / "manifest.plan.csv")
    assert other != drawn and {t for _, t in other} <= {1, 2, 3, 9, 10, 11, 16, 17, 18}
    # the written plan reruns with --plan: same images, same bytes
    replay = tmp_path / "replay"
    run_distort(refs, replay, plan=tmp_path / "a" / "manifest.plan.csv", seed=5, levels=[1])
    assert {k: v for k, v in folder_bytes(replay).items() if k.endswith(".png")} == {
        k: v for k, v in folder_bytes(tmp_path / "a").items() if k.endswith(".png")
    }


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("I01.png,1\nI09.png,3\n", "line 2: reference {refs}/I09.png not found"),
        ("ref_im,dist_type\nI01.png,26\n", "line 2: unknown distortion type '26'"),
        ("I01.png,1\nI02.png,blur_ish\n", "line 2: unknown distortion type 'blur_ish'"),
        (
            "I01.png,1\nI02.png,3\nI01.png,gaussian_blur\n",
            "line 3: duplicate row (I01.png, type 1), already on line 1",
        ),
        ("ref_im,dist_type\n\n", "the plan lists no (reference, type) rows"),
        ("../outside.png,1\n", "path '../outside.png' escapes the dataset root"),
        ("{outside},1\n", "is absolute; paths must be relative to the dataset root"),
    ],
    ids=["missing", "unknown-id", "unknown-name", "duplicate", "empty", "outside-root", "absolute"],
)
def test_bad_plan_is_one_line_before_any_work(refs, tmp_path, plan, message):
    (refs.parent / "outside.png").write_bytes((refs / "I01.png").read_bytes())
    path = tmp_path / "plan.csv"
    path.write_text(plan.format(outside=refs.parent / "outside.png"))
    out = tmp_path / "out"
    code, stdout, stderr = invoke(refs, "--plan", path, "--out", out)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert message.format(refs=refs) in lines[0] and str(path) in lines[0]
    assert not out.exists()


def test_plan_and_random_types_exclude_each_other_and_the_grid_options(refs, plan_csv, tmp_path):
    code, _, stderr = invoke(refs, "--plan", plan_csv, "--random-types", "1", "--out", tmp_path / "o")
    assert code == 2 and "exclude each other" in stderr
    code, _, stderr = invoke(refs, "--plan", plan_csv, "--types", "1", "--out", tmp_path / "o")
    assert code == 2 and "drop --types/--preset" in stderr
    code, _, stderr = invoke(refs, "--random-types", "26", "--out", tmp_path / "o")
    assert code == 2 and "--random-types must be in 1..25" in stderr
    assert not (tmp_path / "o").exists()


def test_rerun_of_a_finished_plan_reads_no_image(one_worker, refs, plan_csv, tmp_path):
    """Every reference is replaced by bytes no decoder reads, with its size and mtime kept, and every
    file open is counted (Python's audit hook): the rerun opens no reference and no output image."""
    copy = tmp_path / "refs"
    copy.mkdir()
    for p in refs.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
        os.utime(copy / p.name, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns))
    out = tmp_path / "out"
    run_distort(copy, out, fmt="bmp", plan=plan_csv, seed=3)
    for p in copy.iterdir():
        st = p.stat()
        p.write_bytes(b"\0" * st.st_size)  # same size, not an image
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    with opened_files() as opened:
        result = run_distort(copy, out, fmt="bmp", plan=plan_csv, seed=3)
    assert (result.n_written, result.n_reused) == (0, 25)
    images = [p for p in opened if p.endswith((".png", ".bmp"))]
    assert images == [], images
    # nothing changed, so the manifest (700k rows at KADIS scale) is kept, not written again
    manifest = out / "manifest.csv"
    assert not [p for p in opened if p.startswith(str(out)) and "manifest" in p and ".reshape-tmp" in p]
    before = manifest.read_bytes()
    manifest.write_bytes(before.replace(b"I01_01_01.bmp", b"I01_01_09.bmp"))  # an edit: written again
    assert run_distort(copy, out, fmt="bmp", plan=plan_csv, seed=3).n_written == 0
    assert manifest.read_bytes() == before
    # and the first image to make after that does decode its reference (the check is real)
    (out / "I04_01_03.bmp").unlink()
    code, _, stderr = invoke(copy, "--plan", plan_csv, "--format", "bmp", "--out", out, "--seed", "3")
    assert code == 2 and "I04.png" in stderr


# ----------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_cluster():
    yield from local_ray("shard_toys.register_stand_in_kernels", num_gpus=1)


@needs_ray
@pytest.mark.ray
def test_ray_plan_is_byte_identical_to_local(ray_cluster, one_worker, refs, plan_csv, tmp_path):
    out = tmp_path / "out"
    result = run_distort(refs, out, fmt="bmp", plan=plan_csv, seed=3, backend="ray", workers=2)
    assert result.n_written == 25
    assert folder_bytes(out) == folder_bytes(one_worker)
    # the Ray run sealed its folder; a local rerun with one worker finds it finished without the journal
    seal = out / JOURNAL_DIR / SEAL_NAME
    sealed_at = seal.stat().st_mtime_ns
    assert run_distort(refs, out, fmt="bmp", plan=plan_csv, seed=3, workers=1).n_reused == 25
    assert seal.stat().st_mtime_ns == sealed_at


@needs_ray
@pytest.mark.ray
def test_ray_sends_only_the_shards_asked_for_to_gpu_tasks(ray_cluster):
    """The placement distort uses for --dncnn-device cuda: type-15 shards ask for a GPU, others a CPU."""
    from reshape.distort import _gpu_for_denoise
    from reshape.distort_plan import DistortJob

    def job(t: int) -> DistortJob:
        return DistortJob("a.png", "/a.png", t, 1, f"a_{t:02d}_01.png", 0)

    shards = [[job(15), job(15)], [job(1)], [job(15)], [job(11), job(15)]]
    results = sorted(
        map_shards(
            functools.partial(_gpu_shard),
            shards,
            backend="ray",
            resources=_gpu_for_denoise,
        ),
        key=lambda r: r.index,
    )
    gpus = [r.value for r in results]
    assert gpus[0] == [0] and gpus[2] == [0]
    assert gpus[1] == [] and gpus[3] == []


def _gpu_shard(shard: list) -> list[int]:
    import ray

    return [int(g) for g in ray.get_gpu_ids()]


def test_a_features_reference_is_hashed_only_when_its_size_or_mtime_moved(refs, tmp_path):
    """From a features artifact each reference's sha256 is checked; a finished reference with the size and
    mtime its outputs recorded is not hashed again, a touched one is (once), a changed one is refused."""
    import hashlib

    import numpy as np
    import pandas as pd

    from reshape.artifacts import Features, write_features

    copy = tmp_path / "refs"
    copy.mkdir()
    names = sorted(p.name for p in refs.iterdir())
    for name in names:
        (copy / name).write_bytes((refs / name).read_bytes())
    frame = pd.DataFrame(
        {
            "image": names,
            "sha256": [hashlib.sha256((copy / n).read_bytes()).hexdigest() for n in names],
            "width": [64] * len(names),
            "height": [48] * len(names),
        }
    )
    meta = {"encoder": "resnet50", "weights": "none", "preprocessing": "x", "image_root": str(copy)}
    features = tmp_path / "features.parquet"
    write_features(features, Features(frame, np.zeros((len(names), 4), np.float32), meta))
    out = tmp_path / "out"
    run_distort(features, out, random_types=1, levels=[1], seed=2)

    def opened_refs() -> list[str]:
        with opened_files() as opened:
            result = run_distort(features, out, random_types=1, levels=[1], seed=2)
        assert result.n_written == 0
        return sorted(Path(p).name for p in opened if Path(p).parent == copy)

    seal = out / JOURNAL_DIR / SEAL_NAME
    sealed_at = seal.stat().st_mtime_ns
    assert opened_refs() == []
    assert seal.stat().st_mtime_ns == sealed_at  # the sealed rerun: it kept the seal and read no reference
    os.utime(copy / "I02.png")  # same bytes, another mtime: hashed once, still the same
    assert opened_refs() == ["I02.png"]
    assert not seal.exists()  # a reference that moved since its outputs recorded it leaves no seal
    assert opened_refs() == ["I02.png"]  # its outputs still record the old mtime
    data = bytearray((copy / "I03.png").read_bytes())
    data[-20] ^= 0xFF
    (copy / "I03.png").write_bytes(bytes(data))
    code, _, stderr = invoke(features, "--random-types", "1", "--levels", "1", "--seed", "2", "--out", out)
    assert code == 2 and "I03.png" in stderr and "sha256 differs" in stderr


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1, 2**32 + 5, 2**63 - 1])
def test_batched_seeds_are_numpys_seed_sequence(seed):
    """Planning derives every seed in one batch (700k at KADIS scale); each is SeedSequence's own."""
    from reshape.distort_plan import derive_seed, derive_seeds

    keys = [(f"sub/{i:05d}.png", 1 + i % 25, 1 + i % 5) for i in range(400)]
    assert derive_seeds(seed, keys) == [derive_seed(seed, *key) for key in keys]
