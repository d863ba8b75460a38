"""examples/paper: every table driver end to end on stand-in data, and the mechanism each one rests on."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from reshape.artifacts import read_artifact_metadata
from reshape.train_reference import BACKBONES, build_model, make_optimizer

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "examples" / "paper"
sys.path.insert(0, str(PAPER))

import paper_core  # noqa: E402
import paper_standin  # noqa: E402
import table2_syn2alg  # noqa: E402
import table3_syn2syn  # noqa: E402
import table10_clip_ddcup  # noqa: E402
import tables5_7_hyper  # noqa: E402
import tables8_9_backbones  # noqa: E402

NUMBER = r"-?\d+\.\d{4}"
# one torch thread and no loader processes: on a small shared CPU this is the fastest, and deterministic
FAST = paper_standin.SMOKE


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> dict:
    pytest.importorskip("skimage")
    return paper_standin.build(tmp_path_factory.mktemp("paper-standin"))


def _checked(driver: str, rc: int, stdout: str, stderr: str, out: Path) -> str:
    assert rc == 0, stderr[-3000:]
    text = (out / "table.md").read_text("utf-8")
    assert text.strip() in stdout and text.startswith("protocol official:")
    assert f"  driver: {driver[:-3]}" in text and "override: weights = none" in text
    return text


def _run(module, standin: dict, out: Path, *extra: str, capsys) -> str:
    driver = Path(module.__file__).name
    argv = [*paper_standin.driver_argv(standin, driver), "--out", str(out), *FAST, *extra]
    threads = torch.get_num_threads()
    try:
        rc = module.main(argv)
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    return _checked(driver, rc, captured.out, captured.err, out)


@dataclass
class Printed:
    """One command the stand-in builder printed, run as printed: its argv, exit status, output folder and
    the table it printed."""

    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def out(self) -> Path:
        return Path(self.argv[self.argv.index("--out") + 1])

    @property
    def text(self) -> str:
        return _checked(Path(self.argv[1]).name, self.rc, self.stdout, self.stderr, self.out)


def run_as_printed(line: str) -> Printed:
    """``python examples/paper/X.py ARGS`` exactly as printed, from the repository root: the script runs as
    ``__main__`` with ``sys.argv`` = the printed words after ``python``, in this interpreter (a new process
    would spend most of its time importing torch again)."""
    argv = shlex.split(line)
    assert argv[0] == "python" and (REPO / argv[1]).is_file(), line
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.argv, torch.get_num_threads(), os.getcwd()
    os.chdir(REPO)
    sys.argv = argv[1:]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            runpy.run_path(argv[1], run_name="__main__")
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved[0]
        torch.set_num_threads(saved[1])
        os.chdir(saved[2])
    return Printed(argv, rc, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="module")
def printed(standin: dict):
    """The builder's printed command of a driver (by file name), run as printed once per module."""
    lines = paper_standin.commands(standin, Path(standin["--kadid-root"]).parent)
    by_driver = {Path(shlex.split(line)[1]).name: line for line in lines}
    assert len(by_driver) == len(lines) == len(paper_standin.DRIVER_TARGETS)
    done: dict[str, Printed] = {}

    def run(driver: str) -> Printed:
        if driver not in done:
            done[driver] = run_as_printed(by_driver[driver])
        return done[driver]

    run.drivers = sorted(by_driver)
    return run


def _rows(text: str, caption: str) -> dict[str, list[str]]:
    """The Markdown table after ``caption``: first cell -> the other cells."""
    block = text[text.index(caption) :].split("\n\n")[1]
    rows = {}
    for line in block.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[" / ".join(cells[:2]) if cells[1] in ("Baseline", "SynDR-IQA") else cells[0]] = cells[1:]
    return rows


def _bracketed(cell: str) -> tuple[float, float]:
    value, paper = re.fullmatch(rf"({NUMBER}) \(({NUMBER})\)", cell).groups()
    assert np.isfinite(float(value))
    return float(value), float(paper)


def _runs(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text("utf-8"))["runs"]


# --------------------------------------------------------------------------------------------- Table 2
def test_table2_tests_each_pipal_type_on_its_own_rows(standin: dict, printed, tmp_path: Path) -> None:
    """The builder's printed command: type 1 (traditional SR) trains with preset pipal1 and is tested on
    exactly the PIPAL rows whose file name says type 01; the baseline's cells carry DGQA's published SRCC
    and PLCC."""
    run_ = printed("table2_syn2alg.py")
    text, out = run_.text, run_.out
    assert run_.argv[run_.argv.index("--types") + 1] == "1"
    row = _rows(text, "SRCC and PLCC per algorithmic type")["1 Traditional SR"]
    assert [_bracketed(c)[1] for c in row] == [0.4897, 0.4567]
    table = pd.read_csv(standin["--pipal-mos"])
    typed = table[table.dis_img_path.str.contains(r"/A\d{4}_01_\d\d\.bmp$")]
    written = pd.read_csv(out / "tests" / "pipal-t01.csv")
    assert len(written) == len(typed) > 0 and set(written.dist_type) == {1}
    assert sorted(written.image) == sorted(p.split("/", 1)[1] for p in typed.dis_img_path)
    (run,) = _runs(out)
    assert run["pipal_type"] == 1 and run["recipe"]["preset"] == "pipal1"
    train = pd.read_csv(out / "datasets" / "pipal1" / "train.csv")
    assert set(train.dist_type) == {1, 2, 3, 9, 17, 18, 25}  # reshape's pipal1 preset
    # another type selects other rows, and a type the table lacks is one clear error
    six = pd.read_csv(paper_core.write_test_table("pipal", standin["--pipal-mos"], tmp_path, (6,)))
    assert set(six.dist_type) == {6} and not set(six.image) & set(written.image)


# --------------------------------------------------------------------------------------------- Table 3
def test_table3_intra_keeps_test_references_out_of_training(standin: dict, tmp_path: Path, capsys) -> None:
    """Two 80/20 splits: no test reference in DDCUp's training references, in any pseudo-label's
    neighbours, in the source rows trained on, or in the merged labels; the median is printed."""
    out = tmp_path / "t3"
    text = _run(
        table3_syn2syn, standin, out, "--parts", "intra", "--splits", "2", "--rows", "a", capsys=capsys
    )
    runs = _runs(out)
    assert [r["split"] for r in runs] == [0, 1]
    refs = sorted(pd.read_csv(Path(standin["--kadid-root"]) / "dmos.csv").ref_img.unique())
    seen_test = set()
    for run in runs:
        test = set(run["test_refs"])
        assert len(test) == round(0.2 * len(refs)) and test <= set(refs)
        seen_test |= test
        folder = out / "reshape" / f"all-split{run['split']}"
        assert not test & set(pd.read_csv(folder / "kadid_refs.csv").image)  # DDCUp's training references
        labels = pd.read_csv(folder / "run" / "labels.csv")
        neighbours = {n for cell in labels.neighbours for n in cell.split(";")}
        assert neighbours and not test & neighbours  # the pseudo-labels' neighbours
        train = pd.read_csv(out / "datasets" / f"all-split{run['split']}" / "train.csv")
        source_refs = {r.removeprefix("source/") for r in train[train.origin == "source"].ref_img}
        assert source_refs and not test & source_refs  # every source row trained on (DRCDown's input)
        assert not test & set(pd.read_csv(out / "splits" / f"split{run['split']}" / "dmos_train.csv").ref_img)
        tested = pd.read_csv(out / "splits" / f"split{run['split']}" / "kadid_test.csv")
        assert {n.split("_")[0] + ".png" for n in tested.image} == test
    assert len(seen_test) > len(runs[0]["test_refs"])  # the splits differ
    srcc = [r["scores"]["kadid"]["srcc"] for r in runs]
    cell = _rows(text, "SRCC and PLCC")["Baseline"][0]
    assert _bracketed(cell) == (pytest.approx(float(np.median(srcc)), abs=6e-5), 0.8528)


def test_table3_cross_flips_dmos_and_tells_tid2013_21_from_24(standin: dict, printed, tmp_path: Path) -> None:
    """LIVE's and CSIQ's DMOS are flipped (higher label = lower DMOS), TID2013's MOS is not; TID2013's
    types come from the file names, so 21 and 24 (one dis_type label in the table) are two test sets."""
    for target, flipped in (("live", True), ("csiq", True), ("tid2013", False)):
        _, images = paper_core.load_target(
            target, standin[f"--{target}-root"], standin[f"--{target}-mos"], tmp_path
        )
        scores = pd.read_csv(standin[f"--{target}-mos"]).score.to_numpy()
        order = np.corrcoef(images.labels, scores)[0, 1]
        assert (order < -0.99) if flipped else (order > 0.99)
    live = pd.read_csv(tmp_path / "tests" / "live.csv")
    assert live.image.map(lambda p: p.split("/")[-1]).duplicated().any()  # same names in several folders
    tid = pd.read_csv(standin["--tid2013-mos"])
    shared = tid[tid.dis_img_path.str.contains(r"_2[14]_")]
    assert shared.dis_type.nunique() == 1  # the table cannot tell them apart
    run_ = printed("table3_syn2syn.py")  # the builder's printed command: --parts cross --per-type
    text, out = run_.text, run_.out
    cells = _rows(text, "SRCC and PLCC")["Baseline"]
    assert [_bracketed(c)[1] for c in cells] == [0.9173, 0.8988, 0.7965, 0.8017, 0.7077, 0.7220]
    (run,) = _runs(out)
    assert {"tid2013/t21", "tid2013/t24"} <= set(run["scores"])
    for t in (21, 24):
        rows = pd.read_csv(out / "tests" / f"tid2013-t{t}.csv")
        assert len(rows) == len(tid[tid.dis_img_path.str.contains(f"_{t}_")]) and set(rows.dist_type) == {t}
    assert "type 21" in text and "type 24" in text


# ------------------------------------------------------------------------------------------ Tables 5-7
def test_sweep_values_change_the_dataset_the_key_and_the_table(printed) -> None:
    """The builder's printed command (``--sweep 5.ours,5.5,7.1``): Table 5's k=ALL, no margin makes another
    dataset than k=5, margin 0.05; Table 7's minimum kept reaches the trainer's DRCDown; every value is
    printed; a rerun reuses every training."""
    run_ = printed("tables5_7_hyper.py")
    text, out = run_.text, run_.out
    ours = pd.read_csv(out / "datasets" / "livec-k5-m0.05" / "train.csv")
    every = pd.read_csv(out / "datasets" / "livec-kALL-m2.0" / "train.csv")
    assert list(ours.dist_img) == list(every.dist_img)  # the same selection and images...
    pseudo = ours.origin == "pseudo"
    assert pseudo.any() and not np.allclose(ours.dmos[pseudo], every.dmos[pseudo])  # ...other pseudo-labels
    table5 = _rows(text, "Table 5, DDCUp")
    assert table5["ours"][:2] == ["5", "0.05"] and table5["5"][:2] == ["ALL", "–"]
    assert _bracketed(table5["5"][2])[1] == 0.708
    table7 = _rows(text, "Table 7, DRCDown minimum kept")
    assert table7["1"][0] == "10" and _bracketed(table7["1"][1])[1] == 0.703
    runs = {r["sweep"]: r for r in _runs(out)}
    stored = {k: json.loads((out / "results" / r["file"]).read_text()) for k, r in runs.items()}
    assert stored["7.1"]["settings"]["config"]["down_min_kept"] == 10
    assert stored["5.ours"]["settings"]["config"]["down_min_kept"] == 20
    assert len({r["file"] for r in runs.values()}) == 3  # three keys, three trainings
    again = run_as_printed(shlex.join(run_.argv))
    assert again.text and {r["file"] for r in _runs(out)} == {r["file"] for r in runs.values()}


def test_missing_bid_table_is_one_line_and_exit_2(standin: dict, tmp_path: Path, capsys) -> None:
    argv = [*paper_standin.driver_argv(standin, "tables5_7_hyper.py"), "--out", str(tmp_path / "o")]
    argv = [a for a in argv if a not in (str(standin["--bid-mos"]), "--bid-mos")] + ["--targets", "bid"]
    assert tables5_7_hyper.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tables5_7_hyper: error: --bid-mos is required (a CSV with image and score columns)"]


# ------------------------------------------------------------------------------------------ Tables 8-10
@pytest.mark.parametrize("backbone", [b for b in BACKBONES if b not in ("resnet50", "swin_t")])
def test_each_backbone_builds_and_trains_one_step(backbone: str) -> None:
    """ViT-B/16, VGG-16 and CLIP's tower (ResNet-50 trains in every driver test, Swin-T in Tables 8-9's)."""
    if backbone == "clip_vit_b_16":
        pytest.importorskip("open_clip")
    model = build_model("none", seed=0, backbone=backbone, patch_size=32)
    optimizer = make_optimizer(model)
    before = model.head.weight.detach().clone()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([2.0, 8.0])
    model.train()
    pred, features = model(x)
    assert pred.shape == (2,) and features.shape == (2, model.head.in_features)
    loss = torch.nn.functional.l1_loss(pred, y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.head.weight)


def test_unknown_backbone_is_a_clear_error() -> None:
    from reshape.errors import BadInputError

    with pytest.raises(BadInputError, match="choose from resnet50"):
        build_model("none", backbone="alexnet")


def test_tables8_9_train_another_backbone(printed) -> None:
    """The builder's printed command: Swin-T end to end: built, trained on the baseline rows, recorded in
    the key, printed as such."""
    run_ = printed("tables8_9_backbones.py")
    text, out = run_.text, run_.out
    row = _rows(text, "Published figures")["Swin-T / Baseline"]
    assert [_bracketed(c)[1] for c in row[1:]] == [0.620, 0.620]  # LIVEC and the average over LIVEC
    (run,) = _runs(out)
    stored = json.loads((out / "results" / run["file"]).read_text())
    assert stored["settings"]["config"]["protocol"]["backbone"] == "swin_t"
    assert "override: backbones = swin_t" in text


def test_table10_changes_the_ddcup_encoder_only(printed) -> None:
    """The builder's printed command, the paper's two lines by default: ViT-B/16 (ImageNet) and CLIP embed
    the references for DDCUp (another dataset each), the trainer's config stays the same (the trainer is
    ResNet-50 here only to keep the test short)."""
    pytest.importorskip("open_clip")
    run_ = printed("table10_clip_ddcup.py")
    assert "--ddcup-encoders" not in run_.argv
    text, out = run_.text, run_.out
    runs = {r["encoder"]: json.loads((out / "results" / r["file"]).read_text()) for r in _runs(out)}
    assert sorted(runs) == ["clip:ViT-B-16", "vit_b_16"]
    clip, vit = runs["clip:ViT-B-16"]["settings"], runs["vit_b_16"]["settings"]
    assert clip["config"] == vit["config"] and clip["config"]["protocol"]["backbone"] == "resnet50"
    assert "override: backbone = resnet50" in text and "ddcup_encoders" not in text
    assert clip["recipe"]["encoder"] == "clip:ViT-B-16" and vit["recipe"]["encoder"] == "vit_b_16"
    assert vit["recipe"]["encoder_weights"] == "none" and clip["train_csv"] != vit["train_csv"]
    for tag, encoder in (("livec-clip-ViT-B-16", "clip:ViT-B-16"), ("livec-vit_b_16", "vit_b_16")):
        for name in ("train", "candidates"):  # DDCUp's embeddings of both reference sets
            meta = read_artifact_metadata(out / "reshape" / tag / "run" / "features" / f"{name}.parquet")
            assert meta["encoder"] == encoder
        card = json.loads((out / "datasets" / tag / "dataset.json").read_text("utf-8"))
        assert card["features"]["encoder"] == encoder  # the published dataset names its DDCUp encoder
    rows = _rows(text, "Published figures")
    assert _bracketed(rows["vit_b_16 / SynDR-IQA"][1])[1] == 0.729  # Table 10, ViT-B/16 (ImageNet), LIVEC
    assert _bracketed(rows["clip:ViT-B-16 / SynDR-IQA"][1])[1] == 0.739


def test_table10_vit_encoder_takes_the_vit_trainers_weights(tmp_path: Path) -> None:
    """Without --encoder-weights the vit_b_16 encoder uses the ViT-B/16 trainer's --weights file (the same
    ImageNet network, as the paper's line); another trainer, or --weights none, does not pass it on."""
    weights = tmp_path / "vit_b_16-c867db91.pth"
    base = ["--kadid-root", str(tmp_path), "--pool", str(tmp_path), "--out", str(tmp_path / "o")]
    args = table10_clip_ddcup.parse_args([*base, "--weights", str(weights)])
    assert args.ddcup_encoders == "vit_b_16,clip:ViT-B-16" and args.backbone == "vit_b_16"
    assert table10_clip_ddcup.encoder_weights("vit_b_16", args) == str(weights)
    assert table10_clip_ddcup.encoder_weights("clip:ViT-B-16", args) == "default"
    other = table10_clip_ddcup.parse_args([*base, "--weights", str(weights), "--backbone", "resnet50"])
    assert table10_clip_ddcup.encoder_weights("vit_b_16", other) == "default"
    none = table10_clip_ddcup.parse_args([*base, "--weights", "none"])
    assert {table10_clip_ddcup.encoder_weights(e, none) for e in ("vit_b_16", "clip:ViT-B-16")} == {"none"}


def test_standin_prints_commands_every_driver_parses(standin: dict, tmp_path: Path) -> None:
    modules = {"table2_syn2alg.py": table2_syn2alg, "table3_syn2syn.py": table3_syn2syn,
               "tables5_7_hyper.py": tables5_7_hyper, "tables8_9_backbones.py": tables8_9_backbones,
               "table10_clip_ddcup.py": table10_clip_ddcup}  # fmt: skip
    commands = paper_standin.commands(standin, tmp_path)
    assert len(commands) == len(modules)
    for line in commands:
        argv = shlex.split(line)
        assert argv[:2] == ["python", f"examples/paper/{Path(argv[1]).name}"]
        args = modules[Path(argv[1]).name].parse_args(argv[2:])
        assert args.kadid_root.is_dir() and args.pool.is_dir() and args.weights == "none"


def test_standin_commands_run_as_printed(printed) -> None:
    """Every command the stand-in builder prints runs exactly as printed and exits 0 with its table (the
    tests above assert what each one shows; a driver already run there is not run again). Table 10's needs
    open_clip (the `clip` extra)."""
    drivers = [
        d for d in printed.drivers if d != "table10_clip_ddcup.py" or importlib.util.find_spec("open_clip")
    ]
    assert len(drivers) >= len(printed.drivers) - 1
    for driver in drivers:
        assert printed(driver).text.startswith("protocol official:")
