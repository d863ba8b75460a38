"""The files of a published dataset that follow from its tables and dataset.json, in one place.

`reshape publish` writes them with these functions, from train.csv as written (read back, so every number
is the one in the table), and `reshape verify` derives them again from the folder and compares byte for
byte: the card (README.md), croissant.json, images/metadata.csv, meta_info.csv, the pyiqa options, split
and launcher, and the counts in dataset.json.
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from reshape.artifacts import write_csv
from reshape.layout import CARD, CROISSANT_JSON, HF_METADATA, IMAGES_DIR, META_CSV, TRAIN_COLUMNS


def count_table(train: pd.DataFrame) -> dict[str, Any]:
    """Counts per origin, per distortion type and per (type, level), JSON-ready."""
    per_type_level: dict[str, dict[str, int]] = {}
    for (t, lvl), n in train.groupby(["dist_type", "dist_level"]).size().items():
        per_type_level.setdefault(str(int(t)), {})[str(int(lvl))] = int(n)
    return {
        "rows": len(train),
        "origin": {str(k): int(v) for k, v in train["origin"].value_counts().sort_index().items()},
        "type": {str(int(k)): int(v) for k, v in train["dist_type"].value_counts().sort_index().items()},
        "type_level": per_type_level,
    }


def hub_metadata(published: pd.DataFrame) -> pd.DataFrame:
    """images/metadata.csv: the rows whose image is in the folder, file_name relative to images/."""
    inside = published[published["dist_img"].str.startswith(IMAGES_DIR + "/")]
    return pd.DataFrame(
        {
            "file_name": [str(PurePosixPath(p).relative_to(IMAGES_DIR)) for p in inside["dist_img"]],
            "dmos": inside["dmos"].to_numpy(dtype=float),
            "origin": inside["origin"].to_numpy(),
            "ref_img": inside["ref_img"].to_numpy(),
            "dist_type": inside["dist_type"].to_numpy(dtype=np.int64),
            "dist_level": inside["dist_level"].to_numpy(dtype=np.int64),
        }
    )


def hub_metadata_text(published: pd.DataFrame) -> str:
    return hub_metadata(published).to_csv(index=False, float_format="%.6g", lineterminator="\n")


def meta_table(published: pd.DataFrame) -> pd.DataFrame:
    """meta_info.csv (pyiqa's general NR meta-info): path and score of every row."""
    return pd.DataFrame({"path": published["dist_img"], "score": published["dmos"]})


def csv_text(table: pd.DataFrame, schema: str) -> str:
    """The text :func:`reshape.artifacts.write_csv` writes for ``table`` (checked against ``schema``)."""
    with tempfile.TemporaryDirectory(prefix="reshape-derive-") as tmp:
        path = Path(tmp) / "table.csv"
        write_csv(path, table, schema)
        return path.read_text("utf-8")


def label_note(card: dict[str, Any]) -> str:
    """How pyiqa/train.yml states the labels, from dataset.json's ``labels``."""
    lo, hi = card["labels"]["range"]
    return f"range [{float(lo):g}, {float(hi):g}], scale {card['labels'].get('scale') or 'source'}"


def published_table(train: pd.DataFrame) -> pd.DataFrame:
    """train.csv's columns only (the frame every derived file is made from)."""
    return train[list(TRAIN_COLUMNS)].reset_index(drop=True)


def derived_texts(
    card: dict[str, Any], published: pd.DataFrame, table_sums: dict[str, str], *, url: str | None = None
) -> dict[str, str]:
    """Relative path -> text of every file derived from dataset.json and train.csv (``table_sums``: the
    sha256 of the tables croissant.json describes). pyiqa/test.yml is not among them: it names the test
    sets' meta-info files on the publishing machine, which the folder does not record."""
    from reshape import croissant
    from reshape.publish_card import render_card
    from reshape.pyiqa_options import TEST_OPTIONS_FILE, pyiqa_files

    texts = {
        CARD: render_card(card),
        CROISSANT_JSON: croissant.render(croissant.build(card, published, table_sums, url=url)),
        HF_METADATA: hub_metadata_text(published),
        META_CSV: csv_text(meta_table(published), "pyiqa_meta"),
    }
    validation = card.get("pyiqa", {}).get("validation") or {}
    val_roots = _recorded_val_roots(validation)
    for rel, text in pyiqa_files(card["name"], published, label_note(card), val_roots).items():
        if rel != TEST_OPTIONS_FILE:
            texts[rel] = text
    return texts


def _recorded_val_roots(validation: dict[str, Any]) -> dict[str, Any]:
    """The test sets dataset.json names (only whether there are any changes the derived files)."""
    from reshape.pyiqa_options import ValRoot

    return {str(k): ValRoot(str(k), Path(str(v)), Path(str(v))) for k, v in validation.items()}
