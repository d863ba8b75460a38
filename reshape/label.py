"""`reshape label`: kNN softmax pseudo-labels for the distorted new references (SynDR-IQA, Algorithm 2).

For every new reference, its k nearest training references by cosine distance are found; those farther than
``margin`` beyond the nearest one are dropped; the rest are softmax-weighted by distance. The pseudo-label of
a new distorted image of type t and level l is the weighted mean of the kept neighbours' labels for (t, l),
and its ``var`` is the weighted variance of those labels around that mean, ``sum_i w_i (y_i - mean)^2``
(a spread between neighbours, not a rating variance as in KADID's own column).

Layers: :func:`neighbour_weights` / :func:`weights_from_distances` and :func:`pseudo_labels` are pure numpy
cores; :func:`run_label` reads and writes the artifacts; ``cli/label_cmd.py`` is the click command.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy.special import softmax
from tqdm import tqdm

from reshape.artifacts import read_csv, read_features, read_parquet, write_csv
from reshape.errors import BadInputError
from reshape.fileio import check_relative
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
    """
    d = np.asarray(distances, dtype=np.float64)
    sign = -1.0 if weighting == "closer" else 1.0
    return softmax(sign * d / temperature)


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


def cosine_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine distance 1 - cos(a_i, b_j) in float64, clipped to [0, 2]."""
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    a_norm = np.linalg.norm(a64, axis=1, keepdims=True)
    b_norm = np.linalg.norm(b64, axis=1, keepdims=True)
    if np.any(a_norm == 0) or np.any(b_norm == 0):
        raise BadInputError("an embedding is all zeros; cosine distance is undefined for it")
    return np.clip(1.0 - (a64 / a_norm) @ (b64 / b_norm).T, 0.0, 2.0)


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
    starts = range(0, len(new), chunk)
    for start in tqdm(starts, desc="neighbours", unit="chunk", disable=not progress):
        dist = cosine_distances(new[start : start + chunk], train[pool])
        for row in dist:
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


@dataclass
class LabelResult:
    labels: pd.DataFrame
    skipped: list[str] = field(default_factory=list)
    train: pd.DataFrame | None = None
    pyiqa_meta: pd.DataFrame | None = None


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


# ----------------------------------------------------------------------------------------------- stage
def run_label(
    *,
    source_labels: str | Path,
    distorted: str | Path,
    out: str | Path,
    selection: str | Path | None = None,
    train_features: str | Path | None = None,
    candidate_features: str | Path | None = None,
    k: int = 5,
    margin: float = 0.05,
    temperature: float = 1.0,
    weighting: str = "closer",
    exclude_refs: list[str] | None = None,
    scale: str = "source",
    source_format: str = "auto",
    skip_missing: bool = False,
    pyiqa_meta: str | Path | None = None,
    merge_source: str | Path | None = None,
    preset: str | None = None,
    image_prefix: str | None = None,
    source_prefix: str | None = None,
    fingerprint: str | None = None,
    progress: bool = False,
) -> LabelResult:
    """Pseudo-label every image of a distortion manifest and write labels.csv (+ train.csv, meta_info.csv)."""
    _check_params(k, margin, temperature, weighting)
    if scale not in SCALES:
        raise BadInputError(f"scale must be one of {', '.join(SCALES)} (got {scale!r})")
    if preset is not None and preset not in PRESETS:
        raise BadInputError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    recompute = train_features is not None or candidate_features is not None
    if recompute and (train_features is None or candidate_features is None):
        raise BadInputError("--train-features and --candidate-features must be given together")
    if not recompute and selection is None:
        raise BadInputError("give --selection, or --train-features and --candidate-features")

    src: SourceTable = read_source_labels(
        source_labels, source_format=source_format, skip_missing=skip_missing
    )
    skipped = [f"{src.path}, {d}" for d in src.dropped]
    source = src.frame.copy()
    low, high = src.label_range()
    if scale == "0-10":
        source["dmos"] = scale_to_0_10(source["dmos"].to_numpy(), low, high)
        # a variance scales with the square of the linear factor
        source["var"] = source["var"] * (10.0 / (high - low)) ** 2
    source_refs = src.refs
    ref_index = pd.Index(source_refs).get_indexer(source["ref_img"])
    cube = _label_cube(source, len(source_refs), ref_index)

    excluded_sources: set[int] = set()
    if exclude_refs:
        idx = match_names(exclude_refs, source_refs, what="excluded reference", source="--exclude-refs")
        unknown = [n for n, i in zip(exclude_refs, idx) if i < 0]
        if unknown:
            raise BadInputError(f"--exclude-refs: {unknown[0]!r} is not a reference of {src.path}")
        excluded_sources = {int(i) for i in idx}

    manifest_path = Path(distorted)
    manifest = read_csv(manifest_path, "distortion_manifest")
    if manifest.empty:
        raise BadInputError(f"{manifest_path}: distortion manifest has no rows")
    for col in ("dist_img", "ref_img"):
        manifest[col] = [clean_relative(str(v), manifest_path, i + 2) for i, v in enumerate(manifest[col])]
    new_refs = list(dict.fromkeys(manifest["ref_img"]))

    if recompute:
        nb_by_ref, missing_refs = _neighbours_from_embeddings(
            new_refs,
            Path(train_features),
            Path(candidate_features),
            source_refs,
            excluded_sources,
            k=k,
            margin=margin,
            temperature=temperature,
            weighting=weighting,
            progress=progress,
        )
    else:
        nb_by_ref, missing_refs = _neighbours_from_selection(
            new_refs,
            Path(selection),
            source_refs,
            excluded_sources,
            k=k,
            margin=margin,
            temperature=temperature,
            weighting=weighting,
        )
    if missing_refs and not skip_missing:
        ref = next(iter(missing_refs))
        line = int(np.flatnonzero(manifest["ref_img"].to_numpy() == ref)[0]) + 2
        raise BadInputError(
            f"{manifest_path}, line {line}: {missing_refs[ref]} (use --skip-missing to skip it)"
        )
    for ref, why in missing_refs.items():
        n = int((manifest["ref_img"] == ref).sum())
        skipped.append(f"{manifest_path}: {n} image(s) of {why}")

    rows = manifest[manifest["ref_img"].isin(nb_by_ref.keys())].reset_index(drop=True)
    width = max((len(v.names) for v in nb_by_ref.values()), default=1)
    ref_pos = {r: i for i, r in enumerate(nb_by_ref)}
    pad_src = np.full((len(nb_by_ref), width), -1, dtype=np.int64)
    pad_w = np.zeros((len(nb_by_ref), width))
    for r, nb in nb_by_ref.items():
        pad_src[ref_pos[r], : len(nb.source_refs)] = nb.source_refs
        pad_w[ref_pos[r], : len(nb.source_refs)] = nb.weights
    which = np.array([ref_pos[r] for r in rows["ref_img"]], dtype=np.int64)
    mean, var, missing = pseudo_labels(
        pad_src[which], pad_w[which], cube, rows["dist_type"].to_numpy(), rows["dist_level"].to_numpy()
    )
    bad_rows = np.flatnonzero(np.isnan(mean))
    for i in bad_rows:
        j = int(np.flatnonzero(missing[i])[0])
        neighbour = source_refs[pad_src[which[i], j]]
        why = (
            f"{rows['dist_img'].iloc[i]}: neighbour {neighbour!r} has no label for type "
            f"{rows['dist_type'].iloc[i]} level {rows['dist_level'].iloc[i]} in {src.path}"
        )
        if not skip_missing:
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
            "neighbours": [";".join(nb_by_ref[r].names) for r in rows["ref_img"]],
            "weights": [_fmt_list(nb_by_ref[r].weights) for r in rows["ref_img"]],
            "distances": [_fmt_list(nb_by_ref[r].distances) for r in rows["ref_img"]],
            "origin": "pseudo",
        }
    )[good].reset_index(drop=True)

    options: dict[str, Any] = {
        "k": k,
        "margin": margin,
        "temperature": temperature,
        "weighting": weighting,
        "scale": scale,
        "source_min": low,
        "source_max": high,
        "source_labels": str(source_labels),
        "source_format": src.format,
        "distorted": str(distorted),
        "selection": None if selection is None else str(selection),
        "neighbours_from": "embeddings" if recompute else "selection",
        "exclude_refs": list(exclude_refs or []),
        "skipped": skipped,
    }
    if fingerprint is not None:
        options["fingerprint"] = fingerprint
    write_csv(out, labels, "labels", options, float_format="%.8g")

    result = LabelResult(labels=labels, skipped=skipped)
    if merge_source is not None:
        train = merged_train_table(
            source, labels, preset=preset, image_prefix=image_prefix, source_prefix=source_prefix
        )
        train_meta = {"scale": scale, "preset": preset, "source_min": low, "source_max": high}
        if fingerprint is not None:
            train_meta["fingerprint"] = fingerprint
        write_csv(merge_source, train, "train", train_meta, float_format="%.8g")
        result.train = train
    if pyiqa_meta is not None:
        if result.train is not None:
            meta_frame = pd.DataFrame({"path": result.train["dist_img"], "score": result.train["dmos"]})
        else:
            pseudo_paths = [
                _join_prefix(image_prefix, p, source="--image-prefix") for p in labels["dist_img"]
            ]
            meta_frame = pd.DataFrame({"path": pseudo_paths, "score": labels["dmos"].to_numpy()})
        meta_meta: dict[str, Any] = {"scale": scale}
        if fingerprint is not None:
            meta_meta["fingerprint"] = fingerprint
        write_csv(pyiqa_meta, meta_frame, "pyiqa_meta", meta_meta, float_format="%.8g")
        result.pyiqa_meta = meta_frame
    return result
