"""`reshape distort --out URI` (issue #9): images, journal and manifest on an object store.

The store is ``reshapetest://`` (shard_toys.register_test_filesystem): fsspec behind pyarrow.fs, the same
remote code path as s3:// or gs://, backed by a folder that the driver and the Ray workers all see.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import shard_toys
from click.testing import CliRunner
from PIL import Image
from ray_helpers import local_ray, needs_ray
from shard_toys import folder_bytes

import distortions
from reshape import distort as distort_mod
from reshape.cli.main import cli
from reshape.distort import run_distort

TYPES = [1, 11, 18]  # deterministic, random (seeded per output), tone
LEVELS = [1, 3, 5]
N_REFS = 3
N_IMAGES = N_REFS * len(TYPES) * len(LEVELS)
STORE = shard_toys.TEST_FS_PROTOCOL


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    """Backing folder of the ``reshapetest://`` store, registered in this process for the module."""
    root = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESHAPE_TEST_FS_ROOT", str(root))
        shard_toys.register_test_filesystem()
        yield root


@pytest.fixture(scope="module")
def refs(tmp_path_factory, natural_photos) -> Path:
    folder = tmp_path_factory.mktemp("refs")
    for name in ("astronaut", "chelsea", "coffee"):
        Image.fromarray(natural_photos[name]).convert("RGB").resize((64, 48), Image.Resampling.LANCZOS).save(
            folder / f"{name}.png"
        )
    return folder


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, refs, stand_ins) -> Path:
    """The local-folder run that every object-store run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("local") / "out"
    run_distort(refs, out, types=TYPES, levels=LEVELS, seed=7, workers=1)
    return out


def store_run(refs: Path, prefix: str, **kwargs):
    return run_distort(refs, f"{STORE}://bucket/{prefix}", types=TYPES, levels=LEVELS, seed=7, **kwargs)


def test_uri_out_is_byte_identical_to_the_local_folder(store_root, refs, local_run):
    summary = store_run(refs, "a/out")
    folder = store_root / "bucket" / "a" / "out"
    expected = folder_bytes(local_run)
    assert len(expected) == N_IMAGES + 1
    assert folder_bytes(folder) == expected
    assert (summary.n_written, summary.manifest) == (N_IMAGES, f"{STORE}://bucket/a/out/manifest.csv")
    # nothing else is left on the store: no temporary keys, no journal segments
    assert sorted(p.name for p in folder.iterdir()) == sorted([*expected, "manifest.csv.meta.json"])
    meta = json.loads((folder / "manifest.csv.meta.json").read_text())
    assert meta["out_dir"] == f"{STORE}://bucket/a/out"


def test_rerun_recreates_only_the_deleted_or_altered_objects(store_root, refs, local_run):
    store_run(refs, "b/out")
    folder = store_root / "bucket" / "b" / "out"
    deleted, altered = "chelsea_11_03.png", "coffee_01_05.png"
    (folder / deleted).unlink()
    original = (folder / altered).read_bytes()
    (folder / altered).write_bytes(bytes(len(original)))  # same size, other bytes: sha256 must catch it
    untouched = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name not in (deleted, altered)}

    summary = store_run(refs, "b/out")
    assert (summary.n_written, summary.n_reused) == (2, N_IMAGES - 2)
    assert folder_bytes(folder) == folder_bytes(local_run)
    images = {k: v for k, v in untouched.items() if k.endswith(".png")}
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name in images} == images


def test_stale_outputs_and_temp_keys_on_the_store_are_removed(store_root, refs, local_run):
    folder = store_root / "bucket" / "c" / "out"
    folder.mkdir(parents=True)
    (folder / "oldref_05_02.png").write_bytes(b"stale output of an earlier run")
    (folder / ".reshape-tmp-abandoned-x.png").write_bytes(b"half an upload")
    (folder / "notes.txt").write_text("not ours")
    summary = store_run(refs, "c/out")
    assert summary.n_removed == 2
    assert folder_bytes(folder) == {**folder_bytes(local_run)}
    assert (folder / "notes.txt").read_text() == "not ours"


def test_crashed_run_resumes_from_the_journal_on_the_store(store_root, refs, local_run, monkeypatch):
    """A run that dies on the third reference leaves its journal segments; the rerun reuses them."""
    monkeypatch.setattr(distort_mod, "STORE_JOURNAL_FLUSH_S", 0.0)
    real_apply = distortions.apply

    def apply_failing_on_coffee(image, dist_type, level, **kwargs):
        if image.shape == (48, 64, 3) and abs(float(image.mean()) - coffee_mean) < 1e-6:
            raise RuntimeError("simulated crash")
        return real_apply(image, dist_type, level, **kwargs)

    from reshape.imageio import load_image

    coffee_mean = float(load_image(refs / "coffee.png").mean())
    monkeypatch.setattr(distortions, "apply", apply_failing_on_coffee)
    with pytest.raises(distort_mod.StageError, match="simulated crash"):
        store_run(refs, "d/out", manifest=f"{STORE}://bucket/d/meta/manifest.csv")
    segments = store_root / "bucket" / "d" / "meta" / "manifest.csv.journal.d"
    assert len(list(segments.iterdir())) >= 2  # header segment + finished shards
    monkeypatch.setattr(distortions, "apply", real_apply)

    summary = store_run(refs, "d/out", manifest=f"{STORE}://bucket/d/meta/manifest.csv")
    per_ref = len(TYPES) * len(LEVELS)
    assert (summary.n_reused, summary.n_written) == (2 * per_ref, per_ref)
    assert not segments.exists()
    manifest = (store_root / "bucket" / "d" / "meta" / "manifest.csv").read_bytes()
    assert manifest == (local_run / "manifest.csv").read_bytes()


def test_cli_out_uri_with_local_manifest(store_root, refs, local_run, tmp_path):
    result = CliRunner().invoke(
        cli,
        ["distort", str(refs), "--out", f"{STORE}://bucket/e/out", "--types", "1,11,18", "--seed", "7"]
        + ["--manifest", str(tmp_path / "manifest.csv")],
    )
    assert result.exit_code == 0, result.output
    expected = folder_bytes(local_run)
    assert (tmp_path / "manifest.csv").read_bytes() == expected.pop("manifest.csv")
    assert folder_bytes(store_root / "bucket" / "e" / "out") == expected


def test_unknown_uri_scheme_is_exit_2(refs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["distort", str(refs), "--out", "nosuchstore://bucket/out", "--types", "1"]
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("reshape: error: nosuchstore://bucket/out: ")
    assert list(tmp_path.iterdir()) == []  # no local folder named after the URI


def test_unknown_uri_scheme_for_the_manifest_is_exit_2(refs, tmp_path):
    result = CliRunner().invoke(
        cli,
        ["distort", str(refs), "--out", str(tmp_path / "out"), "--types", "1"]
        + ["--manifest", "nosuchstore://bucket/m/manifest.csv"],
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("reshape: error: nosuchstore://bucket/m/manifest.csv: ")
    assert not (tmp_path / "out").exists()  # rejected before anything is written


@pytest.fixture(scope="module")
def ray_cluster(store_root):
    yield from local_ray("shard_toys.distort_store_worker_hook", {"RESHAPE_TEST_FS_ROOT": str(store_root)})


@needs_ray
@pytest.mark.ray
def test_ray_workers_write_to_the_store_byte_identical_to_local(ray_cluster, store_root, refs, local_run):
    summary = store_run(refs, "r/out", workers=2, backend="ray")
    folder = store_root / "bucket" / "r" / "out"
    assert summary.n_written == N_IMAGES
    assert folder_bytes(folder) == folder_bytes(local_run)
    assert not [p for p in folder.iterdir() if p.name.startswith(".reshape-tmp-")]
