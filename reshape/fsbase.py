"""The lowest layer of reshape's file handling: names, marks and modes every infra module shares.

Nothing here imports another reshape module except :mod:`reshape.errors`, so :mod:`reshape.fileio`,
:mod:`reshape.storage`, :mod:`reshape.outputs` and :mod:`reshape.artifacts` can all build on it without an
import circle (fsbase <- fileio <- storage <- outputs; fileio <- artifacts).
"""

from __future__ import annotations

import errno
import os

#: Prefix of every temporary file written beside its destination (the final name follows it).
TMP_PREFIX = ".reshape-tmp-"
#: Suffix of the lock file kept beside an output: ``.<name>.reshape-lock``.
LOCK_SUFFIX = ".reshape-lock"
#: Key of the schema tag reshape puts in the metadata of every artifact it writes.
SCHEMA_KEY = "reshape.schema"
#: Suffix of a CSV artifact's metadata sidecar: ``<file>.meta.json``.
META_SUFFIX = ".meta.json"

Location = str | os.PathLike[str]


def is_local(location: Location) -> bool:
    """True for a plain path or a ``file://`` URI (not an object-store or remote location). The one test
    of locality in reshape (:func:`reshape.storage.is_local` is this function)."""
    text = os.fspath(location)
    return "://" not in text or text.lower().startswith("file://")


_UMASK: int | None = None


def current_umask() -> int:
    """The process umask (read once; os.umask has no read-only form)."""
    global _UMASK
    if _UMASK is None:
        old = os.umask(0o022)
        os.umask(old)
        _UMASK = old
    return _UMASK


def file_mode() -> int:
    """The mode a plain ``open(path, 'w')`` would give a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def is_resource_errno(code: int | None) -> bool:
    return code in {
        errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG,
        errno.EMFILE, errno.ENFILE, errno.EFBIG, errno.ENOMEM, errno.EIO,
    }  # fmt: skip
