"""Issue #21, the adversarial pass: each case it found, reproduced on the finished demo (conftest).

Data loss: deletion through a linked folder, an edited listed file, a newline in a name, another stage's
artifact at --out. Silent wrong output: outputs inside input folders, a changed reference, a partial
features checkpoint, a manifest listing deleted images, a tampered dataset passing verify. And the faults
that still were tracebacks or wrong exit codes. (Links and special files at the lock and at --out, for
every command, are in test_safety.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from cli_output import one_line_error
from click.testing import CliRunner
from shard_toys import SLOW_CLI
from test_safety import Demo, argv, assert_refused_cleanly, invoke, snapshot

from reshape.cli.main import cli
from reshape.fileio import sha256_file


@pytest.fixture(scope="module")
def demo(finished_demo: Path) -> Demo:
    return Demo(finished_demo)


# ----------------------------------------------------------------------------------------------- 1 links
def _publish(d: Demo, out: Path, *extra: str):
    args = argv("publish", d, out.parent, out.parent)
    args[1] = str(out)
    return invoke([*args, *extra])


def test_republish_never_deletes_through_a_linked_images_source(demo: Demo, tmp_path: Path) -> None:
    """A published folder whose images/source links to the user's own copy of the source images:
    publishing again with referenced sources deleted the user's files through the link."""
    ds, mine = tmp_path / "ds", tmp_path / "my_source_images"
    assert _publish(demo, ds, "--copy-source").exit_code == 0
    shutil.move(ds / "images/source", mine)
    (ds / "images/source").symlink_to(mine, target_is_directory=True)
    before = snapshot(mine)
    assert len(before) > 20
    _publish(demo, ds)  # referenced sources: images/source/* are no longer publish's files
    assert snapshot(mine) == before, "files in the user's folder were deleted through the link"
    assert (ds / "images/source").is_symlink()


def test_republish_keeps_an_edited_listed_file(demo: Demo, tmp_path: Path) -> None:
    """A file SHA256SUMS lists but whose bytes changed since is no longer publish's: it stays."""
    ds = tmp_path / "ds"
    assert _publish(demo, ds, "--copy-source").exit_code == 0
    edited = sorted((ds / "images/source").glob("*.png"))[0]
    edited.write_bytes(edited.read_bytes() + b"my edit")
    others = [p for p in (ds / "images/source").glob("*.png") if p != edited]
    res = _publish(demo, ds)
    assert res.exit_code == 0, res.output
    assert edited.read_bytes().endswith(b"my edit")
    assert not any(p.exists() for p in others), "unchanged listed files are still publish's to delete"


def test_run_never_writes_or_deletes_through_a_linked_samples_folder(demo: Demo, tmp_path: Path) -> None:
    """`reshape run` with prune on and run/samples linked to a user's folder lost half of its files."""
    copy = tmp_path / "demo"
    shutil.copytree(demo.root, copy, symlinks=True)
    mine = tmp_path / "my_images"
    shutil.move(copy / "run/samples", mine)
    (copy / "run/samples").symlink_to(mine, target_is_directory=True)
    (mine / "mine.png").write_bytes(next(iter(mine.rglob("*.png"))).read_bytes())
    before = snapshot(mine)
    res = invoke(["run", str(copy / "pipeline.toml")])
    assert_refused_cleanly(res, before, snapshot(mine))
    assert "leads outside the run folder" in res.stderr, res.stderr


def test_demo_smoke_never_deletes_through_a_linked_pool(demo: Demo, tmp_path: Path) -> None:
    """`reshape demo --smoke` over a demo whose data/pool links to a user's folder: refused, nothing of
    the user's deleted (a smaller smoke pool used to delete the full demo's extra files through it)."""
    copy = tmp_path / "demo"
    shutil.copytree(demo.root, copy, symlinks=True)
    mine = tmp_path / "my_pool"
    shutil.move(copy / "data/pool", mine)
    (copy / "data/pool").symlink_to(mine, target_is_directory=True)
    record = copy / "data/.reshape-demo-files.json"
    listed = json.loads(record.read_text())  # a full demo recorded more pool files than --smoke writes
    (mine / "extra_9.png").write_bytes(next(mine.glob("*.png")).read_bytes())
    listed["pool/extra_9.png"] = sha256_file(mine / "extra_9.png")
    record.write_text(json.dumps(listed))
    before = snapshot(mine)
    res = invoke(["demo", "--out", str(copy), "--smoke"])
    assert_refused_cleanly(res, before, snapshot(mine))
    assert "data/pool" in res.stderr and "link" in res.stderr


# ----------------------------------------------------------------------------------------------- 3 names
def test_newline_in_a_name_is_escaped_like_gnu_sha256sum(tmp_path: Path) -> None:
    """SHA256SUMS escapes a newline (and CR) the way GNU sha256sum does, and every reader undoes it: the
    user's file named like the first half of the broken line is never taken for publish's."""
    from reshape.publish import read_record, sha256sums_text
    from reshape.verify import VerifyReport, parse_sha256sums

    folder = tmp_path / "ds"
    folder.mkdir()
    names = ["a\nb.png", "c\rd.png", "plain.png"]
    for i, name in enumerate(names):
        (folder / name).write_bytes(b"image %d" % i)
    (folder / "a").write_bytes(b"the user's file")  # the first half of the line an unescaped name breaks
    text = sha256sums_text({n: sha256_file(folder / n) for n in names})
    (folder / "SHA256SUMS").write_text(text, encoding="utf-8")
    (folder / "dataset.json").write_text(json.dumps({"reshape_version": "0"}))
    if shutil.which("sha256sum"):
        gnu = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=folder, capture_output=True)
        assert gnu.returncode == 0, gnu.stdout + gnu.stderr
        made = subprocess.run(["sha256sum", *sorted(names)], cwd=folder, capture_output=True, check=True)
        assert made.stdout.decode() == text, "not the lines GNU sha256sum writes"
    record = read_record(folder)
    assert record.own >= set(names) and "a" not in record.own and "b.png" not in record.own
    report = VerifyReport(folder)
    assert set(parse_sha256sums(text, "SHA256SUMS", report)) == set(names) and report.ok


# ----------------------------------------------------------------------------------------------- 5 kinds
@pytest.mark.parametrize(
    ("command", "artifact"),
    [
        ("select", "features/train.parquet"),
        ("features", "selection.parquet"),
        ("prune", "labels.csv"),
        ("label", "train.csv"),
    ],
)
def test_another_stages_artifact_at_out_is_not_replaced(
    command: str, artifact: str, demo: Demo, tmp_path: Path
) -> None:
    """Only an artifact of the same kind counts as the stage's own (select --out a features Parquet
    replaced the embeddings)."""
    dest = tmp_path / "dest"
    dest.mkdir()
    name = {"select": "sel.parquet", "features": "f.parquet", "prune": "pruned.csv", "label": "labels.csv"}
    target = dest / name[command]
    shutil.copyfile(demo.run / artifact, target)
    side = demo.run / (artifact + ".meta.json")
    if side.exists():
        shutil.copyfile(side, dest / (target.name + ".meta.json"))
    before = snapshot(dest, demo.root)
    res = invoke(argv(command, demo, dest, tmp_path / "cfg"))
    assert_refused_cleanly(res, before, snapshot(dest, demo.root))
    assert "refusing to replace it (pass --overwrite" in res.stderr, res.stderr


# ----------------------------------------------------------------------------------------------- 6-7 inputs
def test_outputs_inside_input_folders_are_refused(demo: Demo, tmp_path: Path) -> None:
    """Standalone publish and distort from a selection wrote into a folder the next run reads."""
    pool = tmp_path / "pool"
    shutil.copytree(demo.pool, pool)
    before = snapshot(pool, demo.root)
    sel = str(demo.run / "selection.parquet")
    res = invoke(["distort", sel, "--ref-root", str(pool), "--out", str(pool / "img"), "--types", "1"])
    assert_refused_cleanly(res, before, snapshot(pool, demo.root))
    assert "input" in res.stderr
    res = _publish(demo, demo.refs / "ds")  # the training references the features were computed from
    assert_refused_cleanly(res, before, snapshot(pool, demo.root))
    assert not (demo.refs / "ds").exists() and "input" in res.stderr


def test_distort_refuses_a_reference_changed_since_selection(demo: Demo, tmp_path: Path) -> None:
    pool = tmp_path / "pool"
    shutil.copytree(demo.pool, pool)
    chosen = pd.read_parquet(demo.run / "selection.parquet")["image"].iloc[0]
    (pool / chosen).write_bytes((pool / chosen).read_bytes() + b"\0")  # still a valid PNG, other bytes
    sel = str(demo.run / "selection.parquet")
    line = one_line_error(
        invoke(["distort", sel, "--ref-root", str(pool), "--out", str(tmp_path / "img"), "--types", "1"])
    )
    assert chosen in line and "sha256 differs" in line
    assert not (tmp_path / "img").exists()


# ----------------------------------------------------------------------------------------------- 8 partial
def test_partial_features_checkpoint_is_refused_by_every_reader(demo: Demo, tmp_path: Path) -> None:
    from reshape.artifacts import read_features
    from reshape.errors import BadInputError
    from reshape.features import FeaturesConfig, run

    refs = tmp_path / "refs"
    shutil.copytree(demo.refs, refs)
    (refs / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # last in sorted order
    out = tmp_path / "f.parquet"
    config = FeaturesConfig(images=[refs], out=out, weights="none", batch_size=1, checkpoint_every=1)
    with pytest.raises(BadInputError, match="zz_broken"):
        run(config)
    assert out.is_file(), "no checkpoint was left"
    with pytest.raises(BadInputError, match="partial"):
        read_features(out)
    res = invoke(
        ["select", "--train", str(out), "--candidates", str(out), "--out", str(tmp_path / "s.parquet")]
    )
    assert "partial" in one_line_error(res)
    res = invoke(["distort", str(out), "--out", str(tmp_path / "img"), "--types", "1"])
    assert "partial" in one_line_error(res)
    (refs / "zz_broken.png").unlink()
    result = run(config)  # resumes: the checkpoint's rows are reused, the artifact is whole
    assert (
        result.n_reused == len(list(demo.refs.glob("*.png"))) and "partial" not in read_features(out).metadata
    )


# ----------------------------------------------------------------------------------------------- 9 manifest
def test_interrupted_distort_rerun_leaves_no_manifest_listing_deleted_images(
    demo: Demo, tmp_path: Path
) -> None:
    refs, out = tmp_path / "refs", tmp_path / "img"
    refs.mkdir()
    for p in sorted(demo.refs.glob("*.png"))[:2]:
        shutil.copyfile(p, refs / p.name)
    assert invoke(["distort", str(refs), "--out", str(out), "--types", "1,2", "--levels", "1"]).exit_code == 0
    type2 = sorted(out.glob("*_02_01.png"))
    assert len(type2) == 2
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, "3", "distort", str(refs), "--out", str(out), "--types", "1",
         "--levels", "1,2,3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while any(p.exists() for p in type2) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert not any(p.exists() for p in type2), "the rerun did not delete the type-2 images"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # interrupted mid-way
        proc.wait()
    manifest = out / "manifest.csv"
    if manifest.exists():
        listed = pd.read_csv(manifest)["dist_img"]
        assert all((out / name).is_file() for name in listed), "the manifest lists deleted images"
    res = invoke([*argv("label", demo, tmp_path, tmp_path)[:5], "--distorted", str(manifest),
                  "--out", str(tmp_path / "labels.csv")])  # fmt: skip
    assert res.exit_code == 2 and not (tmp_path / "labels.csv").exists()


# ----------------------------------------------------------------------------------------------- 10 verify
def _tampered(demo: Demo, tmp_path: Path, tamper) -> Path:
    """A copy of the demo's dataset changed by ``tamper(folder, train)``, with SHA256SUMS regenerated."""
    from reshape.publish import sha256sums_text

    ds = tmp_path / "ds"
    shutil.copytree(demo.root / "dataset", ds)
    train = pd.read_csv(ds / "train.csv", dtype=str, keep_default_na=False)
    train = tamper(ds, train)
    if train is not None:
        train.to_csv(ds / "train.csv", index=False, lineterminator="\n")
    listed = [line.split("  ", 1)[1] for line in (ds / "SHA256SUMS").read_text().splitlines()]
    (ds / "SHA256SUMS").write_text(sha256sums_text({rel: sha256_file(ds / rel) for rel in listed}))
    return ds


def _set(column: str, value: str):
    def tamper(_ds: Path, train: pd.DataFrame) -> pd.DataFrame:
        train.loc[len(train) - 1, column] = value
        return train

    return tamper


def _duplicate(_ds: Path, train: pd.DataFrame) -> pd.DataFrame:
    extra = train.iloc[[-1]].assign(dmos="1.5")
    return pd.concat([train, extra], ignore_index=True)


def _truncate(ds: Path, _train: pd.DataFrame) -> None:
    png = sorted((ds / "images").glob("*.png"))[0]
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (_duplicate, "listed twice"),
        (_set("origin", "bogus"), "origin 'bogus'"),
        (_set("dist_type", "99"), "dist_type 99 is outside 1..25"),
        (_set("dist_level", "7"), "dist_level 7 is outside 1..5"),
        (_set("var", "-0.5"), "var -0.5 is negative"),
        (_truncate, "does not decode"),
        (_set("dmos", "9.5"), "outside the dataset range"),
    ],
    ids=["duplicate", "origin", "dist_type", "dist_level", "var", "truncated", "label"],
)
def test_verify_fails_a_tampered_dataset_on_its_content(
    demo: Demo, tmp_path: Path, tamper, problem, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import ImageFile

    from reshape.verify import verify_dataset

    # as after `import pyiqa` (its AVA loader relaxes Pillow process-wide): verify still decodes strictly
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    ds = _tampered(demo, tmp_path, tamper)
    report = verify_dataset(ds)
    assert not report.ok and any(problem in p for p in report.problems), report.problems
    res = CliRunner().invoke(cli, ["verify", str(ds)])
    assert res.exit_code == 1


def test_untampered_copy_still_verifies(demo: Demo, tmp_path: Path) -> None:
    from reshape.verify import verify_dataset

    report = verify_dataset(_tampered(demo, tmp_path, lambda _ds, _train: None))
    assert report.ok, report.problems


def test_infinite_label_range_is_refused(demo: Demo, tmp_path: Path) -> None:
    """--label-range -inf,inf wrote Infinity into dataset.json (not JSON)."""
    res = _publish(demo, tmp_path / "ds", "--label-range", "-inf,inf")
    assert "finite" in one_line_error(res)
    assert not (tmp_path / "ds").exists()


# ----------------------------------------------------------------------------------------------- one line, exit 2
def test_header_only_csv_to_features(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("image\n")
    res = invoke(
        ["features", str(tmp_path / "list.csv"), "--out", str(tmp_path / "f.parquet"), "--weights", "none"]
    )
    assert "no images" in one_line_error(res)


@pytest.mark.parametrize("content", [b"", b"these are not weights\n"], ids=["empty", "text"])
def test_unusable_dncnn_weights(content: bytes, demo: Demo, tmp_path: Path) -> None:
    weights = tmp_path / "dncnn.pth"
    weights.write_bytes(content)
    res = invoke(["distort", str(demo.refs), "--out", str(tmp_path / "img"), "--types", "15", "--levels", "1",
                  "--dncnn-weights", str(weights)])  # fmt: skip
    assert str(weights) in one_line_error(res)
    assert not (tmp_path / "img").exists()


def test_prune_negative_seed(demo: Demo, tmp_path: Path) -> None:
    res = invoke([*argv("prune", demo, tmp_path, tmp_path), "--seed", "-1"])
    assert "--seed -1" in one_line_error(res)


def test_output_name_too_long_fails_before_any_work(demo: Demo, tmp_path: Path) -> None:
    out = tmp_path / ("x" * 222 + ".parquet")  # fits alone and as a lock file, not as a temporary name
    res = CliRunner().invoke(cli, ["features", str(demo.refs), "--out", str(out), "--weights", "none"])
    assert "name too long" in one_line_error(res)
    assert "encoder" not in res.stderr  # refused before the encoder was even loaded


@pytest.mark.parametrize(
    ("line", "expected"), [('dataset = "run"', "dataset"), ("[select]\nmax-select = -1", "max_select = -1")]
)
def test_pipeline_faults_before_any_stage_runs(demo: Demo, tmp_path: Path, line: str, expected: str) -> None:
    q = json.dumps
    inputs = [f"train_refs = {q(str(demo.refs))}", f"source_labels = {q(str(demo.source / 'dmos.csv'))}",
              f"candidates = {q(str(demo.pool))}", 'out = "run"']  # fmt: skip
    tables = ['[features]\nweights = "none"']
    (inputs if line.startswith("dataset") else tables).append(line)
    config = tmp_path / "pipeline.toml"
    config.write_text("[inputs]\n" + "\n".join(inputs) + "\n" + "\n".join(tables) + "\n")
    res = invoke(["run", str(config)])
    assert expected in one_line_error(res)
    assert not (tmp_path / "run" / "features").exists(), "a stage ran before the fault was found"


def test_sigterm_with_workers_leaves_no_leak(demo: Demo, tmp_path: Path) -> None:
    """SIGTERM to `distort --workers 2` unwinds: no semaphore-leak warning, no process left, exit 143."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, "0.5", "distort", str(demo.refs), "--out", str(tmp_path / "img"),
         "--types", "1,2,3", "--levels", "1,2,3,4,5", "--workers", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "img").glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, stderr
    assert "leaked" not in stderr and "Traceback" not in stderr, stderr
    deadline = time.monotonic() + 15
    with pytest.raises(ProcessLookupError):  # no worker (nor the resource tracker) of the group is left
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)


@pytest.mark.parametrize("by", ["prune", "label"])
def test_train_tables_of_label_and_prune_are_told_apart(by: str, demo: Demo, tmp_path: Path) -> None:
    """label and prune both write train-schema tables: each counts only its own as replaceable (label
    --merge-source at prune's output replaced it, since both carry the `train` schema tag)."""
    dest = tmp_path / "dest"
    dest.mkdir()
    theirs = {"prune": "pruned.csv", "label": "train.csv"}[by]  # the other stage's table, in the run
    mine = dest / ("train.csv" if by == "prune" else "pruned.csv")
    shutil.copyfile(demo.run / theirs, mine)
    shutil.copyfile(demo.run / (theirs + ".meta.json"), dest / (mine.name + ".meta.json"))
    args = argv("label" if by == "prune" else "prune", demo, dest, tmp_path / "cfg")
    if by == "prune":
        args += ["--merge-source", str(mine)]
    before = snapshot(dest, demo.root)
    res = invoke(args)
    assert_refused_cleanly(res, before, snapshot(dest, demo.root))
    assert "refusing to replace it (pass --overwrite" in res.stderr, res.stderr
    # its own table of that schema is replaced as before
    shutil.rmtree(dest)
    dest.mkdir()
    first = invoke(args)
    assert first.exit_code == 0, first.output
    again = invoke(args)
    assert again.exit_code == 0, again.output
