"""`reshape publish OUT_DIR`: assemble the reshaped dataset as a static, self-describing folder."""

from __future__ import annotations

from pathlib import Path

import click

from reshape.cli.common import fingerprint_option
from reshape.errors import BadInputError

_FILE = click.Path(dir_okay=False, path_type=Path)
_DIR = click.Path(file_okay=False, path_type=Path)


def _range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise BadInputError(f"--label-range {text!r}: expected LO,HI (e.g. 1,5)") from None
    if not lo < hi:
        raise BadInputError(f"--label-range {text!r}: LO must be below HI")
    return lo, hi


@click.command()
@click.argument("out_dir", type=_DIR)
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
    default=True,
    show_default=True,
    help="Hard-link new images from the distort output when possible, else copy.",
)
@click.option("--name", default=None, help="Dataset name in the card  [default: OUT_DIR's name].")
@click.option(
    "--label-range",
    default=None,
    metavar="LO,HI",
    help="Documented label range enforced by verify  [default: 0,10 for 0-10 labels, 1,5 when every "
    "label fits KADID's DMOS scale, else the observed range].",
)
@click.option(
    "--note", "notes", multiple=True, help="A note for the card (repeatable), e.g. how the labels were made."
)
@fingerprint_option
def command(
    out_dir: Path,
    from_run: Path | None,
    train_csv: Path | None,
    labels: Path | None,
    manifest: Path | None,
    images_root: Path | None,
    selection: Path | None,
    train_features: Path | None,
    candidate_features: Path | None,
    source_root: Path | None,
    candidate_root: Path | None,
    source_name: str | None,
    copy_source: bool,
    link: bool,
    name: str | None,
    label_range: str | None,
    notes: tuple[str, ...],
    fingerprint: str | None,
) -> None:
    """Publish the reshaped dataset into OUT_DIR: images, train.csv (KADID layout), meta_info.csv (pyiqa),
    images/metadata.csv (Hugging Face imagefolder), SHA256SUMS, dataset.json and a README.md card with plots.

    OUT_DIR is built beside itself and swapped in when complete; an existing published dataset there is
    replaced. Options given explicitly override what --from-run finds.
    """
    from reshape.publish import PublishInputs, run_publish

    inputs = PublishInputs.from_run(from_run) if from_run is not None else PublishInputs()
    explicit = {
        "train_csv": train_csv,
        "labels": labels,
        "manifest": manifest,
        "images_root": images_root,
        "selection": selection,
        "train_features": train_features,
        "candidate_features": candidate_features,
        "source_root": source_root,
        "candidate_root": candidate_root,
        "source_name": source_name,
    }
    for key, value in explicit.items():
        if value is not None:
            setattr(inputs, key, value)
    inputs.notes = [*inputs.notes, *notes]
    result = run_publish(
        out_dir,
        inputs,
        copy_source=copy_source,
        link=link,
        name=name,
        label_range_override=_range(label_range),
        fingerprint=fingerprint,
    )
    origin = ", ".join(f"{n} {k}" for k, n in result.counts["origin"].items())
    click.echo(
        f"published {result.rows} rows ({origin}), {result.files} files, labels in "
        f"[{result.label_range[0]:g}, {result.label_range[1]:g}] -> {result.out_dir}"
    )
    click.echo(f"card: {result.card}")
    for plot in result.plots:
        click.echo(f"plot: {plot}")
