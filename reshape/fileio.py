"""Atomic writes, checksums and root-confined paths.

Every artifact and image is written to a temporary file in the destination folder and renamed into place,
so an interrupted run (even kill -9) never leaves a half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO

from reshape.errors import BadInputError, where
from reshape.fsbase import TMP_PREFIX, file_mode


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, sync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.
    ``sync=False`` skips the fsync, for many small files a caller makes durable together before the
    record that vouches for them is written.

    On any exception the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    # The final name inside the temp name lets a run clean up only the temps of the outputs it holds.
    fd, tmp_name = tempfile.mkstemp(
        prefix=f"{TMP_PREFIX}{final.name}.", suffix=final.suffix, dir=final.parent
    )
    tmp = Path(tmp_name)
    try:
        # mkstemp creates 0600; a published file must get the mode a plain open() would (umask honoured).
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    try:
        yield tmp
        if sync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open()`` replacement whose result appears under ``path`` only once fully written."""
    if not any(m in mode for m in "wx"):
        raise ValueError("atomic_open is for writing")
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, sync: bool = True) -> None:
    with atomic_path(path, sync=sync) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def remove_stale_temps(folder: str | os.PathLike[str], names: Iterable[str] | None = None) -> int:
    """Delete temp files an interrupted run left in ``folder`` (only those of the final ``names`` when
    given; call it while holding the output's lock); returns how many were removed."""
    removed = 0
    wanted = None if names is None else {f"{TMP_PREFIX}{n}." for n in names}
    for p in Path(folder).glob(TMP_PREFIX + "*"):
        if wanted is not None and not any(p.name.startswith(w) for w in wanted):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed += 1
    return removed


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_relative(rel: str, *, source: object = None, row: int | None = None) -> str:
    """Validate a dataset path as stored in a CSV/manifest and return it in POSIX form.

    Rejected: empty, absolute (POSIX or Windows, drive letters, UNC), and any ``..`` component, so the
    path can never leave the root it is resolved against.
    """
    if isinstance(rel, str) and _plain_name(rel):
        return rel  # the common case, a bare file name: nothing below can reject or change it
    loc = where(source, row) + ": " if source is not None else ""
    if not isinstance(rel, str) or not rel.strip():
        raise BadInputError(f"{loc}empty image path")
    text = rel.replace("\\", "/")
    if "\x00" in text:
        raise BadInputError(f"{loc}path {rel!r} contains a NUL byte")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(rel).drive or PureWindowsPath(rel).root:
        raise BadInputError(f"{loc}path {rel!r} is absolute; paths must be relative to the dataset root")
    parts = PurePosixPath(text).parts
    if ".." in parts:
        raise BadInputError(f"{loc}path {rel!r} escapes the dataset root ('..' component)")
    return str(PurePosixPath(*[p for p in parts if p != "."])) if parts else text


#: A separator, a drive colon or NUL: a name holding one is checked the long way.
_NOT_IN_A_PLAIN_NAME = re.compile(r"[/\\:\x00]")


def _plain_name(rel: str) -> bool:
    """A single non-blank name with no separator, drive colon, NUL or leading dot: already in the form
    :func:`check_relative` returns (checked by string tests alone, for plans of 140,000 references)."""
    return bool(rel.strip()) and not rel.startswith(".") and _NOT_IN_A_PLAIN_NAME.search(rel) is None


def printable_path(path: object) -> str:
    """A path as text any terminal and UTF-8 stream can take: bytes of the name that are not UTF-8 (held by
    Python as surrogates) are shown as ``\\xNN``."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return os.fsencode(text).decode("utf-8", "backslashreplace")


def check_file_name(rel: str, path: object) -> str:
    """A file's path relative to a root, as reshape will record it, refused in one line when a table
    could not name it back: a backslash is read as a folder separator in every CSV path
    (:func:`check_relative`), so ``a\\b.png`` would come back as ``a/b.png``, another file; a name that is
    not valid UTF-8 cannot be written to a UTF-8 table (or hashed into a seed) at all."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInputError(
            f"{printable_path(path)}: the file name is not valid UTF-8 (the bytes shown as \\xNN); reshape's "
            "tables are UTF-8: rename the file"
        ) from None
    if "\\" in rel:
        raise BadInputError(
            f"{path}: the file name holds a backslash, which reshape's tables read as a folder separator; "
            "rename the file"
        )
    return check_relative(rel, source=path)


def resolve_under_root(
    root: str | os.PathLike[str], rel: str, *, source: object = None, row: int | None = None
) -> Path:
    """Resolve ``rel`` against ``root``; raise :class:`BadInputError` if it escapes the root.

    Symlinks are resolved too, so a link inside the root that points outside is rejected as well.
    """
    clean = check_relative(rel, source=source, row=row)
    root_resolved = Path(root).resolve()
    full = (root_resolved / clean).resolve()
    if not resolves_inside(root_resolved, full):
        loc = where(source, row) + ": " if source is not None else ""
        raise BadInputError(f"{loc}path {rel!r} resolves outside the dataset root {root_resolved}")
    return full


def resolve_many_under_root(
    root: str | os.PathLike[str],
    rels: Sequence[str],
    *,
    source: object = None,
    rows: Sequence[int] | None = None,
) -> list[tuple[str, bool]]:
    """:func:`resolve_under_root` of many paths already in :func:`check_relative`'s form, each with
    whether it is a regular file (links followed, as ``Path.is_file``): the same answers and the same
    one-line refusal, with the root and each folder resolved once and one ``lstat`` per name (a name that
    is a symbolic link is resolved on its own). A plan of 140,000 references thus costs 140,000 ``lstat``
    calls, not several path resolutions each. Paths come back as strings (``str(Path)`` of the answer):
    a path object each would cost as much as the ``lstat``."""
    real_root = os.path.realpath(root)
    prefix = real_root.rstrip(os.sep) + os.sep
    real_folders: dict[str, str] = {}
    resolved: list[tuple[str, bool]] = []
    for i, rel in enumerate(rels):
        folder, _, name = rel.rpartition("/")
        if folder not in real_folders:
            real_folders[folder] = os.path.realpath(os.path.join(real_root, folder))
        full = os.path.join(real_folders[folder], name)
        try:
            mode = os.lstat(full).st_mode
        except OSError:
            mode = 0
        if stat.S_ISLNK(mode):
            full = os.path.realpath(full)
            is_file = os.path.isfile(full)
        else:
            is_file = stat.S_ISREG(mode)
        if full != real_root and not full.startswith(prefix):
            loc = where(source, rows[i] if rows is not None else None) + ": " if source is not None else ""
            raise BadInputError(f"{loc}path {rel!r} resolves outside the dataset root {real_root}")
        resolved.append((full, is_file))
    return resolved


# ----------------------------------------------------------------------------------------------- links
def file_kind(mode: int) -> str:
    """A file type in words, for messages: 'symbolic link', 'FIFO', 'device node', ..."""
    for test, name in (
        (stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "device node"),
        (stat.S_ISBLK, "device node"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder"),
    ):  # fmt: skip
        if test(mode):
            return name
    return "regular file"


def open_no_follow(path: str | os.PathLike[str], flags: int, mode: int | None = None) -> int:
    """``os.open`` that never follows a symbolic link at ``path``, never blocks on a FIFO and opens only a
    regular file; a link or special file there is a :class:`BadInputError` saying why it is refused."""
    want = flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, want, file_mode() if mode is None else mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
            raise BadInputError(
                f"{path}: is a symbolic link (to {os.readlink(path)}); reshape never writes through a link"
            ) from None
        if exc.errno == errno.ENXIO:  # a FIFO with no reader, opened for writing without blocking
            raise BadInputError(f"{path}: is a FIFO (named pipe), not a regular file; refusing") from None
        raise
    kind = file_kind(os.fstat(fd).st_mode)
    if kind != "regular file":
        os.close(fd)
        raise BadInputError(f"{path}: is a {kind}, not a regular file; refusing")
    os.set_blocking(fd, True)
    return fd


def write_no_follow(path: str | os.PathLike[str], text: str) -> None:
    """Write a small text file in place (e.g. a lock's holder note), refusing a link or special file."""
    fd = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def resolves_inside(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """True when ``path`` (symlinks resolved, whether it exists or not) is ``root`` or lies inside it
    (resolved). The one containment test in reshape: :func:`resolve_under_root`, :func:`check_inside`,
    :func:`remove_recorded` and the output guards of :mod:`reshape.outputs` all ask it."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def check_inside(root: str | os.PathLike[str], path: str | os.PathLike[str], *, what: str = "output") -> None:
    """Refuse to write at ``path`` when a symbolic link on the way leads outside the ``what`` folder
    ``root``: what reshape writes or deletes stays inside its output."""
    if not resolves_inside(root, path):
        raise BadInputError(
            f"{path}: leads outside the {what} {root} through a symbolic link (to {os.path.realpath(path)}); "
            "reshape never writes or deletes through a link that leaves its output"
        )


def remove_recorded(root: str | os.PathLike[str], rel: str, sha256: str | None = None) -> bool:
    """Delete ``root/rel``, a file a command recorded as its own, only if it still is: a regular file (not
    a link, not a special file) reached without a symbolic link leading outside ``root``, whose bytes
    still hash to the recorded ``sha256`` (when one was recorded). Returns True when it was deleted;
    anything else (missing, moved out of reach, edited, replaced) is left alone."""
    path = Path(root) / check_relative(rel)
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return False
    except (FileNotFoundError, NotADirectoryError):
        return False
    if not resolves_inside(root, path.parent):
        return False
    if sha256 is not None and sha256_file(path) != sha256:
        return False
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        return True
    return False


# ----------------------------------------------------------------------------------------------- SHA256SUMS
def sums_line(digest: str, rel: str) -> str:
    """One ``sha256sum`` line (no newline) for ``rel``, escaped the way GNU coreutils escapes a name that
    holds a backslash, newline or carriage return: a leading backslash, then ``\\\\``, ``\\n``, ``\\r``."""
    if not any(c in rel for c in "\\\n\r"):
        return f"{digest}  {rel}"
    escaped = rel.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return f"\\{digest}  {escaped}"


def parse_sums_line(line: str) -> tuple[str, str] | None:
    """``(digest, name)`` of one ``sha256sum`` line (GNU escaping undone; binary-mode ``*`` accepted), or
    None when the line is not one."""
    escaped = line.startswith("\\")
    body = line[1:] if escaped else line
    digest, sep, rel = body.partition("  ")
    if not sep:
        digest, sep, rel = body.partition(" *")
    if not sep or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
        return None
    if escaped:
        out, i = [], 0
        while i < len(rel):
            c = rel[i]
            if c == "\\" and i + 1 < len(rel) and rel[i + 1] in "\\nr":
                out.append({"\\": "\\", "n": "\n", "r": "\r"}[rel[i + 1]])
                i += 2
                continue
            if c == "\\":
                return None  # a lone backslash is not something sha256sum writes
            out.append(c)
            i += 1
        rel = "".join(out)
    return digest.lower(), rel


# ----------------------------------------------------------------------------------------------- list cells
def list_cell(names: Iterable[str]) -> str:
    """A list of names as one CSV cell: a JSON array (``["a.png", "b;c.png"]``), which round-trips any
    name (``;``, ``,``, quotes, newlines); the CSV writer quotes the cell itself."""
    import json

    return json.dumps([str(n) for n in names], ensure_ascii=False, separators=(",", ":"))


def parse_list_cell(cell: object, *, source: object = None, row: int | None = None) -> list[str]:
    """The names of a cell :func:`list_cell` wrote; a cell of the format before it (``a.png;b.png``, which
    cannot hold a ``;`` in a name) is still read. Anything else is a :class:`BadInputError` naming the row."""
    import json

    if cell is None or (isinstance(cell, float) and cell != cell):  # an empty cell read as NaN
        return []
    text = str(cell)
    if not text.startswith("["):
        return [n for n in text.split(";") if n]
    try:
        names = json.loads(text)
    except ValueError:  # an old-format cell whose first name starts with '['
        return [n for n in text.split(";") if n]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        loc = where(source, row) + ": " if source is not None else ""
        raise BadInputError(f"{loc}list cell {text[:60]!r} is not a JSON array of names")
    return names


def parse_number_cell(cell: object, *, source: object = None, row: int | None = None) -> list[float]:
    """The finite numbers of a ``;``-separated cell (labels.csv's weights and distances); a value that is
    not one is a :class:`BadInputError` naming the row, never a traceback."""
    if cell is None or (isinstance(cell, float) and cell != cell):
        return []
    values = []
    for part in str(cell).split(";"):
        if not part.strip():
            continue
        try:
            value = float(part)
        except ValueError:
            value = float("nan")
        if value != value or value in (float("inf"), float("-inf")):
            loc = where(source, row) + ": " if source is not None else ""
            raise BadInputError(f"{loc}{part[:40]!r} is not a finite number")
        values.append(value)
    return values
