"""`reshape select`: DDCUp selection of new reference images (paper Algorithm 1)."""

from __future__ import annotations

import click

from reshape.cli.common import fingerprint_option, is_quiet, output_options, show_progress


@click.command()
@click.option(
    "--train",
    required=True,
    type=click.Path(dir_okay=False),
    help="Features Parquet of the training references (e.g. the 81 KADID-10k refs).",
)
@click.option(
    "--candidates",
    required=True,
    type=click.Path(dir_okay=False),
    help="Features Parquet of the candidate pool (e.g. KADIS-700k refs), same encoder.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Selection Parquet to write (schema data_manifests/selection.schema.json).",
)
@click.option(
    "--max-select",
    type=click.IntRange(min=0),
    default=None,
    help="Keep at most N selected candidates: those nearest to the training set.  [default: no limit]",
)
@click.option(
    "--tau-quantile",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="tau = this quantile of the training refs' nearest-other-ref distances (0.5 = the paper).",
)
@click.option(
    "--k",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="How many nearest training refs to record per selected candidate (the label stage uses them).",
)
@click.option(
    "--approximate",
    is_flag=True,
    help="Screen candidate pairs with bfloat16 products (faster on CPUs with AVX512-BF16; unsure pairs are "
    "re-checked in float32/float64); prints its agreement with exact on a 4,000-candidate sample.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the float32 pair screening runs: auto = CUDA if present, else numpy BLAS; cpu = the torch "
    "code on the CPU; cuda = torch on the GPU. Decisions are re-checked in float64: the same selection.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a 2-D map (PNG) of training refs, candidates, selected (UMAP if installed, else PCA).",
)
@click.option(
    "--block-size",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Candidate rows per block of the pair search (memory vs. overhead; the selection does not depend on it).",
)
@output_options
@fingerprint_option
def command(**options) -> None:
    """Select new reference images from a candidate pool (DDCUp).

    Candidates pass when their nearest training ref is farther than tau and their farthest closer than
    d_max (the largest training-training distance); among them the closest remaining pair is removed
    (lower index dropped, as the official code) until no pair is closer than tau. Cosine distances.
    """
    from reshape.select import SelectConfig, run

    result = run(SelectConfig(**options, progress=show_progress()))
    if not is_quiet():
        for line in result.summary_lines():
            click.echo(line)
