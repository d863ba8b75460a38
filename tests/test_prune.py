"""DRCDown: library core vs. a dense reference, properties, the sampler and `reshape prune` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reshape import artifacts
from reshape.cli.main import cli
from reshape.errors import BadInputError
from reshape.prune import (
    drcdown,
    find_clusters,
    iter_links,
    keep_count,
    keep_mask,
    labels_to_0_10,
    parse_label_scale,
)
from reshape.sampler import DRCDownSampler


# ----------------------------------------------------------------------------------------------- helpers
def dense_reference(features: np.ndarray, labels: np.ndarray, sim=0.9, lab=1.0, min_cluster=20, seed=0):
    """Straightforward O(N^2) DRCDown: full similarity matrix, union-find, the same per-sample random keys."""
    x = features.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    linked = (x @ x.T > sim) & (np.abs(labels[:, None] - labels[None, :]) < lab)
    np.fill_diagonal(linked, False)
    parent = list(range(len(x)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(linked)):
        parent[root(int(i))] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in np.flatnonzero(linked.any(axis=1)):
        groups.setdefault(root(int(i)), []).append(int(i))
    keys = np.random.default_rng(seed).random(len(x))
    kept = set(np.flatnonzero(~linked.any(axis=1)).tolist())
    for members in groups.values():
        n = len(members)
        quota = max(min_cluster, n // 2) if n > min_cluster else n
        kept.update(sorted(members, key=lambda m: keys[m])[:quota])
    partition = sorted(sorted(g) for g in groups.values())
    return np.array(sorted(kept)), partition, linked


def clustered(seed: int, n_clusters=6, per_cluster=(5, 60), loners=80, dim=48):
    """Tight clusters (cosine ~0.99 to their centre) plus random loners (cosine ~0 to everything).

    Labels: each cluster splits into two label groups 3 apart, so the label filter cuts clusters in two.
    """
    rng = np.random.default_rng(seed)
    feats, labels = [], []
    for _ in range(n_clusters):
        centre = rng.standard_normal(dim)
        size = int(rng.integers(*per_cluster))
        feats.append(centre + 0.08 * rng.standard_normal((size, dim)) * np.linalg.norm(centre) / np.sqrt(dim))
        base = rng.uniform(0, 6)
        labels.append(base + np.where(rng.random(size) < 0.7, 0.0, 3.0) + rng.uniform(0, 0.4, size))
    feats.append(rng.standard_normal((loners, dim)))
    labels.append(rng.uniform(0, 10, loners))
    order = rng.permutation(sum(len(f) for f in feats))
    return np.concatenate(feats)[order].astype(np.float32), np.concatenate(labels)[order]


def similarity_margin(features: np.ndarray, sim=0.9) -> float:
    """Distance of the closest pair similarity to the threshold (float32 vs float64 rounding must not matter).

    Label differences need no margin: both implementations subtract the same float64 values.
    """
    x = features.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return float(np.abs(x @ x.T - sim).min())


def write_features(path: Path, images: list[str], embeddings: np.ndarray) -> None:
    frame = pd.DataFrame(
        {
            "image": images,
            "sha256": ["0" * 64] * len(images),
            "width": [64] * len(images),
            "height": [64] * len(images),
        }
    )
    meta = {"encoder": "test", "weights": "none", "preprocessing": "none", "image_root": "."}
    artifacts.write_features(path, artifacts.Features(frame=frame, embeddings=embeddings, metadata=meta))


def train_table(images: list[str], dmos: np.ndarray) -> pd.DataFrame:
    n = len(images)
    return pd.DataFrame(
        {
            "dist_img": images,
            "ref_img": [f"refs/r{i % 7}.png" for i in range(n)],
            "dmos": np.round(dmos, 4),
            "var": np.full(n, 0.25),
            "dist_type": (np.arange(n) % 25) + 1,
            "dist_level": (np.arange(n) % 5) + 1,
            "origin": ["source"] * n,
        }
    )


def links_of(features: np.ndarray, labels: np.ndarray, **options) -> np.ndarray:
    """All streamed links as sorted (M, 2) pairs (small inputs only: the stage itself never holds them)."""
    chunks = list(iter_links(features, labels, **options))
    if not chunks:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.stack([np.concatenate([a for a, _ in chunks]), np.concatenate([b for _, b in chunks])], axis=1)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def invoke(*args: str):
    return CliRunner().invoke(cli, ["prune", *map(str, args)])


# ----------------------------------------------------------------------------------------------- core
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_same_kept_set_as_dense_reference(seed: int) -> None:
    features, labels = clustered(seed)
    assert similarity_margin(features) > 1e-4, "test data must not sit on a threshold"
    expected, partition, linked = dense_reference(features, labels, min_cluster=10, seed=seed)
    assert len(partition) >= 6
    assert len(expected) < len(labels)

    for backend in ("faiss", "bf16"):
        clusters = find_clusters(features, labels, block_size=37, backend=backend)
        got = np.flatnonzero(keep_mask(clusters, min_cluster=10, seed=seed))
        np.testing.assert_array_equal(got, expected)
        assert sorted(clusters.members(c).tolist() for c in range(clusters.n_clusters)) == partition
        links = links_of(features, labels, block_size=37, backend=backend)
        np.testing.assert_array_equal(links, np.argwhere(np.triu(linked)))
        assert clusters.n_links == len(links)
    np.testing.assert_array_equal(drcdown(features, labels, min_cluster=10, seed=seed), expected)


def test_block_size_and_approximate_do_not_change_the_result() -> None:
    features, labels = clustered(7, n_clusters=10, loners=200)
    reference = find_clusters(features, labels, block_size=4096, backend="faiss")
    for block, backend in ((1, "faiss"), (13, "faiss"), (100, "faiss"), (13, "bf16"), (5000, "bf16")):
        other = find_clusters(features, labels, block_size=block, backend=backend)
        assert (other.n_links, other.similar_pairs) == (reference.n_links, reference.similar_pairs)
        np.testing.assert_array_equal(other.cluster_id, reference.cluster_id)
    approx = find_clusters(features, labels, approximate=True)
    # well separated tight clusters: the cell join must find every link
    np.testing.assert_array_equal(links_of(features, labels, approximate=True), links_of(features, labels))
    np.testing.assert_array_equal(approx.cluster_id, reference.cluster_id)


def test_bf16_prefilter_misses_no_pair_near_the_threshold() -> None:
    """Pairs just above the threshold (where bf16 rounding is largest) are found; those just below are not."""
    rng = np.random.default_rng(4)
    dim, pairs = 512, 400
    base = rng.standard_normal((pairs, dim))
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    ortho = rng.standard_normal((pairs, dim))
    ortho -= (ortho * base).sum(axis=1, keepdims=True) * base
    ortho /= np.linalg.norm(ortho, axis=1, keepdims=True)
    cosines = 0.9 + rng.choice([-1, 1], pairs) * rng.uniform(1e-4, 2e-3, pairs)
    partner = cosines[:, None] * base + np.sqrt(1 - cosines[:, None] ** 2) * ortho
    features = np.concatenate([base, partner]).astype(np.float32)
    labels = np.full(2 * pairs, 5.0)
    unit = features.astype(np.float64) / np.linalg.norm(features.astype(np.float64), axis=1, keepdims=True)
    expected = {(i, i + pairs) for i in range(pairs) if unit[i] @ unit[i + pairs] > 0.9}
    expected |= {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(unit @ unit.T, 1) > 0.9))}
    assert 100 < len(expected) < pairs
    links = links_of(features, labels, backend="bf16")
    assert {tuple(map(int, link)) for link in links} == expected


def test_seed_determines_the_subset() -> None:
    features, labels = clustered(3, per_cluster=(40, 80))
    a = drcdown(features, labels, seed=5)
    assert np.array_equal(a, drcdown(features, labels, seed=5))
    assert not np.array_equal(a, drcdown(features, labels, seed=6))


def test_label_filter_keeps_hard_samples() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal(32)
    features = np.tile(base, (50, 1)) + 1e-3 * rng.standard_normal((50, 32))
    far_labels = np.arange(50) * 1.5  # neighbours differ by 1.5 >= 1: similar images, different quality
    clusters = find_clusters(features, far_labels, label_threshold=1.0)
    assert clusters.n_links == 0
    assert clusters.n_clusters == 0
    np.testing.assert_array_equal(drcdown(features, far_labels), np.arange(50))
    close = np.full(50, 7.0)
    clusters = find_clusters(features, close)
    assert clusters.n_clusters == 1
    assert clusters.sizes[0] == 50
    assert len(drcdown(features, close)) == keep_count(50) == 25


def test_indices_refer_to_input_order() -> None:
    """The official code applies the kept indices to a differently ordered list; ours index the input."""
    rng = np.random.default_rng(11)
    n, dim = 300, 64
    features = rng.standard_normal((n, dim)).astype(np.float32)
    planted = np.sort(rng.choice(n, 30, replace=False))  # one redundant cluster scattered over the input
    features[planted] = rng.standard_normal(dim) + 0.01 * rng.standard_normal((30, dim))
    labels = rng.uniform(0, 10, n)
    labels[planted] = 5.0 + rng.uniform(0, 0.5, 30)
    kept = drcdown(features, labels)
    removed = np.setdiff1d(np.arange(n), kept)
    assert len(removed) == 30 - 20
    assert set(removed) <= set(planted)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 70),
    dim=st.integers(2, 6),
    min_cluster=st.integers(1, 6),
    label_threshold=st.floats(0.3, 3.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_properties(n: int, dim: int, min_cluster: int, label_threshold: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # few low-dimensional directions, so many pairs are similar and clusters are big
    features = rng.standard_normal((3, dim))[rng.integers(0, 3, n)] + 0.3 * rng.standard_normal((n, dim))
    labels = rng.uniform(0, 10, n)
    clusters = find_clusters(features, labels, label_threshold=label_threshold)
    kept = np.flatnonzero(keep_mask(clusters, min_cluster=min_cluster, seed=seed))

    assert np.all(np.diff(kept) > 0)
    assert len(kept) == 0 or (kept[0] >= 0 and kept[-1] < n)
    assert set(clusters.unlinked) <= set(kept)
    for c in range(clusters.n_clusters):
        members = clusters.members(c)
        assert len(members) == clusters.sizes[c] >= 2
        assert len(np.intersect1d(members, kept)) == keep_count(len(members), min_cluster)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    links = links_of(features, labels, label_threshold=label_threshold)
    assert clusters.n_links == len(links)
    for i, j in links:
        assert i < j
        assert abs(labels[i] - labels[j]) < label_threshold
        assert unit[i] @ unit[j] > 0.9 - 1e-5
    # every linked sample has a link and every sample in a link is in a cluster
    assert set(links.ravel()) == set(np.flatnonzero(clusters.cluster_id >= 0))


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.ones((5, 4)), np.ones(4), "length mismatch"),
        (np.array([[1.0, 0.0], [np.nan, 1.0]]), np.ones(2), "row 1 has NaN"),
        (np.empty((0, 8)), np.empty(0), "empty input"),
        (np.ones((2, 2)), np.array([1.0, np.inf]), "label of row 1"),
    ],
)
def test_bad_arrays(features: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        drcdown(features, labels)


def test_label_scales(kadid_dmos_table: Path) -> None:
    dmos = pd.read_csv(kadid_dmos_table)["score"].to_numpy()
    assert len(dmos) == 10125
    with pytest.raises(BadInputError, match=r"looks like 1-5"):
        labels_to_0_10(dmos, None, source="KADID-10k.txt")
    scaled = labels_to_0_10(dmos, parse_label_scale("1-5"))
    np.testing.assert_allclose(scaled, (dmos - 1) * 2.5)
    auto = labels_to_0_10(dmos, parse_label_scale("auto"))
    # exact by construction: elementwise (y - lo) / (hi - lo) * 10 is 0 at lo and x / x * 10 = 10 at hi
    assert auto.min() == 0
    assert auto.max() == 10
    np.testing.assert_allclose(labels_to_0_10([0, 50, 100], parse_label_scale("0-100")), [0, 5, 10])
    np.testing.assert_allclose(labels_to_0_10([-1, 1], parse_label_scale("-1:1")), [0, 10])
    with pytest.raises(BadInputError, match="outside"):
        labels_to_0_10([0.5, 7.0], parse_label_scale("0-1"))
    with pytest.raises(BadInputError, match="expected auto"):
        parse_label_scale("tenish")


# ----------------------------------------------------------------------------------------------- sampler
def test_sampler_epochs_are_deterministic() -> None:
    features, labels = clustered(2, per_cluster=(40, 80))
    n = len(labels)
    sampler = DRCDownSampler(n, seed=3)
    assert len(sampler) == n
    assert sorted(sampler) == list(range(n))

    kept0 = sampler.update(torch.from_numpy(features), torch.from_numpy(labels), epoch=0)
    np.testing.assert_array_equal(kept0, drcdown(features, labels, seed=sampler._epoch_seed()))
    assert len(sampler) == len(kept0) < n
    order0 = list(sampler)
    assert sorted(order0) == kept0.tolist()
    assert order0 != kept0.tolist()
    assert list(sampler) == order0

    twin = DRCDownSampler(n, seed=3)
    twin.update(features, labels, epoch=0)
    assert list(twin) == order0
    twin.update(features, labels, epoch=1)
    assert list(twin) != order0

    dataset = torch.utils.data.TensorDataset(torch.arange(n))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, sampler=sampler)
    seen = torch.cat([batch[0] for batch in loader]).tolist()
    assert seen == order0

    with pytest.raises(BadInputError, match="covers"):
        sampler.update(features[:-1], labels[:-1])


# ----------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def prune_inputs(tmp_path: Path):
    features, labels_0_10 = clustered(5, per_cluster=(30, 70))
    n = len(labels_0_10)
    images = [f"dist/img_{i:04d}.png" for i in range(n)]
    # the features artifact lists the images in another order than the label table
    perm = np.random.default_rng(0).permutation(n)
    write_features(tmp_path / "samples.parquet", [images[i] for i in perm], features[perm])
    dmos = 1 + labels_0_10 / 2.5  # KADID 1..5 scale
    table = train_table(images, dmos)
    table.to_csv(tmp_path / "train.csv", index=False)
    scaled = (table["dmos"].to_numpy() - 1) * 2.5
    return tmp_path, features, scaled, table


def test_cli_end_to_end(prune_inputs) -> None:
    tmp_path, features, scaled, table = prune_inputs
    out = tmp_path / "pruned.csv"
    result = invoke(
        "--features",
        tmp_path / "samples.parquet",
        "--labels",
        tmp_path / "train.csv",
        "--out",
        out,
        "--label-scale",
        "1-5",
        "--min-cluster",
        12,
        "--seed",
        4,
        "--fingerprint",
        "abc123",
    )
    assert result.exit_code == 0, result.output
    expected, partition, _ = dense_reference(features, scaled, min_cluster=12, seed=4)

    pruned = pd.read_csv(out)
    assert list(pruned.columns) == list(table.columns)
    assert pruned["dist_img"].tolist() == table["dist_img"].iloc[expected].tolist()
    # exact: the kept rows are copied, and floats are written with their shortest round-trip repr
    pd.testing.assert_frame_equal(pruned, table.iloc[expected].reset_index(drop=True))

    decisions = artifacts.read_csv(tmp_path / "pruned.indices.csv", "prune_indices")
    assert decisions["index"].tolist() == list(range(len(table)))
    assert decisions["image"].tolist() == table["dist_img"].tolist()
    assert np.flatnonzero(decisions["kept"].to_numpy()).tolist() == expected.tolist()
    clustered_rows = decisions[decisions["cluster"] >= 0]
    got_partition = sorted(sorted(g["index"].tolist()) for _, g in clustered_rows.groupby("cluster"))
    assert got_partition == partition
    assert (decisions.loc[decisions["cluster"] < 0, "cluster_size"] == 1).all()

    meta = artifacts.read_artifact_metadata(out)
    assert meta["fingerprint"] == "abc123"
    assert meta["min_cluster"] == 12
    assert artifacts.read_artifact_metadata(tmp_path / "pruned.indices.csv")["fingerprint"] == "abc123"
    removed = len(table) - len(expected)
    assert f"kept {len(expected)}, removed {removed}" in result.output
    assert f"redundant clusters {len(partition)}" in result.output
    assert "cluster sizes:" in result.output


def test_cli_kadid_layout_and_indices_option(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 60
    features = np.tile(rng.standard_normal(16), (n, 1)) + 1e-3 * rng.standard_normal((n, 16))
    images = [f"images/I01_{i:02d}.png" for i in range(n)]
    write_features(tmp_path / "f.parquet", images, features.astype(np.float32))
    lines = ["dist_img,ref_img,dmos,var"] + [
        f"{img},I01.png,4.{i % 3}0,0.123456789" for i, img in enumerate(images)
    ]
    (tmp_path / "dmos.csv").write_text("\n".join(lines) + "\n")
    result = invoke(
        "--features",
        tmp_path / "f.parquet",
        "--labels",
        tmp_path / "dmos.csv",
        "--out",
        tmp_path / "p.csv",
        "--indices",
        tmp_path / "dec.csv",
        "--label-scale",
        "1-5",
    )
    assert result.exit_code == 0, result.output
    kept_lines = (tmp_path / "p.csv").read_text().splitlines()
    assert kept_lines[0] == lines[0]
    assert len(kept_lines) == 1 + 30
    assert set(kept_lines[1:]) <= set(lines[1:])  # rows kept verbatim
    assert (tmp_path / "dec.csv").is_file()
    assert not (tmp_path / "p.indices.csv").exists()


def _assert_one_line_error(result, path: Path) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("reshape: error:")
    assert str(path) in lines[0]


def test_cli_labels_on_another_scale(prune_inputs) -> None:
    tmp_path, *_ = prune_inputs
    result = invoke(
        "--features",
        tmp_path / "samples.parquet",
        "--labels",
        tmp_path / "train.csv",
        "--out",
        tmp_path / "o.csv",
    )
    _assert_one_line_error(result, tmp_path / "train.csv")
    assert "--label-scale" in result.output
    assert not (tmp_path / "o.csv").exists()


def test_cli_rows_without_features(prune_inputs) -> None:
    tmp_path, _, _, table = prune_inputs
    longer = pd.concat([table, table.iloc[:3].assign(dist_img=["x/a.png", "x/b.png", "x/c.png"])])
    longer.to_csv(tmp_path / "longer.csv", index=False)
    result = invoke(
        "--features",
        tmp_path / "samples.parquet",
        "--labels",
        tmp_path / "longer.csv",
        "--out",
        tmp_path / "o.csv",
        "--label-scale",
        "1-5",
    )
    _assert_one_line_error(result, tmp_path / "longer.csv")
    assert f"3 of {len(longer)} rows have no features" in result.output


def test_cli_nan_features(tmp_path: Path) -> None:
    embeddings = np.ones((4, 8), dtype=np.float32)
    embeddings[2, 5] = np.nan
    images = [f"a{i}.png" for i in range(4)]
    write_features(tmp_path / "nan.parquet", images, embeddings)
    train_table(images, np.array([2.0, 6.0, 7.0, 9.0])).to_csv(tmp_path / "t.csv", index=False)
    result = invoke(
        "--features", tmp_path / "nan.parquet", "--labels", tmp_path / "t.csv", "--out", tmp_path / "o.csv"
    )
    _assert_one_line_error(result, tmp_path / "nan.parquet")
    assert "NaN" in result.output


def test_cli_empty_table(tmp_path: Path) -> None:
    write_features(tmp_path / "f.parquet", ["a.png"], np.ones((1, 4), dtype=np.float32))
    (tmp_path / "empty.csv").write_text("dist_img,ref_img,dmos,var,dist_type,dist_level,origin\n")
    result = invoke(
        "--features", tmp_path / "f.parquet", "--labels", tmp_path / "empty.csv", "--out", tmp_path / "o.csv"
    )
    _assert_one_line_error(result, tmp_path / "empty.csv")
    assert "empty" in result.output


def test_cli_help_documents_every_option() -> None:
    result = CliRunner().invoke(cli, ["prune", "--help"])
    assert result.exit_code == 0
    for option in ("--features", "--labels", "--out", "--indices", "--label-scale", "--sim-threshold",
                   "--label-threshold", "--min-cluster", "--seed", "--approximate"):  # fmt: skip
        assert option in result.output
    assert "--fingerprint" not in result.output
