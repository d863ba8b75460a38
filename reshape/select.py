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

``approximate=True`` runs the same recursion with bfloat16 screening products on CPU (about twice the float32
BLAS rate on AVX512-BF16 CPUs, see :class:`_Matmul`) and per-entry margins of twice their error bound (~1.3e-3
at tau on 2,048-d features instead of ``EPS``); entries inside the margin are refined in float32, then
decided as above. It is not exact by proof: the bound covers the rounding of the result rigorously but the
rounding of the inputs statistically (verified on every refined entry). Its measured agreement with exact
is reported. Cheaper approximations were measured and rejected: the removal cascade is chaotic, so
PCA-projected distances (256-512 d, errors ~0.01) kept only 30-37 % of the same set on the benchmark's
features, and FAISS IVF lists needed most lists for 99.5 % pair recall.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reshape.errors import BadInputError, StageError
from reshape.steps import announce

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


def _pair_distances32(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Float32 distances ``1 - x[rows[k]] . x[cols[k]]`` (error ~1e-6, far below EPS).

    Entries come grouped by row (row-major ``nonzero`` order): one gathered matrix-vector product per run of
    equal rows, so each row vector is read once.
    """
    out = np.empty(len(rows), dtype=np.float32)
    if len(rows) == 0:
        return out
    starts = np.concatenate(([0], np.flatnonzero(np.diff(rows)) + 1, [len(rows)]))
    for s, e in zip(starts[:-1].tolist(), starts[1:].tolist()):
        out[s:e] = x[cols[s:e]] @ x[rows[s]]
    np.subtract(np.float32(1.0), out, out=out)
    return out


def dense_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Canonical float64 distance matrix (small inputs only: training refs, tests)."""
    out = np.empty((len(a), len(b)), dtype=np.float64)
    b64 = b.astype(np.float64)
    for i in range(len(a)):
        out[i] = 1.0 - (a[i].astype(np.float64)[None, :] * b64).sum(axis=1)
    return out


# ---------------------------------------------------------------------------------------------- degeneracy
#: Spread of pairwise cosine similarity (5th to 95th percentile) below which embeddings cannot tell images
#: apart. A randomly initialised ResNet-50 maps every image to nearly the same direction (spread ~1e-3,
#: the tau of 0.0005 of issue #16); trained encoders spread pairs over tenths.
DEGENERATE_SPREAD = 0.02
SPREAD_SAMPLE = 256


def similarity_spread(features: np.ndarray, *, sample: int = SPREAD_SAMPLE, seed: int = 0) -> float:
    """95th minus 5th percentile of the pairwise cosine similarity of a deterministic sample of rows.

    The sample is ``sample`` rows drawn by ``default_rng(seed)`` (all rows when fewer); all-zero rows are
    left out, and so are rows with NaN or inf. ``inf`` when fewer than 4 rows remain (too few to judge).
    """
    x = np.asarray(features)
    if x.ndim != 2 or len(x) < 4:
        return math.inf
    rows = np.sort(np.random.default_rng(seed).choice(len(x), min(len(x), sample), replace=False))
    sub = x[rows].astype(np.float64)
    sub = sub[np.isfinite(sub).all(axis=1)]
    norms = np.sqrt((sub * sub).sum(axis=1))
    sub = sub[norms > 0] / norms[norms > 0, None]
    if len(sub) < 4:
        return math.inf
    cosines = (sub @ sub.T)[np.triu_indices(len(sub), 1)]
    low, high = np.percentile(cosines, [5, 95])
    return float(high - low)


def warn_if_degenerate(features: np.ndarray, what: object, logger: logging.Logger = log) -> bool:
    """Log one warning line when ``features`` cannot discriminate (see :data:`DEGENERATE_SPREAD`)."""
    spread = similarity_spread(features)
    if spread >= DEGENERATE_SPREAD:
        return False
    logger.warning(
        "%s: the features cannot discriminate images: pairwise cosine similarity varies by only %.2g "
        "(5th-95th percentile, < %g), typical of an encoder with random weights (--weights none); "
        "distances, tau and clusters computed from them are not meaningful",
        what, spread, DEGENERATE_SPREAD,
    )  # fmt: skip
    return True


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
#: ``device`` values of the core: ``numpy`` (BLAS through numpy, what ``--device auto`` uses without CUDA),
#: ``cpu`` and ``cuda`` (the same torch code on either device).
DEVICES = ("numpy", "cpu", "cuda")


class _Matmul:
    """Block products with numpy BLAS or torch (on CPU or CUDA); only screening values come from here.

    ``precision="bfloat16"`` (CPU, used by ``approximate=True``; needs ``tau``) multiplies bfloat16 matrices
    with torch (about twice the float32 BLAS rate on AVX512-BF16 CPUs), arranged so that the product
    itself is ``tau - d``: rows are ``[a - m, u_a, 1]`` and columns ``[b - m, 1, u_b]`` with
    ``u = m.a - (m.m + 1 - tau) / 2`` split into three bfloat16 parts (exact to ~2^-24), since
    ``a.b = (a-m).(b-m) + m.a + m.b - m.m``. The bfloat16 rounding of the result is then relative to
    ``|tau - d|``: tiny where the tau decisions are taken. :meth:`margins` gives per-entry margins.
    """

    def __init__(self, x: np.ndarray, device: str, precision: str = "float32", tau: float = 0.0) -> None:
        if device not in DEVICES:
            raise BadInputError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
        self.x = x
        self.device = device
        self.precision = precision if device != "cuda" else "float32"
        self.tau = tau
        if self.precision == "bfloat16":
            self._init_bfloat16(x, tau)
        elif device != "numpy":
            import torch

            self.xt = torch.from_numpy(x).to(device)

    def _init_bfloat16(self, x: np.ndarray, tau: float) -> None:
        import torch

        self.torch = torch
        n, dim = x.shape
        mean64 = x.mean(axis=0, dtype=np.float64)
        mean = torch.from_numpy(mean64.astype(np.float32))
        constant = (float(mean64 @ mean64) + 1.0 - tau) / 2
        # built in chunks: no full float32 or float64 copy of x
        self.rows16 = torch.empty((n, dim + 6), dtype=torch.bfloat16)
        self.cols16 = torch.empty((n, dim + 6), dtype=torch.bfloat16)
        fourth = 0.0
        step = 8192
        for a in range(0, n, step):
            chunk = x[a : a + step]
            centred = torch.from_numpy(chunk) - mean
            fourth = max(fourth, float(centred.square().square().sum(dim=1).sqrt().max()))
            c16 = centred.to(torch.bfloat16)
            rest = torch.from_numpy(chunk.astype(np.float64) @ mean64 - constant)
            parts = []
            for _ in range(3):
                parts.append(rest.to(torch.bfloat16))
                rest = rest - parts[-1].double()
            split = torch.stack(parts, dim=1)
            self.rows16[a : a + step, :dim] = c16
            self.rows16[a : a + step, dim : dim + 3] = split
            self.rows16[a : a + step, dim + 3 :] = 1
            self.cols16[a : a + step, :dim] = c16
            self.cols16[a : a + step, dim : dim + 3] = 1
            self.cols16[a : a + step, dim + 3 :] = split
        # Error of the product before its own rounding: the inputs round by <= 2^-8 relative each; the
        # resulting sum_k ca_k cb_k (e_k + e'_k) has independent signed terms, standard deviation
        # <= 2^-8 sqrt(2/3) sqrt(sum ca_k^2 cb_k^2) <= 2^-8 sqrt(2/3) max_a ||ca^2||_2 (Cauchy-Schwarz);
        # 6 of those are allowed (the worst case, 2^-7 |ca||cb|, would be ~100x more on 2,048-d features),
        # plus float32 accumulation. The result's own rounding is <= 2^-8 |tau - d|.
        self.abs_term = 6 * 2.0**-8 * math.sqrt(2 / 3) * fourth + 2e-5
        self.rel_term = 2.0**-8 * (1 + 2.0**-6)

    def margins(self, dist: np.ndarray) -> np.ndarray | float:
        """Per-entry margin (twice the error bound) of screening distances ``dist``; EPS for float32."""
        if self.precision != "bfloat16":
            return EPS
        return (2 * self.rel_term) * np.abs(dist - np.float32(self.tau)) + np.float32(2 * self.abs_term)

    def filter_threshold(self) -> float:
        """Entries at or above this screening distance are certainly not closer than tau."""
        if self.precision != "bfloat16":
            return self.tau + EPS
        return self.tau + 2 * self.abs_term / (1 - 2 * self.rel_term) + 1e-7

    def block_entries(
        self, a: int, b: int, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """bfloat16 screening of rows [a, b) against columns [a, n) without a float32 copy of the block.

        Returns the (local row, column - b) entries of the columns above the block whose distance is below
        ``threshold``, their distances, and the float32 distances inside the block (m x m).
        """
        torch = self.torch
        prod = self.rows16[a:b] @ self.cols16[a:].T  # tau - d, bfloat16
        m = b - a
        inner = np.float32(self.tau) - prod[:, :m].float().numpy()
        # tau - d > tau - threshold; 1e-5 below it absorbs the bfloat16 rounding of the cut itself
        cut = self.tau - threshold - 1e-5
        hits = torch.nonzero(prod[:, m:] > cut)
        r, c = hits[:, 0].numpy(), hits[:, 1].numpy()
        dist = np.float32(self.tau) - prod[:, m:][hits[:, 0], hits[:, 1]].float().numpy()
        return r, c, dist, inner

    def block(self, a: int, b: int, c: int) -> np.ndarray:
        """Distances of rows [a, b) against columns [c, n), float32."""
        if self.precision == "bfloat16":
            out = (self.rows16[a:b] @ self.cols16[c:].T).float().numpy()  # tau - d
            np.subtract(np.float32(self.tau), out, out=out)
            return out
        if self.device != "numpy":
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


def _resolve_rows_coarse(
    x: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    d16: np.ndarray,
    t_cols: np.ndarray,
    tau: float,
    n_rows: int,
    row_offset: int,
    mm: _Matmul,
) -> tuple[np.ndarray, int]:
    """:func:`_resolve_rows` for bfloat16 screening values ``d16`` with per-entry margins.

    Entries the margins cannot settle are recomputed as float32 dot products and handed to
    :func:`_resolve_rows`, which decides them exactly as the float32 screening would.
    """
    eps = mm.margins(d16)
    certain_valid = (d16 < tau - eps) & (d16 < t_cols - eps)
    maybe_valid = (d16 < tau + eps) & (d16 <= t_cols + eps)
    # an entry can only be its row's minimum if its lower bound is below every certain entry's upper bound
    row_upper = np.full(n_rows, np.inf)
    if certain_valid.any():
        np.minimum.at(row_upper, rows[certain_valid], (d16 + eps)[certain_valid])
    near_min = maybe_valid & (d16 - eps <= row_upper[rows])
    near_tau = np.abs(d16 - tau) <= eps
    check = near_min | near_tau
    n_close = int(((d16 < tau - eps) & ~check).sum())
    ck = np.flatnonzero(check)
    refined = _pair_distances32(x, rows[ck] + row_offset, cols[ck])
    if len(ck):
        # margins are twice the (partly statistical) error bound: verified on every refined entry
        excess = np.abs(refined - d16[ck]) - (eps[ck] / 2 - EPS)
        if float(excess.max()) > 0:
            k = int(np.argmax(excess))
            raise StageError(
                f"bfloat16 screening error {abs(refined[k] - d16[ck][k]):.2e} exceeds its bound"
                f" {eps[ck][k] / 2 - EPS:.1e}; run without --approximate"
            )
    fine_min, fine_close = _resolve_rows(x, rows[ck], cols[ck], refined, t_cols[ck], tau, n_rows, row_offset)
    return fine_min, n_close + fine_close


def deletion_distances(
    x: np.ndarray,
    tau: float,
    *,
    block: int = DEFAULT_BLOCK,
    device: str = "numpy",
    precision: str = "float32",
    progress: bool = False,
    stats: dict[str, Any] | None = None,
) -> tuple[np.ndarray, int]:
    """T_i for each row of the normalised ``x`` (inf = kept) and the number of pairs closer than tau.

    ``precision="bfloat16"`` screens with bfloat16 products (see :class:`_Matmul`) with per-entry margins
    of twice their error bound; unsure entries are refined in float32, then float64 as usual.
    """
    from tqdm import tqdm

    n = len(x)
    t = np.full(n, np.inf)
    n_close = 0
    if n < 2:
        precision = "float32"  # nothing to compare: skip building bfloat16 copies of an empty set
    mm = _Matmul(x, device, precision, tau)
    resolve = _resolve_rows
    threshold = tau + EPS
    if mm.precision == "bfloat16":
        resolve = functools.partial(_resolve_rows_coarse, mm=mm)
        threshold = mm.filter_threshold()
    if stats is not None:
        stats["screening"] = "float32" if device == "numpy" else f"float32 (torch, {device})"
        stats["screening"] = "bfloat16" if mm.precision == "bfloat16" else stats["screening"]
        stats["margin_at_tau"] = float(mm.margins(np.float32(tau)))
    starts = list(range(((n - 1) // block) * block, -1, -block)) if n else []
    bar = tqdm(total=n, desc="redundancy", unit="cand", disable=not progress, leave=False)
    for a in starts:
        b = min(a + block, n)
        m = b - a
        row_best = np.full(m, np.inf)
        if mm.precision == "bfloat16":
            # screen the bfloat16 products as they are; only entries below the threshold are converted
            r, c, outer_d, inner = mm.block_entries(a, b, threshold)
            if len(r):
                row_best, k = resolve(x, r, c + b, outer_d, t[b:][c], tau, m, a)
                n_close += k
        else:
            dist = mm.block(a, b, a)  # rows [a, b) x columns [a, n)
            # columns above the block: their T is final, decide all rows at once
            if b < n:
                outer = dist[:, m:]
                t_outer = t[b:]
                r, c = np.nonzero(outer < threshold)
                if len(r):
                    row_best, k = resolve(x, r, c + b, outer[r, c], t_outer[c], tau, m, a)
                    n_close += k
            inner = dist[:, :m]
        # columns inside the block depend on T of rows just resolved: go down one row at a time
        for i in range(m - 1, -1, -1):
            d32 = inner[i, i + 1 :]
            cc = np.flatnonzero(d32 < threshold)
            if len(cc):
                cc_global = cc + a + i + 1
                best, k = resolve(
                    x, np.zeros(len(cc), np.int64), cc_global, d32[cc], t[cc_global], tau, 1, a + i
                )
                n_close += k
                row_best[i] = min(row_best[i], float(best[0]))
            t[a + i] = row_best[i]
        bar.update(m)
    bar.close()
    return t, n_close


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


def _check_options(tau_quantile: float, k: int, max_select: int | None, block: int) -> None:
    if not 0.0 <= tau_quantile <= 1.0:
        raise BadInputError(f"tau quantile {tau_quantile} is outside [0, 1]")
    if k < 1:
        raise BadInputError(f"k = {k}: need at least 1 nearest training reference")
    if max_select is not None and max_select < 0:
        raise BadInputError(f"max_select = {max_select} is negative")
    if block < 1:
        raise BadInputError(f"block size {block} is below 1")


def _redundancy(
    sub: np.ndarray, tau: float, *, approximate: bool, block: int, device: str, progress: bool
) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Deletion times T of the passing candidates, pairs closer than tau, and the approximate check."""
    extra: dict[str, Any] = {}
    if not approximate:
        t, n_close = deletion_distances(sub, tau, block=block, device=device, progress=progress)
        return t, n_close, extra
    t, n_close = deletion_distances(
        sub, tau, block=block, device=device, precision="bfloat16", progress=progress, stats=extra
    )
    # how far from exact: run both on a sample of the passing candidates
    rng = np.random.default_rng(0)
    probe_rows = np.sort(rng.choice(len(sub), min(len(sub), AGREEMENT_SAMPLE), replace=False))
    sample = np.ascontiguousarray(sub[probe_rows])
    t_exact, _ = deletion_distances(sample, tau, block=block, device=device)
    t_approx, _ = deletion_distances(sample, tau, block=block, device=device, precision="bfloat16")
    extra["agreement_sample"] = len(sample)
    extra["agreement_with_exact"] = agreement(
        np.flatnonzero(np.isinf(t_exact)), np.flatnonzero(np.isinf(t_approx))
    )
    return t, n_close, extra


def _nearest_first(kept_local: np.ndarray, nearest: np.ndarray, max_select: int | None) -> np.ndarray:
    """``max_select`` of the kept candidates nearest to the training set (ties: lower index), ascending."""
    if max_select is None or len(kept_local) <= max_select:
        return kept_local
    order = np.lexsort((kept_local, nearest))
    return np.sort(kept_local[order[:max_select]])


def select_candidates(
    train_features: np.ndarray,
    candidate_features: np.ndarray,
    *,
    tau_quantile: float = 0.5,
    k: int = 5,
    max_select: int | None = None,
    approximate: bool = False,
    block: int = DEFAULT_BLOCK,
    device: str = "numpy",
    progress: bool = False,
    train_name: str = "train features",
    candidate_name: str = "candidate features",
) -> Selection:
    """DDCUp on raw (un-normalised) embeddings; returns the selected candidates and statistics.

    ``max_select`` keeps, of the selected candidates, the ones nearest to the training set (smallest
    nearest-training distance, then lowest index), still reported in ascending index order. ``device``:
    ``numpy`` (BLAS), or the torch code on ``cpu`` or ``cuda``; every device gives the same selection.
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
    _check_options(tau_quantile, k, max_select, block)
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
    t, n_close, extra = _redundancy(
        sub, tau, approximate=approximate, block=block, device=device, progress=progress
    )
    kept_local = np.flatnonzero(np.isinf(t))
    counts["n_close_pairs"] = n_close
    counts["n_removed_redundant"] = len(passed) - len(kept_local)
    counts["n_after_redundancy"] = len(kept_local)
    kept_local = _nearest_first(kept_local, nearest[passed[kept_local]], max_select)
    counts["n_selected"] = len(kept_local)

    # final report distances: canonical float64 for the (few) selected candidates
    kk = min(k, len(train_n))
    exact = dense_distances(sub[kept_local], train_n) if len(kept_local) else np.zeros((0, len(train_n)))
    nn_idx = np.argsort(exact, axis=1, kind="stable")[:, :kk]
    return Selection(
        selected=passed[kept_local].astype(np.int64),
        tau=tau,
        d_max=d_max,
        counts=counts,
        nearest_train_distance=exact.min(axis=1) if len(kept_local) else np.zeros(0),
        farthest_train_distance=exact.max(axis=1) if len(kept_local) else np.zeros(0),
        neighbour_indices=nn_idx.astype(np.int64),
        neighbour_distances=np.take_along_axis(exact, nn_idx, axis=1),
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
    """Core device for ``--device``: ``auto`` = CUDA if present, else the numpy path; ``cpu`` = torch on
    the CPU (the code the CUDA path runs); ``cuda`` = torch on the GPU (an error without one)."""
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
    return "cuda" if has_cuda else "numpy"


@dataclass
class SelectConfig:
    """``reshape select`` options (field names are the CLI option names)."""

    train: str | Path
    candidates: str | Path
    out: str | Path
    max_select: int | None = None
    tau_quantile: float = 0.5
    k: int = 5
    approximate: bool = False
    device: str = "auto"
    plot: str | Path | None = None
    block_size: int = DEFAULT_BLOCK
    overwrite: bool = False
    wait: bool = False
    fingerprint: str | None = None
    progress: bool = False

    def check_options(self) -> None:
        """The option checks that need no file (``reshape run`` makes them before any stage runs)."""
        _check_options(self.tau_quantile, self.k, self.max_select, self.block_size)


@dataclass
class SelectResult:
    selection: Selection
    out: Path
    plot: Path | None
    seconds: float
    degenerate_features: bool = False

    def summary_lines(self) -> list[str]:
        wrote = f"wrote {self.out}" + (f" and {self.plot}" if self.plot is not None else "")
        return [*summary_lines(self.selection), wrote]


#: PNG text chunk that marks a plot as reshape's own (so a rerun may replace it).
PLOT_SOFTWARE = "reshape select"


def _owned_png(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(image.info.get("Software", "")).startswith(PLOT_SOFTWARE)
    except (OSError, ValueError):
        return False


def _check_outputs(config: SelectConfig) -> tuple[Path, Path | None]:
    """Output safety before any work: no input overwritten, no foreign or wrong-format file replaced."""
    from reshape.outputs import check_file_output, check_inputs_not_outputs, check_writable

    out = Path(config.out)
    plot = Path(config.plot) if config.plot is not None else None
    if plot is not None and plot.resolve() == out.resolve():
        raise BadInputError(f"{out}: --out and --plot are the same file")
    check_inputs_not_outputs(inputs=[config.train, config.candidates], file_outputs=[out, plot])
    check_file_output(out, "parquet", overwrite=config.overwrite, kinds=("selection",))
    check_file_output(plot, "png", overwrite=config.overwrite, owned=_owned_png, option="--plot")
    for path in (out, plot):
        if path is not None:
            check_writable(path, need_bytes=1 << 20)
    return out, plot


def _spread_sample(train: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Training refs plus a deterministic sample of candidates, for :func:`warn_if_degenerate`."""
    if np.ndim(train) != 2 or np.ndim(cand) != 2 or np.shape(train)[1] != np.shape(cand)[1]:
        return np.asarray(train)  # select_candidates reports the mismatch
    rows = np.sort(np.random.default_rng(0).choice(len(cand), min(len(cand), SPREAD_SAMPLE), replace=False))
    return np.concatenate([np.asarray(train, np.float32), np.asarray(cand[rows], np.float32)])


def _selection_table(result: Selection, cand_frame: Any, train_images: list[str]) -> Any:
    import pyarrow as pa

    sel = result.selected
    images = np.asarray(train_images, dtype=object)
    frame = cand_frame.iloc[sel]
    return pa.table(
        {
            "candidate_index": pa.array(sel, type=pa.int64()),
            "image": pa.array(frame["image"].astype(str).tolist(), type=pa.string()),
            "sha256": pa.array(frame["sha256"].astype(str).tolist(), type=pa.string()),
            "nearest_train_distance": pa.array(result.nearest_train_distance.astype(np.float32)),
            "farthest_train_distance": pa.array(result.farthest_train_distance.astype(np.float32)),
            "neighbour_images": pa.array(
                [images[row].tolist() for row in result.neighbour_indices], type=pa.list_(pa.string())
            ),
            "neighbour_distances": pa.array(
                [row.astype(np.float32).tolist() for row in result.neighbour_distances],
                type=pa.list_(pa.float32()),
            ),
        }
    )


def _metadata(config: SelectConfig, result: Selection, train: Any, cand: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "tau": result.tau,
        "d_max": result.d_max,
        "tau_quantile": config.tau_quantile,
        "k": config.k,
        **{key: result.counts[key] for key in ("n_train", "n_candidates", "n_after_distance_filter")},
        "n_selected": result.counts["n_selected"],
        "steps": result.counts,
        "train_features": str(config.train),
        "candidate_features": str(config.candidates),
        "image_root": cand.image_root,
        "train_image_root": train.image_root,
        "encoder": cand.metadata.get("encoder"),
        "approximate": config.approximate,
        "max_select": config.max_select,
    }
    if result.extra:
        meta["approximate_check"] = result.extra
    if config.fingerprint is not None:
        meta["fingerprint"] = config.fingerprint
    return meta


def _select_from_files(config: SelectConfig) -> tuple[Selection, Any, Any, bool]:
    from reshape.artifacts import read_features

    train = read_features(config.train)
    cand = read_features(config.candidates)
    if train.metadata.get("encoder") != cand.metadata.get("encoder"):
        log.warning(
            "training features use encoder %r but candidates use %r: distances are not comparable",
            train.metadata.get("encoder"),
            cand.metadata.get("encoder"),
        )
    degenerate = warn_if_degenerate(_spread_sample(train.embeddings, cand.embeddings), config.candidates)
    announce("DDCUp: %d candidates against %d training refs", len(cand.embeddings), len(train.embeddings))
    result = select_candidates(
        train.embeddings, cand.embeddings, tau_quantile=config.tau_quantile, k=config.k,
        max_select=config.max_select, approximate=config.approximate, block=config.block_size,
        device=resolve_device(config.device), progress=config.progress,
        train_name=str(config.train), candidate_name=str(config.candidates),
    )  # fmt: skip
    return result, train, cand, degenerate


def run(config: SelectConfig) -> SelectResult:
    """``reshape select``: guard the outputs, read both features artifacts, DDCUp, write the selection."""
    import time

    from reshape.artifacts import write_parquet
    from reshape.fileio import remove_stale_temps
    from reshape.outputs import created_folders, locked_outputs

    started = time.perf_counter()
    config.check_options()
    out, plot = _check_outputs(config)
    folders = [out.parent] + ([plot.parent] if plot is not None else [])
    with created_folders(*folders), locked_outputs(out, plot, wait=config.wait):
        for path in (out, plot):
            if path is not None:
                remove_stale_temps(path.parent, names=[path.name])
        result, train, cand, degenerate = _select_from_files(config)
        table = _selection_table(result, cand.frame, train.images)
        write_parquet(out, table, "selection", _metadata(config, result, train, cand))
        if plot is not None:
            plot_selection(plot, train.embeddings, cand.embeddings, result)
    return SelectResult(result, out, plot, time.perf_counter() - started, degenerate)


def run_select(
    train_path: str | Path, candidates_path: str | Path, out_path: str | Path, *, plot_path=None, **options
) -> Selection:
    """Keyword wrapper of :func:`run` (options as :class:`SelectConfig`); returns the selection."""
    return run(SelectConfig(train_path, candidates_path, out_path, plot=plot_path, **options)).selection


def summary_lines(result: Selection) -> list[str]:
    c = result.counts
    mode = "approximate (bfloat16 screening)" if result.approximate else "exact"
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
            "approximate: {screening} screening, margin at tau {margin_at_tau:.1e}; "
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

    from reshape import __version__
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
        log.info("selection map: PCA (UMAP needs umap-learn: pip install 'reshape-iqa[umap]')")
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
        fig.savefig(tmp, format="png", metadata={"Software": f"{PLOT_SOFTWARE} {__version__}"})
    plt.close(fig)
