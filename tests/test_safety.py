"""Fault injection over every writing command: nothing the user owns is ever harmed, every fault is one line.

Each command x {read-only output folder, full disk, foreign files in the output, output == an input,
existing file of another format}: exit 2, at most 3 stderr lines, no traceback, and the sha256 of every
pre-existing file (the user's, the inputs, an earlier run's) is the same afterwards; a failed run leaves no
new file or folder under a final name. Real conditions where the tests run as root (a read-only bind mount,
a small tmpfs); the same faults injected as OSError at the write layer everywhere.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reshape.cli.main import cli

COMMANDS = ["features", "select", "distort", "label", "prune", "publish", "run", "demo"]
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c49444154789c63f8ffff3f0005fe02fea7d6a4ad0000000049454e44ae426082")  # fmt: skip


@dataclass
class Demo:
    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def refs(self) -> Path:
        return self.root / "data" / "refs"

    @property
    def source(self) -> Path:
        return self.root / "data" / "source"

    @property
    def pool(self) -> Path:
        return self.root / "data" / "pool"


@pytest.fixture(scope="module")
def demo(finished_demo: Path) -> Demo:
    """A finished smoke demo with DRCDown on (conftest, once per session): every artifact a later command
    reads. Tests never change it."""
    return Demo(finished_demo)


def _config(d: Demo, where: Path, out: Path, dataset: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    path = where / "pipeline.toml"
    q = json.dumps  # a JSON string is a TOML basic string (escapes included): any path survives
    path.write_text(
        f"[inputs]\ntrain_refs = {q(str(d.refs))}\nsource_labels = {q(str(d.source / 'dmos.csv'))}\n"
        f"source_root = {q(str(d.source))}\ncandidates = {q(str(d.pool))}\nout = {q(str(out))}\n"
        f"dataset = {q(str(dataset))}\n"
        '[features]\nweights = "none"\n[distort]\ntypes = "1"\nlevels = "1"\n'
    )
    return path


def argv(command: str, d: Demo, dest: Path, cfg_dir: Path) -> list[str]:
    """The command writing its output(s) into ``dest``."""
    r = d.run
    feats = ["--train-features", str(r / "features/train.parquet")]
    feats += ["--candidate-features", str(r / "features/candidates.parquet")]
    return {
        "features": ["features", str(d.refs), "--out", str(dest / "f.parquet"), "--weights", "none"],
        "select": ["select", "--train", feats[1], "--candidates", feats[3], "--out", str(dest / "sel.parquet")],
        "distort": ["distort", str(d.refs), "--out", str(dest / "img"), "--types", "1", "--levels", "1"],
        "label": ["label", "--selection", str(r / "selection.parquet"), "--source-labels",
                  str(d.source / "dmos.csv"), "--distorted", str(r / "distorted/manifest.csv"),
                  "--out", str(dest / "labels.csv"), *feats],
        "prune": ["prune", "--features", str(r / "features/samples.parquet"), "--labels", str(r / "train.csv"),
                  "--out", str(dest / "pruned.csv"), "--label-scale", "1-5"],
        "publish": ["publish", str(dest / "ds"), "--from-run", str(r), "--train-csv", str(r / "train.csv"),
                    "--source-root", str(d.source)],
        "run": ["run", str(_config(d, cfg_dir, dest / "run", dest / "ds"))],
        "demo": ["demo", "--out", str(dest / "demo"), "--smoke"],
    }[command]  # fmt: skip


def foreign_files(command: str, d: Demo, dest: Path) -> dict[str, bytes]:
    """A user's files under names the command would produce, by relative path."""
    user_parquet = _parquet_bytes(dest)
    ref = sorted(d.refs.glob("*.png"))[0].stem
    return {
        "features": {"f.parquet": user_parquet},
        "select": {"sel.parquet": user_parquet},
        "distort": {f"img/{ref}_01_01.png": PNG, "img/manifest.csv": b"my,own\n1,2\n"},
        "label": {"labels.csv": b"dist_img,ref_img,dmos,var\nmine.png,r.png,4,0\n"},
        "prune": {"pruned.csv": b"my,table\n"},
        "publish": {"ds/train.csv": b"my,table\n", "ds/README.md": b"# my notes\n"},
        "run": {"run/selection.parquet": user_parquet},
        "demo": {"demo/notes.txt": b"my notes\n"},
    }[command]


def input_as_output(command: str, d: Demo, dest: Path, cfg_dir: Path) -> list[str] | None:
    """The command with its output pointed at one of its inputs."""
    args = argv(command, d, dest, cfg_dir)
    swap = {
        "features": (str(dest / "f.parquet"), str(d.refs / "nested.parquet")),
        "select": (str(dest / "sel.parquet"), str(d.run / "features/train.parquet")),
        "distort": (str(dest / "img"), str(d.refs)),
        "label": (str(dest / "labels.csv"), str(d.source / "dmos.csv")),
        "prune": (str(dest / "pruned.csv"), str(d.run / "train.csv")),
        "publish": (str(dest / "ds"), str(d.run)),
    }
    if command == "run":
        return ["run", str(_config(d, cfg_dir, d.refs, dest / "ds"))]
    if command not in swap:
        return None  # the demo reads nothing of the user's
    old, new = swap[command]
    return [new if a == old else a for a in args]


def other_format(command: str, dest: Path) -> None:
    """An existing file of another format (or a file where a folder goes) at the output path."""
    what = {
        "features": ("f.parquet", b"image\na.png\n"),
        "select": ("sel.parquet", PNG),
        "distort": ("img", b"not a folder\n"),
        "label": ("labels.csv", PNG),
        "prune": ("pruned.csv", _parquet_bytes(dest)),
        "publish": ("ds", b"not a folder\n"),
        "run": ("run", b"not a folder\n"),
        "demo": ("demo", b"not a folder\n"),
    }[command]
    (dest / what[0]).write_bytes(what[1])


def _parquet_bytes(where: Path) -> bytes:
    tmp = where.parent / f".user-{os.getpid()}.parquet"
    pq.write_table(pa.table({"image": ["a.png"], "x": [1.0]}), tmp)
    data = tmp.read_bytes()
    tmp.unlink()
    return data


# ----------------------------------------------------------------------------------------------- checks
def snapshot(*folders: Path) -> dict[str, str]:
    found = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")) if folder.exists() else []:
            if p.is_file() and ".reshape-lock" not in p.name:
                found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def visible_tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.startswith(".")}


def assert_refused_cleanly(res, before: dict[str, str], after: dict[str, str]) -> None:
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert 1 <= len(errors) <= 3, res.stderr
    # ours ("reshape: error: PATH: cause") or click's own usage error ("Error: Invalid value ... PATH ...")
    assert "reshape: error:" in res.stderr or "\nError: Invalid value" in res.stderr
    changed = {k for k in before if after.get(k) != before[k]}
    assert not changed, f"pre-existing files changed or removed: {sorted(changed)[:5]}"


def invoke(args: list[str]):
    return CliRunner().invoke(cli, ["-q", *args])


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    folder = tmp_path / "dest"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("command", COMMANDS)
def test_foreign_files_in_the_output_are_refused(
    command: str, demo: Demo, dest: Path, tmp_path: Path
) -> None:
    for rel, data in foreign_files(command, demo, dest).items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(data)
    before = snapshot(dest, demo.root)
    res = invoke(argv(command, demo, dest, tmp_path / "cfg"))
    assert_refused_cleanly(res, before, snapshot(dest, demo.root))
    reasons = ("not written by reshape", "not a reshape demo folder", "not a published dataset")
    assert any(reason in res.stderr for reason in reasons), res.stderr


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "demo"])
def test_output_that_is_an_input_is_refused(command: str, demo: Demo, dest: Path, tmp_path: Path) -> None:
    args = input_as_output(command, demo, dest, tmp_path / "cfg")
    before = snapshot(dest, demo.root)
    res = invoke(args)
    assert_refused_cleanly(res, before, snapshot(dest, demo.root))
    assert "input" in res.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_existing_file_of_another_format_is_refused(
    command: str, demo: Demo, dest: Path, tmp_path: Path
) -> None:
    other_format(command, dest)
    before = snapshot(dest, demo.root)
    res = invoke(
        [
            *argv(command, demo, dest, tmp_path / "cfg"),
            *(["--overwrite"] if command in ("features", "select", "label", "prune") else []),
        ]
    )
    assert_refused_cleanly(res, before, snapshot(dest, demo.root))


# ----------------------------------------------------------------------------------------------- real mounts
def _mount(args: list[str]) -> bool:
    return os.geteuid() == 0 and subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def read_only_dest(tmp_path: Path):
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    (src / "mine.txt").write_text("a user's file\n")
    if not _mount(["--bind", "-o", "ro", str(src), str(ro)]):
        pytest.skip("cannot bind-mount read-only here (not root, or no mount permission)")
    yield ro
    subprocess.run(["umount", str(ro)], check=True)


@pytest.fixture
def full_dest(tmp_path: Path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _mount(["-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)]):
        pytest.skip("cannot mount a tmpfs here (not root, or no mount permission)")
    (disk / "mine.txt").write_text("a user's file\n")
    filler = disk / "filler.bin"
    with open(filler, "wb") as fh:  # leave a few KiB: enough to start, not enough to finish
        fh.write(b"\0" * (4 * 2**20 - 96 * 2**10))
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_output_folder_real_mount(
    command: str, demo: Demo, read_only_dest: Path, tmp_path: Path
) -> None:
    before = snapshot(read_only_dest, demo.root)
    res = invoke(argv(command, demo, read_only_dest, tmp_path / "cfg"))
    assert_refused_cleanly(res, before, snapshot(read_only_dest, demo.root))
    assert "Read-only file system" in res.stderr or "read-only" in res.stderr.lower()


@pytest.mark.parametrize("command", COMMANDS)
def test_full_disk_real_tmpfs(command: str, demo: Demo, full_dest: Path, tmp_path: Path) -> None:
    before = snapshot(full_dest, demo.root)
    tree = visible_tree(full_dest)
    res = invoke(argv(command, demo, full_dest, tmp_path / "cfg"))
    assert_refused_cleanly(res, before, snapshot(full_dest, demo.root))
    assert "space" in res.stderr.lower()
    assert visible_tree(full_dest) == tree, "a failed run left files or folders under final names"


# ----------------------------------------------------------------------------------------------- injected
def _inject(monkeypatch, under: Path, code: int) -> None:
    """Make every write under ``under`` fail with ``code``, at the OS layer reshape writes through."""
    under = str(under.resolve())
    fault = OSError(code, os.strerror(code))

    def hits(path: object) -> bool:
        return str(Path(os.fspath(path)).resolve()).startswith(under)

    real_mkstemp, real_mkdir, real_open = tempfile.mkstemp, os.mkdir, builtins.open

    def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
        if dir is not None and hits(dir):
            raise OSError(code, os.strerror(code), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    def mkdir(path, *args, **kwargs):
        if hits(path) and not os.path.exists(path):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, str | os.PathLike) and any(m in mode for m in "wax+") and hits(file):
            raise OSError(fault.errno, fault.strerror, str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC], ids=["read-only", "disk-full"])
@pytest.mark.parametrize("command", COMMANDS)
def test_injected_write_faults(
    command: str, code: int, demo: Demo, dest: Path, tmp_path: Path, monkeypatch
) -> None:
    (dest / "mine.txt").write_text("a user's file\n")
    args = argv(command, demo, dest, tmp_path / "cfg")  # the run config is written before the fault
    before = snapshot(dest, demo.root)
    tree = visible_tree(dest)
    _inject(monkeypatch, dest, code)
    res = invoke(args)
    monkeypatch.undo()
    assert_refused_cleanly(res, before, snapshot(dest, demo.root))
    assert os.strerror(code) in res.stderr
    assert visible_tree(dest) == tree


def test_decompression_bomb_and_sliver(tmp_path: Path) -> None:
    from PIL import Image

    refs = tmp_path / "refs"
    refs.mkdir()
    Image.new("L", (1, 100_000)).save(refs / "sliver.png")
    res = invoke(["features", str(refs), "--out", str(tmp_path / "f.parquet"), "--weights", "none"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "sliver.png" in res.stderr and len(res.stderr.strip().splitlines()) <= 3
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    _write_bomb_png(bomb / "bomb.png", 60000, 60000)
    for args in (
        ["features", str(bomb), "--out", str(tmp_path / "g.parquet"), "--weights", "none"],
        ["distort", str(bomb), "--out", str(tmp_path / "img"), "--types", "1", "--levels", "1"],
    ):
        res = invoke(args)
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert "bomb.png" in res.stderr and len(res.stderr.strip().splitlines()) <= 3
    assert not (tmp_path / "img").exists() and not (tmp_path / "g.parquet").exists()


def _write_bomb_png(path: Path, width: int, height: int) -> None:
    """A tiny file whose header claims width x height pixels (an IDAT of one compressed row)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


# ----------------------------------------------------------------------------------------------- links
#: Where each command writes: a file (features...prune) or a folder (distort...demo), under ``dest``.
OUTPUT_NAME = {
    "features": "f.parquet", "select": "sel.parquet", "label": "labels.csv", "prune": "pruned.csv",
    "distort": "img", "publish": "ds", "run": "run", "demo": "demo",
}  # fmt: skip
FILE_COMMANDS = ["features", "select", "label", "prune"]


def _user_folder(tmp_path: Path) -> Path:
    """A user's folder outside every output, with files a link may lead to."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "precious.txt").write_bytes(b"a user's file\n")
    (user / "photo.png").write_bytes(PNG)
    return user


def _assert_link_kept(link: Path, target: Path) -> None:
    assert link.is_symlink() and os.readlink(link) == str(target), "the link itself was replaced"


@pytest.mark.parametrize("which", ["holder", "lock"])
@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "demo"])  # demo's locks are run's
def test_link_at_the_lock_files_is_refused(
    command: str, which: str, demo: Demo, dest: Path, tmp_path: Path
) -> None:
    """A link planted at ``.<out>.reshape-lock(.holder)`` is never written through (was: the holder JSON
    overwrote the link's target)."""
    user = _user_folder(tmp_path)
    args = argv(command, demo, dest, tmp_path / "cfg")
    lock = dest / f".{OUTPUT_NAME[command]}.reshape-lock"
    link = Path(str(lock) + ".holder") if which == "holder" else lock
    link.symlink_to(user / "precious.txt")
    before = snapshot(dest, demo.root, user)
    res = invoke(args)
    assert_refused_cleanly(res, before, snapshot(dest, demo.root, user))
    assert "symbolic link" in res.stderr and str(link) in res.stderr, res.stderr
    _assert_link_kept(link, user / "precious.txt")


def _plant_link(command: str, d: Demo, dest: Path, user: Path) -> Path:
    """A link at --out (file outputs: to a user's copy of an artifact of the right kind, which reshape
    would otherwise take for its own) or inside the output folder, leading out of it."""
    r = d.run
    own_kind = {"features": r / "features/train.parquet", "select": r / "selection.parquet",
                "label": r / "labels.csv", "prune": r / "pruned.csv"}  # fmt: skip
    if command in own_kind:
        target = user / own_kind[command].name
        target.write_bytes(own_kind[command].read_bytes())
        link = dest / OUTPUT_NAME[command]
    elif command == "distort":
        target, link = user / "photo.png", dest / "img" / f"{sorted(d.refs.glob('*.png'))[0].stem}_01_01.png"
    elif command == "demo":
        (dest / "demo").mkdir()
        (dest / "demo/pipeline.toml").write_text("# Written by `reshape demo`; a fake one\n")
        target, link = user, dest / "demo/data/pool"
    else:  # publish, run: a linked sub-folder (a natural way not to copy images)
        target = user
        link = dest / OUTPUT_NAME[command] / ("images" if command == "publish" else "samples")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


@pytest.mark.parametrize("command", COMMANDS)
def test_links_at_or_inside_the_output_are_never_followed(
    command: str, demo: Demo, dest: Path, tmp_path: Path
) -> None:
    """Nothing is written or deleted through a link that leaves the output, even with --overwrite."""
    user = _user_folder(tmp_path)
    link = _plant_link(command, demo, dest, user)
    target = Path(os.readlink(link))
    overwrite = ["--overwrite"] if command not in ("run", "demo") else []
    before = snapshot(dest, demo.root, user)
    res = invoke([*argv(command, demo, dest, tmp_path / "cfg"), *overwrite])
    assert_refused_cleanly(res, before, snapshot(dest, demo.root, user))
    assert "link" in res.stderr, res.stderr
    _assert_link_kept(link, target)


# ----------------------------------------------------------------------------------------------- special files
@pytest.fixture
def no_hang():
    """A FIFO read by mistake blocks forever: fail the test after a minute instead."""
    import signal

    def fail(*_: object) -> None:
        raise TimeoutError("the command blocked on a special file")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _special_kinds(path: Path) -> set[str]:
    import stat

    mode = path.lstat().st_mode
    return {k for k, test in (("fifo", stat.S_ISFIFO), ("chr", stat.S_ISCHR)) if test(mode)}


@pytest.mark.parametrize("command", COMMANDS)
def test_fifo_at_the_output_is_refused(command: str, demo: Demo, dest: Path, tmp_path: Path, no_hang) -> None:
    """A FIFO at --out is refused in one line (features and label hung reading it)."""
    fifo = dest / OUTPUT_NAME[command]
    os.mkfifo(fifo)
    before = snapshot(demo.root)
    res = invoke(
        [*argv(command, demo, dest, tmp_path / "cfg"), *(["--overwrite"] if command in FILE_COMMANDS else [])]
    )
    assert_refused_cleanly(res, before, snapshot(demo.root))
    assert _special_kinds(fifo) == {"fifo"} and str(fifo) in res.stderr, res.stderr


def _device_at(command: str, d: Demo, dest: Path) -> Path:
    """A character device (a copy of /dev/null) where the command writes a file."""
    rel = {"distort": f"img/{sorted(d.refs.glob('*.png'))[0].stem}_01_01.png", "publish": "ds/train.csv"}
    path = dest / rel.get(command, OUTPUT_NAME[command])
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mknod(path, 0o666 | __import__("stat").S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here (not root, or mknod not permitted)")
    return path


@pytest.mark.parametrize("command", [*FILE_COMMANDS, "distort", "publish"])
def test_device_node_is_never_replaced(command: str, demo: Demo, dest: Path, tmp_path: Path) -> None:
    """--overwrite replaced a device node with a regular file; anything not a regular file or folder is
    refused, --overwrite or not."""
    device = _device_at(command, demo, dest)
    before = snapshot(demo.root)
    res = invoke([*argv(command, demo, dest, tmp_path / "cfg"), "--overwrite"])
    assert_refused_cleanly(res, before, snapshot(demo.root))
    assert _special_kinds(device) == {"chr"} and "device node" in res.stderr, res.stderr


# ----------------------------------------------------------------------------------------------- hostile names
HOSTILE = "-new\nline \\back\tslash é"


@pytest.mark.parametrize(
    "command", [*COMMANDS[:-2], *(pytest.param(c, marks=pytest.mark.slow) for c in COMMANDS[-2:])]
)  # run and demo run the whole pipeline (~30 s each): -m slow
def test_hostile_output_names_work_or_are_refused_cleanly(
    command: str, demo: Demo, dest: Path, tmp_path: Path
) -> None:
    """An output name with a newline, a backslash, a tab, a leading dash and non-ASCII letters: the command
    either writes exactly there (and what it wrote reads back) or refuses in one line; nothing else changes."""
    hostile = dest / HOSTILE
    hostile.mkdir()
    before = snapshot(demo.root)
    res = invoke(argv(command, demo, hostile, tmp_path / "cfg"))
    assert snapshot(demo.root) == before
    if res.exit_code != 0:
        assert_refused_cleanly(res, before, snapshot(demo.root))
        return
    written = hostile / OUTPUT_NAME[command]
    assert written.exists(), res.output
    if command in ("publish", "run"):
        from reshape.verify import verify_dataset

        dataset = written if command == "publish" else hostile / "ds"
        assert verify_dataset(dataset).ok, verify_dataset(dataset).problems[:3]
    if command in ("features", "select"):
        from reshape.artifacts import read_parquet

        read_parquet(written, "features" if command == "features" else "selection")


def test_hostile_image_names(demo: Demo, tmp_path: Path) -> None:
    """Image names with a newline, a leading dash or non-ASCII letters go through features and distort
    intact (the manifest names files that exist); a backslash, which every reshape table reads as a
    folder separator, is refused in one line before any work."""
    import pandas as pd

    from reshape.artifacts import read_features

    refs = tmp_path / "refs"
    refs.mkdir()
    sources = sorted(demo.refs.glob("*.png"))
    names = ["a\nb.png", "-lead é ü.png", "plain.png"]
    for name, src in zip(names, sources, strict=False):
        (refs / name).write_bytes(src.read_bytes())
    res = invoke(["features", str(refs), "--out", str(tmp_path / "f.parquet"), "--weights", "none"])
    assert res.exit_code == 0, res.output
    assert sorted(read_features(tmp_path / "f.parquet").images) == sorted(names)
    res = invoke(["distort", str(tmp_path / "f.parquet"), "--out", str(tmp_path / "img"), "--types", "1"])
    assert res.exit_code == 0, res.output
    listed = pd.read_csv(tmp_path / "img/manifest.csv", dtype=str)
    assert sorted(listed["ref_img"].unique()) == sorted(names)
    assert all((tmp_path / "img" / n).is_file() for n in listed["dist_img"])
    (refs / "c\\d.png").write_bytes(sources[0].read_bytes())
    for args in (["features", str(refs), "--out", str(tmp_path / "g.parquet"), "--weights", "none"],
                 ["distort", str(refs), "--out", str(tmp_path / "img2"), "--types", "1"]):  # fmt: skip
        before = snapshot(refs)
        res = invoke(args)
        assert_refused_cleanly(res, before, snapshot(refs))
        assert "backslash" in res.stderr
