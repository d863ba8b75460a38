"""`reshape verify DIR`: check a published dataset, listing every problem."""

from __future__ import annotations

from pathlib import Path

import click

from reshape.errors import StageError


@click.command()
@click.argument("dataset_dir", type=click.Path(path_type=Path))
def command(dataset_dir: Path) -> None:
    """Check a dataset written by `reshape publish`: every file in SHA256SUMS exists and matches, no file is
    unlisted, CSVs follow their schemas, no path escapes the folder, every image a CSV names is listed, and
    labels are finite and inside the range dataset.json documents.

    Prints one line per problem (all of them) and exits 1 if there is any; 2 if DATASET_DIR is not a folder.
    """
    from reshape.verify import verify_dataset

    report = verify_dataset(dataset_dir)
    for problem in report.problems:
        click.echo(f"{dataset_dir}/{problem}")
    if not report.ok:
        raise StageError(f"{dataset_dir}: {len(report.problems)} problem(s) found")
    click.echo(
        f"{dataset_dir}: OK ({report.files_checked} files checksummed, "
        f"{report.rows_checked} CSV rows checked)"
    )
