"""`reshape report`: a static HTML report of a published dataset, built from the folder alone.

``report/index.html`` opens from ``file://`` offline: its CSS and JS are local files written beside it (no
CDN, no request outside the report folder), images are JPEG thumbnails under ``report/thumbs/``, and the
heavy tables are JS data files under ``report/data/`` loaded only when their section is opened. Sections:

1. overview: counts (source / pseudo / pruned), the encoder and the run's parameters, label histograms;
2. selection: the DDCUp map (training refs, candidates, selected) and the selected references as a strip
   with their distance to the nearest training reference;
3. new images: each new reference's grid of types x levels with its pseudo-labels;
4. provenance: every pseudo-labelled image with its neighbours (source image, label, distance, weight),
   filterable by reference, type and level;
5. label sanity: pseudo-label against level per type, and every (reference, type) whose label gets
   *better* as the level rises (levels are ordered by severity, so such a label is suspicious);
6. DRCDown clusters, kept and dropped members (pruned datasets only).

Inputs: train.csv, labels.csv, dataset.json and the ``provenance/`` tables publish writes
(reshape.report_data). Steps: :func:`read_published` -> :func:`report_model` (everything the page shows,
JSON-ready) -> :func:`plan_files` (every file and its bytes, thumbnails as sources) -> write, each file
through a temporary name. Thumbnails are made once: ``report/report.json`` records the sha256 of each
thumbnail's image, and an unchanged image keeps its thumbnail on a rebuild.

Ownership (docs/safety.md): ``report.json`` is the report's record (names and the sha256 of the bytes
written). A rebuild replaces or deletes only the files it lists, and deletes one only while it still holds
the recorded bytes and is reached without a link leading out of the folder; a link or special file at a
name it writes is refused; any other file at a name the report writes is refused unless ``overwrite``; a non-empty
folder without that record is refused unless ``overwrite`` (then the report writes beside its files).
Built inside a published dataset (the default ``DATASET/report``), the report's lines in the dataset's
SHA256SUMS are updated too, so the folder still passes `reshape verify`.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from reshape.errors import BadInputError
from reshape.layout import (
    DATASET_JSON,
    LABELS_CSV,
    REFERENCED_SOURCE_DIR,
    SOURCE_SUMS,
    SUMS,
    TRAIN_CSV,
    card_shape_problems,
    is_regular,
    read_regular_bytes,
    read_regular_json,
    read_sha256sums,
    sha256sums_text,
)
from reshape.report_data import (
    CLUSTERS_CSV,
    NEIGHBOUR_LABELS_CSV,
    SELECTION_MAP_CSV,
    provenance_lists,
    thumbnail_jpeg,
)

REPORT_DIR = "report"
RECORD = "report.json"
RECORD_FORMAT = "reshape-report/1"
THUMB_SIDE = 160
THUMB_QUALITY = 80
#: provenance rows per data file (the page loads them when the section is opened)
CHUNK_ROWS = 500
ASSETS = ("report.css", "report.js")
#: files every report has, whatever the data (checked before any work by publish)
FIXED_NAMES = ("index.html", "data/summary.js", *ASSETS, RECORD)
_NOTHING_LISTED: Mapping[str, str] = {}


def _keep_nothing(path: Path) -> Path:
    """The default guard of a write: nothing to keep aside (publish passes its transaction's)."""
    return path


# ----------------------------------------------------------------------------------------------- inputs
@dataclass
class Published:
    """What the report reads from a published folder."""

    root: Path
    card: dict[str, Any]
    train: pd.DataFrame
    labels: pd.DataFrame | None
    selection_map: pd.DataFrame | None
    neighbour_labels: pd.DataFrame | None
    clusters: pd.DataFrame | None
    digests: dict[str, str]  # published path -> sha256 (from SHA256SUMS)


#: the columns the report reads from each provenance table publish writes (reshape.report_data)
PROVENANCE_COLUMNS = {
    SELECTION_MAP_CSV: ("role", "name", "image", "x", "y", "nearest_train_distance"),
    NEIGHBOUR_LABELS_CSV: ("neighbour", "dist_type", "dist_level", "dmos", "image", "ref_image"),
    CLUSTERS_CSV: ("cluster", "cluster_size", "image", "name", "kept"),
}
_TEXT_COLUMNS = {"image": str, "name": str, "neighbour": str, "ref_image": str, "role": str}


def _optional_csv(root: Path, rel: str) -> pd.DataFrame | None:
    """A provenance table, when the folder has it: names read as text, every column the report uses
    present, numbers numeric (else one line naming the file)."""
    path = root / rel
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=_TEXT_COLUMNS)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in PROVENANCE_COLUMNS[rel] if c not in table.columns]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {', '.join(missing)}")
    numeric = [c for c in PROVENANCE_COLUMNS[rel] if c not in _TEXT_COLUMNS and c != "kept"]
    bad = [c for c in numeric if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise BadInputError(f"{path}: column(s) {', '.join(bad)} must be numbers")
    return table


def read_published(root: Path, digests: dict[str, str] | None = None) -> Published:
    """Read a folder `reshape publish` wrote (one-line error when it is not one)."""
    from reshape.artifacts import read_csv

    if not root.is_dir():
        raise BadInputError(f"{root}: not a folder")
    card_path = root / DATASET_JSON
    if not card_path.exists():
        raise BadInputError(f"{root}: not a published dataset (no dataset.json)")
    card = read_regular_json(card_path)  # a FIFO there is refused, never opened blocking
    if isinstance(card, dict) and "reshape_version" not in card:
        raise BadInputError(f"{card_path}: not written by `reshape publish`")
    for problem in card_shape_problems(card):
        raise BadInputError(f"{card_path}: {problem}")
    for rel in (TRAIN_CSV, LABELS_CSV):
        if (root / rel).exists() and not is_regular(root / rel):
            raise BadInputError(f"{root / rel}: is not a regular file; refusing to read it")
    train = read_csv(root / TRAIN_CSV, "train")
    labels = read_csv(root / LABELS_CSV, "labels") if (root / LABELS_CSV).is_file() else None
    if digests is None:
        digests = {**read_sha256sums(root / SOURCE_SUMS), **read_sha256sums(root / SUMS)}
    return Published(
        root=root,
        card=card,
        train=train,
        labels=labels,
        selection_map=_optional_csv(root, SELECTION_MAP_CSV),
        neighbour_labels=_optional_csv(root, NEIGHBOUR_LABELS_CSV),
        clusters=_optional_csv(root, CLUSTERS_CSV),
        digests=dict(digests),
    )


# ----------------------------------------------------------------------------------------------- model
def thumb_name(image: str) -> str:
    """Report-relative thumbnail path of a published image path."""
    return f"thumbs/{image}.jpg"


class _Thumbs:
    """Published images the page shows; each gets one thumbnail. A path that leaves the folder (``..``,
    absolute, or through a symlink) is an error; a missing file gets no thumbnail."""

    def __init__(self, root: Path):
        self.root = root
        self.wanted: dict[str, str] = {}  # thumbnail name -> published path
        self._seen: dict[str, str] = {}
        self._folders: set[str] = set()

    def __call__(self, image: Any) -> str:
        if not isinstance(image, str) or not image:
            return ""
        if image not in self._seen:
            self._seen[image] = self._check(image)
        name = self._seen[image]
        if name:
            self.wanted[name] = self.wanted.get(name) or image
        return name

    def _check(self, image: str) -> str:
        from reshape.fileio import check_relative, resolve_under_root

        rel = check_relative(image, source=self.root)
        if rel.startswith(REFERENCED_SOURCE_DIR + "/"):
            return ""  # referenced source images are not shipped (source/ is where a user mounts them)
        folder = str(PurePosixPath(rel).parent)
        if folder not in self._folders:  # a symlinked folder must not lead outside (once per folder)
            resolve_under_root(self.root, folder, source=self.root)
            self._folders.add(folder)
        path = self.root / rel
        if path.is_symlink():
            resolve_under_root(self.root, rel, source=self.root)
        if not path.is_file():
            return ""
        self.wanted[thumb_name(rel)] = rel
        return thumb_name(rel)


def _r(value: Any, digits: int = 4) -> float | None:
    v = float(value)
    return round(v, digits) if np.isfinite(v) else None


def _encoder(card: dict[str, Any]) -> dict[str, str]:
    """Which encoder made the features (dataset.json's features, else the features' stage metadata)."""
    if isinstance(card.get("features"), dict):
        return {k: str(v) for k, v in card["features"].items()}
    params = card.get("parameters", {})
    for key in ("train_features", "candidate_features", "selection"):
        meta = params.get(key)
        if isinstance(meta, dict) and meta.get("encoder"):
            return {"encoder": str(meta["encoder"]), "weights": str(meta.get("weights", "")),
                    "preprocessing": str(meta.get("preprocessing", ""))}  # fmt: skip
    return {"encoder": "unknown", "weights": ""}


PARAMETER_KEYS = {
    "selection": ("tau", "d_max", "tau_quantile", "k", "max_select", "n_candidates", "n_train", "n_selected"),
    "manifest": ("types", "levels", "seed", "resize", "format", "denoiser"),
    "labels": ("k", "margin", "temperature", "weighting", "scale", "neighbours_from"),
    "train_csv": ("scale", "preset", "sim_threshold", "label_threshold", "min_cluster", "seed"),
}


def _parameters(card: dict[str, Any]) -> list[list[str]]:
    rows = []
    for stage, keys in PARAMETER_KEYS.items():
        meta = card.get("parameters", {}).get(stage)
        if isinstance(meta, dict):
            rows += [[stage, k, json.dumps(meta[k])] for k in keys if k in meta]
    return rows


def _text(value: object) -> str:
    """A CSV cell as text: an empty cell (read as NaN) is ''."""
    return value if isinstance(value, str) else ""


def _neighbour_rows(pub: Published, thumbs: _Thumbs) -> dict[tuple[str, int, int], list]:
    if pub.neighbour_labels is None:
        return {}
    return {
        (str(r.neighbour), int(r.dist_type), int(r.dist_level)): [
            _r(r.dmos),
            thumbs(_text(r.image) or r.ref_image),
        ]
        for r in pub.neighbour_labels.itertuples(index=False)
    }


def _provenance_rows(pub: Published, thumbs: _Thumbs) -> list[list]:
    """One row per pseudo-labelled image: image, thumb, ref, ref thumb, type, level, label, var, neighbours."""
    if pub.labels is None:
        return []
    known = _neighbour_rows(pub, thumbs)
    lists = provenance_lists(pub.labels, pub.root / LABELS_CSV)  # one line, not a traceback, for a bad cell
    rows = []
    for r in pub.labels.sort_values(["ref_img", "dist_type", "dist_level", "dist_img"]).itertuples():
        t, lvl = int(r.dist_type), int(r.dist_level)
        names, weights, distances = lists[pub.labels.index.get_loc(r.Index)]
        neighbours = []
        for name, w, d in zip(names, weights, distances):
            label, thumb = known.get((name, t, lvl), [None, ""])
            neighbours.append([name, thumb, label, _r(d), _r(w)])
        rows.append([r.dist_img, thumbs(r.dist_img), r.ref_img, thumbs(r.ref_img), t, lvl, _r(r.dmos),
                     _r(r.var), neighbours])  # fmt: skip
    return rows


def _selection(pub: Published, thumbs: _Thumbs) -> dict[str, Any] | None:
    table = pub.selection_map
    if table is None:
        return None
    points = [
        [str(r.role), str(r.name), thumbs(r.image), _r(r.x, 5), _r(r.y, 5), _r(r.nearest_train_distance)]
        for r in table.itertuples(index=False)
    ]
    strip = sorted((p for p in points if p[0] == "selected"), key=lambda p: (-(p[5] or 0.0), p[1]))
    return {"points": points, "strip": [[p[1], p[2], p[5]] for p in strip]}


def _clusters(pub: Published, thumbs: _Thumbs) -> list[list] | None:
    if pub.clusters is None:
        return None
    out = []
    for cluster, members in pub.clusters.groupby("cluster", sort=True):
        listed = [[thumbs(m.image), str(m.name), bool(m.kept)] for m in members.itertuples(index=False)]
        out.append([int(cluster), int(members["cluster_size"].iloc[0]), listed])
    return sorted(out, key=lambda c: (-c[1], c[0]))


def label_sanity(labels: pd.DataFrame) -> tuple[dict[int, dict[str, list]], list[list]]:
    """Per type, each reference's (level, label) curve; and the (ref, type) pairs whose label rises with
    the level (a higher level is a stronger distortion, so its label should not be better)."""
    curves: dict[int, dict[str, list]] = {}
    flagged = []
    for (ref, t), group in labels.groupby(["ref_img", "dist_type"], sort=True):
        g = group.sort_values("dist_level")
        levels = g["dist_level"].to_numpy(dtype=np.int64)
        values = g["dmos"].to_numpy(dtype=np.float64)
        curves.setdefault(int(t), {})[str(ref)] = [[int(a), _r(b)] for a, b in zip(levels, values)]
        rises = [
            [int(levels[i]), int(levels[i + 1]), _r(values[i + 1] - values[i])]
            for i in range(len(levels) - 1)
            if values[i + 1] > values[i]
        ]
        if rises:
            flagged.append([str(ref), int(t), rises])
    return curves, flagged


def _histogram(train: pd.DataFrame, lo: float, hi: float, bins: int = 25) -> dict[str, Any]:
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.linspace(lo - 0.5, lo + 0.5, bins + 1)
    out = {"edges": [_r(e) for e in edges]}
    for origin in ("source", "pseudo"):
        values = train.loc[train["origin"] == origin, "dmos"].to_numpy(dtype=np.float64)
        out[origin] = np.histogram(values, bins=edges)[0].astype(int).tolist()
    return out


def report_model(pub: Published) -> tuple[dict[str, Any], list[list], dict[str, str]]:
    """(summary the page shows, provenance rows, thumbnail name -> published image)."""
    thumbs = _Thumbs(pub.root)
    card, train = pub.card, pub.train
    rows = _provenance_rows(pub, thumbs)
    lo, hi = card.get("labels", {}).get("range") or [float(train["dmos"].min()), float(train["dmos"].max())]
    curves, flagged = label_sanity(pub.labels) if pub.labels is not None else ({}, [])
    clusters = _clusters(pub, thumbs)
    counts = {
        "source": int((train["origin"] == "source").sum()),
        "pseudo": int((train["origin"] == "pseudo").sum()),
        "pruned": None if clusters is None else sum(not m[2] for c in clusters for m in c[2]),
    }
    summary = {
        "name": str(card.get("name", pub.root.name)),
        "created": str(card.get("created", "")),
        "reshape_version": str(card.get("reshape_version", "")),
        "encoder": _encoder(card),
        "counts": counts,
        "label_range": [float(lo), float(hi)],
        "parameters": _parameters(card),
        "notes": [str(n) for n in card.get("notes", [])],
        "histogram": _histogram(train, float(lo), float(hi)),
        "selection": _selection(pub, thumbs),
        "refs": sorted({r[2] for r in rows}),
        "types": sorted({r[4] for r in rows}),
        "levels": sorted({r[5] for r in rows}),
        "chunks": (len(rows) + CHUNK_ROWS - 1) // CHUNK_ROWS,
        "rows": len(rows),
        "sanity": {"curves": {str(k): v for k, v in curves.items()}, "flagged": flagged},
        "clusters": clusters,
    }
    return summary, rows, thumbs.wanted


# ----------------------------------------------------------------------------------------------- html
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _svg_histogram(hist: dict[str, Any]) -> str:
    edges, width, height = hist["edges"], 520, 200
    top = max([1, *hist["source"], *hist["pseudo"]])
    n = len(edges) - 1
    bar = (width - 40) / n
    parts = [f'<svg class="hist" viewBox="0 0 {width} {height + 30}" role="img" '
             f'aria-label="label histogram, source vs pseudo">']  # fmt: skip
    for i in range(n):
        for j, (origin, cls) in enumerate((("source", "src"), ("pseudo", "pse"))):
            h = hist[origin][i] / top * height
            x = 30 + i * bar + j * bar / 2
            parts.append(f'<rect class="{cls}" x="{x:.1f}" y="{height - h:.1f}" width="{bar / 2:.1f}" '
                         f'height="{h:.1f}"><title>{origin}: {hist[origin][i]} in [{edges[i]}, '
                         f'{edges[i + 1]})</title></rect>')  # fmt: skip
    parts.append(f'<text x="30" y="{height + 20}">{edges[0]}</text>')
    parts.append(f'<text x="{width - 10}" y="{height + 20}" text-anchor="end">{edges[-1]}</text>')
    parts.append(f'<text x="0" y="12">{top}</text></svg>')
    return "".join(parts)


def _overview_html(s: dict[str, Any]) -> str:
    c, enc = s["counts"], s["encoder"]
    pruned = "not pruned" if c["pruned"] is None else str(c["pruned"])
    fallback = enc.get("encoder") == "colour-texture"
    enc_note = (
        " — offline fallback (colour and texture statistics), <strong>not the paper's encoder</strong>"
        if fallback
        else ""
    )
    params = "".join(f"<tr><td>{_esc(a)}</td><td>{_esc(b)}</td><td>{_esc(v)}</td></tr>"
                     for a, b, v in s["parameters"])  # fmt: skip
    notes = "".join(f"<li>{_esc(n)}</li>" for n in s["notes"])
    return f"""
<section id="overview" class="tab">
<h2>Overview</h2>
<table class="counts"><tr><th>source rows</th><th>pseudo-labelled rows</th><th>pruned by DRCDown</th></tr>
<tr><td id="n-source">{c["source"]}</td><td id="n-pseudo">{c["pseudo"]}</td><td id="n-pruned">{pruned}</td></tr>
</table>
<p id="encoder">Features: encoder <code>{_esc(enc.get("encoder"))}</code>, weights
<code>{_esc(enc.get("weights", ""))}</code>{enc_note}.</p>
{f"<ul class='notes'>{notes}</ul>" if notes else ""}
<h3>Labels: source vs pseudo-labelled</h3>
<p>Label range [{s["label_range"][0]:g}, {s["label_range"][1]:g}], higher = better.
<span class="key src">source</span> <span class="key pse">pseudo</span></p>
{_svg_histogram(s["histogram"])}
<h3>Run parameters</h3>
<table class="params"><tr><th>stage</th><th>parameter</th><th>value</th></tr>{params}</table>
</section>"""


def _sanity_svg(t: str, curves: dict[str, list], flagged: set[str], lo: float, hi: float) -> str:
    w, h, pad = 220, 150, 24
    span = hi - lo or 1.0
    levels = sorted({p[0] for c in curves.values() for p in c}) or [1]
    lmin, lmax = levels[0], max(levels[-1], levels[0] + 1)

    def xy(level: int, value: float) -> str:
        x = pad + (level - lmin) / (lmax - lmin) * (w - 2 * pad)
        return f"{x:.1f},{h - pad - (value - lo) / span * (h - 2 * pad):.1f}"

    lines = []
    for ref, pts in sorted(curves.items()):
        cls = "bad" if ref in flagged else "ok"
        path = " ".join(xy(a, b) for a, b in pts if b is not None)
        lines.append(f'<polyline class="{cls}" points="{path}"><title>{_esc(ref)}</title></polyline>')
    ticks = "".join(f'<text x="{xy(v, lo).split(",")[0]}" y="{h - 6}">{v}</text>' for v in levels)
    return (f'<figure class="sanity-plot"><svg viewBox="0 0 {w} {h}" role="img" aria-label="type {t}">'
            f'{"".join(lines)}{ticks}</svg><figcaption>type {_esc(t)}</figcaption></figure>')  # fmt: skip


def _sanity_html(s: dict[str, Any]) -> str:
    lo, hi = s["label_range"]
    flagged = s["sanity"]["flagged"]
    by_type: dict[str, set[str]] = {}
    for ref, t, _ in flagged:
        by_type.setdefault(str(t), set()).add(ref)
    plots = "".join(
        _sanity_svg(t, c, by_type.get(t, set()), lo, hi)
        for t, c in sorted(s["sanity"]["curves"].items(), key=lambda kv: int(kv[0]))
    )
    rows = "".join(
        f"<tr><td>{_esc(ref)}</td><td>{t}</td><td>"
        + "; ".join(f"level {a}&rarr;{b}: +{d}" for a, b, d in rises)
        + "</td></tr>"
        for ref, t, rises in flagged
    )
    pairs = sum(len(c) for c in s["sanity"]["curves"].values())
    return f"""
<section id="sanity" class="tab" hidden>
<h2>Label sanity</h2>
<p>Pseudo-label against distortion level, one line per new reference and type. A higher level is a
stronger distortion, so a label should not get better as the level rises.</p>
<p id="flag-count"><strong>{len(flagged)}</strong> of {pairs} (reference, type) pairs get a better label at
a higher level (shown in red).</p>
<div class="sanity-grid">{plots}</div>
<table id="flagged" class="flagged"><tr><th>reference</th><th>type</th><th>rises</th></tr>{rows}</table>
</section>"""


def render_index(s: dict[str, Any]) -> str:
    """index.html: overview and label sanity as static HTML; the other sections are drawn by report.js."""
    tabs = [("overview", "Overview"), ("selection", "Selection"), ("new", "New images"),
            ("provenance", "Provenance"), ("sanity", "Label sanity")]  # fmt: skip
    if s["clusters"] is not None:
        tabs.append(("clusters", "DRCDown clusters"))
    nav = "".join(f'<a href="#{k}" data-tab="{k}">{_esc(v)}</a>' for k, v in tabs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'self' file:">
<title>{_esc(s["name"])} — reshape report</title>
<link rel="stylesheet" href="report.css"></head>
<body>
<header><h1>{_esc(s["name"])}</h1><p>reshape {_esc(s["reshape_version"])} · published {_esc(s["created"])}</p>
<nav>{nav}</nav></header>
<main>
{_overview_html(s)}
<section id="selection" class="tab" hidden><h2>Selection (DDCUp)</h2><div id="selection-body"></div></section>
<section id="new" class="tab" hidden><h2>New images</h2><div id="new-body"></div></section>
<section id="provenance" class="tab" hidden><h2>Provenance of the pseudo-labels</h2>
<div id="provenance-body"></div></section>
{_sanity_html(s)}
<section id="clusters" class="tab" hidden><h2>DRCDown clusters</h2><div id="clusters-body"></div></section>
</main>
<script src="data/summary.js"></script>
<script src="report.js"></script>
</body></html>
"""


def _json(value: Any) -> bytes:
    """Compact JSON that is also safe inside a script (no "</" can close it)."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
    return text.replace("</", "<\\/").encode()


# ----------------------------------------------------------------------------------------------- plan
@dataclass
class ReportPlan:
    """Every file of the report: text/bytes ready, thumbnails as (published image, its sha256)."""

    files: dict[str, bytes] = field(default_factory=dict)
    thumbs: dict[str, tuple[str, str]] = field(default_factory=dict)

    def names(self) -> list[str]:
        return sorted([*self.files, *self.thumbs, RECORD])


def plan_files(pub: Published, diagnose_encoder: str | None = None) -> ReportPlan:
    """Read the folder and decide every file of the report (no thumbnail is made yet); with
    ``diagnose_encoder``, a "Clustered features" tab from reshape.diagnose too."""
    from reshape.fileio import sha256_file

    summary, rows, wanted = report_model(pub)
    plan = ReportPlan()
    plan.files["index.html"] = render_index(summary).encode()
    page_data = {k: v for k, v in summary.items() if k != "sanity"}  # sanity is drawn into index.html
    plan.files["data/summary.js"] = b"window.RESHAPE_SUMMARY = " + _json(page_data) + b";\n"
    for i in range(summary["chunks"]):
        chunk = rows[i * CHUNK_ROWS : (i + 1) * CHUNK_ROWS]
        plan.files[f"data/rows-{i:04d}.js"] = b"window.reshapeRows(%d, " % i + _json(chunk) + b");\n"
    assets = resources.files("reshape").joinpath("report_assets")
    for name in ASSETS:
        plan.files[name] = assets.joinpath(name).read_bytes()
    for thumb, image in sorted(wanted.items()):
        digest = pub.digests.get(image) or sha256_file(pub.root / image)
        plan.thumbs[thumb] = (image, digest)
    if diagnose_encoder is not None:
        from reshape.diagnose.report_section import add_section

        add_section(plan.files, pub.root, diagnose_encoder)
    return plan


# ----------------------------------------------------------------------------------------------- output
@dataclass
class ReportRecord:
    own: set[str]
    thumbs: dict[str, str]  # thumbnail -> sha256 of its image, for thumbnails made with these settings
    present: bool
    digests: dict[str, str] = field(default_factory=dict)  # own file -> sha256 of the bytes written


def read_record(out: Path) -> ReportRecord:
    """What an earlier report wrote in ``out`` (its report.json); an unreadable record owns nothing."""
    path = out / RECORD
    if not is_regular(path):  # a FIFO there is never opened (check_output refuses it in one line)
        return ReportRecord(set(), {}, False)
    try:
        data = json.loads(read_regular_bytes(path).decode("utf-8"))
    except (OSError, ValueError):
        return ReportRecord(set(), {}, False)
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        return ReportRecord(set(), {}, False)
    from reshape.fileio import check_relative

    own = set()
    if not all(
        isinstance(data.get(k, {}), kind)
        for k, kind in (("files", list), ("thumbs", dict), ("digests", dict))
    ):
        return ReportRecord(set(), {}, False)
    for name in data.get("files", []):
        with contextlib.suppress(BadInputError):
            own.add(check_relative(str(name)))
    same = data.get("thumb_side") == THUMB_SIDE and data.get("thumb_quality") == THUMB_QUALITY
    thumbs = {str(k): str(v) for k, v in data.get("thumbs", {}).items()} if same else {}
    digests = {str(k): str(v) for k, v in data.get("digests", {}).items() if k in own}
    return ReportRecord(own | {RECORD}, thumbs, True, digests)


def owned_record(out: Path, listed: Mapping[str, str] = _NOTHING_LISTED) -> ReportRecord:
    """The report's record in ``out``; without one, the files a publish listed there (``listed``: name
    relative to ``out`` -> sha256, a published dataset's SHA256SUMS lines under report/) count as its own."""
    record = read_record(out)
    if not record.present and listed:
        return ReportRecord(set(listed) | {RECORD}, {}, True, dict(listed))
    return record


def listed_in_dataset(dataset: Path, out: Path) -> dict[str, str]:
    """Files under ``out`` that the dataset's SHA256SUMS lists (publish wrote them), relative to ``out``,
    with their recorded sha256."""
    try:
        prefix = out.resolve().relative_to(dataset.resolve()).as_posix() + "/"
    except ValueError:
        return {}
    return {k[len(prefix) :]: d for k, d in read_sha256sums(dataset / SUMS).items() if k.startswith(prefix)}


def check_output(out: Path, names: list[str], record: ReportRecord, *, overwrite: bool) -> None:
    """Refuse, before any work, a folder or foreign file where the report writes, a non-empty folder that
    is not a report (unless ``overwrite``: then the report writes beside its files), or a path that leads
    out of ``out`` through a symlink."""
    from reshape.outputs import check_entries, refuse_foreign

    if out.exists() and not out.is_dir():
        raise BadInputError(f"{out}: exists and is not a folder")
    if not out.exists():
        return
    if not record.present and any(out.iterdir()) and not overwrite:
        raise BadInputError(
            f"{out}: folder is not empty and holds no reshape report; refusing to write into it "
            "(pass --overwrite to write beside its files)"
        )
    check_entries(out, names, what="report")  # no link or special file written through or replaced
    files, folders, _ = _listing(out)
    for rel in names:
        if rel in folders:
            raise BadInputError(f"{out / rel}: is a folder where the report writes a file; refusing")
    refuse_foreign([n for n in names if n in files and n not in record.own], out, overwrite=overwrite)


def _listing(out: Path) -> tuple[set[str], set[str], set[str]]:
    """(files and other non-folders, folders, symlinks) under ``out``, relative, in one walk."""
    files, folders, links = set(), set(), set()
    for top, dirs, names in os.walk(out):
        rel_top = Path(top).relative_to(out)
        for d in dirs:
            rel = (rel_top / d).as_posix()
            (links if (Path(top) / d).is_symlink() else folders).add(rel)
        for n in names:
            rel = (rel_top / n).as_posix()
            files.add(rel)
            if (Path(top) / n).is_symlink():
                links.add(rel)
    return files | links, folders, links


def _write_record(
    out: Path, names: list[str], thumbs: dict[str, str], digests: Mapping[str, str] = _NOTHING_LISTED
) -> None:
    from reshape import __version__
    from reshape.fileio import atomic_write_text

    record = {
        "format": RECORD_FORMAT,
        "reshape_version": __version__,
        "thumb_side": THUMB_SIDE,
        "thumb_quality": THUMB_QUALITY,
        "files": sorted(names),
        "thumbs": dict(sorted(thumbs.items())),
        "digests": dict(sorted(digests.items())),
    }
    atomic_write_text(out / RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")


def check_thumbnail_source(path: Path) -> None:
    """Before a thumbnail is decoded: a regular, non-empty image whose header size is within the
    decompression-bomb limit (OpenCV would allocate whatever a header claims); one line naming it."""
    from PIL import Image, UnidentifiedImageError

    from reshape.errors import ResourceError
    from reshape.imageio import DEFAULT_MAX_PIXELS

    if not is_regular(path):
        raise BadInputError(f"{path}: is not a regular file; no thumbnail can be made")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path}: empty image file (0 bytes) in the dataset; no thumbnail can be made")
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError as exc:
        raise ResourceError(f"{path}: decompression bomb refused ({exc})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(
            f"{path}: not a readable image ({str(exc).splitlines()[0] if str(exc) else exc!r})"
        ) from None
    if w * h > DEFAULT_MAX_PIXELS:
        raise ResourceError(
            f"{path}: {w}x{h} = {w * h} pixels exceeds the limit of {DEFAULT_MAX_PIXELS} (decompression bomb?)"
        )


def safe_thumbnail(path: Path, side: int, quality: int) -> bytes:
    """:func:`reshape.report_data.thumbnail_jpeg` behind :func:`check_thumbnail_source`; an OpenCV fault on
    a corrupt file is one line naming it."""
    import cv2

    check_thumbnail_source(path)
    try:
        return thumbnail_jpeg(path, side, quality)
    except cv2.error as exc:
        raise BadInputError(f"{path}: not a decodable image ({str(exc).strip().splitlines()[-1]})") from None


def _make_thumbs(out: Path, root: Path, todo: list[tuple[str, str]], workers: int) -> dict[str, str]:
    """Thumbnails (JPEG, <= THUMB_SIDE px) of ``todo`` (thumbnail, published image), in threads: OpenCV
    releases the GIL while decoding, resizing and encoding (its own thread pool is set to one thread
    meanwhile, so the two do not oversubscribe the cores). Each thumbnail is independent, so the bytes do
    not depend on the worker count. One sync at the end makes them durable before the record is written.
    Returns the sha256 of each thumbnail written."""
    import cv2

    from reshape.fileio import atomic_write_bytes

    def one(item: tuple[str, str]) -> tuple[str, str]:
        thumb, image = item
        data = safe_thumbnail(root / image, THUMB_SIDE, THUMB_QUALITY)
        atomic_write_bytes(out / thumb, data, sync=False)  # one sync for all of them below
        return thumb, hashlib.sha256(data).hexdigest()

    for folder in sorted({(out / t).parent for t, _ in todo}):
        folder.mkdir(parents=True, exist_ok=True)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        if workers <= 1 or len(todo) < 8:
            written = dict(map(one, todo))
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                written = dict(pool.map(one, todo, chunksize=32))
    finally:
        cv2.setNumThreads(threads)
    if todo and hasattr(os, "sync"):
        os.sync()
    return written


def _remove_stale(
    out: Path, stale: set[str], digests: Mapping[str, str], guard: Callable[[Path], Path] = _keep_nothing
) -> int:
    """Delete files an earlier report wrote that this one does not, only while each still is what was
    recorded (reshape.fileio.remove_recorded: a regular file, reached without a link leading out of ``out``,
    holding the recorded bytes), then the folders that leaves empty."""
    from reshape.fileio import remove_recorded

    removed = 0
    for rel in sorted(stale):
        if is_regular(out / rel):
            guard(out / rel)
        removed += remove_recorded(out, rel, digests.get(rel))
        for parent in PurePosixPath(rel).parents:
            if str(parent) == "." or (out / parent).is_symlink():
                break
            with contextlib.suppress(OSError):
                (out / parent).rmdir()  # only when empty
    return removed


def _update_dataset_sums(dataset: Path, out: Path, digests: dict[str, str]) -> None:
    """Replace the report's lines in the dataset's SHA256SUMS (the report lives inside it)."""
    from reshape.fileio import atomic_write_text

    sums = read_sha256sums(dataset / SUMS)
    prefix = out.resolve().relative_to(dataset.resolve()).as_posix() + "/"
    sums = {k: v for k, v in sums.items() if not k.startswith(prefix)}
    sums.update({prefix + n: d for n, d in digests.items()})
    atomic_write_text(dataset / SUMS, sha256sums_text(sums))


@dataclass
class ReportResult:
    out: Path
    files: list[str]
    thumbs_made: int
    thumbs_reused: int
    removed: int
    seconds: float
    digests: dict[str, str] = field(default_factory=dict)  # every file written -> its sha256

    @property
    def index(self) -> Path:
        return self.out / "index.html"

    def summary_lines(self) -> list[str]:
        return [
            f"report: {self.index} ({len(self.files)} files; {self.thumbs_made} thumbnail(s) made, "
            f"{self.thumbs_reused} reused; {self.seconds:.1f} s)"
        ]


def report_edits(out: Path, names: list[str], record: ReportRecord) -> list[str]:
    """Files the report would replace whose bytes no longer match its record (edited by their user)."""
    from reshape.fileio import sha256_file

    edited = []
    for rel in sorted(set(names)):  # a stale file is deleted only while unedited: never replaced
        want = record.digests.get(rel)
        path = out / rel
        if want is not None and is_regular(path) and not path.is_symlink() and sha256_file(path) != want:
            edited.append(rel)
    return edited


def write_report(
    dataset: Path,
    out: Path,
    plan: ReportPlan,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    listed: Mapping[str, str] = _NOTHING_LISTED,
    guard: Callable[[Path], Path] = _keep_nothing,
) -> ReportResult:
    """Write ``plan`` into ``out`` (the caller holds the lock): the record first (naming every file it will
    write), then the files, the thumbnails not already made, the final record, and last the removal of
    files an earlier report wrote that this one does not. ``guard`` is called with each path before it is
    written or deleted (publish's transaction keeps the old file aside there)."""
    from reshape.fileio import atomic_write_bytes, remove_stale_temps, sha256_file

    start = time.perf_counter()
    names = plan.names()
    record = owned_record(out, listed)
    check_output(out, names, record, overwrite=overwrite)
    guard(out / RECORD)
    out.mkdir(parents=True, exist_ok=True)
    reuse = {}
    for t, (_, d) in plan.thumbs.items():
        if record.thumbs.get(t) == d and is_regular(out / t) and not (out / t).is_symlink():
            now = sha256_file(out / t)
            if record.digests.get(t) in (None, now):  # an edited thumbnail is made anew
                reuse[t] = now
    _write_record(out, sorted(set(names) | (record.own - {RECORD})), reuse, record.digests)
    for folder in {(out / n).parent for n in names if (out / n).parent.is_dir()}:
        remove_stale_temps(folder, names=[PurePosixPath(n).name for n in names])
    digests = {}
    for rel, data in sorted(plan.files.items()):
        atomic_write_bytes(guard(out / rel), data)
        digests[rel] = hashlib.sha256(data).hexdigest()
    todo = [(t, image) for t, (image, _) in sorted(plan.thumbs.items()) if t not in reuse]
    for thumb, _ in todo:
        guard(out / thumb)
    digests |= _make_thumbs(out, dataset, todo, workers or default_workers())
    digests |= reuse  # as they are on disk: SHA256SUMS lists these
    thumbs_made = {t: d for t, (_, d) in plan.thumbs.items()}
    _write_record(out, names, thumbs_made, digests)
    removed = _remove_stale(out, record.own - set(names), record.digests, guard)
    digests[RECORD] = sha256_file(out / RECORD)
    seconds = time.perf_counter() - start
    return ReportResult(out, names, len(todo), len(reuse), removed, seconds, digests)


def _published_state(dataset: Path) -> list[tuple[int, int] | None]:
    """(size, mtime) of the files a publish rewrites last (its record and its card), to notice a publish
    that completed in the meantime."""
    state = []
    for name in (SUMS, DATASET_JSON):
        try:
            st = (dataset / name).stat()
            state.append((st.st_size, st.st_mtime_ns))
        except OSError:
            state.append(None)
    return state


def default_workers() -> int:
    """Thumbnail threads: two per usable core (decoding waits on the disk too), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, 2 * cores))


def default_out(dataset: Path) -> Path:
    return dataset / REPORT_DIR


def _home_dataset(dataset: Path, target: Path) -> Path | None:
    """The published dataset the report is written into (its lock is taken, its SHA256SUMS updated): the
    one ``target`` lies in, or ``dataset`` for its default ``DATASET/report``; None for a folder elsewhere."""
    from reshape.dataset_lock import enclosing_dataset

    if target.resolve() == default_out(dataset).resolve():
        return dataset
    return enclosing_dataset(target.resolve())


def run(
    dataset: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    overwrite: bool = False,
    wait: bool = False,
    workers: int | None = None,
    diagnose_encoder: str | None = None,
) -> ReportResult:
    """`reshape report DATASET [--out DIR]`: (re)build the report of a published folder from it alone.

    Written into a published dataset (the default ``DATASET/report``, or ``--out`` inside another one)
    that dataset's lock is held exclusively and its SHA256SUMS updated; the dataset read is held shared
    (reshape.dataset_lock), so a publish is never read half-way."""
    from reshape.dataset_lock import dataset_locks
    from reshape.outputs import check_inputs_not_outputs, check_writable, created_folders

    dataset = Path(dataset)
    if not dataset.is_dir():
        raise BadInputError(f"{dataset}: not a folder (expected a dataset written by `reshape publish`)")
    target = Path(out) if out is not None else default_out(dataset)
    home = _home_dataset(dataset, target)
    if home is not None and target.resolve() == home.resolve():
        raise BadInputError(
            f"{target}: is a published dataset; give a folder for the report (e.g. {target / REPORT_DIR})"
        )
    if home is None or home.resolve() != dataset.resolve():
        check_inputs_not_outputs([dataset], folder_outputs=[target])

    def prepare() -> tuple[ReportPlan, dict[str, str]]:
        plan = plan_files(read_published(dataset), diagnose_encoder)
        listed = listed_in_dataset(home, target) if home is not None else {}
        record = owned_record(target, listed)
        check_output(target, plan.names(), record, overwrite=overwrite)
        edited = report_edits(target, plan.names(), record)
        if edited and not overwrite:
            from reshape.publish_txn import shown_names

            raise BadInputError(
                f"{target}: {len(edited)} report file(s) edited since they were written would be replaced "
                f"({shown_names(edited)}); refusing (pass --overwrite to replace them)"
            )
        return plan, listed

    read_as = _published_state(dataset)
    try:
        prepared: tuple[ReportPlan, dict[str, str]] | None = prepare()  # checks before taking the locks
    except BadInputError:
        prepared = None  # perhaps read half-way through a publish: read again under the lock
    check_writable(target)
    locks = {"exclusive": [home if home is not None else target], "shared": [dataset]}
    with created_folders(target), dataset_locks(**locks, wait=wait):
        if prepared is None or _published_state(dataset) != read_as:  # a publish finished meanwhile
            prepared = prepare()
        plan, listed = prepared
        result = write_report(dataset, target, plan, overwrite=overwrite, workers=workers, listed=listed)
        if home is not None and (home / SUMS).is_file():
            _update_dataset_sums(home, target, result.digests)
    return result
