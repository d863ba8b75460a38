"""Project rules that are cheap to check mechanically: lint, no pickle, no unsafe torch.load, set-up commands."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("reshape", "distortions", "cli", "benchmarks", "tests", "examples", "docs")


def _python_files() -> list[Path]:
    return [p for d in SOURCE_DIRS for p in (REPO / d).rglob("*.py") if "__pycache__" not in p.parts]


def _ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.skip("ruff is not installed (it is in the [test] extra)")
    return [exe]


def test_ruff_lint_clean():
    res = subprocess.run([*_ruff(), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:]


def test_ruff_format_clean():
    res = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout[-3000:]


def test_no_pickle_and_safe_torch_load():
    offenders = []
    this = Path(__file__).resolve()
    for path in _python_files():
        if path.resolve() == this:
            continue
        text = path.read_text("utf-8")
        if re.search(r"^\s*(import|from) (pickle|dill|joblib|cloudpickle)\b", text, re.M):
            offenders.append(f"{path}: imports a pickle module")
        if re.search(r"allow_pickle\s*=\s*True", text):
            offenders.append(f"{path}: allow_pickle=True")
        for m in re.finditer(r"torch\.load\(([^()]*(?:\([^()]*\)[^()]*)*)\)", text):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{path}: torch.load without weights_only=True")
    assert not offenders, "\n".join(offenders)


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    readme = (REPO / "README.md").read_text("utf-8")
    commands = {}
    for marker in ("demo-command", "test-command"):
        m = re.search(rf"<!-- {marker} -->\s*```bash\n(.+?)\n```", readme, re.S)
        assert m, f"README lacks the {marker} block"
        lines = [ln for ln in m.group(1).splitlines() if ln.strip()]
        assert len(lines) == 1, f"{marker} must be one command line"
        commands[marker] = lines[0]
    assert commands["demo-command"].rstrip().endswith("reshape demo")
    assert "pytest" in commands["test-command"]
    ci = (REPO / ".ci" / "run").read_text("utf-8")
    assert "test-command" in ci  # .ci/run extracts and runs exactly that README line


def test_no_large_or_binary_model_files_tracked():
    res = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip("not a git checkout")
    bad = []
    for name in res.stdout.splitlines():
        p = REPO / name
        if re.search(r"\.(pkl|pickle|pth|pt|ckpt|safetensors|npz|npy|mat|onnx)$", name):
            bad.append(name)
        elif p.is_file() and p.stat().st_size > 2_000_000:
            bad.append(f"{name} ({p.stat().st_size} bytes)")
    assert not bad, bad


def _functions(path: Path) -> list[tuple[str, int]]:
    import ast

    tree = ast.parse(path.read_text("utf-8"))
    return [
        (f"{path.relative_to(REPO)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_function_over_80_lines_in_the_library():
    """Issue #15: a `run` reads as a list of named steps; nothing in reshape/ or distortions/ runs long."""
    long = [
        f"{name} ({n} lines)"
        for d in ("reshape", "distortions")
        for path in sorted((REPO / d).rglob("*.py"))
        for name, n in _functions(path)
        if n > 80
    ]
    assert not long, "\n".join(long)


def test_library_does_not_import_the_command_line():
    """The CLI builds configs and calls the library; never the other way round."""
    offenders = []
    for path in sorted((REPO / "reshape").rglob("*.py")):
        text = path.read_text("utf-8")
        if re.search(r"^\s*(import click|from click|from reshape\.cli|import reshape\.cli)", text, re.M):
            offenders.append(str(path.relative_to(REPO)))
        if re.search(r"""import_module\(\s*f?["']reshape\.cli""", text):
            offenders.append(f"{path.relative_to(REPO)} (import_module)")
    assert not offenders, offenders


def test_no_bare_except_hides_faults_in_the_cli():
    """The one error contract lives in cli/common.py: commands do not swallow exceptions themselves."""
    offenders = [
        str(p.relative_to(REPO))
        for p in sorted((REPO / "cli").glob("*_cmd.py"))
        if re.search(r"except\s+(Exception|BaseException)\s*(as\s+\w+)?\s*:", p.read_text("utf-8"))
    ]
    assert not offenders, offenders
