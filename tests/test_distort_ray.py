"""`reshape distort --backend ray` (issue #9): same bytes as the local backend, retries, resume, bad input."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image
from ray_helpers import TESTS, local_ray, needs_ray
from shard_toys import folder_bytes

from reshape.cli.main import cli
from reshape.distort import run_distort
from reshape.writer import Journal, OutputFolder

TYPES = [1, 11, 18]  # deterministic, random (seeded per output), tone
LEVELS = [1, 3, 5]


@pytest.fixture(scope="module")
def control(tmp_path_factory) -> Path:
    """Folder whose files steer the Ray workers (see shard_toys.distort_worker_hook)."""
    return tmp_path_factory.mktemp("control")


@pytest.fixture(scope="module")
def ray_cluster(control):
    yield from local_ray("shard_toys.distort_worker_hook", {"RESHAPE_TEST_CONTROL": str(control)})


@pytest.fixture(scope="module")
def refs(tmp_path_factory, natural_photos) -> Path:
    """Six natural 64x48 references (the four photos and two crops)."""
    folder = tmp_path_factory.mktemp("refs")
    images = dict(natural_photos)
    images["astronaut_face"] = natural_photos["astronaut"][30:230, 150:420]
    images["coffee_cup"] = natural_photos["coffee"][50:350, 100:500]
    for name, arr in images.items():
        Image.fromarray(arr).convert("RGB").resize((64, 48), Image.Resampling.LANCZOS).save(
            folder / f"{name}.png"
        )
    return folder


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, refs, stand_ins) -> Path:
    """The local, single-process run every Ray run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("local") / "out"
    run_distort(refs, out, types=TYPES, levels=LEVELS, seed=7, workers=1)
    return out


@needs_ray
@pytest.mark.ray
def test_ray_run_is_byte_identical_to_local(ray_cluster, refs, local_run, tmp_path):
    summary = run_distort(
        refs, tmp_path / "out", types=TYPES, levels=LEVELS, seed=7, workers=2, backend="ray"
    )
    expected = folder_bytes(local_run)
    assert len(expected) == 6 * len(TYPES) * len(LEVELS) + 1
    assert folder_bytes(tmp_path / "out") == expected
    assert summary.n_written == 6 * len(TYPES) * len(LEVELS)


@needs_ray
@pytest.mark.ray
def test_cli_backend_ray_with_address(ray_cluster, refs, local_run, tmp_path):
    result = CliRunner().invoke(
        cli,
        ["distort", str(refs), "--out", str(tmp_path / "out"), "--types", "1,11,18", "--seed", "7"]
        + ["--backend", "ray", "--ray-address", ray_cluster, "--workers", "2"],
    )
    assert result.exit_code == 0, result.output
    assert folder_bytes(tmp_path / "out") == folder_bytes(local_run)


@needs_ray
@pytest.mark.ray
def test_killed_worker_shard_is_retried(ray_cluster, control, refs, local_run, tmp_path):
    (control / "kill").write_text("")
    try:
        run_distort(refs, tmp_path / "out", types=TYPES, levels=LEVELS, seed=7, workers=2, backend="ray")
    finally:
        (control / "kill").unlink()
    assert (control / "killed").read_text().isdigit()  # a worker really died mid-shard
    assert folder_bytes(tmp_path / "out") == folder_bytes(local_run)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".reshape-tmp-")]


CRASHING_DRIVER = """
import sys
sys.path.insert(0, {tests!r})
import shard_toys
shard_toys.register_stand_in_kernels()
import ray
ray.init(address={address!r}, runtime_env={{"worker_process_setup_hook": "shard_toys.distort_worker_hook"}})
from reshape.distort import run_distort
from reshape.writer import Journal, OutputFolder
run_distort({refs!r}, {out!r}, types={types!r}, levels={levels!r}, seed=7, workers=2, backend="ray")
"""


@needs_ray
@pytest.mark.ray
def test_rerun_after_driver_kill_resumes_and_matches_local(ray_cluster, control, refs, local_run, tmp_path):
    out = tmp_path / "out"
    journal = Journal(OutputFolder(out))
    script = CRASHING_DRIVER.format(
        tests=str(TESTS), address=ray_cluster, refs=str(refs), out=str(out), types=TYPES, levels=LEVELS
    )
    (control / "slow").write_text("0.1")
    try:
        driver = subprocess.Popen([sys.executable, "-c", script])
        try:
            deadline = time.monotonic() + 120
            # one reference's 9 images recorded: at least one shard has finished
            while time.monotonic() < deadline and driver.poll() is None:
                if sum(r.confirmed for r in journal.load().values()) >= 9:
                    break
                time.sleep(0.05)
            assert driver.poll() is None, "the driver finished before it could be killed"
        finally:
            driver.kill()
            driver.wait(30)
    finally:
        (control / "slow").unlink()
    assert not (out / "manifest.csv").exists()

    summary = run_distort(refs, out, types=TYPES, levels=LEVELS, seed=7, workers=2, backend="ray")
    assert summary.n_reused >= 9  # what the killed driver had recorded is not redone
    assert summary.n_images == 6 * len(TYPES) * len(LEVELS)
    assert folder_bytes(out) == folder_bytes(local_run)


def test_backend_ray_without_ray_installed_is_exit_2(monkeypatch, refs, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = CliRunner().invoke(
        cli, ["distort", str(refs), "--out", str(tmp_path / "out"), "--types", "1", "--backend", "ray"]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [
        "reshape: error: --backend ray needs Ray, which is not installed: pip install 'reshape-iqa[ray]'"
    ]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unknown_backend_is_exit_2(refs, tmp_path):
    result = CliRunner().invoke(
        cli, ["distort", str(refs), "--out", str(tmp_path / "out"), "--types", "1", "--backend", "spark"]
    )
    assert result.exit_code == 2
    assert "'spark' is not one of 'local', 'ray'" in result.output
