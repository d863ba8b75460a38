"""Output locations that are local paths, ``file://`` URIs or object-store URIs (``s3://``, ``gs://``, ...).

A location without a scheme (or with ``file://``) is a local or shared-filesystem path and goes through
:mod:`reshape.fileio` (temporary file + rename, truly atomic). Anything else is opened with
``pyarrow.fs`` (S3, GCS, HDFS, Azure built in) or, for schemes pyarrow does not know, ``fsspec``
(``memory://``, and whatever fsspec plug-ins are installed), both behind the same ``pyarrow.fs`` interface.
Object stores (:data:`OBJECT_STORE_SCHEMES`: S3, GCS, Azure) put whole objects: an object becomes visible
only once its upload has finished, so it is written straight to its final key. Other remote filesystems
(HDFS, fsspec plug-ins) write a temporary key beside the final one, ``.reshape-tmp-<name>.<random>``, and
move it onto the final key (a rename where the filesystem has one).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from reshape.errors import BadInputError
from reshape.fileio import atomic_path, atomic_write_bytes
from reshape.fsbase import TMP_PREFIX, is_local  # is_local: the one test, re-exported here

Location = str | os.PathLike[str]

#: Schemes whose objects appear only once fully uploaded: written straight to the final key.
OBJECT_STORE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
_COPY_CHUNK = 1 << 20


class FileStat(NamedTuple):  # a tuple: one per file of a 700,000-file listing
    """Size and modification time of a file or object, as the filesystem reports them."""

    size: int
    mtime_ns: int


def scheme(location: Location) -> str:
    """URI scheme in lower case; '' for a plain path (Windows drive letters included)."""
    text = os.fspath(location)
    if "://" not in text:
        return ""
    return urlsplit(text).scheme.lower()


def local_path(location: Location) -> Path:
    """The filesystem path of a local location (plain path or ``file://`` URI)."""
    text = os.fspath(location)
    if scheme(text) == "file":
        return Path(urlsplit(text).path)
    if scheme(text):
        raise ValueError(f"{text} is not a local path")
    return Path(text)


def filesystem(location: Location) -> tuple[Any, str]:
    """``(pyarrow.fs.FileSystem, path inside it)`` for any location."""
    from pyarrow import fs as pafs

    text = os.fspath(location)
    if is_local(text):
        return pafs.LocalFileSystem(), str(local_path(text).resolve())
    try:
        return pafs.FileSystem.from_uri(text)
    except (ValueError, NotImplementedError):
        pass  # a scheme pyarrow does not know (ArrowInvalid is a ValueError): try fsspec
    try:
        import fsspec
    except ImportError:
        raise BadInputError(
            f"{text}: scheme {scheme(text)!r} needs fsspec: pip install 'reshape-iqa[storage]'"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(text)
    except (ValueError, ImportError) as exc:
        raise BadInputError(f"{text}: unsupported storage location ({str(exc).splitlines()[0]})") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def join(base: Location, *parts: str) -> str:
    """Join path components onto a location, with '/' for URIs."""
    text = os.fspath(base)
    if is_local(text) and not scheme(text):
        return str(Path(text).joinpath(*parts))
    return posixpath.join(text.rstrip("/"), *parts)


def exists(location: Location) -> bool:
    from pyarrow import fs as pafs

    if is_local(location):
        return local_path(location).exists()
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(location: Location) -> bool:
    from pyarrow import fs as pafs

    if is_local(location):
        return local_path(location).is_file()
    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def makedirs(location: Location) -> None:
    if is_local(location):
        local_path(location).mkdir(parents=True, exist_ok=True)
        return
    fs, path = filesystem(location)
    fs.create_dir(path, recursive=True)


def listdir(location: Location) -> list[str]:
    """Names (not paths) of the entries directly under a folder/prefix, sorted; [] if it does not exist."""
    from pyarrow import fs as pafs

    if is_local(location):
        folder = local_path(location)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos)


def read_bytes(location: Location) -> bytes:
    if is_local(location):
        return local_path(location).read_bytes()
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as fh:
        return fh.read()


def write_bytes(location: Location, data: bytes) -> None:
    """Write ``data`` so that ``location`` never holds a partial file (see the module notes)."""
    if is_local(location):
        atomic_write_bytes(local_path(location), data)
        return
    with _remote_output(location) as fh:
        fh.write(data)


@contextlib.contextmanager
def _remote_output(location: Location) -> Iterator[Any]:
    """An output stream whose bytes appear at ``location`` only once complete (see the module notes)."""
    fs, path = filesystem(location)
    parent = posixpath.dirname(path)
    if parent:
        fs.create_dir(parent, recursive=True)
    if scheme(location) in OBJECT_STORE_SCHEMES:
        with fs.open_output_stream(path) as fh:
            yield fh
        return
    tmp = posixpath.join(parent, f"{TMP_PREFIX}{posixpath.basename(path)}.{uuid.uuid4().hex[:12]}")
    try:
        with fs.open_output_stream(tmp) as fh:
            yield fh
        fs.move(tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.delete_file(tmp)
        raise


def write_chunks(location: Location, chunks: Iterable[bytes]) -> None:
    """:func:`write_bytes` of the concatenated ``chunks``, streamed: memory holds one chunk at a time."""
    if is_local(location):
        with atomic_path(local_path(location)) as tmp, open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        return
    # an object store publishes whatever a stream held when it closes, even on an error: the chunks go
    # to a local temporary file first, so a failure while making them leaves the old object whole
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
        spool = os.path.join(tmp, "chunks")
        with open(spool, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        upload_file(spool, location)


def upload_file(local: Location, location: Location) -> None:
    """Copy a finished local file to ``location`` (atomic as :func:`write_bytes`), in chunks."""
    if is_local(location):
        with atomic_path(local_path(location)) as tmp:
            shutil.copyfile(local, tmp)
        return
    with open(local, "rb") as src, _remote_output(location) as fh:
        while block := src.read(_COPY_CHUNK):
            fh.write(block)


def stat(location: Location) -> FileStat | None:
    """Size and mtime of the file at ``location``; None when there is no file there."""
    from pyarrow import fs as pafs

    if is_local(location):
        try:
            st = local_path(location).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileStat(st.st_size, st.st_mtime_ns) if local_path(location).is_file() else None
    fs, path = filesystem(location)
    info = fs.get_file_info(path)
    return _file_stat(info) if info.type == pafs.FileType.File else None


def _file_stat(info: Any) -> FileStat:
    return FileStat(int(info.size or 0), int(info.mtime_ns or 0))


def list_files(location: Location) -> dict[str, FileStat]:
    """``{name: FileStat}`` of the regular files directly under a folder/prefix (one listing call);
    {} when it does not exist."""
    from pyarrow import fs as pafs

    if is_local(location):
        folder = local_path(location)
        if not folder.is_dir():
            return {}
        with os.scandir(folder) as entries:
            return {
                e.name: FileStat(st.st_size, st.st_mtime_ns)
                for e in entries
                if e.is_file(follow_symlinks=False) and (st := e.stat(follow_symlinks=False)) is not None
            }
    fs, path = filesystem(location)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return {
        posixpath.basename(i.path.rstrip("/")): _file_stat(i) for i in infos if i.type == pafs.FileType.File
    }


def sha256(location: Location) -> str | None:
    """Hex sha256 of the file at ``location`` (read in chunks); None when it is missing."""
    h = hashlib.sha256()
    try:
        if is_local(location):
            with open(local_path(location), "rb") as fh:
                while block := fh.read(_COPY_CHUNK):
                    h.update(block)
            return h.hexdigest()
        fs, path = filesystem(location)
        with fs.open_input_stream(path) as fh:
            while block := fh.read(_COPY_CHUNK):
                h.update(block)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return h.hexdigest()


@contextlib.contextmanager
def staged_output(location: Location) -> Iterator[Path]:
    """A local path to write a file to (Parquet, an image...); it lands at ``location`` once complete.

    Local locations write beside the target and rename; remote ones write a local temporary file and
    upload it on success. On an exception nothing appears at ``location``.
    """
    if is_local(location):
        with atomic_path(local_path(location)) as tmp:
            yield tmp
        return
    suffix = Path(urlsplit(os.fspath(location)).path).suffix
    fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix)
    os.close(fd)
    try:
        yield Path(name)
        upload_file(name, location)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


@contextlib.contextmanager
def local_copy(location: Location) -> Iterator[Path]:
    """A local path holding the file at ``location``: the file itself when local, else a temporary copy."""
    if is_local(location):
        yield local_path(location)
        return
    suffix = Path(urlsplit(os.fspath(location)).path).suffix
    fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix)
    os.close(fd)
    try:
        Path(name).write_bytes(read_bytes(location))
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def remove_tree(location: Location) -> None:
    """Delete a folder/prefix and everything under it; missing is fine."""
    from pyarrow import fs as pafs

    if is_local(location):
        import shutil

        shutil.rmtree(local_path(location), ignore_errors=True)
        return
    fs, path = filesystem(location)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def remove(location: Location) -> None:
    """Delete a file; missing is fine."""
    if is_local(location):
        with contextlib.suppress(FileNotFoundError):
            local_path(location).unlink()
        return
    fs, path = filesystem(location)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def remove_stale_temps(location: Location) -> int:
    """Delete temporary files/keys an interrupted writer left directly under a folder/prefix."""
    removed = 0
    for name in listdir(location):
        if name.startswith(TMP_PREFIX):
            remove(join(location, name))
            removed += 1
    return removed


__all__ = [
    "OBJECT_STORE_SCHEMES",
    "FileStat",
    "exists",
    "filesystem",
    "is_file",
    "is_local",
    "join",
    "list_files",
    "listdir",
    "local_copy",
    "local_path",
    "makedirs",
    "read_bytes",
    "remove",
    "remove_stale_temps",
    "remove_tree",
    "scheme",
    "sha256",
    "staged_output",
    "stat",
    "upload_file",
    "write_bytes",
    "write_chunks",
]
