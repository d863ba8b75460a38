"""`reshape report DATASET [--out DIR]`: (re)build the static HTML report of a published dataset."""

from __future__ import annotations

from pathlib import Path

import click

from reshape.cli.common import is_quiet, output_options


@click.command()
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the report  [default: DATASET/report, whose lines in DATASET/SHA256SUMS are updated].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Threads making thumbnails [default: two per core, at most 8].",
)
@click.option(
    "--diagnose-encoder",
    default=None,
    help="Add a Clustered features tab (reshape diagnose) embedding the rows with this encoder spec.",
)
@output_options
def command(
    dataset: Path,
    out: Path | None,
    workers: int | None,
    overwrite: bool,
    wait: bool,
    diagnose_encoder: str | None,
) -> None:
    """Build report/index.html for DATASET (a folder written by `reshape publish`) from that folder alone:
    overview, DDCUp selection map, new images, pseudo-label provenance, label sanity and DRCDown clusters.
    It opens from file:// offline (local JS/CSS, JPEG thumbnails made once and reused).

    Rebuilding replaces or deletes only files an earlier report recorded in its report.json; a file of
    yours at a name the report writes, or a report file you edited since, is refused unless --overwrite.
    Written into a published dataset (DATASET/report, or --out inside one) it holds that dataset's lock and
    updates its SHA256SUMS; DATASET is read under its lock shared (a publish in progress: stop, or --wait).
    """
    from reshape.report import run

    result = run(
        dataset, out, overwrite=overwrite, wait=wait, workers=workers, diagnose_encoder=diagnose_encoder
    )
    if not is_quiet():
        for line in result.summary_lines():
            click.echo(line)
