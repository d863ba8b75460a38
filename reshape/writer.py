"""One output folder (a local folder or an object-store prefix) and the record of what a stage wrote there.

:class:`OutputFolder` is how a stage puts, lists, verifies and deletes its files, whatever the location:
local folders and ``file://`` go through :mod:`reshape.fileio` (temporary file beside the target, fsynced,
renamed, created with the umask's mode); object stores put whole objects (:mod:`reshape.storage`).

:class:`Journal` is the folder's record of ownership: name, size, mtime and sha256 of every file the stage
wrote, plus the stage's own data, as JSON-lines *segments* under ``.reshape-journal/``. A segment is written
whole and atomically and never appended to, so the same code runs on a local disk and on S3:

* a shard segment (``shard-<key>.jsonl``) is written by the worker doing that shard: first its *claims*
  (the names it is about to write), then replaced by the finished records. A run killed at any moment thus
  leaves every file under a final name either recorded or claimed, never anonymous;
* the run's driver folds finished shard segments into numbered ``merged-<seq>.jsonl`` segments (later
  segments win), and compacts them into one when they pile up.

The ownership rules built on it (README, "Your files are safe"): a stage writes over only names it
recorded or claimed, deletes only files that still hold the bytes it recorded, and removes only the
temporary files of its own names.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from reshape import storage
from reshape.errors import BadInputError, ReshapeError, ResourceError
from reshape.fileio import TMP_PREFIX, sha256_bytes, sha256_file
from reshape.storage import FileStat

JOURNAL_DIR = ".reshape-journal"
SHARD_PREFIX = "shard-"
MERGED_PREFIX = "merged-"
SEGMENT_SUFFIX = ".jsonl"
#: Merged segments beyond this many are compacted into one when the journal is opened.
COMPACT_AT = 64


@dataclass(slots=True)  # 700,000 of them in a KADIS-700k journal
class FileRecord:
    """What a stage recorded about one file it owns.

    ``sha256`` None means *claimed*: the stage was about to write the name when it stopped, so the file
    there (if any) is its own but unverified. ``deleted`` marks a file the stage removed again.
    """

    name: str
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False

    @property
    def confirmed(self) -> bool:
        return self.sha256 is not None and not self.deleted

    def to_line(self) -> str:
        obj: dict[str, Any] = {"name": self.name}
        if self.deleted:
            obj["deleted"] = True
        elif self.sha256 is not None:
            obj.update(sha256=self.sha256, size=self.size, mtime_ns=self.mtime_ns, meta=self.meta)
        return json.dumps(obj, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, obj: Any) -> FileRecord | None:
        if not isinstance(obj, dict):
            return None
        get = obj.get
        name, sha256, size, mtime_ns, meta = (
            get("name"),
            get("sha256"),
            get("size"),
            get("mtime_ns"),
            get("meta"),
        )
        if not isinstance(name, str):
            return None
        return cls(
            name,
            sha256 if isinstance(sha256, str) else None,
            size if isinstance(size, int) else None,
            mtime_ns if isinstance(mtime_ns, int) else None,
            meta if isinstance(meta, dict) else {},
            get("deleted") is True,
        )


def _fault(target: str, exc: OSError) -> Exception:
    """One line naming ``target`` for a write that failed (full disk, read-only, permission, network)."""
    if isinstance(exc, ReshapeError):
        return exc
    cause = exc.strerror or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ResourceError(f"{target}: {cause}")


class OutputFolder:
    """A local folder or object-store prefix that one stage writes files into.

    Plain data (its location string), so shard workers build their own from the options they are sent.
    """

    def __init__(self, location: str | os.PathLike[str]):
        text = os.fspath(location)
        if storage.is_local(text):
            self.location = str(storage.local_path(text).expanduser().resolve())
        else:
            self.location = text.rstrip("/")

    def __repr__(self) -> str:
        return f"OutputFolder({self.location!r})"

    @property
    def is_local(self) -> bool:
        return storage.is_local(self.location)

    def path(self, name: str) -> str:
        return storage.join(self.location, name)

    def sub(self, name: str) -> OutputFolder:
        return OutputFolder(self.path(name))

    def create(self) -> None:
        """Create the folder (a no-op on most object stores); one line naming it when that fails."""
        try:
            storage.makedirs(self.location)
        except BadInputError:
            raise
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BadInputError(f"{self.location}: cannot use this output location ({first})") from None

    # -- writing
    def put_bytes(self, name: str, data: bytes, meta: dict[str, Any] | None = None) -> FileRecord:
        """Write ``data`` under ``name`` atomically and return its record (size and mtime as stored)."""
        target = self.path(name)
        try:
            storage.write_bytes(target, data)
            stat = storage.stat(target)
        except OSError as exc:
            raise _fault(target, exc) from None
        return self._record(name, sha256_bytes(data), stat, meta)

    def put_chunks(
        self, name: str, chunks: Iterable[bytes], meta: dict[str, Any] | None = None
    ) -> FileRecord:
        """:meth:`put_bytes` of the concatenated ``chunks``, holding one chunk at a time (a 700k-record
        journal segment is ~350 MB as one string)."""
        target = self.path(name)
        digest = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            for chunk in chunks:
                digest.update(chunk)
                yield chunk

        try:
            storage.write_chunks(target, hashed())
            stat = storage.stat(target)
        except OSError as exc:
            raise _fault(target, exc) from None
        return self._record(name, digest.hexdigest(), stat, meta)

    def put_file(
        self, name: str, local: str | os.PathLike[str], meta: dict[str, Any] | None = None
    ) -> FileRecord:
        """Copy the finished local file ``local`` to ``name`` atomically and return its record."""
        target = self.path(name)
        try:
            digest = sha256_file(local)
            storage.upload_file(local, target)
            stat = storage.stat(target)
        except OSError as exc:
            raise _fault(target, exc) from None
        return self._record(name, digest, stat, meta)

    def _record(
        self, name: str, digest: str, stat: FileStat | None, meta: dict[str, Any] | None
    ) -> FileRecord:
        if stat is None:  # written a moment ago and gone: another process removed it
            raise ResourceError(f"{self.path(name)}: vanished right after it was written")
        return FileRecord(name, digest, stat.size, stat.mtime_ns, dict(meta or {}))

    # -- reading
    def listing(self) -> dict[str, FileStat]:
        """Every regular file directly in the folder, with its size and mtime (one listing)."""
        try:
            return storage.list_files(self.location)
        except OSError as exc:
            raise _fault(self.location, exc) from None

    def read(self, name: str) -> bytes:
        return storage.read_bytes(self.path(name))

    def sha256(self, name: str) -> str | None:
        return storage.sha256(self.path(name))

    def holds(self, record: FileRecord, stat: FileStat | None) -> bool:
        """True when the file still has the bytes ``record`` describes: an equal size and mtime are trusted;
        otherwise (another mtime, or a record without them) the file is read and its sha256 compared."""
        if stat is None or not record.confirmed:
            return False
        if record.size is not None and stat.size != record.size:
            return False
        if record.size is not None and stat.mtime_ns == record.mtime_ns:
            return True
        return self.sha256(record.name) == record.sha256

    # -- removing
    def delete(self, name: str) -> None:
        storage.remove(self.path(name))

    def remove_stale_temps(self, names: Iterable[str], listing: Iterable[str] | None = None) -> int:
        """Delete the temporary files left by interrupted writes of ``names`` (call it holding the lock);
        other temporary-looking files are not ours and stay."""
        wanted = set(names)
        removed = 0
        for entry in self.listing() if listing is None else listing:
            if entry.startswith(TMP_PREFIX) and temp_target(entry) & wanted:
                self.delete(entry)
                removed += 1
        return removed


def temp_target(temp_name: str) -> set[str]:
    """The final names a temporary file ``.reshape-tmp-<final name>.<random>[suffix]`` may belong to."""
    rest = temp_name[len(TMP_PREFIX) :]
    return {rest[:i] for i, ch in enumerate(rest) if ch == "."}


def shard_key(names: Sequence[str]) -> str:
    """A stable key for the segment of a shard that writes ``names``."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:32]


#: Records encoded per chunk of a segment written by :meth:`Journal.append` (bounded memory).
ENCODE_CHUNK = 10_000


def _encode(records: Iterable[FileRecord]) -> bytes:
    return "".join(r.to_line() + "\n" for r in records).encode()


def _encode_chunks(records: Sequence[FileRecord]) -> Iterator[bytes]:
    for start in range(0, len(records), ENCODE_CHUNK):
        yield _encode(records[start : start + ENCODE_CHUNK])


def _json_loads() -> Callable[[str | bytes], Any]:
    """orjson's parser when the ``fast`` extra is installed (the same values for the JSON reshape writes,
    ~1.6x faster on a 700,000-record journal), else the standard library's."""
    try:
        import orjson
    except ImportError:
        return json.loads
    return orjson.loads


def _decode(data: bytes, loads: Callable[[str | bytes], Any] | None = None) -> list[FileRecord]:
    records = []
    parse, from_json = loads or _json_loads(), FileRecord.from_json  # looked up once: 700,000 lines
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = from_json(parse(line))
        except ValueError:
            continue  # segments are written whole; a damaged line is skipped, its file re-checked
        if record is not None:
            records.append(record)
    return records


class Journal:
    """The record of ownership of one :class:`OutputFolder` (see the module notes)."""

    def __init__(self, folder: OutputFolder):
        self.folder = folder
        self.segments = folder.sub(JOURNAL_DIR)
        self._merged: list[str] = []
        self._shards: list[str] = []
        #: records read from shard segments by :meth:`load` (a killed run's), in segment order
        self.shard_records: list[FileRecord] = []

    # -- workers
    @staticmethod
    def shard_segment(key: str) -> str:
        return f"{SHARD_PREFIX}{key}{SEGMENT_SUFFIX}"

    def write_shard(self, key: str, records: Sequence[FileRecord]) -> None:
        """Write (or replace) the segment of one shard: its claims first, its finished records after."""
        self.segments.put_bytes(self.shard_segment(key), _encode(records))

    # -- the driver (holding the output's lock)
    def load(self) -> dict[str, FileRecord]:
        """Every live record by name: merged segments in order, then shard segments (newer)."""
        names = sorted(n for n in self.segments.listing() if n.endswith(SEGMENT_SUFFIX))
        self._merged = [n for n in names if n.startswith(MERGED_PREFIX)]
        self._shards = [n for n in names if n.startswith(SHARD_PREFIX)]
        records: dict[str, FileRecord] = {}
        self.shard_records = []
        for name in self._merged + self._shards:
            try:
                decoded = _decode(self.segments.read(name))
            except FileNotFoundError:
                continue
            records.update((r.name, r) for r in decoded)
            if name.startswith(SHARD_PREFIX):
                self.shard_records += decoded
        return {k: r for k, r in records.items() if not r.deleted}

    def remove_stale_temps(self) -> int:
        """Temporary segment files of interrupted writes (the journal folder holds nothing else of ours)."""
        stale = [n for n in self.segments.listing() if n.startswith(TMP_PREFIX)]
        for name in stale:
            self.segments.delete(name)
        return len(stale)

    def shard_segments_loaded(self) -> list[str]:
        return list(self._shards)

    def append(self, records: Sequence[FileRecord], drop: Iterable[str] = ()) -> None:
        """Fold ``records`` into a new merged segment, then delete the segment files ``drop`` (shard
        segments whose records it holds). A crash in between only leaves duplicates."""
        drop = list(drop)
        if records:
            seq = 1 + max((int(n[len(MERGED_PREFIX) :].split(".")[0]) for n in self._merged), default=0)
            name = f"{MERGED_PREFIX}{seq:010d}{SEGMENT_SUFFIX}"
            self.segments.put_chunks(name, _encode_chunks(records))  # 700k records: not one 350 MB string
            self._merged.append(name)
        for name in drop:
            self.segments.delete(name)
        self._shards = [n for n in self._shards if n not in set(drop)]

    def compact(self, live: dict[str, FileRecord]) -> None:
        """Rewrite the journal as one merged segment holding ``live`` when merged segments pile up."""
        if len(self._merged) <= COMPACT_AT:
            return
        old = list(self._merged)
        self.append(list(live.values()))
        keep = self._merged[-1]
        for name in old:
            self.segments.delete(name)
        self._merged = [keep]


__all__ = [
    "COMPACT_AT",
    "JOURNAL_DIR",
    "FileRecord",
    "FileStat",
    "Journal",
    "OutputFolder",
    "shard_key",
    "temp_target",
]
