"""The static HTML report (`reshape report`, written by `reshape publish`): built from the published folder
alone, opened from file:// in a real headless Chromium (Debian's package, driven by Playwright), offline."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from reshape.cli.main import cli
from reshape.verify import verify_dataset

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory: pytest.TempPathFactory, copy_smoke_demo) -> Path:
    """The smoke demo's published dataset (its publish writes report/), a copy for this module."""
    return copy_smoke_demo(tmp_path_factory.mktemp("report") / "demo") / "dataset"


def _browser():
    """A headless Chromium from the Debian package; skipped locally without it, a failure on CI."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright package is not installed (test extra)"
    if reason is None and not CHROMIUM.is_file():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    return sync_playwright


def _flagged_pairs(labels: pd.DataFrame) -> int:
    """(ref, type) pairs whose pseudo-label is higher at some higher level: counted here independently."""
    count = 0
    for _, group in labels.groupby(["ref_img", "dist_type"]):
        values = group.sort_values("dist_level")["dmos"].to_numpy()
        count += bool((values[1:] > values[:-1]).any())
    return count


def test_publish_writes_a_listed_report_and_provenance(demo_dataset: Path) -> None:
    sums = (demo_dataset / "SHA256SUMS").read_text()
    for name in ("report/index.html", "report/report.js", "report/report.json", "report/data/summary.js"):
        assert f"  {name}\n" in sums
    assert "  provenance/selection_map.csv\n" in sums
    assert "  provenance/neighbour_labels.csv\n" in sums
    assert verify_dataset(demo_dataset).ok
    card = json.loads((demo_dataset / "dataset.json").read_text())
    assert card["files"]["report"] == "report/index.html"
    assert card["features"]["encoder"] in ("resnet50", "colour-texture")
    assert card["features"]["encoder"] in (demo_dataset / "README.md").read_text()
    index = (demo_dataset / "report" / "index.html").read_text()
    assert card["features"]["encoder"] in index
    assert "http://" not in index and "https://" not in index
    # thumbnails: JPEG, at most 256 px
    from PIL import Image

    thumbs = sorted((demo_dataset / "report" / "thumbs").rglob("*.jpg"))
    assert thumbs
    for t in thumbs[:20]:
        with Image.open(t) as im:
            assert im.format == "JPEG" and max(im.size) <= 256


def test_report_in_chromium_offline(demo_dataset: Path, tmp_path: Path) -> None:
    sync_playwright = _browser()
    report = (demo_dataset / "report").resolve()
    labels = pd.read_csv(demo_dataset / "labels.csv")
    inside, outside, console = [], [], []

    def route(r) -> None:
        url = r.request.url
        if url.startswith(report.as_uri() + "/"):
            inside.append(url)
            r.continue_()
        else:
            outside.append(url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.route("**/*", route)
        page.goto((report / "index.html").as_uri())
        assert page.inner_text("#n-pseudo") == str(len(labels))
        assert json.loads((demo_dataset / "dataset.json").read_text())["features"][
            "encoder"
        ] in page.inner_text("#encoder")

        # selection map: clicking a selected point shows its thumbnail and name
        page.click("nav a[data-tab=selection]")
        point = page.locator("#selection-map .pt.selected").first
        name = point.get_attribute("data-name")
        point.click()
        assert name in page.inner_text("#map-info")
        assert page.locator("#map-info img").get_attribute("src").startswith("thumbs/")

        # provenance: every pseudo-labelled image with exactly its neighbours, thumbnails loaded
        page.click("nav a[data-tab=provenance]")
        page.select_option("#page-size", "all")
        page.wait_for_selector("tr.prow")
        shown = page.eval_on_selector_all(
            "tr.prow",
            "rows => rows.map(r => [r.dataset.img, "
            "Array.from(r.querySelectorAll('[data-neighbour]')).map(n => n.dataset.neighbour)])",
        )
        expected = {r.dist_img: json.loads(r.neighbours) for r in labels.itertuples()}
        assert dict(shown) == expected
        page.eval_on_selector_all("img", "imgs => imgs.forEach(i => { i.loading = 'eager'; })")
        page.wait_for_load_state("networkidle")
        broken = page.eval_on_selector_all("tr.prow img", "imgs => imgs.filter(i => !i.naturalWidth).length")
        assert broken == 0
        assert page.locator("tr.prow [data-neighbour] img").count() == sum(map(len, expected.values()))

        # a filter narrows the rows
        some_type = int(labels["dist_type"].iloc[-1])
        page.select_option("#filter-type", str(some_type))
        assert page.locator("tr.prow").count() == int((labels["dist_type"] == some_type).sum())
        assert page.inner_text("#row-count").startswith(f"{int((labels['dist_type'] == some_type).sum())} of")

        # new images: every pseudo image in its reference's grid
        page.click("nav a[data-tab=new]")
        page.wait_for_selector(".newref")
        cells = page.eval_on_selector_all("td[data-img]", "cells => cells.map(c => c.dataset.img)")
        assert sorted(cells) == sorted(labels["dist_img"])

        # label sanity: the flagged count matches an independent count
        page.click("nav a[data-tab=sanity]")
        assert page.inner_text("#flag-count").startswith(str(_flagged_pairs(labels)))
        browser.close()

    assert not console, console
    assert not outside, outside
    assert any(u.endswith("/report.js") for u in inside) and any("/thumbs/" in u for u in inside)


def test_report_rebuilds_from_a_moved_copy(demo_dataset: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(demo_dataset, moved)
    original = demo_dataset / "report"
    shutil.rmtree(moved / "report")
    res = CliRunner().invoke(cli, ["report", str(moved)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "0 reused" in res.output
    assert verify_dataset(moved).ok, verify_dataset(moved).problems
    # the same bytes as publish wrote: nothing in it depends on where the folder lives
    for path in sorted(original.rglob("*")):
        if path.is_file():
            rel = path.relative_to(original)
            assert (moved / "report" / rel).read_bytes() == path.read_bytes(), rel
    assert (moved / "SHA256SUMS").read_text() == (demo_dataset / "SHA256SUMS").read_text()
    # a rebuild reuses every thumbnail
    res = CliRunner().invoke(cli, ["report", str(moved)], catch_exceptions=False)
    assert res.exit_code == 0 and " 0 thumbnail(s) made" in res.output, res.output
    # without its record, the report files SHA256SUMS lists are still the report's own
    (moved / "report" / "report.json").unlink()
    res = CliRunner().invoke(cli, ["report", str(moved)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert verify_dataset(moved).ok


def test_report_out_elsewhere_leaves_the_dataset_alone(demo_dataset: Path, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in demo_dataset.rglob("*") if p.is_file()}
    out = tmp_path / "rep"
    args = ["report", str(demo_dataset), "--out", str(out), "--workers", "1"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    # one thread here, several in publish: the same bytes
    made = demo_dataset / "report"
    assert len(list((out / "thumbs").rglob("*.jpg"))) >= 8  # enough for publish to use its thread pool
    for path in sorted(made.rglob("*")):
        if path.is_file():
            assert (out / path.relative_to(made)).read_bytes() == path.read_bytes(), path
    assert {p: p.stat().st_mtime_ns for p in demo_dataset.rglob("*") if p.is_file()} == before


def test_report_refuses_what_it_did_not_write(demo_dataset: Path, tmp_path: Path) -> None:
    # a non-empty folder that is no report
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    res = CliRunner().invoke(cli, ["report", str(demo_dataset), "--out", str(foreign)])
    assert res.exit_code == 2
    assert res.output.count("\n") == 1 and "not empty and holds no reshape report" in res.output
    # --overwrite writes beside it and never deletes it
    res = CliRunner().invoke(cli, ["report", str(demo_dataset), "--out", str(foreign), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (foreign / "notes.txt").read_text() == "keep me" and (foreign / "index.html").is_file()
    # a file of the user's at a name the report writes, in a report folder
    (foreign / "report.json").unlink()
    (foreign / "index.html").write_text("my page")
    (foreign / "report.json").write_text('{"format": "reshape-report/1", "files": []}')
    res = CliRunner().invoke(cli, ["report", str(demo_dataset), "--out", str(foreign)])
    assert res.exit_code == 2 and "not written by reshape" in res.output, res.output
    assert (foreign / "index.html").read_text() == "my page"
    # the output is the dataset itself, or a folder that is not a published dataset
    res = CliRunner().invoke(cli, ["report", str(demo_dataset), "--out", str(demo_dataset)])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "rep-missing")])
    assert res.exit_code == 2 and "not a folder" in res.output


def test_report_shows_drcdown_clusters(demo_dataset: Path, tmp_path: Path) -> None:
    """A clusters table (as publish writes it for a pruned run) becomes the DRCDown section."""
    from reshape import report

    copy = tmp_path / "pruned"
    shutil.copytree(demo_dataset, copy)
    train = pd.read_csv(copy / "train.csv")
    members = train[train["origin"] == "source"].head(6)
    pd.DataFrame(
        {
            "image": members["dist_img"],
            "name": members["dist_img"],
            "cluster": [0, 0, 0, 1, 1, 1],
            "cluster_size": 3,
            "kept": [True, False, False, True, True, False],
        }
    ).to_csv(copy / "provenance" / "clusters.csv", index=False)
    summary, _, thumbs = report.report_model(report.read_published(copy))
    assert summary["counts"]["pruned"] == 3
    assert [c[0] for c in summary["clusters"]] == [0, 1]
    assert [m[2] for m in summary["clusters"][0][2]] == [True, False, False]
    assert all(report.thumb_name(p) in thumbs for p in members["dist_img"])
    html = report.render_index(summary)
    assert 'data-tab="clusters"' in html


def test_pruned_run_publishes_its_clusters(demo_dataset: Path, tmp_path: Path) -> None:
    """With DRCDown on, publish writes provenance/clusters.csv (dropped members as small JPEGs, since they
    are not published) and the report gets its DRCDown section."""
    from reshape import report

    demo = tmp_path / "demo"
    shutil.copytree(demo_dataset.parent, demo, symlinks=True)
    config = demo / "pipeline.toml"
    config.write_text(config.read_text() + '\n[prune]\nenabled = true\nlabel-scale = "1-5"\nseed = 0\n')
    res = CliRunner().invoke(cli, ["run", str(config)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    dataset = demo / "dataset"
    assert verify_dataset(dataset).ok, verify_dataset(dataset).problems
    decisions = pd.read_csv(demo / "run" / "prune_indices.csv")
    multi = decisions[decisions["cluster_size"] > 1]
    clusters = pd.read_csv(dataset / "provenance" / "clusters.csv", keep_default_na=False)
    assert sorted(clusters["name"]) == sorted(multi["image"])
    train = set(pd.read_csv(dataset / "train.csv")["dist_img"])
    for row in clusters.itertuples():
        if row.kept:
            assert row.image in train
        else:
            assert row.image.startswith("provenance/dropped/") and (dataset / row.image).is_file()
    summary, _, _ = report.report_model(report.read_published(dataset))
    assert summary["counts"]["pruned"] == int((~multi["kept"].astype(bool)).sum())
    index = (dataset / "report" / "index.html").read_text()
    assert ('data-tab="clusters"' in index) == (summary["clusters"] is not None)


def test_report_of_a_folder_with_referenced_sources(demo_dataset: Path, tmp_path: Path) -> None:
    """Source rows pointing into source/ (referenced, not shipped; a user may mount the source dataset
    there with a symlink) get no thumbnail and do not stop the report."""
    from reshape import report

    copy = tmp_path / "ref"
    shutil.copytree(demo_dataset, copy)
    (copy / "source").symlink_to(demo_dataset / "images" / "source")
    clusters = pd.DataFrame(
        {
            "image": ["source/astronaut_01_01.png"],
            "name": ["astronaut_01_01.png"],
            "cluster": [0],
            "cluster_size": [2],
            "kept": [True],
        }  # fmt: skip
    )
    clusters.to_csv(copy / "provenance" / "clusters.csv", index=False)
    summary, _, thumbs = report.report_model(report.read_published(copy))
    assert summary["clusters"][0][2] == [["", "astronaut_01_01.png", True]]
    assert not any(p.startswith("source/") for p in thumbs.values())
    # a path that leaves the folder is one line, exit 2
    clusters.assign(image="../../etc/passwd").to_csv(copy / "provenance" / "clusters.csv", index=False)
    res = CliRunner().invoke(cli, ["report", str(copy), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "escapes" in res.output and res.output.count("\n") == 1, res.output


def test_rebuild_never_deletes_through_a_link_nor_an_edited_file(demo_dataset: Path, tmp_path: Path) -> None:
    """The report keeps the safety rules of every writing command (docs/safety.md): a stale file it
    recorded is deleted only while it holds the recorded bytes, and nothing is written or deleted through
    a symbolic link leading out of its folder."""
    fewer = tmp_path / "fewer"
    shutil.copytree(demo_dataset, fewer)
    train = pd.read_csv(fewer / "train.csv")
    gone = train[train["origin"] == "pseudo"]["dist_img"].iloc[-1]
    train[train["dist_img"] != gone].to_csv(fewer / "train.csv", index=False, lineterminator="\n")
    labels = pd.read_csv(fewer / "labels.csv")
    labels[labels["dist_img"] != gone].to_csv(fewer / "labels.csv", index=False, lineterminator="\n")
    rep = tmp_path / "rep"
    res = CliRunner().invoke(cli, ["report", str(demo_dataset), "--out", str(rep)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    stale = rep / "thumbs" / f"{gone}.jpg"
    assert stale.is_file()
    # an edited stale file stays
    stale.write_bytes(b"my own edit")
    res = CliRunner().invoke(cli, ["report", str(fewer), "--out", str(rep)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert stale.read_bytes() == b"my own edit"
    # an unedited one goes: rebuild from the full set, then from the smaller one again
    stale.unlink()
    assert CliRunner().invoke(cli, ["report", str(demo_dataset), "--out", str(rep)]).exit_code == 0
    assert stale.is_file()
    assert CliRunner().invoke(cli, ["report", str(fewer), "--out", str(rep)]).exit_code == 0
    assert not stale.exists()
    # thumbs/ as a link to a folder of the user's: refused in one line, the user's files untouched
    mine = tmp_path / "my-thumbs"
    shutil.move(rep / "thumbs", mine)
    (rep / "thumbs").symlink_to(mine, target_is_directory=True)
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    res = CliRunner().invoke(cli, ["report", str(demo_dataset), "--out", str(rep)])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "link" in res.output and str(rep / "thumbs") in res.output
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before


def test_republish_after_the_report_record_was_lost(demo_dataset: Path, tmp_path: Path) -> None:
    """Without report/report.json, the report files the previous publish listed (with their sha256) are
    still the report's own: publishing again rebuilds them (one line per fault, never a traceback)."""
    demo = demo_dataset.parent
    ds = tmp_path / "ds"
    args = [
        "publish",
        "--out",
        str(ds),
        "--from-run",
        str(demo / "run"),
        "--source-root",
        str(demo / "data/source"),
    ]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (ds / "report" / "report.json").unlink()
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (ds / "report" / "report.json").is_file()
    assert verify_dataset(ds).ok, verify_dataset(ds).problems


@pytest.mark.parametrize(
    ("table", "edit", "problem"),
    [
        ("provenance/selection_map.csv", lambda t: t.drop(columns=["role"]), "missing column(s) role"),
        ("provenance/selection_map.csv", lambda t: t.assign(x="left"), "column(s) x must be numbers"),
        ("provenance/neighbour_labels.csv", lambda t: t.drop(columns=["dmos"]), "missing column(s) dmos"),
    ],
)
def test_a_broken_provenance_table_is_one_line(
    demo_dataset: Path, tmp_path: Path, table, edit, problem
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(demo_dataset, copy)
    edit(pd.read_csv(copy / table)).to_csv(copy / table, index=False)
    res = CliRunner().invoke(cli, ["report", str(copy), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 2, res.output
    assert res.output == f"reshape: error: {copy / table}: {problem}\n"
    assert not (tmp_path / "rep").exists()


def test_report_that_waited_for_a_publish_reads_the_new_folder(demo_dataset: Path, tmp_path: Path) -> None:
    """`reshape report --wait` planned from the folder before it waited; a publish that completed meanwhile
    (its SHA256SUMS rewritten) makes it read the folder again under the lock, not write a stale report."""
    import threading
    import time

    from reshape import report
    from reshape.fileio import sha256_file
    from reshape.layout import read_sha256sums, sha256sums_text
    from reshape.outputs import OutputLock

    ds = tmp_path / "ds"
    shutil.copytree(demo_dataset, ds)
    train = pd.read_csv(ds / "train.csv")
    gone = train[train["origin"] == "pseudo"]["dist_img"].iloc[-1]
    result: dict[str, object] = {}
    with OutputLock(ds):
        worker = threading.Thread(target=lambda: result.update(r=report.run(ds, wait=True, workers=1)))
        worker.start()
        time.sleep(3)  # it has planned and now waits for the lock
        assert worker.is_alive()
        # what a republish with one row fewer would leave (tables and checksums rewritten)
        train[train["dist_img"] != gone].to_csv(ds / "train.csv", index=False, lineterminator="\n")
        labels = pd.read_csv(ds / "labels.csv")
        labels[labels["dist_img"] != gone].to_csv(ds / "labels.csv", index=False, lineterminator="\n")
        sums = read_sha256sums(ds / "SHA256SUMS")
        sums.update({n: sha256_file(ds / n) for n in ("train.csv", "labels.csv")})
        (ds / "SHA256SUMS").write_text(sha256sums_text(sums))
    worker.join(timeout=120)
    assert "r" in result
    assert report.thumb_name(gone) not in result["r"].files
    assert not (ds / "report" / report.thumb_name(gone)).exists()
