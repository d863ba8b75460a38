"""The reshaping half of the ablation: every dataset is made by reshape's own CLI, never by the trainer.

Per target set T (livec, koniq, bid: the DGQA type subsets of the official code):

* ``<out>/reshape/<T>/pipeline.toml`` is run with ``reshape run`` (features -> select (DDCUp) -> distort with
  T's types at levels 1, 3, 5 -> label with T's source rows merged -> publish) into
  ``<out>/datasets/<T>-ddcup``. Rows a), c), e) and f) train on this folder's train.csv (a/c on its source
  rows only). The embeddings and the selection do not depend on T, so after the first target they are
  hard-linked into the next target's run folder, where ``reshape run``'s own fingerprint check finds them
  up to date.
* For the CD rows (b, d) the stage commands distort and label *every* candidate instead of the selection
  (``reshape distort <candidate features>``, ``reshape label`` with neighbours from the embeddings,
  ``reshape publish``) into ``<out>/datasets/<T>-cd``.

Each published folder is checked with ``reshape verify``. Every command is the reshape CLI called with the
arguments a user would type (in this process, as ``reshape run`` calls its stages); it is printed first.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reshape.errors import BadInputError, StageError
from reshape.fileio import atomic_write_text
from reshape.publish import RUN_LAYOUT

IMAGE_SUFFIXES = {".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"}
SHARED_ARTIFACTS = ("train_features", "candidate_features", "selection")


@dataclass
class ReshapeInputs:
    kadid_labels: Path  # KADID-10k dmos.csv
    kadid_images: Path  # the folder holding KADID's images (references and distorted)
    pool: Path  # candidate references (KADIS-700k ref_imgs, or the official 81-image kadid_add81/ref_imgs)
    out: Path
    weights: str = "default"
    device: str = "auto"
    workers: int = 2
    pool_size: int | None = None  # 0 = every image in the pool (sorted); None = as many as KADID references
    pool_seed: int = 0
    resize: str | None = None  # e.g. 512x384 when the pool's images are not KADID-sized
    #: KADID references (file stems) kept out of DDCUp's training references (held out for validation):
    #: they enter neither tau, nor the distance filter, nor any pseudo-label's neighbours
    exclude_refs: tuple[str, ...] = ()
    weighting: str = "closer"  # reshape label --weighting: closer = softmax(-d), official = softmax(+d)


def reshape_command(args: list[str], echo=print) -> None:
    """Run ``reshape ARGS`` exactly as typed, in this process (as ``reshape run`` invokes its stages).

    A stage's own error (a ReshapeError naming the file and cause) propagates unchanged.
    """
    import click

    from reshape.cli.main import cli

    echo("$ reshape " + shlex.join(args))
    command = cli.commands[args[0]]
    try:
        rc = command.main(args[1:], prog_name=f"reshape {args[0]}", standalone_mode=False)
    except click.ClickException as exc:
        raise BadInputError(f"`reshape {args[0]}`: {exc.format_message()}") from None
    except click.exceptions.Exit as exc:
        rc = exc.exit_code
    if isinstance(rc, int) and rc != 0:
        raise StageError(f"`reshape {shlex.join(args)}` exited with code {rc}")


def _list_images(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def write_reference_lists(inputs: ReshapeInputs) -> tuple[Path, Path]:
    """CSV lists (column ``image``) of KADID's references (from dmos.csv) and of the candidate pool.

    The pool is a seeded random sample of ``pool_size`` images when it holds more (``None``: as many as
    KADID's references, as the paper limits the candidate set to the size of the training reference set),
    else every image. Either way the list is in sorted file-name order: DDCUp's greedy removal deletes the
    earlier candidate of each closest pair, so the order decides which of two near-duplicates survives.
    """
    import pandas as pd

    table = pd.read_csv(inputs.kadid_labels, dtype=str)
    if "ref_img" not in table.columns:
        raise BadInputError(f"{inputs.kadid_labels}: not a KADID-10k dmos.csv (no ref_img column)")
    excluded = set(inputs.exclude_refs)
    refs = sorted(r for r in set(table["ref_img"]) if Path(r).stem not in excluded)
    missing = [r for r in refs if not (inputs.kadid_images / r).is_file()]
    if missing:
        raise BadInputError(
            f"{inputs.kadid_images}: reference {missing[0]!r} of {inputs.kadid_labels} is missing"
        )
    pool = _list_images(inputs.pool)
    if len(pool) < 2:
        raise BadInputError(f"{inputs.pool}: the candidate pool needs at least 2 images, found {len(pool)}")
    size = len(refs) if inputs.pool_size is None else inputs.pool_size
    if 0 < size < len(pool):
        chosen = np.random.default_rng(inputs.pool_seed).choice(len(pool), size, replace=False)
        pool = [pool[i] for i in sorted(chosen)]
    folder = inputs.out / "reshape"
    folder.mkdir(parents=True, exist_ok=True)
    refs_csv, pool_csv = folder / "kadid_refs.csv", folder / "pool.csv"
    for path, names in ((refs_csv, refs), (pool_csv, pool)):
        text = "image\n" + "".join(f"{n}\n" for n in names)
        if not path.is_file() or path.read_text("utf-8") != text:  # unchanged lists keep `run` up to date
            atomic_write_text(path, text)
    return refs_csv, pool_csv


def _q(value: object) -> str:
    return json.dumps(str(value))  # a TOML basic string


def pipeline_toml(inputs: ReshapeInputs, target: str, refs_csv: Path, pool_csv: Path, dataset: Path) -> str:
    resize = f"resize = {_q(inputs.resize)}\n" if inputs.resize else ""
    exclude = f"exclude-refs = {_q(','.join(inputs.exclude_refs))}\n" if inputs.exclude_refs else ""
    note = f"Built by examples/syn2real for the Table 4 ablation, target {target} (DGQA type subset)."
    return f"""# Written by examples/syn2real/syn2real.py; `reshape run` on this file rebuilds {dataset.name}.
[inputs]
train_refs = {_q(refs_csv)}
source_labels = {_q(inputs.kadid_labels)}
source_root = {_q(inputs.kadid_images)}
candidates = {_q(pool_csv)}
out = "run"
dataset = {_q(dataset)}
source_name = "KADID-10k"

[features]
weights = {_q(inputs.weights)}
device = {_q(inputs.device)}
workers = {inputs.workers}

[features_train]
image-root = {_q(inputs.kadid_images)}

[features_candidates]
image-root = {_q(inputs.pool)}

[distort]
preset = {_q(target)}
levels = "1,3,5"
seed = 0
workers = {inputs.workers}
{resize}
[label]
preset = {_q(target)}
weighting = {_q(inputs.weighting)}
{exclude}
[publish]
# publish --from-run takes [inputs] candidates as the candidates' root, which is wrong for a CSV list
candidate-root = {_q(inputs.pool)}
name = {_q(dataset.name)}
note = [{_q(note)}]
"""


def _share_artifacts(first_run: Path, run: Path) -> None:
    """Hard-link the target-independent artifacts (embeddings, selection) of the first target's run."""
    for key in SHARED_ARTIFACTS:
        src, dst = first_run / RUN_LAYOUT[key], run / RUN_LAYOUT[key]
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                dst.write_bytes(src.read_bytes())


def build_ddcup(
    inputs: ReshapeInputs, targets: list[str], lists: tuple[Path, Path], echo=print
) -> dict[str, Path]:
    """One `reshape run` per target; returns target -> published dataset folder."""
    datasets = {}
    first_run: Path | None = None
    for target in targets:
        folder = inputs.out / "reshape" / target
        folder.mkdir(parents=True, exist_ok=True)
        dataset = inputs.out / "datasets" / f"{target}-ddcup"
        config = folder / "pipeline.toml"
        text = pipeline_toml(inputs, target, *lists, dataset)
        if not config.is_file() or config.read_text("utf-8") != text:
            atomic_write_text(config, text)
        if first_run is not None:
            _share_artifacts(first_run, folder / "run")
        reshape_command(["run", str(config)], echo)
        reshape_command(["verify", str(dataset)], echo)
        first_run = first_run or folder / "run"
        datasets[target] = dataset
    return datasets


def build_cd(inputs: ReshapeInputs, targets: list[str], echo=print) -> dict[str, Path]:
    """CD: every candidate distorted and pseudo-labelled (no DDCUp selection), one dataset per target."""
    datasets = {}
    for target in targets:
        run = inputs.out / "reshape" / target / "run"
        feats = {k: str(run / RUN_LAYOUT[k]) for k in ("train_features", "candidate_features")}
        work = inputs.out / "reshape" / target / "cd"
        manifest = work / "distorted" / "manifest.csv"
        dataset = inputs.out / "datasets" / f"{target}-cd"
        distort = ["distort", feats["candidate_features"], "--out", str(work / "distorted")]
        distort += ["--manifest", str(manifest), "--preset", target, "--levels", "1,3,5", "--seed", "0"]
        distort += ["--workers", str(inputs.workers)] + (["--resize", inputs.resize] if inputs.resize else [])
        reshape_command(distort, echo)
        label = ["label", "--source-labels", str(inputs.kadid_labels), "--distorted", str(manifest)]
        label += [
            "--out",
            str(work / "labels.csv"),
            "--merge-source",
            str(work / "train.csv"),
            "--preset",
            target,
            "--weighting",
            inputs.weighting,
        ]
        if inputs.exclude_refs:
            label += ["--exclude-refs", ",".join(inputs.exclude_refs)]
        label += [
            "--train-features",
            feats["train_features"],
            "--candidate-features",
            feats["candidate_features"],
        ]
        reshape_command(label, echo)
        publish = [
            "publish",
            str(dataset),
            "--train-csv",
            str(work / "train.csv"),
            "--labels",
            str(work / "labels.csv"),
        ]
        publish += ["--manifest", str(manifest), "--images-root", str(work / "distorted")]
        publish += [
            "--train-features",
            feats["train_features"],
            "--candidate-features",
            feats["candidate_features"],
        ]
        publish += ["--source-root", str(inputs.kadid_images), "--candidate-root", str(inputs.pool)]
        publish += ["--source-name", "KADID-10k", "--name", dataset.name]
        publish += [
            "--note",
            f"CD row of the Table 4 ablation: every candidate, target {target}, no selection.",
        ]
        reshape_command(publish, echo)
        reshape_command(["verify", str(dataset)], echo)
        datasets[target] = dataset
    return datasets
