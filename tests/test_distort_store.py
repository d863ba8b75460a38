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
from reshape.cli.main import cli
from reshape.distort import run_distort
from reshape.distort_seal import SEAL_NAME
from reshape.errors import BadInputError, StageError
from reshape.outputs import OutputLock
from reshape.writer import JOURNAL_DIR, Journal, OutputFolder

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
    # nothing else is left on the store but the folder's record: no temporary keys, no shard segments
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*expected, "manifest.csv.meta.json", JOURNAL_DIR]
    )
    # the journal, and the seal of the finished run (reshape.distort_seal) that lets a rerun skip it
    assert sorted(p.name for p in (folder / JOURNAL_DIR).iterdir()) == ["merged-0000000001.jsonl", SEAL_NAME]
    meta = json.loads((folder / "manifest.csv.meta.json").read_text())
    assert meta["out_dir"] == f"{STORE}://bucket/a/out"
    seal = folder / JOURNAL_DIR / SEAL_NAME
    sealed_at = seal.stat().st_mtime_ns
    again = store_run(refs, "a/out")
    assert (again.n_written, again.n_reused) == (0, N_IMAGES)
    assert seal.stat().st_mtime_ns == sealed_at  # the sealed rerun: the seal is kept, not redone
    assert folder_bytes(folder) == expected


def test_rerun_recreates_only_the_deleted_or_altered_objects(store_root, refs, local_run):
    store_run(refs, "b/out")
    folder = store_root / "bucket" / "b" / "out"
    deleted, altered = "chelsea_11_03.png", "coffee_01_05.png"
    (folder / deleted).unlink()
    original = (folder / altered).read_bytes()
    (folder / altered).write_bytes(bytes(len(original)))  # same size, other bytes: sha256 must catch it
    untouched = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name not in (deleted, altered)}

    with pytest.raises(BadInputError, match=altered):  # changed bytes are an edit: kept without --overwrite
        store_run(refs, "b/out")
    summary = store_run(refs, "b/out", overwrite=True)
    assert (summary.n_written, summary.n_reused) == (2, N_IMAGES - 2)
    assert folder_bytes(folder) == folder_bytes(local_run)
    images = {k: v for k, v in untouched.items() if k.endswith(".png")}
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.name in images} == images


def test_only_own_stale_outputs_and_temp_keys_are_removed(store_root, refs, local_run, tmp_path):
    folder = store_root / "bucket" / "c" / "out"
    # an earlier run with one more reference: its outputs of that reference are this folder's own
    (tmp_path / "more").mkdir()
    for p in refs.iterdir():
        (tmp_path / "more" / p.name).write_bytes(p.read_bytes())
    (tmp_path / "more" / "extra.png").write_bytes((refs / "coffee.png").read_bytes())
    store_run(tmp_path / "more", "c/out")
    assert (folder / "extra_11_03.png").is_file()
    (folder / "oldref_05_02.png").write_bytes(b"not written by reshape")
    (folder / ".reshape-tmp-abandoned-x.bin").write_bytes(b"not a temp of any name distort writes")
    (folder / ".reshape-tmp-chelsea_01_01.png.0a1b2c3d4e5f").write_bytes(b"half an upload of ours")
    (folder / "notes.txt").write_text("not ours")
    summary = store_run(refs, "c/out")
    assert summary.n_removed == len(TYPES) * len(LEVELS) + 1  # extra's images and our temp key
    assert folder_bytes(folder) == {**folder_bytes(local_run), "oldref_05_02.png": b"not written by reshape"}
    assert (folder / "notes.txt").read_text() == "not ours"
    assert (folder / ".reshape-tmp-abandoned-x.bin").is_file()


def test_crashed_run_resumes_from_the_journal_on_the_store(store_root, refs, local_run, monkeypatch):
    """A run that dies on the third reference leaves its record on the store; the rerun reuses it."""
    real_apply = distortions.apply

    def apply_failing_on_coffee(image, dist_type, level, **kwargs):
        if image.shape == (48, 64, 3) and abs(float(image.mean()) - coffee_mean) < 1e-6:
            raise RuntimeError("simulated crash")
        return real_apply(image, dist_type, level, **kwargs)

    from reshape.imageio import load_image

    coffee_mean = float(load_image(refs / "coffee.png").mean())
    monkeypatch.setattr(distortions, "apply", apply_failing_on_coffee)
    with pytest.raises(StageError, match="simulated crash"):
        store_run(refs, "d/out", manifest=f"{STORE}://bucket/d/meta/manifest.csv")
    per_ref = len(TYPES) * len(LEVELS)
    records = Journal(OutputFolder(f"{STORE}://bucket/d/out")).load()
    assert sum(r.confirmed for r in records.values()) == 2 * per_ref  # astronaut and chelsea
    assert sorted(n for n, r in records.items() if not r.confirmed)[0] == "coffee_01_01.png"  # claimed
    monkeypatch.setattr(distortions, "apply", real_apply)

    summary = store_run(refs, "d/out", manifest=f"{STORE}://bucket/d/meta/manifest.csv")
    assert (summary.n_reused, summary.n_written) == (2 * per_ref, per_ref)
    segments = store_root / "bucket" / "d" / "out" / JOURNAL_DIR
    assert not [p for p in segments.iterdir() if p.name.startswith("shard-")]
    manifest = (store_root / "bucket" / "d" / "meta" / "manifest.csv").read_bytes()
    assert manifest == (local_run / "manifest.csv").read_bytes()


def test_a_run_holding_the_store_output_keeps_a_second_out(store_root, refs):
    """The lock on an object-store output is a lease object beside it; another holder's lease refuses."""
    other = OutputLock(f"{STORE}://bucket/f/out").acquire()
    try:
        with pytest.raises(BadInputError, match=r"another reshape run holds this output \(host .*, pid "):
            store_run(refs, "f/out")
    finally:
        other.release()
    assert not (store_root / "bucket" / "f" / "out" / "manifest.csv").exists()
    assert store_run(refs, "f/out").n_written == N_IMAGES
    assert not (store_root / "bucket" / "f" / ".out.reshape-lock").exists()  # released


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
