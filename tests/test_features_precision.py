"""`reshape features --precision` (issue #15): the autocast path runs on the CPU in bfloat16."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from reshape.artifacts import read_features
from reshape.cli.main import cli
from reshape.features import run_features

#: bfloat16 keeps 8 significant bits; through ResNet-50 the embedding's direction stays this close
MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def photos(tmp_path_factory, natural_photos):
    root = tmp_path_factory.mktemp("photos")
    for name, pixels in natural_photos.items():
        Image.fromarray(pixels).save(root / f"{name}.png")
    return root


def test_cpu_bf16_embeddings_match_fp32(photos, tmp_path):
    fp32, bf16 = tmp_path / "fp32.parquet", tmp_path / "bf16.parquet"
    a = run_features([photos], fp32, weights="none", device="cpu", precision="fp32", batch_size=2)
    b = run_features([photos], bf16, weights="none", device="cpu", precision="bf16", batch_size=2)
    assert (a.precision, b.precision) == ("fp32", "bf16")
    fa, fb = read_features(fp32), read_features(bf16)
    assert fa.images == fb.images and len(fa) == 4
    assert (fa.metadata["precision"], fb.metadata["precision"]) == ("fp32", "bf16")
    x, y = fa.embeddings.astype(np.float64), fb.embeddings.astype(np.float64)
    cosine = np.sum(x * y, axis=1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    assert (cosine > MIN_COSINE).all(), cosine
    assert np.abs(x - y).max() > 0  # bf16 really ran: not the fp32 numbers
    # different photos stay far apart compared with the bf16 error
    between = np.sum(x[0] * x[1]) / np.linalg.norm(x[0]) / np.linalg.norm(x[1])
    assert 1 - between > 5 * (1 - cosine.min())


def test_precision_change_re_embeds_and_auto_is_fp32_on_cpu(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("RESHAPE_NATIVE_BF16", "0")  # a CPU without native bfloat16
    out = tmp_path / "f.parquet"
    first = run_features([photos], out, weights="none", device="cpu", precision="auto")
    assert first.precision == "fp32" and first.n_embedded == 4
    again = run_features([photos], out, weights="none", device="cpu", precision="fp32")
    assert (again.n_reused, again.n_embedded) == (4, 0)
    switched = run_features([photos], out, weights="none", device="cpu", precision="bf16")
    assert (switched.n_reused, switched.n_embedded) == (0, 4)


def test_fp16_on_cpu_is_a_usage_error(photos, tmp_path):
    res = CliRunner().invoke(
        cli, ["features", str(photos), "--out", str(tmp_path / "f.parquet"), "--weights", "none",
              "--device", "cpu", "--precision", "fp16"]
    )  # fmt: skip
    assert res.exit_code == 2
    assert "--precision fp16 needs --device cuda" in res.output and "bf16" in res.output
