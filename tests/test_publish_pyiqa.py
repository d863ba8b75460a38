"""pyiqa/train.yml and pyiqa/test.yml of a published dataset, through pyiqa 0.1.16's own dataset builder,
training pipeline and test pipeline.

The dataset is demo-like but big enough for the paper's batch of 32 and 224 patches: 72 rows of 256x256
images of 9 references, one of which train.yml holds out for validation (model choice), leaving 64. It is published
with a small LIVE Challenge stand-in as --val-root, which must land in test.yml only. Training runs pyiqa's
train_pipeline through the shipped launcher from another working directory, with three changes only: the
schedule is one epoch (= 2 iterations of 32), the training patch is 64 instead of 224 (the 224 patches are
checked by test_build_dataset_loads_every_sample_as_written; ResNet-50 on 64 patches is the same code path at 1/12 of the
CPU time), and timm finds the ResNet-50 backbone in a local, offline
Hugging Face cache holding randomly initialised weights instead of downloading the ImageNet ones; then
pyiqa's test_pipeline scores net_best on the test set through the shipped test launcher.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from reshape.artifacts import write_csv
from reshape.cli.main import cli
from reshape.fileio import sha256_file
from reshape.imageio import save_image
from reshape.protocol import PAPER_PROTOCOL
from reshape.pyiqa_options import parse_val_roots, render_test_options

pytest.importorskip("pyiqa")
COLS = ["dist_img", "ref_img", "dmos", "var", "dist_type", "dist_level", "origin"]


def _smooth(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """A smooth random image (compresses well, still varied)."""
    small = rng.random((8, 8, 3), dtype=np.float32)
    return np.kron(small, np.ones((size // 8, size // 8, 1), dtype=np.float32))


def _write_run(tmp: Path) -> Path:
    """A run with 32 source rows (4 refs x 8) and 40 pseudo rows (5 new refs x 8), labels 1..5."""
    rng = np.random.default_rng(1)
    src, pool, run = tmp / "kadid", tmp / "pool", tmp / "run"
    dist = run / "distorted"
    rows, manifest = [], []
    for origin, root, refs in (("source", src, ["I01", "I02", "I03", "I04"]), ("pseudo", pool, ["c1", "c2", "c3", "c4", "c5"])):  # fmt: skip
        for ref in refs:
            save_image(root / f"{ref}.png", _smooth(rng))
            for t in (1, 2, 3, 4):
                for lvl in (1, 5):
                    name = f"{ref}_{t:02d}_{lvl:02d}.png"
                    save_image((src if origin == "source" else dist) / name, _smooth(rng))
                    rows.append([name, f"{ref}.png", float(rng.uniform(1, 5)), 0.1, t, lvl, origin])
                    if origin == "pseudo":
                        manifest.append(
                            [name, f"{ref}.png", t, "x", lvl, 1.0, 0, sha256_file(dist / name), None]
                        )
    mcols = [
        "dist_img",
        "ref_img",
        "dist_type",
        "dist_name",
        "dist_level",
        "parameter",
        "seed",
        "sha256",
        "denoiser",
    ]
    write_csv(
        dist / "manifest.csv",
        pd.DataFrame(manifest, columns=mcols),
        "distortion_manifest",
        {"ref_root": str(pool)},
    )
    write_csv(run / "train.csv", pd.DataFrame(rows, columns=COLS), "train", {"scale": "source"})
    (run / "run.json").write_text(json.dumps({"inputs": {"source_root": str(src), "candidates": str(pool)}}))
    return run


def _livec_standin(root: Path) -> Path:
    """pyiqa's download layout for LIVE Challenge: datasets/LIVEC + datasets/meta_info/...csv (10 images)."""
    livec = root / "datasets" / "LIVEC"
    rng = np.random.default_rng(2)
    names = [f"{i}.png" for i in range(10)]
    for name in names:
        save_image(livec / name, _smooth(rng, 64))
    (root / "datasets" / "meta_info").mkdir()
    pd.DataFrame({"img_name": names, "mos": np.linspace(10, 90, 10)}).to_csv(
        root / "datasets" / "meta_info" / "meta_info_LIVEChallengeDataset.csv", index=False
    )
    return livec


@pytest.fixture(scope="module")
def moved_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Published with --copy-source and a LIVE Challenge test set, then moved elsewhere (as after a
    download)."""
    tmp = tmp_path_factory.mktemp("pyiqa")
    run = _write_run(tmp)
    livec = _livec_standin(tmp / "tests")
    res = CliRunner().invoke(
        cli,
        ["publish", str(tmp / "built"), "--from-run", str(run), "--copy-source", "--name", "kadid-reshaped",
         "--val-root", f"livec={livec}"],
        env={"RESHAPE_VAL_ROOT_KONIQ10K": ""},
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    moved = tmp / "downloads" / "kadid-reshaped"
    moved.parent.mkdir()
    shutil.move(tmp / "built", moved)
    return moved


def _load_options(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_build_dataset_loads_every_sample_as_written(
    moved_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyiqa's train and val phases read disjoint references; together they are every published row."""
    from pyiqa.data import build_dataset

    opt = _load_options(moved_dataset / "pyiqa" / "train.yml")
    train_opt = dict(opt["datasets"]["train"], phase="train")
    val_opt = dict(opt["datasets"]["val"], phase="val")
    assert train_opt["dataroot_target"] == ".." and train_opt["meta_info_file"] == "meta_info_split.csv"
    monkeypatch.chdir(moved_dataset / "pyiqa")  # plain pyiqa: paths as written, relative to this folder
    table = pd.read_csv(moved_dataset / "train.csv")
    seen: dict[str, dict[str, float]] = {}
    for phase, dataset_opt in (("train", train_opt), ("val", val_opt)):
        dataset = build_dataset(dataset_opt)
        seen[phase] = {}
        for i in range(len(dataset)):
            item = dataset[i]
            if phase == "train":
                assert tuple(item["img"].shape) == (3, PAPER_PROTOCOL.patch_size, PAPER_PROTOCOL.patch_size)
            rel = Path(item["img_path"]).resolve().relative_to(moved_dataset.resolve()).as_posix()
            seen[phase][rel] = float(item["mos_label"])
    assert len(seen["train"]) == 64 and len(seen["val"]) == 8  # 9 references: one held out
    assert {**seen["train"], **seen["val"]} == pytest.approx(dict(zip(table["dist_img"], table["dmos"])))
    ref_of = dict(zip(table["dist_img"], table["ref_img"]))
    assert not {ref_of[p] for p in seen["train"]} & {ref_of[p] for p in seen["val"]}


def test_options_follow_the_paper_protocol(moved_dataset: Path) -> None:
    opt = _load_options(moved_dataset / "pyiqa" / "train.yml")
    p = PAPER_PROTOCOL
    assert opt["network"] == {
        "type": "NIMA",
        "base_model_name": "resnet50.tv_in1k",
        "num_classes": 1,
        "pretrained": False,
    }
    optim = opt["train"]["optim"]
    assert optim["type"] == "Adam"
    assert optim["lr"] == pytest.approx(p.lr) and optim["lr_classifier"] == pytest.approx(
        p.lr * p.head_lr_ratio
    )
    assert optim["weight_decay"] == pytest.approx(p.weight_decay)
    assert opt["train"]["mos_loss_opt"]["type"] == "L1Loss"
    assert opt["train"]["total_epoch"] == p.epochs
    assert opt["datasets"]["train"]["batch_size_per_gpu"] == p.batch_size
    assert opt["datasets"]["train"]["augment"] == {"random_crop": p.patch_size, "hflip": p.hflip}
    assert opt["manual_seed"] == p.seed
    # Model choice on the held-out training references only; the test set given at publish time is not
    # in train.yml at all, but in test.yml.
    assert list(opt["datasets"]) == ["train", "val"] and opt["val"]["key_metric"] == "srcc"
    text = (moved_dataset / "pyiqa" / "train.yml").read_text()
    assert "LIVEC" not in text and "LIVEChallengeDataset" not in text
    test = _load_options(moved_dataset / "pyiqa" / "test.yml")
    assert list(test["datasets"]) == ["test_livec"]
    assert test["datasets"]["test_livec"]["type"] == "LIVEChallengeDataset"
    assert test["network"] == opt["network"]
    assert "averages 5 random 224 patches" in text


@pytest.fixture(scope="module")
def offline_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An offline Hugging Face cache holding a random-init timm resnet50.tv_in1k (no download)."""
    import safetensors.torch
    import timm

    cache = tmp_path_factory.mktemp("hf-hub")
    repo = cache / "models--timm--resnet50.tv_in1k"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model = timm.create_model("resnet50.tv_in1k", pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, repo / "snapshots" / commit / "model.safetensors")
    return cache


def test_pyiqa_trains_then_tests_from_another_directory(
    moved_dataset: Path, offline_backbone: Path, tmp_path: Path
) -> None:
    import torch

    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(offline_backbone),
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    cmd = [
        sys.executable,
        str(moved_dataset / "pyiqa" / "train.py"),
        "-opt",
        str(moved_dataset / "pyiqa" / "train.yml"),
    ]
    cmd += ["--force_yml", "train:total_epoch=1", "datasets:train:num_worker_per_gpu=0"]
    cmd += ["datasets:train:augment:random_crop=64"]  # the schedule and batches stay; the patch shrinks
    done = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    experiment = elsewhere / "experiments" / "kadid-reshaped_resnet50"
    weights = torch.load(experiment / "models" / "net_latest.pth", map_location="cpu", weights_only=True)
    assert tuple(weights["params"]["classifier.2.weight"].shape) == (1, 2048)
    log = next(experiment.glob("train_*.log")).read_text()
    assert "Total epochs: 1; iters: 2." in log
    assert log.count("Saving latest models") == 1  # once per epoch: after iteration 2
    # validation ran on the held-out training references and chose net_best; the test set never ran
    assert "kadid-reshaped validation references" in log and "LIVEC" not in log
    assert (experiment / "models" / "net_best.pth").is_file()
    # The backbone moved away from the cached start by a couple of Adam steps of lr (2e-5) each.
    import safetensors.torch

    start = safetensors.torch.load_file(next(offline_backbone.rglob("model.safetensors")))["conv1.weight"]
    moved = (weights["params"]["base_model.conv1.weight"] - start).abs().max().item()
    assert 0 < moved < 10 * PAPER_PROTOCOL.lr
    assert not (moved_dataset / "experiments").exists()

    # pyiqa's test pipeline scores net_best on the test set of test.yml, from the same working directory
    cmd = [
        sys.executable,
        str(moved_dataset / "pyiqa" / "test.py"),
        "-opt",
        str(moved_dataset / "pyiqa" / "test.yml"),
    ]
    cmd += ["--force_yml", "datasets:test_livec:num_worker_per_gpu=0"]
    tested = subprocess.run(cmd, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=900)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-3000:]
    test_log = next((elsewhere / "results" / "kadid-reshaped_resnet50_test").glob("test_*.log")).read_text()
    assert "Number of test images in LIVEC: 3" in test_log  # pyiqa's LIVEC class drops its 7 training images
    assert "net_best.pth" in test_log
    srcc = re.search(r"Validation LIVEC\s+# srcc: (-?[0-9.]+|nan)", test_log)
    assert srcc is not None, test_log[-2000:]


def test_test_sections_come_from_options_or_environment(tmp_path: Path) -> None:
    from pyiqa.data import build_dataset

    livec = _livec_standin(tmp_path)
    from_option = parse_val_roots([f"livec={livec}"], environ={})
    from_env = parse_val_roots(environ={"RESHAPE_VAL_ROOT_LIVEC": str(livec)})
    assert from_option == from_env and list(from_option) == ["livec"]
    assert parse_val_roots(environ={}) == {}
    import yaml

    opt = yaml.safe_load(render_test_options("x", from_option))
    assert list(opt["datasets"]) == ["test_livec"]
    val = dict(opt["datasets"]["test_livec"], phase="test")
    dataset = build_dataset(val)
    assert len(dataset) == 3  # pyiqa's LIVEChallengeDataset drops the 7 training images
    assert float(dataset[0]["mos_label"]) == pytest.approx(np.linspace(10, 90, 10)[7])
    with pytest.raises(Exception, match="unknown test set 'tid'"):
        parse_val_roots(["tid=/x"], environ={})
    with pytest.raises(Exception, match="--val-meta koniq10k"):
        parse_val_roots([f"koniq10k={livec}"], environ={})


def test_cv2_imports_with_both_opencv_distributions() -> None:
    from importlib import metadata

    installed = set()
    for dist in ("opencv-python", "opencv-python-headless"):
        try:
            installed.add(metadata.version(dist))
        except metadata.PackageNotFoundError:
            pass
    code = "import cv2, numpy as np; ok, buf = cv2.imencode('.png', np.zeros((4, 4, 3), np.uint8)); print(cv2.imdecode(buf, 1).shape)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(4, 4, 3)"
    assert installed, "neither OpenCV distribution is installed"
