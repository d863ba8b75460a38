"""`reshape diagnose`: how clustered a dataset's features are (the paper's Fig. 1 as numbers and maps)."""

from __future__ import annotations

import click

from reshape.cli.common import is_quiet, output_options


@click.command()
@click.argument("datasets", nargs=-1, required=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for diagnose.json, diagnose.md, plots/.",
)
@click.option(
    "--encoder",
    default="resnet50",
    show_default=True,
    help="Any encoder `reshape features` accepts (resnet50, clip:<model>[:<pretrained>], colour-texture); "
    "with --checkpoint, the architecture of its weights.",
)
@click.option(
    "--weights", default="default", show_default=True, help="default, none (random init, tests only) or PATH."
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="A model trained by reshape.train_reference (its penultimate features), or a torchvision ResNet-50 "
    "/ open_clip (--encoder clip:...) state dict.",
)
@click.option(
    "--image-root",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Folder the image paths of a CSV DATASET resolve under.  [default: the CSV's folder]",
)
@click.option(
    "--source-root",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="The source dataset's image folder, for a published folder whose rows lie under source/.",
)
@click.option(
    "--by",
    "by",
    type=click.Choice(["reference", "type"]),
    multiple=True,
    help="Groupings to measure (repeatable); each must be a column of every table.  [default: whichever "
    "the table has]",
)
@click.option("--k", type=click.IntRange(min=1), default=10, show_default=True, help="Neighbours per row.")
@click.option(
    "--sample",
    type=click.IntRange(min=0),
    default=20000,
    show_default=True,
    help="Silhouettes on a seeded sample of this many rows above it (0 = all rows).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the samples and of UMAP.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Image decoding processes."
)
@click.option(
    "--patch-size",
    type=click.IntRange(min=8),
    default=224,
    show_default=True,
    help="Centre crop of a reference-trainer checkpoint (its --patch-size).",
)
@output_options
def command(datasets: tuple[str, ...], by: tuple[str, ...], **opts: object) -> None:
    """Measure how the features of DATASETS cluster by reference and by distortion type.

    DATASET: a folder written by `reshape publish`, or a CSV table with an image and a label column (a
    training table, or an authentic test set's MOS table), optionally named NAME=PATH.
    """
    from reshape.diagnose import DiagnoseConfig, run

    result = run(DiagnoseConfig(datasets=list(datasets), by=list(by) or None, **opts))
    if not is_quiet():
        for line in result.summary_lines():
            click.echo(line)
