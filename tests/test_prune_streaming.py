"""DRCDown's streaming core (issue #16) against a dense reference: random, all-linked, chain and tie inputs.

The reference builds the full N x N link matrix in float64 and takes scipy's connected components; the
streaming core never holds a link list. Both draw the same per-sample keys from ``default_rng(seed)``, so
the kept sets must be identical, for every backend and block size.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from reshape.prune import LinkForest, find_clusters, iter_links, keep_mask

BACKENDS = ("faiss", "bf16")
BLOCKS = (1, 7, 64, 4096)


def dense_drcdown(features, labels, *, sim=0.9, lab=1.0, min_cluster=20, seed=0):
    """(kept indices, partition of linked samples, (M, 2) sorted links, similar pairs) the direct way."""
    x = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    similar = np.triu(x @ x.T > sim, 1)
    links = np.argwhere(similar & (np.abs(labels[:, None] - labels[None, :]) < lab))
    n = len(x)
    graph = coo_matrix((np.ones(len(links)), (links[:, 0], links[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    linked = np.zeros(n, dtype=bool)
    linked[links.ravel()] = True
    keys = np.random.default_rng(seed).random(n)
    kept = ~linked
    groups = [np.flatnonzero(linked & (component == c)) for c in np.unique(component[linked])]
    for members in groups:
        quota = max(min_cluster, len(members) // 2) if len(members) > min_cluster else len(members)
        kept[members[np.argsort(keys[members])[:quota]]] = True
    partition = sorted(members.tolist() for members in groups)
    return np.flatnonzero(kept), partition, links, int(similar.sum())


def streamed(features, labels, **options):
    """Kept indices, partition, sorted links and counts from the streaming core."""
    min_cluster, seed = options.pop("min_cluster", 20), options.get("seed", 0)
    clusters = find_clusters(features, labels, **options)
    kept = np.flatnonzero(keep_mask(clusters, min_cluster=min_cluster, seed=seed))
    partition = sorted(clusters.members(c).tolist() for c in range(clusters.n_clusters))
    chunks = list(iter_links(features, labels, **options))
    links = np.concatenate([np.stack(c, axis=1) for c in chunks]) if chunks else np.empty((0, 2), np.int64)
    links = links[np.lexsort((links[:, 1], links[:, 0]))]
    return kept, partition, links, clusters


def assert_matches_dense(features, labels, *, sim=0.9, lab=1.0, min_cluster=20, seed=0, blocks=BLOCKS):
    kept, partition, links, similar = dense_drcdown(
        features, labels, sim=sim, lab=lab, min_cluster=min_cluster, seed=seed
    )
    for backend in BACKENDS:
        for block in blocks:
            got_kept, got_partition, got_links, clusters = streamed(
                features, labels, sim_threshold=sim, label_threshold=lab, min_cluster=min_cluster,
                seed=seed, backend=backend, block_size=block,
            )  # fmt: skip
            where = f"backend {backend}, block {block}"
            np.testing.assert_array_equal(got_kept, kept, err_msg=where)
            assert got_partition == partition, where
            np.testing.assert_array_equal(got_links, links, err_msg=where)
            assert (clusters.n_links, clusters.similar_pairs) == (len(links), similar), where
    return kept, partition


def away_from(features, threshold, margin=1e-5) -> bool:
    """No pair similarity within ``margin`` of the threshold (float32 vs float64 normalisation agree)."""
    x = features.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return bool(np.abs(x @ x.T - threshold).min() > margin)


# ----------------------------------------------------------------------------------------------- cases
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_low_dimensional_features(seed: int) -> None:
    """Few dimensions: a large share of all pairs is similar, giant clusters cut by the label filter."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((160, 3)).astype(np.float32)
    labels = rng.uniform(0, 10, 160)
    assert away_from(features, 0.9)
    kept, partition = assert_matches_dense(features, labels, min_cluster=5, seed=seed)
    assert max(len(p) for p in partition) > 10
    assert len(kept) < 160


def test_adversarial_all_linked() -> None:
    """Every pair links (n (n-1) / 2 links): one cluster, half of it kept."""
    rng = np.random.default_rng(3)
    n = 300
    features = (rng.standard_normal(32) + 0.01 * rng.standard_normal((n, 32))).astype(np.float32)
    labels = 5.0 + rng.uniform(0, 0.5, n)
    kept, partition = assert_matches_dense(features, labels, blocks=(1, 16, 4096))
    assert partition == [list(range(n))]
    assert len(kept) == n // 2
    assert find_clusters(features, labels, block_size=16).n_links == n * (n - 1) // 2


@pytest.mark.parametrize("seed", [0, 1])
def test_chain_where_only_consecutive_samples_link(seed: int) -> None:
    """x_k = (e_k + e_k+1) / sqrt 2: only neighbours along the chain share a direction (cosine 0.5), the
    chain is scattered over the input rows, and its labels drift by 0.625 per step (far ends differ by ~75).
    One exact label tie (a step of exactly 1.0) cuts it in two."""
    length = 120
    rng = np.random.default_rng(seed)
    steps = np.eye(length + 1)
    chain = ((steps[:-1] + steps[1:]) / np.sqrt(2)).astype(np.float32)
    # binary fractions: every step is exact in float64, so the step at 80 is exactly 1.0
    chain_labels = np.zeros(length)
    for k in range(1, length):
        chain_labels[k] = chain_labels[k - 1] + (1.0 if k == 80 else 0.625)
    assert chain_labels[80] - chain_labels[79] == 1.0
    order = rng.permutation(length)
    features, labels = chain[order], chain_labels[order]
    kept, partition = assert_matches_dense(features, labels, sim=0.4, blocks=(1, 5, 4096))
    position = np.argsort(order)  # row of chain element k
    assert partition == sorted(sorted(position[part].tolist()) for part in (range(80), range(80, length)))
    assert len(kept) == 40 + 20  # 80 members keep 40, 40 members keep max(20, 20)


def test_exact_ties_at_both_thresholds() -> None:
    """Similarity exactly at the threshold and label differences exactly 1.0 do not link (strict >, <)."""
    a = np.array([1.0, 0.0, 0.0, 0.0])
    b = np.array([0.5, 0.5, 0.5, 0.5])  # a.b == 0.5 exactly, also after float32 normalisation
    c = np.array([0.5, 0.5, 0.5, -0.5])  # a.c == b.c == 0.5 exactly
    rows = [a] * 25 + [a] * 25 + [b] * 3 + [c] * 2 + [2 * a]
    labels = np.array([5.0] * 25 + [6.0] * 25 + [5.0] * 3 + [5.0] * 2 + [4.0])
    order = np.random.default_rng(0).permutation(len(rows))
    features, labels = np.array(rows, dtype=np.float32)[order], labels[order]
    kept, partition = assert_matches_dense(features, labels, sim=0.5, blocks=(1, 4, 4096))
    assert sorted(len(p) for p in partition) == [2, 3, 25, 25]  # 2a at label 4.0: exactly 1 from 5.0
    assert len(kept) == 20 + 20 + 3 + 2 + 1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_forest_matches_connected_components_for_any_chunking(seed: int) -> None:
    """The union-find gives scipy's components, numbered by smallest member, however links are chunked."""
    rng = np.random.default_rng(seed)
    n = 400
    pairs = rng.integers(0, n, size=(600, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    for splits in (1, 3, 50, len(pairs)):
        forest = LinkForest(n)
        for part in np.array_split(rng.permutation(pairs), splits):
            forest.union(np.minimum(part[:, 0], part[:, 1]), np.maximum(part[:, 0], part[:, 1]))
        cluster_id, sizes = forest.cluster_ids()
        linked = np.flatnonzero(cluster_id >= 0)
        assert set(linked) == set(pairs.ravel())
        for c in range(len(sizes)):
            members = np.flatnonzero(cluster_id == c)
            assert len(np.unique(component[members])) == 1
            assert np.count_nonzero(component[linked] == component[members[0]]) == sizes[c]
        smallest = [np.flatnonzero(cluster_id == c)[0] for c in range(len(sizes))]
        assert smallest == sorted(smallest)
