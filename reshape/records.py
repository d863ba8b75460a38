"""What a stage wrote, recorded so that a later run can tell whether it is still there unchanged.

A record maps each output file (relative to a base folder) to ``[size, mtime_ns, sha256]``. Checking is
cheap: size and mtime first, the sha256 only for files whose size or mtime differ (a file that was only
touched, or copied back with the same bytes, is still good).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from reshape.fileio import TMP_PREFIX, sha256_file
from reshape.outputs import LOCK_SUFFIX

Record = dict[str, list]


def _own_bookkeeping(name: str) -> bool:
    return name.startswith((TMP_PREFIX, ".reshape-probe-")) or LOCK_SUFFIX in name


def output_files(outputs: list[Path]) -> list[Path]:
    """Every file of the given outputs (files as they are, folders recursively), sorted."""
    found: list[Path] = []
    for out in outputs:
        if out.is_file():
            found.append(out)
        elif out.is_dir():
            found += [p for p in out.rglob("*") if p.is_file() and not _own_bookkeeping(p.name)]
    return sorted(set(found))


def _key(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path, base)).as_posix()


def record_outputs(outputs: list[Path], base: Path, previous: Record | None = None) -> Record:
    """Record every output file; a file whose size and mtime match ``previous`` keeps its hash."""
    previous = previous or {}
    record: Record = {}
    for path in output_files(outputs):
        st = path.stat()
        key = _key(path, base)
        old = previous.get(key)
        if old and old[0] == st.st_size and old[1] == st.st_mtime_ns:
            record[key] = old
        else:
            record[key] = [st.st_size, st.st_mtime_ns, sha256_file(path)]
    return record


@dataclass
class RecordCheck:
    missing: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.changed

    def describe(self, limit: int = 3) -> str:
        parts = []
        for what, names in (("missing", self.missing), ("changed", self.changed)):
            if names:
                more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
                parts.append(f"{len(names)} output(s) {what}: {', '.join(names[:limit])}{more}")
        return "; ".join(parts)


def check_record(record: Record, base: Path) -> RecordCheck:
    """Which recorded files are gone, and which now hold other bytes."""
    check = RecordCheck()
    for key, (size, mtime_ns, digest) in sorted(record.items()):
        path = base / key
        try:
            st = path.stat()
        except OSError:
            check.missing.append(key)
            continue
        if st.st_size == size and st.st_mtime_ns == mtime_ns:
            continue
        if st.st_size != size or sha256_file(path) != digest:
            check.changed.append(key)
    return check
