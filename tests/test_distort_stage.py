"""`reshape distort`: planning, determinism, resume after kill -9, inputs and bad inputs (issue #4)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner
from PIL import Image
from shard_toys import SLOW_CLI, folder_bytes

import distortions
from distortions import registry
from reshape import distort as distort_mod
from reshape import distort_shards
from reshape.artifacts import read_artifact_metadata, read_csv, write_parquet
from reshape.cli.main import cli
from reshape.distort import (
    PRESETS,
    DistortJob,
    ShardOptions,
    centre_crop_box,
    derive_seed,
    distort_shard,
    output_name,
    plan_jobs,
    prepare_reference,
    resolve_levels,
    resolve_types,
    run_distort,
)
from reshape.errors import BadInputError
from reshape.fileio import TMP_PREFIX
from reshape.imageio import load_image
from reshape.writer import JOURNAL_DIR, Journal, OutputFolder

# Types used by the run tests: one deterministic (1), one random (11), one tone (18). When the distortions
# library does not provide them yet, small stand-in kernels are registered (fork-started workers inherit
# them); with the full library the real kernels are exercised.
TEST_TYPES = (1, 11, 18)


def _blur(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(x, (0, 0), p)


def _noise(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, np.sqrt(p), x.shape)


def _shift(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return x + p


@pytest.fixture
def kernels(monkeypatch: pytest.MonkeyPatch) -> tuple[int, ...]:
    registry._load_kernels()
    for t, fn in {1: _blur, 11: _noise, 18: _shift}.items():
        if t not in registry.KERNELS:
            monkeypatch.setitem(registry.KERNELS, t, fn)
    return TEST_TYPES


@pytest.fixture
def refs(tmp_path: Path, natural_photos: dict[str, np.ndarray]) -> Path:
    """Four natural 64x48 reference PNGs."""
    folder = tmp_path / "refs"
    folder.mkdir()
    for name, arr in natural_photos.items():
        Image.fromarray(arr).convert("RGB").resize((64, 48), Image.Resampling.LANCZOS).save(
            folder / f"{name}.png"
        )
    return folder


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["distort", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


# ----------------------------------------------------------------------------------------------- planning
def test_presets_are_the_official_subsets() -> None:
    # the SynDR-IQA code's per-target KADID type subsets
    assert resolve_types(preset="livec") == [1, 3, 10, 17, 18, 25]
    assert resolve_types(preset="KonIQ") == [1, 3, 16, 17, 18, 25]
    assert resolve_types(preset="bid") == [1, 3, 9, 21, 23, 25]
    assert resolve_types(preset="pipal1") == [1, 2, 3, 9, 17, 18, 25]
    assert resolve_types(preset="pipal5") == [1, 2, 3, 4, 9]
    assert len(resolve_types(preset="pipal6")) == 14
    assert resolve_types(preset="all") == list(range(1, 26))
    assert set(PRESETS) == {"livec", "koniq", "bid", "all"} | {f"pipal{i}" for i in range(1, 7)}
    # --types adds to a preset
    assert resolve_types(["jpeg2000"], preset="livec") == [1, 3, 9, 10, 17, 18, 25]
    with pytest.raises(BadInputError, match="unknown preset 'spaq'"):
        resolve_types(preset="spaq")


def test_types_by_id_name_and_kadid_name() -> None:
    assert resolve_types(["gaussian_blur", "GBLUR", "1", 3, "motion_blur"]) == [1, 3]
    assert resolve_types(["Mean_Shift", "white_noise"]) == [11, 18]
    with pytest.raises(BadInputError, match="unknown distortion type 'sharpness'"):
        resolve_types(["sharpness"])
    with pytest.raises(BadInputError, match="unknown distortion type 26"):
        resolve_types(["26"])
    with pytest.raises(BadInputError, match="no distortion types"):
        resolve_types(None, None)
    assert resolve_levels(None) == [1, 3, 5]
    with pytest.raises(BadInputError, match="unknown distortion level '6'"):
        resolve_levels(["6"])


def test_seed_depends_only_on_global_seed_reference_type_and_level() -> None:
    base = derive_seed(0, "a/img1.png", 3, 5)
    assert base == derive_seed(0, "a/img1.png", 3, 5)
    others = {
        derive_seed(1, "a/img1.png", 3, 5),
        derive_seed(0, "b/img1.png", 3, 5),
        derive_seed(0, "a/img1.png", 4, 5),
        derive_seed(0, "a/img1.png", 3, 4),
    }
    assert base not in others
    assert len(others) == 4
    assert all(0 <= s < 2**63 for s in others | {base})
    jobs = plan_jobs(["x/a.png", "b.jpg"], ["/r/x/a.png", "/r/b.jpg"], [1, 18], [1, 5], 7)
    assert [j.dist_img for j in jobs] == [
        "a_01_01.png",
        "a_01_05.png",
        "a_18_01.png",
        "a_18_05.png",
        "b_01_01.png",
        "b_01_05.png",
        "b_18_01.png",
        "b_18_05.png",
    ]
    assert jobs[3].seed == derive_seed(7, "x/a.png", 18, 5)
    # the plan of one reference does not change when other references are added or reordered
    alone = plan_jobs(["b.jpg"], ["/r/b.jpg"], [1, 18], [1, 5], 7)
    assert [j.seed for j in alone] == [j.seed for j in jobs[4:]]
    assert output_name("dir\\sub\\I01.png", 25, 3, "bmp") == "I01_25_03.bmp"


def test_colliding_stems_are_rejected() -> None:
    with pytest.raises(BadInputError, match=r"'a/x.png' and 'b/x.jpg' have the same file stem"):
        plan_jobs(["a/x.png", "b/x.jpg"], ["/a/x.png", "/b/x.jpg"], [1], [1], 0)


def test_resize_reproduces_the_kadid_reference_preparation(kadid_reference: Path, natural_photos) -> None:
    # ../shared/kadid_reference/{coffee,chelsea}.png were made from the scikit-image photos by centre-crop
    # to 4:3 and Pillow Lanczos to 512x384; our --resize must give the very same pixels.
    for name in ("coffee", "chelsea"):
        photo = natural_photos[name].astype(np.float32) / 255.0
        prepared = prepare_reference(photo, (512, 384))
        expected = np.asarray(Image.open(kadid_reference / f"{name}.png").convert("RGB"))
        assert prepared.shape == (384, 512, 3)
        np.testing.assert_array_equal(np.round(prepared * 255).astype(np.uint8), expected)
    assert centre_crop_box(600, 400, 512, 384) == (33, 0, 566, 400)
    assert centre_crop_box(300, 600, 4, 3) == (0, 187, 300, 412)  # 225 rows kept, 375 cut: 187 above


# ----------------------------------------------------------------------------------------------- runs
def test_outputs_and_manifest_match_a_direct_apply(kernels, refs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, output = invoke(str(refs), "--out", str(out), "--types", "1,white_noise,MEAN_SHIFT", "--seed", "3")
    assert code == 0, output
    manifest = read_csv(out / "manifest.csv", "distortion_manifest")
    assert len(manifest) == 4 * 3 * 3
    assert sorted(p.name for p in out.glob("*.png")) == sorted(manifest["dist_img"])
    assert set(manifest["ref_img"]) == {f"{n}.png" for n in ("astronaut", "chelsea", "coffee", "rocket")}
    for row in manifest.itertuples():
        path = out / row.dist_img
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
        assert row.dist_img == f"{Path(row.ref_img).stem}_{row.dist_type:02d}_{row.dist_level:02d}.png"
        assert row.parameter == pytest.approx(distortions.TABLE[row.dist_type].levels[row.dist_level - 1])
        assert row.dist_name == distortions.TABLE[row.dist_type].name
        assert row.seed == derive_seed(3, row.ref_img, row.dist_type, row.dist_level)
        assert pd.isna(row.denoiser)
    # every image is exactly distortions.apply(reference, type, level, rng=default_rng(seed)) in 8 bits
    row = manifest[(manifest.dist_type == 11) & (manifest.dist_level == 5)].iloc[0]
    expected = distortions.apply(load_image(refs / row.ref_img), 11, 5, rng=np.random.default_rng(row.seed))
    written = np.asarray(Image.open(out / row.dist_img))
    np.testing.assert_array_equal(written, np.floor(expected * 255 + 0.5).astype(np.uint8))
    # random outputs differ between references and levels (per-output seeds, not one shared stream)
    noise = manifest[manifest.dist_type == 11]
    assert noise["sha256"].nunique() == len(noise)
    meta = read_artifact_metadata(out / "manifest.csv")
    assert meta["seed"] == 3
    assert meta["types"] == [1, 11, 18]
    assert meta["levels"] == [1, 3, 5]
    assert meta["skipped"] == []
    assert "fingerprint" not in meta


def test_identical_bytes_for_one_and_two_workers(kernels, refs: Path, tmp_path: Path) -> None:
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        code, output = invoke(str(refs), "--out", str(out), "--types", "1,11,18", "--workers", workers)
        assert code == 0, output
        outs.append(folder_bytes(out))
    assert len(outs[0]) == 4 * 9 + 1
    assert outs[0] == outs[1]


def test_seed_and_format_options(kernels, refs: Path, tmp_path: Path) -> None:
    code, _ = invoke(str(refs), "--out", str(tmp_path / "a"), "--types", "11", "--levels", "5", "--seed", "1")
    assert code == 0
    code, _ = invoke(str(refs), "--out", str(tmp_path / "b"), "--types", "11", "--levels", "5", "--seed", "2")
    assert code == 0
    a, b = folder_bytes(tmp_path / "a"), folder_bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a["chelsea_11_05.png"] != b["chelsea_11_05.png"]
    code, _ = invoke(
        str(refs), "--out", str(tmp_path / "c"), "--types", "1", "--levels", "2", "--format", "bmp"
    )
    assert code == 0
    bmp = tmp_path / "c" / "coffee_01_02.bmp"
    assert bmp.read_bytes()[:2] == b"BM"
    assert read_csv(tmp_path / "c" / "manifest.csv", "distortion_manifest")["dist_level"].tolist() == [2] * 4


def test_rerun_keeps_verified_outputs_repairs_and_cleans(kernels, refs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = (str(refs), "--out", str(out), "--types", "1,11")
    assert invoke(*args)[0] == 0
    first = folder_bytes(out)
    (out / "rocket_11_03.png").write_bytes(b"\x89PNG damaged")
    (out / "coffee_01_05.png").unlink()
    (out / "stale_05_01.png").write_bytes(b"not written by reshape")
    own_temp = out / ".reshape-tmp-chelsea_11_01.png.k2j4x9.png"  # an interrupted write of ours
    own_temp.write_bytes(b"partial")
    (out / ".reshape-tmp-abc.png").write_bytes(b"not the temp of any name distort writes")
    (out / "notes.txt").write_text("user file")
    # the damaged image is a recorded output whose bytes changed: an edit, kept unless --overwrite
    code, output = invoke(*args, "--fingerprint", "fp-123")
    assert code == 2 and "rocket_11_03.png" in output and "edited" in output, output
    assert (out / "rocket_11_03.png").read_bytes() == b"\x89PNG damaged"
    code, output = invoke(*args, "--fingerprint", "fp-123", "--overwrite")
    assert code == 0, output
    assert "2 written, 22 already up to date" in output
    assert {k: v for k, v in folder_bytes(out).items() if k in first} == first
    assert not own_temp.exists()
    # files it did not write are never removed, whatever their names
    assert (out / "stale_05_01.png").read_bytes() == b"not written by reshape"
    assert (out / ".reshape-tmp-abc.png").read_bytes() == b"not the temp of any name distort writes"
    assert (out / "notes.txt").read_text() == "user file"
    assert read_artifact_metadata(out / "manifest.csv")["fingerprint"] == "fp-123"
    # different settings invalidate earlier outputs: a new seed rewrites every random image
    code, output = invoke(*args, "--seed", "9")
    assert code == 0
    assert "24 written, 0 already" in output


def test_resume_trusts_size_and_mtime_and_hashes_only_what_changed(kernels, refs: Path, tmp_path) -> None:
    out = tmp_path / "out"
    args = [refs, out]
    kwargs = {"types": [1, 11], "levels": [2]}
    run_distort(*args, **kwargs)
    touched, same_size, disguised = (
        out / "coffee_01_02.png",
        out / "rocket_11_02.png",
        out / "chelsea_01_02.png",
    )
    # same bytes, newer mtime: hashed, found unchanged, kept
    os.utime(touched, ns=(time.time_ns(), touched.stat().st_mtime_ns + 5_000_000_000))
    # other bytes of the same size, newer mtime: hashed, found changed, made again
    original = same_size.read_bytes()
    same_size.write_bytes(bytes(len(original)))
    os.utime(same_size, ns=(time.time_ns(), same_size.stat().st_mtime_ns + 5_000_000_000))
    # other bytes of the same size with the recorded mtime put back: trusted without reading it (the
    # price of a cheap check, as rsync's), so it is kept
    stat = disguised.stat()
    disguised.write_bytes(bytes(stat.st_size))
    os.utime(disguised, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(BadInputError, match="rocket_11_02.png"):  # the edit rule: changed bytes are an edit
        run_distort(*args, **kwargs)
    summary = run_distort(*args, **kwargs, overwrite=True)
    assert (summary.n_written, summary.n_reused) == (1, 7)
    assert same_size.read_bytes() == original
    assert disguised.read_bytes() == bytes(stat.st_size)
    assert Image.open(touched).size == (64, 48)


def _run_cli(args: list[str], delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, str(delay), "distort", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its own process group, so the test can clean up every worker
    )


def test_kill_9_then_rerun_gives_the_same_bytes(refs: Path, tmp_path: Path) -> None:
    common = ["--types", "1,11,18", "--levels", "1-5"]
    ref_out = tmp_path / "uninterrupted"
    proc = _run_cli([str(refs), "--out", str(ref_out), *common], 0.0)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()

    out = tmp_path / "killed"
    proc = _run_cli([str(refs), "--out", str(out), *common, "--workers", "2"], 0.08)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len([p for p in out.glob("*.png") if not p.name.startswith(TMP_PREFIX)]) >= 16:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # the driver only, as a crash would
    proc.wait(timeout=30)
    try:
        # its pool workers must not outlive it (they would block forever otherwise)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            pytest.fail("pool workers survived the killed driver")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (out / "manifest.csv").exists(), "the run finished before it could be killed"
    # final names only: pathlib's glob also matches the hidden .reshape-tmp-*.png of an interrupted write
    finals = [p for p in out.glob("*.png") if not p.name.startswith(TMP_PREFIX)]
    assert 0 < len(finals) < 60
    for p in finals:  # every file under a final name is complete
        assert Image.open(p).size == (64, 48)
        Image.open(p).load()

    proc = _run_cli([str(refs), "--out", str(out), *common], 0.0)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
    assert "already up to date" in proc.stdout.read().decode()
    assert folder_bytes(out) == folder_bytes(ref_out)
    assert not list(out.glob(".reshape-tmp-*"))
    assert not list((out / JOURNAL_DIR).glob("shard-*"))  # every shard segment folded into the record


# ----------------------------------------------------------------------------------------------- inputs
def _selection_table(images: list[str], root: Path) -> pa.Table:
    """A selection of ``images`` (relative to ``root``) with their real sha256, as select records it."""
    n = len(images)
    digests = [hashlib.sha256((root / image).read_bytes()).hexdigest() for image in images]
    return pa.table(
        {
            "candidate_index": pa.array(range(n), type=pa.int64()),
            "image": pa.array(images, type=pa.string()),
            "sha256": pa.array(digests, type=pa.string()),
            "nearest_train_distance": pa.array([0.2] * n, type=pa.float32()),
            "farthest_train_distance": pa.array([0.9] * n, type=pa.float32()),
            "neighbour_images": pa.array([["t.png"]] * n, type=pa.list_(pa.string())),
            "neighbour_distances": pa.array([[0.2]] * n, type=pa.list_(pa.float32())),
        }
    )


def test_selection_parquet_input(kernels, refs: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    (pool / "sub").mkdir(parents=True)
    for name in ("chelsea", "rocket"):
        (pool / "sub" / f"{name}.png").write_bytes((refs / f"{name}.png").read_bytes())
    meta = {
        k: 0
        for k in ("tau", "d_max", "tau_quantile", "k", "n_train", "n_candidates", "n_after_distance_filter")
    }
    meta.update(n_selected=2, train_features="t.parquet", candidate_features="c.parquet", encoder="toy")
    meta["image_root"] = str(pool)
    selection = tmp_path / "selection.parquet"
    write_parquet(selection, _selection_table(["sub/rocket.png", "sub/chelsea.png"], pool), "selection", meta)
    out = tmp_path / "out"
    code, output = invoke(str(selection), "--out", str(out), "--types", "18", "--levels", "3")
    assert code == 0, output
    manifest = read_csv(out / "manifest.csv", "distortion_manifest")
    # ref_img is the selection's image value exactly, so `reshape label` can join on it
    assert manifest["ref_img"].tolist() == ["sub/rocket.png", "sub/chelsea.png"]
    assert manifest["dist_img"].tolist() == ["rocket_18_03.png", "chelsea_18_03.png"]
    # the same content through a CSV list with --ref-root gives the same bytes (seeds follow ref_img)
    lst = tmp_path / "list.csv"
    lst.write_text("image\nsub/rocket.png\nsub/chelsea.png\n")
    code, output = invoke(
        str(lst), "--out", str(tmp_path / "out2"), "--types", "18", "--levels", "3", "--ref-root", str(pool)
    )
    assert code == 0, output
    assert folder_bytes(out) == folder_bytes(tmp_path / "out2")


def test_headerless_csv_list_relative_to_its_folder(kernels, refs: Path, tmp_path: Path) -> None:
    lst = refs / "list.txt"
    lst.write_text("coffee.png\nastronaut.png\n")
    out = tmp_path / "out"
    code, output = invoke(str(lst), "--out", str(out), "--types", "1", "--levels", "1")
    assert code == 0, output
    assert read_csv(out / "manifest.csv", "distortion_manifest")["ref_img"].tolist() == [
        "coffee.png",
        "astronaut.png",
    ]


def test_distort_shard_returns_rows_in_job_order_and_reports_bad_references(
    kernels, refs: Path, tmp_path
) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    jobs = [
        DistortJob("broken.png", str(bad), 1, 1, "broken_01_01.png", 1),
        DistortJob("coffee.png", str(refs / "coffee.png"), 18, 2, "coffee_18_02.png", 5),
        DistortJob("coffee.png", str(refs / "coffee.png"), 1, 4, "coffee_01_04.png", 6),
    ]
    rows = distort_shard(jobs, ShardOptions(out_dir=str(tmp_path / "o")))
    assert rows[0]["ref_img"] == "broken.png"
    assert "broken.png" in rows[0]["error"]
    assert [r["dist_img"] for r in rows[1:]] == ["coffee_18_02.png", "coffee_01_04.png"]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        JOURNAL_DIR,
        "coffee_01_04.png",
        "coffee_18_02.png",
    ]
    # the shard recorded what it wrote (size and mtime as stored), so the folder knows they are its own
    records = Journal(OutputFolder(tmp_path / "o")).load()
    assert sorted(records) == ["coffee_01_04.png", "coffee_18_02.png"]
    for row in rows[1:]:
        stat = (tmp_path / "o" / row["dist_img"]).stat()
        assert (records[row["dist_img"]].size, records[row["dist_img"]].mtime_ns) == (
            stat.st_size,
            stat.st_mtime_ns,
        )
        assert records[row["dist_img"]].sha256 == row["sha256"]


def test_denoiser_is_passed_for_type_15_and_recorded(
    monkeypatch, kernels, refs: Path, tmp_path: Path
) -> None:
    class Denoiser:
        """A plain callable denoiser (identity on each grey plane) counting the planes it is given."""

        name = "classical:test"
        planes = 0

        def __call__(self, grey):
            Denoiser.planes += 1
            return grey

    seen = []
    real_apply = distortions.apply

    def apply(image, dist_type, level, *, rng=None, denoiser=None):
        seen.append((dist_type, denoiser))
        return real_apply(image, dist_type, level, rng=rng, denoiser=denoiser)

    monkeypatch.setattr(distortions, "load_denoiser", lambda path, **options: Denoiser(), raising=False)
    monkeypatch.setattr(distortions, "apply", apply)
    monkeypatch.setattr(distort_shards, "_DENOISERS", {})
    summary = run_distort(refs, tmp_path / "out", types=[15, 18], levels=[2])
    manifest = read_csv(summary.manifest, "distortion_manifest")
    assert set(manifest.loc[manifest.dist_type == 15, "denoiser"]) == {"classical:test"}
    assert manifest.loc[manifest.dist_type == 18, "denoiser"].isna().all()
    # every type-15 image's three planes went through the loaded denoiser (batched or one by one)
    assert Denoiser.planes == 3 * int((manifest.dist_type == 15).sum()) > 0
    assert {type(d).__name__ for t, d in seen if t == 15} <= {"Denoiser"}
    assert {d for t, d in seen if t == 18} == {None}
    assert read_artifact_metadata(summary.manifest)["denoiser"] == "classical:test"

    # another denoiser on the rerun: only the type-15 images are redone
    class Other(Denoiser):
        name = "other-denoiser"

    monkeypatch.setattr(distortions, "load_denoiser", lambda path, **options: Other(), raising=False)
    monkeypatch.setattr(distort_shards, "_DENOISERS", {})
    again = run_distort(refs, tmp_path / "out", types=[15, 18], levels=[2])
    assert (again.n_written, again.n_reused) == (4, 4)
    manifest = read_csv(again.manifest, "distortion_manifest")
    assert set(manifest.loc[manifest.dist_type == 15, "denoiser"]) == {"other-denoiser"}


def test_missing_dncnn_weights_file(kernels, refs: Path, tmp_path: Path) -> None:
    missing = tmp_path / "dncnn.pth"
    code, output = invoke(
        str(refs), "--out", str(tmp_path / "out"), "--types", "15", "--dncnn-weights", str(missing)
    )
    assert code == 2
    assert f"{missing}: DnCNN weights file not found" in output


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--types", "1,blurry", "unknown distortion type 'blurry'"),
        ("--types", "0", "unknown distortion type 0"),
        ("--levels", "1,6", "unknown distortion level 6"),
        ("--levels", "a", "--levels 'a'"),
        ("--preset", "tid2013", "unknown preset 'tid2013'"),
        ("--resize", "512by384", "--resize '512by384'"),
    ],
)
def test_bad_options_exit_2(
    kernels, refs: Path, tmp_path: Path, option: str, value: str, message: str
) -> None:
    code, output = invoke(str(refs), "--out", str(tmp_path / "out"), "--types", "18", option, value)
    assert code == 2
    assert f"reshape: error: {message}" in output
    assert len(output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file"),
        (b"this is text, not a picture", "not a recognised image"),
        ("truncated", "truncated"),
    ],
)
def test_unreadable_reference(kernels, refs: Path, tmp_path: Path, content, problem: str) -> None:
    bad = refs / "zz_bad.png"
    if content == "truncated":
        data = (refs / "coffee.png").read_bytes()
        content = data[: len(data) // 2]
    bad.write_bytes(content)
    out = tmp_path / "out"
    code, output = invoke(str(refs), "--out", str(out), "--types", "18", "--levels", "1")
    assert code == 2
    assert str(bad) in output
    assert problem in output
    assert len(output.strip().splitlines()) == 1
    assert not (out / "manifest.csv").exists()

    code, output = invoke(str(refs), "--out", str(out), "--types", "18", "--levels", "1", "--skip-bad")
    assert code == 0, output
    assert "skipped 1 bad reference(s)" in output
    assert str(bad) in output
    manifest = read_csv(out / "manifest.csv", "distortion_manifest")
    assert len(manifest) == 4
    assert "zz_bad.png" not in set(manifest["ref_img"])
    skipped = read_artifact_metadata(out / "manifest.csv")["skipped"]
    assert [s["ref_img"] for s in skipped] == ["zz_bad.png"]
    assert problem in skipped[0]["error"]
    assert not (out / "zz_bad_18_01.png").exists()


def test_reference_below_minimum_size(kernels, refs: Path, tmp_path: Path) -> None:
    tiny = refs / "tiny.png"
    Image.new("RGB", (12, 40), (10, 200, 30)).save(tiny)
    code, output = invoke(str(refs), "--out", str(tmp_path / "out"), "--types", "18")
    assert code == 2
    assert str(tiny) in output
    assert "12x40, smaller than the minimum 16x16" in output
    # --resize makes every reference big enough
    code, output = invoke(str(refs), "--out", str(tmp_path / "out"), "--types", "18", "--resize", "24x12")
    assert code == 2
    assert "--resize 24x12 is below the minimum 16x16" in output
    code, output = invoke(str(refs), "--out", str(tmp_path / "out"), "--types", "20", "--resize", "40x30")
    assert code == 2
    assert "--resize 40x30 is below the minimum 48x48" in output
    code, output = invoke(str(refs), "--out", str(tmp_path / "out"), "--types", "18", "--resize", "40x30")
    assert code == 0, output
    assert Image.open(tmp_path / "out" / "tiny_18_05.png").size == (40, 30)


def test_output_folder_not_usable(kernels, refs: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, output = invoke(str(refs), "--out", str(blocker), "--types", "18")
    assert code == 2
    assert str(blocker) in output
    assert "not a folder" in output
    code, output = invoke(str(refs), "--out", str(blocker / "sub"), "--types", "18")
    assert code == 2
    assert str(blocker / "sub") in output
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            code, output = invoke(str(refs), "--out", str(locked), "--types", "18")
            assert code == 2
            assert str(locked) in output
            assert "cannot write" in output
        finally:
            locked.chmod(0o700)


def test_duplicate_output_names(kernels, refs: Path, tmp_path: Path) -> None:
    (refs / "again").mkdir()
    (refs / "again" / "coffee.jpg").write_bytes(b"whatever")
    code, output = invoke(str(refs), "--out", str(tmp_path / "out"), "--types", "18")
    assert code == 2
    assert "'again/coffee.jpg' and 'coffee.png' have the same file stem" in output


def test_bad_reference_lists(kernels, refs: Path, tmp_path: Path) -> None:
    escaping = tmp_path / "escape.csv"
    escaping.write_text("image\ncoffee.png\n../etc/passwd.png\n")
    code, output = invoke(
        str(escaping), "--out", str(tmp_path / "out"), "--types", "18", "--ref-root", str(refs)
    )
    assert code == 2
    assert str(escaping) in output
    assert "row 1" in output
    assert "escapes" in output
    parquet = tmp_path / "random.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": ["coffee.png"]}), parquet)
    code, output = invoke(str(parquet), "--out", str(tmp_path / "out"), "--types", "18")
    assert code == 2
    assert str(parquet) in output
    assert "not a selection or features artifact" in output
    code, output = invoke(str(tmp_path / "missing"), "--out", str(tmp_path / "out"), "--types", "18")
    assert code == 2
    assert "missing: no such file or folder" in output
    code, output = invoke(str(refs), "--out", str(refs), "--types", "18")
    assert code == 2
    assert "output folder is the input" in output


def test_unimplemented_type_is_a_clear_error(monkeypatch, kernels, refs: Path, tmp_path: Path) -> None:
    monkeypatch.delitem(registry.KERNELS, 18)
    code, output = invoke(str(refs), "--out", str(tmp_path / "out"), "--types", "18")
    assert code == 1
    assert "distortion type 18 (mean_shift) is not implemented" in output


def test_help_documents_every_option() -> None:
    result = CliRunner().invoke(cli, ["distort", "--help"])
    assert result.exit_code == 0
    for opt in (
        "--types",
        "--preset",
        "--levels",
        "--out",
        "--manifest",
        "--format",
        "--resize",
        "--workers",
        "--seed",
        "--skip-bad",
        "--dncnn-weights",
        "--ref-root",
    ):
        assert opt in result.output
    assert "--fingerprint" not in result.output
    assert json.dumps(PRESETS["livec"])  # presets are plain data


def test_features_parquet_input_with_relative_image_root(kernels, refs: Path, tmp_path: Path) -> None:
    from reshape.artifacts import Features, write_features

    frame = pd.DataFrame(
        {
            "image": ["coffee.png", "rocket.png"],
            "sha256": [
                hashlib.sha256((refs / n).read_bytes()).hexdigest() for n in ("coffee.png", "rocket.png")
            ],
            "width": [64] * 2,
            "height": [48] * 2,
        }
    )
    meta = {"encoder": "toy", "weights": "none", "preprocessing": "none", "image_root": "refs"}
    features = tmp_path / "pool.parquet"
    write_features(features, Features(frame, np.zeros((2, 4), dtype=np.float32), meta))
    out = tmp_path / "out"
    code, output = invoke(str(features), "--out", str(out), "--types", "1", "--levels", "4")
    assert code == 0, output
    manifest = read_csv(out / "manifest.csv", "distortion_manifest")
    assert manifest["ref_img"].tolist() == ["coffee.png", "rocket.png"]
    assert read_artifact_metadata(out / "manifest.csv")["ref_root"] == str(refs.resolve())


def test_reference_failing_only_at_decode(monkeypatch, kernels, refs: Path, tmp_path: Path) -> None:
    # a file whose header check passes but whose pixels cannot be decoded is found by the shard itself
    bad = refs / "mid_bad.png"
    bad.write_bytes(b"garbage")
    monkeypatch.setattr(distort_mod, "_precheck", lambda *a, **k: {})
    out = tmp_path / "out"
    with pytest.raises(BadInputError, match=str(bad)):
        run_distort(refs, out, types=[18], levels=[1])
    assert not (out / "manifest.csv").exists()
    # the references done before the bad one are recorded for the rerun
    done_before = [n for n, r in Journal(OutputFolder(out)).load().items() if r.confirmed]
    assert sorted(done_before) == ["astronaut_18_01.png", "chelsea_18_01.png", "coffee_18_01.png"]

    summary = run_distort(refs, out, types=[18], levels=[1], skip_bad=True)
    assert summary.n_reused == 3
    assert summary.n_written == 1
    assert [s["ref_img"] for s in summary.skipped] == ["mid_bad.png"]
    assert read_csv(summary.manifest, "distortion_manifest")["ref_img"].tolist() == [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "rocket.png",
    ]


def test_dncnn_with_two_workers_finishes_and_matches_one_worker(refs: Path, tmp_path: Path) -> None:
    # Regression: the driver builds the DnCNN (torch) before starting the pool; forked workers then hung in
    # their first torch call. Run as a separate process with a time limit so a hang fails instead of blocking.
    import scipy.io

    rng = np.random.default_rng(0)

    def cell(items: list) -> np.ndarray:
        out = np.empty((1, len(items)), dtype=object)
        for i, item in enumerate(items):
            out[0, i] = item
        return out

    # 64 channels as in DnCNN: copying a 3x3x64x64 bank is large enough for torch to go parallel (OpenMP)
    # in the driver, which is what made forked workers hang
    layers = [
        {"type": "conv", "weights": cell([rng.normal(size=(3, 3, 1, 64)) * 0.3, np.zeros((1, 64))])},
        {"type": "relu"},
        {"type": "conv", "weights": cell([rng.normal(size=(3, 3, 64, 64)) * 0.02, np.zeros((1, 64))])},
        {"type": "relu"},
        {"type": "conv", "weights": cell([rng.normal(size=(3, 3, 64)) * 0.02, np.zeros((1, 1))])},
    ]
    weights = tmp_path / "tiny_dncnn.mat"
    scipy.io.savemat(weights, {"net": {"layers": cell(layers)}})
    outputs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        args = [str(refs), "--out", str(out), "--types", "15", "--levels", "1,5", "--workers", workers]
        res = subprocess.run(
            [sys.executable, "-m", "reshape.cli.main", "distort", *args, "--dncnn-weights", str(weights)],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert res.returncode == 0, res.stderr
        outputs[workers] = folder_bytes(out)
    assert len(outputs["1"]) == 4 * 2 + 1
    assert outputs["1"] == outputs["2"]
