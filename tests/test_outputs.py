"""reshape.outputs: guards before any work, one lock per output, modes that honour the umask."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from reshape.artifacts import write_csv
from reshape.errors import BadInputError, ResourceError
from reshape.fileio import atomic_write_text
from reshape.outputs import (
    OutputLock,
    check_entries,
    check_file_output,
    check_inputs_not_outputs,
    check_output_names,
    check_writable,
    created_folders,
    lock_location,
    sniff_format,
    temp_name_bytes,
)

HOLD = textwrap.dedent(
    """
    import sys, time
    from reshape.outputs import OutputLock
    lock = OutputLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    lock.release()
    """
)


def _holder(target: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(target), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_run_is_refused_naming_the_holder(tmp_path: Path) -> None:
    target = tmp_path / "out"
    proc = _holder(target, 30)
    try:
        with pytest.raises(BadInputError) as info:
            OutputLock(target).acquire()
        message = str(info.value)
        assert "another reshape run holds this output" in message
        assert f"pid {proc.pid}" in message and "--wait" in message
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "out.parquet"
    proc = _holder(target, 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert Path(lock_location(target)).exists()  # the killed run could not clean up
    lock = OutputLock(target).acquire()
    assert lock.holder().pid == os.getpid()
    lock.release()


def test_wait_blocks_until_the_holder_finishes(tmp_path: Path) -> None:
    target = tmp_path / "out"
    proc = _holder(target, 1.5)
    messages: list[str] = []
    start = time.monotonic()
    lock = OutputLock(target, wait=True).acquire(on_wait=messages.append)
    waited = time.monotonic() - start
    lock.release()
    proc.wait()
    assert proc.returncode == 0
    assert waited > 0.3
    assert len(messages) == 1 and "waiting for the run that holds it" in messages[0]


def test_lock_lives_beside_the_output_not_inside_it(tmp_path: Path) -> None:
    assert lock_location(tmp_path / "dataset") == str(tmp_path.resolve() / ".dataset.reshape-lock")
    assert lock_location("s3://bucket/run/images/") == "s3://bucket/run/.images.reshape-lock"


def test_object_store_lease_refuses_then_expires(tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    target = f"memory://leases-{os.getpid()}/out"
    first = OutputLock(target, lease_seconds=1.0).acquire()
    with pytest.raises(BadInputError, match="another reshape run holds this output"):
        OutputLock(target, lease_seconds=1.0).acquire()
    first._stop.set()  # a crashed holder stops renewing: its lease runs out
    first._renewer.join()
    time.sleep(1.2)
    second = OutputLock(target, lease_seconds=1.0).acquire()
    assert second.holder().pid == os.getpid()
    second.release()


# ----------------------------------------------------------------------------------------------- guards
def test_inputs_are_never_outputs(tmp_path: Path) -> None:
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "a.png").write_bytes(b"x")
    labels = tmp_path / "dmos.csv"
    labels.write_text("a\n")
    link = tmp_path / "link.csv"
    link.symlink_to(labels)
    with pytest.raises(BadInputError, match="output is the input"):
        check_inputs_not_outputs([labels], file_outputs=[link])
    with pytest.raises(BadInputError, match="output folder is the input"):
        check_inputs_not_outputs([refs], folder_outputs=[refs])
    with pytest.raises(BadInputError, match="lies inside the input"):
        check_inputs_not_outputs([refs], folder_outputs=[refs / "out"])
    with pytest.raises(BadInputError, match="contains the input"):
        check_inputs_not_outputs([refs], folder_outputs=[tmp_path])
    check_inputs_not_outputs(
        [refs, labels], file_outputs=[tmp_path / "x.csv"], folder_outputs=[tmp_path / "o"]
    )


def test_format_guard_and_ownership(tmp_path: Path) -> None:
    user_csv = tmp_path / "x.csv"
    user_csv.write_text("image\na.png\n")
    with pytest.raises(BadInputError, match="holds a csv file, not parquet"):
        check_file_output(user_csv, "parquet", overwrite=True)
    with pytest.raises(BadInputError, match="was not written by reshape"):
        check_file_output(user_csv, "csv")
    check_file_output(user_csv, "csv", overwrite=True)
    with pytest.raises(BadInputError, match="is a folder"):
        check_file_output(tmp_path, "csv", overwrite=True)
    ours = tmp_path / "train.csv"
    frame = pd.DataFrame(
        [["a.png", "r.png", 4.0, 0.1, 1, 1, "source"]],
        columns=["dist_img", "ref_img", "dmos", "var", "dist_type", "dist_level", "origin"],
    )
    write_csv(ours, frame, "train", {"fingerprint": "f"})
    check_file_output(ours, "csv")
    check_file_output(tmp_path / "new.parquet", "parquet")
    png = tmp_path / "p.parquet"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert sniff_format(png) == "png"
    with pytest.raises(BadInputError, match="holds a png file"):
        check_file_output(png, "parquet", overwrite=True)


def _read_only_bind(src: Path, dst: Path) -> bool:
    dst.mkdir()
    if os.geteuid() != 0:
        return False
    return (
        subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(dst)], capture_output=True).returncode
        == 0
    )


def test_check_writable_on_a_real_read_only_mount(tmp_path: Path) -> None:
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    if not _read_only_bind(src, ro):
        pytest.skip("cannot bind-mount read-only here (not root, or no mount permission)")
    try:
        with pytest.raises(ResourceError, match="Read-only file system"):
            check_writable(ro / "sub" / "x.parquet")
    finally:
        subprocess.run(["umount", str(ro)], check=True)


def test_check_writable_injected_faults(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(ResourceError, match="cannot write in .*Read-only file system"):
        check_writable(tmp_path / "x.parquet")


def test_check_writable_needs_free_space(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with pytest.raises(ResourceError, match="not enough free space"):
        check_writable(tmp_path / "out", need_bytes=free * 2)
    check_writable(tmp_path / "out", need_bytes=1024)


def test_failed_run_leaves_no_empty_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    with pytest.raises(RuntimeError), created_folders(target):
        assert target.is_dir()
        raise RuntimeError("stage failed")
    assert not (tmp_path / "a").exists()
    with created_folders(target):
        (target / "kept.txt").write_text("done")
    with pytest.raises(RuntimeError), created_folders(target, tmp_path / "d"):
        raise RuntimeError("again")
    assert (target / "kept.txt").read_text() == "done" and not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------------------------- modes
@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_files_honour_the_umask(tmp_path: Path, umask: int) -> None:
    code = textwrap.dedent(
        f"""
        import os, sys
        os.umask({umask})
        from reshape.fileio import atomic_write_text
        atomic_write_text(sys.argv[1], "x")
        """
    )
    target = tmp_path / "f.json"
    subprocess.run([sys.executable, "-c", code, str(target)], check=True)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    plain = tmp_path / "plain"
    subprocess.run(
        [sys.executable, "-c", f"import os; os.umask({umask}); open({str(plain)!r}, 'w')"], check=True
    )
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_atomic_temp_is_named_after_its_output(tmp_path: Path) -> None:
    from reshape.fileio import TMP_PREFIX, atomic_path, remove_stale_temps

    with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.csv") as tmp:
        assert tmp.name.startswith(f"{TMP_PREFIX}a.csv.")
        raise RuntimeError
    (tmp_path / f"{TMP_PREFIX}a.csv.stale.csv").write_text("")
    (tmp_path / f"{TMP_PREFIX}b.csv.live.csv").write_text("")
    assert remove_stale_temps(tmp_path, names=["a.csv"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"{TMP_PREFIX}b.csv.live.csv"]
    atomic_write_text(tmp_path / "c.json", json.dumps({}))


def test_failed_run_removes_its_folder_and_its_lock(tmp_path: Path) -> None:
    from reshape.outputs import locked_outputs

    target = tmp_path / "new" / "features" / "train.parquet"
    with pytest.raises(RuntimeError), created_folders(target.parent), locked_outputs(target):
        assert Path(lock_location(target)).exists()
        raise RuntimeError("stage failed")
    assert not (tmp_path / "new").exists()


def test_check_entries_refuses_links_and_special_files_read_from_one_listing(tmp_path):
    """check_entries reads each folder once (700,000 names at KADIS scale) and still refuses a link or a
    FIFO at a name the stage writes, and a folder link leading out; regular files, folders and absent
    names pass."""
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "ok.png").write_bytes(b"x")
    (out / "folder.png").mkdir()
    check_entries(out, ["ok.png", "missing.png", "folder.png", "sub/new.png"])
    (out / "sub" / "link.png").symlink_to(tmp_path / "user.png")
    with pytest.raises(BadInputError, match=r"sub/link.png: is a symbolic link \(to .*user.png\)"):
        check_entries(out, ["ok.png", "sub/link.png"])
    os.mkfifo(out / "fifo.png")
    with pytest.raises(BadInputError, match=r"fifo.png: is a FIFO \(named pipe\) where reshape writes"):
        check_entries(out, ["ok.png", "fifo.png"])
    (out / "away").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(BadInputError, match="leads outside the output"):
        check_entries(out, ["away/x.png"])


def test_output_name_length_check_counts_the_temporary_name_as_pathlib_does(tmp_path):
    """temp_name_bytes works on strings (no path object per name) and gives the bytes of the temporary
    name atomic_path makes: prefix, name, dot, 8 characters, pathlib's suffix."""
    from reshape.fileio import TMP_PREFIX

    for name in ["a.png", "a", "a.b.c", ".hidden", ".hidden.png", "..x", "a.", "x.tar.gz", "é.png", "..."]:
        assert temp_name_bytes(name) == len(os.fsencode(f"{TMP_PREFIX}{name}.xxxxxxxx{Path(name).suffix}"))
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    check_output_names(tmp_path, ["sub/short.png", "x" * (limit - 40) + ".png"])
    with pytest.raises(BadInputError, match="file name too long"):
        check_output_names(tmp_path, ["sub/short.png", "sub/" + "x" * (limit - 20) + ".png"])
