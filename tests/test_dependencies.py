"""Declared dependencies (issue #19): deptry with the project's own configuration finds no import that a fresh
`pip install reshape-iqa` would lack, and it does fail when a base dependency is taken out of pyproject.toml."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
BASE = tomllib.loads(PYPROJECT.read_text("utf-8"))["project"]["dependencies"]


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0)


def _deptry(config: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("deptry")
    return subprocess.run(
        [sys.executable, "-m", "deptry", ".", "--config", str(config), "--no-ansi"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_deptry_passes_with_the_project_configuration() -> None:
    res = _deptry(PYPROJECT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No dependency issues found" in res.stdout + res.stderr


@pytest.mark.parametrize("requirement", BASE, ids=[_name(r) for r in BASE])
def test_removing_a_base_dependency_fails(requirement: str, tmp_path: Path) -> None:
    text = PYPROJECT.read_text("utf-8")
    line = f'    "{requirement}",\n'
    assert text.count(line) == 1, requirement
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    (tmp_path / "pyproject.toml").write_text(text.replace(line, ""), "utf-8")
    res = _deptry(tmp_path / "pyproject.toml")
    out = res.stdout + res.stderr
    assert res.returncode != 0, f"deptry still passes without {requirement}:\n{out}"
    assert re.search(r"DEP00[13] '[\w.]+' imported but", out), out
