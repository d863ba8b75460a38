"""DRCDown: density-aware redundant cluster downsampling (SynDR-IQA, Algorithm 3).

Two training samples are *linked* when the cosine similarity of their features is above ``sim_threshold``
(0.9) and their labels, on the 0..10 scale, differ by less than ``label_threshold`` (1.0). Connected
components of the link graph are redundant clusters. A cluster with more than ``min_cluster`` (20) members
keeps a random ``max(min_cluster, int(n / 2))`` of them; smaller clusters and unlinked samples are kept.

Scale: the link graph is built without any dense N x N matrix. The exact mode runs FAISS's BLAS range
search block by block over the upper triangle only (each pair is computed once); the approximate mode
partitions the vectors with k-means and joins each cell with the points that probe it, again with BLAS.
Components come from ``scipy.sparse.csgraph.connected_components``.

Indices always refer to the order of the rows passed in (the official code applies them to a differently
ordered list; a test pins that we do not).

The I/O shell :func:`run_prune` joins a features artifact to a label table by image path and writes the
pruned table, the per-row decisions (``prune_indices`` schema) and returns cluster statistics.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from reshape import artifacts
from reshape.errors import BadInputError
from reshape.fileio import atomic_open, check_relative

log = logging.getLogger("reshape.prune")

LABEL_RANGE = 10.0
NAMED_SCALES = {"0-10": (0.0, 10.0), "1-5": (1.0, 5.0), "0-1": (0.0, 1.0), "0-100": (0.0, 100.0)}
SIZE_BINS = (2, 3, 6, 11, 21, 51, 101, 201, 501, 1001)


# ----------------------------------------------------------------------------------------------- core
@dataclass(frozen=True)
class Clusters:
    """The DRCDown link graph of N samples and its redundant clusters.

    ``links``: (M, 2) int64 pairs ``i < j`` (sorted) that pass both thresholds. ``cluster_id``: (N,) int64,
    -1 for a sample without links, else 0..C-1 numbered by each cluster's smallest member. ``sizes``: (C,)
    member count per cluster id.
    """

    links: np.ndarray
    cluster_id: np.ndarray
    sizes: np.ndarray
    similar_pairs: int = 0  # pairs above the similarity threshold, before the label filter

    @property
    def n_samples(self) -> int:
        return len(self.cluster_id)

    @property
    def n_clusters(self) -> int:
        return len(self.sizes)

    @property
    def unlinked(self) -> np.ndarray:
        return np.flatnonzero(self.cluster_id < 0)

    def members(self, cluster: int) -> np.ndarray:
        return np.flatnonzero(self.cluster_id == cluster)

    def size_of_each_sample(self) -> np.ndarray:
        """Cluster size per sample (1 for an unlinked sample)."""
        out = np.ones(self.n_samples, dtype=np.int64)
        linked = self.cluster_id >= 0
        out[linked] = self.sizes[self.cluster_id[linked]]
        return out


def keep_count(size: int | np.ndarray, min_cluster: int = 20) -> int | np.ndarray:
    """Members a cluster of ``size`` keeps: all up to ``min_cluster``, else max(min_cluster, n // 2)."""
    size_arr = np.asarray(size, dtype=np.int64)
    kept = np.where(size_arr > min_cluster, np.maximum(min_cluster, size_arr // 2), size_arr)
    return int(kept) if np.ndim(size) == 0 else kept


def _check_inputs(features: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(features)
    labs = np.asarray(labels, dtype=np.float64)
    if feats.ndim != 2:
        raise BadInputError(f"features must be a 2-D (N, D) array, got shape {feats.shape}")
    if labs.ndim != 1:
        raise BadInputError(f"labels must be a 1-D array, got shape {labs.shape}")
    if feats.shape[0] != labs.shape[0]:
        raise BadInputError(
            f"features have {feats.shape[0]} rows but labels have {labs.shape[0]} (length mismatch)"
        )
    if feats.shape[0] == 0:
        raise BadInputError("empty input: no samples to prune")
    if feats.shape[1] == 0:
        raise BadInputError("features have zero dimensions")
    if not np.issubdtype(feats.dtype, np.number):
        raise BadInputError(f"features must be numeric, got dtype {feats.dtype}")
    bad_rows = ~np.isfinite(feats).all(axis=1)
    if bad_rows.any():
        raise BadInputError(f"features row {int(np.flatnonzero(bad_rows)[0])} has NaN or inf values")
    bad_labels = ~np.isfinite(labs)
    if bad_labels.any():
        raise BadInputError(f"label of row {int(np.flatnonzero(bad_labels)[0])} is NaN or inf")
    return feats, labs


def unit_rows(features: np.ndarray) -> np.ndarray:
    """L2-normalised float32 copy (C-contiguous); all-zero rows stay zero and so never link."""
    unit = np.array(features, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(unit, axis=1)
    nonzero = norms > 0
    unit[nonzero] /= norms[nonzero, None]
    return unit


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def _exact_pairs(
    unit: np.ndarray, sim_threshold: float, block_size: int, progress: bool | None
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs i < j with unit[i] . unit[j] > sim_threshold, by FAISS BLAS range search per row block.

    A query block [s, e) is searched only against rows [s, N): the lower triangle is never computed.
    """
    n, dim = unit.shape
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    starts = range(0, n, block_size)
    for start in tqdm(starts, desc="prune: range search", unit="block", disable=not _show_progress(progress)):
        stop = min(start + block_size, n)
        queries = unit[start:stop]
        database = unit[start:]
        result = faiss.RangeSearchResult(stop - start)
        faiss.range_search_inner_product(
            faiss.swig_ptr(queries), faiss.swig_ptr(database), dim, stop - start, n - start,
            float(sim_threshold), result,
        )  # fmt: skip
        lims = faiss.rev_swig_ptr(result.lims, stop - start + 1).astype(np.int64)
        found = int(lims[-1])
        cols = faiss.rev_swig_ptr(result.labels, found).copy().astype(np.int64) + start
        rows = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(lims))
        upper = cols > rows
        firsts.append(rows[upper])
        seconds.append(cols[upper])
    return np.concatenate(firsts), np.concatenate(seconds)


# Worst-case error of a bf16 product of unit vectors with fp32 accumulation and a bf16 result: inputs
# rounded to 8 significant bits (2 x 2^-8), the result rounded (2^-9 below 1), fp32 sums (d x 2^-24 at
# d = 2,048). 0.0125 covers the sum (0.0101) with room; candidates above threshold - margin are then
# decided in float64, so the bf16 pass only prunes the search.
BF16_MARGIN = 0.0125
BACKENDS = ("auto", "faiss", "bf16")


def resolve_backend(backend: str) -> str:
    """'auto' picks the bf16 pre-filter where the CPU multiplies bf16 natively, else FAISS."""
    if backend not in BACKENDS:
        raise BadInputError(f"unknown search backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    import torch

    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bf16" if native else "faiss"


def _bf16_pairs(
    unit: np.ndarray, sim_threshold: float, block_size: int, progress: bool | None
) -> tuple[np.ndarray, np.ndarray]:
    """Same pairs as :func:`_exact_pairs`: a bf16 GEMM finds candidates, float64 dot products decide.

    On CPUs with AVX-512 BF16 the bf16 product runs several times faster than float32 BLAS, and the
    candidates above ``sim_threshold - BF16_MARGIN`` are a superset of the true pairs (see BF16_MARGIN).
    """
    import torch

    n, _ = unit.shape
    half = torch.from_numpy(unit).to(torch.bfloat16)
    cutoff = float(sim_threshold) - BF16_MARGIN
    # Positive bf16 values order like their int16 bit patterns (negatives have the sign bit set, so they
    # compare below any positive cutoff); the integer comparison is cheaper than a bf16 one.
    integer_cutoff = None
    if cutoff > 0:
        rounded = torch.tensor(cutoff, dtype=torch.bfloat16)
        # the largest bf16 <= cutoff, so the integer test keeps a superset of `sims > cutoff`
        integer_cutoff = int(rounded.view(torch.int16)) - int(float(rounded) > cutoff)
    tile = max(block_size, 16384)
    product = torch.empty(min(block_size, n), min(tile, n), dtype=torch.bfloat16)
    above_cutoff = torch.empty(product.shape, dtype=torch.bool)
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    starts = range(0, n, block_size)
    for start in tqdm(starts, desc="prune: bf16 search", unit="block", disable=not _show_progress(progress)):
        stop = min(start + block_size, n)
        queries = half[start:stop]
        for col in range(start, n, tile):
            col_stop = min(col + tile, n)
            sims = product[: stop - start, : col_stop - col]
            torch.matmul(queries, half[col:col_stop].T, out=sims)
            mask = above_cutoff[: stop - start, : col_stop - col]
            if integer_cutoff is None:
                torch.gt(sims, cutoff, out=mask)
            else:
                torch.gt(sims.view(torch.int16), integer_cutoff, out=mask)
            rows, cols = torch.nonzero(mask, as_tuple=True)
            rows = rows.numpy().astype(np.int64) + start
            cols = cols.numpy().astype(np.int64) + col
            upper = cols > rows
            rows, cols = rows[upper], cols[upper]
            # float64 decision: the exact cosine of the float32 unit vectors, free of summation-order noise
            exact = np.empty(len(rows), dtype=np.float64)
            for chunk in range(0, len(rows), 8192):
                a, b = rows[chunk : chunk + 8192], cols[chunk : chunk + 8192]
                exact[chunk : chunk + 8192] = np.einsum("ij,ij->i", unit[a], unit[b], dtype=np.float64)
            above = exact > sim_threshold
            firsts.append(rows[above])
            seconds.append(cols[above])
    return np.concatenate(firsts), np.concatenate(seconds)


def approximate_settings(n: int) -> tuple[int, int]:
    """(number of k-means cells, cells probed per point) for the approximate mode."""
    cells = int(min(max(round(math.sqrt(n) * 2), 1), max(n // 40, 1), 4096))
    return cells, min(4, cells)


def _approximate_pairs(
    unit: np.ndarray,
    sim_threshold: float,
    seed: int,
    progress: bool | None,
    *,
    use_bf16: bool = False,
    cells: int | None = None,
    probes: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs above the threshold found by an IVF-style self-join (may miss pairs split across far cells).

    Every point lives in its nearest k-means cell and probes its ``probes`` nearest cells; pair (i, j) is
    found when j's cell is among i's probes or vice versa. Each cell is joined with its probers by one BLAS
    product, which is what makes this fast on CPU: FAISS's own IVF range search scans lists vector by
    vector. ``use_bf16`` only speeds up the assignment to cells (where rounding merely moves a point to a
    neighbouring cell); similarities are always decided in float32.
    """
    n, dim = unit.shape
    default_cells, default_probes = approximate_settings(n)
    cells = cells or default_cells
    probes = min(probes or default_probes, cells)
    rng = np.random.default_rng(seed)
    train_size = min(n, cells * 40)
    train = unit[np.sort(rng.choice(n, train_size, replace=False))] if train_size < n else unit
    kmeans = faiss.Kmeans(dim, cells, niter=10, seed=int(seed) % (2**31), spherical=True, verbose=False)
    kmeans.train(train)
    del train
    if use_bf16:
        import torch

        half = torch.from_numpy(unit).to(torch.bfloat16)
        centroids = torch.from_numpy(kmeans.centroids).to(torch.bfloat16)
        probe_cells = np.empty((n, probes), dtype=np.int64)
        for start in range(0, n, 16384):
            scores = half[start : start + 16384] @ centroids.T
            probe_cells[start : start + 16384] = scores.float().topk(probes, dim=1).indices.numpy()
        del half
    else:
        quantizer = faiss.IndexFlatIP(dim)
        quantizer.add(kmeans.centroids)
        probe_cells = quantizer.search(unit, probes)[1]
    home = probe_cells[:, 0]
    members_order = np.argsort(home, kind="stable")
    member_bounds = np.searchsorted(home[members_order], np.arange(cells + 1))
    probe_flat = probe_cells.reshape(-1)
    probe_order = np.argsort(probe_flat, kind="stable")
    prober_bounds = np.searchsorted(probe_flat[probe_order], np.arange(cells + 1))
    probers_all = probe_order // probes
    codes: list[np.ndarray] = []
    for cell in tqdm(
        range(cells), desc="prune: cell join", unit="cell", disable=not _show_progress(progress)
    ):
        members = members_order[member_bounds[cell] : member_bounds[cell + 1]]
        if len(members) == 0:
            continue
        probers = probers_all[prober_bounds[cell] : prober_bounds[cell + 1]]
        member_vecs = unit[members]
        for chunk in range(0, len(probers), 4096):
            who = probers[chunk : chunk + 4096]
            qi, mi = np.nonzero(unit[who] @ member_vecs.T > sim_threshold)
            a, b = who[qi].astype(np.int64), members[mi].astype(np.int64)
            # Report each pair once: inside one cell as a < b; across cells only from the larger index's
            # home cell, unless the other direction cannot see it (its home is not among b's probes).
            same_home = home[a] == cell
            seen_both_ways = (probe_cells[b] == home[a][:, None]).any(axis=1)
            keep = np.where(same_home, a < b, (a < b) | ~seen_both_ways)
            a, b = a[keep], b[keep]
            codes.append(np.minimum(a, b) * n + np.maximum(a, b))
    if not codes:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    pairs = np.concatenate(codes)
    return pairs // n, pairs % n


def find_clusters(
    features: Any,
    labels: Any,
    *,
    sim_threshold: float = 0.9,
    label_threshold: float = 1.0,
    approximate: bool = False,
    block_size: int = 2048,
    seed: int = 0,
    backend: str = "auto",
    progress: bool | None = False,
) -> Clusters:
    """Build the DRCDown link graph and its connected components.

    ``features``: (N, D) array (any float dtype; cosine similarity, so the scale of a row does not matter).
    ``labels``: (N,) on the 0..10 scale. ``approximate`` trades a small share of links for speed at
    millions of rows; ``seed`` only matters there (k-means). ``backend`` picks the exact search: ``faiss``
    (FAISS BLAS range search, float32), ``bf16`` (bf16 GEMM pre-filter, float64 decision) or ``auto``
    (bf16 where the CPU has native bf16 arithmetic). Both give the same links except for pairs whose
    similarity is within float32 rounding (~1e-6) of the threshold.
    """
    feats, labs = _check_inputs(features, labels)
    if not -1.0 <= sim_threshold < 1.0:
        raise BadInputError(f"sim_threshold must be in [-1, 1), got {sim_threshold}")
    if label_threshold <= 0:
        raise BadInputError(f"label_threshold must be > 0, got {label_threshold}")
    if block_size < 1:
        raise BadInputError(f"block_size must be >= 1, got {block_size}")
    exact_backend = resolve_backend(backend)
    unit = unit_rows(feats)
    del feats
    n = unit.shape[0]
    if approximate:
        first, second = _approximate_pairs(
            unit, sim_threshold, seed, progress, use_bf16=exact_backend == "bf16"
        )
    elif exact_backend == "bf16":
        first, second = _bf16_pairs(unit, sim_threshold, block_size, progress)
    else:
        first, second = _exact_pairs(unit, sim_threshold, block_size, progress)
    similar = len(first)
    close = np.abs(labs[first] - labs[second]) < label_threshold
    first, second = first[close], second[close]
    order = np.lexsort((second, first))
    links = np.stack([first[order], second[order]], axis=1) if len(order) else np.empty((0, 2), np.int64)

    cluster_id = np.full(n, -1, dtype=np.int64)
    if len(links) == 0:
        return Clusters(links, cluster_id, np.empty(0, dtype=np.int64), similar)
    graph = coo_matrix((np.ones(len(links), dtype=np.int8), (links[:, 0], links[:, 1])), shape=(n, n)).tocsr()
    _, component = connected_components(graph, directed=False)
    linked = np.zeros(n, dtype=bool)
    linked[links.ravel()] = True
    # Renumber components by their smallest member so ids do not depend on how the graph was built.
    linked_rows = np.flatnonzero(linked)
    comps, first_row = np.unique(component[linked_rows], return_index=True)
    rank = np.empty(len(comps), dtype=np.int64)
    rank[np.argsort(linked_rows[first_row], kind="stable")] = np.arange(len(comps))
    cluster_id[linked_rows] = rank[np.searchsorted(comps, component[linked_rows])]
    sizes = np.bincount(cluster_id[linked_rows], minlength=len(comps)).astype(np.int64)
    return Clusters(links, cluster_id, sizes, similar)


def keep_mask(clusters: Clusters, *, min_cluster: int = 20, seed: int = 0) -> np.ndarray:
    """Boolean (N,) mask of kept samples.

    Each sample gets one uniform random key from ``default_rng(seed)`` (drawn for all N at once, so the
    draw does not depend on block sizes or threads); a cluster keeps its members with the smallest keys,
    which is a uniform random subset of the required size.
    """
    if min_cluster < 1:
        raise BadInputError(f"min_cluster must be >= 1, got {min_cluster}")
    n = clusters.n_samples
    keys = np.random.default_rng(seed).random(n)
    kept = clusters.cluster_id < 0
    linked = np.flatnonzero(~kept)
    if len(linked) == 0:
        return kept
    cid = clusters.cluster_id[linked]
    order = np.lexsort((keys[linked], cid))
    sorted_cid = cid[order]
    starts = np.searchsorted(sorted_cid, sorted_cid, side="left")
    rank_in_cluster = np.arange(len(order)) - starts
    quota = keep_count(clusters.sizes, min_cluster)[sorted_cid]
    kept[linked[order[rank_in_cluster < quota]]] = True
    return kept


def drcdown(
    features: Any,
    labels: Any,
    *,
    sim_threshold: float = 0.9,
    label_threshold: float = 1.0,
    min_cluster: int = 20,
    seed: int = 0,
    approximate: bool = False,
    backend: str = "auto",
) -> np.ndarray:
    """Sorted indices (into the input rows) of the samples DRCDown keeps. Labels on the 0..10 scale."""
    clusters = find_clusters(
        features, labels, sim_threshold=sim_threshold, label_threshold=label_threshold,
        approximate=approximate, seed=seed, backend=backend,
    )  # fmt: skip
    return np.flatnonzero(keep_mask(clusters, min_cluster=min_cluster, seed=seed))


# ----------------------------------------------------------------------------------------------- labels
_RANGE_RE = re.compile(r"^\s*(-?\d+(?:\.\d*)?)\s*(?:-|:|\.\.)\s*(-?\d+(?:\.\d*)?)\s*$")


def parse_label_scale(text: str | None) -> str | tuple[float, float] | None:
    """``None`` (detect), ``'auto'`` or a (low, high) pair from '1-5', '0-100', '-1:1', '0..10'."""
    if text is None:
        return None
    key = text.strip().lower()
    if key == "auto":
        return "auto"
    if key in NAMED_SCALES:
        return NAMED_SCALES[key]
    match = _RANGE_RE.match(key)
    if not match:
        raise BadInputError(
            f"--label-scale {text!r}: expected auto, 0-10, 1-5, 0-1, 0-100 or MIN-MAX (e.g. 1-9)"
        )
    low, high = float(match.group(1)), float(match.group(2))
    if not high > low:
        raise BadInputError(f"--label-scale {text!r}: MAX must be greater than MIN")
    return low, high


def labels_to_0_10(
    labels: Any, scale: str | tuple[float, float] | None, *, source: object = "labels"
) -> np.ndarray:
    """Map labels to the 0..10 scale the thresholds are defined on.

    ``scale=None`` accepts labels only when they look like 0..10 already: inside [0, 10] and reaching above
    5 (KADID's 1..5 DMOS or 0..1 scores would otherwise be silently pruned with a 2x or 10x too wide label
    threshold). ``'auto'`` stretches the observed min..max to 0..10 like the official training code.
    """
    labs = np.asarray(labels, dtype=np.float64)
    if labs.size == 0:
        raise BadInputError(f"{source}: empty input: no labels")
    low_seen, high_seen = float(labs.min()), float(labs.max())
    if scale is None:
        if low_seen < 0 or high_seen > LABEL_RANGE or high_seen <= LABEL_RANGE / 2:
            guess = " (looks like 1-5)" if low_seen >= 1 and high_seen <= 5 else ""
            guess = " (looks like 0-1)" if high_seen <= 1 and low_seen >= 0 else guess
            raise BadInputError(
                f"{source}: labels span {low_seen:g}..{high_seen:g}{guess}, not the 0..10 scale DRCDown's "
                "thresholds use; pass --label-scale auto|1-5|0-1|0-100|MIN-MAX (or 0-10 if they are 0..10)"
            )
        return labs.copy()
    if scale == "auto":
        if high_seen == low_seen:
            return np.zeros_like(labs)
        return (labs - low_seen) / (high_seen - low_seen) * LABEL_RANGE
    low, high = scale
    outside = (labs < low) | (labs > high)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise BadInputError(
            f"{source}, row {i}: label {labs[i]:g} is outside the --label-scale range {low:g}-{high:g}"
        )
    return (labs - low) / (high - low) * LABEL_RANGE


# ----------------------------------------------------------------------------------------------- statistics
@dataclass
class PruneStats:
    samples: int
    kept: int
    clusters: int
    linked: int
    links: int
    similar_pairs: int
    size_histogram: dict[str, int] = field(default_factory=dict)
    largest_cluster: int = 0

    @property
    def removed(self) -> int:
        return self.samples - self.kept

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples, "kept": self.kept, "removed": self.removed, "clusters": self.clusters,
            "linked_samples": self.linked, "links": self.links, "similar_pairs": self.similar_pairs,
            "largest_cluster": self.largest_cluster, "cluster_size_histogram": self.size_histogram,
        }  # fmt: skip

    def lines(self) -> list[str]:
        out = [
            f"samples {self.samples}: kept {self.kept}, removed {self.removed}",
            f"redundant clusters {self.clusters} holding {self.linked} samples ({self.links} links, "
            f"{self.similar_pairs} similar pairs before the label filter); largest {self.largest_cluster}",
        ]
        if self.size_histogram:
            out.append("cluster sizes: " + ", ".join(f"{k}: {v}" for k, v in self.size_histogram.items()))
        return out


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """Cluster count per size bin ('2', '3-5', ..., '>=1001'), empty bins left out."""
    edges = list(SIZE_BINS) + [np.iinfo(np.int64).max]
    counts = np.histogram(sizes, bins=edges)[0]
    out: dict[str, int] = {}
    for lo, hi, count in zip(edges[:-1], edges[1:], counts):
        if count:
            label = f">={lo}" if hi == edges[-1] else (str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}")
            out[label] = int(count)
    return out


def prune_stats(clusters: Clusters, kept: np.ndarray) -> PruneStats:
    return PruneStats(
        samples=clusters.n_samples,
        kept=int(np.count_nonzero(kept)),
        clusters=clusters.n_clusters,
        linked=int(np.count_nonzero(clusters.cluster_id >= 0)),
        links=len(clusters.links),
        similar_pairs=clusters.similar_pairs,
        size_histogram=size_histogram(clusters.sizes),
        largest_cluster=int(clusters.sizes.max()) if clusters.n_clusters else 0,
    )


# ----------------------------------------------------------------------------------------------- I/O shell
TRAIN_COLUMNS = artifacts.load_schema("train").column_names
DMOS_COLUMNS = ["dist_img", "ref_img", "dmos", "var"]


def read_label_table(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Read a 'train' table or a KADID dmos.csv-style table.

    Returns (raw text frame as written, typed frame, layout name). The raw frame is what gets written back
    for the dmos layout so kept rows stay byte-for-byte what they were.
    """
    p = Path(path)
    raw = artifacts.read_raw_csv(p)
    columns = set(raw.columns)
    if set(TRAIN_COLUMNS) <= columns:
        return raw, artifacts.read_csv(p, "train"), "train"
    missing = [c for c in DMOS_COLUMNS if c not in columns]
    if missing:
        raise BadInputError(
            f"{p}: not a label table: missing column(s) {', '.join(missing)} (expected the train layout "
            f"{','.join(TRAIN_COLUMNS)} or KADID's {','.join(DMOS_COLUMNS)}; "
            f"has {', '.join(map(str, raw.columns))})"
        )
    typed = raw.copy()
    dmos = pd.to_numeric(raw["dmos"], errors="coerce")
    bad = dmos.isna() | ~np.isfinite(dmos.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise BadInputError(
            f"{p}, line {i + 2}: column 'dmos' value {raw['dmos'].iloc[i]!r} is not a finite float64"
        )
    empty = raw["dist_img"].isna() | (raw["dist_img"].astype(str).str.strip() == "")
    if empty.any():
        raise BadInputError(
            f"{p}, line {int(np.flatnonzero(empty.to_numpy())[0]) + 2}: column 'dist_img' is empty"
        )
    typed["dmos"] = dmos.astype(np.float64)
    return raw, typed, "dmos"


def match_features(
    images: Sequence[str], feature_images: Sequence[str], *, labels_path: object, features_path: object
) -> np.ndarray:
    """Row in the features artifact for each label row (by relative POSIX path); error if any lacks one."""
    lookup = {check_relative(img, source=features_path, row=i): i for i, img in enumerate(feature_images)}
    rows = np.full(len(images), -1, dtype=np.int64)
    for i, img in enumerate(images):
        rows[i] = lookup.get(check_relative(img, source=labels_path, row=i), -1)
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        first = int(missing[0])
        raise BadInputError(
            f"{labels_path}: {len(missing)} of {len(images)} rows have no features in {features_path} "
            f"(first: line {first + 2}, {images[first]!r})"
        )
    return rows


def indices_path_for(out: str | os.PathLike[str]) -> Path:
    out_path = Path(out)
    return out_path.with_name(out_path.stem + ".indices.csv")


def run_prune(
    features_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    indices_path: str | os.PathLike[str] | None = None,
    label_scale: str | None = None,
    sim_threshold: float = 0.9,
    label_threshold: float = 1.0,
    min_cluster: int = 20,
    seed: int = 0,
    approximate: bool = False,
    block_size: int = 2048,
    backend: str = "auto",
    progress: bool | None = None,
    fingerprint: str | None = None,
) -> PruneStats:
    """Prune a label table with DRCDown; writes ``out_path`` (+ sidecar) and the per-row decisions."""
    scale = parse_label_scale(label_scale)
    features = artifacts.read_features(features_path)
    raw, table, layout = read_label_table(labels_path)
    if len(table) == 0:
        raise BadInputError(f"{labels_path}: empty input: the table has no rows")
    rows = match_features(
        table["dist_img"].astype(str).tolist(),
        features.images,
        labels_path=labels_path,
        features_path=features_path,
    )
    labels = labels_to_0_10(table["dmos"].to_numpy(dtype=np.float64), scale, source=labels_path)
    # At 100,000 x 2,048 every copy of the embeddings is 800 MB: skip the gather when rows already line up.
    in_order = len(rows) == len(features) and np.array_equal(rows, np.arange(len(rows)))
    embeddings = features.embeddings if in_order else features.embeddings[rows]
    del features
    clusters = find_clusters(
        embeddings, labels, sim_threshold=sim_threshold, label_threshold=label_threshold,
        approximate=approximate, block_size=block_size, seed=seed, backend=backend, progress=progress,
    )  # fmt: skip
    kept = keep_mask(clusters, min_cluster=min_cluster, seed=seed)
    stats = prune_stats(clusters, kept)

    meta: dict[str, Any] = {
        "sim_threshold": sim_threshold, "label_threshold": label_threshold, "min_cluster": min_cluster,
        "seed": seed, "approximate": approximate, "label_scale": label_scale or "0-10",
        "backend": "approximate" if approximate else resolve_backend(backend),
        "features": str(features_path), "labels": str(labels_path), "stats": stats.as_dict(),
    }  # fmt: skip
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint

    decisions = pd.DataFrame(
        {
            "index": np.arange(len(table), dtype=np.int64),
            "image": table["dist_img"].astype(str).to_numpy(),
            "cluster": clusters.cluster_id,
            "cluster_size": clusters.size_of_each_sample(),
            "kept": kept,
        }
    )
    decisions_path = Path(indices_path) if indices_path is not None else indices_path_for(out_path)
    if Path(out_path).resolve() in (Path(labels_path).resolve(), decisions_path.resolve()):
        raise BadInputError(f"{out_path}: output would overwrite an input or the indices file")
    artifacts.write_csv(decisions_path, decisions, "prune_indices", meta)
    if layout == "train":
        artifacts.write_csv(
            out_path, table.loc[kept].reset_index(drop=True), "train", meta, float_format=None
        )
    else:
        with atomic_open(out_path, "w") as fh:
            raw.loc[kept].to_csv(fh, index=False, lineterminator="\n")
        artifacts.write_json(artifacts.sidecar_path(out_path), {**artifacts.base_metadata(), **meta})
    return stats
