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
def command(out: Path, smoke: bool) -> None:
    """Build a small source dataset from scikit-image's bundled photos (labels: an SSIM proxy, documented in
    the card), a candidate pool of crops/rescales/flips of other bundled photos, write OUT/pipeline.toml
    and run it through `reshape run`, verify the published dataset and print a summary.

    Uses ResNet-50 ImageNet weights only if they are already in the local torch cache; otherwise random-init
    weights, with a warning. Rerunning skips the up-to-date stages.
    """
    from reshape.demo import run_demo

    result = run_demo(out, smoke=smoke, echo=lambda line: click.echo(line, err=True))
    click.echo("")
    click.echo("reshape demo summary")
    weights = "ImageNet (local cache)" if result.weights == "default" else "random init (none)"
    click.echo(f"  encoder weights : {weights}")
    click.echo(f"  selected refs   : {result.n_selected}")
    click.echo(f"  images written  : {result.n_images} new distorted images")
    lo, hi = result.label_range
    click.echo(f"  pseudo labels   : {lo:.3f} .. {hi:.3f} (1..5, higher = better)")
    click.echo(f"  data build      : {result.build_seconds:.1f}s")
    for stage, seconds in result.stage_seconds.items():
        click.echo(f"  {stage:<16}: {seconds:.1f}s" if seconds else f"  {stage:<16}: up to date")
    click.echo(f"  dataset         : {result.dataset} (passes reshape verify)")
    click.echo(f"  card            : {result.dataset / 'README.md'}")
    click.echo(f"  plots           : {result.dataset / 'plots'}")
