"""`reshape features`: end to end on real photos, seeded random ResNet-50; incremental; bad input."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from cli_output import without_steps
from click.testing import CliRunner
from PIL import Image

from reshape.artifacts import read_features
from reshape.cli.main import cli
from reshape.features import collect_images, run_features


@pytest.fixture
def photo_dir(tmp_path, natural_photos) -> Path:
    """Four real photos: PNG and JPEG, one in a sub-folder, all at least 224 on a side."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(natural_photos["astronaut"]).save(root / "astronaut.png")
    Image.fromarray(natural_photos["chelsea"]).save(root / "sub" / "chelsea.jpg", quality=92)
    Image.fromarray(natural_photos["coffee"]).save(root / "coffee.png")
    Image.fromarray(natural_photos["rocket"]).save(root / "rocket.jpg", quality=90)
    return root


_REFERENCE_MODEL: list[torch.nn.Module] = []


def reference_embedding(path: Path) -> np.ndarray:
    """Independent computation: seeded torchvision ResNet-50, PIL decode, centre crop 224, ImageNet norm."""
    if not _REFERENCE_MODEL:
        torch.manual_seed(0)
        model = torchvision.models.resnet50(weights=None)
        model.fc = torch.nn.Identity()
        _REFERENCE_MODEL.append(model.eval())
    model = _REFERENCE_MODEL[0]
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    h, w = img.shape[:2]
    t, left = (h - 224) // 2, (w - 224) // 2
    crop = torch.from_numpy(img[t : t + 224, left : left + 224].copy()).permute(2, 0, 1)
    x = torchvision.transforms.functional.normalize(crop, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.inference_mode():
        return model(x[None]).numpy()[0]


def invoke(*args: str):
    return CliRunner().invoke(cli, ["features", *args])


def test_end_to_end_random_weights(photo_dir, tmp_path):
    out = tmp_path / "refs.parquet"
    res = invoke(str(photo_dir), "--out", str(out), "--weights", "none", "--device", "cpu",
                 "--batch-size", "3", "--fingerprint", "fp1")  # fmt: skip
    assert res.exit_code == 0, res.output
    # one warning, one wording, on stderr; the summary on stdout (issue #16)
    assert res.stderr.count("RANDOM") == 1 and "RANDOM" not in res.stdout
    assert res.stdout.startswith("4 images: 4 embedded, 0 reused, 0 skipped -> ")
    feats = read_features(out)
    assert feats.images == ["astronaut.png", "coffee.png", "rocket.jpg", "sub/chelsea.jpg"]
    assert feats.embeddings.shape == (4, 2048)
    assert feats.metadata["image_root"] == str(photo_dir.resolve())
    assert feats.metadata["encoder"] == "resnet50"
    assert "random" in feats.metadata["weights"]
    assert feats.metadata["fingerprint"] == "fp1"
    assert feats.metadata["skipped"] == []
    for row in feats.frame.itertuples():
        path = photo_dir / row.image
        assert row.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        with Image.open(path) as im:
            assert (row.width, row.height) == im.size
    # post-ReLU average pool: non-negative; and equal to an independent computation of the same network
    assert (feats.embeddings >= 0).all()
    for i in (0, 3):
        np.testing.assert_allclose(feats.embeddings[i], reference_embedding(photo_dir / feats.images[i]),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
    # different images give different embeddings
    assert np.abs(feats.embeddings[0] - feats.embeddings[1]).max() > 1e-3


def test_deterministic_across_workers(photo_dir, tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    (photo_dir / "astronaut.png").unlink()
    (photo_dir / "coffee.png").unlink()
    run_features([photo_dir], a, weights="none", device="cpu", batch_size=1, workers=0)
    run_features([photo_dir], b, weights="none", device="cpu", batch_size=1, workers=2)
    fa, fb = read_features(a), read_features(b)
    assert fa.images == fb.images
    np.testing.assert_array_equal(fa.embeddings, fb.embeddings)


def test_incremental(photo_dir, tmp_path, natural_photos):
    out = tmp_path / "f.parquet"
    first = run_features([photo_dir], out, weights="none", device="cpu")
    assert (first.n_embedded, first.n_reused) == (4, 0)
    before = read_features(out)
    # add one, change one, remove one
    Image.fromarray(natural_photos["astronaut"][::-1]).save(photo_dir / "sub" / "flipped.png")
    Image.fromarray(natural_photos["coffee"][:, ::-1]).save(photo_dir / "coffee.png")
    (photo_dir / "rocket.jpg").unlink()
    second = run_features([photo_dir], out, weights="none", device="cpu")
    assert (second.n_embedded, second.n_reused) == (2, 2)
    after = read_features(out)
    assert after.images == ["astronaut.png", "coffee.png", "sub/chelsea.jpg", "sub/flipped.png"]
    old = dict(zip(before.images, before.embeddings))
    new = dict(zip(after.images, after.embeddings))
    np.testing.assert_array_equal(new["astronaut.png"], old["astronaut.png"])
    np.testing.assert_array_equal(new["sub/chelsea.jpg"], old["sub/chelsea.jpg"])
    assert np.abs(new["coffee.png"] - old["coffee.png"]).max() > 1e-4
    np.testing.assert_allclose(
        new["coffee.png"], reference_embedding(photo_dir / "coffee.png"), rtol=1e-4, atol=1e-5
    )
    third = run_features([photo_dir], out, weights="none", device="cpu")
    assert (third.n_embedded, third.n_reused) == (0, 4)


def test_inputs_globs_and_csv(photo_dir, tmp_path):
    root, names, _ = collect_images([str(photo_dir / "*.png"), str(photo_dir / "sub" / "chelsea.jpg")])
    assert root == photo_dir.resolve()
    assert names == ["astronaut.png", "coffee.png", "sub/chelsea.jpg"]
    csv = photo_dir / "list.csv"
    csv.write_text("image\nrocket.jpg\nsub/chelsea.jpg\n")
    root, names, _ = collect_images([csv])
    assert root == photo_dir.resolve()
    assert names == ["rocket.jpg", "sub/chelsea.jpg"]
    headerless = photo_dir / "plain.txt"
    headerless.write_text("rocket.jpg\nsub/chelsea.jpg\n")
    assert collect_images([headerless])[1] == ["rocket.jpg", "sub/chelsea.jpg"]  # first line kept


def test_csv_list_with_the_wrong_columns_names_csv_row_and_columns(photo_dir, tmp_path):
    scores = photo_dir / "scores.csv"
    scores.write_text("id,mos\n1,3.5\n2,4.0\n")
    res = invoke(str(scores), "--out", str(tmp_path / "f.parquet"), "--weights", "none")
    _assert_bad(res, "row 2", scores)
    line = res.output.strip().splitlines()[-1]
    assert "'1'" in line and "column 'id'" in line
    assert all(c in line for c in ("image", "path", "ref_img", "file"))


def _assert_bad(res, needle: str, file: Path | str):
    assert res.exit_code == 2, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("reshape: error: "), res.output
    assert str(file) in line, line
    assert needle in line, line
    assert "Traceback" not in res.output


def test_bad_image_fails_or_is_skipped(photo_dir, tmp_path):
    bad = photo_dir / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    small = photo_dir / "tiny.png"
    Image.new("RGB", (200, 300), "red").save(small)
    out = tmp_path / "f.parquet"
    _assert_bad(
        invoke(str(photo_dir), "--out", str(out), "--weights", "none", "--device", "cpu"), "", bad.resolve()
    )
    assert not out.exists()
    res = invoke(str(photo_dir), "--out", str(out), "--weights", "none", "--device", "cpu", "--skip-bad")
    assert res.exit_code == 0, res.output
    feats = read_features(out)
    assert "broken.png" not in feats.images
    assert "tiny.png" not in feats.images
    assert len(feats) == 4
    skipped = {s["image"]: s["error"] for s in feats.metadata["skipped"]}
    assert set(skipped) == {"broken.png", "tiny.png"}
    assert "smaller than the minimum 224x224" in skipped["tiny.png"]
    # too small alone: one-line error naming the file
    only_small = tmp_path / "small"
    only_small.mkdir()
    shutil.copy(small, only_small / "tiny.png")
    _assert_bad(invoke(str(only_small), "--out", str(tmp_path / "g.parquet"), "--weights", "none"),
                "smaller than the minimum 224x224", (only_small / "tiny.png").resolve())  # fmt: skip


def test_bad_weights_and_encoders(photo_dir, tmp_path, monkeypatch):
    out = str(tmp_path / "f.parquet")
    junk = tmp_path / "weights.pth"
    junk.write_bytes(b"not a checkpoint")
    _assert_bad(
        invoke(str(photo_dir), "--out", out, "--weights", str(junk)),
        "not a loadable PyTorch state_dict",
        junk,
    )
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv9.weight": torch.zeros(3)}, wrong)
    _assert_bad(invoke(str(photo_dir), "--out", out, "--weights", str(wrong)), "not ResNet-50 weights", wrong)
    _assert_bad(invoke(str(photo_dir), "--out", out, "--encoder", "vgg"), "unknown encoder", "vgg")
    pytest.importorskip("torch")
    try:
        import open_clip  # noqa: F401
    except ImportError:
        _assert_bad(invoke(str(photo_dir), "--out", out, "--encoder", "clip:ViT-B-16"),
                    "pip install 'reshape-iqa[clip]'", "clip:ViT-B-16")  # fmt: skip
    _assert_bad(
        invoke(str(tmp_path / "nowhere"), "--out", out), "no such file or folder", tmp_path / "nowhere"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_bad(invoke(str(empty), "--out", out), "holds no image files", empty)
    csv = tmp_path / "escape.csv"
    csv.write_text("image\n../photos/astronaut.png\n")
    _assert_bad(invoke(str(csv), "--out", out), "escapes", csv)


def test_local_weights_file_and_offline_default(photo_dir, tmp_path, monkeypatch):
    # a real state_dict saved to disk is loaded with weights_only=True and used
    torch.manual_seed(123)
    model = torchvision.models.resnet50(weights=None)
    path = tmp_path / "r50.pth"
    torch.save(model.state_dict(), path)
    out = tmp_path / "f.parquet"
    run_features([photo_dir / "astronaut.png"], out, weights=str(path), device="cpu")
    feats = read_features(out)
    model.fc = torch.nn.Identity()
    model.eval()
    img = np.asarray(Image.open(photo_dir / "astronaut.png").convert("RGB"), dtype=np.float32) / 255.0
    crop = (img[144:368, 144:368] - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    with torch.inference_mode():
        expected = model(torch.from_numpy(crop.astype(np.float32).transpose(2, 0, 1).copy())[None]).numpy()[0]
    np.testing.assert_allclose(feats.embeddings[0], expected, rtol=1e-4, atol=1e-5)
    assert str(path.resolve()) in feats.metadata["weights"]

    # default weights offline: an empty torch cache and a download that fails
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def no_network(*_a, **_k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    res = invoke(str(photo_dir), "--out", str(tmp_path / "g.parquet"))
    assert res.exit_code == 2, res.output  # bad input like any other: exit 2, one line, no traceback
    assert without_steps(res.output).count("\n") == 1 and "Traceback" not in res.output
    line = res.output.strip().splitlines()[-1]
    assert "--weights PATH" in line
    assert "resnet50-0676ba61.pth" in line


def test_random_weights_warn_loudly(photo_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="reshape"):
        run_features([photo_dir / "coffee.png"], tmp_path / "f.parquet", weights="none", device="cpu")
    assert sum("RANDOM" in r.getMessage() for r in caplog.records) == 1


def test_clip_encoder_random_init(photo_dir, tmp_path):
    """clip:<model> through open_clip (the `clip` extra): embeddings equal open_clip's own on its transforms."""
    open_clip = pytest.importorskip("open_clip")
    out = tmp_path / "clip.parquet"
    clip_fp32 = ("--encoder", "clip:ViT-B-32", "--weights", "none", "--precision", "fp32")
    res = invoke(str(photo_dir), "--out", str(out), *clip_fp32)
    assert res.exit_code == 0, res.output
    feats = read_features(out)
    assert feats.metadata["encoder"] == "clip:ViT-B-32"
    assert feats.metadata["memory_format"] == "channels-last"  # its patch embedding is a convolution
    assert feats.embeddings.shape == (4, 512)
    from reshape.features import RANDOM_INIT_SEED

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    model.eval()
    for i, name in enumerate(feats.images):
        with torch.inference_mode():
            x = preprocess(Image.open(photo_dir / name).convert("RGB"))[None]
            want = model.encode_image(x).numpy()[0]
        np.testing.assert_allclose(feats.embeddings[i], want, rtol=1e-3, atol=1e-4)
    again = tmp_path / "again.parquet"
    assert invoke(str(photo_dir), "--out", str(again), *clip_fp32).exit_code == 0
    np.testing.assert_array_equal(read_features(again).embeddings, feats.embeddings)
