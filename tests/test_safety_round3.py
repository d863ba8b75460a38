"""Issue #26 (safety, round 3), the publish / report / verify half: each case reproduced on a copy of the
finished demo (conftest's ``finished_demo``: `reshape demo --smoke`, rerun with DRCDown).

1 a failed re-publish leaves the old dataset whole (a fault injected in every phase); 2/8 one lock per
dataset (report into a dataset takes its lock, readers take it shared); 3 the edit rule; 5 every image
publish copies is decoded under the bomb guard; 7 verify re-derives the derived files and cross-checks
the labels, finds FIFOs and case-only names, and names the dataset inside a demo's root; 10 no reader
opens a FIFO; 11 an empty or bomb image in a dataset is one line; 12 JSON of the wrong shape is one line;
15 a publish into a new folder failing in its report phase leaves nothing and can be rerun.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import pandas as pd
import pytest
from cli_output import one_line_error
from click.testing import CliRunner
from PIL import Image

from reshape.cli.main import cli
from reshape.layout import read_sha256sums, sha256sums_text
from reshape.outputs import OutputLock


def invoke(*args: object, quiet: bool = True):
    return CliRunner().invoke(cli, [*(["-q"] if quiet else []), *map(str, args)])


def tree(folder: Path) -> dict[str, str]:
    """Every entry under ``folder`` (hidden ones too, lock files aside): sha256 of files, 'dir' of folders."""
    found = {}
    for p in sorted(folder.rglob("*")):
        if ".reshape-lock" in p.name:
            continue
        rel = p.relative_to(folder).as_posix()
        found[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def verify_ok(ds: Path) -> None:
    res = invoke("verify", ds, quiet=False)
    assert res.exit_code == 0, res.output


def rewrite_sums(ds: Path, *names: str) -> None:
    """What a tamperer does: the SHA256SUMS lines of the files changed, rewritten to match."""
    sums = read_sha256sums(ds / "SHA256SUMS")
    sums.update({n: hashlib.sha256((ds / n).read_bytes()).hexdigest() for n in names})
    (ds / "SHA256SUMS").write_text(sha256sums_text(sums))


def bomb_png(path: Path, side: int = 40_000) -> None:
    """A tiny PNG whose header claims side x side pixels (what a decompression bomb looks like)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (side + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def demo_copy(finished_demo: Path, tmp_path_factory) -> Path:
    """One writable copy of the finished demo per module (its run.json paths point at the original's data,
    so every publish here passes --source-root of the copy)."""
    root = tmp_path_factory.mktemp("round3") / "demo"
    shutil.copytree(finished_demo, root, symlinks=True)
    return root


@pytest.fixture
def demo(demo_copy: Path, tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    shutil.copytree(demo_copy, root, symlinks=True)
    return root


def publish_args(root: Path, *extra: object) -> list[object]:
    return ["publish", "--from-run", root / "run", "--out", root / "dataset", "--copy-source",
            "--source-root", root / "data" / "source", "--name", "reshape-demo", *extra]  # fmt: skip


def a_source_image(root: Path) -> tuple[Path, str]:
    """A source image the dataset copies (its file in data/source, its path in the dataset)."""
    train = pd.read_csv(root / "dataset" / "train.csv")
    rel = sorted(train.loc[train["origin"] == "source", "dist_img"])[0]
    return root / "data" / "source" / rel.removeprefix("images/source/"), rel


def change_pixel(path: Path) -> None:
    """A valid image with other bytes (one pixel changed)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
    im.putpixel((0, 0), tuple(255 - v for v in im.getpixel((0, 0))))
    im.save(path, format="PNG")


# ----------------------------------------------------------------------------------------------- 1
PHASES = {  # the function of reshape.publish each phase's writes go through
    "images": "_place",
    "tables": "_write_tables",
    "card": "_write_descriptions",
    "croissant": "_write_croissant",
    "report": "_write_report",
    "sums": "_write_text",
}


def test_a_republish_failing_in_any_phase_leaves_the_old_dataset_whole(demo: Path, monkeypatch) -> None:
    """A re-publish that replaces an image and every derived file (another name) fails right after each
    phase has written (a full disk there): every file of the old dataset is back, byte for byte, and
    verify passes. Before, the undo step removed only the files it created: replaced ones stayed so."""
    from reshape import publish

    ds = demo / "dataset"
    src, rel = a_source_image(demo)
    change_pixel(src)
    before = tree(ds)
    for phase, name in PHASES.items():
        real = getattr(publish, name)

        def failing(*args, real=real, phase=phase, **kwargs):
            out = real(*args, **kwargs)
            if phase != "sums" or Path(args[0]).name == "SHA256SUMS":
                raise OSError(errno.ENOSPC, "No space left on device")
            return out

        with monkeypatch.context() as patched:
            patched.setattr(publish, name, failing)
            line = one_line_error(invoke(*publish_args(demo, "--name", "renamed")))
        assert tree(ds) == before, phase
        assert "No space left on device" in line and str(ds) in line, (phase, line)
    assert (ds / rel).read_bytes() != src.read_bytes()  # the changed image was not left in place
    verify_ok(ds)  # (test_a_new_publish_failing_... shows the same publish completing once the fault is gone)


# ----------------------------------------------------------------------------------------------- 15
def test_a_new_publish_failing_in_its_report_phase_leaves_nothing_and_reruns(demo: Path, monkeypatch) -> None:
    """Before: report/ files stayed and the pending list was dropped, so the rerun was refused ('not empty
    and not a published dataset'); the disk-full line named no path."""
    from reshape import report

    new = demo / "new"

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(report, "thumbnail_jpeg", full_disk)
    args = publish_args(demo)
    args[4] = new
    line = one_line_error(invoke(*args))
    assert not (new / "report").exists()
    assert f"{new}/report/" in line and "No space left on device" in line
    monkeypatch.undo()
    assert invoke(*args).exit_code == 0
    verify_ok(new)


# ----------------------------------------------------------------------------------------------- 2, 8
def test_report_into_another_dataset_takes_that_datasets_lock(demo: Path, tmp_path: Path) -> None:
    """`reshape report A --out D/report` took D/.report.reshape-lock, not D's lock: it raced a publish
    into D, left a lock file inside D and D's SHA256SUMS stale."""
    a, d = demo / "dataset", tmp_path / "D"
    shutil.copytree(a, d)
    with OutputLock(d):  # what a publish into D holds
        line = one_line_error(invoke("report", a, "--out", d / "report"))
    assert str(d) in line and "holds this output" in line
    shutil.rmtree(d / "report" / "thumbs")  # the report into D must write these again
    assert invoke("verify", d).exit_code == 1
    assert invoke("report", a, "--out", d / "report").exit_code == 0
    assert not [p.name for p in d.rglob("*reshape-lock*")]
    verify_ok(d)  # its SHA256SUMS lists the report's files as written


def test_readers_hold_the_datasets_lock_shared(demo: Path, tmp_path: Path) -> None:
    """`report --out ELSEWHERE` read a half-published folder during a publish and exited 0; verify did too.
    Now a report refuses (or waits with --wait) and verify waits for the publish to end."""
    ds = demo / "dataset"
    result: dict[str, object] = {}
    with OutputLock(ds):
        line = one_line_error(invoke("report", ds, "--out", tmp_path / "elsewhere"))
        assert "writing this dataset" in line
        reader = threading.Thread(target=lambda: result.update(res=invoke("verify", ds)), daemon=True)
        reader.start()
        time.sleep(1.5)
        assert reader.is_alive() and "res" not in result  # waits for the writer
    reader.join(timeout=60)
    assert result["res"].exit_code == 0
    assert invoke("report", ds, "--out", tmp_path / "elsewhere").exit_code == 0


# ----------------------------------------------------------------------------------------------- 3
def test_an_edited_card_is_not_replaced_without_overwrite(demo: Path) -> None:
    """`echo edit >> dataset/README.md; reshape run pipeline.toml` replaced the edit silently."""
    ds = demo / "dataset"
    with open(ds / "README.md", "a") as fh:
        fh.write("edit\n")
    before = tree(ds)
    line = one_line_error(invoke(*publish_args(demo)))
    assert "README.md" in line and "--overwrite" in line
    assert tree(ds) == before
    line = one_line_error(invoke("run", demo / "pipeline.toml"))  # the orchestration stops the same way
    assert "README.md" in line
    assert tree(ds) == before
    res = invoke(*publish_args(demo, "--overwrite"), quiet=False)
    assert res.exit_code == 0, res.output
    assert "replacing 1 edited file(s)" in res.stderr and "README.md" in res.stderr
    assert not (ds / "README.md").read_text().endswith("edit\n")
    verify_ok(ds)


def test_an_edited_published_image_is_not_replaced_on_republish(demo: Path) -> None:
    ds = demo / "dataset"
    _, rel = a_source_image(demo)
    change_pixel(ds / rel)
    before = tree(ds)
    line = one_line_error(invoke(*publish_args(demo)))
    assert rel in line
    assert tree(ds) == before


def test_an_edited_report_file_is_not_replaced_by_reshape_report(demo: Path) -> None:
    ds = demo / "dataset"
    with open(ds / "report" / "index.html", "a") as fh:
        fh.write("<!-- mine -->\n")
    line = one_line_error(invoke("report", ds))
    assert "index.html" in line
    assert (ds / "report" / "index.html").read_text().endswith("<!-- mine -->\n")
    assert invoke("report", ds, "--overwrite").exit_code == 0
    verify_ok(ds)


# ----------------------------------------------------------------------------------------------- 5
@pytest.mark.parametrize("fault", ["empty", "truncated", "bomb"])
def test_publish_decodes_every_image_it_copies(fault: str, demo: Path) -> None:
    """publish copied an empty, truncated or decompression-bomb source image unchecked (exit 0, a dataset
    failing verify; the bomb cost 5.4 GB)."""
    ds = demo / "dataset"
    src, _ = a_source_image(demo)
    if fault == "empty":
        src.write_bytes(b"")
    elif fault == "truncated":
        src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    else:
        bomb_png(src)
    before = tree(ds)
    line = one_line_error(invoke(*publish_args(demo)))
    assert str(src) in line
    assert tree(ds) == before


# ----------------------------------------------------------------------------------------------- 7
def test_verify_rederives_what_a_rewritten_sums_line_hid(demo: Path) -> None:
    """A widened label range, a launcher with a command appended, a changed label in labels.csv and in
    meta_info.csv: each passed once its SHA256SUMS line was rewritten."""
    ds = demo / "dataset"
    card = json.loads((ds / "dataset.json").read_text())
    card["labels"]["range"] = [0.0, 100.0]
    (ds / "dataset.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    with open(ds / "pyiqa" / "train.py", "a") as fh:
        fh.write("import os; os.system('echo owned')\n")
    labels = pd.read_csv(ds / "labels.csv")
    labels.loc[0, "dmos"] = float(labels.loc[0, "dmos"]) + 0.5
    labels.to_csv(ds / "labels.csv", index=False, lineterminator="\n")
    meta = (ds / "meta_info.csv").read_text().splitlines()
    path, score = meta[1].split(",")
    meta[1] = f"{path},{float(score) + 0.25:g}"
    (ds / "meta_info.csv").write_text("\n".join(meta) + "\n")
    rewrite_sums(ds, "dataset.json", "pyiqa/train.py", "labels.csv", "meta_info.csv")
    res = invoke("verify", ds, quiet=False)
    assert res.exit_code == 1
    out = res.output
    assert "pyiqa/train.py: differs from the launcher this version of reshape writes" in out
    assert "pyiqa/train.yml: differs" in out  # the range it states is the card's
    assert "labels.csv, line 2: label" in out
    assert "meta_info.csv: differs from what reshape derives from train.csv (line 2)" in out
    assert "Traceback" not in out


def test_verify_finds_a_fifo_and_names_differing_only_in_case(demo: Path) -> None:
    ds = demo / "dataset"
    os.mkfifo(ds / "images" / "planted.png")
    first = sorted((ds / "images").glob("*.png"))[0]
    twin = first.with_name(first.name.upper())
    twin.write_bytes(first.read_bytes())
    rewrite_sums(ds, twin.relative_to(ds).as_posix())
    out = invoke("verify", ds, quiet=False).output
    assert "images/planted.png: is a FIFO (named pipe), not a regular file" in out
    assert "only in case" in out


def test_verify_on_a_demo_root_names_the_dataset_inside(demo: Path) -> None:
    line = one_line_error(invoke("verify", demo))
    assert "not a published dataset" in line and str(demo / "dataset") in line


# ----------------------------------------------------------------------------------------------- 10
def _finishes(*args: object, seconds: float = 90):
    result: dict[str, object] = {}
    worker = threading.Thread(target=lambda: result.update(res=invoke(*args)), daemon=True)
    worker.start()
    worker.join(timeout=seconds)
    assert "res" in result, f"{args} hung on a FIFO"
    return result["res"]


@pytest.mark.parametrize(
    ("fifo", "command"),
    [("train.csv", "verify"), ("dataset.json", "report"), ("report/report.json", "report")],
)
def test_no_reader_opens_a_fifo(fifo: str, command: str, demo: Path) -> None:
    ds = demo / "dataset"
    (ds / fifo).unlink()
    os.mkfifo(ds / fifo)
    res = _finishes(command, ds)
    if command == "verify":
        assert res.exit_code == 1 and f"{fifo}: is a FIFO" in res.output
    else:
        assert fifo in one_line_error(res)


# ----------------------------------------------------------------------------------------------- 11
@pytest.mark.parametrize("fault", ["empty", "bomb"])
def test_an_empty_or_bomb_image_in_a_dataset_is_one_line_for_report(fault: str, demo: Path) -> None:
    """report crashed on an empty image (cv2 `!buf.empty()`) and had no bomb guard for thumbnails."""
    ds = demo / "dataset"
    _, rel = a_source_image(demo)
    (ds / rel).write_bytes(b"") if fault == "empty" else bomb_png(ds / rel)
    shutil.rmtree(ds / "report" / "thumbs")  # made again
    line = one_line_error(invoke("report", ds, "--out", demo / "elsewhere"))
    assert rel in line
    # publish over it: the image is an edit of the user's (refused), and with --overwrite it is replaced
    assert rel in one_line_error(invoke(*publish_args(demo)))
    if fault == "empty":
        assert invoke(*publish_args(demo, "--overwrite")).exit_code == 0


# ----------------------------------------------------------------------------------------------- 12
SHAPES = {
    "range of text": lambda c: c["labels"].update(range=["x", 5]),
    "labels a string": lambda c: c.update(labels="oops"),
    "range of one": lambda c: c["labels"].update(range=[1]),
    "notes a number": lambda c: c.update(notes=5),
}


@pytest.mark.parametrize("shape", [*SHAPES, "top-level list"])
def test_json_of_the_wrong_shape_is_one_line(shape: str, demo: Path) -> None:
    ds = demo / "dataset"
    card = json.loads((ds / "dataset.json").read_text())
    if shape == "top-level list":
        card = [card]
    else:
        SHAPES[shape](card)
    (ds / "dataset.json").write_text(json.dumps(card))
    res = invoke("verify", ds, quiet=False)
    assert res.exit_code == 1 and "dataset.json: " in res.output and "Traceback" not in res.output
    assert "dataset.json" in one_line_error(invoke("report", ds, "--out", demo / "elsewhere"))


def test_croissant_distribution_of_the_wrong_shape(demo: Path) -> None:
    ds = demo / "dataset"
    doc = json.loads((ds / "croissant.json").read_text())
    doc["distribution"] = 5
    (ds / "croissant.json").write_text(json.dumps(doc))
    res = invoke("verify", ds, quiet=False)
    assert res.exit_code == 1 and "croissant.json: distribution is not a list" in res.output


def test_the_backup_folder_is_never_a_link_out(demo: Path, tmp_path: Path) -> None:
    """Replaced files are kept aside inside the dataset; a link planted at that name is refused, so
    nothing is hard-linked or copied into a folder outside it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (demo / "dataset" / ".reshape-publish-backup").symlink_to(outside, target_is_directory=True)
    assert ".reshape-publish-backup" in one_line_error(invoke(*publish_args(demo, "--name", "renamed")))
    assert not list(outside.iterdir())
