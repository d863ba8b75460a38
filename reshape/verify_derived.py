"""`reshape verify`, second half: every file of a dataset that follows from its tables is derived again and
compared byte for byte, and the label tables are checked against train.csv.

A rewritten SHA256SUMS line therefore no longer hides an edit to a derived file: a widened label range in
dataset.json disagrees with pyiqa/train.yml and the report, a line appended to pyiqa/train.py differs from
the launcher this version of reshape writes, and a changed label in meta_info.csv or images/metadata.csv
differs from train.csv. What cannot be caught: a dataset whose every file (tables included) and SHA256SUMS
were rewritten consistently; nothing inside the folder tells such a dataset from a real one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from reshape.errors import BadInputError
from reshape.fileio import sha256_file
from reshape.layout import (
    CROISSANT_JSON,
    DATASET_JSON,
    HF_METADATA,
    LABELS_CSV,
    META_CSV,
    TRAIN_CSV,
    is_regular,
    read_regular_bytes,
    read_regular_json,
)


class Problems(Protocol):
    def add(self, where: str, problem: str) -> None: ...


#: what each derived file is made from, for the message
_SOURCES = {
    "README.md": DATASET_JSON,
    CROISSANT_JSON: f"{DATASET_JSON} and {TRAIN_CSV}",
    HF_METADATA: TRAIN_CSV,
    META_CSV: TRAIN_CSV,
}


def _first_difference(have: bytes, want: bytes) -> int:
    """1-based line of the first difference."""
    for n, (a, b) in enumerate(zip(have.split(b"\n"), want.split(b"\n")), start=1):
        if a != b:
            return n
    return min(have.count(b"\n"), want.count(b"\n")) + 1


def _compare(root: Path, rel: str, want: bytes, source: str, report: Problems) -> None:
    path = root / rel
    if not path.exists() or not is_regular(path):
        return  # reported by the listing and the SHA256SUMS checks
    have = read_regular_bytes(path)
    if have == want:
        return
    line = _first_difference(have, want)
    if rel.endswith("train.py") or rel.endswith("test.py"):
        report.add(
            rel, f"differs from the launcher this version of reshape writes (line {line}); not running it"
        )
    else:
        report.add(
            rel,
            f"differs from what reshape derives from {source} (line {line}): edited, or not from this dataset",
        )


def _table_sums(root: Path, card: dict[str, Any]) -> dict[str, str]:
    named = {v for v in card.get("files", {}).values() if isinstance(v, str)}
    tables = [TRAIN_CSV, META_CSV, LABELS_CSV, HF_METADATA]
    return {rel: sha256_file(root / rel) for rel in tables if rel in named and is_regular(root / rel)}


def _croissant_url(root: Path) -> str | None:
    """Where croissant.json says the dataset is served (publish --push-to-hub records it), if anywhere."""
    try:
        doc = read_regular_json(root / CROISSANT_JSON) if is_regular(root / CROISSANT_JSON) else None
    except BadInputError:
        return None
    url = doc.get("url") if isinstance(doc, dict) else None
    return url if isinstance(url, str) else None


def check_derived(
    root: Path, card: dict[str, Any], train: pd.DataFrame, sums: dict[str, str], report: Problems
) -> None:
    """Derive the card, croissant.json, images/metadata.csv, meta_info.csv, the pyiqa files, dataset.json's
    counts and report/ from the folder and compare each with what is there."""
    from reshape.publish_derive import count_table, derived_texts, published_table

    published = published_table(train)
    try:
        texts = derived_texts(card, published, _table_sums(root, card), url=_croissant_url(root))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        report.add(
            DATASET_JSON, f"the dataset's files cannot be derived from it ({type(exc).__name__}: {exc})"
        )
        return
    # a file with a problem reported already (its checksum, croissant's own checks) gets no second line
    reported = {p.partition(": ")[0] for p in getattr(report, "problems", [])}
    for rel, text in sorted(texts.items()):
        if rel in reported:
            continue
        _compare(
            root, rel, text.encode("utf-8"), _SOURCES.get(rel, f"{DATASET_JSON} and {TRAIN_CSV}"), report
        )
    counts = {k: v for k, v in card.get("counts", {}).items() if k != "files"}
    if counts != count_table(published):
        report.add(DATASET_JSON, f"counts do not match the rows of {TRAIN_CSV}")
    _check_report(root, report)


def _check_report(root: Path, report: Problems) -> None:
    """report/'s pages and data, built again from the folder (thumbnails are checked by SHA256SUMS only)."""
    from reshape import report as html_report

    folder = root / html_report.REPORT_DIR
    if not (folder / "index.html").exists():
        return
    try:
        plan = html_report.plan_files(html_report.read_published(root))
    except BadInputError as exc:
        report.add(html_report.REPORT_DIR, f"cannot be built again from the folder ({exc})")
        return
    for rel, data in sorted(plan.files.items()):
        _compare(root, f"{html_report.REPORT_DIR}/{rel}", data, "the dataset's tables", report)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9)


def check_labels_agree(root: Path, train: pd.DataFrame, report: Problems) -> None:
    """labels.csv against train.csv: each pseudo-labelled row once, with the same reference, type, level
    and label (meta_info.csv and images/metadata.csv are derived from train.csv and compared whole)."""
    path = root / LABELS_CSV
    if not path.exists() or not is_regular(path):
        return
    from reshape.artifacts import read_csv

    try:
        labels = read_csv(path, "labels")
    except (BadInputError, OSError):
        return  # reported by the schema check
    pseudo = train[train["origin"] == "pseudo"].set_index("dist_img")
    pseudo = pseudo[~pseudo.index.duplicated()]  # a duplicate is reported with train.csv's rows
    seen = set()
    for i, row in enumerate(labels.itertuples(index=False), start=2):
        where = f"{LABELS_CSV}, line {i}"
        if row.dist_img not in pseudo.index:
            report.add(where, f"{row.dist_img!r} is not a pseudo-labelled row of {TRAIN_CSV}")
            continue
        seen.add(row.dist_img)
        other = pseudo.loc[row.dist_img]
        for col in ("ref_img", "dist_type", "dist_level"):
            if str(getattr(row, col)) != str(other[col]):
                report.add(where, f"{col} {getattr(row, col)!r} differs from {TRAIN_CSV} ({other[col]!r})")
        if not _close(float(row.dmos), float(other["dmos"])):
            report.add(where, f"label {row.dmos} differs from {TRAIN_CSV} ({other['dmos']})")
    missing = sorted(set(pseudo.index) - seen)
    if missing:
        report.add(
            LABELS_CSV,
            f"has no row for {len(missing)} pseudo-labelled image(s) of {TRAIN_CSV} ({missing[0]!r}, ...)",
        )
