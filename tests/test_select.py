"""DDCUp selection: parity with a direct dense implementation of the official loop, properties, I/O, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from cli_output import without_steps
from click.testing import CliRunner

from reshape.artifacts import Features, read_parquet, write_features
from reshape.cli.main import cli
from reshape.select import (
    EPS,
    agreement,
    dense_distances,
    normalize_rows,
    pair_distances,
    select_candidates,
)


# ---------------------------------------------------------------------------------------------- data
def clustered(rng: np.random.Generator, n: int, dim: int, n_clusters: int, spread: float) -> np.ndarray:
    """Non-negative clustered vectors (like post-ReLU CNN features): many points within tau of each other."""
    centres = rng.gamma(0.6, 1.0, size=(n_clusters, dim))
    labels = rng.integers(0, n_clusters, size=n)
    noise = rng.gamma(0.6, 1.0, size=(n, dim))
    return np.abs((1 - spread) * centres[labels] + spread * noise).astype(np.float32)


def make_case(seed: int, n_cand: int, dim: int = 32, n_train: int = 40):
    rng = np.random.default_rng(seed)
    train = clustered(rng, n_train, dim, 8, 0.5)
    cand = clustered(rng, n_cand, dim, 30, 0.45)
    # exact duplicates and scaled copies (same cosine): ties in the pair distances
    dup_src = rng.choice(n_cand, n_cand // 20, replace=False)
    dup_dst = rng.choice(n_cand, n_cand // 20, replace=False)
    cand[dup_dst] = cand[dup_src] * rng.choice([1.0, 2.0, 0.5], size=(len(dup_src), 1)).astype(np.float32)
    return train, cand


# ---------------------------------------------------------------------------------------------- reference
def official_dense(
    train: np.ndarray, cand: np.ndarray, tau_quantile: float = 0.5, literal: bool = False
) -> np.ndarray:
    """The official DDCUp selection written directly: full matrices, first row-major minimum, delete row.

    Distances are the canonical float64 ones (same definition as the implementation under test).
    """
    tn, cn = normalize_rows(train), normalize_rows(cand)
    tt = dense_distances(tn, tn)
    ct = dense_distances(cn, tn)
    d_max = tt.max()
    np.fill_diagonal(tt, 1.0)
    nearest_other = tt.min(axis=1)
    tau = np.median(nearest_other) if tau_quantile == 0.5 else np.quantile(nearest_other, tau_quantile)
    keep = (ct.min(axis=1) > tau) & (ct.max(axis=1) < d_max)
    passed = np.flatnonzero(keep)
    mat = dense_distances(cn[passed], cn[passed])
    np.fill_diagonal(mat, 1.0)
    if literal:
        alive = np.arange(len(passed))
        while mat.size and mat.shape[0] > 1:
            if mat.min() >= tau:
                break
            row = np.unravel_index(np.argmin(mat), mat.shape)[0]
            mat = np.delete(np.delete(mat, row, axis=0), row, axis=1)
            alive = np.delete(alive, row)
        return passed[alive]
    # same loop without the copies: a deleted row/column becomes +inf, which keeps the row-major order of
    # the remaining entries, so the first row-major minimum is in the first row whose minimum is the global
    # one. Row minima are kept: deleting column ``row`` only raises entries, so only the rows whose minimum
    # sat in that column need a new one (the parity tests check this against the literal loop).
    alive_mask = np.ones(len(passed), bool)
    row_min = mat.min(axis=1) if mat.size else np.empty(0)
    while alive_mask.sum() > 1:
        row = int(np.argmin(row_min))
        if row_min[row] >= tau:
            break
        mat[row, :] = np.inf
        alive_mask[row] = False
        row_min[row] = np.inf
        stale = np.flatnonzero((mat[:, row] == row_min) & alive_mask)
        mat[:, row] = np.inf
        row_min[stale] = mat[stale].min(axis=1)
    return passed[alive_mask]


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize(
    ("seed", "n_cand", "block"), [(0, 300, 64), (1, 800, 256), (2, 1200, 100), (3, 500, 7)]
)
def test_parity_with_dense_official_loop(seed, n_cand, block):
    train, cand = make_case(seed, n_cand)
    expected = official_dense(train, cand)
    assert np.array_equal(official_dense(train, cand, literal=True), expected)
    got = select_candidates(train, cand, block=block)
    assert got.counts["n_removed_redundant"] > n_cand // 4  # the redundancy step really has work to do
    assert 0 < len(expected) < got.counts["n_after_distance_filter"]
    np.testing.assert_array_equal(got.selected, expected)


def test_parity_3000_candidates_with_ties():
    train, cand = make_case(7, 3000, dim=24)
    expected = official_dense(train, cand)
    got = select_candidates(train, cand)
    np.testing.assert_array_equal(got.selected, expected)


def test_parity_other_quantile():
    train, cand = make_case(11, 600)
    for q in (0.25, 0.8):
        np.testing.assert_array_equal(
            select_candidates(train, cand, tau_quantile=q).selected, official_dense(train, cand, q)
        )


def test_exact_ties_keep_higher_index():
    # three identical candidates far from training: the pair (0,1) comes first in row-major order, so 0 is
    # deleted; then (1,2) deletes 1; the highest index survives
    train = np.array([[1, 0, 0, 0], [1, 0.1, 0, 0], [0, 1, 0, 0], [0, 1, 0.1, 0]], dtype=np.float32)
    cand = np.array([[1, 1, 1, 0.5]] * 3, dtype=np.float32)
    res = select_candidates(train, cand)
    np.testing.assert_array_equal(res.selected, official_dense(train, cand))
    np.testing.assert_array_equal(res.selected, [2])


def test_canonical_distance_is_symmetric_and_row_independent():
    rng = np.random.default_rng(5)
    x = normalize_rows(rng.random((50, 64)).astype(np.float32))
    dense = dense_distances(x, x)
    # exact by construction: elementwise float64 products, then one pairwise sum per row of length D
    # (numpy's reduction of a contiguous row does not depend on the batch or the BLAS)
    np.testing.assert_array_equal(dense, dense.T)
    r, c = np.triu_indices(50, 1)
    np.testing.assert_array_equal(pair_distances(x, x, r, c), dense[r, c])
    # float32 screening error is far below the margin used for re-checks
    d32 = 1.0 - x @ x.T
    assert np.abs(d32 - dense).max() < EPS / 10


# ---------------------------------------------------------------------------------------------- properties
def test_selection_properties():
    train, cand = make_case(21, 900)
    res = select_candidates(train, cand, k=3)
    tn, cn = normalize_rows(train), normalize_rows(cand)
    sel = res.selected
    assert np.all(np.diff(sel) > 0)
    ct = dense_distances(cn[sel], tn)
    assert np.all(ct.min(axis=1) > res.tau)
    assert np.all(ct.max(axis=1) < res.d_max)
    pairwise = dense_distances(cn[sel], cn[sel])
    np.fill_diagonal(pairwise, np.inf)
    assert pairwise.min() >= res.tau
    np.testing.assert_allclose(res.nearest_train_distance, ct.min(axis=1))
    np.testing.assert_allclose(res.farthest_train_distance, ct.max(axis=1))
    assert res.neighbour_indices.shape == (len(sel), 3)
    np.testing.assert_array_equal(res.neighbour_indices[:, 0], ct.argmin(axis=1))
    assert np.all(np.diff(res.neighbour_distances, axis=1) >= 0)
    c = res.counts
    assert c["n_after_distance_filter"] <= min(c["n_pass_nearest"], c["n_pass_farthest"])
    assert c["n_after_redundancy"] + c["n_removed_redundant"] == c["n_after_distance_filter"]
    # invariant to the scale of the embeddings (cosine) and to the candidate count through max_select;
    # an exact comparison of decisions: normalisation and canonical distances use no BLAS, so whatever the
    # last-bit effect of the scaling is, it is the same on every CPU
    np.testing.assert_array_equal(select_candidates(train * 3, cand * 0.5).selected, sel)
    few = select_candidates(train, cand, max_select=5)
    assert len(few.selected) == 5
    assert set(few.selected) <= set(sel)
    chosen_nearest = few.nearest_train_distance.max()
    others = np.setdiff1d(sel, few.selected)
    assert chosen_nearest <= dense_distances(cn[others], tn).min(axis=1).min()


@pytest.mark.parametrize(("seed", "n_cand", "dim"), [(4, 3000, 48), (5, 2000, 512), (6, 1500, 2048)])
def test_approximate_agrees_with_exact(seed, n_cand, dim):
    train, cand = make_case(seed, n_cand, dim=dim)
    reference = official_dense(train, cand)
    approx = select_candidates(train, cand, approximate=True)
    assert approx.approximate
    assert len(reference) > 20  # the redundancy step has real work to do
    assert agreement(reference, approx.selected) >= 0.99
    check = approx.extra
    assert check["screening"] == "bfloat16"
    assert EPS < check["margin_at_tau"] < 0.05
    assert check["agreement_sample"] == approx.counts["n_after_distance_filter"]
    assert check["agreement_with_exact"] >= 0.99


@pytest.mark.parametrize(("dim", "tight"), [(64, 0.02), (2048, 2e-3)])
def test_bfloat16_screening_error_within_its_bound(dim, tight):
    from reshape.select import _Matmul

    rng = np.random.default_rng(7)
    x = normalize_rows(clustered(rng, 1200, dim, 20, 0.4))
    exact = dense_distances(x[:300], x)
    tau = float(np.quantile(exact, 0.05))
    mm = _Matmul(x, "cpu", "bfloat16", tau)
    screened = mm.block(0, 300, 0)  # rows [0, 300) against all columns
    error = np.abs(screened - exact)
    half_margin = mm.margins(screened) / 2
    assert error.max() > 1e-5  # really coarser than float32 ...
    assert np.all(error <= half_margin)  # ... but within the bound the margins are twice of
    near_tau = np.abs(exact - tau) < 0.01
    assert near_tau.any()
    assert half_margin[near_tau].max() < tight  # tight where the tau decisions are taken (high dim)
    # the filter threshold keeps every entry whose exact distance is below tau
    assert np.all(screened[exact < tau] < mm.filter_threshold())
    # float32 screening stays far below the exact-mode margin
    assert np.abs(_Matmul(x, "cpu").block(0, 300, 0) - exact).max() < EPS / 10


@pytest.mark.parametrize(
    ("train", "cand", "needle"),
    [
        (np.ones((1, 4)), np.ones((3, 4)), "at least 2 training references"),
        (np.ones((3, 4)), np.ones((3, 5)), "dimension 5 differs"),
        (np.ones((3, 4)), np.zeros((0, 4)), "empty set"),
        (np.ones((3, 4)), np.array([[1, 2, np.nan, 1.0]]), "row 0: embedding has NaN"),
        (np.ones((3, 4)), np.array([[1, 1, 1, 1.0], [0, 0, 0, 0]]), "row 1: embedding is all zeros"),
    ],
)
def test_core_bad_input(train, cand, needle):
    from reshape.errors import BadInputError

    with pytest.raises(BadInputError, match=needle):
        select_candidates(train, cand)


# ---------------------------------------------------------------------------------------------- I/O + CLI
def write_feats(path, emb, prefix, encoder="resnet50"):
    frame = pd.DataFrame(
        {
            "image": [f"{prefix}/{i:04d}.png" for i in range(len(emb))],
            "sha256": [f"{i:064x}" for i in range(len(emb))],
            "width": 512,
            "height": 384,
        }
    )
    meta = {"encoder": encoder, "weights": "none", "preprocessing": "test", "image_root": f"/data/{prefix}"}
    write_features(path, Features(frame=frame, embeddings=np.asarray(emb, np.float32), metadata=meta))


def test_cli_writes_selection_parquet(tmp_path):
    train, cand = make_case(9, 400)
    write_feats(tmp_path / "train.parquet", train, "kadid")
    write_feats(tmp_path / "pool.parquet", cand, "kadis")
    out = tmp_path / "selection.parquet"
    res = CliRunner().invoke(
        cli,
        [
            "select", "--train", str(tmp_path / "train.parquet"),
            "--candidates", str(tmp_path / "pool.parquet"), "--out", str(out), "--k", "4",
            "--plot", str(tmp_path / "sel.png"), "--fingerprint", "abc123",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "tau =" in res.output
    assert "selected" in res.output
    table, meta = read_parquet(out, "selection")
    expected = official_dense(train, cand)
    np.testing.assert_array_equal(table.column("candidate_index").to_numpy(), expected)
    assert table.column("image").to_pylist() == [f"kadis/{i:04d}.png" for i in expected]
    assert meta["fingerprint"] == "abc123"
    assert meta["image_root"] == "/data/kadis"
    assert meta["train_image_root"] == "/data/kadid"
    assert meta["n_selected"] == len(expected)
    assert meta["k"] == 4
    neigh = table.column("neighbour_images").to_pylist()
    assert all(len(n) == 4 and all(s.startswith("kadid/") for s in n) for n in neigh)
    tn, cn = normalize_rows(train), normalize_rows(cand)
    ct = dense_distances(cn[expected], tn)
    np.testing.assert_allclose(table.column("nearest_train_distance").to_numpy(), ct.min(axis=1), rtol=1e-6)
    first = [f"kadid/{i:04d}.png" for i in np.argsort(ct, axis=1, kind="stable")[:, 0]]
    assert [n[0] for n in neigh] == first
    assert (tmp_path / "sel.png").stat().st_size > 1000
    # determinism: same inputs -> same table
    out2 = tmp_path / "again.parquet"
    CliRunner().invoke(cli, ["select", "--train", str(tmp_path / "train.parquet"), "--candidates",
                             str(tmp_path / "pool.parquet"), "--out", str(out2), "--k", "4"])  # fmt: skip
    # decisions and reported distances come from the canonical float64 values: equal by construction
    assert pq.read_table(out2).equals(table.replace_schema_metadata(None).cast(pq.read_table(out2).schema))


def _invoke_select(tmp_path, train_file, cand_file):
    return CliRunner().invoke(
        cli,
        [
            "select",
            "--train",
            str(train_file),
            "--candidates",
            str(cand_file),
            "--out",
            str(tmp_path / "o.parquet"),
        ],
    )


def test_cli_bad_inputs(tmp_path):
    train, cand = make_case(3, 50)
    good_t, good_c = tmp_path / "t.parquet", tmp_path / "c.parquet"
    write_feats(good_t, train, "kadid")
    write_feats(good_c, cand, "kadis")
    cases = {}
    # dims differ
    write_feats(tmp_path / "dim.parquet", cand[:, :10], "kadis")
    cases["dim"] = (good_t, tmp_path / "dim.parquet", "differs")
    # fewer than 2 training refs
    write_feats(tmp_path / "one.parquet", train[:1], "kadid")
    cases["one"] = (tmp_path / "one.parquet", good_c, "at least 2 training references")
    # NaN row (written bypassing the reader checks)
    bad = cand.copy()
    bad[3, 2] = np.nan
    write_feats(tmp_path / "nan.parquet", bad, "kadis")
    cases["nan"] = (good_t, tmp_path / "nan.parquet", "row 3")
    # empty set
    write_feats(tmp_path / "empty.parquet", cand[:0], "kadis")
    cases["empty"] = (good_t, tmp_path / "empty.parquet", "empty")
    # duplicate image ids
    tbl = pq.read_table(good_c)
    imgs = tbl.column("image").to_pylist()
    imgs[5] = imgs[4]
    import pyarrow as pa

    pq.write_table(tbl.set_column(0, "image", pa.array(imgs)), tmp_path / "dup.parquet")
    cases["dup"] = (good_t, tmp_path / "dup.parquet", "duplicate image id")
    # not a features artifact
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "plain.parquet")
    cases["plain"] = (good_t, tmp_path / "plain.parquet", "not a reshape features artifact")
    (tmp_path / "junk.parquet").write_text("not parquet at all")
    cases["junk"] = (tmp_path / "junk.parquet", good_c, "not a readable Parquet")
    for name, (t, c, needle) in cases.items():
        res = _invoke_select(tmp_path, t, c)
        assert res.exit_code == 2, (name, res.output)
        line = without_steps(res.output).strip()
        assert "\n" not in line, name
        assert "Traceback" not in line, name
        bad_file = c if t == good_t else t
        assert str(bad_file) in line, (name, line)
        assert needle in line, (name, line)


def test_cli_approximate_reports_agreement(tmp_path):
    train, cand = make_case(12, 700)
    write_feats(tmp_path / "t.parquet", train, "kadid")
    write_feats(tmp_path / "c.parquet", cand, "kadis")
    out = tmp_path / "a.parquet"
    args = ["select", "--train", str(tmp_path / "t.parquet"), "--candidates", str(tmp_path / "c.parquet")]
    res = CliRunner().invoke(cli, [*args, "--out", str(out), "--approximate", "--max-select", "20"])
    assert res.exit_code == 0, res.output
    assert "agreement with exact" in res.output
    table, meta = read_parquet(out, "selection")
    check = meta["approximate_check"]
    assert meta["approximate"] is True
    assert check["agreement_sample"] == meta["n_after_distance_filter"]  # small pool: sample = all of it
    assert 0.99 <= check["agreement_with_exact"] <= 1.0
    assert check["screening"] == "bfloat16"
    assert table.num_rows == meta["n_selected"] == 20
    assert meta["max_select"] == 20
    exact = official_dense(train, cand)
    assert len(set(table.column("candidate_index").to_pylist()) - set(exact)) <= 2


def test_cli_cuda_unavailable_is_usage_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    train, cand = make_case(1, 50)
    write_feats(tmp_path / "t.parquet", train, "kadid")
    write_feats(tmp_path / "c.parquet", cand, "kadis")
    res = CliRunner().invoke(cli, ["select", "--train", str(tmp_path / "t.parquet"), "--candidates",
                                   str(tmp_path / "c.parquet"), "--out", str(tmp_path / "o.parquet"),
                                   "--device", "cuda"])  # fmt: skip
    assert res.exit_code == 2
    assert "CUDA is not available" in res.output
