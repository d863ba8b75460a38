"""`reshape verify DIR`: check a published dataset, listing every problem."""

from __future__ import annotations

from pathlib import Path

import click

from reshape.errors import StageError


@click.command()
@click.argument("dataset_dir", type=click.Path(path_type=Path))
def command(dataset_dir: Path) -> None:
    """Check a dataset written by `reshape publish`: every file in SHA256SUMS exists and matches, no file is
    unlisted, no special file (FIFO) or names differing only in case, CSVs follow their schemas and agree,
    no path escapes the folder, every image a CSV names is listed and decodes, labels are finite and inside
    the range dataset.json documents, and every file derived from the tables (card, croissant.json,
    metadata.csv, meta_info.csv, pyiqa files, report pages) is what reshape derives from them.

    Holds the dataset's lock shared: waits for a publish writing it. Prints one line per problem (all of
    them) and exits 1 if there is any; 2 if DATASET_DIR is not a folder or not a published dataset.
    """
    from reshape.verify import VerifyConfig, run

    result = run(VerifyConfig(dataset_dir=dataset_dir))
    for line in result.summary_lines():
        click.echo(line)
    if not result.ok:
        raise StageError(f"{dataset_dir}: {len(result.report.problems)} problem(s) found")
