"""The pyiqa hand-off of a published dataset: ``pyiqa/train.yml``, ``pyiqa/test.yml`` and their launchers.

Every published folder holds a complete pyiqa (0.1.16) training options file whose train set is the folder
itself, as pyiqa's ``GeneralNRDataset`` over ``meta_info.csv``, and whose network, loss and optimiser follow
the paper's protocol (:data:`reshape.protocol.PAPER_PROTOCOL`) as far as pyiqa's options can say it.

**Paths.** pyiqa joins ``dataroot_target`` and the image paths of ``meta_info_file`` and opens them relative
to the *working directory* (``osp.join`` / ``pd.read_csv``, no resolution against the options file). So the
file stores paths relative to itself (``..`` and ``../meta_info.csv``) and the folder ships a ten-line
launcher, ``pyiqa/train.py``, that parses the options with pyiqa's own ``parse_options``, makes every
relative ``dataroot_target`` / ``meta_info_file`` absolute against the options file's folder and hands the
result to pyiqa's own ``train_pipeline``. It runs from any working directory, and pyiqa's ``experiments/``
folder is created in the working directory (as pyiqa's own ``train.py`` does in its checkout), never inside
the dataset::

    python /data/my-dataset/pyiqa/train.py -opt /data/my-dataset/pyiqa/train.yml

Plain pyiqa works too when started from inside ``pyiqa/`` (then the relative paths are right as written).

**Model.** pyiqa's ``NIMA`` architecture with ``base_model_name: resnet50.tv_in1k`` and ``num_classes: 1``
is the paper's network: timm's copy of torchvision's ImageNet ResNet-50 (``IMAGENET1K_V1``), global average
pooling, one ``Linear(2048, 1)``. The head is NIMA's ``classifier`` module, so pyiqa's per-module
``lr_classifier`` gives it the paper's 10x learning rate. What pyiqa cannot express is written as a comment
in the file: NIMA evaluates one 224 centre crop of the image resized to 224 on its short side, where the
paper averages five random 224 patches of the unresized image.

**OpenCV.** pyiqa depends on ``opencv-python`` while reshape uses ``opencv-python-headless``; both install
the same ``cv2`` package folder, so uninstalling either one breaks ``import cv2`` for the other. Keep both
installed (they are the same OpenCV build), or after installing pyiqa run
``pip install --force-reinstall --no-deps opencv-python-headless`` so the headless files are the ones on
disk; never ``pip uninstall`` one of them alone.

**Model choice never sees a test set.** pyiqa keeps ``net_best`` by the validation ``key_metric``, so the
validation set chooses the model. ``train.yml`` validates on a split of the *training references*:
``pyiqa/meta_info_split.csv`` lists every training row with a ``reshape_split`` column, ``val`` for every
image of the references :func:`reshape.protocol.validation_references` holds out (10 %, at least one) and
``train`` for the rest, so the two share no reference; pyiqa's own ``split_index`` option selects the rows
of each phase. A dataset of a single reference has no validation split (the file says so).

**Testing.** The paper's authentic test sets as pyiqa names them (``livec``, ``koniq10k``, ``bid``) go into
a separate ``pyiqa/test.yml`` (``test_<name>`` sections), scored after training with pyiqa's own test
pipeline through ``pyiqa/test.py`` on ``net_best`` of the training run. They are written only when their
image folder is given (``--val-root NAME=DIR`` or the environment variable ``RESHAPE_VAL_ROOT_<NAME>``);
the meta-info CSV comes from ``--val-meta NAME=CSV`` (``RESHAPE_VAL_META_<NAME>``) or is found where
pyiqa's own dataset download puts it (``<ancestor of DIR>/meta_info/meta_info_<Class>.csv``). The option
keeps its historical name; the sets it names never validate anything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reshape.errors import BadInputError
from reshape.protocol import IMAGENET_MEAN, PAPER_PROTOCOL, TrainingProtocol, validation_references

OPTIONS_FILE = "pyiqa/train.yml"
LAUNCHER_FILE = "pyiqa/train.py"
SPLIT_FILE = "pyiqa/meta_info_split.csv"
TEST_OPTIONS_FILE = "pyiqa/test.yml"
TEST_LAUNCHER_FILE = "pyiqa/test.py"
SPLIT_COLUMN = "reshape_split"


@dataclass(frozen=True)
class ValSet:
    """One authentic test set as pyiqa 0.1.16 names and loads it."""

    key: str
    name: str
    dataset_type: str
    meta_name: str


#: The paper's authentic test sets (Table 4 order), with pyiqa's dataset classes and meta-info names.
VAL_SETS = {
    "livec": ValSet("livec", "LIVEC", "LIVEChallengeDataset", "meta_info_LIVEChallengeDataset.csv"),
    "koniq10k": ValSet("koniq10k", "KonIQ10k", "GeneralNRDataset", "meta_info_KonIQ10kDataset.csv"),
    "bid": ValSet("bid", "BID", "GeneralNRDataset", "meta_info_BIDDataset.csv"),
}


@dataclass(frozen=True)
class ValRoot:
    """Where one test set lives on this machine: its image folder and pyiqa meta-info CSV (absolute)."""

    key: str
    images: Path
    meta_info: Path


def _split_spec(spec: str, option: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    key = key.strip().lower()
    if not sep or not value:
        raise BadInputError(f"{option} {spec!r}: expected NAME=PATH with NAME one of {', '.join(VAL_SETS)}")
    if key not in VAL_SETS:
        raise BadInputError(f"{option} {spec!r}: unknown test set {key!r} (known: {', '.join(VAL_SETS)})")
    return key, value


def _find_meta(key: str, images: Path) -> Path:
    """pyiqa's download layout: ``datasets/meta_info/<meta>`` beside ``datasets/LIVEC`` (or two levels up
    for ``datasets/koniq10k/512x384``)."""
    wanted = VAL_SETS[key].meta_name
    for folder in [images, *list(images.parents)[:3]]:
        for candidate in (folder / wanted, folder / "meta_info" / wanted):
            if candidate.is_file():
                return candidate
    raise BadInputError(
        f"{images}: no {wanted} found beside or above it (pyiqa's layout); give --val-meta {key}=CSV"
    )


def parse_val_roots(
    roots: Iterable[str] = (), metas: Iterable[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, ValRoot]:
    """Validation sets from ``NAME=PATH`` options, else ``RESHAPE_VAL_ROOT_<NAME>`` /
    ``RESHAPE_VAL_META_<NAME>`` environment variables; only the sets with an image folder are returned."""
    environ = os.environ if environ is None else environ
    folders = dict(_split_spec(s, "--val-root") for s in roots)
    meta_files = dict(_split_spec(s, "--val-meta") for s in metas)
    for key in VAL_SETS:
        env_root = environ.get(f"RESHAPE_VAL_ROOT_{key.upper()}")
        env_meta = environ.get(f"RESHAPE_VAL_META_{key.upper()}")
        if key not in folders and env_root:
            folders[key] = env_root
        if key not in meta_files and env_meta:
            meta_files[key] = env_meta
    stray = sorted(set(meta_files) - set(folders))
    if stray:
        raise BadInputError(
            f"--val-meta {stray[0]}=...: give its image folder with --val-root {stray[0]}=DIR"
        )
    out = {}
    for key in VAL_SETS:  # fixed order, whatever order the options came in
        if key not in folders:
            continue
        images = Path(folders[key]).expanduser().resolve()
        if not images.is_dir():
            raise BadInputError(f"{images}: --val-root {key}: not a folder")
        meta = Path(meta_files[key]).expanduser().resolve() if key in meta_files else _find_meta(key, images)
        if not meta.is_file():
            raise BadInputError(f"{meta}: --val-meta {key}: no such file")
        out[key] = ValRoot(key, images, meta)
    return out


# ----------------------------------------------------------------------------------------------- rendering
def _q(text: str | os.PathLike[str]) -> str:
    """A YAML double-quoted scalar (JSON's string syntax is valid YAML)."""
    import json

    return json.dumps(os.fspath(text))


def _f(value: float) -> str:
    """A float PyYAML reads as a float (``2e-05`` alone would load as a string in YAML 1.1)."""
    return f"!!float {value!r}"


def _train_section(name: str, protocol: TrainingProtocol, split: bool) -> list[str]:
    meta = (
        [
            f'    meta_info_file: "{Path(SPLIT_FILE).name}"',
            f"    split_index: {SPLIT_COLUMN}  # the 'train' rows",
        ]
        if split
        else ['    meta_info_file: "../meta_info.csv"']
    )
    return [
        "datasets:",
        "  train:",
        f"    name: {_q(name)}",
        "    type: GeneralNRDataset",
        "    # Relative to this file; pyiqa itself opens them relative to the working directory, which",
        "    # pyiqa/train.py (or starting pyiqa from inside this folder) takes care of.",
        '    dataroot_target: ".."',
        *meta,
        "    augment:",
        f"      random_crop: {protocol.patch_size}  # one random patch per image and epoch",
        f"      hflip: {'true' if protocol.hflip else 'false'}",
        "    img_range: 1",
        "    use_shuffle: true",
        "    num_worker_per_gpu: 4",
        f"    batch_size_per_gpu: {protocol.batch_size}",
        "    dataset_enlarge_ratio: 1",
        "    prefetch_mode: ~",
    ]


def _val_section(name: str, split: bool) -> list[str]:
    """Validation (model choice) on the held-out training references, never on a test set."""
    if not split:
        return ["  # One training reference only: no validation split; net_latest is the model."]
    return [
        "  # Model choice (net_best, key_metric srcc) on references held out of the TRAINING data; the",
        "  # authentic test sets are in test.yml and never choose anything.",
        "  val:",
        f"    name: {_q(name + ' validation references')}",
        "    type: GeneralNRDataset",
        '    dataroot_target: ".."',
        f'    meta_info_file: "{Path(SPLIT_FILE).name}"',
        f"    split_index: {SPLIT_COLUMN}  # the 'val' rows",
        "    batch_size_per_gpu: 1",
        "    num_worker_per_gpu: 2",
    ]


def _test_sections(val_roots: Mapping[str, ValRoot]) -> list[str]:
    lines = []
    for key, root in val_roots.items():
        spec = VAL_SETS[key]
        lines += [
            f"  test_{key}:",
            f"    name: {spec.name}",
            f"    type: {spec.dataset_type}",
            f"    dataroot_target: {_q(root.images)}",
            f"    meta_info_file: {_q(root.meta_info)}",
            "    batch_size_per_gpu: 1",
            "    num_worker_per_gpu: 2",
        ]
    return lines


def _network_section(protocol: TrainingProtocol) -> list[str]:
    return [
        "# The paper's network: ImageNet ResNet-50 (torchvision IMAGENET1K_V1 weights, here timm's copy of",
        "# them), global average pooling and one Linear(2048, 1) head: pyiqa's NIMA with a single output.",
        f"# Inputs are normalised with the ImageNet mean {list(IMAGENET_MEAN)} and std, as in the paper.",
        "network:",
        "  type: NIMA",
        f"  base_model_name: {protocol.backbone}.tv_in1k",
        "  num_classes: 1",
        "  pretrained: false  # no NIMA (AVA) weights: only the ImageNet backbone, as in the paper",
        f"# Testing: the paper averages {protocol.test_patches} random {protocol.patch_size} patches of each test "
        "image; pyiqa's NIMA",
        f"# resizes the image to {protocol.patch_size} on its short side and scores one centre crop "
        "(not expressible here).",
    ]


def _model_sections(protocol: TrainingProtocol, lr_label: str) -> list[str]:
    head_lr = protocol.lr * protocol.head_lr_ratio
    return [
        *_network_section(protocol),
        "",
        "path:",
        "  pretrain_network: ~",
        "  strict_load: true",
        "  resume_state: ~",
        "",
        "train:",
        "  optim:",
        f"    type: {protocol.optimizer.capitalize()}",
        f"    lr: {_f(protocol.lr)}  # backbone",
        f"    weight_decay: {_f(protocol.weight_decay)}",
        f"    lr_classifier: {_f(head_lr)}  # the head learns {protocol.head_lr_ratio}x faster",
        f"    weight_decay_classifier: {_f(protocol.weight_decay)}",
        "  scheduler:  # constant learning rate",
        "    type: MultiStepRestartLR",
        "    milestones: []",
        "    gamma: 1",
        f"  total_epoch: {protocol.epochs}",
        "  warmup_iter: -1",
        "  mos_loss_opt:",
        f"    type: {protocol.loss.upper()}Loss",
        f"    loss_weight: {_f(1.0)}",
        f"  # Labels are used as published ({lr_label}); the paper trains on labels scaled to",
        f"  # {protocol.label_scale[0]:g}..{protocol.label_scale[1]:g} (`reshape label --scale 0-10`).",
    ]


def split_table(
    paths: Sequence[str], scores: Sequence[float], references: Sequence[str], seed: int = 0
) -> str:
    """``pyiqa/meta_info_split.csv``: path, score and ``reshape_split`` (train|val, by reference)."""
    import csv
    import io

    held_out = validation_references(references, seed=seed) if len(set(references)) > 1 else set()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "score", SPLIT_COLUMN])
    for path, score, ref in zip(paths, scores, references):
        writer.writerow([path, repr(float(score)), "val" if ref in held_out else "train"])
    return buffer.getvalue()


def pyiqa_file_names(val_roots: Mapping[str, ValRoot] | None = None) -> list[str]:
    """The files of the pyiqa hand-off a publish writes (test options only with test sets)."""
    test = [TEST_OPTIONS_FILE, TEST_LAUNCHER_FILE] if val_roots else []
    return [OPTIONS_FILE, LAUNCHER_FILE, SPLIT_FILE, *test]


def pyiqa_files(
    name: str,
    published: Any,
    label_note: str,
    val_roots: Mapping[str, ValRoot] | None = None,
    protocol: TrainingProtocol = PAPER_PROTOCOL,
) -> dict[str, str]:
    """Relative path -> text of every pyiqa file for the training table ``published`` (``dist_img``,
    ``dmos``, ``ref_img``)."""
    refs = [str(r) for r in published["ref_img"]]
    split = split_table(list(published["dist_img"]), list(published["dmos"]), refs, seed=protocol.seed)
    n_train = sum(line.endswith(",train") for line in split.splitlines())
    files = {
        OPTIONS_FILE: render_options(name, n_train, label_note, protocol, split=len(set(refs)) > 1),
        LAUNCHER_FILE: LAUNCHER_TEXT,
        SPLIT_FILE: split,
    }
    if val_roots:
        files[TEST_OPTIONS_FILE] = render_test_options(name, val_roots, protocol)
        files[TEST_LAUNCHER_FILE] = TEST_LAUNCHER_TEXT
    return files


def render_test_options(
    name: str, val_roots: Mapping[str, ValRoot], protocol: TrainingProtocol = PAPER_PROTOCOL
) -> str:
    """``pyiqa/test.yml``: the authentic test sets, scored by pyiqa's test pipeline on ``net_best`` of the
    run that ``train.yml`` starts (pyiqa writes experiments/ in the working directory)."""
    lines = [
        f"# pyiqa (0.1.16) test options for {name}, written by reshape publish. After training with train.yml,",
        "# run from the same working directory:",
        "#   python <this folder>/test.py -opt <this folder>/test.yml",
        f"name: {_q(name + '_resnet50_test')}",
        "model_type: GeneralIQAModel",
        "num_gpu: auto",
        f"manual_seed: {protocol.seed}",
        "",
        "datasets:",
        *_test_sections(val_roots),
        "",
        *_network_section(protocol),
        "",
        "path:",
        "  # net_best of train.yml's run, relative to the working directory (where pyiqa made experiments/);",
        "  # it was chosen on the held-out training references, never on these test sets.",
        f"  pretrain_network: {_q(f'experiments/{name}_resnet50/models/net_best.pth')}",
        "  strict_load: true",
        "",
        "train: {}  # nothing is trained; pyiqa 0.1.16's feed_data reads this section even when testing",
        "",
        "val:",
        "  save_img: false",
        "  pbar: false",
        *_metric_lines(),
        "",
    ]
    return "\n".join(lines)


def _metric_lines() -> list[str]:
    return [
        "  metrics:",
        "    srcc:",
        "      type: calculate_srcc",
        "    plcc:",
        "      type: calculate_plcc",
    ]


def render_options(
    name: str,
    rows: int,
    label_note: str,
    protocol: TrainingProtocol = PAPER_PROTOCOL,
    *,
    split: bool = True,
) -> str:
    """The text of ``pyiqa/train.yml`` for a published dataset of ``rows`` training rows (after the
    validation references are held out when ``split``)."""
    per_epoch = max(1, math.floor(rows / protocol.batch_size))  # pyiqa's train loader drops the last batch
    lines = [
        f"# pyiqa (0.1.16) training options for {name}, written by reshape publish. Run it from anywhere with",
        "#   python <this folder>/train.py -opt <this folder>/train.yml",
        "# (paths below are relative to this file). Protocol: reshape.protocol.PAPER_PROTOCOL (SynDR-IQA).",
        f"name: {_q(name + '_resnet50')}",
        "model_type: GeneralIQAModel",
        "num_gpu: auto",
        f"manual_seed: {protocol.seed}",
        "",
        *_train_section(name, protocol, split),
        *_val_section(name, split),
        "",
        *_model_sections(protocol, label_note),
        "",
        "val:",
        f"  val_freq: {per_epoch}  # once per epoch",
        "  save_img: false",
        "  pbar: false",
        *(["  key_metric: srcc  # on the held-out training references"] if split else []),
        *_metric_lines(),
        "",
        "logger:",
        "  print_freq: 10",
        f"  save_latest_freq: {per_epoch}",
        f"  save_checkpoint_freq: {_f(9e9)}",
        "  use_tb_logger: false",
        "  wandb:",
        "    project: ~",
        "    resume_id: ~",
        "",
        "dist_params:",
        "  backend: nccl",
        "  port: 29500",
        "",
    ]
    return "\n".join(lines)


LAUNCHER_TEXT = '''"""Train pyiqa on this dataset from any working directory (written by reshape publish).

    python <dataset>/pyiqa/train.py -opt <dataset>/pyiqa/train.yml [pyiqa's train options]

pyiqa opens dataroot_target / meta_info_file relative to the working directory; this makes the relative
ones absolute against the options file's folder, then runs pyiqa's own train_pipeline. experiments/ is
created in the working directory.
"""

import os
import sys

try:
    from pyiqa.train import train_pipeline
    from pyiqa.utils.options import parse_options
except ImportError:
    print("pyiqa/train.py: error: pyiqa is not installed: pip install 'reshape-iqa[train]'", file=sys.stderr)
    sys.exit(2)

if __name__ == "__main__":
    root = os.getcwd()
    opt, args = parse_options(root, is_train=True)
    base = os.path.dirname(os.path.abspath(args.opt))
    for dataset in opt["datasets"].values():
        for key in ("dataroot_target", "meta_info_file"):
            value = dataset.get(key)
            if value and not os.path.isabs(os.path.expanduser(value)):
                dataset[key] = os.path.normpath(os.path.join(base, value))
    try:
        train_pipeline(root, opt, args)
    except AttributeError as exc:
        # pyiqa 0.1.16 ends by returning model.best_metric_results, which only exists once a validation set
        # was scored; without val_* datasets training and saving are complete when this is raised.
        if "best_metric_results" not in str(exc):
            raise
'''


TEST_LAUNCHER_TEXT = '''"""Score the authentic test sets with pyiqa's own test pipeline (written by reshape publish).

    python <dataset>/pyiqa/test.py -opt <dataset>/pyiqa/test.yml

Run it from the working directory of the training run: pretrain_network (experiments/...) is relative to it.
Relative dataset paths are made absolute against the options file's folder, as pyiqa/train.py does.
"""

import os
import sys

try:
    import pyiqa.test
    from pyiqa.test import test_pipeline
    from pyiqa.utils import options
except ImportError:
    print("pyiqa/test.py: error: pyiqa is not installed: pip install 'reshape-iqa[train]'", file=sys.stderr)
    sys.exit(2)

if __name__ == "__main__":
    parse = options.parse_options

    def parse_relative_to_options(root, is_train=True):
        opt, args = parse(root, is_train=is_train)
        base = os.path.dirname(os.path.abspath(args.opt))
        for dataset in opt["datasets"].values():
            for key in ("dataroot_target", "meta_info_file"):
                value = dataset.get(key)
                if value and not os.path.isabs(os.path.expanduser(value)):
                    dataset[key] = os.path.normpath(os.path.join(base, value))
        return opt, args

    build = pyiqa.test.build_model

    def build_for_testing(opt):
        # pyiqa 0.1.16 scores a test set with the training-time validation, which copies the scored net into
        # net_best and saves it; net_best exists only when training. Score the loaded net, save nothing.
        model = build(opt)
        model.net_best = model.net
        model.save_network = lambda *args, **kwargs: None
        return model

    pyiqa.test.parse_options = parse_relative_to_options
    pyiqa.test.build_model = build_for_testing
    test_pipeline(os.getcwd())
'''
