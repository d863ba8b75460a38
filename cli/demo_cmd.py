"""`reshape demo`: the whole pipeline on embedded data (no network, no downloads)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reshape-demo"),
    show_default=True,
    help="Folder for the demo data, the run's artifacts and the published dataset.",
)
@click.option(
    "--smoke", is_flag=True, help="A small variant (2 distortion types, 12 candidates) for a quick check."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace demo files (data, run outputs) that were edited since the demo wrote them; without it "
    "the demo stops before any work and names them.",
)
def command(out: Path, smoke: bool, overwrite: bool) -> None:
    """Build a small source dataset from scikit-image's bundled photos (labels: an SSIM proxy, documented in
    the card), a candidate pool of crops/rescales/flips of other bundled photos, write OUT/pipeline.toml
    and run it through `reshape run`, verify the published dataset and print a summary.

    Uses ResNet-50 ImageNet weights only if they are already in the local torch cache; otherwise random-init
    weights, with a warning. Rerunning skips the up-to-date stages.
    """
    from reshape.cli.common import is_quiet
    from reshape.demo import run_demo

    quiet = is_quiet()
    result = run_demo(
        out,
        smoke=smoke,
        echo=(lambda line: None) if quiet else lambda line: click.echo(line, err=True),
        overwrite=overwrite,
    )
    if not quiet:
        for line in result.summary_lines():
            click.echo(line)
