"""`reshape publish`: assemble the reshaped training set as a static, self-describing folder.

Layout of a published dataset (every path inside a CSV is relative to the dataset root)::

    README.md            dataset card (what was done, parameters, counts, plots, licence, how to load)
    dataset.json         machine-readable card (schema data_manifests/dataset_card.schema.json)
    croissant.json       MLCommons Croissant 1.1 + RAI metadata (reshape.croissant), for mlcroissant & co.
    SHA256SUMS           sha256sum format, every file in the folder except itself
    SOURCE_SHA256SUMS    only when source images are referenced: checksums of source/<path>
    train.csv            KADID layout + origin: source rows and pseudo-labelled rows
    meta_info.csv        pyiqa general NR meta-info (path, score)
    labels.csv           the pseudo-labelled rows with their provenance (neighbours, weights, ...)
    plots/               selection_map.png, label_histogram.png
    provenance/          what the report needs beyond the tables (selection map, neighbour labels, DRCDown
                         clusters; reshape.report_data)
    report/              static HTML report (reshape.report), rebuilt by `reshape report`
    images/              new distorted images (+ their new references in images/refs/)
    images/metadata.csv  Hugging Face imagefolder metadata (file_name relative to images/)
    images/source/       source images, with --copy-source
    pyiqa/train.yml      pyiqa training options, paper protocol (reshape.pyiqa_options)
    pyiqa/train.py       launcher: pyiqa's own training on this folder from any working directory
    pyiqa/meta_info_split.csv  train/val split by training reference (pyiqa's model choice)
    pyiqa/test.yml, test.py    only with --val-root: the authentic test sets, pyiqa's test pipeline
    source/              mount point of the source dataset when referenced (not shipped)

README.md starts with a Hugging Face dataset-card YAML block, so ``datasets.load_dataset(<folder>)`` loads it
(reshape.publish_card); ``--push-to-hub`` uploads it as a dataset repository (reshape.hub).

Files are safe: images are copied (hard links only with ``link=True``: editing such a published file then
edits the run's artifact too), every file and folder gets the umask's mode, and a re-publish replaces or
deletes only the files its SHA256SUMS recorded as publish's own. Files a user added stay; a foreign file at a
name publish writes is refused unless ``overwrite``; a missing image of an earlier publish is restored.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from reshape import __version__
from reshape.artifacts import (
    now_iso,
    read_artifact_metadata,
    read_csv,
    write_csv,
    write_json,
)
from reshape.errors import BadInputError, ReshapeError, StageError
from reshape.fileio import (
    atomic_open,
    atomic_path,
    atomic_write_text,
    check_relative,
    remove_recorded,
    remove_stale_temps,
    resolve_under_root,
    sha256_file,
)
from reshape.layout import (
    CARD,
    COPIED_SOURCE_DIR,
    CROISSANT_JSON,
    DATASET_JSON,
    HF_METADATA,
    HISTOGRAM_PNG,
    IMAGES_DIR,
    LABELS_CSV,
    META_CSV,
    NEW_DIR,
    PENDING,
    REFERENCED_SOURCE_DIR,
    REFS_DIR,
    SELECTION_PNG,
    SOURCE_SUMS,
    SUMS,
    TRAIN_CSV,
    sha256sums_text,
)
from reshape.outputs import (
    check_inputs_not_outputs,
    check_writable,
    created_folders,
    locked_outputs,
)
from reshape.publish_card import render_card
from reshape.publish_derive import (  # noqa: F401 - count_table: importable from here
    count_table,
    csv_text,
    hub_metadata_text,
    label_note,
    meta_table,
    published_table,
)
from reshape.publish_plots import plot_histogram, plot_selection
from reshape.publish_txn import (  # noqa: F401 - Record, read_record, check_collisions: importable from here
    Record,
    Transaction,
    apply_edit_rule,
    check_collisions,
    check_image,
    check_report_output,
    edited_outputs,
    read_record,
)
from reshape.pyiqa_options import (
    LAUNCHER_FILE,
    OPTIONS_FILE,
    ValRoot,
    parse_val_roots,
    pyiqa_file_names,
    pyiqa_files,
)
from reshape.report_data import Provenance
from reshape.steps import announce

log = logging.getLogger("reshape.publish")

#: Standard artifact names inside a `reshape run` output root (also what `--from-run` reads).
RUN_LAYOUT = {
    "train_features": "features/train.parquet",
    "candidate_features": "features/candidates.parquet",
    "sample_features": "features/samples.parquet",
    "selection": "selection.parquet",
    "images_root": "distorted",
    "manifest": "distorted/manifest.csv",
    "labels": "labels.csv",
    "train_csv": "train.csv",
    "pruned_csv": "pruned.csv",
    "prune_indices": "prune_indices.csv",
    "run_json": "run.json",
}

LICENCE_NOTES = (
    "Source images and labels come from the source dataset named above; the new references come from the "
    "candidate pool. KADID-10k and KADIS-700k (Lin, Hosu and Saupe, University of Konstanz, QoMEX 2019) are "
    "distributed by their authors for research use; read their terms at http://database.mmsp-kn.de before "
    "redistributing. Distorted images are derivatives of their reference images and inherit those terms. "
    "reshape itself (MIT) ships no dataset images."
)


@dataclass
class PublishInputs:
    """Where the artifacts to publish live. Only ``train_csv`` or ``labels`` is required."""

    train_csv: Path | None = None
    labels: Path | None = None
    manifest: Path | None = None
    images_root: Path | None = None
    selection: Path | None = None
    source_root: Path | None = None
    candidate_root: Path | None = None
    train_features: Path | None = None
    candidate_features: Path | None = None
    prune_indices: Path | None = None
    source_name: str = "KADID-10k"
    notes: list[str] = field(default_factory=list)
    extra_parameters: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_run(cls, run_root: str | os.PathLike[str]) -> PublishInputs:
        """Inputs from a `reshape run` output root (standard artifact names, roots from run.json)."""
        root = Path(run_root)
        if not root.is_dir():
            raise BadInputError(f"{root}: --from-run must be a `reshape run` output folder")
        info: dict[str, Any] = {}
        run_json = root / RUN_LAYOUT["run_json"]
        if run_json.is_file():
            try:
                info = json.loads(run_json.read_text("utf-8"))
            except json.JSONDecodeError as exc:
                raise BadInputError(f"{run_json}: invalid JSON ({exc})") from None

        def opt(key: str) -> Path | None:
            p = root / RUN_LAYOUT[key]
            return p if p.exists() else None

        pruned = opt("pruned_csv")
        inputs = info.get("inputs", {})
        return cls(
            train_csv=pruned or opt("train_csv"),
            labels=opt("labels"),
            manifest=opt("manifest"),
            images_root=root / RUN_LAYOUT["images_root"],
            selection=opt("selection"),
            # run.json records a path inside the run's project relative to the run folder (a copy
            # publishes its own data); joined onto it, an absolute path stays as it is
            source_root=root / inputs["source_root"] if inputs.get("source_root") else None,
            # a CSV list of candidates is no root: the selection's image_root metadata is used instead
            candidate_root=root / inputs["candidates"]
            if inputs.get("candidates") and (root / inputs["candidates"]).is_dir()
            else None,
            train_features=opt("train_features"),
            candidate_features=opt("candidate_features"),
            prune_indices=opt("prune_indices") if pruned else None,
            source_name=str(inputs.get("source_name", "KADID-10k")),
            extra_parameters={"run": info.get("stages", {})},
        )


# ----------------------------------------------------------------------------------------------- core
def label_range(train: pd.DataFrame, scale: str | None) -> tuple[float, float]:
    """The documented range of the label column, which `reshape verify` enforces.

    0-10 when the labels were rescaled that way, KADID's DMOS scale 1..5 when every label lies in it, else
    the observed range.
    """
    if scale == "0-10":
        return 0.0, 10.0
    dmos = train["dmos"].to_numpy(dtype=float)
    if len(dmos) and dmos.min() >= 1.0 and dmos.max() <= 5.0:
        return 1.0, 5.0
    return (float(dmos.min()), float(dmos.max())) if len(dmos) else (0.0, 0.0)


def plan_paths(train: pd.DataFrame, *, copy_source: bool) -> pd.DataFrame:
    """Add the published (dataset-relative) paths of each row's image and reference.

    Pseudo rows go under images/ (references under images/refs/); source rows under images/source/ when
    copied, else under the source/ mount point.
    """
    out = train.copy()
    src_dir = COPIED_SOURCE_DIR if copy_source else REFERENCED_SOURCE_DIR
    pseudo = out["origin"] == "pseudo"
    out["orig_dist_img"] = out["dist_img"]
    out["orig_ref_img"] = out["ref_img"]
    out["dist_img"] = [
        f"{NEW_DIR if p else src_dir}/{d}" for p, d in zip(pseudo, out["orig_dist_img"], strict=True)
    ]
    out["ref_img"] = [
        f"{REFS_DIR if p else src_dir}/{r}" for p, r in zip(pseudo, out["orig_ref_img"], strict=True)
    ]
    return out


def _software_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "reshape": __version__}
    for dist in (
        "numpy",
        "pandas",
        "pyarrow",
        "torch",
        "torchvision",
        "faiss-cpu",
        "pillow",
        "opencv-python-headless",
        "scikit-image",
        "scipy",
        "matplotlib",
    ):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions[dist] = importlib_metadata.version(dist)
    return versions


# ----------------------------------------------------------------------------------------------- inputs
def _load_train(inputs: PublishInputs) -> tuple[pd.DataFrame, dict[str, Any]]:
    if inputs.train_csv is not None:
        train = read_csv(inputs.train_csv, "train")
        meta = read_artifact_metadata(inputs.train_csv)
    elif inputs.labels is not None:
        labels = read_csv(inputs.labels, "labels")
        train = labels[["dist_img", "ref_img", "dmos", "var", "dist_type", "dist_level"]].copy()
        train["origin"] = "pseudo"
        meta = read_artifact_metadata(inputs.labels)
    else:
        raise BadInputError("publish needs --train-csv or --labels (or --from-run)")
    if train.empty:
        raise BadInputError(f"{inputs.train_csv or inputs.labels}: no rows to publish")
    bad_origin = ~train["origin"].isin(["source", "pseudo"])
    if bad_origin.any():
        i = int(np.flatnonzero(bad_origin.to_numpy())[0])
        raise BadInputError(
            f"{inputs.train_csv}, line {i + 2}: origin {train['origin'].iloc[i]!r} is not source/pseudo"
        )
    for col in ("dist_img", "ref_img"):
        train[col] = [
            check_relative(str(v), source=inputs.train_csv or inputs.labels, row=i + 2)
            for i, v in enumerate(train[col])
        ]
    dup = train["dist_img"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise BadInputError(
            f"{inputs.train_csv}, line {i + 2}: duplicate image {train['dist_img'].iloc[i]!r}"
        )
    return train.reset_index(drop=True), meta


def _image_roots(inputs: PublishInputs) -> list[Path]:
    """The folders the features artifacts were computed from (the training references, the candidates):
    inputs of the next run, so a published folder must not lie inside them."""
    roots = []
    for art in (inputs.train_features, inputs.candidate_features):
        if art is not None and Path(art).is_file():
            root = read_artifact_metadata(art).get("image_root")
            if root:
                roots.append(Path(root))
    return roots


def _candidate_root(inputs: PublishInputs) -> Path | None:
    if inputs.candidate_root is not None:
        return inputs.candidate_root
    for art in (inputs.selection, inputs.manifest):
        if art is not None and Path(art).exists():
            meta = read_artifact_metadata(art)
            root = meta.get("image_root") or meta.get("ref_root")
            if root:
                return Path(root)
    return None


def _artifact_parameters(inputs: PublishInputs) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key in ("train_features", "candidate_features", "selection", "manifest", "labels", "train_csv"):
        path = getattr(inputs, key)
        if path is not None and Path(path).exists():
            params[key] = read_artifact_metadata(path)
    params.update(inputs.extra_parameters)
    return params


# ----------------------------------------------------------------------------------------------- plots
def check_shipped_images(plan: PublishPlan) -> dict[str, str]:
    """Every image the dataset will hold, read once and decoded under the bomb guard (one line naming a
    bad one, before the dataset is touched); returns their sha256."""
    from concurrent.futures import ThreadPoolExecutor

    from reshape.report import default_workers

    for _, src in sorted(plan.provenance.dropped.items()):  # the report's thumbnails of pruned images
        check_image(Path(src))
    shipped = sorted(plan.shipped())
    sources = [plan.placements[pub][0] for pub in shipped]
    # Pillow releases the GIL while it decodes; map raises the first bad image in path order, whatever
    # the thread count
    with ThreadPoolExecutor(max_workers=default_workers()) as pool:
        return dict(zip(shipped, pool.map(check_image, sources), strict=True))


# ----------------------------------------------------------------------------------------------- config
def parse_label_range(value: str | tuple[float, float] | list[float] | None) -> tuple[float, float] | None:
    """``"LO,HI"`` (the CLI / TOML form) or a pair -> (lo, hi), checked."""
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise BadInputError(f"--label-range {value!r}: expected LO,HI (e.g. 1,5)") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise BadInputError(f"--label-range {value!r}: LO and HI must be finite numbers")
    if not lo < hi:
        raise BadInputError(f"--label-range {value!r}: LO must be below HI")
    return lo, hi


@dataclass
class PublishConfig:
    """Options of `reshape publish` (field names are the CLI option names)."""

    out_dir: Path
    from_run: Path | None = None
    train_csv: Path | None = None
    labels: Path | None = None
    manifest: Path | None = None
    images_root: Path | None = None
    selection: Path | None = None
    train_features: Path | None = None
    candidate_features: Path | None = None
    prune_indices: Path | None = None
    source_root: Path | None = None
    candidate_root: Path | None = None
    source_name: str | None = None
    copy_source: bool = False
    #: hard-link images instead of copying them: editing the published copy then edits the run's artifact
    link: bool = False
    name: str | None = None
    label_range: str | tuple[float, float] | None = None
    note: list[str] = field(default_factory=list)
    val_root: list[str] = field(default_factory=list)
    val_meta: list[str] = field(default_factory=list)
    push_to_hub: str | None = None
    private: bool = False
    revision: str | None = None
    overwrite: bool = False
    wait: bool = False
    fingerprint: str | None = None
    progress: bool = False
    #: issue 29: the report's Clustered features tab through this encoder spec (reshape.diagnose)
    diagnose_encoder: str | None = None

    def inputs(self) -> PublishInputs:
        """The artifacts to read: --from-run's, overridden by the options given explicitly."""
        inputs = PublishInputs.from_run(self.from_run) if self.from_run is not None else PublishInputs()
        for key in (
            "train_csv",
            "labels",
            "manifest",
            "images_root",
            "selection",
            "train_features",
            "candidate_features",
            "prune_indices",
            "source_root",
            "candidate_root",
            "source_name",
        ):
            value = getattr(self, key)
            if value is not None:
                setattr(inputs, key, Path(value) if key != "source_name" else value)
        inputs.notes = [*inputs.notes, *self.note]
        return inputs


@dataclass
class PublishResult:
    out_dir: Path
    rows: int
    files: int
    counts: dict[str, Any]
    label_range: tuple[float, float]
    card: Path
    plots: list[Path]
    placed: int = 0
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    kept_foreign: int = 0
    hub_url: str | None = None
    seconds: float = 0.0

    def summary_lines(self) -> list[str]:
        origin = ", ".join(f"{n} {k}" for k, n in self.counts["origin"].items())
        lines = [
            f"published {self.rows} rows ({origin}), {self.files} files, labels in "
            f"[{self.label_range[0]:g}, {self.label_range[1]:g}] -> {self.out_dir}",
            f"card: {self.card}",
            *(f"plot: {p}" for p in self.plots),
        ]
        if self.unchanged:
            lines.append(f"{self.unchanged} image(s) already in place and unchanged, {self.placed} written")
        if self.removed:
            lines.append(f"removed {len(self.removed)} file(s) of the previous publish no longer in it")
        if self.kept_foreign:
            lines.append(f"kept {self.kept_foreign} file(s) that publish did not write (not in {SUMS})")
        if self.hub_url:
            lines.append(f"pushed to {self.hub_url}")
        return lines


# ----------------------------------------------------------------------------------------------- plan
@dataclass
class PublishPlan:
    """Everything decided before a byte is written."""

    train: pd.DataFrame  # published paths, plus orig_dist_img / orig_ref_img
    placements: dict[str, tuple[Path, str]]  # published path -> (file to copy, "new" | "ref" | "source")
    expected: dict[str, str]  # distortion manifest sha256 of each new image
    label_range: tuple[float, float]
    scale: str | None
    has_source: bool
    copy_source: bool
    val_roots: dict[str, ValRoot]
    provenance: Provenance = field(default_factory=Provenance)
    digests: dict[str, str] = field(default_factory=dict)  # shipped image -> sha256 (preflight)

    def shipped(self) -> list[str]:
        """Published paths of the images copied into the folder."""
        return [p for p, (_, kind) in self.placements.items() if kind != "source" or self.copy_source]

    def bytes_to_copy(self, *, link: bool) -> int:
        return 0 if link else sum(self.placements[p][0].stat().st_size for p in self.shipped())


def _resolve_roots(train: pd.DataFrame, inputs: PublishInputs) -> Path | None:
    """Check the folders the rows need; returns the candidate (new reference) root."""
    pseudo = train["origin"] == "pseudo"
    if pseudo.any() and inputs.images_root is None:
        if inputs.manifest is None:
            raise BadInputError(
                "publish needs --images-root (the distort output folder) for pseudo-labelled rows"
            )
        inputs.images_root = Path(inputs.manifest).parent
    if (~pseudo).any() and inputs.source_root is None:
        raise BadInputError(
            "train table has source rows: give --source-root (folder their paths are relative to)"
        )
    candidate_root = _candidate_root(inputs)
    if pseudo.any() and candidate_root is None:
        raise BadInputError("cannot locate the new reference images: give --candidate-root")
    return candidate_root


def _placements(train: pd.DataFrame, inputs: PublishInputs, candidate_root: Path | None) -> dict:
    """Each published file once (several rows share a reference), with the file it comes from."""
    src = inputs.train_csv or inputs.labels
    placements: dict[str, tuple[Path, str]] = {}
    for row in train.itertuples(index=False):
        if row.origin == "pseudo":
            pairs = [
                (row.dist_img, inputs.images_root, row.orig_dist_img, "new"),
                (row.ref_img, candidate_root, row.orig_ref_img, "ref"),
            ]
        else:
            pairs = [
                (row.dist_img, inputs.source_root, row.orig_dist_img, "source"),
                (row.ref_img, inputs.source_root, row.orig_ref_img, "source"),
            ]
        for pub, root, orig, kind in pairs:
            placements[pub] = (resolve_under_root(root, orig, source=src), kind)
    for pub, (path, _) in sorted(placements.items()):
        if not path.is_file():
            raise BadInputError(f"{path}: no such file (needed for {pub})")
    return placements


def build_plan(inputs: PublishInputs, config: PublishConfig, val_roots: dict[str, ValRoot]) -> PublishPlan:
    """Read and check the inputs: rows, label range, and where every published image comes from."""
    train, train_meta = _load_train(inputs)
    train = plan_paths(train, copy_source=config.copy_source)
    expected = _check_manifest(train, inputs)
    candidate_root = _resolve_roots(train, inputs)
    scale = train_meta.get("scale")
    lo, hi = parse_label_range(config.label_range) or label_range(train, scale)
    dmos = train["dmos"].to_numpy(dtype=float)
    outside = (dmos < lo) | (dmos > hi)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise BadInputError(
            f"{inputs.train_csv}, line {i + 2}: label {dmos[i]} outside the range [{lo}, {hi}]"
        )
    plan = PublishPlan(
        train=train,
        placements=_placements(train, inputs, candidate_root),
        expected=expected,
        label_range=(lo, hi),
        scale=scale,
        has_source=bool((train["origin"] == "source").any()),
        copy_source=config.copy_source,
        val_roots=val_roots,
    )
    plan.provenance = _provenance(inputs, plan)
    return plan


def _provenance(inputs: PublishInputs, plan: PublishPlan) -> Provenance:
    """The tables the report needs beyond train.csv and labels.csv (reshape.report_data)."""
    from reshape import report_data

    shipped = set(plan.shipped())
    found = Provenance()
    if inputs.train_features and inputs.candidate_features and inputs.selection:
        found.selection_map = report_data.selection_map(
            inputs.train_features, inputs.candidate_features, inputs.selection, plan.train, shipped
        )
    if inputs.labels is not None:
        found.neighbour_labels = report_data.neighbour_labels(inputs.labels, plan.train, shipped)
    if inputs.prune_indices is not None and Path(inputs.prune_indices).is_file():
        found.clusters, found.dropped = report_data.clusters(
            inputs.prune_indices, plan.train, (inputs.source_root, inputs.images_root)
        )
    return found


def _check_manifest(train: pd.DataFrame, inputs: PublishInputs) -> dict[str, str]:
    """Expected sha256 of each pseudo image from the distortion manifest ({} without a manifest)."""
    if inputs.manifest is None:
        return {}
    manifest = read_csv(inputs.manifest, "distortion_manifest")
    known = dict(zip(manifest["dist_img"], manifest["sha256"], strict=True))
    pseudo = train.loc[train["origin"] == "pseudo", "orig_dist_img"]
    missing = [p for p in pseudo if p not in known]
    if missing:
        raise BadInputError(f"{inputs.manifest}: has no row for pseudo-labelled image {missing[0]!r}")
    return known


def planned_names(plan: PublishPlan, inputs: PublishInputs) -> list[str]:
    """Every path (relative to the dataset folder) this publish writes, SHA256SUMS included."""
    names = [TRAIN_CSV, META_CSV, HF_METADATA, HISTOGRAM_PNG, DATASET_JSON, CROISSANT_JSON, CARD, SUMS]
    names += pyiqa_file_names(plan.val_roots)
    if inputs.labels is not None:
        names.append(LABELS_CSV)
    if inputs.train_features and inputs.candidate_features and inputs.selection:
        names.append(SELECTION_PNG)
    if plan.has_source and not plan.copy_source:
        names.append(SOURCE_SUMS)
    names += plan.provenance.names()
    return sorted(set(names) | set(plan.shipped()))


# ----------------------------------------------------------------------------------------------- writing
def _place(src: Path, dst: Path, *, link: bool) -> None:
    """Copy (default) or hard-link ``src`` to ``dst`` through a temporary name (never half-written)."""
    with atomic_path(dst) as tmp:
        if link:
            try:
                tmp.unlink()
                os.link(src, tmp)
                return
            except OSError:
                pass  # another filesystem or no hard links: copy instead
        shutil.copyfile(src, tmp)


def _place_images(out_dir: Path, plan: PublishPlan, state: _State, txn: Transaction, config: PublishConfig):
    """Put every shipped image in place (unchanged own files are left alone); checksums of all images.
    Shipped images were read, checksummed and decoded in the preflight (``plan.digests``)."""
    from tqdm import tqdm

    sums: dict[str, str] = {}
    source_sums: dict[str, str] = {}
    placed = unchanged = 0
    items = sorted(plan.placements.items())
    for pub, (src, kind) in tqdm(items, desc="publish", unit="file", disable=not config.progress):
        digest = plan.digests.get(pub) or sha256_file(src)
        if kind == "new":
            want = plan.expected.get(str(PurePosixPath(pub).relative_to(NEW_DIR)))
            if want is not None and want != digest:
                raise StageError(f"{src}: sha256 differs from the distortion manifest")
        if kind == "source" and not plan.copy_source:
            source_sums[pub] = digest
            continue
        if state.current_digest(out_dir, pub) == digest:
            unchanged += 1
        else:
            _place(src, txn.will_write(out_dir / pub), link=config.link)
            placed += 1
        sums[pub] = digest
    return sums, source_sums, placed, unchanged


def _write_tables(out_dir: Path, plan: PublishPlan, inputs: PublishInputs, txn: Transaction) -> pd.DataFrame:
    published = plan.train.drop(columns=["orig_dist_img", "orig_ref_img"])
    write_csv(txn.will_write(out_dir / TRAIN_CSV), published, "train")
    # every derived file is made from the table as written, so `reshape verify` can derive it again
    published = published_table(read_csv(out_dir / TRAIN_CSV, "train"))
    _write_text(txn.will_write(out_dir / META_CSV), csv_text(meta_table(published), "pyiqa_meta"))
    if inputs.labels is not None:
        labels = read_csv(inputs.labels, "labels")
        labels["dist_img"] = [f"{NEW_DIR}/{p}" for p in labels["dist_img"]]
        labels["ref_img"] = [f"{REFS_DIR}/{p}" for p in labels["ref_img"]]
        labels = labels[labels["dist_img"].isin(set(published["dist_img"]))]
        write_csv(txn.will_write(out_dir / LABELS_CSV), labels, "labels")
    _write_text(txn.will_write(out_dir / HF_METADATA), hub_metadata_text(published))
    return published


def _write_plots(out_dir: Path, plan: PublishPlan, inputs: PublishInputs, txn: Transaction) -> list[str]:
    lo, hi = plan.label_range
    published = plan.train
    plot_histogram(txn.will_write(out_dir / HISTOGRAM_PNG), published, lo, hi)
    plots = [HISTOGRAM_PNG]
    if inputs.train_features and inputs.candidate_features and inputs.selection:
        plot_selection(txn.will_write(out_dir / SELECTION_PNG), inputs)
        plots.append(SELECTION_PNG)
    return plots


def _card(
    out_dir: Path, plan: PublishPlan, inputs: PublishInputs, config: PublishConfig, extra: dict
) -> dict:
    published, lo, hi = extra["published"], *plan.label_range
    counts = count_table(published)
    counts["files"] = {
        "new_images": int((published["origin"] == "pseudo").sum()),
        "images_in_folder": len(plan.shipped()),
        "referenced_source_files": len(extra["source_sums"]),
        "hub_rows": int(published["dist_img"].str.startswith(IMAGES_DIR + "/").sum()),
    }
    card = {
        "name": config.name or out_dir.name,
        "reshape_version": __version__,
        "created": now_iso(),
        "files": {
            "train": TRAIN_CSV,
            "pyiqa_meta": META_CSV,
            "metadata": HF_METADATA,
            "sha256sums": SUMS,
            "croissant": CROISSANT_JSON,
            "pyiqa_options": OPTIONS_FILE,
            "pyiqa_launcher": LAUNCHER_FILE,
            **({"labels": LABELS_CSV} if inputs.labels is not None else {}),
            **({"source_sha256sums": SOURCE_SUMS} if extra["source_sums"] else {}),
            "plots": extra["plots"],
            "provenance": [n for n in plan.provenance.names() if n.endswith(".csv")],
            "report": "report/index.html",
        },
        "counts": counts,
        "labels": {
            "column": "dmos",
            "range": [lo, hi],
            "scale": plan.scale or "source",
            "higher_is_better": True,
        },
        "parameters": _artifact_parameters(inputs),
        "software": _software_versions(),
        "source": {
            "name": inputs.source_name,
            "mode": "copied" if plan.copy_source else ("referenced" if plan.has_source else "none"),
            "dir": COPIED_SOURCE_DIR if plan.copy_source else REFERENCED_SOURCE_DIR,
            "licence": LICENCE_NOTES,
        },
        "pyiqa": {"validation": {k: str(v.images) for k, v in plan.val_roots.items()}},
    }
    features = _features_info(inputs)
    if features is not None:
        card["features"] = features
    if inputs.notes:
        card["notes"] = list(inputs.notes)
    if config.fingerprint is not None:
        card["fingerprint"] = config.fingerprint
    return card


def _write_provenance(out_dir: Path, provenance: Provenance, txn: Transaction) -> None:
    from reshape import report_data

    tables = (
        (report_data.SELECTION_MAP_CSV, provenance.selection_map),
        (report_data.NEIGHBOUR_LABELS_CSV, provenance.neighbour_labels),
        (report_data.CLUSTERS_CSV, provenance.clusters),
    )
    for name, table in tables:
        if table is not None:
            report_data.write_table(txn.will_write(out_dir / name), table)
    for name, src in sorted(provenance.dropped.items()):
        report_data.write_thumbnail(src, txn.will_write(out_dir / name))


def _write_report(
    out_dir: Path, digests: dict[str, str], config: PublishConfig, txn: Transaction
) -> dict[str, str]:
    """Build report/ from the folder just written; returns its files' checksums (publish owns them too)."""
    from reshape import report

    pub = report.read_published(out_dir, digests)
    target = out_dir / report.REPORT_DIR
    listed = report.listed_in_dataset(out_dir, target)  # SHA256SUMS is still the previous publish's here
    plan = report.plan_files(pub, config.diagnose_encoder)
    built = report.write_report(
        out_dir, target, plan, overwrite=config.overwrite, listed=listed, guard=txn.will_write
    )
    return {f"{report.REPORT_DIR}/{n}": d for n, d in built.digests.items()}


def _features_info(inputs: PublishInputs) -> dict[str, str] | None:
    """Which encoder made the features (dataset.json ``features``; the card and the report show it)."""
    from reshape.features import STATS_ENCODER

    for path in (inputs.train_features, inputs.candidate_features):
        if path is not None and Path(path).exists():
            meta = read_artifact_metadata(path)
            info = {k: str(meta.get(k, "")) for k in ("encoder", "weights", "preprocessing")}
            info.update({k: str(meta[k]) for k in ("precision", "memory_format") if k in meta})  # issue #28
            if info["encoder"] == STATS_ENCODER:
                info["note"] = "offline fallback encoder (colour and texture statistics), not the paper's"
            return info
    return None


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def _write_descriptions(
    out_dir: Path, plan: PublishPlan, card: dict, published: pd.DataFrame, txn: Transaction
) -> dict:
    """dataset.json, README.md, the pyiqa options and launcher; returns the card as written."""
    write_json(txn.will_write(out_dir / DATASET_JSON), card)
    card = json.loads((out_dir / DATASET_JSON).read_text("utf-8"))  # as verify reads it (keys sorted)
    _write_text(txn.will_write(out_dir / CARD), render_card(card))
    for rel, text in pyiqa_files(card["name"], published, label_note(card), plan.val_roots).items():
        _write_text(txn.will_write(out_dir / rel), text)
    return card


def _write_croissant(
    out_dir: Path, card: dict, published: pd.DataFrame, config: PublishConfig, txn: Transaction
) -> dict[str, str]:
    """croissant.json (reshape.croissant): the folder in Croissant 1.1 with the RAI fields. Returns the
    checksums of the tables it describes (SHA256SUMS lists the same)."""
    from reshape import croissant

    tables = [TRAIN_CSV, META_CSV, LABELS_CSV, HF_METADATA]
    table_sums = {rel: sha256_file(out_dir / rel) for rel in tables if rel in _files_of(card)}
    url = None
    if config.push_to_hub:
        url = f"{os.environ.get('HF_ENDPOINT') or 'https://huggingface.co'}/datasets/{config.push_to_hub}"
    doc = croissant.build(card, published, table_sums, url=url)
    _write_text(txn.will_write(out_dir / CROISSANT_JSON), croissant.render(doc))
    return table_sums


def _files_of(card: dict) -> set[str]:
    return {v for v in card["files"].values() if isinstance(v, str)}


def _remove_stale(out_dir: Path, stale: set[str], digests: dict[str, str]) -> list[str]:
    """Delete files an earlier publish recorded as its own that this one no longer writes, then the folders
    that leaves empty (never the dataset folder itself). A file is deleted only while it still is what
    SHA256SUMS recorded, reached without a symbolic link leading out of the folder (remove_recorded)."""
    removed = []
    for rel in sorted(stale):
        path = out_dir / rel
        if remove_recorded(out_dir, rel, digests.get(rel)):
            removed.append(rel)
        for parent in path.relative_to(out_dir).parents:
            if str(parent) == ".":
                break
            if (out_dir / parent).is_symlink():
                break
            with contextlib.suppress(OSError):
                (out_dir / parent).rmdir()  # only succeeds when empty
    return removed


@dataclass
class _Written:
    sums: dict[str, str]
    published: pd.DataFrame
    card: dict[str, Any]
    plots: list[str]
    placed: int
    unchanged: int
    removed: list[str]


@dataclass
class _State:
    """What the preflight found in the output folder: the record, and the sha256 of each recorded file it
    read for the edit rule (reused, so no image is hashed twice)."""

    record: Record
    current: dict[str, str] = field(default_factory=dict)

    def current_digest(self, out_dir: Path, rel: str) -> str | None:
        """The sha256 of an own file now in place (None when it is not publish's or not a regular file)."""
        if rel not in self.record.own:
            return None
        if rel not in self.current:
            path = out_dir / rel
            if not path.is_file() or path.is_symlink():
                return None
            self.current[rel] = sha256_file(path)
        return self.current[rel]


def _write_all(out_dir: Path, plan: PublishPlan, inputs: PublishInputs, config: PublishConfig, state, txn):
    """Every phase of a publish (images, tables, provenance, plots, card, croissant, report, sums)."""
    sums, source_sums, placed, unchanged = _place_images(out_dir, plan, state, txn, config)
    published = _write_tables(out_dir, plan, inputs, txn)
    _write_provenance(out_dir, plan.provenance, txn)
    sums.update({n: sha256_file(out_dir / n) for n in plan.provenance.dropped})
    plots = _write_plots(out_dir, plan, inputs, txn)
    extra = {"published": published, "source_sums": source_sums, "plots": plots}
    card = _card(out_dir, plan, inputs, config, extra)
    card = _write_descriptions(out_dir, plan, card, published, txn)
    sums.update(_write_croissant(out_dir, card, published, config, txn))
    sums.update(_write_report(out_dir, {**source_sums, **sums}, config, txn))
    if source_sums:
        _write_text(txn.will_write(out_dir / SOURCE_SUMS), sha256sums_text(source_sums))
    return sums, published, card, plots, placed, unchanged


def write_dataset(
    out_dir: Path,
    plan: PublishPlan,
    inputs: PublishInputs,
    config: PublishConfig,
    names: list[str],
    state: _State | None = None,
) -> _Written:
    """Write the dataset into ``out_dir`` (called holding its lock). Own files are replaced or deleted; any
    other file stays. SHA256SUMS, the ownership record, is written last; until then a pending list names
    what this run writes, so an interrupted run's files are still known as publish's own on the rerun.

    Transactional (reshape.publish_txn.Transaction): a file replaced is kept aside until SHA256SUMS is
    written; if any phase fails, every file is put back as it was and the files created are removed."""
    state = state or _State(read_record(out_dir))
    record = state.record
    check_collisions(out_dir, names, record, overwrite=config.overwrite)
    for folder in {(out_dir / n).parent for n in names}:
        if folder.is_dir():
            remove_stale_temps(folder, names=[PurePosixPath(n).name for n in names])
    txn = Transaction(out_dir)
    txn.begin()
    pending_existed = (out_dir / PENDING).exists()
    try:
        atomic_write_text(out_dir / PENDING, json.dumps(sorted(set(names) | record.own - {PENDING})))
        sums, published, card, plots, placed, unchanged = _write_all(
            out_dir, plan, inputs, config, state, txn
        )
        for rel in names:
            if rel != SUMS and rel not in sums:
                sums[rel] = sha256_file(out_dir / rel)
        _write_text(txn.will_write(out_dir / SUMS), sha256sums_text(sums))
    except BaseException as exc:
        restored = txn.rollback()
        if restored and not pending_existed:  # a pending list stays while anything could not be put back
            with contextlib.suppress(FileNotFoundError):
                (out_dir / PENDING).unlink()
        if isinstance(exc, OSError) and not isinstance(exc, ReshapeError):
            raise txn.fault(exc) from None
        raise
    txn.commit()
    removed = _remove_stale(out_dir, record.own - set(sums) - {SUMS, PENDING}, record.digests)
    (out_dir / PENDING).unlink()
    return _Written(sums, published, card, plots, placed, unchanged, removed)


# ----------------------------------------------------------------------------------------------- run


def _input_paths(inputs: PublishInputs, val_roots: dict[str, ValRoot]) -> list[Path | None]:
    paths: list[Path | None] = [
        inputs.train_csv,
        inputs.labels,
        inputs.manifest,
        inputs.images_root,
        inputs.selection,
        inputs.train_features,
        inputs.candidate_features,
        inputs.prune_indices,
        inputs.source_root,
        inputs.candidate_root,
    ]
    for root in val_roots.values():
        paths += [root.images, root.meta_info]
    return paths


def run(config: PublishConfig) -> PublishResult:
    """Publish the dataset into ``config.out_dir`` (see the module docstring for the layout)."""
    start = time.perf_counter()
    out_dir = Path(config.out_dir)
    inputs = config.inputs()
    val_roots = parse_val_roots(config.val_root, config.val_meta)
    if config.push_to_hub:
        from reshape.hub import require_hub

        require_hub()
    check_inputs_not_outputs(_input_paths(inputs, val_roots), folder_outputs=[out_dir])
    plan = build_plan(inputs, config, val_roots)
    check_inputs_not_outputs(
        [inputs.images_root, _candidate_root(inputs), *_image_roots(inputs)], folder_outputs=[out_dir]
    )
    names = planned_names(plan, inputs)
    record = read_record(out_dir)
    check_collisions(out_dir, names, record, overwrite=config.overwrite)
    check_report_output(out_dir / "report", record, overwrite=config.overwrite)
    state = _State(record)
    rewritten = [*names, *(n for n in record.digests if n.startswith("report/"))]
    edited, state.current = edited_outputs(out_dir, rewritten, record)
    apply_edit_rule(out_dir, edited, overwrite=config.overwrite)
    plan.digests = check_shipped_images(plan)  # before the dataset is touched
    check_writable(out_dir, need_bytes=plan.bytes_to_copy(link=config.link))
    with created_folders(out_dir.parent, out_dir), locked_outputs(out_dir, wait=config.wait):
        announce("publishing %d file(s) into %s", len(names), out_dir)
        written = write_dataset(out_dir, plan, inputs, config, names, state)
        hub_url = None
        if config.push_to_hub:  # still holding the lock: nothing changes the folder while it uploads
            from reshape.hub import push_folder

            hub_url = push_folder(
                out_dir, config.push_to_hub, private=config.private, revision=config.revision
            )
    return PublishResult(
        out_dir=out_dir,
        rows=len(written.published),
        files=len(written.sums) + 1,
        counts=written.card["counts"],
        label_range=plan.label_range,
        card=out_dir / CARD,
        plots=[out_dir / p for p in written.plots],
        placed=written.placed,
        unchanged=written.unchanged,
        removed=written.removed,
        kept_foreign=read_record(out_dir).foreign,
        hub_url=hub_url,
        seconds=time.perf_counter() - start,
    )
