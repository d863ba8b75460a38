"""`reshape verify DIR`: check a published dataset and list every problem found (not just the first)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from reshape.artifacts import load_schema, read_csv
from reshape.errors import BadInputError
from reshape.fileio import TMP_PREFIX, check_relative, file_kind, resolve_under_root, sha256_file
from reshape.imageio import strict_decoding
from reshape.layout import (
    CROISSANT_JSON,
    DATASET_JSON,
    HF_METADATA,
    IMAGES_DIR,
    LABELS_CSV,
    META_CSV,
    REFERENCED_SOURCE_DIR,
    SOURCE_SUMS,
    SUMS,
    TRAIN_CSV,
    card_shape_problems,
    is_regular,
    parse_sha256sums,
    read_regular_bytes,
    read_regular_json,
)
from reshape.verify_derived import check_derived as _check_derived
from reshape.verify_derived import check_labels_agree as _check_labels_agree

#: CSV path columns whose values must be files listed in the checksums.
_CSV_CHECKS = {
    TRAIN_CSV: ("train", ["dist_img", "ref_img"], "dmos", ""),
    META_CSV: ("pyiqa_meta", ["path"], "score", ""),
    LABELS_CSV: ("labels", ["dist_img", "ref_img"], "dmos", ""),
    HF_METADATA: (None, ["file_name"], "dmos", IMAGES_DIR + "/"),
}


@dataclass
class VerifyReport:
    root: Path
    problems: list[str] = field(default_factory=list)
    files_checked: int = 0
    rows_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, where: str, problem: str) -> None:
        self.problems.append(f"{where}: {problem}")


def _check_sums(
    root: Path, name: str, entries: dict[str, str], report: VerifyReport, mount: str = ""
) -> None:
    """Check listed files; with ``mount`` (the referenced source/ folder, usually a symlink to the source
    dataset) paths are confined to that mount instead of the dataset root."""
    for rel, digest in sorted(entries.items()):
        try:
            if mount:
                if not rel.startswith(mount + "/"):
                    raise BadInputError(f"path {rel!r} is not under {mount}/")
                full = resolve_under_root(root / mount, rel[len(mount) + 1 :])
            else:
                full = resolve_under_root(root, rel)
        except BadInputError as exc:
            report.add(name, str(exc))
            continue
        if not full.exists():
            report.add(rel, "listed in " + name + " but missing")
            continue
        if not is_regular(full):
            continue  # a folder or special file: reported by the listing, never opened
        report.files_checked += 1
        if sha256_file(full) != digest:
            report.add(rel, f"checksum does not match {name} (file modified or corrupted)")


def _check_csv(
    root: Path,
    rel: str,
    schema: str | None,
    path_cols: list[str],
    label_col: str,
    prefix: str,
    listed: set[str],
    label_range: tuple[float, float] | None,
    report: VerifyReport,
) -> None:
    path = root / rel
    if not path.exists():
        report.add(rel, "missing")
        return
    if not is_regular(path):
        return  # reported by the listing; a FIFO is never opened
    if schema is not None:
        try:
            read_csv(path, schema)
        except BadInputError as exc:
            report.add(rel, f"does not follow the {schema} schema: {str(exc).removeprefix(str(path) + ', ')}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        report.add(rel, f"not a readable CSV ({str(exc).splitlines()[0]})")
        return
    wanted = [c for c in path_cols + [label_col] if c not in df.columns]
    if wanted:
        report.add(rel, f"missing column(s) {', '.join(wanted)}")
        return
    report.rows_checked += len(df)
    for i, row in enumerate(df.itertuples(index=False), start=2):
        values = row._asdict()
        for col in path_cols:
            value = values[col]
            try:
                clean = prefix + check_relative(value)
            except BadInputError as exc:
                report.add(f"{rel}, line {i}", f"column {col!r}: {exc}")
                continue
            if clean not in listed:
                report.add(f"{rel}, line {i}", f"column {col!r}: {clean!r} is not listed in {SUMS}")
        raw = values[label_col]
        try:
            label = float(raw)
        except ValueError:
            report.add(f"{rel}, line {i}", f"label {label_col!r} value {raw!r} is not a number")
            continue
        if not math.isfinite(label):
            report.add(f"{rel}, line {i}", f"label {label_col!r} is not finite ({raw!r})")
        elif label_range is not None and not label_range[0] <= label <= label_range[1]:
            report.add(f"{rel}, line {i}", f"label {label} outside the dataset range {list(label_range)}")


def _refuse_non_dataset(root: Path) -> None:
    """A folder with neither dataset.json nor SHA256SUMS is no published dataset: one line, naming the
    published datasets inside it (a demo's root holds one in dataset/)."""
    if (root / DATASET_JSON).exists() or (root / SUMS).exists():
        return
    from reshape.dataset_lock import is_published

    inner = sorted(p for p in root.iterdir() if p.is_dir() and is_published(p))
    found = f"; the published dataset in it is {', '.join(map(str, inner))}" if inner else ""
    raise BadInputError(f"{root}: not a published dataset (no {DATASET_JSON}, no {SUMS}){found}")


def _read_card(root: Path, report: VerifyReport) -> dict:
    """dataset.json, read only when it is a regular file, with its JSON shape checked (one problem each)."""
    card_path = root / DATASET_JSON
    if not card_path.exists():
        report.add(DATASET_JSON, "missing")
        return {}
    try:
        card = read_regular_json(card_path)
    except BadInputError as exc:
        report.add(DATASET_JSON, str(exc).removeprefix(f"{card_path}: "))
        return {}
    shape = card_shape_problems(card)
    for problem in shape:
        report.add(DATASET_JSON, problem)
    if shape:
        return {}  # nothing else is read from a card of the wrong shape
    missing = [c.name for c in load_schema("dataset_card").columns if c.name not in card]
    if missing:
        report.add(DATASET_JSON, f"lacks key(s) {', '.join(missing)}")
    return card


def _read_sums(root: Path, name: str, report: VerifyReport) -> dict[str, str] | None:
    path = root / name
    if not path.exists() and not path.is_symlink():
        return None
    try:
        text = read_regular_bytes(path).decode("utf-8", errors="replace")
    except (BadInputError, OSError) as exc:
        report.add(name, str(exc).removeprefix(f"{path}: "))
        return {}
    return parse_sha256sums(text, name, report)


def verify_dataset(root: str | os.PathLike[str]) -> VerifyReport:
    """Check every invariant of a published dataset and collect all problems."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder")
    _refuse_non_dataset(root)
    report = VerifyReport(root=root)
    card = _read_card(root, report)
    sums = _read_sums(root, SUMS, report)
    if sums is None:
        report.add(SUMS, "missing")
        sums = {}
    _check_sums(root, SUMS, sums, report)

    referenced = card.get("source", {}).get("mode") == "referenced"
    source_sums: dict[str, str] = {}
    if referenced:
        found = _read_sums(root, SOURCE_SUMS, report)
        if found is None:
            report.add(SOURCE_SUMS, "missing (dataset.json says source images are referenced)")
        else:
            source_sums = found
            # Source files are checked only once someone has mounted the source dataset there.
            if (root / REFERENCED_SOURCE_DIR).exists():
                _check_sums(root, SOURCE_SUMS, source_sums, report, mount=REFERENCED_SOURCE_DIR)
    _check_listing(root, sums, referenced, report)

    rng = card.get("labels", {}).get("range")
    label_range = (float(rng[0]), float(rng[1])) if rng is not None else None
    listed = set(sums) | set(source_sums)
    for rel, (schema, cols, label_col, prefix) in _CSV_CHECKS.items():
        if rel == LABELS_CSV and not (root / rel).exists() and "labels" not in card.get("files", {}):
            continue
        _check_csv(root, rel, schema, cols, label_col, prefix, listed, label_range, report)
    train = _check_train_rows(root, report)
    if train is not None:
        _check_labels_agree(root, train, report)
    _check_images(root, sums, report)
    _check_croissant(root, card, sums, report)
    if card and train is not None:
        _check_derived(root, card, train, sums, report)
    return report


def _check_listing(root: Path, sums: dict[str, str], referenced: bool, report: VerifyReport) -> None:
    """Every entry of the folder (links not followed): regular files listed in SHA256SUMS, no special
    file (a FIFO would hang a reader), no link leading out, and no two names that differ only in case (one
    would overwrite the other on a case-insensitive file system: macOS, Windows)."""
    by_case: dict[str, str] = {}
    for top, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = Path(top) / name
            rel = path.relative_to(root).as_posix()
            if referenced and (rel == REFERENCED_SOURCE_DIR or rel.startswith(REFERENCED_SOURCE_DIR + "/")):
                continue
            other = by_case.setdefault(rel.casefold(), rel)
            if other != rel:
                report.add(rel, f"differs from {other!r} only in case (they collide on macOS and Windows)")
            kind = file_kind(path.lstat().st_mode)
            if kind == "symbolic link":
                try:
                    resolve_under_root(root, rel)
                except BadInputError:
                    report.add(rel, "symbolic link pointing outside the dataset")
                    continue
            elif kind not in ("regular file", "folder"):
                report.add(rel, f"is a {kind}, not a regular file")
                continue
            if path.is_file() and rel != SUMS and rel not in sums:
                what = "leftover temporary file" if name.startswith(TMP_PREFIX) else "file"
                report.add(rel, f"{what} not listed in {SUMS}")


#: What a row of a published train.csv may hold (KADID's 25 types at 5 levels, two origins).
ORIGINS = ("source", "pseudo")
DIST_TYPES = range(1, 26)
DIST_LEVELS = range(1, 6)


def _check_train_rows(root: Path, report: VerifyReport) -> pd.DataFrame | None:
    """The rows of train.csv, beyond the schema: each image once, a known origin, a KADID type (1..25)
    and level (1..5), a variance that is not negative. A dataset whose SHA256SUMS was regenerated after
    tampering still fails here on its content."""
    if not is_regular(root / TRAIN_CSV):
        return None  # reported by the CSV checks
    try:
        train = read_csv(root / TRAIN_CSV, "train")
    except (BadInputError, OSError):
        return None  # reported by the schema check
    first_row: dict[str, int] = {}
    for i, row in enumerate(train.itertuples(index=False), start=2):
        where = f"{TRAIN_CSV}, line {i}"
        if row.dist_img in first_row:
            report.add(
                where, f"image {row.dist_img!r} is listed twice (first on line {first_row[row.dist_img]})"
            )
        first_row.setdefault(row.dist_img, i)
        if row.origin not in ORIGINS:
            report.add(where, f"origin {row.origin!r} is not one of {', '.join(ORIGINS)}")
        if row.dist_type not in DIST_TYPES:
            report.add(where, f"dist_type {row.dist_type} is outside 1..25")
        if row.dist_level not in DIST_LEVELS:
            report.add(where, f"dist_level {row.dist_level} is outside 1..5")
        if row.var < 0:
            report.add(where, f"var {row.var} is negative")
    return train


def _check_images(root: Path, sums: dict[str, str], report: VerifyReport) -> None:
    """Every listed image decodes completely (a truncated or corrupt file fails, whatever its checksum)."""
    from PIL import Image

    for rel in sorted(sums):
        if PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES or not is_regular(root / rel):
            continue
        try:
            with strict_decoding(), Image.open(root / rel) as im:
                im.load()
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a broken file
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            report.add(rel, f"image does not decode ({first})")


IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp")


def _check_croissant(root: Path, card: dict, sums: dict[str, str], report: VerifyReport) -> None:
    """croissant.json against the folder (reshape.croissant.check); folders published before it existed
    (dataset.json does not list it) are not asked for one."""
    from reshape import croissant

    path = root / CROISSANT_JSON
    if not path.exists():
        if "croissant" in card.get("files", {}) and CROISSANT_JSON not in sums:  # else reported as listed
            report.add(CROISSANT_JSON, "missing")
        return
    if not is_regular(path):
        return  # reported by the listing
    try:
        doc = read_regular_json(path)
    except BadInputError as exc:
        report.add(CROISSANT_JSON, str(exc).removeprefix(f"{path}: "))
        return
    train = None
    if is_regular(root / TRAIN_CSV):
        try:
            train = pd.read_csv(root / TRAIN_CSV, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            train = None  # reported by the CSV checks
    if train is not None and "dist_img" not in train.columns:
        train = None
    for where, problem in croissant.check(doc, root, sums, train):
        report.add(where, problem)


# ----------------------------------------------------------------------------------------------- stage API
@dataclass
class VerifyConfig:
    dataset_dir: Path
    fingerprint: str | None = None
    progress: bool = False


@dataclass
class VerifyResult:
    report: VerifyReport

    @property
    def ok(self) -> bool:
        return self.report.ok

    def summary_lines(self) -> list[str]:
        """One line per problem (all of them), else one OK line."""
        root = self.report.root
        if not self.report.ok:
            return [f"{root}/{problem}" for problem in self.report.problems]
        return [
            f"{root}: OK ({self.report.files_checked} files checksummed, "
            f"{self.report.rows_checked} CSV rows checked)"
        ]


def run(config: VerifyConfig) -> VerifyResult:
    """Check a published folder; the caller decides what a failed check means (the CLI exits 1)."""
    from reshape.dataset_lock import shared_lock

    root = Path(config.dataset_dir)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder")
    with shared_lock(root, wait=True):  # never read while a publish writes it
        return VerifyResult(verify_dataset(root))
