"""reshape.fileio: atomic writes survive failures and kills; dataset paths never escape their root."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from reshape.errors import BadInputError
from reshape.fileio import (
    TMP_PREFIX,
    atomic_open,
    atomic_write_text,
    check_relative,
    remove_stale_temps,
    resolve_under_root,
    sha256_bytes,
    sha256_file,
)


def test_atomic_open_replaces_only_on_success(tmp_path):
    p = tmp_path / "a.csv"
    atomic_write_text(p, "old\n")
    with pytest.raises(RuntimeError), atomic_open(p) as fh:
        fh.write("new, half written")
        raise RuntimeError("boom")
    assert p.read_text() == "old\n"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.csv"]
    with atomic_open(p) as fh:
        fh.write("new\n")
    assert p.read_text() == "new\n"


def test_kill_mid_write_leaves_old_content(tmp_path):
    p = tmp_path / "big.bin"
    p.write_bytes(b"original")
    script = textwrap.dedent(
        f"""
        import sys, time
        from reshape.fileio import atomic_open
        with atomic_open({str(p)!r}, "wb") as fh:
            fh.write(b"x" * 1_000_000)
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert p.read_bytes() == b"original"
    leftovers = [f.name for f in tmp_path.iterdir() if f.name.startswith(TMP_PREFIX)]
    assert len(leftovers) == 1  # the orphaned temp file, never under the final name
    assert remove_stale_temps(tmp_path) == 1
    assert sorted(f.name for f in tmp_path.iterdir()) == ["big.bin"]


def test_sha256(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert (
        sha256_file(p)
        == sha256_bytes(b"abc")
        == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@pytest.mark.parametrize(
    "rel",
    [
        "../x.png",
        "a/../../x.png",
        "/etc/passwd",
        "C:\\x.png",
        "c:x.png",
        "\\\\server\\share\\x.png",
        "..\\x.png",
        "",
    ],
)
def test_escaping_paths_rejected(tmp_path, rel):
    with pytest.raises(BadInputError) as info:
        resolve_under_root(tmp_path, rel, source="train.csv", row=7)
    assert "train.csv, row 7" in str(info.value)


def test_inside_paths_resolved(tmp_path):
    assert resolve_under_root(tmp_path, "a/./b.png") == (tmp_path / "a" / "b.png").resolve()
    assert check_relative("a\\b.png") == "a/b.png"
    assert resolve_under_root(tmp_path, "a/..b.png").name == "..b.png"


def test_symlink_pointing_outside_rejected(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "link.png")
    with pytest.raises(BadInputError, match="outside the dataset root"):
        resolve_under_root(root, "link.png")
