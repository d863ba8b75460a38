"""croissant.json: the published folder described in MLCommons Croissant 1.1 with the Responsible-AI fields.

Croissant (JSON-LD on schema.org's Dataset) is what dataset tools read natively: ``mlcroissant`` loads the
records of a folder from it, Hugging Face, Kaggle and OpenML serve it, the NeurIPS datasets track asks for it.
The document is built here by hand as plain JSON (``mlcroissant`` is heavy and only a test dependency), from
what publish already knows: the machine-readable card (dataset.json, whose ``parameters`` hold every stage's
metadata), the published train.csv rows and the sha256 of each table.

Steps:

1. **Core**: name, description, licence, citations (SynDR-IQA, KADID-10k), version, dates, creator,
   ``conformsTo`` Croissant 1.1 (the RAI fields need no separate conformance claim: their ``rai:``
   namespace is part of the standard context).
2. **Distribution**: one ``cr:FileObject`` per table (train.csv, meta_info.csv, labels.csv, the Hugging Face
   images/metadata.csv) with its sha256, and two ``cr:FileSet``s, the distorted images and the reference
   images, each by the folders and file extensions the rows use (``images/*.png``, ...).
3. **Record sets**: ``train``, one record per train.csv row, whose ``image`` is read through the distorted
   images' FileSet joined on the row's path (``dist_img`` references the file's path inside the folder),
   plus ``ref_img``, ``dmos``, ``var``, ``dist_type``, ``dist_level`` and ``origin``; and ``pseudo_labels``,
   the provenance of every pseudo label (labels.csv: neighbours, weights, distances), when published.
4. **RAI**: every field is written from the run's own metadata (source set and pool, DDCUp parameters and
   counts, distortion types, levels and seed, the type-15 denoiser, encoder and weights, k and the kNN
   softmax settings, DRCDown when pruned, the user's notes), so a random-init encoder, proxy labels or the
   non-DnCNN fallback are stated where a reviewer reads them.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from reshape.layout import (
    CROISSANT_JSON,
    DATASET_JSON,
    HF_METADATA,
    LABELS_CSV,
    META_CSV,
    REFERENCED_SOURCE_DIR,
    SUMS,
    TRAIN_CSV,
)

CONFORMS_TO = "http://mlcommons.org/croissant/1.1"
SYNDR_IQA_URL = "https://github.com/Li-aobo/SynDR-IQA"
KADID_URL = "http://database.mmsp-kn.de/kadid-10k-database.html"
SOURCE_TERMS_URL = "http://database.mmsp-kn.de"
CITATION = (
    "@inproceedings{li2025syndriqa, title={Towards Syn-to-Real IQA: A Novel Perspective on Reshaping "
    "Synthetic Data Distributions}, author={Li, Aobo and others}, booktitle={Advances in Neural Information "
    "Processing Systems (NeurIPS)}, year={2025}}\n"
    "@inproceedings{lin2019kadid, title={KADID-10k: A Large-scale Artificially Distorted IQA Database}, "
    "author={Lin, Hanhe and Hosu, Vlad and Saupe, Dietmar}, booktitle={International Conference on Quality "
    "of Multimedia Experience (QoMEX)}, year={2019}}"
)
#: The standard Croissant @context (the one mlcroissant writes), with containedIn (Croissant 1.1).
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
#: The file name at the end of a dataset-relative path (the join key of a train record and its image file).
BASENAME_REGEX = r"^(?:.*/)?([^/]+)$"
#: Image encodings mlcroissant decodes, by file extension.
IMAGE_FORMATS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".tif": "image/tiff"}
_TABLES = {
    TRAIN_CSV: ("train-csv", "training table: one row per image (KADID layout + origin)"),
    META_CSV: ("meta-info-csv", "pyiqa general NR meta-info: path, score"),
    LABELS_CSV: ("labels-csv", "pseudo-label provenance: neighbours, weights, distances"),
    HF_METADATA: ("hf-metadata-csv", "Hugging Face imagefolder metadata (file_name relative to images/)"),
}
_TRAIN_FIELDS = [
    ("ref_img", "sc:Text", "Path of the pristine reference of this image, relative to the dataset folder."),
    ("dmos", "sc:Float", "Quality label (higher = better), on the range and scale stated in dataset.json."),
    ("var", "sc:Float", "Variance of the label: of the ratings (source rows), of the kNN neighbours' labels "
     "(pseudo rows)."),
    ("dist_type", "sc:Integer", "KADID-10k distortion type, 1..25."),
    ("dist_level", "sc:Integer", "Distortion level, 1 (weakest) .. 5 (strongest)."),
    ("origin", "sc:Text", "'source': a row of the source set with its original label; 'pseudo': a new "
     "image, pseudo-labelled by reshape."),
]  # fmt: skip
_LABEL_FIELDS = [
    ("dist_img", "sc:Text", "Path of the pseudo-labelled image, relative to the dataset folder."),
    ("ref_img", "sc:Text", "Path of its new reference (a DDCUp-selected candidate)."),
    ("dmos", "sc:Float", "The pseudo label: softmax-weighted mean of the neighbours' labels."),
    ("var", "sc:Float", "Weighted variance of the neighbours' labels."),
    ("dist_type", "sc:Integer", "KADID-10k distortion type, 1..25."),
    ("dist_level", "sc:Integer", "Distortion level, 1..5."),
    (
        "neighbours",
        "sc:Text",
        "The k source references whose labels made the pseudo label, a JSON array of names "
        "(docs/artifacts.md, list-valued cells).",
    ),
    ("weights", "sc:Text", "Their softmax weights, ';'-separated, same order."),
    ("distances", "sc:Text", "Their feature distances to the new reference, ';'-separated, same order."),
]


def build(
    card: dict[str, Any], train: pd.DataFrame, table_sums: dict[str, str], *, url: str | None = None
) -> dict[str, Any]:
    """The Croissant JSON-LD of a published folder.

    ``card`` is its dataset.json, ``train`` its train.csv rows, ``table_sums`` {table path: sha256} of the
    tables in the folder (those absent are left out), ``url`` where the dataset is served, when known.
    """
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "name": card["name"],
        "description": _description(card),
        "conformsTo": CONFORMS_TO,
        "citeAs": CITATION,
        "creator": {"@type": "sc:Organization", "name": f"reshape {card['reshape_version']} (SynDR-IQA)"},
        "datePublished": card["created"],
        "dateCreated": card["created"],
        "keywords": ["image quality assessment", "IQA", "synthetic distortions", "KADID-10k", "SynDR-IQA"],
        "license": {
            "@type": "sc:CreativeWork",
            "name": "terms of the source datasets",
            "url": SOURCE_TERMS_URL,
            "description": card["source"]["licence"],
        },
        "isBasedOn": [SYNDR_IQA_URL, KADID_URL],
        "version": "1.0.0",
        "distribution": _distribution(train, table_sums),
        "recordSet": _record_sets(table_sums, join_images=_file_names_are_keys(train)),
        **rai_fields(card, train),
    }
    if url:
        doc["url"] = url
    return doc


def render(doc: dict[str, Any]) -> str:
    """The file's text: stable key order as built, UTF-8, two-space indent, final newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


# ----------------------------------------------------------------------------------------------- core
def _description(card: dict[str, Any]) -> str:
    counts = card["counts"]
    lo, hi = card["labels"]["range"]
    origin = ", ".join(f"{n} {k}" for k, n in counts["origin"].items())
    return (
        f"A synthetic image-quality training set reshaped with reshape (SynDR-IQA, NeurIPS 2025) from "
        f"{card['source']['name']}: {counts['rows']} images ({origin}), each with a quality label 'dmos' "
        f"(higher = better, range [{lo:g}, {hi:g}]). New reference contents were chosen by DDCUp from a "
        "candidate pool, distorted with the KADID-10k distortions and pseudo-labelled from their nearest "
        f"source references. Integrity: {SUMS}; the full run metadata is in {DATASET_JSON}; this file is "
        f"{CROISSANT_JSON}."
    )


def _file_set(set_id: str, description: str, paths: pd.Series) -> dict[str, Any]:
    """A FileSet of the folders and extensions ``paths`` use (``<folder>/*<ext>``)."""
    posix = [PurePosixPath(p) for p in sorted(set(paths))]
    suffixes = sorted({p.suffix.lower() for p in posix})
    formats = sorted({IMAGE_FORMATS.get(s, f"image/{s.lstrip('.')}") for s in suffixes})
    globs = sorted({f"{p.parent.as_posix()}/*{p.suffix}" for p in posix})
    return {
        "@type": "cr:FileSet",
        "@id": set_id,
        "name": set_id,
        "description": description,
        "encodingFormat": formats[0] if len(formats) == 1 else formats,
        "includes": globs,
    }


def _distribution(train: pd.DataFrame, table_sums: dict[str, str]) -> list[dict[str, Any]]:
    objects = [
        {
            "@type": "cr:FileObject",
            "@id": file_id,
            "name": path,
            "description": what,
            "contentUrl": path,
            "encodingFormat": "text/csv",
            "sha256": table_sums[path],
        }
        for path, (file_id, what) in _TABLES.items()
        if path in table_sums
    ]
    return [
        *objects,
        _file_set(
            "distorted-images",
            "The distorted images the rows of train.csv point to (dist_img). Rows of a referenced (not "
            "shipped) source set find theirs only once source/ holds the source images as a real folder "
            "(mlcroissant does not follow a symbolic link there).",
            train["dist_img"],
        ),
        _file_set("reference-images", "The pristine references of those images (ref_img).", train["ref_img"]),
    ]


def _column_field(record_id: str, file_id: str, name: str, data_type: str, description: str) -> dict:
    return {
        "@type": "cr:Field",
        "@id": f"{record_id}/{name}",
        "name": name,
        "description": description,
        "dataType": data_type,
        "source": {"fileObject": {"@id": file_id}, "extract": {"column": name}},
    }


def _file_names_are_keys(train: pd.DataFrame) -> bool:
    """Whether a file name finds exactly one image: distinct among the distorted images and unlike every
    reference's (both FileSets' folders can overlap, so a join on the name must not meet a reference)."""
    dist = [PurePosixPath(p).name for p in train["dist_img"]]
    refs = {PurePosixPath(p).name for p in train["ref_img"]}
    return len(set(dist)) == len(dist) and not refs & set(dist)


def _train_record_set(*, join_images: bool) -> dict[str, Any]:
    """``train``: one record per train.csv row. mlcroissant joins on values of one type, and a file's
    ``fullpath`` is a path object while a CSV cell is text, so the row meets its file by file name."""
    train_id = _TABLES[TRAIN_CSV][0]
    key = _column_field(
        "train",
        train_id,
        "dist_img",
        "sc:Text",
        "File name of the image (train.csv's dist_img without its folders), the key that joins the row to "
        "its file in the distorted-images FileSet.",
    )
    key["@id"], key["name"] = "train/file_name", "file_name"
    key["source"]["transform"] = {"regex": BASENAME_REGEX}
    description = "One record per row of train.csv: the image, its label and its provenance."
    fields = [key, *(_column_field("train", train_id, *spec) for spec in _TRAIN_FIELDS)]
    if join_images:
        key["references"] = {"fileSet": {"@id": "distorted-images"}, "extract": {"fileProperty": "filename"}}
        image = {
            "@type": "cr:Field",
            "@id": "train/image",
            "name": "image",
            "description": "The image itself, decoded, read from the file train.csv's dist_img names.",
            "dataType": "sc:ImageObject",
            "source": {"fileSet": {"@id": "distorted-images"}, "extract": {"fileProperty": "content"}},
        }
        fields.insert(0, image)
    else:
        description += (
            " Two images share a file name here, so records carry no decoded image: read the file at "
            "train.csv's dist_img."
        )
    return {
        "@type": "cr:RecordSet",
        "@id": "train",
        "name": "train",
        "description": description,
        "key": {"@id": "train/file_name"},
        "field": fields,
    }


def _record_sets(table_sums: dict[str, str], *, join_images: bool) -> list[dict[str, Any]]:
    record_sets = [_train_record_set(join_images=join_images)]
    if LABELS_CSV in table_sums:
        labels_id = _TABLES[LABELS_CSV][0]
        record_sets.append(
            {
                "@type": "cr:RecordSet",
                "@id": "pseudo_labels",
                "name": "pseudo_labels",
                "description": "How each pseudo label was made (labels.csv): the k nearest source "
                "references of the new reference, their softmax weights and feature distances.",
                "key": {"@id": "pseudo_labels/dist_img"},
                "field": [_column_field("pseudo_labels", labels_id, *spec) for spec in _LABEL_FIELDS],
            }
        )
    return record_sets


# ----------------------------------------------------------------------------------------------- RAI
#: Fidelity of reshape's distortions against the reference generator's outputs (docs/distortions.md,
#: "Deviations from the reference generator"), by type.
_FIDELITY = {
    **dict.fromkeys((1, 2, 17, 18, 21, 25), "bit-exact or within one 8-bit step (>= 73 dB PSNR)"),
    **dict.fromkeys((4, 8, 16, 24), ">= 63 dB PSNR (Lab conversion differences)"),
    7: ">= 61 dB PSNR",
    10: "bit-exact on coffee.png; 34.8-42 dB on chelsea.png (rounding vs the reference writer's truncation)",
    **dict.fromkeys((5, 11, 12, 13, 14, 19, 20, 22, 23), "random or resampled: matches statistically only"),
}


def _stage(card: dict[str, Any], name: str) -> dict[str, Any]:
    meta = card["parameters"].get(name)
    return meta if isinstance(meta, dict) else {}


def _encoder(card: dict[str, Any]) -> tuple[str, str, str]:
    """(encoder, weights, preprocessing) of the features that chose and labelled the new images."""
    feats = _stage(card, "candidate_features") or _stage(card, "train_features")
    encoder = feats.get("encoder") or _stage(card, "selection").get("encoder") or "unknown encoder"
    return str(encoder), str(feats.get("weights", "unknown")), str(feats.get("preprocessing", "unknown"))


def _random_init(card: dict[str, Any]) -> bool:
    return any(
        str(_stage(card, s).get("weights", "")).lower().startswith(("none", "random"))
        for s in ("train_features", "candidate_features")
    )


def _types_levels(card: dict[str, Any], train: pd.DataFrame) -> tuple[list[int], list[int]]:
    manifest = _stage(card, "manifest")
    pseudo = train[train["origin"] == "pseudo"]
    types = manifest.get("types") or sorted(int(t) for t in pseudo["dist_type"].unique())
    levels = manifest.get("levels") or sorted(int(v) for v in pseudo["dist_level"].unique())
    return [int(t) for t in types], [int(v) for v in levels]


def _collection(card: dict[str, Any]) -> str:
    source, counts, sel = card["source"], card["counts"], _stage(card, "selection")
    n_source = counts["origin"].get("source", 0)
    text = (
        f"Source set: {source['name']}, {n_source} of its rows kept with their original labels (images "
        f"{source['mode']})."
    )
    if not sel:
        text += " No DDCUp selection was part of this publish" + (
            f"; {counts['origin'].get('pseudo', 0)} pseudo-labelled rows came from a labels table."
            if counts["origin"].get("pseudo")
            else ": no new contents."
        )
        return text + _pruned(card)
    text += (
        f" New contents: a candidate pool of {sel.get('n_candidates', '?')} unlabelled "
        f"images, from which DDCUp (SynDR-IQA Algorithm 1) selected {sel.get('n_selected', '?')} new "
        f"references: candidates whose nearest of the {sel.get('n_train', '?')} training references is "
        f"farther than tau = {sel.get('tau', '?')} (quantile {sel.get('tau_quantile', '?')} of the training "
        f"references' nearest-neighbour distances) and whose farthest is closer than d_max = "
        f"{sel.get('d_max', '?')} (cosine distances), then thinned until no two are closer than tau"
        f"{_capped(sel)}."
    )
    return text + _pruned(card)


def _pruned(card: dict[str, Any]) -> str:
    prune = _stage(card, "train_csv")
    if "min_cluster" not in prune:
        return ""
    return (
        " The table was then pruned by DRCDown (SynDR-IQA Algorithm 3): samples with feature cosine "
        f"similarity above {prune.get('sim_threshold')} and labels (0..10 scale) closer than "
        f"{prune.get('label_threshold')} are linked, and a linked cluster larger than {prune.get('min_cluster')} "
        f"keeps a random half (at least {prune.get('min_cluster')}; seed {prune.get('seed')})"
        f"{_kept(prune.get('stats', {}))}."
    )


def _capped(sel: dict[str, Any]) -> str:
    cap = sel.get("max_select")
    return f", at most {cap} kept" if cap else ""


def _kept(stats: dict[str, Any]) -> str:
    kept, total = stats.get("kept"), stats.get("samples")
    return f", keeping {kept} of {total} rows" if kept is not None and total is not None else ""


def _manipulation(card: dict[str, Any], train: pd.DataFrame) -> str:
    import distortions

    manifest = _stage(card, "manifest")
    if not card["counts"]["files"].get("new_images"):
        return "No new images: reshape distorted nothing for this folder; its images are the source set's."
    types, levels = _types_levels(card, train)
    names = ", ".join(f"{t} {distortions.TABLE[t].name}" for t in types if t in distortions.TABLE)
    fidelity = "; ".join(f"type {t}: {_FIDELITY[t]}" for t in types if t in _FIDELITY)
    text = (
        f"{card['counts']['files']['new_images']} new images: every selected reference distorted with "
        f"{len(types)} of the 25 KADID-10k distortion types ({names}) at levels {levels} by reshape's "
        f"re-implementation of the KADID-10k generator (distortions library), seed {manifest.get('seed', '?')}, "
        f"format {manifest.get('format', '?')}, resize {manifest.get('resize')}. Fidelity against the "
        f"reference generator's outputs: {fidelity or 'see docs/distortions.md'}."
    )
    if 15 in types:
        text += f" Type 15 (denoise) used the denoiser {manifest.get('denoiser')!r}."
    return text


def _annotation(card: dict[str, Any]) -> str:
    labels, (encoder, weights, _) = _stage(card, "labels"), _encoder(card)
    if not card["counts"]["origin"].get("pseudo"):
        return f"No pseudo labels: every row keeps its label from {card['source']['name']}."
    return (
        f"Source rows keep the labels of {card['source']['name']}. Each new image is pseudo-labelled by "
        f"machine (SynDR-IQA Algorithm 2), with no human rating: the k = {labels.get('k', '?')} nearest "
        f"training references of its new reference by cosine distance in {encoder} feature space (weights: "
        f"{weights}) are found, those farther than margin = {labels.get('margin', '?')} beyond the nearest "
        f"are dropped, the rest are softmax-weighted by distance (temperature {labels.get('temperature', '?')}, "
        f"weighting {labels.get('weighting', '?')}); the label of the image of type t and level l is the "
        "weighted mean of those references' labels at (t, l), and 'var' their weighted variance. Label "
        f"scale: {card['labels']['scale']}, range {card['labels']['range']}, higher = better. Per-row "
        f"provenance is in {LABELS_CSV}."
    )


def _limitations(card: dict[str, Any]) -> list[str]:
    limits = ["Only synthetic distortions: models trained on it may still not generalise to authentic ones."]
    if card["counts"]["origin"].get("pseudo"):
        limits.append(
            "Pseudo labels are transferred from similar source contents, not measured: they inherit the "
            "source labels' noise and can be wrong where the feature space misjudges similarity."
        )
    if _random_init(card):
        limits.append(
            "The features came from a randomly initialised encoder (no pretrained weights): the selection "
            "and the pseudo labels are not meaningful beyond demonstrating the pipeline."
        )
    if _encoder(card)[0] == "colour-texture":
        limits.append(
            "The features are colour and texture statistics (reshape's offline fallback encoder), not the "
            "paper's ResNet-50 features: candidates were chosen and labelled by look-alike colours and "
            "textures, not by the content similarity the method assumes."
        )
    denoiser = str(_stage(card, "manifest").get("denoiser") or "")
    if "NOT DnCNN" in denoiser or "fallback" in denoiser:
        limits.append(
            "Type 15 (denoise) images were made with a non-DnCNN fallback denoiser; they do not match the "
            "KADID-10k generator's DnCNN artefacts."
        )
    return limits + list(card.get("notes", []))


def rai_fields(card: dict[str, Any], train: pd.DataFrame) -> dict[str, Any]:
    """The Croissant RAI properties, from the run's metadata (dataset.json) and the published rows."""
    encoder, weights, preprocessing = _encoder(card)
    labels, counts = _stage(card, "labels"), card["counts"]
    n_pseudo, n_source = counts["origin"].get("pseudo", 0), counts["origin"].get("source", 0)
    source_name = card["source"]["name"]
    human = "a mean of 30 crowdsourced ratings" if "KADID-10k" in source_name else f"as {source_name} made it"
    return {
        "rai:dataCollection": _collection(card),
        "rai:dataCollectionType": ["Secondary Data analysis", "Software Collection"],
        "rai:dataPreprocessingProtocol": (
            f"Features: {encoder}, weights {weights}, preprocessing: {preprocessing}. Image paths were "
            "checked to stay inside their roots, duplicates refused, every published file checksummed "
            f"({SUMS})."
        ),
        "rai:dataManipulationProtocol": _manipulation(card, train),
        "rai:dataAnnotationProtocol": _annotation(card),
        "rai:machineAnnotationTools": [
            f"reshape {card['reshape_version']} label stage (kNN softmax pseudo labels, k = "
            f"{labels.get('k', '?')}, neighbours from {labels.get('neighbours_from', 'embeddings')})",
            f"{encoder} feature encoder, weights: {weights}",
            *(f"{k} {v}" for k, v in card.get("software", {}).items() if k in ("faiss-cpu", "torch")),
        ],
        "rai:annotationsPerItem": (
            f"{n_pseudo} pseudo-labelled rows: 0 human labels, 1 machine label each; {n_source} source rows: "
            f"1 label each from the source set ({human})."
        ),
        "rai:dataLimitations": _limitations(card),
        "rai:dataBiases": [
            f"The new contents follow the candidate pool ({_stage(card, 'selection').get('n_candidates', '?')} "
            "images) and DDCUp's distance band, so contents unlike both the pool and the source references "
            "stay under-represented.",
            f"Pseudo labels lean towards the labels of the {labels.get('k', '?')} nearest source references.",
        ],
        "rai:dataUseCases": [
            "Training and fine-tuning no-reference image quality models (the SynDR-IQA protocol: train on "
            "this set, test on authentic-distortion sets).",
            "Not a test set: pseudo labels are not ground truth.",
        ],
        "rai:personalSensitiveInformation": (
            "No personal attributes are recorded; images may show people as in the source set and the "
            f"candidate pool ({card['source']['name']})."
        ),
        "rai:dataSocialImpact": "Low: a research training set for image quality models.",
        "rai:dataReleaseMaintenancePlan": (
            f"A static snapshot made by `reshape publish` on {card['created']}: rerunning the pipeline with the "
            f"same inputs and parameters rebuilds it byte for byte; {SUMS} identifies this version, "
            "`reshape verify` checks it. No scheduled updates."
        ),
    }


# ----------------------------------------------------------------------------------------------- check
def check(doc: Any, root: Path, sums: dict[str, str], train: pd.DataFrame | None) -> list[tuple[str, str]]:
    """(where, problem) for every way croissant.json disagrees with the folder: not Croissant 1.1, a
    table it describes with another sha256 than SHA256SUMS lists, a table in the folder it does not
    describe, a train record set that does not read train.csv, or records that would not be one per
    train.csv row, each with its image (what mlcroissant's join would find, predicted without it)."""
    if not isinstance(doc, dict):
        return [(CROISSANT_JSON, "is not a JSON object")]
    problems = []
    for key in ("distribution", "recordSet"):
        if not isinstance(doc.get(key, []), list):
            return [(CROISSANT_JSON, f"{key} is not a list ({type(doc[key]).__name__})")]
    if doc.get("conformsTo") != CONFORMS_TO:
        problems.append((CROISSANT_JSON, f"conformsTo is {doc.get('conformsTo')!r}, not {CONFORMS_TO!r}"))
    distribution = [d for d in doc.get("distribution", []) if isinstance(d, dict)]
    described = {}
    for obj in distribution:
        if obj.get("@type") == "cr:FileObject":
            described[str(obj.get("contentUrl"))] = obj
    for rel, obj in sorted(described.items()):
        if rel not in sums:
            problems.append((CROISSANT_JSON, f"describes {rel!r}, which is not listed in {SUMS}"))
        elif obj.get("sha256") != sums[rel]:
            problems.append(
                (CROISSANT_JSON, f"sha256 of {rel} differs from {SUMS} (file or metadata changed)")
            )
    missing = [rel for rel in _TABLES if rel in sums and rel not in described]
    if missing:
        problems.append((CROISSANT_JSON, f"does not describe {', '.join(missing)}"))
    train_set = next(
        (r for r in doc.get("recordSet", []) if isinstance(r, dict) and r.get("@id") == "train"), None
    )
    if train_set is None:
        return [*problems, (CROISSANT_JSON, "has no 'train' record set")]
    if train is not None:
        try:
            problems += _check_train_records(doc, train_set, root, train)
        except (TypeError, AttributeError, KeyError, ValueError) as exc:  # a field of another JSON type
            problems.append((CROISSANT_JSON, f"record set 'train' has an unexpected shape ({exc})"))
    return problems


def _check_train_records(
    doc: dict, train_set: dict, root: Path, train: pd.DataFrame
) -> list[tuple[str, str]]:
    """Records are one per train.csv row when the record set reads train.csv and, if it joins images, every
    row's file name finds exactly its own file in the distorted-images FileSet (rows of a referenced
    source set are exempt: their images are not part of the folder)."""
    train_id = next(
        (
            str(d.get("@id"))
            for d in doc.get("distribution", [])
            if isinstance(d, dict) and d.get("contentUrl") == TRAIN_CSV
        ),
        None,
    )
    fields = [f for f in train_set.get("field", []) if isinstance(f, dict)]
    sources = {
        json.dumps(f.get("source", {}).get("fileObject"), sort_keys=True)
        for f in fields
        if "fileObject" in f.get("source", {})
    }
    if train_id is None or sources != {json.dumps({"@id": train_id})}:
        return [(CROISSANT_JSON, f"record set 'train' does not read its columns from {TRAIN_CSV}")]
    file_sets = {
        str(d.get("@id")): d
        for d in doc.get("distribution", [])
        if isinstance(d, dict) and d.get("@type") == "cr:FileSet"
    }
    joined = [f for f in fields if f.get("references", {}).get("fileSet")]
    if not joined:
        return []
    includes = file_sets.get(str(joined[0]["references"]["fileSet"].get("@id")), {}).get("includes", [])
    found = _files_by_name(root, [includes] if isinstance(includes, str) else list(includes))
    problems = []
    for line, rel in enumerate(train["dist_img"].astype(str), start=2):
        matches = found.get(PurePosixPath(rel).name, [])
        if len(matches) > 1:
            problems.append(
                (
                    f"{CROISSANT_JSON}",
                    f"train.csv line {line}: {len(matches)} images named like {rel!r}: the train records would not be one per row",
                )
            )
        elif not rel.startswith(REFERENCED_SOURCE_DIR + "/") and matches != [rel]:
            problems.append(
                (f"{CROISSANT_JSON}", f"train.csv line {line}: the record would not find its image {rel!r}")
            )
    return problems


def _files_by_name(root: Path, patterns: list[str]) -> dict[str, list[str]]:
    """{file name: [paths]} of the files mlcroissant's local FileSet reads: a walk of the folder that does
    not follow symbolic links, matched with fnmatch (``*`` crosses ``/``, as mlcroissant matches)."""
    import fnmatch
    import os
    import re

    regexes = [re.compile(fnmatch.translate(p)) for p in patterns]
    found: dict[str, list[str]] = {}
    for folder, _, names in os.walk(root):
        for name in names:
            rel = (Path(folder) / name).relative_to(root).as_posix()
            if any(r.match(rel) for r in regexes):
                found.setdefault(name, []).append(rel)
    return found
