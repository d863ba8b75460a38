"""The provenance tables `reshape publish` adds under ``provenance/`` so the report needs the folder alone.

A published folder already holds train.csv and labels.csv; the report also needs what only the run's
artifacts know. Publish derives it here, once, from those artifacts:

* ``provenance/selection_map.csv``: the DDCUp selection map. One row per training reference and per
  candidate (at most :data:`MAX_MAP_CANDIDATES` of the unselected ones, evenly spaced in pool order, plus
  every selected one): ``role`` (train / candidate / selected), ``name`` (as in the features), ``image``
  (its published path when the folder ships it, else empty), ``x``, ``y`` (the same 2-D PCA of the
  cosine-normalised features as plots/selection_map.png) and ``nearest_train_distance`` (candidates).
* ``provenance/neighbour_labels.csv``: for every (training neighbour, type, level) a pseudo-label was made
  from, the source label it contributed (``dmos``, on the labels' scale) and the published paths of that
  source image and its reference (empty when not shipped).
* ``provenance/clusters.csv`` (DRCDown runs): every member of a redundant cluster of more than one sample:
  ``image`` (its published path; a dropped member is not published, so it points at a small JPEG
  thumbnail under ``provenance/dropped/`` that publish makes), ``cluster``, ``cluster_size``, ``kept``.

Every table is optional: a missing artifact leaves its table out and the report leaves out its section.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from reshape.errors import BadInputError

log = logging.getLogger("reshape.publish")

PROVENANCE_DIR = "provenance"
SELECTION_MAP_CSV = f"{PROVENANCE_DIR}/selection_map.csv"
NEIGHBOUR_LABELS_CSV = f"{PROVENANCE_DIR}/neighbour_labels.csv"
CLUSTERS_CSV = f"{PROVENANCE_DIR}/clusters.csv"
DROPPED_DIR = f"{PROVENANCE_DIR}/dropped"
#: unselected candidates drawn on the map (KADIS-700k has 140,000: the map shows an even sample)
MAX_MAP_CANDIDATES = 5000
DROPPED_THUMB_SIDE = 256


@dataclass
class Provenance:
    """The tables to publish (None = not available) and the dropped members' thumbnails to make."""

    selection_map: pd.DataFrame | None = None
    neighbour_labels: pd.DataFrame | None = None
    clusters: pd.DataFrame | None = None
    dropped: dict[str, Path] = field(default_factory=dict)  # published thumbnail path -> image file

    def names(self) -> list[str]:
        """Every file these tables and thumbnails put in the folder."""
        tables = (
            (SELECTION_MAP_CSV, self.selection_map),
            (NEIGHBOUR_LABELS_CSV, self.neighbour_labels),
            (CLUSTERS_CSV, self.clusters),
        )
        return [name for name, table in tables if table is not None] + sorted(self.dropped)


# ----------------------------------------------------------------------------------------------- naming
def _published_lookup(train: pd.DataFrame, shipped: set[str], column: str, origin: str) -> dict[str, str]:
    """Original (run-relative) path -> published path, for the rows of ``origin`` whose file is shipped."""
    rows = train[train["origin"] == origin]
    return {
        orig: pub for orig, pub in zip(rows[f"orig_{column}"], rows[column], strict=True) if pub in shipped
    }


def _match(names: list[str], lookup: dict[str, str]) -> list[str]:
    """Published path of each name: exact path first, else a unique file stem (as the stages match)."""
    from reshape.sources import match_names

    keys = sorted(lookup)
    idx = match_names(list(names), keys, what="image", source="publish") if keys else None
    return ["" if idx is None or idx[i] < 0 else lookup[keys[int(idx[i])]] for i in range(len(names))]


# ----------------------------------------------------------------------------------------------- tables
def pca_2d(*blocks: np.ndarray) -> list[np.ndarray]:
    """2-D PCA of the rows of ``blocks`` together (cosine-normalised, float64), split back per block."""
    stacked = np.concatenate(blocks).astype(np.float64)
    stacked /= np.linalg.norm(stacked, axis=1, keepdims=True).clip(1e-12)
    centred = stacked - stacked.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    # an SVD's signs depend on the LAPACK build: fix them (largest loading positive) for identical output
    top = vt[:2]
    top = top * np.where(top[np.arange(len(top)), np.abs(top).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    proj = centred @ top.T
    if proj.shape[1] < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    out, start = [], 0
    for b in blocks:
        out.append(proj[start : start + len(b)])
        start += len(b)
    return out


def selection_map(
    train_features: Path, candidate_features: Path, selection: Path, train: pd.DataFrame, shipped: set[str]
) -> pd.DataFrame:
    """The selection map table (see the module docstring)."""
    from reshape.artifacts import read_features, read_parquet

    train_refs = read_features(train_features)
    candidates = read_features(candidate_features)
    chosen_table, _ = read_parquet(selection, "selection")
    chosen = chosen_table.column("candidate_index").to_numpy()
    if len(chosen) and (chosen.min() < 0 or chosen.max() >= len(candidates)):
        raise BadInputError(f"{selection}: candidate_index out of range of {candidate_features}")
    nearest = dict(zip(chosen.tolist(), chosen_table.column("nearest_train_distance").to_numpy().tolist()))
    train_xy, cand_xy = pca_2d(train_refs.embeddings, candidates.embeddings)
    others = np.setdiff1d(np.arange(len(candidates)), chosen)
    if len(others) > MAX_MAP_CANDIDATES:
        others = others[np.linspace(0, len(others) - 1, MAX_MAP_CANDIDATES).round().astype(np.int64)]
    shown = np.concatenate([others, np.sort(chosen)]).astype(np.int64)
    ref_paths = _match(list(train_refs.images), _published_lookup(train, shipped, "ref_img", "source"))
    new_refs = _published_lookup(train, shipped, "ref_img", "pseudo")
    cand_names = [candidates.images[i] for i in shown]
    return pd.DataFrame(
        {
            "role": ["train"] * len(train_refs.images)
            + ["selected" if i in nearest else "candidate" for i in shown],
            "name": list(train_refs.images) + cand_names,
            "image": ref_paths + [new_refs.get(n, "") for n in cand_names],
            "x": np.concatenate([train_xy[:, 0], cand_xy[shown, 0]]).round(6),
            "y": np.concatenate([train_xy[:, 1], cand_xy[shown, 1]]).round(6),
            "nearest_train_distance": [np.nan] * len(train_refs.images)
            + [nearest.get(int(i), np.nan) for i in shown],
        }
    )


def provenance_lists(
    labels: pd.DataFrame, source: object
) -> list[tuple[list[str], list[float], list[float]]]:
    """Each labels.csv row's neighbours, weights and distances, as lists (see :func:`reshape.fileio.list_cell`
    for the neighbours' format; the old ``;``-joined one is read too). A malformed cell, a non-numeric
    weight say, is a :class:`BadInputError` naming the file and line, never a traceback."""
    from reshape.fileio import parse_list_cell, parse_number_cell

    for column in ("neighbours", "weights", "distances"):
        if column not in labels.columns:
            raise BadInputError(f"{source}: has no {column!r} column")
    out = []
    for line, (names, weights, distances) in enumerate(
        zip(labels["neighbours"], labels["weights"], labels["distances"], strict=True), start=2
    ):
        out.append(
            (
                parse_list_cell(names, source=source, row=line),
                parse_number_cell(weights, source=source, row=line),
                parse_number_cell(distances, source=source, row=line),
            )
        )
    return out


def neighbour_labels(labels_csv: Path, train: pd.DataFrame, shipped: set[str]) -> pd.DataFrame | None:
    """The source label each (neighbour, type, level) contributed; None without the source table."""
    from reshape.artifacts import read_artifact_metadata, read_csv
    from reshape.sources import read_source_labels, scale_to_0_10

    meta = read_artifact_metadata(labels_csv)
    source_path = meta.get("source_labels")
    if not source_path or not Path(source_path).is_file():
        log.info(
            "labels' source table %s is not here: the report shows neighbours without labels", source_path
        )
        return None
    source = read_source_labels(
        source_path, source_format=meta.get("source_format", "auto"), skip_missing=True
    )
    frame = source.frame
    dmos = frame["dmos"].to_numpy(dtype=np.float64)
    if meta.get("scale") == "0-10":
        dmos = scale_to_0_10(dmos, float(meta["source_min"]), float(meta["source_max"]))
    labels = read_csv(labels_csv, "labels")
    used = {
        (name, int(t), int(lvl))
        for (names, _, _), t, lvl in zip(
            provenance_lists(labels, labels_csv), labels["dist_type"], labels["dist_level"], strict=True
        )
        for name in names
    }
    names = sorted({u[0] for u in used})
    from reshape.sources import match_names

    ref_of = dict(zip(names, match_names(names, source.refs, what="neighbour", source=labels_csv).tolist()))
    by_key = {
        (r, int(t), int(lvl)): i
        for i, (r, t, lvl) in enumerate(zip(frame["ref_img"], frame["dist_type"], frame["dist_level"]))
    }
    dist_pub = _published_lookup(train, shipped, "dist_img", "source")
    ref_pub = _published_lookup(train, shipped, "ref_img", "source")
    rows = []
    for name, t, lvl in sorted(used):
        ref_index = ref_of[name]
        ref = source.refs[ref_index] if ref_index >= 0 else None
        i = by_key.get((ref, t, lvl))
        if i is None:
            continue
        rows.append([name, t, lvl, float(dmos[i]), dist_pub.get(frame["dist_img"].iloc[i], ""),
                     ref_pub.get(ref, "")])  # fmt: skip
    columns = ["neighbour", "dist_type", "dist_level", "dmos", "image", "ref_image"]
    return pd.DataFrame(rows, columns=columns)


def clusters(
    prune_indices: Path, train: pd.DataFrame, inputs_roots: tuple[Path | None, Path | None]
) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Members of the clusters of more than one sample, and the dropped members' thumbnails to make."""
    from reshape.artifacts import read_artifact_metadata, read_csv
    from reshape.fileio import resolve_under_root

    decisions = read_csv(prune_indices, "prune_indices")
    decisions = decisions[decisions["cluster_size"] > 1]
    published = dict(zip(train["orig_dist_img"], train["dist_img"], strict=True))
    unpruned_path = read_artifact_metadata(prune_indices).get("labels")
    origin: dict[str, str] = {}
    if unpruned_path and Path(unpruned_path).is_file():
        unpruned = read_csv(unpruned_path, "train")
        origin = dict(zip(unpruned["dist_img"], unpruned["origin"], strict=True))
    source_root, images_root = inputs_roots
    images, dropped = [], {}
    for name, kept in zip(decisions["image"], decisions["kept"], strict=True):
        if bool(kept) and name in published:
            images.append(published[name])
            continue
        root = images_root if origin.get(name) == "pseudo" else source_root
        thumb = f"{DROPPED_DIR}/{PurePosixPath(name).as_posix()}.jpg"
        path = resolve_under_root(root, name, source=prune_indices) if root is not None else None
        if path is not None and path.is_file():
            dropped[thumb] = path
            images.append(thumb)
        else:
            images.append("")
    table = pd.DataFrame(
        {
            "image": images,
            "name": decisions["image"].to_numpy(),
            "cluster": decisions["cluster"].to_numpy(dtype=np.int64),
            "cluster_size": decisions["cluster_size"].to_numpy(dtype=np.int64),
            "kept": decisions["kept"].astype(bool).to_numpy(),
        }
    )
    return table.sort_values(["cluster", "name"], kind="stable").reset_index(drop=True), dropped


# ----------------------------------------------------------------------------------------------- writing
def write_table(path: Path, table: pd.DataFrame) -> None:
    from reshape.fileio import atomic_open

    with atomic_open(path, "w") as fh:
        table.to_csv(fh, index=False, float_format="%.8g", lineterminator="\n")


def write_thumbnail(src: Path, dst: Path, side: int = DROPPED_THUMB_SIDE) -> None:
    """A JPEG of ``src`` at most ``side`` px on its longer side (temp file, then rename)."""
    from reshape.fileio import atomic_write_bytes

    atomic_write_bytes(dst, thumbnail_jpeg(src, side))


def thumbnail_jpeg(src: Path, side: int, quality: int = 80) -> bytes:
    """JPEG bytes of ``src`` scaled (area average) to at most ``side`` px; deterministic for one input."""
    import cv2

    data = np.fromfile(src, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise BadInputError(f"{src}: not a readable image")
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise BadInputError(f"{src}: cannot encode a thumbnail")
    return buf.tobytes()
