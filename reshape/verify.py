"""`reshape verify DIR`: check a published dataset and list every problem found (not just the first)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from reshape.artifacts import load_schema, read_csv
from reshape.errors import BadInputError
from reshape.fileio import TMP_PREFIX, check_relative, resolve_under_root, sha256_file
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
    parse_sha256sums,
)

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
        if not full.is_file():
            report.add(rel, "listed in " + name + " but missing")
            continue
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
    if not path.is_file():
        report.add(rel, "missing")
        return
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


def verify_dataset(root: str | os.PathLike[str]) -> VerifyReport:
    """Check every invariant of a published dataset and collect all problems."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder")
    report = VerifyReport(root=root)

    card: dict = {}
    card_path = root / DATASET_JSON
    if not card_path.is_file():
        report.add(DATASET_JSON, "missing")
    else:
        try:
            card = json.loads(card_path.read_text("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            report.add(DATASET_JSON, f"invalid JSON ({exc})")
        if card:
            missing = [c.name for c in load_schema("dataset_card").columns if c.name not in card]
            if missing:
                report.add(DATASET_JSON, f"lacks key(s) {', '.join(missing)}")

    sums: dict[str, str] = {}
    if not (root / SUMS).is_file():
        report.add(SUMS, "missing")
    else:
        sums = parse_sha256sums((root / SUMS).read_text("utf-8", errors="replace"), SUMS, report)
        _check_sums(root, SUMS, sums, report)

    referenced = card.get("source", {}).get("mode") == "referenced"
    source_sums: dict[str, str] = {}
    if referenced:
        if (root / SOURCE_SUMS).is_file():
            source_sums = parse_sha256sums(
                (root / SOURCE_SUMS).read_text("utf-8", errors="replace"), SOURCE_SUMS, report
            )
            # Source files are checked only once someone has mounted the source dataset there.
            if (root / REFERENCED_SOURCE_DIR).exists():
                _check_sums(root, SOURCE_SUMS, source_sums, report, mount=REFERENCED_SOURCE_DIR)
        else:
            report.add(SOURCE_SUMS, "missing (dataset.json says source images are referenced)")

    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if referenced and (rel == REFERENCED_SOURCE_DIR or rel.startswith(REFERENCED_SOURCE_DIR + "/")):
            continue
        if path.is_symlink():
            try:
                resolve_under_root(root, rel)
            except BadInputError:
                report.add(rel, "symbolic link pointing outside the dataset")
                continue
        if path.is_file() and rel != SUMS and rel not in sums:
            what = "leftover temporary file" if path.name.startswith(TMP_PREFIX) else "file"
            report.add(rel, f"{what} not listed in {SUMS}")

    label_range = None
    rng = card.get("labels", {}).get("range")
    if isinstance(rng, list) and len(rng) == 2:
        label_range = (float(rng[0]), float(rng[1]))
    listed = set(sums) | set(source_sums)
    for rel, (schema, cols, label_col, prefix) in _CSV_CHECKS.items():
        if rel == LABELS_CSV and not (root / rel).exists() and "labels" not in card.get("files", {}):
            continue
        _check_csv(root, rel, schema, cols, label_col, prefix, listed, label_range, report)
    if label_range is not None and not all(map(math.isfinite, label_range)):
        report.add(DATASET_JSON, f"labels.range {list(label_range)} is not finite")
    _check_train_rows(root, report)
    _check_images(root, sums, report)
    _check_croissant(root, card, sums, report)
    return report


#: What a row of a published train.csv may hold (KADID's 25 types at 5 levels, two origins).
ORIGINS = ("source", "pseudo")
DIST_TYPES = range(1, 26)
DIST_LEVELS = range(1, 6)


def _check_train_rows(root: Path, report: VerifyReport) -> None:
    """The rows of train.csv, beyond the schema: each image once, a known origin, a KADID type (1..25)
    and level (1..5), a variance that is not negative. A dataset whose SHA256SUMS was regenerated after
    tampering still fails here on its content."""
    try:
        train = read_csv(root / TRAIN_CSV, "train")
    except (BadInputError, OSError):
        return  # reported by the schema check
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


def _check_images(root: Path, sums: dict[str, str], report: VerifyReport) -> None:
    """Every listed image decodes completely (a truncated or corrupt file fails, whatever its checksum)."""
    from PIL import Image

    for rel in sorted(sums):
        if PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES or not (root / rel).is_file():
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
    if not path.is_file():
        if "croissant" in card.get("files", {}) and CROISSANT_JSON not in sums:  # else reported as listed
            report.add(CROISSANT_JSON, "missing")
        return
    try:
        doc = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        report.add(CROISSANT_JSON, f"invalid JSON ({exc})")
        return
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
    return VerifyResult(verify_dataset(config.dataset_dir))
