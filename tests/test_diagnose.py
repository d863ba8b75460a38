"""reshape diagnose: the clustered-feature figures on toys computed by hand, on synthetic embeddings with a
known structure, and end to end on the demo's published dataset (colour-texture encoder, and a checkpoint
trained by reshape.train_reference)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from reshape.cli.main import cli
from reshape.diagnose import (
    Rows,
    chance_purity,
    cosine_silhouette,
    dataset_figures,
    knn_purity,
    label_continuity,
    nearest_neighbours,
    subset_figures,
    terciles,
)
from reshape.diagnose.plots import map_2d

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ------------------------------------------------------------------------------------ toys, by hand
E1, E2 = [1.0, 0.0], [0.0, 1.0]


def test_silhouette_of_toys_computed_by_hand():
    # two groups on orthogonal axes: distance 0 inside, 1 across -> every row scores (1 - 0) / 1
    assert cosine_silhouette(np.array([E1, E1, E2, E2]), ["a", "a", "b", "b"]) == pytest.approx(1.0)
    # each group holds one row of each axis: a = 1 (the other row of the group), b = (0 + 1) / 2
    # -> s = (0.5 - 1) / 1 = -0.5 for every row
    assert cosine_silhouette(np.array([E1, E2, E1, E2]), ["a", "a", "b", "b"]) == pytest.approx(-0.5)
    # a group of one scores 0 (Rousseeuw): (1 + 1 + 0) / 3; scaling a row changes no cosine distance
    assert cosine_silhouette(np.array([E1, [3.0, 0.0], E2]), ["a", "a", "b"]) == pytest.approx(2 / 3)
    # undefined with one group, or with every row alone
    assert cosine_silhouette(np.array([E1, E2]), ["a", "a"]) is None
    assert cosine_silhouette(np.array([E1, E2]), ["a", "b"]) is None


def test_silhouette_matches_the_definition_on_random_data():
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(3)
    x, groups = rng.normal(size=(70, 6)), rng.integers(0, 5, 70)
    dist = cdist(x, x, "cosine")
    scores = []
    for i in range(len(x)):
        own = groups == groups[i]
        own[i] = False
        a = dist[i, own].mean()
        b = min(dist[i, groups == g].mean() for g in set(groups) - {groups[i]})
        scores.append((b - a) / max(a, b))
    assert cosine_silhouette(x, groups) == pytest.approx(np.mean(scores), abs=1e-12)


def test_neighbours_purity_and_continuity_of_a_toy():
    x = np.array([E1, E1, E2, E2, [1.0, 1.0]])
    nb = nearest_neighbours(x, 1)
    # the duplicate is the nearest; the diagonal row is equally near both axes: the lower index wins
    assert nb[:, 0].tolist() == [1, 0, 3, 2, 0]
    assert knn_purity(nb, ["a", "a", "b", "b", "b"]) == pytest.approx(4 / 5)
    assert knn_purity(nb, ["a", "b", "a", "b", "a"]) == pytest.approx(1 / 5)
    # chance: P(another row shares the group) = (2*1 + 3*2) / (5*4)
    assert chance_purity(["a", "a", "b", "b", "b"]) == pytest.approx(8 / 20)
    spearman, gap = label_continuity(nb, np.array([1.0, 2.0, 5.0, 7.0, 0.0]))
    # neighbour labels 2, 1, 7, 5, 1 -> |gaps| 1, 1, 2, 2, 1
    assert gap == pytest.approx(7 / 5)
    # Pearson of the ranks (2,3,4,5,1) and (3,1.5,5,4,1.5): deviations (-1,0,1,2,-2), (0,-1.5,2,1,-1.5)
    assert spearman == pytest.approx(7 / np.sqrt(10 * 9.5), abs=1e-12)


def test_spearman_with_ties_matches_scipy():
    from scipy import stats

    from reshape.diagnose.metrics import spearman

    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 4, 40).astype(float), rng.normal(size=40)
    b[:12] = 0.5  # ties on both sides
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0], abs=1e-12)
    assert spearman(a, np.ones(40)) is None


def test_neighbours_agree_with_brute_force_and_ignore_duplicates_order():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8))
    x[60:70] = x[50]  # ten exact copies: ties broken by the lower index
    nb = nearest_neighbours(x, 10)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = np.round(u @ u.T, 12)
    np.fill_diagonal(sim, -np.inf)
    brute = np.array([np.lexsort((np.arange(120), -row))[:10] for row in sim])
    assert (nb == brute).all()
    assert nearest_neighbours(x[:1], 10).shape == (1, 0)


def test_terciles_split_by_label_with_stable_ties():
    bottom, top = terciles(np.array([5.0, 1.0, 1.0, 9.0, 3.0, 1.0, 7.0]))
    assert bottom.tolist() == [1, 2] and top.tolist() == [3, 6]


# ---------------------------------------------------------------------- synthetic known structure
def _synthetic(n_refs=12, n_types=6, levels=5, noise=0.05, seed=0):
    """KADID-like rows: high quality near its reference's direction, low quality near its type's."""
    rng = np.random.default_rng(seed)
    dim = 64
    ref_dirs, type_dirs = rng.normal(size=(n_refs, dim)), rng.normal(size=(n_types, dim))
    rows, refs, types, labels = [], [], [], []
    for r in range(n_refs):
        for t in range(n_types):
            for level in range(1, levels + 1):
                w = (level - 1) / (levels - 1)  # 0 = pristine, 1 = heavily distorted
                rows.append((1 - w) * ref_dirs[r] + w * type_dirs[t] + noise * rng.normal(size=dim) * 8)
                refs.append(f"r{r}")
                types.append(t)
                labels.append(5.0 - 4.0 * w + rng.normal() * 0.05)
    return Rows(np.array(rows), np.array(labels), refs, types)


def test_clustered_structure_reads_as_in_the_paper():
    figs = dataset_figures(_synthetic())
    top, bottom = figs["top_tercile"], figs["bottom_tercile"]
    # high quality clusters by reference, low quality by type (the paper's Fig. 1)
    assert top["silhouette_reference"] > 0.5 > top["silhouette_type"]
    assert top["purity_reference"] > 0.9 and top["purity_reference"] > 5 * top["purity_reference_chance"]
    assert bottom["silhouette_type"] > 0.5 > bottom["silhouette_reference"]
    assert bottom["purity_type"] > 0.9 and bottom["purity_reference"] < 0.3
    assert figs["all"]["rows"] == 360 and top["rows"] == bottom["rows"] == 120
    assert "pseudo" not in figs


def test_figures_fall_as_the_clusters_dissolve():
    tight, loose = (dataset_figures(_synthetic(noise=n))["top_tercile"] for n in (0.02, 0.6))
    for figure in ("silhouette_reference", "purity_reference"):
        assert tight[figure] > loose[figure]


def test_a_continuous_manifold_has_continuous_labels_and_no_clusters():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 1, 300))
    curve = np.stack([np.cos(2.5 * t), np.sin(2.5 * t), t], axis=1)  # one smooth path, label along it
    groups = rng.integers(0, 6, 300)  # groups unrelated to the geometry
    smooth = subset_figures(Rows(curve, 10 * t, groups, groups))
    shuffled = subset_figures(Rows(curve, 10 * rng.permutation(t), groups, groups))
    assert smooth["continuity_spearman"] > 0.99 and smooth["label_gap"] < 0.1
    assert abs(shuffled["continuity_spearman"]) < 0.2 and shuffled["label_gap"] > 2.0
    assert smooth["silhouette_reference"] < 0.05  # random groups: no better than chance (mildly negative)
    assert smooth["purity_reference"] == pytest.approx(smooth["purity_reference_chance"], abs=0.05)


def test_pseudo_rows_sampling_and_rounding():
    rows = _synthetic()
    origins = ["pseudo" if r in ("r0", "r1") else "source" for r in rows.references]
    figs = dataset_figures(rows, origins, sample=50, seed=7)
    assert figs["pseudo"]["rows"] == 60 and figs["all"]["silhouette_rows"] == 50
    assert figs["pseudo"]["silhouette_rows"] == 50
    assert dataset_figures(rows, origins, sample=50, seed=7) == figs  # the seed fixes the sample
    values = [v for f in figs.values() for v in f.values() if isinstance(v, float)]
    assert values and all(round(v, 4) == v for v in values)


def test_pca_map_is_signed_the_same_whatever_the_row_signs():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5)) + 3
    xy, method = map_2d(x)
    assert xy.shape == (40, 2) and method in ("PCA", "UMAP")
    if method == "PCA":
        again, _ = map_2d(x.copy())
        np.testing.assert_allclose(xy, again, atol=1e-9)


# --------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory) -> Path:
    from reshape.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "demo"
    run_demo(out, echo=lambda *_: None)
    return out / "dataset"


def _diagnose(*args: str) -> object:
    return CliRunner().invoke(cli, ["-q", "diagnose", *map(str, args)])


def _one_line_error(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reshape: error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_demo_dataset_end_to_end_and_byte_identical(demo_dataset, tmp_path):
    mos = tmp_path / "authentic.csv"  # an authentic-style MOS table: images and scores, nothing else
    train = pd.read_csv(demo_dataset / "train.csv")
    mos_rows = train[train.origin == "pseudo"].iloc[::2]  # every other pseudo image: 27 rows
    pd.DataFrame({"image": mos_rows.dist_img, "mos": mos_rows.dmos}).to_csv(mos, index=False)
    args = [
        "--encoder",
        "colour-texture",
        f"demo={demo_dataset}",
        f"test={mos}",
        "--image-root",
        demo_dataset,
    ]
    res = _diagnose(*args, "--out", tmp_path / "a")
    assert res.exit_code == 0, res.output + res.stderr
    doc = json.loads((tmp_path / "a" / "diagnose.json").read_text())
    assert doc["embedding"]["encoder"] == "colour-texture" and doc["seed"] == 0 and doc["k"] == 10
    demo = doc["datasets"]["demo"]["figures"]
    assert set(demo) == {"all", "top_tercile", "bottom_tercile", "pseudo"}
    assert demo["all"]["rows"] == len(train) and demo["pseudo"]["rows"] == (train.origin == "pseudo").sum()
    assert demo["all"]["silhouette_rows"] == len(train)
    # colour statistics see the photo, not the distortion: clustered by reference, far above chance
    assert demo["top_tercile"]["purity_reference"] > 3 * demo["top_tercile"]["purity_reference_chance"]
    assert demo["all"]["silhouette_reference"] > demo["all"]["silhouette_type"]
    test = doc["datasets"]["test"]
    assert test["kind"].startswith("authentic") and set(test["columns"]) == {"image", "label"}
    assert "purity_reference" not in test["figures"]["all"] and test["figures"]["all"]["label_gap"] > 0
    assert test["rows"] == len(mos_rows) == 27 and test["figures"]["top_tercile"]["rows"] == 9
    md = (tmp_path / "a" / "diagnose.md").read_text()
    assert "| figure | demo | test |" in md and md.count("\n| ") > 20
    png = (tmp_path / "a" / "plots" / "demo.png").read_bytes()
    assert png.startswith(b"\x89PNG") and (tmp_path / "a" / "plots" / "test.png").is_file()
    # the same inputs -> the same bytes, again in place (its own files are replaced)
    before = {n: (tmp_path / "a" / n).read_bytes() for n in ("diagnose.json", "diagnose.md")}
    assert _diagnose(*args, "--out", tmp_path / "a").exit_code == 0
    assert before == {n: (tmp_path / "a" / n).read_bytes() for n in before}
    # a file the user put under one of its names is not replaced without --overwrite
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "diagnose.md").write_text("my notes\n")
    _one_line_error(_diagnose(*args, "--out", tmp_path / "b"), "diagnose.md", "--overwrite")
    assert (tmp_path / "b" / "diagnose.md").read_text() == "my notes\n"


def test_checkpoint_of_the_reference_trainer_is_diagnosed(demo_dataset, tmp_path):
    import torch

    from reshape import train_reference as tr

    train = tr.read_published(demo_dataset)
    checkpoint = tmp_path / "model.pt"
    config = tr.TrainConfig(
        epochs=1,
        batch_size=16,
        patch_size=32,
        weights="none",
        device="cpu",
        workers=0,
        save_model=str(checkpoint),
    )
    tr.fit(
        train.subset(range(0, len(train), 5)), {}, config
    )  # one short epoch (33 images) is a trained model
    model_state = torch.load(checkpoint, weights_only=True)
    assert "head.weight" in model_state
    out = tmp_path / "out"
    res = _diagnose(
        demo_dataset, "--checkpoint", checkpoint, "--patch-size", 32, "--out", out, "--by", "type"
    )
    assert res.exit_code == 0, res.output + res.stderr
    doc = json.loads((out / "diagnose.json").read_text())
    from reshape.fileio import sha256_file

    assert doc["embedding"]["checkpoint_sha256"] == sha256_file(checkpoint)
    assert "penultimate" in doc["embedding"]["encoder"]
    figs = doc["datasets"]["dataset"]["figures"]["all"]
    assert figs["rows"] == len(train) and "purity_type" in figs and "purity_reference" not in figs
    assert -1 <= figs["silhouette_type"] <= 1 and 0 <= figs["purity_type"] <= 1
    # a checkpoint of another architecture: one line, exit 2
    import torchvision

    other = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), other)
    _one_line_error(
        _diagnose(demo_dataset, "--checkpoint", other, "--out", tmp_path / "x"), str(other), "ResNet-50"
    )
    broken = {k: v for k, v in model_state.items() if k != "backbone.layer4.2.conv3.weight"}
    torch.save(broken, other)
    _one_line_error(_diagnose(demo_dataset, "--checkpoint", other, "--out", tmp_path / "x"), str(other))
    assert not (tmp_path / "x").exists()


def test_bad_inputs_are_one_line_exit_2(demo_dataset, tmp_path):
    out = tmp_path / "out"
    ct = ["--encoder", "colour-texture", "--out", out]
    no_label = tmp_path / "no_label.csv"
    no_label.write_text("image\nimages/source/astronaut.png\n")
    _one_line_error(_diagnose(no_label, "--image-root", demo_dataset, *ct), str(no_label), "no label column")
    mos = tmp_path / "mos.csv"
    mos.write_text("image,mos\nimages/source/astronaut.png,3\nimages/source/camera.png,4\n")
    _one_line_error(_diagnose(mos, "--image-root", demo_dataset, "--by", "type", *ct), str(mos), "--by type")
    folder = tmp_path / "photos"
    folder.mkdir()
    _one_line_error(_diagnose(folder, *ct), str(folder), "no dataset")
    _one_line_error(_diagnose(tmp_path / "missing", *ct), "missing")
    _one_line_error(_diagnose(demo_dataset, demo_dataset, *ct), "same name", "NAME=PATH")
    _one_line_error(
        _diagnose(demo_dataset, "--encoder", "colour-texture", "--out", demo_dataset / "d"), "input"
    )
    assert not out.exists() and not (demo_dataset / "d").exists()
    shutil.rmtree(folder)


def test_report_tab_and_the_kit_figures_agree(demo_dataset):
    from reshape.diagnose.inputs import build_embedder
    from reshape.diagnose.training import TrainingSets, srcc_table
    from reshape.report import plan_files, read_published

    plan = plan_files(read_published(demo_dataset), "colour-texture")
    index = plan.files["index.html"].decode()
    assert 'data-tab="diagnose">Clustered features</a></nav>' in index
    assert "<section id='diagnose' class='tab' hidden>" in index and "diagnose/plots/dataset.png" in index
    assert plan.files["diagnose/plots/dataset.png"].startswith(b"\x89PNG")
    section = index[index.index("<section id='diagnose'") :]
    assert "style=" not in section and "diagnose/diagnose.css" in section  # the report's CSP: no inline style
    assert b"img.diagnose-map" in plan.files["diagnose/diagnose.css"]
    in_report = json.loads(plan.files["diagnose/diagnose.json"])["datasets"]["dataset"]["figures"]
    # the Table 4 kit's view of the same folder: every row, then the rows a source-only model trains on
    sets = TrainingSets(build_embedder("colour-texture"), None)
    assert sets.figures(demo_dataset, ("source", "pseudo"))["figures"] == in_report
    source_only = sets.figures(demo_dataset, ("source",), drop_refs=("astronaut",))
    n_astronaut = sum(
        r.startswith("images/source/astronaut") for r in pd.read_csv(demo_dataset / "train.csv").ref_img
    )
    assert source_only["rows"] == 108 - n_astronaut and "pseudo" not in source_only["figures"]
    text = srcc_table({"a) livec": source_only}, {"a) livec": 0.5123}, {"encoder": "colour-texture"})
    assert f"| a) livec | {source_only['rows']} | 0.5123 |" in text


def test_publish_and_report_take_the_option():
    for stage in ("publish", "report"):
        assert "--diagnose-encoder" in CliRunner().invoke(cli, [stage, "--help"]).output


def test_source_rows_of_a_folder_without_its_source_images(demo_dataset, tmp_path):
    from reshape.diagnose.inputs import read_table
    from reshape.errors import BadInputError

    # a folder published without --copy-source: source rows name source/..., the images live elsewhere
    folder = tmp_path / "pub"
    folder.mkdir()
    train = pd.read_csv(demo_dataset / "train.csv")
    is_source = train.origin == "source"
    train.loc[is_source, "dist_img"] = train.loc[is_source, "dist_img"].str.replace(
        "images/source/", "source/"
    )
    train.to_csv(folder / "train.csv", index=False)
    shutil.copytree(demo_dataset / "images", folder / "images", ignore=shutil.ignore_patterns("source"))
    with pytest.raises(BadInputError, match="need --source-root"):
        read_table(str(folder))
    table = read_table(str(folder), skip_unshipped=True)  # the report's view: what the folder ships
    assert table.left_out == is_source.sum() and len(table.paths) == (~is_source).sum()
    assert set(table.origins) == {"pseudo"}
    full = read_table(str(folder), source_root=demo_dataset / "images" / "source")
    assert full.left_out == 0 and len(full.paths) == len(train)
