"""Embeddings that cannot discriminate (issue #16): a randomly initialised ResNet-50 maps every photo to
nearly the same direction; select and prune say so in one warning line, once."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_prune import train_table, write_features
from test_select import make_case, write_feats

from reshape.cli.main import cli
from reshape.select import DEGENERATE_SPREAD, similarity_spread, warn_if_degenerate


def crops(photos: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Four 224 x 224 crops of each photo (corners), float32 RGB in [0, 1]."""
    out = []
    for image in photos.values():
        rgb = image.astype(np.float32) / 255
        h, w = rgb.shape[:2]
        out += [rgb[t : t + 224, left : left + 224] for t in (0, h - 224) for left in (0, w - 224)]
    return out


@pytest.fixture(scope="module")
def photo_features(natural_photos) -> tuple[np.ndarray, np.ndarray]:
    """(random-init ResNet-50 features, colour-histogram features) of the same 16 photo crops."""
    from reshape.features import build_encoder

    images = crops(natural_photos)
    encoder = build_encoder("resnet50", "none", "cpu")
    resnet = encoder.embed(np.stack([encoder.prepare(c) for c in images]))
    histograms = np.stack(
        [np.concatenate([np.histogram(c[..., k], bins=8, range=(0, 1))[0] for k in range(3)]) for c in images]
    ).astype(np.float32)
    return resnet, histograms


def test_spread_separates_random_weights_from_discriminative_features(photo_features) -> None:
    resnet, histograms = photo_features
    assert resnet.shape == (16, 2048)
    random_spread = similarity_spread(resnet)
    assert random_spread < DEGENERATE_SPREAD / 2
    assert similarity_spread(histograms) > 10 * DEGENERATE_SPREAD
    train, cand = make_case(0, 300)  # clustered post-ReLU-like vectors, as real CNN features are
    assert similarity_spread(np.concatenate([train, cand])) > DEGENERATE_SPREAD
    # deterministic: the same sample and the same value every time; scale-free (cosine)
    assert similarity_spread(resnet) == random_spread
    assert similarity_spread(resnet * 3) == pytest.approx(random_spread, rel=1e-6)
    assert similarity_spread(resnet[:3]) == np.inf  # too few rows to judge


def test_warning_is_one_line(photo_features, caplog) -> None:
    resnet, histograms = photo_features
    with caplog.at_level(logging.WARNING, logger="reshape.select"):
        assert warn_if_degenerate(resnet, "feats.parquet")
        assert not warn_if_degenerate(histograms, "hist.parquet")
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "\n" not in message
    assert message.startswith("feats.parquet: the features cannot discriminate")
    assert "random weights" in message


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "cannot discriminate" in line]


def test_select_and_prune_warn_once_on_random_weights(tmp_path: Path, photo_features) -> None:
    resnet, histograms = photo_features
    write_feats(tmp_path / "train.parquet", resnet[:6], "kadid")
    write_feats(tmp_path / "pool.parquet", resnet[6:], "kadis")
    result = CliRunner().invoke(cli, ["select", "--train", str(tmp_path / "train.parquet"), "--candidates",
                                      str(tmp_path / "pool.parquet"), "--out", str(tmp_path / "s.parquet")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(_warnings(result.stderr)) == 1
    assert not _warnings(result.stdout)

    images = [f"d/{i:02d}.png" for i in range(16)]
    train_table(images, np.linspace(2, 8, 16)).to_csv(tmp_path / "train.csv", index=False)
    for name, feats in (("random", resnet), ("hist", histograms)):
        write_features(tmp_path / f"{name}.parquet", images, feats)
        result = CliRunner().invoke(cli, ["prune", "--features", str(tmp_path / f"{name}.parquet"),
                                          "--labels", str(tmp_path / "train.csv"),
                                          "--out", str(tmp_path / f"p_{name}.csv")])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert len(_warnings(result.stderr)) == (1 if name == "random" else 0), name
