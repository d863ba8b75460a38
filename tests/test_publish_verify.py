"""`reshape publish` and `reshape verify` on a small synthetic pipeline output (built with the writers)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from click.testing import CliRunner

from reshape.artifacts import Features, read_csv, write_csv, write_features, write_parquet
from reshape.cli.main import cli
from reshape.fileio import sha256_file
from reshape.imageio import load_image, save_image
from reshape.verify import verify_dataset

REFS = ["I01", "I02"]
CANDIDATES = ["c1", "c2", "c3"]
SELECTED = ["c1", "c3"]
LEVELS = [1, 3]


def _img(rng: np.random.Generator) -> np.ndarray:
    return rng.random((24, 32, 3), dtype=np.float32)


@pytest.fixture
def pipeline_output(tmp_path: Path) -> dict[str, Path]:
    return _pipeline_output(tmp_path)


def _pipeline_output(tmp_path: Path) -> dict[str, Path]:
    """What the stages before publish leave on disk: source images + labels, features, selection, distorted
    images + manifest, labels.csv and the merged train.csv."""
    rng = np.random.default_rng(0)
    src = tmp_path / "kadid" / "images"
    pool = tmp_path / "pool"
    dist = tmp_path / "run" / "distorted"
    source_rows, pseudo_rows, manifest_rows = [], [], []
    for ref in REFS:
        save_image(src / f"{ref}.png", _img(rng))
        for t in (1, 2):
            for lvl in LEVELS:
                name = f"{ref}_{t:02d}_{lvl:02d}.png"
                save_image(src / name, _img(rng))
                source_rows.append([name, f"{ref}.png", 5.0 - lvl, 0.1, t, lvl, "source"])
    for cand in CANDIDATES:
        save_image(pool / f"{cand}.png", _img(rng))
    for cand in SELECTED:
        for t in (1, 2):
            for lvl in LEVELS:
                name = f"{cand}_{t:02d}_{lvl:02d}.png"
                save_image(dist / name, _img(rng))
                manifest_rows.append(
                    [name, f"{cand}.png", t, "x", lvl, 1.0, 7, sha256_file(dist / name), None]
                )
                pseudo_rows.append([name, f"{cand}.png", 4.5 - lvl, 0.2, t, lvl, "pseudo"])
    cols = ["dist_img", "ref_img", "dmos", "var", "dist_type", "dist_level", "origin"]
    run = tmp_path / "run"
    manifest = dist / "manifest.csv"
    write_csv(
        manifest,
        pd.DataFrame(
            manifest_rows,
            columns=[
                "dist_img",
                "ref_img",
                "dist_type",
                "dist_name",
                "dist_level",
                "parameter",
                "seed",
                "sha256",
                "denoiser",
            ],
        ),
        "distortion_manifest",
        {"seed": 7, "ref_root": str(pool)},
    )
    labels = pd.DataFrame(pseudo_rows, columns=cols)
    labels["neighbours"] = "I01.png;I02.png"
    labels["weights"] = "0.6;0.4"
    labels["distances"] = "0.1;0.12"
    write_csv(run / "labels.csv", labels.drop(columns=[]), "labels", {"k": 5, "margin": 0.05})
    write_csv(
        run / "train.csv", pd.DataFrame(source_rows + pseudo_rows, columns=cols), "train", {"scale": "source"}
    )
    train_emb = rng.random((2, 8), dtype=np.float32)
    cand_emb = rng.random((3, 8), dtype=np.float32)
    common = {"encoder": "resnet50", "weights": "none", "preprocessing": "center224"}
    for path, names, emb, root in (
        (run / "features" / "train.parquet", REFS, train_emb, src),
        (run / "features" / "candidates.parquet", CANDIDATES, cand_emb, pool),
    ):
        frame = pd.DataFrame(
            {
                "image": [f"{n}.png" for n in names],
                "sha256": ["0" * 64] * len(names),
                "width": 32,
                "height": 24,
            }
        )
        write_features(path, Features(frame, emb, {**common, "image_root": str(root)}))
    sel = pa.table(
        {
            "candidate_index": pa.array([0, 2], pa.int64()),
            "image": ["c1.png", "c3.png"],
            "sha256": ["0" * 64] * 2,
            "nearest_train_distance": pa.array([0.1, 0.2], pa.float32()),
            "farthest_train_distance": pa.array([0.3, 0.4], pa.float32()),
            "neighbour_images": [["I01.png", "I02.png"]] * 2,
            "neighbour_distances": pa.array([[0.1, 0.3], [0.2, 0.4]], pa.list_(pa.float32())),
        }
    )
    meta = {
        "tau": 0.1,
        "d_max": 0.5,
        "tau_quantile": 0.5,
        "k": 2,
        "n_train": 2,
        "n_candidates": 3,
        "n_after_distance_filter": 2,
        "n_selected": 2,
        "train_features": "x",
        "candidate_features": "y",
        "image_root": str(pool),
        "encoder": "resnet50",
    }
    write_parquet(run / "selection.parquet", sel, "selection", meta)
    (run / "run.json").write_text(json.dumps({"inputs": {"source_root": str(src), "candidates": str(pool)}}))
    return {"run": run, "src": src, "pool": pool, "dist": dist, "tmp": tmp_path}


def _publish(out: Path, *args: str) -> None:
    res = CliRunner().invoke(cli, ["publish", str(out), *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output


def test_publish_from_run_is_complete_and_verifies(pipeline_output: dict[str, Path]) -> None:
    out = pipeline_output["tmp"] / "dataset"
    _publish(out, "--from-run", str(pipeline_output["run"]))
    train = read_csv(out / "train.csv", "train")
    assert len(train) == 16
    assert (train["origin"] == "pseudo").sum() == 8
    pseudo = train[train["origin"] == "pseudo"]
    # Every new image is in the folder, byte-identical to the distort output.
    for rel in pseudo["dist_img"]:
        assert sha256_file(out / rel) == sha256_file(pipeline_output["dist"] / Path(rel).name)
    for rel in set(pseudo["ref_img"]):
        assert (out / rel).is_file()
    # Source images are referenced, not copied, and their checksums are kept for later.
    assert not (out / "source").exists()
    assert (train[train["origin"] == "source"]["dist_img"].str.startswith("source/")).all()
    source_sums = (out / "SOURCE_SHA256SUMS").read_text().splitlines()
    assert len(source_sums) == 10  # 8 distorted + 2 references
    card = json.loads((out / "dataset.json").read_text())
    assert card["counts"]["origin"] == {"pseudo": 8, "source": 8}
    assert card["counts"]["type_level"]["2"] == {"1": 4, "3": 4}
    assert card["labels"]["range"] == [1.0, 5.0]
    assert card["source"]["mode"] == "referenced"
    for png in ("plots/label_histogram.png", "plots/selection_map.png"):
        assert load_image(out / png).shape[2] == 3
    text = (out / "README.md").read_text()
    assert "randomly initialised" in text
    assert "KADID-10k" in text
    assert "| 2 | 4 | 0 | 4 | 0 | 0 | 8 |" in text
    report = verify_dataset(out)
    assert report.ok, report.problems
    assert report.files_checked >= 8 + 2 + 5


def test_sha256sums_checks_with_coreutils(pipeline_output: dict[str, Path]) -> None:
    if shutil.which("sha256sum") is None:
        pytest.skip("sha256sum not installed")
    out = pipeline_output["tmp"] / "dataset"
    _publish(out, "--from-run", str(pipeline_output["run"]), "--copy-source")
    done = subprocess.run(
        ["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    listed = {line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert listed == on_disk


def test_copy_source_and_loaders(pipeline_output: dict[str, Path]) -> None:
    out = pipeline_output["tmp"] / "dataset"
    _publish(out, "--from-run", str(pipeline_output["run"]), "--copy-source")
    train = pd.read_csv(out / "train.csv")
    assert all((out / p).is_file() for p in train["dist_img"])
    assert all((out / p).is_file() for p in train["ref_img"])
    assert verify_dataset(out).ok
    # What pyiqa's GeneralNRDataset does with meta_info.csv (pyiqa itself runs in test_publish_pyiqa.py):
    # pd.read_csv(meta_info_file).values, path = join(dataroot_target, row[0]), label = float(row[1]).
    from PIL import Image

    meta = pd.read_csv(out / "meta_info.csv")
    pairs = [(os.path.join(str(out), row[0]), float(row[1])) for row in meta.values]
    assert len(pairs) == 16
    for path, _ in pairs:
        with Image.open(path) as im:
            assert im.convert("RGB").size == (32, 24)
    assert meta.columns[0] == "path"
    assert np.allclose(meta["score"], train["dmos"])
    hf = pd.read_csv(out / "images" / "metadata.csv")
    assert len(hf) == 16
    assert all((out / "images" / f).is_file() for f in hf["file_name"])


def test_huggingface_imagefolder_loads_it(pipeline_output: dict[str, Path]) -> None:
    datasets = pytest.importorskip("datasets")
    out = pipeline_output["tmp"] / "dataset"
    _publish(out, "--from-run", str(pipeline_output["run"]))
    ds = datasets.load_dataset(
        "imagefolder",
        data_dir=str(out / "images"),
        split="train",
        cache_dir=str(pipeline_output["tmp"] / "hf"),
    )
    assert len(ds) == 8
    by_name = {Path(r["image"].filename).name: r["dmos"] for r in ds}
    train = pd.read_csv(out / "train.csv")
    expected = {Path(p).name: d for p, d in zip(train["dist_img"], train["dmos"]) if p.startswith("images/")}
    assert by_name == pytest.approx(expected)


def test_publish_replaces_previous_dataset_and_refuses_foreign_folder(
    pipeline_output: dict[str, Path],
) -> None:
    out = pipeline_output["tmp"] / "dataset"
    _publish(out, "--from-run", str(pipeline_output["run"]), "--copy-source")
    _publish(out, "--from-run", str(pipeline_output["run"]))
    assert not (out / "images" / "source").exists()
    assert verify_dataset(out).ok
    foreign = pipeline_output["tmp"] / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    res = CliRunner().invoke(cli, ["publish", str(foreign), "--from-run", str(pipeline_output["run"])])
    assert res.exit_code == 2
    assert str(foreign) in res.output
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_publish_rejects_missing_image_and_escaping_path(pipeline_output: dict[str, Path]) -> None:
    run = pipeline_output["run"]
    (pipeline_output["dist"] / "c3_02_03.png").unlink()
    res = CliRunner().invoke(cli, ["publish", str(pipeline_output["tmp"] / "d1"), "--from-run", str(run)])
    assert res.exit_code == 2
    assert "c3_02_03.png" in res.output
    train = pd.read_csv(run / "train.csv")
    train.loc[0, "dist_img"] = "../../etc/passwd"
    train.to_csv(run / "train.csv", index=False)
    res = CliRunner().invoke(cli, ["publish", str(pipeline_output["tmp"] / "d2"), "--from-run", str(run)])
    assert res.exit_code == 2
    assert "train.csv" in res.output
    assert "escapes" in res.output
    assert not (pipeline_output["tmp"] / "d2").exists()


# ----------------------------------------------------------------------------------------------- verify
@pytest.fixture(scope="module")
def published_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Published once for the module (publish takes seconds); each test corrupts a copy of its own."""
    output = _pipeline_output(tmp_path_factory.mktemp("published"))
    out = output["tmp"] / "dataset"
    _publish(out, "--from-run", str(output["run"]), "--copy-source")
    assert verify_dataset(out).ok
    return out


@pytest.fixture
def published(published_once: Path, tmp_path: Path) -> Path:
    out = tmp_path / "dataset"
    shutil.copytree(published_once, out, symlinks=True)
    assert verify_dataset(out).ok
    return out


def _edit_csv(path: Path, line: int, column: str, value: str) -> None:
    rows = list(csv.reader(path.open()))
    rows[line - 1][rows[0].index(column)] = value
    with path.open("w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def _verify_cli(out: Path) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["verify", str(out)])
    return res.exit_code, res.output


def test_verify_reports_every_corruption_at_once(published: Path) -> None:
    train = pd.read_csv(published / "train.csv")
    deleted = train["dist_img"][10]
    (published / deleted).unlink()
    flipped = published / train["dist_img"][11]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    _edit_csv(published / "train.csv", 3, "dist_img", "../outside.png")
    _edit_csv(published / "train.csv", 4, "ref_img", "/etc/passwd")
    _edit_csv(published / "train.csv", 5, "dmos", "nan")
    _edit_csv(published / "meta_info.csv", 6, "score", "7.5")
    (published / "images" / "extra.png").write_bytes(b"not listed")
    code, out = _verify_cli(published)
    assert code == 1
    expected = [
        f"{deleted}: listed in SHA256SUMS but missing",
        f"{flipped.relative_to(published).as_posix()}: checksum does not match",
        "train.csv: checksum does not match",
        "train.csv, line 3: column 'dist_img'",
        "escapes the dataset root",
        "train.csv, line 4: column 'ref_img'",
        "is absolute",
        "train.csv, line 5: label 'dmos' is not finite",
        "meta_info.csv, line 6: label 7.5 outside the dataset range [1.0, 5.0]",
        "images/extra.png: file not listed in SHA256SUMS",
    ]
    for text in expected:
        assert text in out, f"{text!r} not reported in:\n{out}"
    assert "reshape: error:" in out
    assert "problem(s) found" in out


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (
            lambda d: (d / "images" / "c1_01_01.png").unlink(),
            "images/c1_01_01.png: listed in SHA256SUMS but missing",
        ),
        (lambda d: _edit_csv(d / "train.csv", 2, "dmos", "4.25"), "train.csv: checksum does not match"),
        (
            lambda d: _edit_csv(d / "images" / "metadata.csv", 2, "file_name", "../x.png"),
            "escapes the dataset root",
        ),
        (
            lambda d: (d / "SHA256SUMS").write_text("zz  train.csv\n"),
            "SHA256SUMS, line 1: not a sha256sum line",
        ),
        (lambda d: (d / "dataset.json").write_text("{"), "dataset.json: invalid JSON"),
        (
            lambda d: _edit_csv(d / "train.csv", 2, "dist_img", "images/nothere.png"),
            "is not listed in SHA256SUMS",
        ),
    ],
)
def test_verify_reports_single_corruption(published: Path, corrupt, expected: str) -> None:
    corrupt(published)
    code, out = _verify_cli(published)
    assert code == 1
    assert expected in out, out


def test_verify_schema_violation_is_reported(published: Path) -> None:
    _edit_csv(published / "train.csv", 7, "dist_type", "abc")
    code, out = _verify_cli(published)
    assert code == 1
    assert "does not follow the train schema" in out
    assert "line 7" in out


def test_verify_symlink_escaping_the_folder(published: Path, tmp_path: Path) -> None:
    target = tmp_path / "secret.txt"
    target.write_text("x")
    (published / "images" / "link.png").symlink_to(target)
    code, out = _verify_cli(published)
    assert code == 1
    assert "images/link.png: symbolic link pointing outside" in out


def test_verify_not_a_folder_is_bad_input(tmp_path: Path) -> None:
    code, out = _verify_cli(tmp_path / "nope")
    assert code == 2
    assert "nope" in out


def test_verify_checks_mounted_referenced_source(pipeline_output: dict[str, Path]) -> None:
    out = pipeline_output["tmp"] / "dataset"
    _publish(out, "--from-run", str(pipeline_output["run"]))
    (out / "source").symlink_to(pipeline_output["src"], target_is_directory=True)
    assert verify_dataset(out).ok
    (pipeline_output["src"] / "I02_01_03.png").write_bytes(b"changed")
    code, text = _verify_cli(out)
    assert code == 1
    assert "source/I02_01_03.png: checksum does not match SOURCE_SHA256SUMS" in text


def _readme_block(after: str) -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = text.index(after)
    begin = text.index("```python\n", start) + len("```python\n")
    return text[begin : text.index("```", begin)]


def test_readme_trainer_snippets_load_a_published_dataset(
    pipeline_output: dict[str, Path], monkeypatch
) -> None:
    out = pipeline_output["tmp"] / "kadid-reshaped-livec"
    _publish(out, "--from-run", str(pipeline_output["run"]), "--copy-source", "--note", "labels by a proxy")
    assert "* labels by a proxy" in (out / "README.md").read_text()
    monkeypatch.chdir(pipeline_output["tmp"])
    scope: dict = {}
    exec(_readme_block("**pandas**"), scope)
    assert len(scope["train"]) == 16
    assert all(Path(p).is_file() for p in scope["paths"])
    scope = {}
    # The crop must fit the tiny test images (24x32).
    exec(
        _readme_block("**Plain PyTorch**").replace(
            '"kadid-reshaped-livec")', '"kadid-reshaped-livec", crop=16)'
        ),
        scope,
    )
    x, y = next(iter(scope["loader"]))
    assert tuple(x.shape) == (16, 3, 16, 16)
    assert set(np.round(y.numpy(), 4)) <= set(np.round(pd.read_csv(out / "train.csv")["dmos"].to_numpy(), 4))


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        ("dmos", "abc", "column 'dmos' value 'abc' is not a valid float64"),
        ("origin", "synthetic", "origin 'synthetic' is not source/pseudo"),
        ("ref_img", "/abs/I01.png", "is absolute"),
    ],
)
def test_publish_bad_train_csv_is_exit_2_naming_it(
    pipeline_output: dict[str, Path], column: str, value: str, expected: str
) -> None:
    train_csv = pipeline_output["run"] / "train.csv"
    _edit_csv(train_csv, 3, column, value)
    res = CliRunner().invoke(
        cli, ["publish", str(pipeline_output["tmp"] / "d"), "--from-run", str(pipeline_output["run"])]
    )
    assert res.exit_code == 2
    assert str(train_csv) in res.output
    assert expected in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_publish_label_outside_given_range(pipeline_output: dict[str, Path]) -> None:
    args = ["publish", str(pipeline_output["tmp"] / "d"), "--from-run", str(pipeline_output["run"])]
    res = CliRunner().invoke(cli, [*args, "--label-range", "2,5"])
    assert res.exit_code == 2
    assert "train.csv, line 11: label 1.5 outside the range [2.0, 5.0]" in res.output
    res = CliRunner().invoke(cli, [*args, "--label-range", "5,1"])
    assert res.exit_code == 2
    assert "--label-range '5,1'" in res.output


def _reshape_imports(module: str) -> set[str]:
    """The reshape modules a library module imports (at the top or inside functions)."""
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[1] / "reshape" / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reshape."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("reshape.")}
    return found


def test_published_folder_modules_import_only_downward() -> None:
    """publish -> hub -> verify -> layout: the folder layout lives in one module none of them re-imports."""
    assert "publish" not in _reshape_imports("verify")
    assert "publish" not in _reshape_imports("hub")
    assert not {"publish", "verify", "hub", "croissant"} & _reshape_imports("layout")
    assert "layout" in _reshape_imports("verify") and "layout" in _reshape_imports("hub")
