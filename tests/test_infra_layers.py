"""The infra modules import only downward: fsbase <- fileio <- storage <- outputs, fileio <- artifacts."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A module may import (at top level or inside a function) only modules of a lower rank.
RANK = {"errors": 0, "steps": 0, "fsbase": 1, "fileio": 2, "storage": 3, "artifacts": 3, "outputs": 4}


def _reshape_imports(module: str) -> set[str]:
    tree = ast.parse((REPO / "reshape" / f"{module}.py").read_text("utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "reshape":
            found |= {alias.name for alias in node.names if alias.name != "__version__"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reshape."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("reshape.")}
    return found


def test_infra_modules_import_only_downward():
    offenders = []
    for module, rank in RANK.items():
        for imported in _reshape_imports(module):
            if RANK.get(imported, 99) >= rank:
                offenders.append(f"reshape.{module} imports reshape.{imported}")
    assert not offenders, offenders
