"""Pure figures of the clustered-feature finding (SynDR-IQA, Fig. 1 and Appendix A): no I/O.

Every function takes embeddings as an (n, d) array and computes in float64; the caller rounds what it
reports (:data:`DIGITS`), so that another BLAS kernel, thread count or CPU does not change a reported byte.

* :func:`cosine_silhouette` is exact and needs no n x n matrix: with unit rows, the mean cosine distance of
  row i to a group c is ``1 - x_i . S_c / n_c`` (``S_c`` = the sum of the group's rows), so one (n, groups)
  product gives every row's a(i) and b(i). Rows of a group of one score 0, as in Rousseeuw's definition
  (and scikit-learn's).
* :func:`nearest_neighbours` finds candidates with faiss (inner product on unit float32 rows, O(n k)
  memory), then re-ranks them with float64 similarities and breaks ties by row index, so the neighbour lists
  do not depend on float32 rounding or on faiss's thread count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: decimals of every reported float (figures are means of O(n) float64 terms: 4 decimals are stable)
DIGITS = 4
#: extra faiss candidates re-ranked in float64 (ties and float32 rounding near the k-th neighbour)
_CANDIDATE_MARGIN = 8
#: rows per block of the (rows, groups) products
_CHUNK = 4096


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float64 (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def group_codes(groups: Sequence[object]) -> np.ndarray:
    """Integer codes 0..g-1 of the group names, numbered in sorted order of the names."""
    _, codes = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    return codes.astype(np.int64)


def cosine_silhouette(x: np.ndarray, groups: Sequence[object]) -> float | None:
    """Mean silhouette of all rows with the cosine distance ``1 - cos``; None with fewer than two groups
    or with every row in a group of its own (the silhouette is undefined then)."""
    codes = group_codes(groups)
    n = len(codes)
    g = int(codes.max()) + 1 if n else 0
    if g < 2 or g >= n:
        return None
    u = unit_rows(x)
    sizes = np.bincount(codes, minlength=g).astype(np.float64)
    order = np.argsort(codes, kind="stable")
    sums = np.add.reduceat(u[order], np.r_[0, np.cumsum(sizes[:-1])].astype(np.int64), axis=0)
    self_sim = np.einsum("ij,ij->i", u, u)
    scores = np.empty(n)
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(n, start + _CHUNK))
        own = codes[rows]
        sim = u[rows] @ sums.T  # (rows, g): sum of cosine similarities to each group
        mean_dist = 1.0 - sim / sizes
        own_sim = sim[np.arange(len(own)), own] - self_sim[rows]  # the row itself left out
        own_size = sizes[own] - 1.0
        a = np.where(own_size > 0, (own_size - own_sim) / np.maximum(own_size, 1.0), 0.0)
        mean_dist[np.arange(len(own)), own] = np.inf
        b = mean_dist.min(axis=1)
        denom = np.maximum(a, b)
        s = np.where(denom > 0, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
        scores[rows] = np.where(own_size > 0, s, 0.0)
    return float(scores.mean())


def nearest_neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """(n, k') indices of each row's k' = min(k, n - 1) most cosine-similar other rows, most similar
    first, ties broken by the lower row index."""
    import faiss

    u = unit_rows(x)
    n = len(u)
    k = min(k, n - 1)
    if k < 1:
        return np.zeros((n, 0), dtype=np.int64)
    index = faiss.IndexFlatIP(u.shape[1])
    index.add(np.ascontiguousarray(u, dtype=np.float32))
    out = np.empty((n, k), dtype=np.int64)
    todo, wanted = np.arange(n), min(n, k + 1 + _CANDIDATE_MARGIN)
    while len(todo):
        unsure = []
        for start in range(0, len(todo), _CHUNK):
            rows = todo[start : start + _CHUNK]
            _, cand = index.search(np.ascontiguousarray(u[rows], dtype=np.float32), wanted)
            ranked, key = _rerank(u, rows, cand)
            out[rows] = ranked[:, :k]
            # a tie at the k-th place that reaches the last candidate may hide rows of lower index
            last = np.where(np.isfinite(key), key, np.inf).min(axis=1)
            unsure.append(rows[(key[:, k - 1] == last) & (wanted < n)])
        todo, wanted = np.concatenate(unsure), min(n, 2 * wanted)
    return out


def _rerank(u: np.ndarray, rows: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates sorted by float64 similarity (12 decimals, so that float64 noise never reorders), then
    by row index; the row itself and faiss's -1 padding go last. Returns (indices, sorted keys)."""
    ur, safe = u[rows], np.maximum(cand, 0)
    # one candidate column at a time: O(rows x d) memory, not O(rows x candidates x d)
    sim = np.stack([np.einsum("id,id->i", ur, u[safe[:, j]]) for j in range(cand.shape[1])], axis=1)
    key = np.round(sim, 12)
    key[(cand == rows[:, None]) | (cand < 0)] = -np.inf
    order = np.lexsort((cand, -key), axis=1)
    return np.take_along_axis(cand, order, axis=1), np.take_along_axis(key, order, axis=1)


def knn_purity(neighbours: np.ndarray, groups: Sequence[object]) -> float | None:
    """Mean share of each row's neighbours that belong to its own group; None without neighbours."""
    if neighbours.size == 0:
        return None
    codes = group_codes(groups)
    return float((codes[neighbours] == codes[:, None]).mean())


def chance_purity(groups: Sequence[object]) -> float | None:
    """The purity of random neighbours: the chance that another row drawn at random shares the group."""
    codes = group_codes(groups)
    n = len(codes)
    if n < 2:
        return None
    sizes = np.bincount(codes).astype(np.float64)
    return float((sizes * (sizes - 1)).sum() / (n * (n - 1)))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, tied values sharing their mean rank (what Spearman's correlation correlates)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (Pearson of the average ranks); None when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return None if denom == 0 else float((ra * rb).sum() / denom)


def label_continuity(neighbours: np.ndarray, labels: np.ndarray) -> tuple[float | None, float | None]:
    """(Spearman between each row's label and its neighbours' mean label, mean absolute label gap to the
    neighbours); Spearman is None for a constant label or constant neighbour mean."""
    if neighbours.size == 0:
        return None, None
    labels = np.asarray(labels, dtype=np.float64)
    neighbour_labels = labels[neighbours]
    gap = float(np.abs(neighbour_labels - labels[:, None]).mean())
    mean = neighbour_labels.mean(axis=1)
    if np.ptp(labels) == 0 or np.ptp(mean) == 0:
        return None, gap
    return spearman(labels, mean), gap


def terciles(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bottom, top) row indices: the n // 3 lowest and the n // 3 highest labels (stable order on ties)."""
    order = np.argsort(np.asarray(labels, dtype=np.float64), kind="stable")
    third = len(order) // 3
    return np.sort(order[:third]), np.sort(order[len(order) - third :])


def sample_rows(n: int, limit: int, seed: int) -> np.ndarray:
    """All rows when n <= limit (or limit 0), else ``limit`` rows drawn without replacement with ``seed``."""
    if limit <= 0 or n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


@dataclass(frozen=True)
class Rows:
    """What the figures of one set of rows read: embeddings, labels, and the optional groupings."""

    embeddings: np.ndarray
    labels: np.ndarray
    references: Sequence[object] | None = None
    types: Sequence[object] | None = None

    def take(self, index: np.ndarray) -> Rows:
        pick = lambda seq: None if seq is None else [seq[i] for i in index]  # noqa: E731
        return Rows(self.embeddings[index], self.labels[index], pick(self.references), pick(self.types))


def _round(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), DIGITS) + 0.0


def subset_figures(rows: Rows, *, k: int = 10, sample: int = 20000, seed: int = 0) -> dict[str, object]:
    """Every figure of one set of rows, rounded: silhouettes (on a seeded sample above ``sample`` rows),
    k-NN purity and its chance level per grouping, label continuity. A grouping that is None is left out."""
    n = len(rows.labels)
    figures: dict[str, object] = {"rows": n}
    if n < 2:
        return {**figures, "k": 0}
    neighbours = nearest_neighbours(rows.embeddings, k)
    figures["k"] = int(neighbours.shape[1])
    picked = sample_rows(n, sample, seed)
    figures["silhouette_rows"] = len(picked)
    for name, groups in (("reference", rows.references), ("type", rows.types)):
        if groups is None:
            continue
        figures[f"silhouette_{name}"] = _round(
            cosine_silhouette(rows.embeddings[picked], [groups[i] for i in picked])
        )
        figures[f"purity_{name}"] = _round(knn_purity(neighbours, groups))
        figures[f"purity_{name}_chance"] = _round(chance_purity(groups))
    spearman, gap = label_continuity(neighbours, rows.labels)
    figures["continuity_spearman"] = _round(spearman)
    figures["label_gap"] = _round(gap)
    return figures


def dataset_figures(
    rows: Rows, origins: Sequence[str] | None = None, *, k: int = 10, sample: int = 20000, seed: int = 0
) -> dict[str, dict[str, object]]:
    """Figures keyed by subset: ``all``, ``top_tercile`` (highest labels, the high-quality images),
    ``bottom_tercile``, and ``pseudo`` (rows whose origin is ``pseudo``) when there are any. Each subset's
    neighbours are searched among the subset's own rows, as the paper's panels show each subset alone."""
    bottom, top = terciles(rows.labels)
    subsets = {"all": np.arange(len(rows.labels)), "top_tercile": top, "bottom_tercile": bottom}
    if origins is not None:
        pseudo = np.flatnonzero(np.asarray(origins) == "pseudo")
        if len(pseudo):
            subsets["pseudo"] = pseudo
    return {
        name: subset_figures(rows.take(idx), k=k, sample=sample, seed=seed) for name, idx in subsets.items()
    }
