"""DDCUp selection (paper Algorithm 1): pick new reference images from a candidate pool.

A candidate passes the distance filter when its nearest training reference is farther than ``tau`` (the
median over training refs of the distance to their nearest other training ref) and its farthest training
reference is closer than ``d_max`` (the largest training-to-training distance). Among passing candidates the
official code then repeatedly takes the closest remaining pair (first minimum of the symmetric distance
matrix in row-major order) and deletes the lower-indexed candidate of that pair, until no pair is closer
than ``tau``.

That loop needs an N x N matrix and copies it on every removal. Here it is replaced by an equivalent
backward recursion that never stores the matrix nor the edge list. Processing edges in (distance, i, j)
order, edge (i, j) with i < j deletes i when both are still alive, so node i is deleted at

    T_i = min{ d(i, j) : j > i, d(i, j) < tau, T_j >= d(i, j) }     (T_i = inf: i survives)

(j is still alive when edge (i, j) comes up iff it was not deleted by an earlier edge: its own deletion
edge (T_j, j, k) sorts after (d, i, j) iff T_j > d, or T_j == d since j > i). T only depends on higher
indices, so it is computed from the last candidate down, one block of rows at a time against the columns
above it (half the distance matrix, a block at a time).

Precision: the canonical distance is ``1 - sum(float64(a) * float64(b))`` on the float32 L2-normalised
vectors, summed with numpy's pairwise summation (:func:`pair_distances`), which is deterministic per pair and
exactly symmetric. The bulk of the work uses float32 BLAS products (error far below ``EPS``); every decision
that a float32 value cannot settle (within ``EPS`` of ``tau``, of ``d_max``, of a ``T_j``, or of a row's
minimum) is re-decided on the canonical float64 value, so the result equals the dense official loop run on
canonical distances, bit for bit, whatever the block size or device.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reshape.errors import BadInputError, StageError

log = logging.getLogger("reshape.select")

#: Margin within which a float32 distance is not trusted and the float64 canonical one is used.
EPS = 5e-5
DEFAULT_BLOCK = 1024
#: Passing candidates on which ``approximate=True`` also runs the exact algorithm to report agreement.
AGREEMENT_SAMPLE = 4000


# ---------------------------------------------------------------------------------------------- distances
def normalize_rows(x: np.ndarray, rows: np.ndarray | None = None, *, what: str = "features") -> np.ndarray:
    """L2-normalise ``x`` (or only ``x[rows]``) to a new float32 array, in chunks; zero rows are bad input."""
    x = np.asarray(x, dtype=np.float32)
    n = len(x) if rows is None else len(rows)
    out = np.empty((n, x.shape[1]), dtype=np.float32)
    step = 8192
    for a in range(0, n, step):
        src = x[a : a + step] if rows is None else x[rows[a : a + step]]
        chunk = src.astype(np.float64)
        norms = np.sqrt((chunk * chunk).sum(axis=1))
        if (norms == 0).any():
            i = a + int(np.flatnonzero(norms == 0)[0])
            i = i if rows is None else int(rows[i])
            raise BadInputError(f"{what}, row {i}: embedding is all zeros (cosine distance undefined)")
        out[a : a + step] = (chunk / norms[:, None]).astype(np.float32)
    return out


def pair_distances(a: np.ndarray, b: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Canonical float64 cosine distances between ``a[rows[k]]`` and ``b[cols[k]]`` (normalised inputs)."""
    out = np.empty(len(rows), dtype=np.float64)
    step = 4096
    for s in range(0, len(rows), step):
        pa = a[rows[s : s + step]].astype(np.float64)
        pb = b[cols[s : s + step]].astype(np.float64)
        out[s : s + step] = 1.0 - (pa * pb).sum(axis=1)
    return out


def dense_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Canonical float64 distance matrix (small inputs only: training refs, tests)."""
    out = np.empty((len(a), len(b)), dtype=np.float64)
    b64 = b.astype(np.float64)
    for i in range(len(a)):
        out[i] = 1.0 - (a[i].astype(np.float64)[None, :] * b64).sum(axis=1)
    return out


# ---------------------------------------------------------------------------------------------- result
@dataclass
class Selection:
    """What :func:`select_candidates` found. Distances are cosine distances (1 - cos)."""

    selected: np.ndarray  # ascending candidate indices
    tau: float
    d_max: float
    counts: dict[str, int]
    nearest_train_distance: np.ndarray  # per selected candidate
    farthest_train_distance: np.ndarray
    neighbour_indices: np.ndarray  # (n_selected, k) training rows, nearest first
    neighbour_distances: np.ndarray  # (n_selected, k)
    passed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # after the distance filter
    approximate: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- filter
def _train_stats(train: np.ndarray, tau_quantile: float) -> tuple[float, float]:
    dist = dense_distances(train, train)
    d_max = float(dist.max())
    # The official code fills the diagonal with 1 before taking row minima (not +inf), so a ref whose
    # nearest neighbour is farther than 1 counts as 1; kept for parity (moot for non-negative features).
    np.fill_diagonal(dist, 1.0)
    nearest_other = dist.min(axis=1)
    tau = (
        float(np.median(nearest_other))
        if tau_quantile == 0.5
        else float(np.quantile(nearest_other, tau_quantile))
    )
    return tau, d_max


def _candidate_train_distances(
    cand_raw: np.ndarray, train: np.ndarray, tau: float, d_max: float, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per raw candidate: nearest and farthest training distance, and the pass mask, decided exactly."""
    n = len(cand_raw)
    nearest = np.empty(n, np.float64)
    farthest = np.empty(n, np.float64)
    train_t = np.ascontiguousarray(train.T)
    step = 8192
    for a in range(0, n, step):
        idx = np.arange(a, min(a + step, n))
        d32 = 1.0 - normalize_rows(cand_raw, idx, what=what) @ train_t
        nearest[a : a + step] = d32.min(axis=1)
        farthest[a : a + step] = d32.max(axis=1)
    # rows whose float32 extremes are too close to a threshold: recompute their whole row canonically
    unsure = np.flatnonzero((np.abs(nearest - tau) <= EPS) | (np.abs(farthest - d_max) <= EPS))
    if len(unsure):
        exact = dense_distances(normalize_rows(cand_raw, unsure, what=what), train)
        nearest[unsure] = exact.min(axis=1)
        farthest[unsure] = exact.max(axis=1)
    passed = (nearest > tau) & (farthest < d_max)
    return nearest, farthest, passed


# ---------------------------------------------------------------------------------------------- redundancy
class _Matmul:
    """Block products on CPU (numpy BLAS) or CUDA (torch); only float32 screening values come from here."""

    def __init__(self, x: np.ndarray, device: str) -> None:
        self.x = x
        self.device = device
        if device == "cuda":
            import torch

            self.torch = torch
            self.xt = torch.from_numpy(x).to("cuda")

    def block(self, a: int, b: int, c: int) -> np.ndarray:
        """Distances of rows [a, b) against columns [c, n), float32."""
        if self.device == "cuda":
            xt = self.xt
            return (1.0 - xt[a:b] @ xt[c:].T).cpu().numpy()
        out = self.x[a:b] @ self.x[c:].T
        np.subtract(1.0, out, out=out)
        return out


def _resolve_rows(
    x: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    d32: np.ndarray,
    t_cols: np.ndarray,
    tau: float,
    n_rows: int,
    row_offset: int,
) -> tuple[np.ndarray, int]:
    """Entries (local row, global col) with float32 distance ``d32`` and column deletion times ``t_cols``.

    Returns each local row's minimum valid canonical distance (inf if none) and the exact number of
    entries closer than tau.
    """
    certain_valid = (d32 < tau - EPS) & (d32 < t_cols - EPS)
    maybe_valid = (d32 < tau + EPS) & (d32 <= t_cols + EPS)
    # the minimum over certainly valid entries bounds which other entries could still be the row minimum
    row_min = np.full(n_rows, np.inf)
    if certain_valid.any():
        np.minimum.at(row_min, rows[certain_valid], d32[certain_valid])
    near_min = maybe_valid & (d32 <= row_min[rows] + 2 * EPS)
    near_tau = np.abs(d32 - tau) <= EPS
    check = near_min | near_tau
    n_close = int(((d32 < tau - EPS) & ~check).sum())
    ck = np.flatnonzero(check)
    d64 = pair_distances(x, x, rows[ck] + row_offset, cols[ck])
    if len(ck):
        # the exactness argument needs |float32 - float64| < EPS; checked on every re-decided entry
        worst = float(np.abs(d64 - d32[ck]).max())
        if worst > EPS / 2:
            raise StageError(f"float32 screening error {worst:.2e} exceeds the margin {EPS / 2:.1e}")
    n_close += int((d64 < tau).sum())
    valid = (d64 < tau) & (d64 <= t_cols[ck])
    out_min = np.full(n_rows, np.inf)
    np.minimum.at(out_min, rows[ck[valid]], d64[valid])
    return out_min, n_close


def deletion_distances(
    x: np.ndarray, tau: float, *, block: int = DEFAULT_BLOCK, device: str = "cpu", progress: bool = False
) -> tuple[np.ndarray, int]:
    """T_i for each row of the normalised ``x`` (inf = kept) and the number of pairs closer than tau."""
    from tqdm import tqdm

    n = len(x)
    t = np.full(n, np.inf)
    n_close = 0
    mm = _Matmul(x, device)
    starts = list(range(((n - 1) // block) * block, -1, -block)) if n else []
    bar = tqdm(total=n, desc="redundancy", unit="cand", disable=not progress, leave=False)
    for a in starts:
        b = min(a + block, n)
        dist = mm.block(a, b, a)  # rows [a, b) x columns [a, n)
        m = b - a
        row_best = np.full(m, np.inf)
        # columns above the block: their T is final, decide all rows at once
        if b < n:
            outer = dist[:, m:]
            t_outer = t[b:]
            r, c = np.nonzero(outer < tau + EPS)
            if len(r):
                row_best, k = _resolve_rows(x, r, c + b, outer[r, c], t_outer[c], tau, m, a)
                n_close += k
        # columns inside the block depend on T of rows just resolved: go down one row at a time
        inner = dist[:, :m]
        for i in range(m - 1, -1, -1):
            d32 = inner[i, i + 1 :]
            cc = np.flatnonzero(d32 < tau + EPS)
            if len(cc):
                cc_global = cc + a + i + 1
                best, k = _resolve_rows(
                    x, np.zeros(len(cc), np.int64), cc_global, d32[cc], t[cc_global], tau, 1, a + i
                )
                n_close += k
                row_best[i] = min(row_best[i], float(best[0]))
            t[a + i] = row_best[i]
        bar.update(m)
    bar.close()
    return t, n_close


# ---------------------------------------------------------------------------------------------- approximate
def approximate_deletion_distances(
    x: np.ndarray,
    tau: float,
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    target_recall: float = 0.995,
    seed: int = 0,
    progress: bool = False,
    stats: dict[str, Any] | None = None,
) -> tuple[np.ndarray, int]:
    """Like :func:`deletion_distances`, but only pairs that share an inverted list are compared.

    An IVF search done by hand: FAISS k-means makes ``nlist`` coarse centroids, every vector probes its
    ``nprobe`` nearest ones, and each inverted list is compared (one BLAS product) against the vectors that
    probe it; a pair is found when either side probes the other's list. FAISS's own IVF range search scans
    lists one vector at a time and measured ~30x slower here. ``nprobe=None`` picks the smallest power of two
    whose pair recall, measured exactly on a sample of 256 vectors, reaches ``target_recall``. Distances are
    float32 and missed pairs keep candidates: the result may differ slightly from the exact one.
    """
    import faiss
    from tqdm import tqdm

    n, dim = x.shape
    t = np.full(n, np.inf)
    if n < 2:
        return t, 0
    nlist = nlist or int(np.clip(round(math.sqrt(n) / 1.5), 1, 256))
    rng = np.random.default_rng(seed)
    n_train = min(n, nlist * 40)
    sample = x[np.sort(rng.choice(n, n_train, replace=False))]
    km = faiss.Kmeans(
        dim, nlist, niter=8, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1
    )
    km.train(sample)
    quantizer = faiss.IndexFlatIP(dim)
    quantizer.add(km.centroids)
    max_probe = min(nlist, nprobe or 64)
    _, probes = quantizer.search(x, max_probe)
    home = probes[:, 0]
    if nprobe is None:
        nprobe, recall = _pick_nprobe(x, tau, probes, home, rng, target_recall)
    else:
        nprobe = min(nprobe, nlist)
        recall = float("nan")
    if stats is not None:
        stats.update({"nlist": nlist, "nprobe": nprobe, "estimated_pair_recall": recall})
    probes = probes[:, :nprobe]
    order = np.argsort(home, kind="stable")
    bounds = np.searchsorted(home[order], np.arange(nlist + 1))
    edges_i, edges_j, edges_d = [], [], []
    bar = tqdm(total=nlist, desc="redundancy (approx)", unit="list", disable=not progress, leave=False)
    for c in range(nlist):
        members = order[bounds[c] : bounds[c + 1]]
        queries = np.flatnonzero((probes == c).any(axis=1))
        if len(members) and len(queries):
            d32 = 1.0 - x[queries] @ x[members].T
            r, k = np.nonzero(d32 < tau)
            qi, mj = queries[r], members[k]
            # pair {i < j} is kept once: from query i's side when i probes j's list, else from j's side
            from_low = qi < mj
            from_high = (qi > mj) & ~(probes[mj] == home[qi][:, None]).any(axis=1)
            keep = from_low | from_high
            edges_i.append(np.where(from_low, qi, mj)[keep].astype(np.int32))
            edges_j.append(np.where(from_low, mj, qi)[keep].astype(np.int32))
            edges_d.append(d32[r, k][keep])
            del d32, r, k, qi, mj
        bar.update(1)
    bar.close()
    ei = np.concatenate(edges_i) if edges_i else np.zeros(0, np.int32)
    del edges_i
    by_row = np.argsort(ei, kind="stable")
    ei = ei[by_row]
    ej = np.concatenate(edges_j)[by_row] if edges_j else np.zeros(0, np.int32)
    del edges_j
    ed = np.concatenate(edges_d)[by_row] if edges_d else np.zeros(0, np.float32)
    del edges_d, by_row
    starts = np.searchsorted(ei, np.arange(n + 1))
    for i in np.flatnonzero(np.diff(starts))[::-1]:
        j, d = ej[starts[i] : starts[i + 1]], ed[starts[i] : starts[i + 1]].astype(np.float64)
        ok = t[j] >= d
        if ok.any():
            t[i] = d[ok].min()
    return t, len(ei)


def _pick_nprobe(
    x: np.ndarray, tau: float, probes: np.ndarray, home: np.ndarray, rng: np.random.Generator, target: float
) -> tuple[int, float]:
    """Smallest power-of-two nprobe whose recall of pairs closer than tau reaches ``target`` on a sample."""
    n = len(x)
    rows = np.sort(rng.choice(n, min(n, 256), replace=False))
    d32 = 1.0 - x[rows] @ x.T
    r, j = np.nonzero(d32 < tau)
    s = rows[r]
    keep = s != j
    s, j = s[keep], j[keep]
    recall = 1.0
    p = 1
    while True:
        if len(s) == 0:
            return min(4, probes.shape[1]), 1.0
        found = (probes[s, :p] == home[j][:, None]).any(axis=1) | (probes[j, :p] == home[s][:, None]).any(
            axis=1
        )
        recall = float(found.mean())
        if recall >= target or p >= probes.shape[1]:
            return p, recall
        p = min(2 * p, probes.shape[1])


# ---------------------------------------------------------------------------------------------- core
def _check_array(x: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise BadInputError(f"{what}: expected a 2-D (n, dim) array, got shape {arr.shape}")
    if len(arr) == 0:
        raise BadInputError(f"{what}: empty set (0 rows)")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise BadInputError(f"{what}, row {int(np.flatnonzero(bad)[0])}: embedding has NaN or inf values")
    return np.ascontiguousarray(arr, dtype=np.float32)


def select_candidates(
    train_features: np.ndarray,
    candidate_features: np.ndarray,
    *,
    tau_quantile: float = 0.5,
    k: int = 5,
    max_select: int | None = None,
    approximate: bool = False,
    block: int = DEFAULT_BLOCK,
    device: str = "cpu",
    nprobe: int | None = None,
    progress: bool = False,
    train_name: str = "train features",
    candidate_name: str = "candidate features",
) -> Selection:
    """DDCUp on raw (un-normalised) embeddings; returns the selected candidates and statistics.

    ``max_select`` keeps, of the selected candidates, the ones nearest to the training set (smallest
    nearest-training distance, then lowest index), still reported in ascending index order.
    """
    train = _check_array(train_features, train_name)
    cand = _check_array(candidate_features, candidate_name)
    if len(train) < 2:
        raise BadInputError(f"{train_name}: need at least 2 training references, got {len(train)}")
    if train.shape[1] != cand.shape[1]:
        raise BadInputError(
            f"{candidate_name}: embedding dimension {cand.shape[1]} differs from"
            f" {train_name} ({train.shape[1]})"
        )
    if not 0.0 <= tau_quantile <= 1.0:
        raise BadInputError(f"tau quantile {tau_quantile} is outside [0, 1]")
    if k < 1:
        raise BadInputError(f"k = {k}: need at least 1 nearest training reference")
    if max_select is not None and max_select < 0:
        raise BadInputError(f"max_select = {max_select} is negative")
    train_n = normalize_rows(train, what=train_name)

    tau, d_max = _train_stats(train_n, tau_quantile)
    nearest, farthest, passed_mask = _candidate_train_distances(cand, train_n, tau, d_max, candidate_name)
    passed = np.flatnonzero(passed_mask)
    counts = {
        "n_train": len(train_n),
        "n_candidates": len(cand),
        "n_pass_nearest": int((nearest > tau).sum()),
        "n_pass_farthest": int((farthest < d_max).sum()),
        "n_after_distance_filter": len(passed),
    }
    # only the passing candidates are normalised and kept: one extra copy at most
    sub = normalize_rows(cand, passed, what=candidate_name)
    extra: dict[str, Any] = {}
    if approximate:
        t, n_close = approximate_deletion_distances(sub, tau, nprobe=nprobe, progress=progress, stats=extra)
        # how far from exact: run both on a sample of the passing candidates
        rng = np.random.default_rng(0)
        probe_rows = np.sort(rng.choice(len(sub), min(len(sub), AGREEMENT_SAMPLE), replace=False))
        sample = np.ascontiguousarray(sub[probe_rows])
        t_exact, _ = deletion_distances(sample, tau, block=block, device=device)
        t_approx, _ = approximate_deletion_distances(sample, tau, nprobe=nprobe)
        extra["agreement_sample"] = len(sample)
        extra["agreement_with_exact"] = agreement(
            np.flatnonzero(np.isinf(t_exact)), np.flatnonzero(np.isinf(t_approx))
        )
    else:
        t, n_close = deletion_distances(sub, tau, block=block, device=device, progress=progress)
    kept_local = np.flatnonzero(np.isinf(t))
    counts["n_close_pairs"] = n_close
    counts["n_removed_redundant"] = len(passed) - len(kept_local)
    counts["n_after_redundancy"] = len(kept_local)

    if max_select is not None and len(kept_local) > max_select:
        order = np.lexsort((kept_local, nearest[passed[kept_local]]))
        kept_local = np.sort(kept_local[order[:max_select]])
    counts["n_selected"] = len(kept_local)
    selected = passed[kept_local]

    # final report distances: canonical float64 for the (few) selected candidates
    kk = min(k, len(train_n))
    exact = dense_distances(sub[kept_local], train_n) if len(kept_local) else np.zeros((0, len(train_n)))
    nn_idx = np.argsort(exact, axis=1, kind="stable")[:, :kk]
    nn_d = np.take_along_axis(exact, nn_idx, axis=1)
    return Selection(
        selected=selected.astype(np.int64),
        tau=tau,
        d_max=d_max,
        counts=counts,
        nearest_train_distance=exact.min(axis=1) if len(kept_local) else np.zeros(0),
        farthest_train_distance=exact.max(axis=1) if len(kept_local) else np.zeros(0),
        neighbour_indices=nn_idx.astype(np.int64),
        neighbour_distances=nn_d,
        passed=passed.astype(np.int64),
        approximate=approximate,
        extra=extra,
    )


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard agreement of two selections (1.0 = identical sets)."""
    sa, sb = set(np.asarray(a).tolist()), set(np.asarray(b).tolist())
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


# ---------------------------------------------------------------------------------------------- I/O shell
def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda"):
        raise BadInputError(f"--device {device!r}: choose auto, cpu or cuda")
    if device == "cpu":
        return "cpu"
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a base dependency
        has_cuda = False
    if device == "cuda" and not has_cuda:
        raise BadInputError("--device cuda: CUDA is not available on this machine")
    return "cuda" if has_cuda else "cpu"


def run_select(
    train_path: str | Path,
    candidates_path: str | Path,
    out_path: str | Path,
    *,
    tau_quantile: float = 0.5,
    k: int = 5,
    max_select: int | None = None,
    approximate: bool = False,
    device: str = "auto",
    plot_path: str | Path | None = None,
    fingerprint: str | None = None,
    progress: bool = False,
) -> Selection:
    """Read two features artifacts, run DDCUp, write the selection Parquet (and optional plot)."""
    import pandas as pd
    import pyarrow as pa

    from reshape.artifacts import read_features, write_parquet

    train = read_features(train_path)
    cand = read_features(candidates_path)
    if train.metadata.get("encoder") != cand.metadata.get("encoder"):
        log.warning(
            "training features use encoder %r but candidates use %r: distances are not comparable",
            train.metadata.get("encoder"),
            cand.metadata.get("encoder"),
        )
    result = select_candidates(
        train.embeddings,
        cand.embeddings,
        tau_quantile=tau_quantile,
        k=k,
        max_select=max_select,
        approximate=approximate,
        device=resolve_device(device),
        progress=progress,
        train_name=str(train_path),
        candidate_name=str(candidates_path),
    )
    sel = result.selected
    train_images = np.asarray(train.images, dtype=object)
    frame: pd.DataFrame = cand.frame.iloc[sel]
    table = pa.table(
        {
            "candidate_index": pa.array(sel, type=pa.int64()),
            "image": pa.array(frame["image"].astype(str).tolist(), type=pa.string()),
            "sha256": pa.array(frame["sha256"].astype(str).tolist(), type=pa.string()),
            "nearest_train_distance": pa.array(result.nearest_train_distance.astype(np.float32)),
            "farthest_train_distance": pa.array(result.farthest_train_distance.astype(np.float32)),
            "neighbour_images": pa.array(
                [train_images[row].tolist() for row in result.neighbour_indices], type=pa.list_(pa.string())
            ),
            "neighbour_distances": pa.array(
                [row.astype(np.float32).tolist() for row in result.neighbour_distances],
                type=pa.list_(pa.float32()),
            ),
        }
    )
    meta: dict[str, Any] = {
        "tau": result.tau,
        "d_max": result.d_max,
        "tau_quantile": tau_quantile,
        "k": k,
        "n_train": result.counts["n_train"],
        "n_candidates": result.counts["n_candidates"],
        "n_after_distance_filter": result.counts["n_after_distance_filter"],
        "n_selected": result.counts["n_selected"],
        "steps": result.counts,
        "train_features": str(train_path),
        "candidate_features": str(candidates_path),
        "image_root": cand.image_root,
        "train_image_root": train.image_root,
        "encoder": cand.metadata.get("encoder"),
        "approximate": approximate,
        "max_select": max_select,
    }
    if result.extra:
        meta["approximate_check"] = result.extra
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint
    write_parquet(out_path, table, "selection", meta)
    if plot_path is not None:
        plot_selection(plot_path, train.embeddings, cand.embeddings, result)
    return result


def summary_lines(result: Selection) -> list[str]:
    c = result.counts
    mode = "approximate (FAISS IVF)" if result.approximate else "exact"
    return [
        f"tau = {result.tau:.6f}   d_max = {result.d_max:.6f}   ({mode})",
        f"training refs           {c['n_train']:>9}",
        f"candidates              {c['n_candidates']:>9}",
        f"  nearest train > tau   {c['n_pass_nearest']:>9}",
        f"  farthest train < d_max{c['n_pass_farthest']:>9}",
        f"  both (distance filter){c['n_after_distance_filter']:>9}",
        f"  pairs closer than tau {c['n_close_pairs']:>9}",
        f"  removed as redundant  {c['n_removed_redundant']:>9}",
        f"selected                {c['n_selected']:>9}",
    ] + (
        [
            "approximate: nlist {nlist}, nprobe {nprobe}, estimated pair recall {estimated_pair_recall:.4f}; "
            "agreement with exact on {agreement_sample} passing candidates: "
            "{agreement_with_exact:.4f}".format(**result.extra)
        ]
        if result.extra
        else []
    )


def plot_selection(
    path: str | Path, train: np.ndarray, cand: np.ndarray, result: Selection, seed: int = 0
) -> None:
    """2-D map of training refs, candidates (a sample) and selected ones: UMAP if installed, else PCA."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reshape.fileio import atomic_path

    rng = np.random.default_rng(seed)
    others = np.setdiff1d(np.arange(len(cand)), result.selected)
    if len(others) > 5000:
        others = np.sort(rng.choice(others, 5000, replace=False))
    pts = normalize_rows(np.concatenate([train, cand[others], cand[result.selected]]))
    nt, no = len(train), len(others)
    method = "PCA"
    try:
        import umap  # type: ignore[import-not-found]

        xy = umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit_transform(pts)
        method = "UMAP"
    except ImportError:
        centred = pts - pts.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    ax.scatter(xy[nt : nt + no, 0], xy[nt : nt + no, 1], s=3, c="0.75", label=f"candidates ({len(cand)})")
    ax.scatter(xy[:nt, 0], xy[:nt, 1], s=18, c="tab:blue", label=f"training refs ({nt})")
    ax.scatter(
        xy[nt + no :, 0],
        xy[nt + no :, 1],
        s=18,
        c="tab:red",
        marker="x",
        label=f"selected ({len(result.selected)})",
    )
    ax.set_title(f"DDCUp selection ({method}), tau={result.tau:.3f}")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
