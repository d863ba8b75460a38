"""`reshape prune`: DRCDown on a training table (issue #7)."""

from __future__ import annotations

from pathlib import Path

import click

from reshape.cli.common import fingerprint_option, is_quiet, output_options, show_progress


@click.command()
@click.option(
    "--features",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Features artifact (Parquet from `reshape features`), one row per training image (column image).",
)
@click.option(
    "--labels",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Training table: the train layout (dist_img,ref_img,dmos,var,dist_type,dist_level,origin) or "
    "KADID's dmos.csv layout (dist_img,ref_img,dmos,var). Rows are matched to features by dist_img = image.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pruned table: the kept rows, same columns and row order as --labels.",
)
@click.option(
    "--indices",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Per-row decisions (index,image,cluster,cluster_size,kept). Default: <out stem>.indices.csv.",
)
@click.option(
    "--label-scale",
    default=None,
    metavar="auto|0-10|1-5|0-1|0-100|MIN-MAX",
    help="Scale of the dmos column; thresholds apply on 0..10. auto stretches the observed min..max to "
    "0..10. Without it labels must already look like 0..10 (else an error).",
)
@click.option(
    "--sim-threshold",
    default=0.9,
    show_default=True,
    type=float,
    help="Link samples whose feature cosine similarity is above this.",
)
@click.option(
    "--label-threshold",
    default=1.0,
    show_default=True,
    type=float,
    help="...and whose labels (0..10) differ by less than this.",
)
@click.option(
    "--min-cluster",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Clusters larger than this keep a random max(MIN, n/2) members; others are kept whole.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random subset per cluster.")
@click.option(
    "--approximate",
    is_flag=True,
    help="k-means cell join instead of the exact search: for millions of rows; may miss a few links.",
)
@click.option(
    "--block-size",
    default=2048,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows per search block (memory vs. overhead; results do not depend on it).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "faiss", "bf16"]),
    default="auto",
    show_default=True,
    help="Exact search: faiss (FAISS BLAS range search, float32), bf16 (bf16 GEMM pre-filter; fast on CPUs "
    "with AVX-512 BF16) or auto (bf16 where the CPU has it). Both decide unsure pairs in float64: same result.",
)
@output_options
@fingerprint_option
def command(**options) -> None:
    """Remove redundant samples (DRCDown): link samples with similar features AND close labels, and
    downsample every connected cluster larger than --min-cluster.

    \b
    Example:
      reshape prune --features samples.parquet --labels train.csv --out pruned.csv --label-scale 1-5
    """
    from reshape.prune import PruneConfig, run

    result = run(PruneConfig(**options, progress=show_progress()))
    if not is_quiet():
        for line in result.summary_lines():
            click.echo(line)
