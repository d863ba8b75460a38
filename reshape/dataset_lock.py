"""One lock per published dataset, for every writer and reader of it.

Writers (publish, a report built inside the dataset) hold the dataset's lock exclusively: the OS lock on
``.<name>.reshape-lock`` beside the folder (reshape.outputs.OutputLock), never a file inside it. Readers
(`reshape verify`, `reshape report` reading a dataset) hold the same file's lock shared (``flock``
``LOCK_SH``), so they never read a folder a publish is half-way through, and several readers run at once.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path

from reshape.errors import BadInputError
from reshape.fileio import file_kind
from reshape.layout import DATASET_JSON, PENDING, SUMS
from reshape.outputs import OutputLock, current_umask, lock_location
from reshape.steps import announce


def is_published(folder: Path) -> bool:
    """True when ``folder`` holds a dataset `reshape publish` wrote (or is writing): its dataset.json carries
    reshape's mark and a SHA256SUMS or a pending list is there."""
    card = folder / DATASET_JSON
    if not ((folder / SUMS).is_file() or (folder / PENDING).is_file()) or not card.is_file():
        return False
    try:
        data = (
            json.loads(card.read_text("utf-8")) if file_kind(card.stat().st_mode) == "regular file" else None
        )
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "reshape_version" in data


def enclosing_dataset(path: Path) -> Path | None:
    """The published dataset ``path`` lies inside (the nearest one above it, ``path`` excluded), or None."""
    full = Path(os.path.abspath(path))
    for parent in full.parents:
        if is_published(parent):
            return parent
    return None


def _open_lock_file(path: str) -> int | None:
    """The lock file opened for ``flock`` (created when missing); None when it cannot exist there (a
    read-only folder: then no writer can take the lock either, so there is nothing to wait for)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        try:
            fd = os.open(path, flags | os.O_CREAT, 0o666 & ~current_umask())
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return None
            raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadInputError(f"{path}: the dataset's lock file is a symbolic link; remove it") from None
        raise
    if file_kind(os.fstat(fd).st_mode) != "regular file":
        os.close(fd)
        raise BadInputError(f"{path}: the dataset's lock file is not a regular file; remove it")
    return fd


@contextlib.contextmanager
def shared_lock(dataset: Path, *, wait: bool = True) -> Iterator[None]:
    """Hold ``dataset``'s lock shared while reading it: a publish (exclusive holder) is waited for, or
    refused in one line without ``wait``."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: readers take the writers' exclusive lock
        with OutputLock(dataset, wait=wait):
            yield
        return
    fd = _open_lock_file(lock_location(dataset))
    if fd is None:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = OutputLock(dataset).holder()
            who = holder.describe() if holder else "another process"
            if not wait:
                raise BadInputError(
                    f"{dataset}: a reshape run is writing this dataset ({who}); wait for it or pass --wait"
                ) from None
            announce("%s: waiting for the run writing it (%s)", dataset, who)
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


@contextlib.contextmanager
def dataset_locks(
    *, exclusive: list[Path] = (), shared: list[Path] = (), wait: bool = False
) -> Iterator[None]:
    """Hold every lock at once, in the order of their lock files (two commands never deadlock); a folder
    both read and written is held exclusively."""
    wanted: dict[str, tuple[Path, bool]] = {}
    for folder in shared:
        wanted[lock_location(folder)] = (folder, False)
    for folder in exclusive:
        wanted[lock_location(folder)] = (folder, True)
    with contextlib.ExitStack() as stack:
        for _, (folder, mine) in sorted(wanted.items()):
            if mine:
                stack.enter_context(OutputLock(folder, wait=wait))
            else:
                stack.enter_context(shared_lock(folder, wait=wait))
        yield
