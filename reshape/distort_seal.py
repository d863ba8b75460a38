"""The seal of a finished distort run: a rerun with nothing to do knows it from one folder listing.

A rerun of a finished plan must change nothing, and the full take-over
(:func:`reshape.distort_output.take_over`) proves it record by record. At KADIS-700k scale that means
reading 700,000 journal records, planning 700,000 names and seeds and comparing each (25 s on the 2-core
development machine; docs/kadis700k.md). The
seal keeps that proof from the run that did it:

1. **Sealing.** A run that ends with every planned image made and recorded, and nothing bad or failed,
   checks the folder once more. It lists the folder and requires four things: the live records name
   exactly the planned images; each file has the size and mtime its record holds; no temporary file is
   left; the journal has no shard segment to fold. Then it writes ``.reshape-journal/sealed.json``,
   holding four digests:
   * the *inputs* that decide the jobs: the references in order with their types, the levels, seed and
     format (through the settings tag), the denoiser label, and the *code* (reshape's version plus the
     source of the modules that name, seed and record outputs);
   * the *folder*: every entry sorted by name, with its kind, size, mtime and inode, leaving out the
     manifest, its sidecar and the drawn plan file;
   * the *journal*: every file in ``.reshape-journal`` but the seal, with the same fields;
   * the *references*' sizes and mtimes, when the input recorded their sha256 (a selection). Only then
     does the full path look at finished references.
2. **A rerun** computes the same digests: one listing of the folder and of the journal folder, and no
   record read or job planned. When all four are equal and the manifest is current, the full take-over
   would reuse every output and change nothing. Its inputs are the same jobs, the same records and the
   same files; at sealing time it was checked to reuse them all. So the run ends there, with the result
   the full path gives.
3. **Anything else takes the full path**, which decides as always. That includes a file added, removed,
   edited or replaced, a journal segment written, a different plan, seed, version or code, or a changed
   reference. The full path removes the seal before it changes anything, and the run seals again when it
   ends finished.

The seal only ever skips work whose outcome it has proved; ownership is still decided by the journal.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from reshape import __version__, storage
from reshape.errors import ReshapeError, ResourceError
from reshape.fileio import TMP_PREFIX
from reshape.storage import FileStat
from reshape.writer import JOURNAL_DIR, MERGED_PREFIX, SEGMENT_SUFFIX, FileRecord, Journal, OutputFolder

log = logging.getLogger("reshape.distort")

SEAL_NAME = "sealed.json"  # not a segment (``.jsonl``): Journal.load never reads it
SEAL_KIND = "reshape-distort-seal"
#: The modules whose code decides the names, seeds and records of outputs (and this proof): a seal made by
#: other code is not trusted.
_CODE_MODULES = ("distort.py", "distort_plan.py", "distort_output.py", "distort_seal.py", "writer.py")


# ----------------------------------------------------------------------------------------------- digests
@functools.lru_cache(maxsize=1)
def code_digest() -> str | None:
    """sha256 of reshape's version and the source of :data:`_CODE_MODULES`; None (never sealed) when a
    source cannot be read."""
    digest = hashlib.sha256(__version__.encode())
    here = Path(__file__).parent
    try:
        for name in _CODE_MODULES:
            digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


def inputs_digest(
    images: Sequence[str],
    types: Sequence[Sequence[int]],
    *,
    levels: Sequence[int],
    tag: str,
    denoiser: str | None,
) -> str | None:
    """Digest of what decides the jobs: reference ``images[i]`` gets ``types[i]`` at ``levels``; the
    settings ``tag`` holds seed, format, resize and version. None when the code cannot be named."""
    code = code_digest()
    if code is None:
        return None
    head = json.dumps({"code": code, "levels": list(levels), "tag": tag, "denoiser": denoiser})
    digest = hashlib.sha256(head.encode())
    pairs = [[rel, [int(t) for t in ts]] for rel, ts in zip(images, types, strict=True)]
    digest.update(json.dumps(pairs, ensure_ascii=False).encode("utf-8", "surrogateescape"))  # unambiguous
    return digest.hexdigest()


def _digest_entries(names: list[str], fields: list[tuple[int, ...]]) -> str:
    """sha256 of names (sorted by the caller) and their integer fields, in two blocks (700,000 entries)."""
    digest = hashlib.sha256("\0".join(names).encode("utf-8", "surrogateescape"))
    if fields:
        digest.update(np.asarray(fields, dtype=np.int64).tobytes())
    return digest.hexdigest()


_STAT_AT = os.stat in os.supports_dir_fd


def _local_entries(folder: str, skip: frozenset[str]) -> tuple[list[str], list[tuple[int, ...]]]:
    """Every entry of a local folder but ``skip``, sorted by name: (mode, size, mtime, inode) of each,
    not following links (a link or special file at a name shows as such). A sub-folder counts by its
    kind and inode only: its mtime moves with what happens inside it, which is not the stage's."""
    try:
        with os.scandir(folder) as listing:
            names = sorted(e.name for e in listing if e.name not in skip)
        # one stat per entry, relative to the folder's descriptor where the OS has them (not Windows)
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if _STAT_AT else None
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    try:
        fields = []
        for name in names:
            if fd is not None:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            else:
                st = os.stat(os.path.join(folder, name), follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                fields.append((st.st_mode, 0, 0, st.st_ino))
            else:
                fields.append((st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino))
    finally:
        if fd is not None:
            os.close(fd)
    return names, fields


def folder_entries(folder: OutputFolder, skip: Iterable[str] = ()) -> tuple[list[str], list[tuple[int, ...]]]:
    """The folder's entries as :func:`_local_entries` gives them; an object store's objects as
    (regular file, size, mtime, 0): it has no links or special files."""
    skip = frozenset(skip)
    if folder.is_local:
        return _local_entries(storage.local_path(folder.location).as_posix(), skip)
    listing = folder.listing()
    names = sorted(n for n in listing if n not in skip)
    return names, [(stat.S_IFREG, listing[n].size, listing[n].mtime_ns, 0) for n in names]


def regular_files(names: list[str], fields: list[tuple[int, ...]]) -> dict[str, FileStat]:
    """``{name: FileStat}`` of the regular files among entries."""
    return {n: FileStat(f[1], f[2]) for n, f in zip(names, fields, strict=True) if stat.S_ISREG(f[0])}


def reference_stats(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[int, int]] | None:
    """(size, mtime) of each reference (links followed, as the stage reads them); None if one is gone."""
    try:
        return [(st.st_size, st.st_mtime_ns) for st in map(os.stat, paths)]
    except OSError:
        return None


def _references_digest(images: Sequence[str], ref_stats: Sequence[tuple[int, int]] | None) -> str | None:
    if ref_stats is None:
        return None
    return _digest_entries(list(images), [tuple(s) for s in ref_stats])


# ----------------------------------------------------------------------------------------------- the seal
class Listing(NamedTuple):
    """A folder's entries sorted by name, their (mode, size, mtime, inode), and its regular files."""

    names: list[str]
    fields: list[tuple[int, ...]]
    files: dict[str, FileStat]

    def odd(self) -> set[str]:
        """The names that are neither regular files nor folders (links, FIFOs, devices, sockets)."""
        return {
            n
            for n, f in zip(self.names, self.fields, strict=True)
            if not stat.S_ISREG(f[0]) and not stat.S_ISDIR(f[0])
        }


def _all_held(
    planned: Sequence[str],
    records: Mapping[str, FileRecord],
    written: Mapping[str, FileStat],
    files: Mapping[str, FileStat],
) -> bool:
    """Every planned name is a regular file of the size and mtime recorded for it: by this run
    (``written``), else by the journal (``records``: a confirmed record that holds them)."""
    for name in planned:
        recorded = written.get(name)
        if recorded is None:
            record = records.get(name)
            if record is None or not record.confirmed or record.size is None or record.mtime_ns is None:
                return False
            recorded = (record.size, record.mtime_ns)
        if files.get(name) != recorded:
            return False
    return True


class Seal:
    """The digests of a folder at one moment, computed the same way at sealing and at a rerun."""

    def __init__(self, journal: Journal, skip: Iterable[str]):
        self.journal = journal
        # the journal folder is digested on its own (its mtime moves when the seal is written)
        self.skip = frozenset(skip) | {JOURNAL_DIR}

    def listing(self) -> Listing:
        """Every entry of the output folder (:func:`folder_entries`; the journal folder left out, the names
        ``skip`` names kept), and its regular files: what a take-over works from."""
        names, fields = folder_entries(self.journal.folder, (JOURNAL_DIR,))
        return Listing(names, fields, regular_files(names, fields))

    def _journal_digest(self) -> tuple[str, list[str]]:
        names, fields = folder_entries(self.journal.segments, (SEAL_NAME,))
        return _digest_entries(names, fields), names

    def matches(
        self,
        inputs: str | None,
        n_images: int,
        *,
        images: Sequence[str] = (),
        ref_stats: Sequence[tuple[int, int]] | None = None,
    ) -> bool:
        """True when the folder is as sealed for these inputs: the rerun has nothing to do. Anything that
        cannot be read answers False: the full path then meets it and says what is wrong."""
        recorded = self.read()
        if recorded is None or inputs is None or recorded.get("inputs") != inputs:
            return False
        if recorded.get("code") != code_digest() or recorded.get("n_images") != n_images:
            return False
        if recorded.get("references") != (
            _references_digest(images, ref_stats) if ref_stats is not None else None
        ):
            return False
        try:
            if recorded.get("journal") != self._journal_digest()[0]:
                return False
            names, fields = folder_entries(self.journal.folder, self.skip)
        except OSError:
            return False
        return recorded.get("folder") == _digest_entries(names, fields)

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.journal.segments.read(SEAL_NAME))
        except (OSError, ValueError):  # none (FileNotFoundError is an OSError), or not ours to trust
            return None
        return data if isinstance(data, dict) and data.get("seal") == SEAL_KIND else None

    def remove(self) -> None:
        """Before the full path changes anything: a seal never outlives the state it describes."""
        if self.read() is None:
            return
        try:
            self.journal.segments.delete(SEAL_NAME)
        except OSError as exc:
            target = self.journal.segments.path(SEAL_NAME)
            raise ResourceError(f"{target}: cannot remove this run's seal ({exc.strerror or exc})") from None

    def seal(
        self,
        inputs: str | None,
        records: Mapping[str, FileRecord],
        written: Mapping[str, FileStat],
        planned: Sequence[str],
        *,
        images: Sequence[str] = (),
        ref_stats: Sequence[tuple[int, int]] | None = None,
        with_references: bool = False,
        listed: Listing | None = None,
    ) -> bool:
        """Write the seal when the folder is finished for ``planned``: the live records (``records``, the
        journal's as the take-over left them, and ``written``, this run's) name exactly the planned images,
        each confirmed and each file still of its recorded size and mtime, and no temporary file or unfolded
        shard segment is left. ``listed``: the folder as :meth:`listing` gave it, when the run has not written or
        removed anything since (else it is listed now). Returns whether sealed."""
        n_live = len(records) + len(written.keys() - records.keys()) if written else len(records)
        if inputs is None or n_live != len(planned) or (with_references and ref_stats is None):
            return False
        try:
            names, fields, files = self.listing() if listed is None else listed
            journal_digest, segments = self._journal_digest()
        except OSError:
            return False
        if any(n.startswith(TMP_PREFIX) for n in names):
            return False
        if not _all_held(planned, records, written, files):
            return False
        kept = [i for i, name in enumerate(names) if name not in self.skip]
        if len(kept) < len(names):
            names, fields = [names[i] for i in kept], [fields[i] for i in kept]
        if not all(n.startswith(MERGED_PREFIX) and n.endswith(SEGMENT_SUFFIX) for n in segments):
            return False
        record = {
            "seal": SEAL_KIND,
            "reshape_version": __version__,
            "code": code_digest(),
            "inputs": inputs,
            "n_images": len(planned),
            "folder": _digest_entries(names, fields),
            "journal": journal_digest,
            "references": _references_digest(images, ref_stats) if with_references else None,
        }
        target = self.journal.segments.path(SEAL_NAME)
        if self.read() is None and storage.exists(target):  # not ours to replace, even in our own folder
            log.warning(
                "%s: holds something other than a seal, left as it is; the finished run was not sealed",
                target,
            )
            return False
        try:  # only a shortcut for the next run: a failure to write it costs that run time, nothing else
            self.journal.segments.put_bytes(SEAL_NAME, (json.dumps(record, sort_keys=True) + "\n").encode())
        except (OSError, ReshapeError) as exc:
            log.warning(
                "%s: the finished run was not sealed (%s); the next run checks every output",
                self.journal.segments.location,
                exc,
            )
            return False
        return True


__all__ = [
    "SEAL_NAME",
    "Listing",
    "Seal",
    "code_digest",
    "folder_entries",
    "inputs_digest",
    "reference_stats",
]
