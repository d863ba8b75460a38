"""Issue #26 (safety, round 3), the stages / run / escaping half: each case reproduced on a copy of the
finished demo (conftest's ``finished_demo``, never changed here) or on a few of its images.

3: the edit rule for `reshape run` (recorded outputs, samples/ links), `reshape demo` (its data files) and
`reshape distort` (journal-recorded images). 4: a ';' in a training reference's name. 6: thumbnail URLs.
9: the dataset card's escaping. 13: a non-numeric weight. 14: a file name that is not UTF-8. 16: options and
name lengths checked before any stage. 17: .gif in distort. Also: run.json paths relative to the run, and
one containment test / one is_local.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from cli_output import one_line_error
from click.testing import CliRunner

from reshape.cli.main import cli
from reshape.fileio import list_cell, parse_list_cell, sha256_file

REPO = Path(__file__).resolve().parents[1]


def invoke(args: list[str]):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def demo_copy(finished_demo: Path, tmp_path: Path) -> Path:
    """A private copy of the finished demo (mtimes kept, so every stage stays up to date)."""
    root = tmp_path / "X"
    shutil.copytree(finished_demo, root, symlinks=True)
    return root


def _refs(finished_demo: Path, folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True)
    for src in sorted((finished_demo / "data" / "refs").glob("*.png"))[:n]:
        shutil.copy(src, folder / src.name)
    return folder


# ----------------------------------------------------------------------------------------------- 3 edit rule
def test_run_stops_before_any_stage_on_an_edited_output_and_overwrite_names_it(demo_copy: Path) -> None:
    labels = demo_copy / "run" / "labels.csv"
    labels.write_bytes(labels.read_bytes() + b"my edit\n")
    run_json = (demo_copy / "run" / "run.json").read_bytes()
    line = one_line_error(invoke(["run", demo_copy / "pipeline.toml"]))
    assert "labels.csv" in line and "edited" in line and "--overwrite" in line
    assert labels.read_bytes().endswith(b"my edit\n")  # the user's edit stays
    assert (demo_copy / "run" / "run.json").read_bytes() == run_json  # nothing ran

    res = invoke(["run", demo_copy / "pipeline.toml", "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "replacing 1 edited file(s)" in res.stderr and "labels.csv" in res.stderr
    assert not labels.read_bytes().endswith(b"my edit\n")


def test_run_stops_before_label_on_an_edited_samples_link(demo_copy: Path) -> None:
    """The old run replaced labels.csv (label ran) and only then refused the edited sample."""
    sample = sorted((demo_copy / "run" / "samples").rglob("*.png"))[0]
    data = sample.read_bytes()
    sample.unlink()  # an editor writes a new file: no longer the hard link reshape made
    sample.write_bytes(data + b"edited")
    config = demo_copy / "pipeline.toml"
    config.write_text(config.read_text().replace("k = 5", "k = 4"))  # label and everything after it reruns
    labels = demo_copy / "run" / "labels.csv"
    before = sha256_file(labels), labels.stat().st_mtime_ns
    line = one_line_error(invoke(["run", config]))
    assert f"samples/{sample.relative_to(demo_copy / 'run' / 'samples').as_posix()}" in line
    assert (sha256_file(labels), labels.stat().st_mtime_ns) == before
    assert sample.read_bytes() == data + b"edited"


def test_distort_keeps_an_edited_image_unless_overwrite(finished_demo: Path, tmp_path: Path) -> None:
    refs = _refs(finished_demo, tmp_path / "refs")
    out = tmp_path / "out"
    args = ["distort", refs, "--out", out, "--types", "1", "--levels", "1"]
    assert invoke(args).exit_code == 0
    image = sorted(out.glob("*_01_01.png"))[0]
    image.write_bytes(image.read_bytes() + b"my edit")
    line = one_line_error(invoke(args))
    assert image.name in line and "edited" in line
    assert image.read_bytes().endswith(b"my edit")
    res = invoke([*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "replacing 1 edited file(s)" in res.stderr and image.name in res.stderr
    assert not image.read_bytes().endswith(b"my edit")


def test_demo_keeps_an_edited_data_file(demo_copy: Path) -> None:
    edited = sorted((demo_copy / "data" / "source").glob("*_01_*.png"))[0]
    edited.write_bytes(edited.read_bytes() + b"my edit")
    run_json = (demo_copy / "run" / "run.json").read_bytes()
    line = one_line_error(invoke(["demo", "--out", demo_copy, "--smoke"]))
    assert f"data/source/{edited.name}" in line and "--overwrite" in line
    assert edited.read_bytes().endswith(b"my edit")
    assert (demo_copy / "run" / "run.json").read_bytes() == run_json


def test_demo_names_the_files_it_writes_without_writing_them(finished_demo: Path) -> None:
    """The edit check names what the demo would write from its settings alone: the same set it recorded."""
    from reshape.demo import DEMO_RECORD, SMOKE_TYPES, planned_data_files

    recorded = set(json.loads((finished_demo / "data" / DEMO_RECORD).read_text()))
    assert planned_data_files(types=SMOKE_TYPES, n_train=6, n_pool=12) == recorded


# ----------------------------------------------------------------------------------------------- 4 ';' in a name
def test_a_semicolon_in_a_training_reference_name_round_trips(finished_demo: Path, tmp_path: Path) -> None:
    run = finished_demo / "run"
    table = pq.read_table(run / "features" / "train.parquet")
    names = [str(n) for n in table.column("image").to_pylist()]
    victim = names[0]
    renamed = victim.replace(".png", ";cof fee.png")
    images = pa.array([renamed if n == victim else n for n in names])
    table = table.set_column(table.column_names.index("image"), "image", images)
    pq.write_table(table, tmp_path / "train.parquet")
    stem, new_stem = Path(victim).stem, Path(renamed).stem
    source = pd.read_csv(finished_demo / "data" / "source" / "dmos.csv", keep_default_na=False)
    for column in ("dist_img", "ref_img"):
        source[column] = source[column].str.replace(stem, new_stem, regex=False)
    source.to_csv(tmp_path / "dmos.csv", index=False)
    out = tmp_path / "labels.csv"
    res = invoke([
        "label", "--selection", run / "selection.parquet", "--source-labels", tmp_path / "dmos.csv",
        "--distorted", run / "distorted" / "manifest.csv", "--out", out,
        "--train-features", tmp_path / "train.parquet", "--candidate-features", run / "features/candidates.parquet",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    labels = pd.read_csv(out, keep_default_na=False)
    from reshape.report_data import provenance_lists

    lists = provenance_lists(labels, out)
    used = {n for got, _, _ in lists for n in got}
    assert renamed in used  # the name came back whole
    assert used <= set(images.to_pylist())
    assert all(len(n) == len(w) == len(d) for n, w, d in lists)


def test_list_cells_round_trip_and_the_old_format_is_read() -> None:
    names = ["a;b.png", 'q"u,o te.png', "line\nbreak.png", "[x].png", "é.png"]
    assert parse_list_cell(list_cell(names)) == names
    assert parse_list_cell("I01.png;I02.png") == ["I01.png", "I02.png"]  # labels.csv before this format
    assert parse_list_cell("[x].png;b.png") == ["[x].png", "b.png"]


# ----------------------------------------------------------------------------------------------- 6 thumbnail URLs
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_thumbnail_urls_are_percent_encoded(tmp_path: Path) -> None:
    """report.js's thumbUrl, run alone in node: the URL resolves to the file's own path, no query/fragment."""
    script = tmp_path / "t.js"
    script.write_text(
        "const fs=require('fs');const src=fs.readFileSync(process.argv[2],'utf8');\n"
        "const body=src.split('// url:begin')[1].split('\\n').slice(1).join('\\n').split('// url:end')[0];\n"
        "const thumbUrl=new Function(body+'; return thumbUrl;')();\n"
        "const out=JSON.parse(process.argv[3]).map(p=>{const u=new URL(thumbUrl(p),'file:///r/report/index.html');"
        "return [decodeURIComponent(u.pathname),u.search,u.hash];});console.log(JSON.stringify(out));\n"
    )
    paths = ["thumbs/a#b.png.jpg", "thumbs/q?x=1.png.jpg", "thumbs/p%41.png.jpg", "thumbs/%2e%2e/x.png.jpg"]
    done = subprocess.run(
        ["node", str(script), str(REPO / "reshape" / "report_assets" / "report.js"), json.dumps(paths)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    for path, (resolved, query, fragment) in zip(paths, json.loads(done.stdout), strict=True):
        assert (resolved, query, fragment) == (f"/r/report/{path}", "", "")


# ----------------------------------------------------------------------------------------------- 9 the card
def test_the_card_escapes_name_notes_and_source_name(finished_demo: Path, tmp_path: Path) -> None:
    run = finished_demo / "run"
    name = "My set<script>alert(1)</script>\n---\nlicense: mit\n# Heading"
    note = "<img src=x onerror=alert(1)> *bold* [link](javascript:alert(1))\n---"
    source = "Src</b>\n---\ntask_categories: [x]"
    ds = tmp_path / "ds"
    res = invoke([
        "publish", ds, "--from-run", run, "--train-csv", run / "train.csv",
        "--source-root", finished_demo / "data" / "source", "--name", name, "--note", note, "--source-name", source,
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    card = (ds / "README.md").read_text()
    lines = card.splitlines()
    assert lines[0] == "---" and lines.count("---") == 2  # one front-matter block, nothing injected after it
    _, head, body = card.split("---\n", 2)
    # the header is YAML data (safe_dump quotes it, on one line): the name as given, whitespace collapsed
    header = yaml.safe_load(head)
    assert header["pretty_name"] == " ".join(name.split()) and header["license"] == "other"
    injected = (
        "<script",
        "<img",
        "</b>",
        "[link](",
        "\nlicense: mit",
        "\n# Heading",
        "\ntask_categories: [x]",
    )
    for raw in injected:
        assert raw not in body, raw  # the Markdown body: no raw HTML, no injected line or block
    assert "# My set&lt;script&gt;alert(1)&lt;/script&gt; --- license: mit \\# Heading\n" in body
    assert "* &lt;img src=x onerror=alert(1)&gt; \\*bold\\* \\[link\\](javascript:alert(1)) ---\n" in body
    assert "Source: **Src&lt;/b&gt; --- task\\_categories: \\[x\\]**." in body


# ----------------------------------------------------------------------------------------------- 13 weights
def test_report_refuses_a_non_numeric_weight_in_one_line(demo_copy: Path, tmp_path: Path) -> None:
    from reshape.fileio import sums_line

    ds = demo_copy / "dataset"
    labels = pd.read_csv(ds / "labels.csv", keep_default_na=False, dtype=str)
    labels.loc[1, "weights"] = "0.5;abc"
    labels.to_csv(ds / "labels.csv", index=False, lineterminator="\n")
    sums = ds / "SHA256SUMS"  # keep the checksum in step, so the cell itself is what is judged
    lines = [
        sums_line(sha256_file(ds / "labels.csv"), "labels.csv") if line.endswith("  labels.csv") else line
        for line in sums.read_text().splitlines()
    ]
    sums.write_text("\n".join(lines) + "\n")
    line = one_line_error(invoke(["report", ds, "--out", tmp_path / "report"]))
    assert "labels.csv" in line and "'abc' is not a finite number" in line


# ----------------------------------------------------------------------------------------------- 14 UTF-8
def test_distort_refuses_a_name_that_is_not_utf8_before_any_work(finished_demo: Path, tmp_path: Path) -> None:
    refs = _refs(finished_demo, tmp_path / "refs")
    first = sorted(refs.iterdir())[0]
    bad = os.fsencode(refs) + b"/caf\xe9.png"
    os.rename(os.fsencode(first), bad)
    out = tmp_path / "out"
    line = one_line_error(invoke(["distort", refs, "--out", out, "--types", "1", "--levels", "1"]))
    assert "caf\\xe9.png" in line and "UTF-8" in line
    assert not out.exists()


# ----------------------------------------------------------------------------------------------- 16 preflight
def _fresh_project(demo_copy: Path) -> Path:
    """The copy with its run and dataset gone: every stage would run."""
    shutil.rmtree(demo_copy / "run")
    shutil.rmtree(demo_copy / "dataset")
    return demo_copy / "pipeline.toml"


@pytest.mark.parametrize(
    ("before", "after", "said"),
    [
        ('levels = "1,3,5"', 'levels = "1-500"', "stage distort: unknown distortion level '6'"),
        ("k = 5", "k = 0", "stage label: k must be at least 1"),
    ],
)
def test_bad_late_options_fail_before_any_stage(demo_copy: Path, before: str, after: str, said: str) -> None:
    config = _fresh_project(demo_copy)
    assert before in config.read_text()
    config.write_text(config.read_text().replace(before, after))
    assert said in one_line_error(invoke(["run", config]))
    assert not (demo_copy / "run").exists()  # no feature stage ran


def test_a_reference_stem_too_long_fails_before_any_stage_and_any_image(
    demo_copy: Path, tmp_path: Path
) -> None:
    long_name = "p" * 246 + ".png"
    shutil.copy(
        sorted((demo_copy / "data" / "pool").glob("*.png"))[0], demo_copy / "data" / "pool" / long_name
    )
    config = _fresh_project(demo_copy)
    line = one_line_error(invoke(["run", config]))
    assert "name too long" in line and "p" * 246 + "_25_05.png" in line
    assert not (demo_copy / "run").exists()

    refs = _refs(demo_copy, tmp_path / "refs", n=3)
    shutil.copy(demo_copy / "data" / "pool" / long_name, refs / long_name)
    out = tmp_path / "out"
    line = one_line_error(invoke(["distort", refs, "--out", out, "--types", "1", "--levels", "1"]))
    assert "name too long" in line
    assert not out.exists() or not list(out.glob("*.png"))  # not one image written


# ----------------------------------------------------------------------------------------------- 17 .gif
def test_distort_takes_every_image_features_embeds(finished_demo: Path, tmp_path: Path) -> None:
    from PIL import Image

    from reshape import features, imageio
    from reshape.distort_plan import REFERENCE_SUFFIXES

    assert REFERENCE_SUFFIXES == imageio.IMAGE_SUFFIXES == set(features.IMAGE_EXTENSIONS)
    refs = _refs(finished_demo, tmp_path / "refs", n=1)
    Image.open(sorted(refs.glob("*.png"))[0]).convert("P").save(refs / "anim.gif")
    out = tmp_path / "out"
    res = invoke(["distort", refs, "--out", out, "--types", "1", "--levels", "1"])
    assert res.exit_code == 0, res.output
    assert (out / "anim_01_01.png").is_file()


# ----------------------------------------------------------------------------------------------- run.json paths
def test_a_moved_project_publishes_its_own_data(finished_demo: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(finished_demo, moved, symlinks=True)
    info = json.loads((moved / "run" / "run.json").read_text())
    assert info["inputs"]["source_root"] == "../data/source"
    assert info["config"] == "../pipeline.toml"
    # this copy's source images differ from the original's: the publish must take these
    train = pd.read_csv(moved / "run" / "train.csv", keep_default_na=False)
    rel = train.loc[train["origin"] == "source", "dist_img"].iloc[0]
    image = moved / "data" / "source" / rel
    from PIL import Image

    Image.fromarray(np.asarray(Image.open(image))[::-1].copy()).save(image)
    ds = tmp_path / "ds"
    res = invoke(["publish", ds, "--from-run", moved / "run", "--copy-source"])
    assert res.exit_code == 0, res.output
    published = pd.read_csv(ds / "train.csv", keep_default_na=False)
    pub = published.loc[published["origin"] == "source", "dist_img"].tolist()
    digests = {sha256_file(ds / p) for p in pub}
    assert sha256_file(image) in digests


# ----------------------------------------------------------------------------------------------- one rule, one place
def test_one_containment_test_and_one_is_local() -> None:
    from reshape import fsbase, outputs, storage

    assert storage.is_local is fsbase.is_local
    assert not hasattr(outputs, "_inside")
    for location, local in (("s3://b/x", False), ("file:///x", True), ("FILE:///x", True), ("a/b", True)):
        assert storage.is_local(location) is local
