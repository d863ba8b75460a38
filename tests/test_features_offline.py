"""The offline ``colour-texture`` encoder: the demo's fallback when no pretrained weights are cached."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reshape import demo
from reshape.artifacts import read_features
from reshape.errors import BadInputError
from reshape.features import STATS_ENCODER, FeaturesConfig, build_encoder, run

#: scikit-image ships the motorcycle as a stereo pair (one scene, two viewpoints)
SCENE = {"motorcycle_left": "motorcycle", "motorcycle_right": "motorcycle"}


def _crops(folder: Path) -> dict[str, str]:
    """Three views of every demo photo as the demo's pool makes them (whole, a 0.55 crop, a flipped 0.8
    crop), written as PNG; returns file name -> scene."""
    from skimage import data

    # data.cat() and data.chelsea() are the same picture (Chelsea the cat)
    assert np.array_equal(data.cat(), data.chelsea())
    rng = np.random.default_rng(0)
    scenes = {}
    for name in demo.POOL_PHOTOS + demo.TRAIN_PHOTOS:
        photo = demo._photo(name)
        boxes = [(0.5, 0.5, 1.0), (rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), 0.55), (0.5, 0.5, 0.8)]
        for i, box in enumerate(boxes):
            view = demo._fit(photo, demo.SIZE, box=box)
            if i == 2:
                view = np.ascontiguousarray(view[:, ::-1])
            demo._save(folder / f"{name}_{i}.png", view)
            scenes[f"{name}_{i}.png"] = SCENE.get(name, "chelsea" if name == "cat" else name)
    return scenes


def test_nearest_neighbours_are_crops_of_the_same_photo(tmp_path: Path) -> None:
    scenes = _crops(tmp_path / "photos")
    out = tmp_path / "features.parquet"
    run(FeaturesConfig(images=[tmp_path / "photos"], out=out, encoder=STATS_ENCODER, device="cpu"))
    feats = read_features(out)
    assert feats.metadata["encoder"] == STATS_ENCODER
    assert "no learned weights" in feats.metadata["weights"]
    unit = feats.embeddings.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = similarity.argmax(axis=1)
    wrong = [
        (a, feats.images[j]) for a, j in zip(feats.images, nearest) if scenes[a] != scenes[feats.images[j]]
    ]
    assert not wrong, wrong
    # and the features discriminate: other photos are clearly farther than the same photo's crops
    same = np.array([[scenes[a] == scenes[b] for b in feats.images] for a in feats.images])
    np.fill_diagonal(same, False)
    other = ~same
    np.fill_diagonal(other, False)
    assert np.median(similarity[same]) > np.median(similarity[other])


def test_colour_texture_has_no_weights_to_load() -> None:
    enc = build_encoder(STATS_ENCODER, "none")
    assert enc.name == STATS_ENCODER and enc.dim == len(enc.prepare(np.zeros((40, 30, 3), np.float32)))
    with pytest.raises(BadInputError, match="has no weights"):
        build_encoder(STATS_ENCODER, "/some/file.pth")
