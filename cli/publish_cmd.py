"""`reshape publish --out DIR`: assemble the reshaped dataset as a static, self-describing folder."""

from __future__ import annotations

from pathlib import Path

import click

from reshape.cli.common import fingerprint_option, is_quiet, output_options, show_progress

_FILE = click.Path(dir_okay=False, path_type=Path)
_DIR = click.Path(file_okay=False, path_type=Path)


@click.command()
@click.argument("old_out_dir", metavar="[OUT_DIR]", required=False, type=_DIR)
@click.option(
    "--out",
    "out_dir",
    type=_DIR,
    help="Output folder of the published dataset (the positional OUT_DIR is the old spelling, still accepted).",
)
@click.option("--from-run", type=_DIR, help="A `reshape run` output root: read every artifact from it.")
@click.option(
    "--train-csv",
    type=_FILE,
    help="Training table (train schema: source + pseudo rows), e.g. train.csv "
    "or pruned.csv from `reshape prune`.",
)
@click.option("--labels", type=_FILE, help="labels.csv from `reshape label` (pseudo rows with provenance).")
@click.option(
    "--manifest", type=_FILE, help="Distortion manifest CSV; published images are checked against its sha256."
)
@click.option(
    "--images-root",
    type=_DIR,
    help="Folder the pseudo rows' dist_img paths are relative to (the "
    "distort output folder; default: the manifest's folder).",
)
@click.option(
    "--selection", type=_FILE, help="selection.parquet from `reshape select` (selection map, parameters)."
)
@click.option("--train-features", type=_FILE, help="Features Parquet of the training refs (selection map).")
@click.option(
    "--candidate-features", type=_FILE, help="Features Parquet of the candidate pool (selection map)."
)
@click.option(
    "--prune-indices",
    type=_FILE,
    help="prune_indices.csv from `reshape prune` (the report's DRCDown clusters; default with --from-run: "
    "the run's, when it pruned).",
)
@click.option(
    "--source-root", type=_DIR, help="Folder the source rows' paths are relative to (e.g. KADID-10k images/)."
)
@click.option(
    "--candidate-root",
    type=_DIR,
    help="Folder of the candidate pool (new references); default: the selection's image_root.",
)
@click.option(
    "--source-name", default=None, help="Name of the source dataset for the card  [default: KADID-10k]."
)
@click.option(
    "--copy-source/--reference-source",
    default=False,
    show_default=True,
    help="Copy the source images into images/source/ instead of referencing them under source/.",
)
@click.option(
    "--link/--copy",
    default=False,
    show_default=True,
    help="--link hard-links images from the run instead of copying them (no extra space; falls back to a copy "
    "across filesystems). Then the published file and the run's artifact are ONE file: editing either edits "
    "both.",
)
@click.option("--name", default=None, help="Dataset name in the card  [default: the output folder's name].")
@click.option(
    "--label-range",
    default=None,
    metavar="LO,HI",
    help="Documented label range enforced by verify  [default: 0,10 for 0-10 labels, 1,5 when every "
    "label fits KADID's DMOS scale, else the observed range].",
)
@click.option(
    "--note", multiple=True, help="A note for the card (repeatable), e.g. how the labels were made."
)
@click.option(
    "--val-root",
    multiple=True,
    metavar="NAME=DIR",
    help="Image folder of an authentic test set for pyiqa/test.yml, scored after training; it never "
    "validates or chooses a model (livec, koniq10k, bid; repeatable; else $RESHAPE_VAL_ROOT_<NAME>).",
)
@click.option(
    "--val-meta",
    multiple=True,
    metavar="NAME=CSV",
    help="pyiqa meta-info CSV of a --val-root set (else $RESHAPE_VAL_META_<NAME>, else found in pyiqa's "
    "download layout: meta_info/meta_info_<Class>.csv beside or above DIR).",
)
@click.option(
    "--push-to-hub",
    metavar="OWNER/NAME",
    default=None,
    help="After publishing (and verifying the checksums), upload the folder as a Hugging Face dataset "
    "repository (token from `hf auth login` or $HF_TOKEN; endpoint $HF_ENDPOINT).",
)
@click.option("--private", is_flag=True, help="Create the Hub repository private (with --push-to-hub).")
@click.option("--revision", default=None, help="Hub branch to push to, created if missing [default: main].")
@click.option(
    "--diagnose-encoder",
    default=None,
    help="Add a Clustered features tab to the report (reshape diagnose) embedding the rows with this encoder.",
)
@output_options
@fingerprint_option
def command(**options) -> None:
    """Publish the reshaped dataset into --out DIR: images, train.csv (KADID layout), meta_info.csv (pyiqa),
    images/metadata.csv (Hugging Face), pyiqa/train.yml (pyiqa training, paper protocol), SHA256SUMS,
    dataset.json, a README.md card (Hugging Face dataset card) with plots, and report/index.html (a static
    HTML report, see `reshape report`).

    Images are copied (--link to hard-link). Publishing again into OUT_DIR replaces or deletes only the files
    the previous publish recorded in SHA256SUMS; files you added there stay, and a file of yours at a name
    publish writes, or a recorded file you edited since (its bytes no longer match SHA256SUMS), is refused
    unless --overwrite. A publish that fails leaves the old dataset as it was. Every image copied is decoded
    first (empty, truncated or decompression-bomb images stop it). Options given explicitly override what
    --from-run finds.
    `reshape publish OUT_DIR` (positional) is the old spelling of `--out OUT_DIR`.
    """
    from reshape.publish import PublishConfig, run

    options["out_dir"] = _one_output(options.pop("old_out_dir"), options["out_dir"])

    options["note"] = list(options["note"])
    options["val_root"] = list(options["val_root"])
    options["val_meta"] = list(options["val_meta"])
    result = run(PublishConfig(**options, progress=show_progress()))
    if not is_quiet():
        for line in result.summary_lines():
            click.echo(line)


def _one_output(positional: Path | None, out: Path | None) -> Path:
    """`--out DIR`, or the old positional spelling; both, unless equal, or neither is a usage error."""
    if positional is None and out is None:
        raise click.UsageError("Missing option '--out' (the output folder of the published dataset).")
    if positional is not None and out is not None and positional != out:
        raise click.UsageError(f"two output folders given: OUT_DIR {positional} and --out {out}; use --out")
    return out if out is not None else positional
