"""The layout of a published dataset folder: its file names and its checksum list (SHA256SUMS).

One small module that every reader and writer of a published folder imports (publish writes it, verify
checks it, hub uploads it, the Croissant writer describes it), so none of them imports another for a name.
Paths are relative to the dataset folder, POSIX style.

Parsing SHA256SUMS: each line is ``<64 lowercase hex>  <path>`` (``sha256sum`` text mode; a ``*`` in place of
the second space, binary mode, is accepted too; a name holding a newline or backslash is GNU-escaped);
malformed lines and unsafe paths are reported through the
caller's ``report.add(where, problem)``, never fatal, so a checker can list every problem at once.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Protocol

from reshape.errors import BadInputError
from reshape.fileio import check_relative, file_kind, parse_sums_line, sums_line

CARD = "README.md"
DATASET_JSON = "dataset.json"
CROISSANT_JSON = "croissant.json"
SUMS = "SHA256SUMS"
SOURCE_SUMS = "SOURCE_SHA256SUMS"
TRAIN_CSV = "train.csv"
META_CSV = "meta_info.csv"
LABELS_CSV = "labels.csv"
IMAGES_DIR = "images"
HF_METADATA = f"{IMAGES_DIR}/metadata.csv"
NEW_DIR = IMAGES_DIR
REFS_DIR = f"{IMAGES_DIR}/refs"
COPIED_SOURCE_DIR = f"{IMAGES_DIR}/source"
REFERENCED_SOURCE_DIR = "source"
PLOTS_DIR = "plots"
SELECTION_PNG = f"{PLOTS_DIR}/selection_map.png"
HISTOGRAM_PNG = f"{PLOTS_DIR}/label_histogram.png"
#: names an unfinished publish is writing (removed when it completes)
PENDING = ".reshape-publish-pending.json"
#: where a re-publish keeps the files it replaces or deletes until it completes (restored if it fails)
BACKUP_DIR = ".reshape-publish-backup"

#: the columns of train.csv, in order (schema data_manifests/train.schema.json)
TRAIN_COLUMNS = ("dist_img", "ref_img", "dmos", "var", "dist_type", "dist_level", "origin")


class ProblemSink(Protocol):
    """Where parse problems go (reshape.verify.VerifyReport is one)."""

    def add(self, where: str, problem: str) -> None: ...


def sha256sums_text(entries: dict[str, str]) -> str:
    """`sha256sum` text-mode lines ('<hex>  <path>', GNU-escaped where a name holds a newline, carriage
    return or backslash: reshape.fileio.sums_line), sorted by path."""
    return "".join(sums_line(digest, path) + "\n" for path, digest in sorted(entries.items()))


def parse_sha256sums(text: str, name: str, report: ProblemSink) -> dict[str, str]:
    """Parse sha256sum lines into {path: digest}; malformed lines and unsafe paths are reported, not fatal.
    Lines are split on newline only and GNU escaping is undone (reshape.fileio.parse_sums_line)."""
    entries: dict[str, str] = {}
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        parsed = parse_sums_line(line)
        if parsed is None:
            report.add(f"{name}, line {n}", "not a sha256sum line ('<64 hex>  <path>')")
            continue
        digest, rel = parsed
        try:
            clean = check_relative(rel)
        except BadInputError as exc:
            report.add(f"{name}, line {n}", str(exc))
            continue
        if clean in entries:
            report.add(f"{name}, line {n}", f"{clean!r} listed twice")
        entries[clean] = digest
    return entries


class _Dropped:
    """A problem sink that drops what it is told (for readers that only need what a list owns)."""

    def add(self, where: str, problem: str) -> None:
        pass


def read_sha256sums(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{path: sha256}`` of a SHA256SUMS file, leniently: a malformed line or an unsafe path owns nothing
    (``reshape verify`` is the reader that reports them); a missing file lists nothing."""
    path = Path(path)
    if not path.is_file():
        return {}
    return parse_sha256sums(path.read_text("utf-8", errors="replace"), path.name, _Dropped())


def read_regular_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of ``path``, which must be a regular file (a link to one is followed): a FIFO, device or
    socket there is a :class:`BadInputError` naming it, never opened in a way that blocks."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        kind = file_kind(os.fstat(fd).st_mode)
        if kind != "regular file":
            raise BadInputError(f"{path}: is a {kind}, not a regular file; refusing to read it")
        os.set_blocking(fd, True)
        with open(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def read_regular_json(path: str | os.PathLike[str]) -> Any:
    """JSON from a regular file (:func:`read_regular_bytes`); invalid JSON is one line naming the file."""
    try:
        return json.loads(read_regular_bytes(path).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: invalid JSON ({exc})") from None


def is_regular(path: str | os.PathLike[str]) -> bool:
    """True for a regular file (through links), False for anything else or nothing."""
    try:
        return file_kind(os.stat(path).st_mode) == "regular file"
    except OSError:
        return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: dataset.json keys and the JSON type each must have when present
CARD_TYPES = {
    "name": str, "reshape_version": str, "created": str, "files": dict, "counts": dict, "labels": dict,
    "parameters": dict, "software": dict, "source": dict, "pyiqa": dict, "features": dict, "notes": list,
}  # fmt: skip


def card_shape_problems(card: Any) -> list[str]:
    """What is wrong with the JSON shape of a dataset.json (each a phrase; empty when well-formed): a
    top-level object, each known key of its type, ``labels.range`` two finite numbers, ``notes`` strings."""
    if not isinstance(card, dict):
        return [f"is not a JSON object (a {type(card).__name__})"]
    problems = [
        f"{key!r} is a {type(card[key]).__name__}, not a {kind.__name__}"
        for key, kind in CARD_TYPES.items()
        if key in card and not isinstance(card[key], kind)
    ]
    labels = card.get("labels")
    if isinstance(labels, dict) and "range" in labels:
        rng = labels["range"]
        if not (isinstance(rng, list) and len(rng) == 2 and all(map(_is_number, rng))):
            problems.append(f"labels.range {rng!r} is not two numbers [lo, hi]")
        elif not all(map(math.isfinite, rng)) or not rng[0] <= rng[1]:
            problems.append(f"labels.range {rng!r} is not a finite range lo <= hi")
    notes = card.get("notes")
    if isinstance(notes, list) and not all(isinstance(n, str) for n in notes):
        problems.append("'notes' holds something other than text")
    return problems
