"""Output safety of `reshape features` (issue #13): refusals come before any image is hashed or embedded."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from reshape.artifacts import read_features
from reshape.cli.main import cli
from reshape.outputs import OutputLock


@pytest.fixture
def photos(tmp_path, natural_photos) -> Path:
    """One real photo and one broken PNG: a run that decoded anything would fail on the broken one."""
    root = tmp_path / "photos"
    root.mkdir()
    Image.fromarray(natural_photos["coffee"]).save(root / "coffee.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return root


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _features(*args: object):
    return CliRunner().invoke(cli, ["features", *map(str, args), "--weights", "none", "--device", "cpu"])


def _refused(res, *needles: str) -> None:
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "Traceback" not in res.output, res.output
    assert "broken.png" not in res.output  # refused before any image was decoded
    for needle in needles:
        assert needle in res.output, res.output


def test_csv_at_out_is_refused_even_with_overwrite(photos, tmp_path):
    table = tmp_path / "x.csv"
    pd.DataFrame({"image": ["a.png"], "mos": [3.5]}).to_csv(table, index=False)
    before = _digest(table)
    for extra in ([], ["--overwrite"]):
        _refused(_features(photos, "--out", table, *extra), str(table), "csv file, not parquet")
        assert _digest(table) == before


def test_input_image_as_out_is_refused(photos):
    image = photos / "coffee.png"
    before = _digest(image)
    _refused(_features(photos, "--out", image, "--overwrite"), str(image))
    assert _digest(image) == before


def test_foreign_parquet_refused_then_overwrite_then_own_rerun(photos, tmp_path):
    out = tmp_path / "f.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), out)  # someone else's Parquet: no reshape schema tag
    before = _digest(out)
    _refused(_features(photos, "--out", out, "--skip-bad"), str(out), "not written by reshape", "--overwrite")
    assert _digest(out) == before
    res = _features(photos, "--out", out, "--skip-bad", "--overwrite")
    assert res.exit_code == 0, res.output
    assert read_features(out).images == ["coffee.png"]
    again = _features(photos, "--out", out, "--skip-bad")  # reshape's own file now: no --overwrite needed
    assert again.exit_code == 0, again.output
    assert "0 embedded, 1 reused" in again.stdout


def test_locked_out_is_refused(photos, tmp_path):
    out = tmp_path / "f.parquet"
    with OutputLock(out):
        _refused(_features(photos, "--out", out), "another reshape run holds", "--wait")
    assert not out.exists()


def _run_with_read_only_folder(folder: Path, args: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI with ``folder`` read-only: chmod for a normal user; root ignores modes, so then a
    read-only tmpfs is mounted over it in a private user+mount namespace (util-linux `unshare`)."""
    cmd = [sys.executable, "-c", "from reshape.cli.main import cli; cli()", *args]
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        finally:
            folder.chmod(0o755)
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: no way to make a folder read-only")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user namespaces are not available here")
    script = 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"'
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(folder), *cmd],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_read_only_output_folder_fails_before_embedding(photos, tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    out = folder / "f.parquet"
    proc = _run_with_read_only_folder(
        folder, ["features", str(photos), "--out", str(out), "--weights", "none", "--device", "cpu"]
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reshape: error: "), proc.stderr
    assert str(out) in lines[0] and "cannot write" in lines[0]
    assert "broken.png" not in proc.stderr and "RANDOM" not in proc.stderr  # no image, no encoder yet
    assert proc.stdout == ""
