"""`reshape label`: kNN softmax pseudo-labels for the distorted new references (SynDR-IQA, Algorithm 2).

For every new reference, its k nearest training references by cosine distance are found; those farther than
``margin`` beyond the nearest one are dropped; the rest are softmax-weighted by distance. The pseudo-label of
a new distorted image of type t and level l is the weighted mean of the kept neighbours' labels for (t, l),
and its ``var`` is the weighted variance of those labels around that mean, ``sum_i w_i (y_i - mean)^2``
(a spread between neighbours, not a rating variance as in KADID's own column).

Layers: :func:`neighbour_weights` / :func:`weights_from_distances` and :func:`pseudo_labels` are pure numpy
cores; :func:`run` (a :class:`LabelConfig`) reads and writes the artifacts; ``cli/label_cmd.py`` is the click command.
"""

from __future__ import annotations

import logging
import math
import os
import posixpath
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from reshape.artifacts import (
    read_artifact_metadata,
    read_csv,
    read_features,
    read_parquet,
    sidecar_path,
    write_csv,
)
from reshape.errors import BadInputError
from reshape.fileio import check_relative, list_cell, remove_stale_temps, resolves_inside
from reshape.outputs import (
    check_file_output,
    check_inputs_not_outputs,
    check_writable,
    created_folders,
    locked_outputs,
)
from reshape.presets import PRESETS
from reshape.sources import (
    SourceTable,
    clean_relative,
    match_names,
    read_source_labels,
    scale_to_0_10,
)

log = logging.getLogger("reshape.label")

WEIGHTINGS = ("closer", "official")
SCALES = ("source", "0-10")


class Neighbours(NamedTuple):
    """Kept neighbours of one new reference, nearest first."""

    indices: np.ndarray  # int64 rows of the training set (or positions in a stored neighbour list)
    weights: np.ndarray  # float64, sums to 1
    distances: np.ndarray  # float64 cosine distances


# ----------------------------------------------------------------------------------------------- core
def _check_params(k: int, margin: float, temperature: float, weighting: str) -> None:
    if k < 1:
        raise BadInputError(f"k must be at least 1 (got {k})")
    if not margin >= 0:
        raise BadInputError(f"margin must be >= 0 (got {margin})")
    if not temperature > 0:
        raise BadInputError(f"temperature must be > 0 (got {temperature})")
    if weighting not in WEIGHTINGS:
        raise BadInputError(f"weighting must be one of {', '.join(WEIGHTINGS)} (got {weighting!r})")


def softmax_weights(
    distances: np.ndarray, *, temperature: float = 1.0, weighting: str = "closer"
) -> np.ndarray:
    """Softmax weights over a neighbour set's distances.

    ``closer``: softmax(-d / T), so a nearer neighbour weighs more. ``official``: softmax(+d / T), which is
    what the published SynDR-IQA code computes (at T = 1); it gives the *farther* neighbour the larger weight.
    Computed element by element with ``math.exp`` and an exactly rounded sum (``math.fsum``), so the weights
    depend only on these distances: not on numpy's SIMD exp, the CPU or how rows were grouped.
    """
    d = np.asarray(distances, dtype=np.float64)
    sign = -1.0 if weighting == "closer" else 1.0
    z = sign * d / temperature
    top = float(z.max())
    e = np.array([math.exp(float(v) - top) for v in z], dtype=np.float64)
    return e / math.fsum(e)


def weights_from_distances(
    distances: np.ndarray,
    *,
    margin: float = 0.05,
    temperature: float = 1.0,
    weighting: str = "closer",
) -> Neighbours:
    """Margin filter and weights for one ascending list of neighbour distances (e.g. from a selection row).

    Keeps the neighbours whose distance is within ``margin`` of the nearest (``d - d[0] <= margin``; the
    nearest is always kept). Returned indices are positions in ``distances``.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise ValueError("need a non-empty 1-D array of distances")
    if np.any(np.diff(d) < 0):
        raise ValueError("neighbour distances must be sorted ascending")
    kept = int(np.count_nonzero(d - d[0] <= margin))
    d = d[:kept]
    return Neighbours(
        np.arange(kept, dtype=np.int64), softmax_weights(d, temperature=temperature, weighting=weighting), d
    )


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64; each row's norm is its own pairwise sum (row-local)."""
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.sqrt(np.sum(x64 * x64, axis=1))
    if np.any(norms == 0):
        raise BadInputError("an embedding is all zeros; cosine distance is undefined for it")
    return x64 / norms[:, None]


def row_distances(a_unit: np.ndarray, b_unit: np.ndarray) -> np.ndarray:
    """Cosine distances of ONE unit row ``a_unit`` (d,) to every unit row of ``b_unit`` (n, d), in [0, 2].

    ``1 - sum(a * b)`` with float64 products and numpy's pairwise sum along the feature axis: every
    distance is computed by the same routine on the same operands whatever rows are processed with it
    (a BLAS product's summation order depends on the matrix shape, i.e. on chunking and threads).
    """
    return np.clip(1.0 - np.sum(a_unit[None, :] * b_unit, axis=1), 0.0, 2.0)


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine distance 1 - cos(a_i, b_j) in float64, clipped to [0, 2], one :func:`row_distances` per row."""
    a_unit, b_unit = unit_rows(a), unit_rows(b)
    out = np.empty((len(a_unit), len(b_unit)), dtype=np.float64)
    for i, row in enumerate(a_unit):
        out[i] = row_distances(row, b_unit)
    return out


def neighbour_weights(
    train_features: np.ndarray,
    new_features: np.ndarray,
    *,
    k: int = 5,
    margin: float = 0.05,
    temperature: float = 1.0,
    weighting: str = "closer",
    exclude: np.ndarray | list[int] | None = None,
    chunk: int = 2048,
    progress: bool = False,
) -> list[Neighbours]:
    """Kept neighbours and their weights for each row of ``new_features`` among ``train_features``.

    The k nearest training rows by cosine distance (ties broken by lower row index, so the result does not
    depend on chunking), minus rows listed in ``exclude`` (never neighbours), then the margin filter and the
    softmax of :func:`weights_from_distances`. ``indices`` are rows of ``train_features``.
    """
    _check_params(k, margin, temperature, weighting)
    train = np.asarray(train_features)
    new = np.asarray(new_features)
    if train.ndim != 2 or new.ndim != 2 or train.shape[1] != new.shape[1]:
        raise BadInputError(f"embedding shapes do not match: training {train.shape}, new {new.shape}")
    allowed = np.ones(len(train), dtype=bool)
    if exclude is not None and len(exclude):
        allowed[np.asarray(exclude, dtype=np.int64)] = False
    pool = np.flatnonzero(allowed)
    if pool.size == 0:
        raise BadInputError("every training reference is excluded; no neighbours are left")
    kk = min(k, pool.size)
    out: list[Neighbours] = []
    train_unit = unit_rows(train[pool])
    starts = range(0, len(new), chunk)
    for start in tqdm(starts, desc="neighbours", unit="chunk", disable=not progress):
        for unit in unit_rows(new[start : start + chunk]):
            row = row_distances(unit, train_unit)
            order = np.lexsort((pool, row))[:kk]
            kept = weights_from_distances(
                row[order], margin=margin, temperature=temperature, weighting=weighting
            )
            out.append(Neighbours(pool[order][kept.indices], kept.weights, kept.distances))
    return out


def pseudo_labels(
    neighbour_refs: np.ndarray,
    weights: np.ndarray,
    label_cube: np.ndarray,
    dist_type: np.ndarray,
    dist_level: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted mean and variance of the neighbours' labels for each image's (type, level).

    ``neighbour_refs``/``weights``: (n_images, m) source-reference indices and weights, padded with
    -1 / 0. ``label_cube[ref, type, level]`` holds the source labels (NaN where absent). Returns
    (mean, var, missing) where ``missing[i, j]`` is True when kept neighbour j has no label for image i's
    (type, level); rows with any missing neighbour get NaN mean and var.
    """
    refs = np.asarray(neighbour_refs, dtype=np.int64)
    w = np.asarray(weights, dtype=np.float64)
    t = np.asarray(dist_type, dtype=np.int64)[:, None]
    lv = np.asarray(dist_level, dtype=np.int64)[:, None]
    in_cube = (t < label_cube.shape[1]) & (lv < label_cube.shape[2]) & (t >= 0) & (lv >= 0)
    real = refs >= 0
    y = np.full(refs.shape, np.nan)
    ok = real & in_cube
    rr, cc = np.nonzero(ok)
    y[rr, cc] = label_cube[refs[rr, cc], t[rr, 0], lv[rr, 0]]
    missing = real & np.isnan(y)
    y_filled = np.where(real, y, 0.0)
    mean = np.sum(w * y_filled, axis=1)
    var = np.sum(w * np.where(real, (y_filled - mean[:, None]) ** 2, 0.0), axis=1)
    bad = missing.any(axis=1)
    mean[bad] = np.nan
    var[bad] = np.nan
    return mean, var, missing


# ----------------------------------------------------------------------------------------------- I/O helpers
def parse_exclude_refs(text: str | None) -> list[str]:
    """``'I01,I02'`` or ``'@file'`` (one name per line, ``#`` comments) -> list of names."""
    if not text:
        return []
    if text.startswith("@"):
        p = Path(text[1:])
        if not p.is_file():
            raise BadInputError(f"{p}: exclude-refs file not found")
        items = [line.split("#", 1)[0].strip() for line in p.read_text("utf-8").splitlines()]
    else:
        items = [part.strip() for part in text.split(",")]
    return [i for i in items if i]


def _join_prefix(prefix: str | None, rel: str, *, source: object) -> str:
    if not prefix:
        return rel
    return check_relative(posixpath.join(prefix.replace("\\", "/"), rel), source=source)


def _fmt_list(values: np.ndarray) -> str:
    return ";".join(f"{float(v):.6g}" for v in values)


@dataclass(frozen=True)
class RefNeighbours:
    """Kept neighbours of one new reference, as labelled training references, nearest first."""

    names: list[str]  # as named in the selection / training features
    source_refs: list[int]  # their positions in SourceTable.refs
    weights: np.ndarray
    distances: np.ndarray


def _label_cube(source: pd.DataFrame, n_refs: int, ref_index: np.ndarray) -> np.ndarray:
    max_t = int(source["dist_type"].max())
    max_l = int(source["dist_level"].max())
    cube = np.full((n_refs, max_t + 1, max_l + 1), np.nan)
    labels = source["dmos"].to_numpy(dtype=np.float64)
    cube[ref_index, source["dist_type"].to_numpy(), source["dist_level"].to_numpy()] = labels
    return cube


def _neighbours_from_embeddings(
    new_refs: list[str],
    train_features: Path,
    candidate_features: Path,
    source_refs: list[str],
    excluded_sources: set[int],
    *,
    k: int,
    margin: float,
    temperature: float,
    weighting: str,
    chunk: int,
    progress: bool,
) -> tuple[dict[str, RefNeighbours], dict[str, str]]:
    train = read_features(train_features)
    cand = read_features(candidate_features)
    train_src = match_names(train.images, source_refs, what="training reference", source=train_features)
    unmatched = np.flatnonzero(train_src < 0)
    if unmatched.size:
        i = int(unmatched[0])
        raise BadInputError(
            f"{train_features}, row {i}: training reference {train.images[i]!r} has no labels in the source "
            "table (match by path or unique file stem; list it in --exclude-refs if it is held out)"
        )
    exclude = [i for i, s in enumerate(train_src) if int(s) in excluded_sources]
    cand_idx = match_names(new_refs, cand.images, what="new reference", source=candidate_features)
    found = [r for r, i in zip(new_refs, cand_idx) if i >= 0]
    missing = {
        r: f"new reference {r!r} has no embedding in {candidate_features}"
        for r, i in zip(new_refs, cand_idx)
        if i < 0
    }
    sets = neighbour_weights(
        train.embeddings,
        cand.embeddings[cand_idx[cand_idx >= 0]],
        k=k,
        margin=margin,
        temperature=temperature,
        weighting=weighting,
        exclude=exclude,
        chunk=chunk,
        progress=progress,
    )
    result = {
        ref: RefNeighbours(
            names=[train.images[i] for i in nb.indices],
            source_refs=[int(train_src[i]) for i in nb.indices],
            weights=nb.weights,
            distances=nb.distances,
        )
        for ref, nb in zip(found, sets)
    }
    return result, missing


def _neighbours_from_selection(
    new_refs: list[str],
    selection: Path,
    source_refs: list[str],
    excluded_sources: set[int],
    *,
    k: int,
    margin: float,
    temperature: float,
    weighting: str,
) -> tuple[dict[str, RefNeighbours], dict[str, str]]:
    table, meta = read_parquet(selection, "selection")
    images = [str(v) for v in table.column("image").to_pylist()]
    stored_names = table.column("neighbour_images").to_pylist()
    stored_dists = table.column("neighbour_distances").to_pylist()
    n_train = int(meta.get("n_train", 0) or 0)
    sel_idx = match_names(new_refs, images, what="new reference", source=selection)
    all_names = sorted({n for row in stored_names for n in row})
    name_src = dict(
        zip(all_names, match_names(all_names, source_refs, what="training reference", source=selection))
    )
    result: dict[str, RefNeighbours] = {}
    missing: dict[str, str] = {}
    for ref, row in zip(new_refs, sel_idx):
        if row < 0:
            missing[ref] = f"new reference {ref!r} has no row in {selection}"
            continue
        names = list(stored_names[row])
        dists = np.asarray(stored_dists[row], dtype=np.float64)
        if len(names) != len(dists) or not names:
            raise BadInputError(
                f"{selection}, row {row}: neighbour_images/neighbour_distances are empty or differ in length"
            )
        order = np.argsort(dists, kind="stable")
        names = [names[i] for i in order]
        dists = dists[order]
        src = []
        for n in names:
            s = int(name_src[n])
            if s < 0:
                raise BadInputError(
                    f"{selection}, row {row}: neighbour {n!r} of {ref!r} has no labels in the source table "
                    "(match by path or unique file stem)"
                )
            src.append(s)
        keep = np.array([s not in excluded_sources for s in src], dtype=bool)
        if not keep.any():
            raise BadInputError(
                f"{selection}, row {row}: every stored neighbour of {ref!r} is excluded; "
                "recompute with --train-features and --candidate-features"
            )
        rem_d = dists[keep]
        complete_list = n_train > 0 and len(names) >= n_train
        # The stored list is the top of the full ranking: a ref beyond it is at least as far as its last
        # entry, so the result is exact if k entries remain or nothing beyond could pass the margin filter.
        if not (len(rem_d) >= k or complete_list or dists[-1] - rem_d[0] > margin):
            raise BadInputError(
                f"{selection}, row {row}: stores {len(names)} neighbours of {ref!r}, too few for k={k} after "
                "exclusions; give --train-features and --candidate-features to recompute them"
            )
        rem_names = [n for n, kk in zip(names, keep) if kk][:k]
        rem_src = [s for s, kk in zip(src, keep) if kk][:k]
        nb = weights_from_distances(rem_d[:k], margin=margin, temperature=temperature, weighting=weighting)
        kept = len(nb.indices)
        result[ref] = RefNeighbours(rem_names[:kept], rem_src[:kept], nb.weights, nb.distances)
    return result, missing


def merged_train_table(
    source: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    preset: str | None = None,
    image_prefix: str | None = None,
    source_prefix: str | None = None,
) -> pd.DataFrame:
    """Source rows then pseudo rows in the 'train' layout, ``origin`` = source|pseudo.

    Source rows are those of the preset's types at every level (as the official training loader takes
    them) or, without a preset, those whose type and level both occur among the pseudo-labelled images.
    """
    if preset is not None:
        keep = source["dist_type"].isin(PRESETS[preset])
    else:
        keep = source["dist_type"].isin(set(labels["dist_type"])) & source["dist_level"].isin(
            set(labels["dist_level"])
        )
    kept = source[keep]
    columns = ["dist_img", "ref_img", "dmos", "var", "dist_type", "dist_level"]
    from_source = kept[columns].assign(origin="source")
    pseudo = labels[columns].assign(origin="pseudo")
    for col in ("dist_img", "ref_img"):
        from_source[col] = [
            _join_prefix(source_prefix, p, source="--source-prefix") for p in from_source[col]
        ]
    pseudo["dist_img"] = [_join_prefix(image_prefix, p, source="--image-prefix") for p in pseudo["dist_img"]]
    return pd.concat([from_source, pseudo], ignore_index=True)


# ----------------------------------------------------------------------------------------------- stage API
@dataclass
class LabelConfig:
    """Options of `reshape label`; field names are the CLI option names with '-' -> '_'."""

    source_labels: str | Path
    distorted: str | Path
    out: str | Path
    selection: str | Path | None = None
    train_features: str | Path | None = None
    candidate_features: str | Path | None = None
    k: int = 5
    margin: float = 0.05
    temperature: float = 1.0
    weighting: str = "closer"
    exclude_refs: list[str] | str | None = None  # names, or the CLI text 'I01,I02' / '@file'
    scale: str = "source"
    source_format: str = "auto"
    skip_missing: bool = False
    pyiqa_meta: str | Path | None = None
    merge_source: str | Path | None = None
    preset: str | None = None
    image_prefix: str | None = None
    source_prefix: str | None = None
    source_root: str | Path | None = None  # default: the source table's folder
    images_root: str | Path | None = None  # default: the manifest's recorded out_dir, else its folder
    chunk_size: int = 2048  # new references per distance block: memory and progress only
    overwrite: bool = False
    wait: bool = False
    fingerprint: str | None = None
    progress: bool = False


@dataclass
class LabelResult:
    labels: pd.DataFrame
    out: Path
    skipped: list[str] = field(default_factory=list)
    train: pd.DataFrame | None = None
    merge_source: Path | None = None
    pyiqa_meta: pd.DataFrame | None = None
    pyiqa_meta_path: Path | None = None
    pyiqa_root: Path | None = None  # None when the user's --image-prefix/--source-prefix define it
    seconds: float = 0.0

    def summary_lines(self) -> list[str]:
        lines = [f"reshape label: {len(self.labels)} pseudo-labels -> {self.out} ({self.seconds:.1f} s)"]
        if self.train is not None:
            n_source = int((self.train["origin"] == "source").sum())
            lines.append(
                f"  train table: {n_source} source + {len(self.train) - n_source} pseudo rows "
                f"-> {self.merge_source}"
            )
        if self.pyiqa_meta is not None:
            root = self.pyiqa_root or "the dataset root that --image-prefix/--source-prefix assume"
            lines.append(
                f"  pyiqa meta: {len(self.pyiqa_meta)} rows -> {self.pyiqa_meta_path} "
                f"(paths relative to {root})"
            )
        if self.skipped:
            lines.append(f"  skipped: {len(self.skipped)} (listed on stderr and in the sidecar)")
        return lines


@dataclass
class _Source:
    """The source label table, scaled, with its labels as a (ref, type, level) cube."""

    table: SourceTable
    frame: pd.DataFrame
    cube: np.ndarray
    low: float
    high: float


def _validate(config: LabelConfig) -> list[str]:
    """Option checks that need no file; returns the excluded reference names."""
    _check_params(config.k, config.margin, config.temperature, config.weighting)
    if config.scale not in SCALES:
        raise BadInputError(f"scale must be one of {', '.join(SCALES)} (got {config.scale!r})")
    if config.preset is not None and config.preset not in PRESETS:
        raise BadInputError(f"unknown preset {config.preset!r}; known: {', '.join(PRESETS)}")
    if config.chunk_size < 1:
        raise BadInputError(f"--chunk-size {config.chunk_size}: must be at least 1")
    if _recompute(config) and (config.train_features is None or config.candidate_features is None):
        raise BadInputError("--train-features and --candidate-features must be given together")
    if not _recompute(config) and config.selection is None:
        raise BadInputError("give --selection, or --train-features and --candidate-features")
    if config.pyiqa_meta is not None:
        _prefixes_given(config, has_source=config.merge_source is not None)
    if isinstance(config.exclude_refs, str):
        return parse_exclude_refs(config.exclude_refs)
    return list(config.exclude_refs or [])


def _recompute(config: LabelConfig) -> bool:
    return config.train_features is not None or config.candidate_features is not None


def _check_outputs(config: LabelConfig) -> list[Path]:
    """Output safety before any work: outputs distinct, never an input, no foreign or other-format file
    replaced (without --overwrite), and every output folder writable."""
    named = [
        ("--out", config.out),
        ("--merge-source", config.merge_source),
        ("--pyiqa-meta", config.pyiqa_meta),
    ]
    outputs = [(option, Path(p)) for option, p in named if p is not None]
    seen: dict[str, str] = {}
    for option, path in outputs:
        key = os.path.realpath(path)
        if key in seen:
            raise BadInputError(
                f"{path}: {option} is the same file as {seen[key]}; give each output its own path"
            )
        seen[key] = option
    inputs = [config.source_labels, config.distorted, config.selection, config.train_features,
              config.candidate_features]  # fmt: skip
    if isinstance(config.exclude_refs, str) and config.exclude_refs.startswith("@"):
        inputs.append(config.exclude_refs[1:])
    files = [p for _, p in outputs] + [sidecar_path(p) for _, p in outputs]
    check_inputs_not_outputs(inputs, file_outputs=files)
    kinds = {"--out": "labels", "--merge-source": "train@label", "--pyiqa-meta": "pyiqa_meta"}
    for option, path in outputs:
        check_file_output(path, "csv", overwrite=config.overwrite, option=option, kinds=(kinds[option],))
        check_file_output(
            sidecar_path(path), "json", overwrite=config.overwrite, option=f"{option} sidecar",
            kinds=(kinds[option],),
        )  # fmt: skip
    # labels ~2x the manifest (neighbour lists), train.csv ~ source + manifest, the meta CSV less
    size = {key: Path(p).stat().st_size if Path(p).is_file() else 0 for key, p in
            (("manifest", config.distorted), ("source", config.source_labels))}  # fmt: skip
    need = 4 * size["manifest"] + 2 * size["source"]
    for _, path in outputs:
        check_writable(path, need_bytes=need)
    return [p for _, p in outputs]


def _load_source(config: LabelConfig) -> _Source:
    src = read_source_labels(
        config.source_labels, source_format=config.source_format, skip_missing=config.skip_missing
    )
    frame = src.frame.copy()
    low, high = src.label_range()
    if config.scale == "0-10":
        frame["dmos"] = scale_to_0_10(frame["dmos"].to_numpy(), low, high)
        # a variance scales with the square of the linear factor
        frame["var"] = frame["var"] * (10.0 / (high - low)) ** 2
    ref_index = pd.Index(src.refs).get_indexer(frame["ref_img"])
    return _Source(src, frame, _label_cube(frame, len(src.refs), ref_index), low, high)


def _load_manifest(path: Path) -> pd.DataFrame:
    manifest = read_csv(path, "distortion_manifest")
    if manifest.empty:
        raise BadInputError(f"{path}: distortion manifest has no rows")
    for col in ("dist_img", "ref_img"):
        manifest[col] = [clean_relative(str(v), path, i + 2) for i, v in enumerate(manifest[col])]
    return manifest


def _excluded_sources(names: list[str], src: SourceTable) -> set[int]:
    if not names:
        return set()
    idx = match_names(names, src.refs, what="excluded reference", source="--exclude-refs")
    unknown = [n for n, i in zip(names, idx) if i < 0]
    if unknown:
        raise BadInputError(f"--exclude-refs: {unknown[0]!r} is not a reference of {src.path}")
    return {int(i) for i in idx}


def _neighbours(
    config: LabelConfig, manifest: pd.DataFrame, src: SourceTable, exclude: list[str]
) -> tuple[dict[str, RefNeighbours], list[str]]:
    """Kept neighbours of every new reference; references without any are an error or skipped."""
    new_refs = list(dict.fromkeys(manifest["ref_img"]))
    excluded = _excluded_sources(exclude, src)
    weighting = {"k": config.k, "margin": config.margin, "temperature": config.temperature,
                 "weighting": config.weighting}  # fmt: skip
    if _recompute(config):
        found, missing = _neighbours_from_embeddings(
            new_refs, Path(config.train_features), Path(config.candidate_features), src.refs, excluded,
            **weighting, chunk=config.chunk_size, progress=config.progress,
        )  # fmt: skip
    else:
        found, missing = _neighbours_from_selection(
            new_refs, Path(config.selection), src.refs, excluded, **weighting
        )
    manifest_path = Path(config.distorted)
    if missing and not config.skip_missing:
        ref = next(iter(missing))
        line = int(np.flatnonzero(manifest["ref_img"].to_numpy() == ref)[0]) + 2
        raise BadInputError(f"{manifest_path}, line {line}: {missing[ref]} (use --skip-missing to skip it)")
    skipped = []
    for ref, why in missing.items():
        n = int((manifest["ref_img"] == ref).sum())
        skipped.append(f"{manifest_path}: {n} image(s) of {why}")
    return found, skipped


def _label_images(
    config: LabelConfig, manifest: pd.DataFrame, found: dict[str, RefNeighbours], source: _Source
) -> tuple[pd.DataFrame, list[str]]:
    """Weighted labels of every manifest image whose reference has neighbours; returns (labels, skipped)."""
    manifest_path = Path(config.distorted)
    rows = manifest[manifest["ref_img"].isin(found.keys())].reset_index(drop=True)
    width = max((len(v.names) for v in found.values()), default=1)
    ref_pos = {r: i for i, r in enumerate(found)}
    pad_src = np.full((len(found), width), -1, dtype=np.int64)
    pad_w = np.zeros((len(found), width))
    for r, nb in found.items():
        pad_src[ref_pos[r], : len(nb.source_refs)] = nb.source_refs
        pad_w[ref_pos[r], : len(nb.source_refs)] = nb.weights
    which = np.array([ref_pos[r] for r in rows["ref_img"]], dtype=np.int64)
    mean, var, missing = pseudo_labels(
        pad_src[which], pad_w[which], source.cube, rows["dist_type"].to_numpy(), rows["dist_level"].to_numpy()
    )
    skipped = []
    for i in np.flatnonzero(np.isnan(mean)):
        neighbour = source.table.refs[pad_src[which[i], int(np.flatnonzero(missing[i])[0])]]
        why = (
            f"{rows['dist_img'].iloc[i]}: neighbour {neighbour!r} has no label for type "
            f"{rows['dist_type'].iloc[i]} level {rows['dist_level'].iloc[i]} in {source.table.path}"
        )
        if not config.skip_missing:
            line = int(np.flatnonzero(manifest["dist_img"].to_numpy() == rows["dist_img"].iloc[i])[0]) + 2
            raise BadInputError(f"{manifest_path}, line {line}: {why} (use --skip-missing to skip it)")
        skipped.append(f"{manifest_path}: {why}")
    good = np.isfinite(mean)
    if not good.any():
        raise BadInputError(f"{manifest_path}: no image could be labelled ({len(skipped)} skipped)")
    labels = pd.DataFrame(
        {
            "dist_img": rows["dist_img"],
            "ref_img": rows["ref_img"],
            "dmos": mean,
            "var": var,
            "dist_type": rows["dist_type"].astype(np.int64),
            "dist_level": rows["dist_level"].astype(np.int64),
            "neighbours": [list_cell(found[r].names) for r in rows["ref_img"]],  # any name round-trips
            "weights": [_fmt_list(found[r].weights) for r in rows["ref_img"]],
            "distances": [_fmt_list(found[r].distances) for r in rows["ref_img"]],
            "origin": "pseudo",
        }
    )[good].reset_index(drop=True)
    return labels, skipped


# ----------------------------------------------------------------------------------------------- pyiqa root
def images_root(config: LabelConfig) -> Path:
    """Folder the manifest's ``dist_img`` paths are relative to: ``images_root``, else the ``out_dir``
    that `reshape distort` recorded in the manifest's sidecar (if it still exists), else its folder."""
    if config.images_root is not None:
        return Path(config.images_root).resolve()
    recorded = read_artifact_metadata(config.distorted).get("out_dir")
    if isinstance(recorded, str) and "://" not in recorded and Path(recorded).is_dir():
        return Path(recorded).resolve()
    return Path(config.distorted).resolve().parent


def source_root(config: LabelConfig) -> Path:
    """Folder the source table's image paths are relative to: ``source_root``, else the table's folder."""
    if config.source_root is not None:
        return Path(config.source_root).resolve()
    return Path(config.source_labels).resolve().parent


def _prefixes_given(config: LabelConfig, has_source: bool) -> bool:
    """True when the user gave the meta CSV's prefixes; one alone (with source rows) is refused."""
    if config.image_prefix is None and (not has_source or config.source_prefix is None):
        return False
    if has_source and (config.image_prefix is None or config.source_prefix is None):
        raise BadInputError(
            f"{config.pyiqa_meta}: give both --image-prefix and --source-prefix ('.' for none), or "
            "neither to have them computed; with one alone the pseudo and source paths resolve under "
            "two different roots"
        )
    return True


def meta_prefixes(config: LabelConfig, has_source: bool) -> tuple[str | None, str | None, Path | None]:
    """(image prefix, source prefix, root) putting every path of the pyiqa meta CSV under ONE root.

    Given prefixes are used as they are (both are needed when source rows are written; the root is then
    the user's). Otherwise the root is the meta CSV's folder when it holds the distorted (and source)
    images, else their deepest common folder, and the prefixes are the image roots relative to it.
    """
    if _prefixes_given(config, has_source):
        return config.image_prefix, config.source_prefix, None
    roots = [images_root(config)] + ([source_root(config)] if has_source else [])
    meta_dir = Path(config.pyiqa_meta).resolve().parent
    if all(resolves_inside(meta_dir, r) for r in roots):
        root = meta_dir
    else:
        try:
            root = Path(os.path.commonpath([str(r) for r in roots]))
        except ValueError:
            raise BadInputError(
                f"{config.pyiqa_meta}: the distorted images ({roots[0]}) and the source images "
                f"({roots[-1]}) share no folder; pass --image-prefix and --source-prefix relative to one "
                "dataset root"
            ) from None

    def prefix(folder: Path) -> str | None:
        return None if folder == root else folder.relative_to(root).as_posix()

    return prefix(roots[0]), (prefix(roots[1]) if has_source else None), root


# ----------------------------------------------------------------------------------------------- writers
def _with_fingerprint(meta: dict[str, Any], fingerprint: str | None) -> dict[str, Any]:
    return meta if fingerprint is None else {**meta, "fingerprint": fingerprint}


def _write_labels(
    config: LabelConfig, source: _Source, labels: pd.DataFrame, skipped: list[str], exclude: list[str]
) -> None:
    options: dict[str, Any] = {
        "k": config.k,
        "margin": config.margin,
        "temperature": config.temperature,
        "weighting": config.weighting,
        "scale": config.scale,
        "source_min": source.low,
        "source_max": source.high,
        "source_labels": str(config.source_labels),
        "source_format": source.table.format,
        "distorted": str(config.distorted),
        "selection": None if config.selection is None else str(config.selection),
        "neighbours_from": "embeddings" if _recompute(config) else "selection",
        "exclude_refs": exclude,
        "skipped": skipped,
    }
    write_csv(
        config.out, labels, "labels", _with_fingerprint(options, config.fingerprint), float_format="%.8g"
    )


def _write_train(config: LabelConfig, source: _Source, labels: pd.DataFrame) -> pd.DataFrame:
    train = merged_train_table(
        source.frame, labels, preset=config.preset, image_prefix=config.image_prefix,
        source_prefix=config.source_prefix,
    )  # fmt: skip
    meta = {
        "stage": "label",  # train tables are written by label and prune: the stage makes it label's own
        "scale": config.scale,
        "preset": config.preset,
        "source_min": source.low,
        "source_max": source.high,
    }
    write_csv(
        config.merge_source, train, "train", _with_fingerprint(meta, config.fingerprint), float_format="%.8g"
    )
    return train


def _write_pyiqa_meta(
    config: LabelConfig, source: _Source, labels: pd.DataFrame
) -> tuple[pd.DataFrame, Path | None]:
    """pyiqa's general NR meta CSV (path, score): the train table's rows (or the pseudo rows alone), every
    path under the one root recorded in the sidecar (``root``)."""
    has_source = config.merge_source is not None
    image_prefix, source_prefix, root = meta_prefixes(config, has_source)
    table = (
        merged_train_table(
            source.frame, labels, preset=config.preset, image_prefix=image_prefix, source_prefix=source_prefix
        )
        if has_source
        else labels.assign(
            dist_img=[_join_prefix(image_prefix, p, source="--image-prefix") for p in labels["dist_img"]]
        )
    )
    frame = pd.DataFrame({"path": table["dist_img"].to_numpy(), "score": table["dmos"].to_numpy()})
    meta = {
        "scale": config.scale,
        "root": None if root is None else str(root),
        "image_prefix": image_prefix,
        "source_prefix": source_prefix,
    }
    write_csv(
        config.pyiqa_meta,
        frame,
        "pyiqa_meta",
        _with_fingerprint(meta, config.fingerprint),
        float_format="%.8g",
    )
    return frame, root


# ----------------------------------------------------------------------------------------------- stage
def run(config: LabelConfig) -> LabelResult:
    """Pseudo-label every image of a distortion manifest; write labels.csv (+ train.csv, meta_info.csv)."""
    start = time.perf_counter()
    exclude = _validate(config)
    outputs = _check_outputs(config)
    with (
        created_folders(*{p.parent for p in outputs}),
        locked_outputs(*outputs, wait=config.wait),
    ):
        for path in outputs:
            remove_stale_temps(path.parent, names=[path.name, sidecar_path(path).name])
        source = _load_source(config)
        manifest = _load_manifest(Path(config.distorted))
        found, skipped = _neighbours(config, manifest, source.table, exclude)
        labels, unlabelled = _label_images(config, manifest, found, source)
        skipped = [f"{source.table.path}, {d}" for d in source.table.dropped] + skipped + unlabelled
        _write_labels(config, source, labels, skipped, exclude)
        result = LabelResult(labels=labels, out=Path(config.out), skipped=skipped)
        if config.merge_source is not None:
            result.train, result.merge_source = (
                _write_train(config, source, labels),
                Path(config.merge_source),
            )
        if config.pyiqa_meta is not None:
            result.pyiqa_meta, result.pyiqa_root = _write_pyiqa_meta(config, source, labels)
            result.pyiqa_meta_path = Path(config.pyiqa_meta)
    if skipped:
        log.warning("skipped %d:\n  %s", len(skipped), "\n  ".join(skipped))
    result.seconds = time.perf_counter() - start
    return result


def run_label(**options: Any) -> LabelResult:
    """Keyword form of :func:`run` (``run_label(source_labels=..., distorted=..., out=..., ...)``)."""
    return run(LabelConfig(**options))
