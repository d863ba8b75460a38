"""examples/syn2real: the Table 4 ablation command end to end on stand-in data, and its parts."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reshape.errors import BadInputError
from reshape.train_reference import read_mos_table, read_published, scale_0_10, split_by_reference
from reshape.verify import verify_dataset

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "syn2real"
sys.path.insert(0, str(EXAMPLE))

import syn2real_standin  # noqa: E402
import syn2real_table  # noqa: E402

NUMBER = r"-?\d+\.\d{4}"


def _table_rows(text: str, title: str) -> dict[str, list[str]]:
    """Rows of the Markdown table that follows ``title`` in the report: index -> cells after the marks."""
    block = text[text.index(title) :].split("\n\n")[1]
    rows = {}
    for line in block.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].rstrip(")")] = cells[4:]
    return rows


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> dict:
    pytest.importorskip("skimage")
    return syn2real_standin.build(tmp_path_factory.mktemp("standin"), n_train=3, n_pool=6, n_test=8)


def _run_ablation(standin: dict, out: Path, rows: str) -> subprocess.CompletedProcess:
    argv = syn2real_standin.as_argv(standin)
    argv += ["--out", str(out), "--weights", "none", "--epochs", "1", "--seeds", "1", "--patch-size", "32"]
    # One torch thread: on a small shared CPU, two OpenMP threads competing with other jobs were 5x slower.
    argv += ["--workers", "0", "--threads", "1", "--rows", rows]
    res = subprocess.run(
        [sys.executable, str(EXAMPLE / "syn2real.py"), *argv], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _check_output(res: subprocess.CompletedProcess, out: Path, rows: str) -> dict[str, dict]:
    """The table has finite SRCC/PLCC in every cell and the paper's numbers; returns the stored runs."""
    variants = ("ddcup", "cd") if "b" in rows else ("ddcup",)
    for target in ("livec", "koniq", "bid"):  # every dataset came from reshape's own CLI and verifies
        assert f"$ reshape run {out / 'reshape' / target / 'pipeline.toml'}" in res.stdout
        for variant in variants:
            assert verify_dataset(out / "datasets" / f"{target}-{variant}").ok
    text = (out / "table.md").read_text("utf-8")
    assert text.strip() in res.stdout
    srcc = _table_rows(text, "SRCC, mean")
    plcc = _table_rows(text, "PLCC, mean")
    assert sorted(srcc) == sorted(plcc) == list(rows)
    for index, cells in srcc.items():
        assert len(cells) == 4  # three targets + average, each "value (paper)"
        published = [
            *syn2real_table.PAPER_TABLE4[index]["srcc"],
            syn2real_table.PAPER_TABLE4[index]["average"],
        ]
        for cell, paper in zip(cells, published):
            value, in_brackets = re.fullmatch(rf"({NUMBER}) \(({NUMBER})\)", cell).groups()
            assert math.isfinite(float(value))
            assert float(in_brackets) == pytest.approx(paper, abs=6e-5)
        assert all(math.isfinite(float(re.fullmatch(NUMBER, c).group())) for c in plcc[index])
    records = json.loads((out / "results.json").read_text("utf-8"))
    assert len(records) == len(rows) * 3
    assert all(math.isfinite(r["srcc"]) and math.isfinite(r["plcc"]) for r in records)
    return {p.stem: json.loads(p.read_text("utf-8")) for p in (out / "results").glob("*.json")}


def test_ablation_command_produces_the_table_on_standin_data(standin: dict, tmp_path: Path) -> None:
    """Rows a, c, e, f (the default) on all three targets, one seed, one epoch."""
    out = tmp_path / "out"
    runs = _check_output(_run_ablation(standin, out, "a,c,e,f"), out, "acef")
    for target in ("livec", "koniq", "bid"):  # what each row trained on, read back from the stored runs
        train = pd.read_csv(out / "datasets" / f"{target}-ddcup" / "train.csv")
        n_source = int((train.origin == "source").sum())
        assert runs[f"a-{target}-seed0"]["train_size"] == runs[f"c-{target}-seed0"]["train_size"] == n_source
        assert runs[f"e-{target}-seed0"]["train_size"] == len(train) > n_source
        assert runs[f"a-{target}-seed0"]["kept_per_epoch"] == [n_source]
        for row in "cf":
            run = runs[f"{row}-{target}-seed0"]
            assert run["settings"]["config"]["down"] is True
            assert 0 < run["kept_per_epoch"][0] <= run["train_size"]


@pytest.mark.slow
def test_ablation_with_the_cd_rows(standin: dict, tmp_path: Path) -> None:
    """All six rows: b) and d) train on every candidate, distorted and labelled by the stage commands."""
    out = tmp_path / "out"
    runs = _check_output(_run_ablation(standin, out, "all"), out, "abcdef")
    for target in ("livec", "koniq", "bid"):
        train = pd.read_csv(out / "datasets" / f"{target}-ddcup" / "train.csv")
        cd = pd.read_csv(out / "datasets" / f"{target}-cd" / "train.csv")
        assert runs[f"b-{target}-seed0"]["train_size"] == runs[f"d-{target}-seed0"]["train_size"] == len(cd)
        assert len(cd) > len(train)
        assert (cd.origin == "pseudo").sum() == 6 * 6 * 3  # every candidate x 6 types x 3 levels


def test_missing_bid_table_is_one_line_and_exit_2(standin: dict, tmp_path: Path) -> None:
    args = {k: v for k, v in standin.items() if k != "--bid-mos"}
    argv = [*syn2real_standin.as_argv(args), "--out", str(tmp_path / "o"), "--targets", "bid"]
    res = subprocess.run(
        [sys.executable, str(EXAMPLE / "syn2real.py"), *argv], capture_output=True, text=True, check=False
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "syn2real: error: --bid-mos is required (a CSV with image and score columns)"
    ]
    assert not (tmp_path / "o").exists()


def test_mos_table_paths_resolve_by_name_and_never_leave_the_root(standin: dict, tmp_path: Path) -> None:
    images = read_mos_table(standin["--livec-mos"], standin["--livec-root"])
    table = pd.read_csv(standin["--livec-mos"])
    assert [p.name for p in images.paths] == [Path(p).name for p in table.dis_img_path]
    assert all(p.parent == Path(standin["--livec-root"]).resolve() for p in images.paths)
    assert images.labels.min() == 0 and images.labels.max() == 10
    # higher score, higher label: the scaling is monotone
    assert (
        np.argsort(images.labels, kind="stable") == np.argsort(table.score.to_numpy(), kind="stable")
    ).all()
    bad = tmp_path / "bad.csv"
    bad.write_text("image,mos\n../outside.png,1\nx.png,2\n")
    with pytest.raises(BadInputError, match="escapes the dataset root"):
        read_mos_table(bad, standin["--livec-root"])
    bad.write_text("image,mos\nmissing.png,1\n")
    with pytest.raises(BadInputError, match="missing.png"):
        read_mos_table(bad, standin["--livec-root"])


def test_labels_scale_like_the_official_loader() -> None:
    assert scale_0_10(np.array([1.0, 3.0, 5.0])).tolist() == [0.0, 5.0, 10.0]
    assert scale_0_10(np.array([1.0, 3.0, 5.0]), flip=True).tolist() == [10.0, 5.0, 0.0]
    with pytest.raises(BadInputError, match="constant"):
        scale_0_10(np.array([2.0, 2.0]))


def test_published_rows_filtering_and_reference_holdout(standin: dict) -> None:
    kadid = Path(standin["--kadid-root"])
    table = pd.read_csv(kadid / "dmos.csv")
    folder = kadid.parent / "published"
    folder.mkdir(exist_ok=True)
    train = table.assign(dist_type=1, dist_level=1, origin="source")
    train["dist_img"] = "source/" + train.dist_img
    train.to_csv(folder / "train.csv", index=False)
    rows = read_published(folder, kadid / "images", drop_refs=[Path(table.ref_img[0]).stem])
    assert len(rows) == int((table.ref_img != table.ref_img[0]).sum())
    assert all(p.is_file() and p.parent == (kadid / "images").resolve() for p in rows.paths)
    train_idx, val_idx = split_by_reference(rows, 0.5, seed=0)
    assert len(train_idx) + len(val_idx) == len(rows) and len(val_idx) > 0
    assert not {rows.groups[i] for i in train_idx} & {rows.groups[i] for i in val_idx}


def test_table_cells_are_mean_and_sample_std_over_seeds() -> None:
    results = {}
    for seed, (a, b, c) in enumerate([(0.5, 0.6, 0.7), (0.7, 0.8, 0.9)]):
        for target, value in zip(("livec", "koniq", "bid"), (a, b, c)):
            results[("a", target, seed)] = {"srcc": value, "plcc": value}
    text = syn2real_table.format_table(results, ["a"], ["livec", "koniq", "bid"], [0, 1], "plcc")
    cells = text.splitlines()[2].strip("|").split("|")
    assert [c.strip() for c in cells[4:]] == [
        "0.6000 ± 0.1414",
        "0.7000 ± 0.1414",
        "0.8000 ± 0.1414",
        "0.7000 ± 0.1414",
    ]
    srcc = syn2real_table.format_table(results, ["a"], ["livec", "bid"], [0, 1], "srcc")
    assert srcc.splitlines()[2].endswith(
        "0.7000 ± 0.1414 (0.7327) |"
    )  # paper average over the chosen targets
