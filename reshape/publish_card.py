"""The human dataset card (README.md) of a published dataset, from its machine-readable card (dataset.json).

The card starts with a Hugging Face dataset-card YAML block (licence, task category, size category, who
made the labels (``annotations_creators``), the datasets it derives from (``source_datasets``) and a
``configs`` entry whose ``data_files`` point at ``images/``), so ``datasets.load_dataset("<folder>")`` on the
folder itself (or on its Hub repository) gives a ``train`` split: the image, its ``dmos`` and the provenance
columns ``origin``, ``ref_img``, ``dist_type`` and ``dist_level`` of ``images/metadata.csv``. Only images
inside the folder can be rows there: referenced (not shipped) source rows are in ``train.csv`` only.
The card links croissant.json, the same folder in MLCommons Croissant (reshape.croissant).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

#: Hugging Face size categories (the Hub's own buckets), upper bounds exclusive.
_SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
]
SOURCE_LICENCE_URL = "http://database.mmsp-kn.de"


def size_category(rows: int) -> str:
    for bound, name in _SIZE_CATEGORIES:
        if rows < bound:
            return name
    return "n>10M"


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "source"


def annotations_creators(card: dict[str, Any]) -> list[str]:
    """Who made the labels (the Hub's values): pseudo rows are machine-generated; KADID-10k's own labels
    are means of crowdsourced ratings. Another source set's labels are not described, since reshape cannot
    know who made them ("other" when nothing else is known)."""
    origin = card["counts"]["origin"]
    creators = ["machine-generated"] if origin.get("pseudo") else []
    if origin.get("source") and "KADID-10k" in card["source"]["name"]:
        creators.append("crowdsourced")
    return creators or ["other"]


def hub_metadata(card: dict[str, Any]) -> dict[str, Any]:
    """The dataset-card YAML fields (as huggingface_hub's ``DatasetCardData`` names them)."""
    files = card["files"]
    in_folder = card["counts"]["files"].get("hub_rows", card["counts"]["rows"])
    sources = ["original"] if card["counts"]["origin"].get("pseudo") else []
    return {
        "pretty_name": " ".join(str(card["name"]).split()),  # one line: no block of the header starts in it
        "annotations_creators": annotations_creators(card),
        "source_datasets": [*sources, f"extended|{_slug(card['source']['name'])}"],
        # The images inherit the source datasets' research-only terms (see "Source dataset and licence").
        "license": "other",
        "license_name": "source-dataset-terms",
        "license_link": SOURCE_LICENCE_URL,
        "task_categories": ["other"],
        "tags": ["image-quality-assessment", "iqa", "synthetic-distortions", "syndr-iqa", "reshape"],
        "size_categories": [size_category(in_folder)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": f"{Path(files['metadata']).parent.as_posix()}/**"}],
                "default": True,
            }
        ],
    }


def yaml_header(card: dict[str, Any]) -> str:
    """``---`` YAML ``---`` block for the top of README.md (JSON scalars, which YAML reads as written)."""
    import yaml

    body = yaml.safe_dump(hub_metadata(card), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{body}---\n"


# ----------------------------------------------------------------------------------------------- escaping
#: Characters that start inline Markdown (emphasis, links, code, tables, strikethrough, headings' closing
#: hashes): backslash-escaped in free text, so a name renders as the text it is.
_MD_INLINE = re.compile(r"([\\`*_\[\]|~#!])")


def md_text(value: Any) -> str:
    """Free text a user gave (a name, a note, a source name) as ONE line of Markdown that renders as that
    text: line breaks become spaces (so no line of it can start a block: ``---`` front matter, a heading,
    a quote), ``& < >`` become HTML entities (no raw HTML: ``<script>``, ``<img onerror>``) and inline
    Markdown characters are backslash-escaped."""
    text = " ".join(str(value).split())
    return _MD_INLINE.sub(r"\\\1", html.escape(text, quote=False))


def md_code(value: Any) -> str:
    """``value`` as an inline code span on one line, fenced with more backticks than it holds."""
    text = " ".join(str(value).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


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
                f"* **{md_text(stage)}**: "
                + ", ".join(f"`{k}` = {md_code(json.dumps(v))}" for k, v in shown.items())
            )
    return lines


def _weights_warning(card: dict[str, Any]) -> str:
    if any("random" in n for n in card.get("notes", [])):
        return ""
    for meta in card["parameters"].values():
        if isinstance(meta, dict) and str(meta.get("weights", "")).lower() in ("none", "random"):
            return (
                "\n> **Warning:** features were computed with a randomly initialised encoder "
                "(`--weights none`); the selection and pseudo-labels are therefore not meaningful beyond "
                "demonstrating the pipeline.\n"
            )
    return ""


def _source_text(source: dict[str, Any], source_sums: str) -> str:
    if source["mode"] == "referenced":
        link = md_code(f"ln -s /path/to/{_slug(source['name'])}/images source")
        return (
            f"Source images are **referenced, not shipped**: rows with `origin = source` point into "
            f"`source/`. Make the {md_text(source['name'])} image folder available there before training, "
            f"e.g. {link}, then check it with "
            f"`sha256sum -c {source_sums}`. They are not rows of the Hugging Face `train` split."
        )
    if source["mode"] == "copied":
        return f"Source images are copied into `{source['dir']}/` (`--copy-source`)."
    return "This dataset holds only pseudo-labelled images (no source rows)."


def _contents_table(files: dict[str, Any]) -> str:
    rows = [
        [
            f"`{files['train']}`",
            "training table, KADID layout: dist_img, ref_img, dmos, var, dist_type, dist_level, "
            "origin (source / pseudo)",
        ],
        [f"`{files['pyiqa_meta']}`", "pyiqa general NR meta-info: path, score"],
        [
            f"`{files['metadata']}`",
            "Hugging Face metadata: file_name (relative to images/), dmos, origin, ref_img, dist_type, "
            "dist_level",
        ],
    ]
    if "labels" in files:
        rows.append([f"`{files['labels']}`", "pseudo-label provenance: neighbours, weights, distances"])
    if "pyiqa_options" in files:
        rows.append([f"`{files['pyiqa_options']}`", "pyiqa training options (paper protocol)"])
        rows.append([f"`{files['pyiqa_launcher']}`", "runs pyiqa's training on it from any folder"])
    if "report" in files:
        rows.append(
            [f"`{files['report']}`", "HTML report: selection, new images, label provenance and sanity"]
        )
    if files.get("provenance"):
        rows.append(["`provenance/`", "selection map, neighbour labels and DRCDown clusters for the report"])
    rows.append([f"`{files['sha256sums']}`", "checksums of every file here (`sha256sum -c SHA256SUMS`)"])
    rows.append(["`dataset.json`", "this card, machine-readable"])
    if "croissant" in files:
        rows.append(
            [
                f"[`{files['croissant']}`]({files['croissant']})",
                "MLCommons Croissant 1.1 metadata with the Responsible-AI fields (`mlcroissant` loads it)",
            ]
        )
    return _md_table(["file", "what"], rows)


def _counts_section(counts: dict[str, Any]) -> list[str]:
    type_rows = []
    for t in sorted(counts["type_level"], key=int):
        levels = counts["type_level"][t]
        type_rows.append([t] + [levels.get(str(lvl), 0) for lvl in range(1, 6)] + [counts["type"][t]])
    return [
        "## Counts",
        "",
        f"{counts['rows']} rows: "
        + ", ".join(f"{v} {k}" for k, v in counts["origin"].items())
        + f"; {counts['files']['new_images']} new distorted images.",
        "",
        _md_table(["type", "level 1", "level 2", "level 3", "level 4", "level 5", "total"], type_rows),
        "",
    ]


def _loading_section(card: dict[str, Any]) -> list[str]:
    files = card["files"]
    lines = [
        "## How to load it",
        "",
        "```python",
        "import pandas as pd",
        f"train = pd.read_csv('{files['train']}')  # paths relative to this folder",
        "",
        "from datasets import load_dataset  # Hugging Face: this folder, or its Hub repository",
        "ds = load_dataset('path/to/this/folder', split='train')  # image, dmos, origin, ref_img, ...",
        "```",
        "",
    ]
    if "pyiqa_options" in files:
        lines += [
            "pyiqa (0.1.16): train with the paper's protocol from any working directory",
            "(`experiments/` is created there):",
            "",
            "```bash",
            f"python path/to/this/folder/{files['pyiqa_launcher']} -opt path/to/this/folder/{files['pyiqa_options']}",
            "```",
            "",
        ]
    if "croissant" in files:
        lines += [
            f"Croissant ([`{files['croissant']}`]({files['croissant']})): "
            f"`mlcroissant.Dataset(jsonld='path/to/this/folder/{files['croissant']}').records('train')` "
            "yields the records (image, dmos, ...).",
            "",
        ]
    return lines + ["Check integrity with `sha256sum -c SHA256SUMS` or `reshape verify .`.", ""]


def render_card(card: dict[str, Any]) -> str:
    """The human dataset card (README.md) from the machine-readable one (dataset.json)."""
    files, source, labels = card["files"], card["source"], card["labels"]
    lo, hi = labels["range"]
    plots = "\n\n".join(f"![{Path(p).stem}]({p})" for p in files.get("plots", []))
    software = ", ".join(f"{k} {v}" for k, v in card["software"].items())
    notes = card.get("notes", [])
    parts = [
        yaml_header(card),
        f"# {md_text(card['name'])}",
        "",
        "A synthetic image-quality training set reshaped with reshape (SynDR-IQA, "
        "NeurIPS 2025): new reference contents chosen by DDCUp from a candidate pool, distorted with the "
        "KADID-10k distortions and pseudo-labelled from their nearest training references, merged with the "
        "source training rows (optionally pruned by DRCDown).",
        _weights_warning(card),
        *(["## Notes", "", *[f"* {md_text(n)}" for n in notes], ""] if notes else []),
        "## Contents",
        "",
        _contents_table(files),
        "",
        f"All paths are relative to this folder. Labels: column `dmos`, higher = better, "
        f"range [{lo:g}, {hi:g}] (scale: {labels['scale']}).",
        "",
        *_counts_section(card["counts"]),
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
        f"Source: **{md_text(source['name'])}**. {_source_text(source, files.get('source_sha256sums', ''))}",
        "",
        source["licence"],
        "",
        *_loading_section(card),
    ]
    return "\n".join(parts)
