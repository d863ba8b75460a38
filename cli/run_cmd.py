"""`reshape run pipeline.toml`: the whole pipeline from one config, skipping up-to-date stages."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--dry-run", is_flag=True, help="Print the plan (stage, will run / up to date, why, command) only."
)
@click.option("--force", is_flag=True, help="Rerun every stage even if its artifacts are up to date.")
def command(config: Path, dry_run: bool, force: bool) -> None:
    """Run features (training refs, candidates) -> select -> distort -> label -> [prune] -> publish as
    described by CONFIG (TOML; see examples/pipeline.toml).

    \b
    [inputs]   train_refs, source_labels, source_root, candidates, out, dataset, source_name
               (paths relative to CONFIG's folder)
    [features] options of every `reshape features` run; [features_train] / [features_candidates] /
               [features_samples] override them per run
    [select] [distort] [label] [prune] [publish]
               each stage's options, keys = its CLI option names (`batch-size = 16`, flags true/false);
               [prune] runs only with `enabled = true`; without `features = <Parquet>` the
               training images are embedded first (features_samples, keyed by train.csv's dist_img)

    A stage whose artifacts carry the fingerprint of its current options and inputs is skipped; a
    changed option reruns that stage and every stage after it.
    """
    from reshape.pipeline import run_pipeline

    result = run_pipeline(config, dry_run=dry_run, force=force)
    if not dry_run:
        times = ", ".join(
            f"{r.name} {r.seconds:.1f}s" if r.ran else f"{r.name} skipped" for r in result.records
        )
        click.echo(f"done: {times}")
        click.echo(f"dataset: {result.config.dataset}")
