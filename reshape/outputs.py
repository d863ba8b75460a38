"""Output safety shared by every writing stage: guards run before any work, and one lock per output.

The rules (README, "Your files are safe"):

* **Ownership.** A stage replaces or deletes only files it recorded as its own: a file artifact carries
  reshape's schema tag (Parquet metadata, a CSV's ``.meta.json`` sidecar, a JSON ``reshape_version``);
  folder outputs keep a record of what they wrote (distort's manifest/journal, publish's SHA256SUMS).
  Anything else at an output path is a conflict, refused before any work unless ``--overwrite``.
* **Inputs are never outputs**, symlinks included; a folder output never lies inside or around an input.
* **Format guard.** A file of another format (or a folder) at a file output is refused, even with
  ``--overwrite``.
* **Preflight.** Writability and free space are checked before expensive work; folders a failed run
  created and left empty are removed again.
* **One run per output.** :class:`OutputLock` holds an OS file lock beside the output (or a lease object on
  an object store); a second run refuses naming the holder, or waits with ``wait=True``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from reshape.errors import BadInputError, ResourceError
from reshape.fileio import check_inside, file_kind, resolves_inside, write_no_follow
from reshape.fsbase import (  # noqa: F401 - file_mode, is_resource_errno: importable from here too
    LOCK_SUFFIX,
    META_SUFFIX,
    SCHEMA_KEY,
    TMP_PREFIX,
    current_umask,
    file_mode,
    is_resource_errno,
)
from reshape.fsbase import is_local as _is_local

Location = str | os.PathLike[str]

#: The magic bytes that identify the formats reshape writes.
_MAGIC = {b"PAR1": "parquet", b"\x89PNG\r\n\x1a\n": "png", b"BM": "bmp", b"\xff\xd8\xff": "jpeg"}


# ----------------------------------------------------------------------------------------------- paths
def _resolved(path: Location) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve()


def check_inputs_not_outputs(
    inputs: Iterable[Location | None],
    file_outputs: Iterable[Location | None] = (),
    folder_outputs: Iterable[Location | None] = (),
) -> None:
    """Refuse an output that resolves (symlinks included) to an input, or a folder output that would mix
    with an input folder (the same folder, inside it, or around it)."""
    ins = [_resolved(p) for p in inputs if p is not None and _is_local(p)]
    for out in (p for p in file_outputs if p is not None and _is_local(p)):
        target = _resolved(out)
        for src in ins:
            if target == src:
                raise BadInputError(f"{out}: output is the input {src}; refusing to overwrite an input")
            if src.is_dir() and target.is_dir() and resolves_inside(src, target):
                raise BadInputError(f"{out}: output is a folder inside the input {src}")
    for out in (p for p in folder_outputs if p is not None and _is_local(p)):
        target = _resolved(out)
        for src in ins:
            if resolves_inside(src, target) and (src.is_dir() or target == src):
                where = "is" if target == src else "lies inside"
                raise BadInputError(
                    f"{out}: output folder {where} the input {src}; outputs would mix with inputs"
                )
            if resolves_inside(target, src):
                raise BadInputError(f"{out}: output folder contains the input {src}; choose another folder")


# ----------------------------------------------------------------------------------------------- formats
def sniff_format(path: Location) -> str:
    """``'missing'``, ``'folder'``, ``'parquet'``, ``'png'``, ``'bmp'``, ``'jpeg'``, ``'json'``, ``'csv'``
    (text) or ``'binary'``: what is at ``path`` judged by its bytes, never by its name. A symbolic link
    or a special file (FIFO, device node, socket) is named as such (``'symbolic link'``, ...) and never
    opened: reading a FIFO would hang, and a link is not reshape's to follow."""
    p = Path(path)
    try:
        mode = p.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    kind = file_kind(mode)
    if kind == "folder":
        return "folder"
    if kind != "regular file":
        return kind
    with open(p, "rb") as fh:
        head = fh.read(4096)
    for magic, name in _MAGIC.items():
        if head.startswith(magic):
            return name
    if not head:
        return "empty"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "json" if text.lstrip().startswith(("{", "[")) else "csv"


#: CSV schemas that more than one stage writes: their kind names the stage too (``train@label``)
SHARED_SCHEMAS = {"train": ("label", "prune")}


def _with_stage(schema: str, meta: dict) -> str:
    """``schema@stage`` when the mark names the stage that wrote it (``''`` for a table without a schema
    tag, e.g. prune's copy of a KADID-layout dmos.csv) or for a schema several stages write (written before
    stages were recorded, prune's train tables are those with its ``stats``); else the schema alone."""
    stage = meta.get("stage")
    if schema in SHARED_SCHEMAS and not stage:
        stage = "prune" if "stats" in meta else "label"
    return f"{schema}@{stage}" if stage else schema


def artifact_kind(path: Location, fmt: str) -> str | None:
    """The schema name in the mark reshape puts on what it writes (``'features'``, ``'selection'``,
    ``'train@label'`` for a schema several stages write, ...), ``''`` for a reshape JSON without a schema
    tag, None when ``path`` carries no reshape mark."""
    path = Path(path)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            tag = (pq.read_schema(path).metadata or {}).get(SCHEMA_KEY.encode())
            return None if tag is None else tag.decode("utf-8", "replace").partition("/")[0]
        if fmt == "csv":
            side = path.with_name(path.name + META_SUFFIX)
            data = json.loads(side.read_text("utf-8")) if side.is_file() else None
            if not isinstance(data, dict) or not ("reshape_version" in data or SCHEMA_KEY in data):
                return None
            return _with_stage(str(data.get(SCHEMA_KEY, "")).partition("/")[0], data)
        if fmt == "json":
            data = json.loads(path.read_text("utf-8"))
            if not isinstance(data, dict) or not ("reshape_version" in data or SCHEMA_KEY in data):
                return None
            return _with_stage(str(data.get(SCHEMA_KEY, "")).partition("/")[0], data)
    except (OSError, ValueError):
        return None
    return None


def _owned_artifact(path: Path, fmt: str, kinds: Collection[str] | None = None) -> bool:
    """True when ``path`` carries the mark reshape puts on what it writes, of one of ``kinds`` (schema
    names) when given: only an artifact of the same kind counts as the stage's own."""
    kind = artifact_kind(path, fmt)
    return kind is not None and (kinds is None or kind in kinds or kind.partition("@")[0] in kinds)


def check_file_output(
    path: Location | None,
    fmt: str,
    *,
    overwrite: bool = False,
    owned: Callable[[Path], bool] | None = None,
    option: str = "--out",
    kinds: Collection[str] | None = None,
) -> None:
    """Refuse to write ``fmt`` at ``path`` over a folder, a symbolic link, a special file, a file of
    another format, or (without ``overwrite``) a file reshape did not write. With ``kinds`` (schema
    names) only a reshape artifact of one of those kinds is the stage's own: another stage's artifact
    (expensive embeddings, say) is not replaced without ``overwrite``. ``owned`` overrides the test."""
    if path is None or not _is_local(path):
        return
    p = Path(path)
    found = sniff_format(p)
    if found == "missing":
        return
    if found == "folder":
        raise BadInputError(f"{p}: {option} is a folder, expected a {fmt} file path")
    if found == "symbolic link":
        raise BadInputError(
            f"{p}: {option} is a symbolic link (to {os.readlink(p)}); reshape never writes through or "
            "replaces a link: give the path of a regular file"
        )
    if found in SPECIAL_KINDS:
        raise BadInputError(f"{p}: {option} is a {found}, not a regular file; refusing to write there")
    compatible = {fmt, "empty"} | ({"json", "csv"} if fmt in ("csv", "json") and found == "csv" else set())
    if found not in compatible:
        raise BadInputError(f"{p}: {option} holds a {found} file, not {fmt}; refusing to overwrite it")
    is_ours = owned(p) if owned is not None else _owned_artifact(p, fmt, kinds)
    if not is_ours and not overwrite:
        kind = artifact_kind(p, fmt) if kinds else None
        if kind:
            raise BadInputError(
                f"{p}: is a reshape {kind} artifact, not a {'/'.join(sorted(kinds or ()))} one; refusing to "
                "replace it (pass --overwrite to allow)"
            )
        raise BadInputError(
            f"{p}: exists and was not written by reshape; refusing to replace it (pass --overwrite to allow)"
        )


#: What :func:`sniff_format` calls a special file: never read, written or replaced.
SPECIAL_KINDS = ("FIFO (named pipe)", "device node", "socket")


def check_folder_output(path: Location | None, option: str = "--out") -> None:
    """Refuse a folder output whose path holds something other than a folder (a FIFO, a device node, a
    link to a file, a file); a missing path or a folder (a link to a folder included) passes."""
    if path is None or not _is_local(path):
        return
    p = Path(path)
    found = sniff_format(p)
    if found in ("missing", "folder") or (found == "symbolic link" and p.is_dir()):
        return
    if found == "symbolic link" and not p.exists():
        raise BadInputError(f"{p}: {option} is a dangling symbolic link (to {os.readlink(p)}); refusing")
    shown = found if found in SPECIAL_KINDS or found == "symbolic link" else "file"
    raise BadInputError(f"{p}: {option} is a {shown}, not a folder; refusing to write there")


def check_entries(
    folder: Location, names: Iterable[str], *, what: str = "output", odd: Collection[str] | None = None
) -> None:
    """Refuse, before any work, a symbolic link or special file at a name a stage writes in ``folder``
    (a folder output), or a name whose path leads out of ``folder`` through a link: such an entry is
    never written through, replaced or deleted, even with --overwrite. ``odd``: the names directly in
    ``folder`` that are neither regular files nor folders, when the caller has just listed it (not
    listed again)."""
    if not _is_local(folder):
        return
    root = Path(folder)
    if not root.is_dir():
        return
    by_folder: dict[str, list[str]] = {}
    for name in names:  # thousands of images share a few folders
        parent, _, base = name.rpartition("/")
        by_folder.setdefault(parent, []).append(base)
    for parent, bases in by_folder.items():
        where_ = root / parent if parent else root
        check_inside(root, where_, what=what)
        _check_folder_entries(where_, bases, odd if not parent else None)


def _check_folder_entries(folder: Path, bases: list[str], odd: Collection[str] | None = None) -> None:
    """The kind of each of ``bases`` in ``folder`` from one directory listing (the entry types the
    listing carries, no ``lstat`` per name: a KADIS-700k output holds 700,000 files), or from ``odd``
    (its names that are neither regular files nor folders) when the caller listed it already."""
    try:
        if odd is None:
            with os.scandir(folder) as listing:
                odd = {
                    e.name
                    for e in listing
                    if not e.is_file(follow_symlinks=False) and not e.is_dir(follow_symlinks=False)
                }
        to_check = sorted(set(odd).intersection(bases))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError:  # a folder that can be entered but not listed: one lstat per name, as before
        to_check = bases
    for base in to_check:
        p = folder / base
        try:
            mode = p.lstat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISLNK(mode):
            raise BadInputError(
                f"{p}: is a symbolic link (to {os.readlink(p)}) where reshape writes a file; it never writes "
                "through or replaces a link (remove it, or choose another --out)"
            )
        found = file_kind(mode)
        if found in SPECIAL_KINDS:
            raise BadInputError(f"{p}: is a {found} where reshape writes a file; refusing")


def refuse_foreign(conflicts: list[str], where: Location, *, overwrite: bool) -> None:
    """One line for files in an output folder that the stage would write over without owning them."""
    if conflicts and not overwrite:
        shown = ", ".join(sorted(conflicts)[:3]) + (", ..." if len(conflicts) > 3 else "")
        raise BadInputError(
            f"{where}: {len(conflicts)} existing file(s) not written by reshape would be replaced "
            f"({shown}); refusing (pass --overwrite to replace them)"
        )


def refuse_edited(
    edited: Iterable[str], where: Location, *, overwrite: bool, option: str = "--overwrite"
) -> None:
    """The edit rule, in one place: an output a command recorded as its own whose bytes no longer match the
    record was edited by someone, and is the user's. Without ``overwrite`` the command stops (call it before
    any work) in one line naming the files; with it, the files are named again as they are replaced."""
    names = sorted(edited)
    if not names:
        return
    shown = ", ".join(names[:3]) + (f", ... ({len(names) - 3} more)" if len(names) > 3 else "")
    if not overwrite:
        raise BadInputError(
            f"{where}: {len(names)} file(s) reshape wrote were edited since and would be replaced ({shown}); "
            f"refusing: your edits are yours (pass {option} to replace them)"
        )
    from reshape.steps import announce

    announce("%s: replacing %d edited file(s) (%s): %s", where, len(names), option, shown)


# ----------------------------------------------------------------------------------------------- preflight
def _existing_ancestor(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p if p.is_dir() else p.parent


def check_writable(target: Location, *, need_bytes: int = 0) -> None:
    """Fail early, in one line, when ``target`` (a file or folder path) cannot be written: read-only,
    no permission, or less than ``need_bytes`` (plus a 1 MiB margin) free. Object-store locations pass."""
    if not _is_local(target):
        return
    folder = _existing_ancestor(_resolved(target))
    _check_name_lengths(target, folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".reshape-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ResourceError(f"{target}: cannot write in {folder} ({exc.strerror or exc})") from None
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes + (1 << 20):
        raise ResourceError(
            f"{target}: not enough free space in {folder} "
            f"({free / 2**20:.1f} MiB free, about {need_bytes / 2**20:.1f} MiB needed)"
        )


def _check_name_lengths(target: Location, folder: Path) -> None:
    """A name too long for the filesystem fails now, not after the expensive work: every folder still to
    create, and the output's own name with what reshape adds to it (its temporary name and lock files)."""
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    full = Path(os.path.abspath(os.path.expanduser(os.fspath(target))))
    resolved = _resolved(target)
    parts = [*resolved.relative_to(folder).parts] if resolves_inside(folder, resolved) else [full.name]
    name = full.name
    longest = {name: max(temp_name_bytes(name), len(os.fsencode(f".{name}{LOCK_SUFFIX}.holder")))}
    for part in parts:
        size = longest.get(part, len(part.encode()))
        if size > name_max:
            raise ResourceError(
                f"{target}: name too long for the file system ({part[:40]}...: {len(part.encode())} bytes, "
                f"at most {name_max - (size - len(part.encode()))} here with reshape's temporary and lock names)"
            )


def temp_name_bytes(name: str) -> int:
    """Bytes of the longest name a file written as ``name`` gets on the way: its temporary name beside it
    (:func:`reshape.fileio.atomic_path`: prefix, the name, a dot, 8 random characters, the suffix)."""
    dot = name.rfind(".")
    suffix = name[dot:] if 0 < dot < len(name) - 1 else ""  # Path(name).suffix, without a path object
    return len(os.fsencode(f"{TMP_PREFIX}{name}.xxxxxxxx{suffix}"))


def _last_part(name: str) -> str:
    """``PurePath(name).name`` of a relative name (a trailing separator ignored, as pathlib does)."""
    return name.rstrip("/").rpartition("/")[2] or name


def check_output_names(folder: Location, names: Iterable[str], *, what: str = "output") -> None:
    """Refuse, before any work, a file name (the last part of each of ``names``, paths relative to
    ``folder``) too long for the file system ``folder`` lies on once reshape's temporary name is made from
    it: otherwise the write fails after the work before it (halfway through a distort, say)."""
    if not _is_local(folder):
        return
    base = _existing_ancestor(_resolved(folder))
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    names = list(names)
    # a bound first (a UTF-8 character is at most 4 bytes; the suffix is part of the name), so 700,000
    # short names cost one pass of len(); string operations, not a path object per name, otherwise
    if 4 * 2 * max(map(len, names), default=0) + temp_name_bytes("") <= name_max:
        return
    longest = max((_last_part(n) for n in names), key=temp_name_bytes, default=None)
    if longest is None or temp_name_bytes(longest) <= name_max:
        return
    size, extra = len(os.fsencode(longest)), temp_name_bytes(longest) - len(os.fsencode(longest))
    raise BadInputError(
        f"{Path(folder) / longest}: {what} file name too long for the file system ({size} bytes; at most "
        f"{name_max - extra} here with reshape's temporary name); shorten the input file name it comes from"
    )


@contextlib.contextmanager
def created_folders(*folders: Location | None) -> Iterator[None]:
    """Create ``folders`` (and parents) now; if the block fails, remove the ones created here that are
    still empty, so a failed run leaves no empty output folders behind."""
    made: list[Path] = []
    for folder in folders:
        if folder is None or not _is_local(folder):
            continue
        p = _resolved(folder)
        missing = []
        while not p.exists():
            missing.append(p)
            p = p.parent
        for q in reversed(missing):
            q.mkdir(exist_ok=True)
            made.append(q)
    try:
        yield
    except BaseException:
        for q in reversed(made):
            _remove_if_only_locks(q)
        raise


def _remove_if_only_locks(folder: Path) -> None:
    """Remove a folder a failed run created, with its sub-folders, if nothing but lock files (its own or
    its children's) is left in them; any other file keeps it and the folders above it."""
    with contextlib.suppress(OSError):
        for sub in folder.iterdir():
            if sub.is_dir() and not sub.is_symlink():
                _remove_if_only_locks(sub)
        entries = list(folder.iterdir())
        if all(e.is_file() and LOCK_SUFFIX in e.name for e in entries):
            for e in entries:
                e.unlink()
            folder.rmdir()


# ----------------------------------------------------------------------------------------------- locks
@dataclass(frozen=True)
class LockHolder:
    host: str
    pid: int
    started: str

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.started}"


def _holder_now() -> LockHolder:
    return LockHolder(socket.gethostname(), os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def lock_location(output: Location) -> str:
    """The lock beside an output: ``<parent>/.<name>.reshape-lock`` (a file output and its folder alike)."""
    text = os.fspath(output).rstrip("/")
    if _is_local(text):
        p = _resolved(text)
        return str(p.with_name(f".{p.name}{LOCK_SUFFIX}"))
    head, _, name = text.rpartition("/")
    return f"{head}/.{name}{LOCK_SUFFIX}"


class OutputLock:
    """An exclusive lock on one output location, taken before any work.

    Local: an OS lock (``filelock``) on a file beside the output, released by the kernel when the process
    dies, so a lock left by a killed run is simply taken over. The holder (host, pid, start) is written
    into the lock file for the refusal message. Object stores: a lease object naming the holder, renewed
    while held and taken over once expired.
    """

    def __init__(self, output: Location, *, wait: bool = False, lease_seconds: float = 120.0):
        self.output = os.fspath(output)
        self.path = lock_location(output)
        self.wait = wait
        self.lease_seconds = lease_seconds
        self._file_lock = None
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self._token = uuid.uuid4().hex

    # -- local
    def _acquire_local(self, on_wait: Callable[[str], None] | None) -> None:
        from filelock import FileLock, Timeout

        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        for path in (self.path, self.path + ".holder"):
            if os.path.islink(path) or os.path.lexists(path) and not os.path.isfile(path):
                found = sniff_format(path)
                target = f" (to {os.readlink(path)})" if found == "symbolic link" else ""
                raise BadInputError(
                    f"{path}: the lock file of {self.output} is a {found}{target}; reshape never writes "
                    "through a link or into a special file: remove it and run again"
                )
        lock = FileLock(self.path, mode=0o666 & ~current_umask(), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = self.holder()
            who = holder.describe() if holder else "another process"
            if not self.wait:
                raise BadInputError(
                    f"{self.output}: another reshape run holds this output ({who}); "
                    "wait for it or pass --wait"
                ) from None
            if on_wait:
                on_wait(f"{self.output}: waiting for the run that holds it ({who})")
            lock.acquire()
        self._file_lock = lock
        try:  # no-follow: a link planted here after the check above is refused, never written through
            write_no_follow(self.path + ".holder", json.dumps(_holder_now().__dict__))
        except BaseException:
            self._file_lock.release()
            self._file_lock = None
            raise

    def holder(self) -> LockHolder | None:
        """Who holds (or last held) the lock, as recorded by them."""
        try:
            if _is_local(self.path):
                raw = Path(self.path + ".holder").read_text("utf-8")
            else:
                from reshape import storage

                raw = storage.read_bytes(self.path).decode()
            data = json.loads(raw)
            return LockHolder(str(data["host"]), int(data["pid"]), str(data["started"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- object store
    def _lease(self) -> dict:
        return {
            **_holder_now().__dict__,
            "token": self._token,
            "expires": time.time() + self.lease_seconds,
        }

    def _acquire_store(self, on_wait: Callable[[str], None] | None) -> None:
        from reshape import storage

        while True:
            current = None
            with contextlib.suppress(OSError, ValueError, FileNotFoundError):
                current = json.loads(storage.read_bytes(self.path))
            if (
                current is None
                or current.get("expires", 0) < time.time()
                or current.get("token") == self._token
            ):
                storage.write_bytes(self.path, json.dumps(self._lease()).encode())
                time.sleep(0.05)
                confirmed = json.loads(storage.read_bytes(self.path))
                if confirmed.get("token") == self._token:
                    break
                continue
            who = f"host {current.get('host')}, pid {current.get('pid')}, since {current.get('started')}"
            if not self.wait:
                raise BadInputError(
                    f"{self.output}: another reshape run holds this output ({who}); wait for it or pass --wait"
                )
            if on_wait:
                on_wait(f"{self.output}: waiting for the run that holds it ({who})")
                on_wait = None
            time.sleep(min(5.0, self.lease_seconds / 4))
        self._renewer = threading.Thread(target=self._renew, daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        from reshape import storage

        while not self._stop.wait(self.lease_seconds / 3):
            with contextlib.suppress(Exception):
                storage.write_bytes(self.path, json.dumps(self._lease()).encode())

    # -- both
    def acquire(self, on_wait: Callable[[str], None] | None = None) -> OutputLock:
        """Take the lock; ``on_wait`` hears once that the run waits (default: a step line on stderr)."""
        if on_wait is None:
            from reshape.steps import announce

            on_wait = functools.partial(announce, "%s")
        if _is_local(self.output):
            self._acquire_local(on_wait)
        else:
            self._acquire_store(on_wait)
        return self

    def release(self) -> None:
        if self._file_lock is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path + ".holder")
            # The lock file itself stays: unlinking it would let a waiter and a newcomer lock two inodes.
            self._file_lock.release()
            self._file_lock = None
        if self._renewer is not None:
            from reshape import storage

            self._stop.set()
            self._renewer.join(timeout=5)
            with contextlib.suppress(Exception):
                storage.remove(self.path)
            self._renewer = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked_outputs(
    *outputs: Location | None, wait: bool = False, on_wait: Callable[[str], None] | None = None
) -> Iterator[list[OutputLock]]:
    """Hold :class:`OutputLock` on every output (in a fixed order, so two runs cannot deadlock)."""
    unique = sorted({lock_location(o): o for o in outputs if o is not None}.items())
    with contextlib.ExitStack() as stack:
        locks = []
        for _, output in unique:
            lock = OutputLock(output, wait=wait).acquire(on_wait)
            stack.callback(lock.release)
            locks.append(lock)
        yield locks
