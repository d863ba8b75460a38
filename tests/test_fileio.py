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
    resolve_many_under_root,
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


def test_check_relative_fast_path_gives_the_slow_path_answers():
    """Bare names skip the path parsing; names it must still refuse or change do not take the fast path."""
    assert check_relative("I01.png") == "I01.png" and check_relative("a b.png") == "a b.png"
    assert check_relative("./a.png") == "a.png" and check_relative("a\\b.png") == "a/b.png"
    for bad, message in [("..", "escapes"), ("C:a.png", "absolute"), ("a\x00.png", "NUL"), ("  ", "empty")]:
        with pytest.raises(BadInputError, match=message):
            check_relative(bad)


def test_resolve_many_under_root_answers_as_resolve_under_root(tmp_path):
    """The batch resolver of plans (one lstat per name) gives resolve_under_root's path and is_file, for
    plain names, nested names, links that stay inside, dangling and missing names and folders; a file or
    folder link leading out of the root is refused with the same message."""
    root, away = tmp_path / "root", tmp_path / "away"
    (root / "sub").mkdir(parents=True)
    away.mkdir()
    (root / "a.png").write_bytes(b"a")
    (root / "sub" / "b.png").write_bytes(b"b")
    (away / "c.png").write_bytes(b"c")
    (root / "in_link.png").symlink_to(root / "sub" / "b.png")
    (root / "dangling.png").symlink_to(root / "nothing.png")
    (root / "linked_sub").symlink_to(root / "sub", target_is_directory=True)
    (root / "out_link.png").symlink_to(away / "c.png")
    (root / "away").symlink_to(away, target_is_directory=True)
    rels = ["a.png", "sub/b.png", "in_link.png", "dangling.png", "missing.png", "linked_sub/b.png", "sub"]
    expected = [(str(resolve_under_root(root, r)), resolve_under_root(root, r).is_file()) for r in rels]
    assert resolve_many_under_root(root, rels) == expected
    assert [ok for _, ok in expected] == [True, True, True, False, False, True, False]
    for bad in ["out_link.png", "away/c.png"]:
        with pytest.raises(BadInputError) as slow:
            resolve_under_root(root, bad, source="plan.csv", row=3)
        with pytest.raises(BadInputError) as fast:
            resolve_many_under_root(root, ["a.png", bad], source="plan.csv", rows=[2, 3])
        assert str(fast.value) == str(slow.value) and "resolves outside the dataset root" in str(fast.value)


# ----------------------------------------------------------------------------------------------- links (issue #21)
def test_remove_recorded_deletes_only_what_still_is_ours(tmp_path):
    from reshape.fileio import remove_recorded, sha256_file

    root, user = tmp_path / "out", tmp_path / "user"
    (root / "sub").mkdir(parents=True)
    user.mkdir()
    (user / "a.png").write_bytes(b"user's")
    (root / "linked").symlink_to(user, target_is_directory=True)  # a folder link leading outside
    (root / "file_link.png").symlink_to(user / "a.png")
    ours, edited = root / "sub/ours.png", root / "sub/edited.png"
    ours.write_bytes(b"ours")
    edited.write_bytes(b"ours")
    digest = sha256_file(ours)
    edited.write_bytes(b"edited by the user")
    assert not remove_recorded(root, "linked/a.png", sha256_file(user / "a.png"))  # through a link: never
    assert not remove_recorded(root, "file_link.png", None)  # a link in place of our file: not ours
    assert not remove_recorded(root, "sub/edited.png", digest)  # bytes changed since: not ours
    assert not remove_recorded(root, "sub/missing.png", digest)
    assert remove_recorded(root, "sub/ours.png", digest)
    assert (user / "a.png").read_bytes() == b"user's" and (root / "file_link.png").is_symlink()
    assert edited.exists() and not ours.exists()


def test_open_no_follow_refuses_links_and_special_files(tmp_path):
    from reshape.fileio import write_no_follow

    target = tmp_path / "target.txt"
    target.write_text("keep")
    (tmp_path / "link").symlink_to(target)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(BadInputError, match="symbolic link"):
        write_no_follow(tmp_path / "link", "x")
    with pytest.raises(BadInputError, match="FIFO"):  # and no hang: O_NONBLOCK
        write_no_follow(tmp_path / "fifo", "x")
    assert target.read_text() == "keep"
    write_no_follow(tmp_path / "plain", "written")
    assert (tmp_path / "plain").read_text() == "written"


def test_check_inside_follows_links_to_decide(tmp_path):
    from reshape.fileio import check_inside

    root = tmp_path / "out"
    (root / "inner").mkdir(parents=True)
    (root / "ok").symlink_to(root / "inner", target_is_directory=True)  # a link that stays inside
    (root / "away").symlink_to(tmp_path, target_is_directory=True)
    check_inside(root, root / "ok" / "new.png")
    check_inside(root, root / "not" / "yet" / "there.png")
    with pytest.raises(BadInputError, match="leads outside"):
        check_inside(root, root / "away" / "x.png")
