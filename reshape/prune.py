"""DRCDown: density-aware redundant cluster downsampling (SynDR-IQA, Algorithm 3).

Two training samples are *linked* when the cosine similarity of their features is above ``sim_threshold``
(0.9) and their labels, on the 0..10 scale, differ by less than ``label_threshold`` (1.0). Connected
components of the link graph are redundant clusters. A cluster with more than ``min_cluster`` (20) members
keeps a random ``max(min_cluster, int(n / 2))`` of them; smaller clusters and unlinked samples are kept.

Scale (issue #16): memory is O(N), whatever the number of links. Candidate pairs are produced tile by tile
(a block of rows against a block of columns of the upper triangle), decided, filtered by label and fed
straight into a union-find forest; no list of links, no graph, no N x N matrix is ever held. The pair
sources are FAISS's BLAS range search (float32), a bf16 GEMM pre-filter (torch, fast on AVX-512 BF16 CPUs)
and, with ``approximate``, a k-means cell join for millions of rows.

Determinism (issue #13): a pair's similarity is decided on its *canonical* value, the float64 dot product of
the two float32 unit rows summed by numpy's pairwise sum (:func:`pair_cosines`: the same for a pair in any
tile). Screening values (float32 or bf16, whose rounding depends on BLAS blocking and threads) only settle
pairs farther from the threshold than a rigorous bound of their error (:func:`float32_margin`,
:func:`bf16_margin`); pairs inside it are re-decided canonically. The forest's root of a component is its
smallest member whatever the union order, so clusters, kept sets and output bytes do not depend on the
block size, the backend, the thread count or the CPU.

Indices always refer to the order of the rows passed in (the official code applies them to a differently
ordered list; a test pins that we do not). :func:`official_index_bug` reproduces that mistake on request,
only so that its effect can be measured.

The stage :func:`run` joins a features artifact to a label table by image path and writes the pruned
table, the per-row decisions (``prune_indices`` schema) and returns cluster statistics.
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
from tqdm import tqdm

from reshape import artifacts
from reshape.errors import BadInputError
from reshape.fileio import atomic_open, check_relative, remove_stale_temps
from reshape.outputs import (
    check_file_output,
    check_inputs_not_outputs,
    check_writable,
    created_folders,
    locked_outputs,
)
from reshape.select import warn_if_degenerate
from reshape.steps import announce

log = logging.getLogger("reshape.prune")

LABEL_RANGE = 10.0
NAMED_SCALES = {"0-10": (0.0, 10.0), "1-5": (1.0, 5.0), "0-1": (0.0, 1.0), "0-100": (0.0, 100.0)}
SIZE_BINS = (2, 3, 6, 11, 21, 51, 101, 201, 501, 1001)
#: Most entries of one screened tile (rows x columns): bounds the memory of a tile's candidate pairs.
TILE_ENTRIES = 1 << 21
#: Pairs per canonical float64 recomputation chunk.
PAIR_CHUNK = 4096

# A stream of candidate pairs (rows, cols, sure), rows < cols: every pair whose canonical similarity may be
# above the threshold, ``sure`` True where the screening value settles that it is.
PairChunk = tuple[np.ndarray, np.ndarray, np.ndarray]


# ----------------------------------------------------------------------------------------------- core
@dataclass(frozen=True)
class Clusters:
    """The redundant clusters of N samples under the DRCDown link rule.

    ``cluster_id``: (N,) int64, -1 for a sample without links, else 0..C-1 numbered by each cluster's
    smallest member. ``sizes``: (C,) member count per cluster id. ``n_links``: pairs passing both
    thresholds; ``similar_pairs``: pairs above the similarity threshold, before the label filter (counts
    only: the links themselves are never stored, see :func:`iter_links`).
    """

    cluster_id: np.ndarray
    sizes: np.ndarray
    n_links: int = 0
    similar_pairs: int = 0

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
    """L2-normalised float32 copy (C-contiguous); all-zero rows stay zero and so never link.

    Each row is normalised on its own (numpy's per-row pairwise sum), so a row's unit vector does not
    depend on which other rows are passed with it.
    """
    unit = np.array(features, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(unit, axis=1)
    nonzero = norms > 0
    unit[nonzero] /= norms[nonzero, None]
    return unit


def _show_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


# ----------------------------------------------------------------------------------------------- decisions
def pair_cosines(unit: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Canonical similarity of each pair: float64 products of the float32 unit rows, pairwise-summed.

    numpy reduces each row of a contiguous (k, D) array with the same pairwise summation whatever k, so a
    pair's value does not depend on the tile, chunk or batch it is computed in (and is symmetric).
    """
    out = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), PAIR_CHUNK):
        a = unit[rows[start : start + PAIR_CHUNK]].astype(np.float64)
        b = unit[cols[start : start + PAIR_CHUNK]].astype(np.float64)
        out[start : start + PAIR_CHUNK] = (a * b).sum(axis=1)
    return out


def float32_margin(dim: int) -> float:
    """Twice the worst-case error of a float32 dot product of two unit vectors, any summation order.

    |fl(a.b) - a.b| <= gamma_D sum|a_i b_i| <= gamma_D |a||b| with gamma_D ~ D 2^-24 (with or without
    FMA, any BLAS blocking); the float32 unit rows have norms within 1e-6 of 1.
    """
    return 2.0 * 1.01 * dim * 2.0**-24 + 1e-7


def bf16_margin(dim: int) -> float:
    """Bound on the error of a bf16 GEMM entry of unit vectors (fp32 accumulation, bf16 result).

    Inputs rounded to 8 significant bits (2 x 2^-8 relative on sum|a_i b_i| <= 1), the result rounded
    (2^-9 below 1), fp32 sums (D x 2^-24): 0.0101 at D = 2,048; 0.0125 plus the D term leaves room.
    """
    return 0.0125 + dim * 2.0**-24


def screen(values: np.ndarray, margin: float, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(candidate mask, sure mask) of screening ``values`` whose error is below ``margin``.

    A value farther than ``margin`` from the threshold settles its pair: above it is surely similar, below
    it surely not (no candidate). The candidates not sure are re-decided on their canonical value.
    """
    # float64 bounds: a float32 array against a Python float would compare in float32
    candidate = values > np.float64(threshold - margin)
    return candidate, values[candidate] > np.float64(threshold + margin)


def decide_similar(
    unit: np.ndarray, rows: np.ndarray, cols: np.ndarray, sure: np.ndarray, threshold: float
) -> np.ndarray:
    """Mask of candidate pairs whose canonical similarity is above ``threshold`` (``sure`` ones are)."""
    similar = sure.copy()
    unsure = np.flatnonzero(~sure)
    if len(unsure):
        similar[unsure] = pair_cosines(unit, rows[unsure], cols[unsure]) > threshold
    return similar


# ----------------------------------------------------------------------------------------------- pair sources
def _tiles(n: int, block_size: int) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
    """Row blocks [r0, r1) of ``block_size`` with their column tiles [c0, c1) over columns r0..n-1."""
    width = max(block_size, TILE_ENTRIES // block_size)
    for r0 in range(0, n, block_size):
        r1 = min(r0 + block_size, n)
        yield r0, r1, [(c0, min(c0 + width, n)) for c0 in range(r0, n, width)]


def _upper(rows: np.ndarray, cols: np.ndarray, sure: np.ndarray) -> Iterator[PairChunk]:
    """The chunk's pairs above the diagonal (rows ascending, as the tiles produce them)."""
    if len(rows) and rows[-1] < cols.min():  # a tile right of the diagonal: every pair is upper
        yield rows, cols, sure
        return
    keep = cols > rows
    if keep.any():
        yield rows[keep], cols[keep], sure[keep]


def _faiss_pairs(unit: np.ndarray, threshold: float, block_size: int, bar: tqdm) -> Iterator[PairChunk]:
    """Candidate pairs from FAISS's BLAS range search, one (row block x column tile) at a time."""
    n, dim = unit.shape
    margin = float32_margin(dim)
    for r0, r1, tiles in _tiles(n, block_size):
        for c0, c1 in tiles:
            result = faiss.RangeSearchResult(r1 - r0)
            faiss.range_search_inner_product(
                faiss.swig_ptr(unit[r0:r1]), faiss.swig_ptr(unit[c0:c1]), dim, r1 - r0, c1 - c0,
                float(threshold - margin), result,
            )  # fmt: skip
            lims = faiss.rev_swig_ptr(result.lims, r1 - r0 + 1).astype(np.int64)
            found = int(lims[-1])
            cols = faiss.rev_swig_ptr(result.labels, found).astype(np.int64) + c0
            sure = faiss.rev_swig_ptr(result.distances, found).astype(np.float64) > threshold + margin
            rows = np.repeat(np.arange(r0, r1, dtype=np.int64), np.diff(lims))
            del result
            yield from _upper(rows, cols, sure)
        bar.update(r1 - r0)


def _bf16_cut(cutoff: float) -> int:
    """int16 pattern ``p`` such that a positive bf16 value is > ``cutoff`` iff its pattern is > ``p``.

    Positive bf16 values order like their int16 bit patterns (negatives have the sign bit set, so they
    compare below any positive cutoff): the pattern of the largest bf16 <= cutoff.
    """
    import torch

    rounded = torch.tensor(cutoff, dtype=torch.bfloat16)
    return int(rounded.view(torch.int16)) - int(float(rounded) > cutoff)


def _bf16_pairs(unit: np.ndarray, threshold: float, block_size: int, bar: tqdm) -> Iterator[PairChunk]:
    """Candidate pairs from a bf16 GEMM (several times the float32 BLAS rate on AVX-512 BF16 CPUs)."""
    import torch

    n, dim = unit.shape
    margin = bf16_margin(dim)
    half = torch.from_numpy(unit).to(torch.bfloat16)
    low, high = float(threshold) - margin, float(threshold) + margin
    use_patterns = low > 0  # compare int16 bit patterns (cheaper than bf16 values)
    low_pattern, high_pattern = (_bf16_cut(low), _bf16_cut(high)) if use_patterns else (0, 0)
    for r0, r1, tiles in _tiles(n, block_size):
        for c0, c1 in tiles:
            sims = half[r0:r1] @ half[c0:c1].T
            if use_patterns:
                patterns = sims.view(torch.int16).numpy()
                rows, cols = np.nonzero(patterns > low_pattern)
                sure = patterns[rows, cols] > high_pattern
            else:
                values = sims.float().numpy()
                candidate, sure = screen(values, margin, threshold)
                rows, cols = np.nonzero(candidate)
            del sims
            yield from _upper(rows + r0, cols + c0, sure)
        bar.update(r1 - r0)


def approximate_settings(n: int) -> tuple[int, int]:
    """(number of k-means cells, cells probed per point) for the approximate mode."""
    cells = int(min(max(round(math.sqrt(n) * 2), 1), max(n // 40, 1), 4096))
    return cells, min(4, cells)


def _probe_cells(unit: np.ndarray, seed: int, use_bf16: bool, cells: int, probes: int) -> np.ndarray:
    """(N, probes) nearest k-means cells of each row, nearest first (column 0 = the row's home cell).

    ``use_bf16`` only speeds up the assignment (rounding merely moves a point to a neighbouring cell).
    """
    n, dim = unit.shape
    rng = np.random.default_rng(seed)
    train_size = min(n, cells * 40)
    train = unit[np.sort(rng.choice(n, train_size, replace=False))] if train_size < n else unit
    kmeans = faiss.Kmeans(dim, cells, niter=10, seed=int(seed) % (2**31), spherical=True, verbose=False)
    kmeans.train(train)
    del train
    if not use_bf16:
        quantizer = faiss.IndexFlatIP(dim)
        quantizer.add(kmeans.centroids)
        return quantizer.search(unit, probes)[1].astype(np.int64)
    import torch

    centroids = torch.from_numpy(kmeans.centroids).to(torch.bfloat16)
    probe_cells = np.empty((n, probes), dtype=np.int64)
    for start in range(0, n, 16384):
        scores = torch.from_numpy(unit[start : start + 16384]).to(torch.bfloat16) @ centroids.T
        probe_cells[start : start + 16384] = scores.float().topk(probes, dim=1).indices.numpy()
    return probe_cells


def _approximate_pairs(
    unit: np.ndarray, threshold: float, seed: int, bar: tqdm, *, use_bf16: bool = False
) -> Iterator[PairChunk]:
    """Candidate pairs of an IVF-style self-join (may miss pairs split across far cells).

    Every point lives in its nearest k-means cell and probes its nearest cells; pair (i, j) is found when
    j's cell is among i's probes or vice versa. Each cell is joined with its probers by one BLAS product,
    which is what makes this fast on CPU (FAISS's own IVF range search scans lists vector by vector).
    """
    n, dim = unit.shape
    cells, probes = approximate_settings(n)
    probe_cells = _probe_cells(unit, seed, use_bf16, cells, probes)
    margin = float32_margin(dim)
    home = probe_cells[:, 0]
    members_order = np.argsort(home, kind="stable")
    member_bounds = np.searchsorted(home[members_order], np.arange(cells + 1))
    probe_flat = probe_cells.reshape(-1)
    probe_order = np.argsort(probe_flat, kind="stable")
    prober_bounds = np.searchsorted(probe_flat[probe_order], np.arange(cells + 1))
    probers_all = probe_order // probes
    bar.reset(total=cells)
    for cell in range(cells):
        bar.update(1)
        members = members_order[member_bounds[cell] : member_bounds[cell + 1]]
        probers = probers_all[prober_bounds[cell] : prober_bounds[cell + 1]]
        for chunk in range(0, len(probers) if len(members) else 0, 4096):
            who = probers[chunk : chunk + 4096]
            sims = unit[who] @ unit[members].T
            candidate, sure = screen(sims, margin, threshold)
            qi, mi = np.nonzero(candidate)
            a, b = who[qi].astype(np.int64), members[mi].astype(np.int64)
            # Report each pair once: inside one cell as a < b; across cells only from the larger index's
            # home cell, unless the other direction cannot see it (its home is not among b's probes).
            seen_both_ways = (probe_cells[b] == home[a][:, None]).any(axis=1)
            keep = np.where(home[a] == cell, a < b, (a < b) | ~seen_both_ways)
            if keep.any():
                a, b = a[keep], b[keep]
                yield np.minimum(a, b), np.maximum(a, b), sure[keep]


# ----------------------------------------------------------------------------------------------- streaming
# Pre-AVX-512-BF16 CPUs emulate bf16 products; there FAISS's float32 BLAS search is faster.
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


def _pair_source(unit: np.ndarray, settings: dict[str, Any], bar: tqdm) -> Iterator[PairChunk]:
    threshold, backend = settings["sim_threshold"], resolve_backend(settings["backend"])
    if settings["approximate"]:
        return _approximate_pairs(unit, threshold, settings["seed"], bar, use_bf16=backend == "bf16")
    if backend == "bf16":
        return _bf16_pairs(unit, threshold, settings["block_size"], bar)
    return _faiss_pairs(unit, threshold, settings["block_size"], bar)


def _check_settings(sim_threshold: float, label_threshold: float, block_size: int) -> None:
    if not -1.0 <= sim_threshold < 1.0:
        raise BadInputError(f"sim_threshold must be in [-1, 1), got {sim_threshold}")
    if label_threshold <= 0:
        raise BadInputError(f"label_threshold must be > 0, got {label_threshold}")
    if block_size < 1:
        raise BadInputError(f"block_size must be >= 1, got {block_size}")


def iter_links(
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
    counts: dict[str, int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream the DRCDown links as chunks of pairs ``(first, second)``, ``first < second``.

    Each link appears exactly once over all chunks (in no particular order); the chunks are a tile's
    worth of pairs at most, so a consumer that does not keep them needs O(N) memory. ``counts`` (if
    given) receives ``similar_pairs`` and ``links`` as the stream goes.
    """
    feats, labs = _check_inputs(features, labels)
    _check_settings(sim_threshold, label_threshold, block_size)
    unit = unit_rows(feats)
    del feats
    settings = dict(sim_threshold=sim_threshold, approximate=approximate, block_size=block_size,
                    seed=seed, backend=backend)  # fmt: skip
    tally = counts if counts is not None else {}
    tally.update(similar_pairs=0, links=0)
    desc = "prune: cell join" if approximate else "prune: pair search"
    with tqdm(total=len(unit), desc=desc, unit="row", disable=not _show_progress(progress)) as bar:
        for rows, cols, sure in _pair_source(unit, settings, bar):
            similar = decide_similar(unit, rows, cols, sure, sim_threshold)
            rows, cols = rows[similar], cols[similar]
            close = np.abs(labs[rows] - labs[cols]) < label_threshold
            tally["similar_pairs"] += len(rows)
            tally["links"] += int(np.count_nonzero(close))
            if close.any():
                yield rows[close], cols[close]


class LinkForest:
    """Union-find over N samples, vectorised with numpy, fed one chunk of links at a time.

    A union hooks the larger root under the smaller, so parents always point to smaller indices and the
    root of a component is its smallest member, whatever order the links arrive in.
    """

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)
        self.linked = np.zeros(n, dtype=bool)

    def roots(self, nodes: np.ndarray) -> np.ndarray:
        """Root of each node (pointer jumping), compressing the path of the nodes asked about."""
        found = self.parent[nodes]
        while True:
            up = self.parent[found]
            if np.array_equal(up, found):
                break
            found = up
        self.parent[nodes] = found
        return found

    def flatten(self) -> None:
        """Point every node straight at its root (cheaper than :meth:`roots` on more than N nodes)."""
        while True:
            up = self.parent[self.parent]
            if np.array_equal(up, self.parent):
                return
            self.parent = up

    def union(self, first: np.ndarray, second: np.ndarray) -> None:
        self.linked[first] = True
        self.linked[second] = True
        low, high = first, second
        while len(low):
            if len(low) > len(self.parent):
                self.flatten()
                root_low, root_high = self.parent[low], self.parent[high]
            else:
                root_low, root_high = self.roots(low), self.roots(high)
            apart = root_low != root_high
            low = np.minimum(root_low[apart], root_high[apart])
            high = np.maximum(root_low[apart], root_high[apart])
            # several pairs may hook the same root: it takes the smallest partner, the rest go round again
            np.minimum.at(self.parent, high, low)

    def cluster_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """(cluster id per sample, -1 when unlinked; sizes), ids ordered by each cluster's smallest member."""
        cluster_id = np.full(len(self.parent), -1, dtype=np.int64)
        linked_rows = np.flatnonzero(self.linked)
        roots, ids = np.unique(self.roots(linked_rows), return_inverse=True)
        cluster_id[linked_rows] = ids
        return cluster_id, np.bincount(ids, minlength=len(roots)).astype(np.int64)


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
    """The DRCDown redundant clusters, from the streamed links (O(N) memory).

    ``features``: (N, D) array (any float dtype; cosine similarity, so the scale of a row does not matter).
    ``labels``: (N,) on the 0..10 scale. ``approximate`` trades a small share of links for speed at
    millions of rows; ``seed`` only matters there (k-means). ``backend`` picks the exact pair search:
    ``faiss`` (FAISS BLAS range search, float32 screening), ``bf16`` (bf16 GEMM screening) or ``auto``
    (bf16 where the CPU has native bf16 arithmetic). All decide each pair on its canonical float64
    similarity, so they give identical clusters; ``block_size`` (rows per tile) changes nothing either.
    """
    n = np.shape(features)[0] if np.ndim(features) == 2 else 0
    counts: dict[str, int] = {}
    forest: LinkForest | None = None
    for first, second in iter_links(
        features, labels, sim_threshold=sim_threshold, label_threshold=label_threshold,
        approximate=approximate, block_size=block_size, seed=seed, backend=backend, progress=progress,
        counts=counts,
    ):  # fmt: skip
        forest = forest or LinkForest(n)
        forest.union(first, second)
    if forest is None:
        forest = LinkForest(n)
    cluster_id, sizes = forest.cluster_ids()
    return Clusters(cluster_id, sizes, counts.get("links", 0), counts.get("similar_pairs", 0))


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
    block_size: int = 2048,
) -> np.ndarray:
    """Sorted indices (into the input rows) of the samples DRCDown keeps. Labels on the 0..10 scale."""
    clusters = find_clusters(
        features, labels, sim_threshold=sim_threshold, label_threshold=label_threshold,
        approximate=approximate, seed=seed, backend=backend, block_size=block_size,
    )  # fmt: skip
    return np.flatnonzero(keep_mask(clusters, min_cluster=min_cluster, seed=seed))


def official_index_bug(kept: np.ndarray, all_rows: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """The rows the released SynDR-IQA script trains on after DRCDown, bug included (for measurement only).

    DRCDown ran on the rows of the training references only, but ``folders.py`` reads its kept positions
    as positions in the rows of *every* reference, dropped ones included (``all_rows``, same order). Each
    kept position ``k`` therefore selects ``all_rows[k]``; rows of a dropped reference (``dropped``, a mask
    over the rows that ``all_rows`` indexes) are then discarded. From the first dropped reference on, every
    decision lands on another reference's rows, and the last references' rows are never selected.
    """
    rows = np.asarray(all_rows, dtype=np.int64)[np.asarray(kept, dtype=np.int64)]
    return rows[~np.asarray(dropped, dtype=bool)[rows]]


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
        links=clusters.n_links,
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


@dataclass
class PruneConfig:
    """``reshape prune`` options (field names are the CLI option names)."""

    features: str | os.PathLike[str]
    labels: str | os.PathLike[str]
    out: str | os.PathLike[str]
    indices: str | os.PathLike[str] | None = None
    label_scale: str | None = None
    sim_threshold: float = 0.9
    label_threshold: float = 1.0
    min_cluster: int = 20
    seed: int = 0
    approximate: bool = False
    block_size: int = 2048
    backend: str = "auto"
    overwrite: bool = False
    wait: bool = False
    fingerprint: str | None = None
    progress: bool | None = False

    @property
    def indices_path(self) -> Path:
        return Path(self.indices) if self.indices is not None else indices_path_for(self.out)

    def check_options(self) -> None:
        """The option checks that need no file, before any work (``reshape run`` makes them before any
        stage runs)."""
        if not 0 <= int(self.seed) < 2**63:
            raise BadInputError(f"--seed {self.seed}: must be in 0..2^63-1")
        _check_settings(self.sim_threshold, self.label_threshold, self.block_size)
        if self.label_scale is not None:
            parse_label_scale(self.label_scale)


@dataclass
class PruneResult:
    stats: PruneStats
    out: Path
    indices: Path
    seconds: float
    degenerate_features: bool = False

    def summary_lines(self) -> list[str]:
        return [*self.stats.lines(), f"wrote {self.out} and {self.indices}"]


@dataclass
class _Inputs:
    raw: pd.DataFrame  # the label table as written (kept rows of the dmos layout are copied verbatim)
    table: pd.DataFrame
    layout: str
    embeddings: np.ndarray  # one row per table row
    labels: np.ndarray  # 0..10


#: what prune writes: a train table marked as prune's (outputs.artifact_kind), its copy of a table without a
#: schema tag (a KADID-layout dmos.csv), and the indices table; a labels CSV, or the train table label
#: merged, is another stage's artifact and not replaced without --overwrite
OWN_KINDS = ("train@prune", "@prune", "prune_indices")


def _check_outputs(config: PruneConfig) -> tuple[Path, Path]:
    """Output safety before any work: no input overwritten, no foreign or wrong-format file replaced."""
    out, indices = Path(config.out), config.indices_path
    sidecars = [artifacts.sidecar_path(out), artifacts.sidecar_path(indices)]
    if out.resolve() == indices.resolve():
        raise BadInputError(f"{out}: --out and --indices are the same file")
    check_inputs_not_outputs(inputs=[config.features, config.labels], file_outputs=[out, indices, *sidecars])
    for path, option in ((out, "--out"), (indices, "--indices")):
        check_file_output(path, "csv", overwrite=config.overwrite, kinds=OWN_KINDS, option=option)
    for sidecar in sidecars:
        check_file_output(sidecar, "json", overwrite=config.overwrite, option="sidecar")
    need = 2 * Path(config.labels).stat().st_size if Path(config.labels).is_file() else 0
    for path in (out, indices):
        check_writable(path, need_bytes=need)
    return out, indices


def _load_inputs(config: PruneConfig) -> _Inputs:
    """Join the features to the label table by image path and map the labels to 0..10."""
    scale = parse_label_scale(config.label_scale)
    features = artifacts.read_features(config.features)
    raw, table, layout = read_label_table(config.labels)
    if len(table) == 0:
        raise BadInputError(f"{config.labels}: empty input: the table has no rows")
    rows = match_features(
        table["dist_img"].astype(str).tolist(), features.images,
        labels_path=config.labels, features_path=config.features,
    )  # fmt: skip
    labels = labels_to_0_10(table["dmos"].to_numpy(dtype=np.float64), scale, source=config.labels)
    # At 100,000 x 2,048 every copy of the embeddings is 800 MB: skip the gather when rows already line up.
    in_order = len(rows) == len(features) and np.array_equal(rows, np.arange(len(rows)))
    embeddings = features.embeddings if in_order else features.embeddings[rows]
    return _Inputs(raw, table, layout, embeddings, labels)


def _metadata(config: PruneConfig, stats: PruneStats) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "stage": "prune",  # what makes an output prune's own (another stage's table is not replaced)
        "sim_threshold": config.sim_threshold, "label_threshold": config.label_threshold,
        "min_cluster": config.min_cluster, "seed": config.seed, "approximate": config.approximate,
        "label_scale": config.label_scale or "0-10",
        "backend": "approximate" if config.approximate else resolve_backend(config.backend),
        "features": str(config.features), "labels": str(config.labels), "stats": stats.as_dict(),
    }  # fmt: skip
    if config.fingerprint is not None:
        meta["fingerprint"] = config.fingerprint
    return meta


def _write_outputs(
    inputs: _Inputs, clusters: Clusters, kept: np.ndarray, meta: dict[str, Any], out: Path, indices: Path
) -> None:
    decisions = pd.DataFrame(
        {
            "index": np.arange(len(inputs.table), dtype=np.int64),
            "image": inputs.table["dist_img"].astype(str).to_numpy(),
            "cluster": clusters.cluster_id,
            "cluster_size": clusters.size_of_each_sample(),
            "kept": kept,
        }
    )
    artifacts.write_csv(indices, decisions, "prune_indices", meta)
    if inputs.layout == "train":
        pruned = inputs.table.loc[kept].reset_index(drop=True)
        artifacts.write_csv(out, pruned, "train", meta, float_format=None)
    else:
        with atomic_open(out, "w") as fh:
            inputs.raw.loc[kept].to_csv(fh, index=False, lineterminator="\n")
        artifacts.write_json(artifacts.sidecar_path(out), {**artifacts.base_metadata(), **meta})


def run(config: PruneConfig) -> PruneResult:
    """``reshape prune``: guard the outputs, join features and labels, DRCDown, write both tables."""
    started = time.perf_counter()
    config.check_options()
    out, indices = _check_outputs(config)
    with (
        created_folders(out.parent, indices.parent),
        locked_outputs(out, indices, wait=config.wait),
    ):
        for path in (out, indices):
            remove_stale_temps(path.parent, names=[path.name, artifacts.sidecar_path(path).name])
        inputs = _load_inputs(config)
        degenerate = warn_if_degenerate(inputs.embeddings, config.features, log)
        announce("DRCDown: searching %d samples for similar pairs", len(inputs.embeddings))
        clusters = find_clusters(
            inputs.embeddings, inputs.labels, sim_threshold=config.sim_threshold,
            label_threshold=config.label_threshold, approximate=config.approximate,
            block_size=config.block_size, seed=config.seed, backend=config.backend, progress=config.progress,
        )  # fmt: skip
        kept = keep_mask(clusters, min_cluster=config.min_cluster, seed=config.seed)
        stats = prune_stats(clusters, kept)
        _write_outputs(inputs, clusters, kept, _metadata(config, stats), out, indices)
    return PruneResult(stats, out, indices, time.perf_counter() - started, degenerate)


def run_prune(
    features_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    indices_path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> PruneStats:
    """Keyword wrapper of :func:`run` (options as :class:`PruneConfig`); returns the statistics."""
    return run(PruneConfig(features_path, labels_path, out_path, indices_path, **options)).stats
