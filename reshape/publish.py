"""`reshape publish`: assemble the reshaped training set as a static, self-describing folder.

Layout of a published dataset (every path inside a CSV is relative to the dataset root)::

    README.md            dataset card (what was done, parameters, counts, plots, licence, how to load)
    dataset.json         machine-readable card (schema data_manifests/dataset_card.schema.json)
    SHA256SUMS           sha256sum format, every file in the folder except itself
    SOURCE_SHA256SUMS    only when source images are referenced: checksums of source/<path>
    train.csv            KADID layout + origin: source rows and pseudo-labelled rows
    meta_info.csv        pyiqa general NR meta-info (path, score)
    labels.csv           the pseudo-labelled rows with their provenance (neighbours, weights, ...)
    plots/               selection_map.png, label_histogram.png
    images/              new distorted images (+ their new references in images/refs/)
    images/metadata.csv  Hugging Face imagefolder metadata (file_name relative to images/)
    images/source/       source images, with --copy-source
    source/              mount point of the source dataset when referenced (not shipped)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import tempfile
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
    read_features,
    read_parquet,
    write_csv,
    write_json,
)
from reshape.errors import BadInputError, StageError
from reshape.fileio import atomic_open, atomic_path, check_relative, resolve_under_root, sha256_file

log = logging.getLogger("reshape.publish")

CARD = "README.md"
DATASET_JSON = "dataset.json"
SUMS = "SHA256SUMS"
SOURCE_SUMS = "SOURCE_SHA256SUMS"
TRAIN_CSV = "train.csv"
META_CSV = "meta_info.csv"
LABELS_CSV = "labels.csv"
IMAGES_DIR = "images"
HF_METADATA = f"{IMAGES_DIR}/metadata.csv"
NEW_DIR = IMAGES_DIR
REFS_DIR = f"{IMAGES_DIR}/refs"
COPIED_SOURCE_DIR = f"{IMAGES_DIR}/source"
REFERENCED_SOURCE_DIR = "source"
PLOTS_DIR = "plots"
SELECTION_PNG = f"{PLOTS_DIR}/selection_map.png"
HISTOGRAM_PNG = f"{PLOTS_DIR}/label_histogram.png"

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
            source_root=Path(inputs["source_root"]) if inputs.get("source_root") else None,
            candidate_root=Path(inputs["candidates"]) if inputs.get("candidates") else None,
            train_features=opt("train_features"),
            candidate_features=opt("candidate_features"),
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


def count_table(train: pd.DataFrame) -> dict[str, Any]:
    """Counts per origin, per distortion type and per (type, level), JSON-ready."""
    per_type_level: dict[str, dict[str, int]] = {}
    for (t, lvl), n in train.groupby(["dist_type", "dist_level"]).size().items():
        per_type_level.setdefault(str(int(t)), {})[str(int(lvl))] = int(n)
    return {
        "rows": len(train),
        "origin": {str(k): int(v) for k, v in train["origin"].value_counts().sort_index().items()},
        "type": {str(int(k)): int(v) for k, v in train["dist_type"].value_counts().sort_index().items()},
        "type_level": per_type_level,
    }


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


def sha256sums_text(entries: dict[str, str]) -> str:
    """`sha256sum` text-mode lines ('<hex>  <path>'), sorted by path."""
    return "".join(f"{digest}  {path}\n" for path, digest in sorted(entries.items()))


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
def _plot_histogram(path: Path, train: pd.DataFrame, lo: float, hi: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    bins = np.linspace(lo, hi, 26) if hi > lo else 25
    for origin, colour in (("source", "tab:blue"), ("pseudo", "tab:orange")):
        values = train.loc[train["origin"] == origin, "dmos"].to_numpy(dtype=float)
        if len(values):
            ax.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{origin} (n={len(values)})")
    ax.set_xlabel("label (dmos, higher = better)")
    ax.set_ylabel("images")
    ax.set_title("Label distribution: source vs pseudo-labelled")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def _pca_2d(*blocks: np.ndarray) -> list[np.ndarray]:
    stacked = np.concatenate(blocks).astype(np.float64)
    stacked /= np.linalg.norm(stacked, axis=1, keepdims=True).clip(1e-12)
    centred = stacked - stacked.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:2].T
    if proj.shape[1] < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    out, start = [], 0
    for b in blocks:
        out.append(proj[start : start + len(b)])
        start += len(b)
    return out


def _plot_selection(path: Path, inputs: PublishInputs) -> bool:
    if not (inputs.train_features and inputs.candidate_features and inputs.selection):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_refs = read_features(inputs.train_features)
    candidates = read_features(inputs.candidate_features)
    selection, _ = read_parquet(inputs.selection, "selection")
    chosen = selection.column("candidate_index").to_numpy()
    if len(chosen) and (chosen.min() < 0 or chosen.max() >= len(candidates)):
        raise BadInputError(
            f"{inputs.selection}: candidate_index out of range of {inputs.candidate_features}"
        )
    train_xy, cand_xy = _pca_2d(train_refs.embeddings, candidates.embeddings)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    ax.scatter(cand_xy[:, 0], cand_xy[:, 1], s=8, c="lightgrey", label=f"candidates (n={len(cand_xy)})")
    ax.scatter(
        train_xy[:, 0],
        train_xy[:, 1],
        s=30,
        c="tab:blue",
        marker="s",
        label=f"training refs (n={len(train_xy)})",
    )
    ax.scatter(cand_xy[chosen, 0], cand_xy[chosen, 1], s=30, c="tab:red", label=f"selected (n={len(chosen)})")
    ax.set_title("DDCUp selection (PCA of cosine-normalised features)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------------------------- card
def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _stage_parameter_lines(parameters: dict[str, Any]) -> list[str]:
    keep = (
        "encoder",
        "weights",
        "seed",
        "tau",
        "d_max",
        "tau_quantile",
        "k",
        "margin",
        "temperature",
        "weighting",
        "scale",
        "preset",
        "resize",
        "format",
        "sim_threshold",
        "label_threshold",
        "min_cluster",
        "n_selected",
        "n_candidates",
        "n_train",
        "fingerprint",
        "reshape_version",
    )
    lines = []
    for stage, meta in parameters.items():
        if not isinstance(meta, dict):
            continue
        shown = {k: meta[k] for k in keep if k in meta}
        if shown:
            lines.append(
                f"* **{stage}**: " + ", ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in shown.items())
            )
    return lines


def render_card(card: dict[str, Any]) -> str:
    """The human dataset card (README.md) from the machine-readable one (dataset.json)."""
    counts, files, source, labels = card["counts"], card["files"], card["source"], card["labels"]
    lo, hi = labels["range"]
    type_rows = []
    for t in sorted(counts["type_level"], key=int):
        levels = counts["type_level"][t]
        type_rows.append([t] + [levels.get(str(lvl), 0) for lvl in range(1, 6)] + [counts["type"][t]])
    weights_note = ""
    for meta in card["parameters"].values():
        noted = any("random" in n for n in card.get("notes", []))
        if (
            not noted
            and isinstance(meta, dict)
            and str(meta.get("weights", "")).lower() in ("none", "random")
        ):
            weights_note = (
                "\n> **Warning:** features were computed with a randomly initialised encoder "
                "(`--weights none`); the selection and pseudo-labels are therefore not meaningful beyond "
                "demonstrating the pipeline.\n"
            )
    if source["mode"] == "referenced":
        source_text = (
            f"Source images are **referenced, not shipped**: rows with `origin = source` point into "
            f"`source/`. "
            f"Make the {source['name']} image folder available there before training, e.g. "
            f"`ln -s /path/to/{source['name']}/images source`, then check it with "
            f"`sha256sum -c {SOURCE_SUMS}`."
        )
    elif source["mode"] == "copied":
        source_text = f"Source images are copied into `{COPIED_SOURCE_DIR}/` (`--copy-source`)."
    else:
        source_text = "This dataset holds only pseudo-labelled images (no source rows)."
    plots = "\n\n".join(f"![{Path(p).stem}]({p})" for p in files.get("plots", []))
    software = ", ".join(f"{k} {v}" for k, v in card["software"].items())
    parts = [
        f"# {card['name']}",
        "",
        "A synthetic image-quality training set reshaped with reshape (SynDR-IQA, "
        "NeurIPS 2025): new reference contents chosen by DDCUp from a candidate pool, distorted with the "
        "KADID-10k distortions and pseudo-labelled from their nearest training references, merged with the "
        "source training rows (optionally pruned by DRCDown).",
        weights_note,
        *(["## Notes", "", *[f"* {n}" for n in card.get("notes", [])], ""] if card.get("notes") else []),
        "## Contents",
        "",
        _md_table(
            ["file", "what"],
            [
                [
                    f"`{files['train']}`",
                    "training table, KADID layout: dist_img, ref_img, dmos, var, dist_type, "
                    "dist_level, origin (source / pseudo)",
                ],
                [f"`{files['pyiqa_meta']}`", "pyiqa general NR meta-info: path, score"],
                [
                    f"`{files['metadata']}`",
                    "Hugging Face imagefolder metadata (file_name relative to images/)",
                ],
                *(
                    [[f"`{files['labels']}`", "pseudo-label provenance: neighbours, weights, distances"]]
                    if "labels" in files
                    else []
                ),
                [f"`{files['sha256sums']}`", "checksums of every file here (`sha256sum -c SHA256SUMS`)"],
                ["`dataset.json`", "this card, machine-readable"],
            ],
        ),
        "",
        f"All paths are relative to this folder. Labels: column `dmos`, higher = better, "
        f"range [{lo:g}, {hi:g}] "
        f"(scale: {labels['scale']}).",
        "",
        "## Counts",
        "",
        f"{counts['rows']} rows: "
        + ", ".join(f"{v} {k}" for k, v in counts["origin"].items())
        + f"; {counts['files']['new_images']} new distorted images.",
        "",
        _md_table(["type", "level 1", "level 2", "level 3", "level 4", "level 5", "total"], type_rows),
        "",
        "## Parameters, seeds and fingerprints",
        "",
        *_stage_parameter_lines(card["parameters"]),
        "",
        f"Full stage metadata is in `dataset.json` (`parameters`). Software: {software}.",
        "",
        "## Plots",
        "",
        plots or "(no plots)",
        "",
        "## Source dataset and licence",
        "",
        f"Source: **{source['name']}**. {source_text}",
        "",
        source["licence"],
        "",
        "## How to load it",
        "",
        "```python",
        "import pandas as pd",
        "train = pd.read_csv('train.csv')  # paths relative to this folder",
        "",
        "# pyiqa: type GeneralNRDataset, dataroot_target = this folder, meta_info_file = meta_info.csv",
        "",
        "from datasets import load_dataset  # Hugging Face",
        "ds = load_dataset('imagefolder', data_dir='images', split='train')",
        "```",
        "",
        "Check integrity with `sha256sum -c SHA256SUMS` or `reshape verify .`.",
        "",
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------- files
def _place(src: Path, dst: Path, *, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # other filesystem or no hard-link support: copy instead
    shutil.copyfile(src, dst)


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


def _swap_into_place(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise BadInputError(f"{out_dir}: exists and is not a folder")
        if any(out_dir.iterdir()) and not (out_dir / DATASET_JSON).is_file():
            raise BadInputError(
                f"{out_dir}: folder is not empty and is not a published dataset; refusing to replace it"
            )
        trash = Path(tempfile.mkdtemp(prefix=".reshape-tmp-old-", dir=out_dir.parent))
        os.replace(out_dir, trash / "old")
        os.replace(staging, out_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(staging, out_dir)


# ----------------------------------------------------------------------------------------------- I/O shell
@dataclass
class PublishResult:
    out_dir: Path
    rows: int
    files: int
    counts: dict[str, Any]
    label_range: tuple[float, float]
    card: Path
    plots: list[Path]


def run_publish(
    out_dir: str | os.PathLike[str],
    inputs: PublishInputs,
    *,
    copy_source: bool = False,
    link: bool = True,
    name: str | None = None,
    label_range_override: tuple[float, float] | None = None,
    fingerprint: str | None = None,
) -> PublishResult:
    """Publish the dataset into ``out_dir`` (built beside it and swapped in, so never half-written)."""
    out_dir = Path(out_dir)
    train, train_meta = _load_train(inputs)
    train = plan_paths(train, copy_source=copy_source)
    expected = _check_manifest(train, inputs)
    pseudo = train["origin"] == "pseudo"
    has_source = bool((~pseudo).any())
    if pseudo.any() and inputs.images_root is None:
        if inputs.manifest is None:
            raise BadInputError(
                "publish needs --images-root (the distort output folder) for pseudo-labelled rows"
            )
        inputs.images_root = Path(inputs.manifest).parent
    if has_source and inputs.source_root is None:
        raise BadInputError(
            "train table has source rows: give --source-root (folder their paths are relative to)"
        )
    candidate_root = _candidate_root(inputs)
    if pseudo.any() and candidate_root is None:
        raise BadInputError("cannot locate the new reference images: give --candidate-root")
    scale = train_meta.get("scale")
    lo, hi = label_range_override or label_range(train, scale)
    dmos = train["dmos"].to_numpy(dtype=float)
    outside = (dmos < lo) | (dmos > hi)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise BadInputError(
            f"{inputs.train_csv}, line {i + 2}: label {dmos[i]} outside the range [{lo}, {hi}]"
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".reshape-tmp-publish-", dir=out_dir.parent))
    try:
        sums: dict[str, str] = {}
        source_sums: dict[str, str] = {}
        # Each published file once (several rows share a reference).
        placements: dict[str, tuple[Path, str]] = {}
        for row in train.itertuples(index=False):
            if row.origin == "pseudo":
                placements[row.dist_img] = (
                    resolve_under_root(inputs.images_root, row.orig_dist_img, source=inputs.train_csv),
                    "new",
                )
                placements[row.ref_img] = (
                    resolve_under_root(candidate_root, row.orig_ref_img, source=inputs.train_csv),
                    "ref",
                )
            else:
                for pub, orig in ((row.dist_img, row.orig_dist_img), (row.ref_img, row.orig_ref_img)):
                    placements[pub] = (
                        resolve_under_root(inputs.source_root, orig, source=inputs.train_csv),
                        "source",
                    )
        from tqdm import tqdm

        for pub, (src, kind) in tqdm(
            sorted(placements.items()),
            desc="publish",
            unit="file",
            disable=not log.isEnabledFor(logging.WARNING) or not os.isatty(2),
        ):
            if not src.is_file():
                raise BadInputError(f"{src}: no such file (needed for {pub})")
            digest = sha256_file(src)
            if kind == "new":
                want = expected.get(str(PurePosixPath(pub).relative_to(NEW_DIR)))
                if want is not None and want != digest:
                    raise StageError(f"{src}: sha256 differs from the distortion manifest {inputs.manifest}")
            if kind == "source" and not copy_source:
                source_sums[pub] = digest
                continue
            _place(src, staging / pub, link=link)
            sums[pub] = digest

        published = train.drop(columns=["orig_dist_img", "orig_ref_img"])
        write_csv(staging / TRAIN_CSV, published, "train")
        write_csv(
            staging / META_CSV,
            pd.DataFrame({"path": published["dist_img"], "score": published["dmos"]}),
            "pyiqa_meta",
        )
        if inputs.labels is not None:
            labels = read_csv(inputs.labels, "labels")
            labels["dist_img"] = [f"{NEW_DIR}/{p}" for p in labels["dist_img"]]
            labels["ref_img"] = [f"{REFS_DIR}/{p}" for p in labels["ref_img"]]
            labels = labels[labels["dist_img"].isin(set(published["dist_img"]))]
            write_csv(staging / LABELS_CSV, labels, "labels")
        inside = published[published["dist_img"].str.startswith(IMAGES_DIR + "/")]
        hf = pd.DataFrame(
            {
                "file_name": [str(PurePosixPath(p).relative_to(IMAGES_DIR)) for p in inside["dist_img"]],
                "dmos": inside["dmos"].to_numpy(dtype=float),
                "dist_type": inside["dist_type"].to_numpy(dtype=np.int64),
                "dist_level": inside["dist_level"].to_numpy(dtype=np.int64),
                "origin": inside["origin"].to_numpy(),
            }
        )
        (staging / IMAGES_DIR).mkdir(exist_ok=True)
        with atomic_open(staging / HF_METADATA, "w") as fh:
            hf.to_csv(fh, index=False, float_format="%.6g", lineterminator="\n")

        plots = []
        (staging / PLOTS_DIR).mkdir(exist_ok=True)
        _plot_histogram(staging / HISTOGRAM_PNG, published, lo, hi)
        plots.append(HISTOGRAM_PNG)
        if _plot_selection(staging / SELECTION_PNG, inputs):
            plots.append(SELECTION_PNG)

        counts = count_table(published)
        counts["files"] = {
            "new_images": int(pseudo.sum()),
            "images_in_folder": len(sums),
            "referenced_source_files": len(source_sums),
        }
        card = {
            "name": name or out_dir.name,
            "reshape_version": __version__,
            "created": now_iso(),
            "files": {
                "train": TRAIN_CSV,
                "pyiqa_meta": META_CSV,
                "metadata": HF_METADATA,
                "sha256sums": SUMS,
                **({"labels": LABELS_CSV} if inputs.labels is not None else {}),
                **({"source_sha256sums": SOURCE_SUMS} if source_sums else {}),
                "plots": plots,
            },
            "counts": counts,
            "labels": {
                "column": "dmos",
                "range": [lo, hi],
                "scale": scale or "source",
                "higher_is_better": True,
            },
            "parameters": _artifact_parameters(inputs),
            "software": _software_versions(),
            "source": {
                "name": inputs.source_name,
                "mode": "copied" if copy_source else ("referenced" if has_source else "none"),
                "dir": COPIED_SOURCE_DIR if copy_source else REFERENCED_SOURCE_DIR,
                "licence": LICENCE_NOTES,
            },
        }
        if inputs.notes:
            card["notes"] = list(inputs.notes)
        if fingerprint is not None:
            card["fingerprint"] = fingerprint
        write_json(staging / DATASET_JSON, card)
        (staging / CARD).write_text(render_card(card), encoding="utf-8")
        if source_sums:
            (staging / SOURCE_SUMS).write_text(sha256sums_text(source_sums), encoding="utf-8")
        for path in sorted(staging.rglob("*")):
            rel = path.relative_to(staging).as_posix()
            if path.is_file() and rel != SUMS and rel not in sums:
                sums[rel] = sha256_file(path)
        (staging / SUMS).write_text(sha256sums_text(sums), encoding="utf-8")
        _swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PublishResult(
        out_dir=out_dir,
        rows=len(published),
        files=len(sums) + 1,
        counts=counts,
        label_range=(lo, hi),
        card=out_dir / CARD,
        plots=[out_dir / p for p in plots],
    )
