"""Optional extras (issue #19): with the package of an extra hidden, the command that needs it prints one line
naming the extra to install and exits 2, before any work and without a traceback; the base install keeps
working (the selection map falls back to PCA and says how to get UMAP).

The package is hidden the way a missing one behaves: ``sys.modules[name] = None`` makes ``import name`` raise
ImportError and ``importlib.util.find_spec(name)`` return None, in a fresh interpreter running the real CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_select import make_case, write_feats

from reshape.pyiqa_options import LAUNCHER_TEXT, TEST_LAUNCHER_TEXT

RUN_CLI_WITHOUT = (
    "import sys; hidden = sys.argv[1].split(','); sys.modules.update(dict.fromkeys(hidden)); "
    "sys.argv = ['reshape', *sys.argv[2:]]; from reshape.cli.main import main; main()"
)


def reshape_without(hidden: str, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `reshape` CLI in a fresh interpreter that cannot import the packages in ``hidden``."""
    argv = [sys.executable, "-c", RUN_CLI_WITHOUT, hidden, *map(str, args)]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_one_line_naming(res: subprocess.CompletedProcess[str], extra: str, package: str) -> None:
    lines = [line for line in res.stderr.splitlines() if line.startswith("reshape: error:")]
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1, res.stderr
    assert package in lines[0] and f"pip install 'reshape-iqa[{extra}]'" in lines[0], lines[0]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Two small real photos (scikit-image's), large enough for the ResNet-50 crop."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(data, name)()).resize((256, 256)).save(folder / f"{name}.png")
    return folder


def test_clip_encoder_without_open_clip(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "f.parquet"
    res = reshape_without(
        "open_clip", "features", photos, "--out", out, "--encoder", "clip:ViT-B-16", cwd=tmp_path
    )
    assert_one_line_naming(res, "clip", "open_clip")
    assert not out.exists()


def test_ray_backend_without_ray(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    res = reshape_without(
        "ray", "distort", photos, "--out", out, "--types", "1", "--backend", "ray", cwd=tmp_path
    )
    assert_one_line_naming(res, "ray", "Ray")
    assert not out.exists()


def test_safetensors_weights_without_safetensors(photos: Path, tmp_path: Path) -> None:
    weights = tmp_path / "dncnn.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")  # an empty safetensors header
    out = tmp_path / "d"
    args = ("distort", photos, "--out", out, "--types", "15", "--levels", "1", "--dncnn-weights", weights)
    res = reshape_without("safetensors", *args, cwd=tmp_path)
    assert_one_line_naming(res, "safetensors", "safetensors")
    assert not out.exists()


def test_object_store_scheme_without_fsspec(photos: Path, tmp_path: Path) -> None:
    res = reshape_without(
        "fsspec", "distort", photos, "--out", "memory://bucket/d", "--types", "1", cwd=tmp_path
    )
    assert_one_line_naming(res, "storage", "fsspec")


def test_push_to_hub_without_huggingface_hub(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = ("publish", "--out", out, "--from-run", tmp_path, "--push-to-hub", "someone/x")
    res = reshape_without("huggingface_hub", *args, cwd=tmp_path)
    assert_one_line_naming(res, "hub", "huggingface_hub")
    assert not out.exists()


def test_selection_map_without_umap_is_pca_and_says_how_to_get_umap(tmp_path: Path) -> None:
    train, cand = make_case(3, 60)
    write_feats(tmp_path / "train.parquet", train, "kadid")
    write_feats(tmp_path / "pool.parquet", cand, "kadis")
    args = ["select", "--train", "train.parquet", "--candidates", "pool.parquet", "--plot", "map.png"]
    quiet = reshape_without("umap", *args, "--out", "a.parquet", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "umap" not in quiet.stderr.lower()  # the fallback is documented, not a warning on every run
    res = reshape_without("umap", "-v", *args, "--out", "b.parquet", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "selection map: PCA (UMAP needs umap-learn: pip install 'reshape-iqa[umap]')" in res.stderr
    with Image.open(tmp_path / "map.png") as im:
        assert np.asarray(im.convert("L")).std() > 0  # a drawn map, not an empty canvas


@pytest.mark.parametrize(("name", "text"), [("train.py", LAUNCHER_TEXT), ("test.py", TEST_LAUNCHER_TEXT)])
def test_published_pyiqa_launchers_without_pyiqa(name: str, text: str, tmp_path: Path) -> None:
    """The launchers publish writes run outside reshape: without pyiqa, one line naming the extra."""
    launcher = tmp_path / name
    launcher.write_text(text, "utf-8")
    hide = f"import sys, runpy; sys.modules['pyiqa'] = None; runpy.run_path({str(launcher)!r}, run_name='__main__')"
    res = subprocess.run(
        [sys.executable, "-c", hide], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"pyiqa/{name}: error: pyiqa is not installed: pip install 'reshape-iqa[train]'"
    ]
