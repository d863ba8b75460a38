"""`reshape features --encoder vit_b_16`: torchvision ViT-B/16 (the paper's Table 10 ImageNet DDCUp encoder)
on real photos, with random init (no download), a local weights file, and bad weights."""

from __future__ import annotations

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
from reshape.features import VIT_PREPROCESSING, build_encoder
from reshape.select import normalize_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def photo_dir(tmp_path, natural_photos) -> Path:
    """Two real photos of different sizes (451x300 and 600x400), one PNG, one JPEG."""
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(natural_photos["chelsea"]).save(root / "chelsea.png")
    Image.fromarray(natural_photos["coffee"]).save(root / "coffee.jpg", quality=92)
    return root


def _reference(model: torch.nn.Module, path: Path) -> np.ndarray:
    """Independent computation: PIL decode, tensor resize of the shorter side to 256 (bilinear, antialias),
    centre crop 224, ImageNet normalisation, the class token of torchvision's ViT-B/16 without heads."""
    from torchvision.transforms import functional as F

    img = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)
    x = F.resize(img.permute(2, 0, 1), [256], antialias=True)
    x = F.normalize(F.center_crop(x, [224, 224]), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    with torch.inference_mode():
        return model.eval()(x[None]).numpy()[0]


def _seeded_vit(seed: int) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.vit_b_16(weights=None)
    model.heads = torch.nn.Identity()
    return model


def test_vit_embeds_real_photos_to_768_d_class_tokens(photo_dir: Path) -> None:
    """Weights none: 768-d finite embeddings, unit vectors once DDCUp normalises them, different for two
    photos, identical for the same input, the same alone as in a batch."""
    from reshape.imageio import load_image

    enc = build_encoder("vit_b_16", "none", "cpu")
    assert (enc.name, enc.dim, enc.preprocessing) == ("vit_b_16", 768, VIT_PREPROCESSING)
    batch = np.stack([enc.prepare(load_image(p)) for p in sorted(photo_dir.iterdir())])
    assert batch.shape == (2, 3, 224, 224)
    emb = enc.embed(batch)
    assert emb.shape == (2, 768) and emb.dtype == np.float32 and np.isfinite(emb).all()
    unit = normalize_rows(emb)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    assert float(unit[0] @ unit[1]) < 0.9999  # the two photos are told apart
    again = enc.embed(batch[1:])  # the same photo alone: the same embedding
    np.testing.assert_allclose(again[0], emb[1], rtol=1e-4, atol=1e-4)
    assert build_encoder("vit_b_16", "none", "cpu") is enc  # one model per process, as the others


def _invoke(*args: str):
    return CliRunner().invoke(cli, ["features", *args, "--workers", "0", "--device", "cpu"])


def test_cli_vit_writes_a_parquet_that_names_it(photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "vit.parquet"
    res = _invoke(str(photo_dir), "--out", str(out), "--encoder", "vit_b_16", "--weights", "none",
                  "--precision", "fp32")  # fmt: skip
    assert res.exit_code == 0, res.output
    feats = read_features(out)
    assert feats.metadata["encoder"] == "vit_b_16"
    assert feats.metadata["preprocessing"] == VIT_PREPROCESSING
    assert feats.metadata["weights"].startswith("none (random init")
    assert feats.metadata["precision"] == "fp32"
    assert feats.metadata["memory_format"] == "channels-last"  # its patch embedding is a convolution
    assert feats.images == ["chelsea.png", "coffee.jpg"] and feats.embeddings.shape == (2, 768)
    assert np.isfinite(feats.embeddings).all()


def test_vit_loads_a_local_state_dict_and_refuses_other_weights(photo_dir: Path, tmp_path: Path) -> None:
    """A ViT-B/16 state dict on disk (with an ImageNet head, as torchvision's file has) is loaded with
    weights_only=True and used: the embedding equals an independent torchvision computation with those
    weights (resize 256, centre crop 224, ImageNet mean/std, class token); a missing file and another architecture's file are one line, exit 2."""
    model = _seeded_vit(7).half().float()  # stored in half precision: half the bytes to write and read
    state = {k: v.half() for k, v in model.state_dict().items()} | {
        "heads.head.weight": torch.zeros(1000, 768)
    }
    path = tmp_path / "vit.pth"
    torch.save(state, path)
    enc = build_encoder("vit_b_16", str(path), "cpu")
    assert str(path.resolve()) in enc.weights
    from reshape.imageio import load_image

    photo = photo_dir / "chelsea.png"
    got = enc.embed(enc.prepare(load_image(photo))[None])[0]
    np.testing.assert_allclose(got, _reference(model, photo), rtol=1e-3, atol=2e-3)

    out = str(tmp_path / "f.parquet")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv9.weight": torch.zeros(3)}, wrong)
    for weights, message in (
        (tmp_path / "absent.pth", "weights file does not exist"),
        (wrong, "not ViT-B/16 weights (lacks key"),
    ):
        res = _invoke(str(photo_dir), "--out", out, "--encoder", "vit_b_16", "--weights", str(weights))
        assert res.exit_code == 2, res.output
        lines = without_steps(res.output).strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and str(weights) in lines[0], res.output
        assert "Traceback" not in res.output
    assert not Path(out).exists()
