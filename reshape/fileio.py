"""Atomic writes, checksums and root-confined paths.

Every artifact and image is written to a temporary file in the destination folder and renamed into place,
so an interrupted run (even kill -9) never leaves a half-written file under a final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import IO

from reshape.errors import BadInputError, where
from reshape.fsbase import TMP_PREFIX, file_mode


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


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


def resolve_under_root(
    root: str | os.PathLike[str], rel: str, *, source: object = None, row: int | None = None
) -> Path:
    """Resolve ``rel`` against ``root``; raise :class:`BadInputError` if it escapes the root.

    Symlinks are resolved too, so a link inside the root that points outside is rejected as well.
    """
    clean = check_relative(rel, source=source, row=row)
    root_resolved = Path(root).resolve()
    full = (root_resolved / clean).resolve()
    if full != root_resolved and root_resolved not in full.parents:
        loc = where(source, row) + ": " if source is not None else ""
        raise BadInputError(f"{loc}path {rel!r} resolves outside the dataset root {root_resolved}")
    return full
