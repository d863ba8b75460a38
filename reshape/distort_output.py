"""The output side of `reshape distort`: what in ``--out`` is its own, what can be reused, the manifest.

Everything goes through :class:`reshape.writer.OutputFolder` and its :class:`~reshape.writer.Journal`, so a
local folder and an object-store prefix take the same path. Called only while holding the output's lock:

* :func:`take_over` reads the folder's record (and, from older reshape versions, a previous manifest or
  ``<manifest>.journal.jsonl``), refuses files it does not own under names it must write, removes its own
  stale temporaries and outputs, and verifies every recorded output (size and mtime, sha256 only where
  they differ) to split the plan into reused rows and jobs still to do;
* :class:`ShardRecords` folds the segments of finished shards into the journal as the run goes;
* :func:`write_manifest` puts the manifest CSV and its sidecar.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reshape import storage
from reshape.artifacts import META_SUFFIX, SCHEMA_KEY, read_csv, sidecar_path, write_csv
from reshape.distort_plan import DENOISE_TYPE, DistortJob
from reshape.errors import BadInputError, ResourceError
from reshape.fileio import TMP_PREFIX
from reshape.outputs import check_file_output, refuse_edited, refuse_foreign
from reshape.writer import FileRecord, FileStat, Journal, OutputFolder, shard_key

log = logging.getLogger("reshape.distort")

#: Finished shards folded into one merged journal segment at a time.
MERGE_EVERY = 256
LEGACY_JOURNAL_SUFFIX = ".journal.jsonl"
_JOURNAL_FIELDS = ("size", "mtime_ns")


def settings_tag(settings: dict[str, Any]) -> str:
    """Short digest of the run settings that decide the bytes (seed, format, resize, reshape version)."""
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_location(location: str) -> tuple[OutputFolder, str]:
    """``(folder, file name)`` of a file location, local path or URI."""
    text = str(location).rstrip("/")
    if not storage.scheme(text):
        path = Path(text)
        return OutputFolder(path.parent), path.name
    head, _, name = text.rpartition("/")
    return OutputFolder(head), name


# ----------------------------------------------------------------------------------------------- take-over
@dataclass
class Takeover:
    """What :func:`take_over` found: rows to reuse, jobs to do, and the folder's live record."""

    done: dict[str, dict[str, Any]]
    todo: list[DistortJob]
    records: dict[str, FileRecord]
    n_removed: int = 0
    legacy_journal: str | None = None
    #: the journal as loaded: the driver appends to it (a fresh one would number its merged segments from 1
    #: again and replace the first, losing the records it held)
    journal: Journal | None = None


@dataclass
class _Previous:
    records: dict[str, FileRecord] = field(default_factory=dict)
    #: records taken from an older version's manifest or journal file, not yet in the journal
    adopted: list[FileRecord] = field(default_factory=list)
    legacy_journal: str | None = None


def take_over(
    folder: OutputFolder,
    journal: Journal,
    jobs: Sequence[DistortJob],
    *,
    manifest: str,
    tag: str,
    denoiser: str | None,
    overwrite: bool,
    listing: dict[str, FileStat] | None = None,
) -> Takeover:
    """Named steps, in this order, before any image is made (see the module notes). ``listing``: the
    folder's regular files as the caller listed them a moment ago (else listed here)."""
    previous = _load_records(folder, journal, manifest)
    listing = folder.listing() if listing is None else listing
    planned = {j.dist_img for j in jobs}
    refuse_foreign(_foreign(planned, listing, previous.records), folder.location, overwrite=overwrite)
    held = _held(folder, planned, listing, previous.records)
    refuse_edited((n for n, holds in held.items() if not holds), folder.location, overwrite=overwrite)
    n_temps = _remove_stale_temps(folder, planned, previous.records, listing)
    journal.remove_stale_temps()
    if any(name in listing for name in set(previous.records) - planned):
        _withdraw_manifest(folder, manifest)  # before any image it lists is deleted
    records, changes, n_stale = _remove_stale_outputs(folder, previous.records, planned, listing)
    done, todo, refreshed = _verify(jobs, records, listing, held, tag, denoiser)
    if any(job.dist_img in previous.records for job in todo):
        _withdraw_manifest(folder, manifest)  # before any image it lists is replaced
    # a killed run's shard segments, what older versions recorded, and this clean-up, as one new segment
    journal.append(
        journal.shard_records + previous.adopted + changes + refreshed, drop=journal.shard_segments_loaded()
    )
    journal.compact(records)
    return Takeover(done, todo, records, n_temps + n_stale, previous.legacy_journal, journal)


def _load_records(folder: OutputFolder, journal: Journal, manifest: str) -> _Previous:
    """The folder's journal, completed by what an older reshape recorded (manifest, then journal file)."""
    records = journal.load()
    # a journal that holds records has adopted the older manifest's rows already (take-over folds them in
    # before any image is made): the manifest, 700k rows at KADIS scale, is then not read on every rerun
    legacy = _legacy_records(folder, manifest, with_manifest=not records)
    adopted = [r for name, r in legacy.records.items() if name not in records]
    records.update((r.name, r) for r in adopted)
    return _Previous(records, adopted, legacy.legacy_journal)


def _foreign(planned: set[str], listing: dict[str, Any], records: dict[str, FileRecord]) -> list[str]:
    """Files under names this run must write that the folder's record does not cover."""
    return sorted(planned.intersection(listing).difference(records))  # set operations: 700,000 names


def _held(
    folder: OutputFolder, planned: set[str], listing: dict[str, Any], records: dict[str, FileRecord]
) -> dict[str, bool]:
    """For each recorded output under a name this run must write, whether it still holds the recorded
    bytes (:meth:`OutputFolder.holds`, asked once per file). One that does not was edited by someone
    since, so the edit rule (:func:`reshape.outputs.refuse_edited`) applies before any work."""
    held = {}
    for name in planned.intersection(listing).intersection(records):
        record, stat = records[name], listing[name]
        if not record.confirmed:
            continue
        # holds()'s first answer inlined (size and mtime as recorded): 700,000 files at KADIS scale
        same = record.size is not None and (stat.size, stat.mtime_ns) == (record.size, record.mtime_ns)
        held[name] = same or folder.holds(record, stat)
    return held


def _remove_stale_temps(
    folder: OutputFolder, planned: set[str], records: dict[str, FileRecord], listing: dict[str, Any]
) -> int:
    """Temporary files of interrupted writes of our names (none in a finished folder: then no name set)."""
    if not any(entry.startswith(TMP_PREFIX) for entry in listing):
        return 0
    return folder.remove_stale_temps(planned | set(records), listing)


def _remove_stale_outputs(
    folder: OutputFolder, records: dict[str, FileRecord], planned: set[str], listing: dict[str, Any]
) -> tuple[dict[str, FileRecord], list[FileRecord], int]:
    """Delete own outputs this run does not produce, only where the file still holds the recorded bytes.

    A recorded file changed since is no longer ours and stays; a claimed one is kept (and stays claimed)."""
    live = dict(records)
    changes: list[FileRecord] = []
    removed = 0
    for name in sorted(set(records) - planned):
        record, stat = records[name], listing.get(name)
        if stat is not None and not record.confirmed:
            continue
        if stat is not None and folder.holds(record, stat):
            folder.delete(name)
            removed += 1
        elif stat is not None:
            log.info("%s: changed since reshape wrote it; left in place and no longer managed", name)
        del live[name]
        changes.append(FileRecord(name, deleted=True))
    return live, changes, removed


def _verify(
    jobs: Sequence[DistortJob],
    records: dict[str, FileRecord],
    listing: dict[str, Any],
    held: dict[str, bool],
    tag: str,
    denoiser: str | None,
) -> tuple[dict[str, dict[str, Any]], list[DistortJob], list[FileRecord]]:
    """Split the plan: recorded outputs of the same job still holding their bytes (``held``) are reused."""
    done: dict[str, dict[str, Any]] = {}
    todo: list[DistortJob] = []
    refreshed: list[FileRecord] = []
    for job in jobs:
        record = records.get(job.dist_img)
        if record is None or not held.get(job.dist_img) or not _same_job(job, record, tag, denoiser):
            todo.append(job)
            continue
        stat = listing[job.dist_img]
        done[job.dist_img] = manifest_row(record)
        if (record.size, record.mtime_ns) != (stat.size, stat.mtime_ns):  # hashed and still the same
            record.size, record.mtime_ns = stat.size, stat.mtime_ns
            refreshed.append(record)
    return done, todo, refreshed


def _same_job(job: DistortJob, record: FileRecord, tag: str, denoiser: str | None) -> bool:
    meta = record.meta
    recorded_denoiser = meta.get("denoiser")
    if not isinstance(recorded_denoiser, str) or not recorded_denoiser:
        recorded_denoiser = None
    if recorded_denoiser != (denoiser if job.dist_type == DENOISE_TYPE else None):
        return False  # other DnCNN weights (or none now): only type-15 outputs are redone
    try:
        return (
            meta.get("settings") == tag
            and str(meta.get("ref_img")) == job.ref_img
            and int(meta.get("dist_type", -1)) == job.dist_type
            and int(meta.get("dist_level", -1)) == job.dist_level
            and int(meta.get("seed", -1)) == job.seed
            and meta.get("sha256") == record.sha256
        )
    except (TypeError, ValueError):
        return False


def manifest_row(record: FileRecord) -> dict[str, Any]:
    """The manifest row of a recorded output: its record's data as is (not a copy per row: 700,000 at
    KADIS scale). Keys that are not manifest columns (``settings``, ``ref_stat``) are left out when the
    manifest is written, which takes its schema's columns only."""
    return record.meta


# ----------------------------------------------------------------------------------------------- legacy
def _legacy_records(folder: OutputFolder, manifest: str, *, with_manifest: bool = True) -> _Previous:
    """Outputs recorded by reshape before the journal: the rows of a previous manifest of this folder and
    of an interrupted run's ``<manifest>.journal.jsonl`` (sha256 only, so they are verified by hash)."""
    previous = _Previous()
    rows = _previous_manifest_rows(folder, manifest) if with_manifest else []
    journal_file = legacy_journal(manifest)
    if journal_file is not None:
        rows += _legacy_journal_rows(storage.local_path(journal_file))
        previous.legacy_journal = journal_file
    for row, tag in rows:
        name, digest = str(row.get("dist_img")), row.get("sha256")
        if isinstance(digest, str):
            meta = {**_plain(row), "settings": tag}
            previous.records[name] = FileRecord(name, digest, meta=meta)
    return previous


def legacy_journal(manifest: str) -> str | None:
    """The ``<manifest>.journal.jsonl`` an older reshape left beside a local manifest, when there is one."""
    journal_file = manifest + LEGACY_JOURNAL_SUFFIX
    return journal_file if storage.is_local(journal_file) and storage.is_file(journal_file) else None


def _previous_manifest_rows(folder: OutputFolder, manifest: str) -> list[tuple[dict[str, Any], str]]:
    meta = _read_sidecar(manifest)
    if meta is None or meta.get("out_dir") != folder.location:
        return []
    try:
        with storage.local_copy(manifest) as local:
            frame = read_csv(local, "distortion_manifest")
    except (BadInputError, OSError) as exc:
        log.warning("ignoring the previous manifest (%s); its images are treated as not ours", exc)
        return []
    tag = settings_tag(meta.get("settings") or {})
    return [(row, tag) for row in frame.to_dict("records")]


def _legacy_journal_rows(path: Path) -> list[tuple[dict[str, Any], str]]:
    lines = path.read_text("utf-8", errors="replace").splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except ValueError:
        return []
    if not isinstance(header, dict) or header.get("journal") != "reshape-distort":
        return []
    tag = settings_tag(header.get("settings") or {})
    rows = []
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # the line being written when the run was killed
        if isinstance(row, dict) and "dist_img" in row:
            rows.append((row, tag))
    return rows


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A manifest row as JSON values (numpy scalars to Python, NaN to None)."""
    out = {}
    for k, v in row.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and v != v:
            v = None
        out[k] = v
    return out


def _read_sidecar(manifest: str) -> dict[str, Any] | None:
    """The manifest's sidecar metadata when reshape wrote it; None when absent or not reshape's."""
    side = manifest + META_SUFFIX
    try:
        if not storage.is_file(manifest) or not storage.is_file(side):
            return None
        meta = json.loads(storage.read_bytes(side))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and SCHEMA_KEY in meta else None


def _withdraw_manifest(folder: OutputFolder, manifest: str) -> None:
    """Delete this folder's manifest (CSV first, then its sidecar) before a run deletes or replaces an
    image it may list: a run interrupted after that leaves no manifest rather than one listing images
    that are gone or changed; the finished run writes a new one."""
    meta = _read_sidecar(manifest)
    if meta is None or meta.get("out_dir") != folder.location:
        return
    storage.remove(manifest)
    storage.remove(manifest + META_SUFFIX)


def check_manifest(manifest: str, *, overwrite: bool) -> None:
    """Refuse to replace a manifest (or sidecar) reshape did not write, unless ``overwrite``."""
    if storage.is_local(manifest):
        path = storage.local_path(manifest)
        kinds = ("distortion_manifest",)
        check_file_output(path, "csv", overwrite=overwrite, option="--manifest", kinds=kinds)
        check_file_output(
            sidecar_path(path), "json", overwrite=overwrite, option="--manifest sidecar", kinds=kinds
        )
        return
    if storage.is_file(manifest) and _read_sidecar(manifest) is None and not overwrite:
        raise BadInputError(
            f"{manifest}: exists and was not written by reshape; refusing to replace it "
            "(pass --overwrite to allow)"
        )


# ----------------------------------------------------------------------------------------------- during the run
class ShardRecords:
    """The driver's side of the journal while shards finish: their records are folded into a merged
    segment every ``every`` shards (and on :meth:`close`), and their shard segments dropped."""

    def __init__(self, journal: Journal, tag: str, every: int = MERGE_EVERY):
        self.journal = journal
        self.tag = tag
        self.every = every
        self._records: list[FileRecord] = []
        self._segments: list[str] = []
        #: size and mtime of every output recorded by this run (what the seal checks the folder against)
        self.written: dict[str, FileStat] = {}

    def add(self, jobs: Sequence[DistortJob], rows: Iterable[dict[str, Any]]) -> None:
        new = [self.record(r) for r in rows if "error" not in r]
        self._records += new
        self.written.update((r.name, FileStat(r.size, r.mtime_ns)) for r in new)
        self._segments.append(self.journal.shard_segment(shard_key([j.dist_img for j in jobs])))
        if len(self._segments) >= self.every:
            self.close()

    def record(self, row: dict[str, Any]) -> FileRecord:
        """The journal record of a row :func:`~reshape.distort_shards.distort_shard` returned."""
        meta = {k: v for k, v in row.items() if k not in _JOURNAL_FIELDS}
        meta["settings"] = self.tag
        return FileRecord(row["dist_img"], row["sha256"], row["size"], row["mtime_ns"], meta)

    def close(self) -> None:
        if self._segments:
            self.journal.append(self._records, drop=self._segments)
        self._records, self._segments = [], []


# ----------------------------------------------------------------------------------------------- manifest
def write_manifest(manifest: str, frame: pd.DataFrame, metadata: dict[str, Any]) -> None:
    """Write the manifest CSV and then its sidecar (the order readers rely on), each atomically."""
    folder, name = split_location(manifest)
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
        local = Path(tmp) / name
        try:
            write_csv(local, frame, "distortion_manifest", metadata)
        except OSError as exc:
            raise ResourceError(f"{local}: {exc.strerror or exc} (writing the manifest)") from None
        folder.put_file(name, local)
        folder.put_file(name + META_SUFFIX, sidecar_path(local))


#: Manifest rows validated and written per chunk: the CSV of a 700k-image plan in bounded memory.
MANIFEST_CHUNK = 50_000
#: Sidecar entry holding the size, mtime and sha256 of the manifest CSV as written.
MANIFEST_FILE_KEY = "manifest_csv"


def write_manifest_rows(manifest: str, rows: Iterable[dict[str, Any]], metadata: dict[str, Any]) -> None:
    """:func:`write_manifest` for an iterable of rows, streamed: each chunk of :data:`MANIFEST_CHUNK` rows
    is validated against the schema and appended to a temporary file, so a 700k-row manifest never
    exists as one frame or one string. The bytes are those :func:`write_manifest` writes."""
    from itertools import islice

    from reshape.artifacts import base_metadata, load_schema, validate_frame

    schema = load_schema("distortion_manifest")
    columns = schema.column_names
    folder, name = split_location(manifest)
    iterator = iter(rows)
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
        local = Path(tmp) / name
        try:
            with open(local, "w", encoding="utf-8", newline="") as fh:
                first = True
                while (chunk := list(islice(iterator, MANIFEST_CHUNK))) or first:
                    frame = pd.DataFrame(chunk, columns=columns)
                    frame["denoiser"] = frame["denoiser"].where(frame["denoiser"].notna(), None)
                    checked = validate_frame(frame, "distortion_manifest", local)
                    checked[columns].to_csv(
                        fh, index=False, header=first, float_format="%.6g", lineterminator="\n"
                    )
                    first = False
        except OSError as exc:
            raise ResourceError(f"{local}: {exc.strerror or exc} (writing the manifest)") from None
        placed = folder.put_file(name, local)
        # the CSV as placed, so that a rerun with nothing to change can tell it still holds these bytes
        written = {"size": placed.size, "mtime_ns": placed.mtime_ns, "sha256": placed.sha256}
        meta = {SCHEMA_KEY: schema.tag, **base_metadata(), **metadata, MANIFEST_FILE_KEY: written}
        try:
            sidecar_path(local).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        except OSError as exc:
            raise ResourceError(f"{local}: {exc.strerror or exc} (writing the manifest)") from None
        folder.put_file(name + META_SUFFIX, sidecar_path(local))


def manifest_is_current(manifest: str, metadata: dict[str, Any]) -> bool:
    """True when the manifest and its sidecar are the ones this run would write: the sidecar (reshape's,
    same version) records ``metadata`` and the CSV still has the size and mtime it recorded. A rerun that
    made and removed nothing then keeps them instead of rewriting 700k rows."""
    from reshape import __version__

    side = _read_sidecar(manifest)
    if side is None or side.get("reshape_version") != __version__:
        return False
    recorded, stat = side.get(MANIFEST_FILE_KEY), storage.stat(manifest)
    if not isinstance(recorded, dict) or stat is None:
        return False
    if (recorded.get("size"), recorded.get("mtime_ns")) != (stat.size, stat.mtime_ns):
        return False
    wanted = json.loads(json.dumps(metadata, sort_keys=True, default=str))
    return all(side.get(key) == value for key, value in wanted.items())


def read_sidecar(manifest: str) -> dict[str, Any] | None:
    """The manifest's sidecar metadata when reshape wrote it; None when absent or not reshape's."""
    return _read_sidecar(manifest)


def remove_legacy_journal(location: str | None) -> None:
    if location is not None:
        storage.remove(location)


__all__ = [
    "MERGE_EVERY",
    "ShardRecords",
    "Takeover",
    "check_manifest",
    "legacy_journal",
    "manifest_row",
    "remove_legacy_journal",
    "settings_tag",
    "split_location",
    "take_over",
    "write_manifest",
]
