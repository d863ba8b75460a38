"""`reshape features --backend ray` (issue #9): actors, per-shard Parquet merged into the local artifact."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shard_toys
from click.testing import CliRunner
from PIL import Image
from ray_helpers import local_ray, needs_ray

from reshape import storage
from reshape.artifacts import Features, read_features, write_features
from reshape.cli.main import cli
from reshape.features import _on_ray as features_mod
from reshape.features import run_features


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    """Backing folder of the ``reshapetest://`` object store (see shard_toys.register_test_filesystem)."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def ray_cluster(store_root):
    yield from local_ray("shard_toys.register_test_filesystem", {"RESHAPE_TEST_FS_ROOT": str(store_root)})


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, natural_photos) -> Path:
    """Five real photos (PNG and JPEG, one in a sub-folder) and their 256x256 crops, all >= 224 a side."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    Image.fromarray(natural_photos["astronaut"]).save(root / "astronaut.png")
    Image.fromarray(natural_photos["chelsea"]).save(root / "sub" / "chelsea.jpg", quality=92)
    Image.fromarray(natural_photos["coffee"]).save(root / "coffee.png")
    Image.fromarray(natural_photos["rocket"]).save(root / "rocket.jpg", quality=90)
    Image.fromarray(natural_photos["astronaut"][100:356, 100:356]).save(root / "face.png")
    return root


@pytest.fixture(scope="module")
def local_features(tmp_path_factory, photo_dir) -> Features:
    out = tmp_path_factory.mktemp("local") / "refs.parquet"
    run_features([photo_dir], out, weights="none", device="cpu", precision="fp32", batch_size=2)
    return read_features(out)


def assert_same_features(a: Features, b: Features) -> None:
    pd.testing.assert_frame_equal(a.frame.reset_index(drop=True), b.frame.reset_index(drop=True))
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    for key in ("encoder", "weights", "preprocessing", "dim", "image_root", "skipped", "precision",
                "memory_format", "batch_size"):  # fmt: skip
        assert a.metadata[key] == b.metadata[key], key


@needs_ray
@pytest.mark.ray
def test_ray_actors_give_the_local_artifact(ray_cluster, photo_dir, local_features, tmp_path, monkeypatch):
    monkeypatch.setattr(features_mod, "RAY_SHARD_IMAGES", 2)  # 3 shards of one batch of 2 (the last: 1)
    out = tmp_path / "refs.parquet"
    result = CliRunner().invoke(
        cli,
        ["features", str(photo_dir), "--out", str(out), "--weights", "none", "--device", "cpu"]
        + ["--precision", "fp32", "--batch-size", "2", "--backend", "ray", "--ray-address", ray_cluster]
        + ["--workers", "2"],
    )
    assert result.exit_code == 0, result.output
    on_ray = read_features(out)
    assert on_ray.images == sorted(on_ray.images)
    assert len(on_ray) == 5
    assert_same_features(on_ray, local_features)
    assert not out.with_name(out.name + ".shards").exists()  # per-shard files are merged, then removed


@needs_ray
@pytest.mark.ray
def test_rerun_reuses_shard_files_left_by_a_crashed_run(
    ray_cluster, photo_dir, local_features, tmp_path, monkeypatch
):
    """A shard file already on disk (written atomically by a run that then died) is not embedded again."""
    monkeypatch.setattr(features_mod, "RAY_SHARD_IMAGES", 2)
    out = tmp_path / "refs.parquet"
    names = local_features.images
    first = [(n, str(photo_dir / n), local_features.frame["sha256"][i]) for i, n in enumerate(names[:2])]
    spec = features_mod._RayShardSpec(
        str(out.with_name(out.name + ".shards")), 2, "resnet50", "none", str(photo_dir.resolve()),
        precision="fp32", memory_format="channels-last",
    )  # fmt: skip
    marker = np.full((2, local_features.embeddings.shape[1]), 7.0, dtype=np.float32)
    leftover = local_features.frame.iloc[:2].reset_index(drop=True)
    meta = {k: local_features.metadata[k] for k in ("encoder", "weights", "preprocessing", "image_root")}
    write_features(features_mod._shard_file(spec, first), Features(leftover, marker, {**meta, "skipped": []}))

    run_features([photo_dir], out, weights="none", device="cpu", precision="fp32", batch_size=2,
                 backend="ray", workers=2)  # fmt: skip
    merged = read_features(out)
    np.testing.assert_array_equal(merged.embeddings[:2], marker)  # taken from the leftover shard
    np.testing.assert_array_equal(merged.embeddings[2:], local_features.embeddings[2:])


@needs_ray
@pytest.mark.ray
def test_bad_image_on_ray_fails_or_is_skipped(ray_cluster, photo_dir, tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.open(photo_dir / "coffee.png").save(images / "coffee.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "f.parquet"
    args = [
        "features",
        str(images),
        "--out",
        str(out),
        "--weights",
        "none",
        "--device",
        "cpu",
        "--backend",
        "ray",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("reshape: error:")]
    assert len(errors) == 1
    assert "broken.png" in errors[0]
    assert "--skip-bad" in errors[0]
    result = CliRunner().invoke(cli, [*args, "--skip-bad"])
    assert result.exit_code == 0, result.output
    kept = read_features(out)
    assert kept.images == ["coffee.png"]
    assert [s["image"] for s in kept.metadata["skipped"]] == ["broken.png"]


def test_backend_ray_without_ray_installed_is_exit_2(monkeypatch, photo_dir, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "f.parquet"
    result = CliRunner().invoke(
        cli, ["features", str(photo_dir), "--out", str(out), "--weights", "none", "--backend", "ray"]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "reshape: error: --backend ray needs Ray, which is not installed: pip install 'reshape-iqa[ray]'"
    )
    assert not out.exists()


@pytest.mark.slow  # two ResNet-50 runs; reshape.storage's remote path itself is covered by test_storage
def test_out_on_an_object_store_local_backend(photo_dir, local_features):
    """memory:// (fsspec): the artifact is uploaded, and a rerun fetches it to reuse every row."""
    out = f"memory://reshape-features-{id(photo_dir)}/refs.parquet"
    first = run_features([photo_dir], out, weights="none", device="cpu", precision="fp32", batch_size=2)
    assert first.n_embedded == 5
    with storage.local_copy(out) as local:
        assert_same_features(read_features(local), local_features)
    again = run_features([photo_dir], out, weights="none", device="cpu", precision="fp32", batch_size=2)
    assert (again.n_reused, again.n_embedded) == (5, 0)
    assert storage.listdir(out.rsplit("/", 1)[0]) == ["refs.parquet"]


@needs_ray
@pytest.mark.ray
@pytest.mark.slow  # ~15 s on 2 busy cores
def test_out_on_an_object_store_with_ray(ray_cluster, store_root, photo_dir, local_features, monkeypatch):
    """Shard files and the merged artifact go to the store; the actors write there themselves."""
    monkeypatch.setenv("RESHAPE_TEST_FS_ROOT", str(store_root))
    shard_toys.register_test_filesystem()
    monkeypatch.setattr(features_mod, "RAY_SHARD_IMAGES", 2)
    out = f"{shard_toys.TEST_FS_PROTOCOL}://bucket/pool/refs.parquet"
    result = CliRunner().invoke(
        cli,
        [
            "features",
            str(photo_dir),
            "--out",
            out,
            "--weights",
            "none",
            "--device",
            "cpu",
            "--batch-size",
            "2",
        ]
        + ["--precision", "fp32", "--backend", "ray", "--workers", "2"],
    )
    assert result.exit_code == 0, result.output
    assert_same_features(read_features(store_root / "bucket" / "pool" / "refs.parquet"), local_features)
    assert sorted(p.name for p in (store_root / "bucket" / "pool").iterdir()) == ["refs.parquet"]
