"""`reshape publish` output safety: copies by default, umask modes, re-publish keeps the user's files and
replaces or deletes only its own, restores missing files, refuses outputs that are inputs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_publish_verify import pipeline_output  # noqa: F401  (fixture)

from reshape import fsbase
from reshape.cli.main import cli
from reshape.fileio import sha256_file
from reshape.outputs import OutputLock
from reshape.verify import verify_dataset


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["publish", *map(str, args)])


def _ok(*args: str) -> str:
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    return res.output


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_copies_by_default_and_links_only_when_asked(pipeline_output: dict[str, Path]) -> None:  # noqa: F811
    run, dist = pipeline_output["run"], pipeline_output["dist"]
    copied, linked = pipeline_output["tmp"] / "copied", pipeline_output["tmp"] / "linked"
    _ok(copied, "--from-run", run)
    _ok(linked, "--from-run", run, "--link")
    src = dist / "c1_01_01.png"
    before = sha256_file(src)
    assert not os.path.samefile(copied / "images" / "c1_01_01.png", src)
    assert os.path.samefile(linked / "images" / "c1_01_01.png", src)
    # Editing the copy leaves the run alone (the documented consequence of --link is the opposite).
    (copied / "images" / "c1_01_01.png").write_bytes(b"edited")
    assert sha256_file(src) == before
    assert "editing either edits both" in CliRunner().invoke(cli, ["publish", "--help"]).output.replace(
        "\n", " "
    )


@pytest.mark.parametrize(("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_modes_follow_the_umask(
    pipeline_output: dict[str, Path],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    umask: int,
    file_mode: int,
    dir_mode: int,
) -> None:
    out = pipeline_output["tmp"] / "dataset"
    old = os.umask(umask)
    monkeypatch.setattr(fsbase, "_UMASK", None)  # read again under this test's umask
    try:
        _ok(out, "--from-run", pipeline_output["run"], "--copy-source")
    finally:
        os.umask(old)
        fsbase._UMASK = None
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert {m for p, m in modes.items() if (out / p).is_file()} == {file_mode}
    assert {m for p, m in modes.items() if (out / p).is_dir()} == {dir_mode}
    assert {"dataset.json", "train.csv", "SHA256SUMS", "pyiqa/train.yml", "images/source"} <= set(modes)
    assert {p.stat().st_nlink for p in out.rglob("*") if p.is_file()} == {1}  # copies, not links


def test_republish_keeps_user_files_and_removes_only_its_own(pipeline_output: dict[str, Path]) -> None:  # noqa: F811
    out, run = pipeline_output["tmp"] / "dataset", pipeline_output["run"]
    _ok(out, "--from-run", run, "--copy-source")
    (out / "NOTES.md").write_text("my notes")
    (out / "images" / "source" / "mine.txt").write_text("mine")
    (out / "runs").mkdir()
    (out / "runs" / "model.pth").write_bytes(b"\x00weights")
    user = ["NOTES.md", "images/source/mine.txt", "runs/model.pth"]
    before = {k: v for k, v in _hashes(out).items() if k in user}
    text = _ok(out, "--from-run", run)  # now referencing the source: its copies were publish's own
    assert {k: v for k, v in _hashes(out).items() if k in user} == before
    assert not (out / "images" / "source" / "I01.png").exists()
    assert sorted(p.name for p in (out / "images" / "source").iterdir()) == ["mine.txt"]
    assert "removed 10 file(s)" in text  # 8 distorted + 2 reference source images
    assert "kept 3 file(s) that publish did not write" in text
    problems = verify_dataset(out).problems
    assert sorted(problems) == sorted(f"{u}: file not listed in SHA256SUMS" for u in user)


def test_foreign_file_at_a_name_publish_writes_is_refused_unless_overwrite(
    pipeline_output: dict[str, Path],  # noqa: F811
) -> None:
    out, run = pipeline_output["tmp"] / "dataset", pipeline_output["run"]
    _ok(out, "--from-run", run)
    mine = out / "images" / "source" / "I01.png"
    mine.parent.mkdir()
    mine.write_bytes(b"my own picture")
    before = _hashes(out)
    res = _invoke(out, "--from-run", run, "--copy-source")
    assert res.exit_code == 2
    assert "images/source/I01.png" in res.output
    assert "--overwrite" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert _hashes(out) == before
    _ok(out, "--from-run", run, "--copy-source", "--overwrite")
    assert sha256_file(mine) == sha256_file(pipeline_output["src"] / "I01.png")
    assert verify_dataset(out).ok


def test_non_dataset_folder_needs_overwrite_and_keeps_its_files(pipeline_output: dict[str, Path]) -> None:  # noqa: F811
    out = pipeline_output["tmp"] / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("keep me")
    assert _invoke(out, "--from-run", pipeline_output["run"]).exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    _ok(out, "--from-run", pipeline_output["run"], "--overwrite")
    assert (out / "keep.txt").read_text() == "keep me"
    assert (out / "train.csv").is_file()


def test_rerun_restores_a_deleted_image_and_leaves_unchanged_ones(pipeline_output: dict[str, Path]) -> None:  # noqa: F811
    out, run = pipeline_output["tmp"] / "dataset", pipeline_output["run"]
    _ok(out, "--from-run", run)
    kept = out / "images" / "c1_01_03.png"
    inode = kept.stat().st_ino
    (out / "images" / "c3_02_01.png").unlink()
    text = _ok(out, "--from-run", run)
    assert "1 written" in text
    assert (out / "images" / "c3_02_01.png").is_file()
    assert kept.stat().st_ino == inode  # not rewritten
    assert verify_dataset(out).ok


@pytest.mark.parametrize("which", ["run", "src", "inside_src"])
def test_output_that_is_an_input_is_refused(pipeline_output: dict[str, Path], which: str) -> None:  # noqa: F811
    out = {
        "run": pipeline_output["run"],
        "src": pipeline_output["src"],
        "inside_src": pipeline_output["src"] / "published",
    }[which]
    before = _hashes(pipeline_output["tmp"])
    res = _invoke(out, "--from-run", pipeline_output["run"])
    assert res.exit_code == 2, res.output
    assert str(out) in res.output
    assert _hashes(pipeline_output["tmp"]) == before
    assert not (pipeline_output["src"] / "published").exists()


def test_second_publish_on_a_held_output_is_refused(pipeline_output: dict[str, Path]) -> None:  # noqa: F811
    out = pipeline_output["tmp"] / "dataset"
    with OutputLock(out):
        res = _invoke(out, "--from-run", pipeline_output["run"])
    assert res.exit_code == 2
    assert f"pid {os.getpid()}" in res.output
    assert not out.exists()


def test_failed_publish_leaves_nothing_behind(pipeline_output: dict[str, Path]) -> None:  # noqa: F811
    out, run = pipeline_output["tmp"] / "dataset", pipeline_output["run"]
    # The last new image no longer matches its manifest checksum (a valid image, other bytes: an
    # undecodable one is refused in the preflight): found while copying, after others.
    from PIL import Image

    changed = pipeline_output["dist"] / "c3_02_03.png"
    with Image.open(changed) as im:
        im = im.convert("RGB")
    im.putpixel((0, 0), tuple(255 - v for v in im.getpixel((0, 0))))
    im.save(changed, format="PNG")
    res = _invoke(out, "--from-run", run)
    assert res.exit_code == 1
    assert "sha256 differs from the distortion manifest" in res.output
    assert not out.exists()
    assert not list(pipeline_output["tmp"].glob(".reshape-tmp-*"))
