"""The documentation: the README front page, the mkdocs site, its runnable code blocks and the gallery."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
README_LIMIT = 12_000
#: The two set-up commands exactly as they were before the README was shortened (`.ci/run` runs the second).
DEMO_COMMAND = (
    "python3.11 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 "
    "&& pip install -e . && reshape demo"
)
TEST_COMMAND = (
    "python3.11 -m venv .venv && . .venv/bin/activate && pip install torch==2.14.1 torchvision==0.29.1 "
    "&& pip install -e '.[test]' && python -m pytest"
)
EXEC_BLOCK = re.compile(r"<!-- exec -->\s*\n```python\n(.*?)\n```", re.S)


def _mkdocs_build(config: Path, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )


def _nav_files(nav: list) -> list[str]:
    found = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        found += _nav_files(value) if isinstance(value, list) else [value]
    return found


def _doc_pages() -> set[str]:
    return {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}


# ------------------------------------------------------------------------------------------------ README
def test_readme_is_a_short_front_page():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, limit {README_LIMIT}"


def test_readme_setup_commands_unchanged_and_ci_extracts_both():
    text = README.read_text("utf-8")
    for marker, expected in (("demo-command", DEMO_COMMAND), ("test-command", TEST_COMMAND)):
        block = re.search(rf"<!-- {marker} -->\n```bash\n(.+?)\n```", text, re.S)
        assert block, f"README lacks the {marker} block"
        assert block.group(1) == expected
    ci = (REPO / ".ci" / "run").read_text("utf-8")
    for var, expected in (("demo_cmd", DEMO_COMMAND), ("test_cmd", TEST_COMMAND)):
        awk = re.search(rf"^{var}=\$\(awk '(.+?)' README\.md\)$", ci, re.M)
        assert awk, f".ci/run no longer extracts {var} with awk"
        extracted = subprocess.run(
            ["awk", awk.group(1), "README.md"], cwd=REPO, capture_output=True, text=True
        )
        assert extracted.stdout.strip() == expected
    # each runs as written (bash -c), the demo in a clone of its own whose dataset is then verified
    assert 'bash -euo pipefail -c "$demo_cmd"' in ci and 'bash -euo pipefail -c "$test_cmd"' in ci
    assert "git clone -q . " in ci and "reshape verify reshape-demo/dataset" in ci


def test_readme_extras_table_lists_every_extra():
    """The set-up section's table names each extra of pyproject.toml, and only those, with its packages."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["optional-dependencies"]
    table = re.search(r"^\| extra \| adds \| for \|\n((?:\|.*\n)+)", README.read_text("utf-8"), re.M)
    assert table, "README lacks the extras table"
    rows = re.findall(r"^\| (`[^|]+`) \| ([^|]+) \|", table.group(1), re.M)
    named = {name.strip("` ") for cell, _ in rows for name in cell.split(",")}
    assert named == set(extras)
    for cell, packages in rows:
        for name in (n.strip("` ") for n in cell.split(",")):
            if name in ("docs", "test"):
                continue
            for requirement in extras[name]:
                package = re.match(r"[\w\-]+", requirement).group(0)
                assert package.lower() in packages.lower(), (name, requirement)


def test_readme_local_links_and_picture_exist():
    text = README.read_text("utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert "docs/images/preview.jpg" in local
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, missing


# -------------------------------------------------------------------------------------------------- site
def test_every_docs_page_is_in_the_nav():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text("utf-8"))
    in_nav = _nav_files(config["nav"])
    assert len(in_nav) == len(set(in_nav)), "a page is listed twice"
    assert set(in_nav) == _doc_pages()


def test_mkdocs_strict_build_has_the_generated_pages(tmp_path):
    res = _mkdocs_build(REPO / "mkdocs.yml", tmp_path / "site", REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    site = tmp_path / "site"
    artifacts = (site / "artifacts" / "index.html").read_text("utf-8")
    for schema_file in sorted((REPO / "data_manifests").glob("*.schema.json")):
        schema = json.loads(schema_file.read_text("utf-8"))
        assert f"<code>{schema['name']}</code>" in artifacts
        for column in schema.get("columns", []):
            assert f"<code>{column['name']}</code>" in artifacts, (schema["name"], column["name"])
        metadata = schema.get("metadata", {})
        for key in [*metadata.get("required", []), *metadata.get("optional", [])]:
            assert f"<code>{key}</code>" in artifacts, (schema["name"], key)
        for key in metadata.get("descriptions", {}):
            assert key in metadata.get("required", []) + metadata.get("optional", []), (schema["name"], key)
            assert f"<td><code>{key}</code></td>" in artifacts, (schema["name"], key)
    import distortions

    gallery_page = (site / "distortions" / "index.html").read_text("utf-8")
    for name in distortions.names():
        assert f"<code>{name}</code>" in gallery_page
    assert "images/gallery.jpg" in gallery_page
    for page in site.rglob("*.html"):
        assert "<!-- generated:" not in page.read_text("utf-8"), page
    trainers = (site / "trainers" / "index.html").read_text("utf-8")
    assert "ReshapedIQA" in trainers  # the README's loaders, included by pymdownx.snippets
    assert "tau-quantile" in (site / "stages" / "run" / "index.html").read_text("utf-8")


def _copy_site_sources(dest: Path) -> None:
    shutil.copytree(DOCS, dest / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data_manifests", dest / "data_manifests", ignore=shutil.ignore_patterns("*.py"))
    (dest / "examples").mkdir()
    shutil.copy(REPO / "examples" / "pipeline.toml", dest / "examples")
    shutil.copy(README, dest / "README.md")
    shutil.copy(REPO / "mkdocs.yml", dest / "mkdocs.yml")


def test_strict_build_fails_on_a_broken_link(tmp_path):
    _copy_site_sources(tmp_path)
    page = tmp_path / "docs" / "troubleshooting.md"
    page.write_text(page.read_text("utf-8") + "\nSee [the missing page](no-such-page.md).\n", "utf-8")
    res = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site", tmp_path)
    assert res.returncode != 0
    assert "no-such-page.md" in res.stderr


def test_schema_sections_follow_the_schema_files(tmp_path):
    """The artifacts page is generated at build time: a new column appears without editing any page."""
    _copy_site_sources(tmp_path)
    path = tmp_path / "data_manifests" / "labels.schema.json"
    schema = json.loads(path.read_text("utf-8"))
    schema["columns"].append(
        {"name": "brand_new_column", "type": "string", "nullable": True, "description": "added by a test"}
    )
    path.write_text(json.dumps(schema), "utf-8")
    res = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    page = (tmp_path / "site" / "artifacts" / "index.html").read_text("utf-8")
    assert "<code>brand_new_column</code>" in page and "added by a test" in page


# ------------------------------------------------------------------------------------------- code blocks
#: Runs one page's marked blocks in order in one interpreter and one namespace, like notebook cells (a
#: later block may use what an earlier one made); a failure's traceback names the block as ``page#i``.
_PAGE_RUNNER = """
import json, sys
scope = {"__name__": "__main__"}
for where, code in json.load(open(sys.argv[1], encoding="utf-8")):
    exec(compile(code, where, "exec"), scope)
"""


def _exec_pages() -> list[tuple[str, list[tuple[str, str]]]]:
    """(page, [(page#i, code), ...]) for every page with ``<!-- exec -->`` python blocks."""
    pages = []
    for page in sorted([README, *DOCS.rglob("*.md")]):
        name = page.relative_to(REPO).as_posix()
        blocks = [
            (f"{name}#{i}", m.group(1)) for i, m in enumerate(EXEC_BLOCK.finditer(page.read_text("utf-8")))
        ]
        if blocks:
            pages.append((name, blocks))
    return pages


def test_docs_have_runnable_blocks():
    pages = dict(_exec_pages())
    assert pages, "no <!-- exec --> python block in the docs"
    # the Python API walkthrough runs end to end: one block per stage, then the algorithms on arrays
    assert len(pages.get("docs/python-api.md", [])) >= 7


@pytest.mark.parametrize(("page", "blocks"), _exec_pages(), ids=[p[0] for p in _exec_pages()])
def test_marked_code_blocks_run(page, blocks, tmp_path):
    script = tmp_path / "blocks.json"
    script.write_text(json.dumps(blocks), "utf-8")
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run(
        [sys.executable, "-c", _PAGE_RUNNER, str(script)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, f"{page}:\n{res.stderr[-3000:]}"


# --------------------------------------------------------------------------------------------- gallery
def test_gallery_is_what_the_script_draws(tmp_path):
    from PIL import Image

    res = subprocess.run(
        [sys.executable, str(DOCS / "gen_gallery.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("gallery.jpg", "preview.jpg"):
        committed = DOCS / "images" / name
        assert committed.stat().st_size < 500_000
        fresh = np.asarray(Image.open(tmp_path / name), dtype=np.float64)
        stored = np.asarray(Image.open(committed), dtype=np.float64)
        assert fresh.shape == stored.shape
        # Same pixels up to JPEG re-encoding of last-bit float differences between CPUs/BLAS builds.
        assert np.abs(fresh - stored).mean() < 0.5, name
    gallery = Image.open(tmp_path / "gallery.jpg")
    import distortions

    rows = (gallery.height - 18) / round(112 * 384 / 512)
    assert rows == len(distortions.TABLE) == 25
