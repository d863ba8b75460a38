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
@click.option(
    "--wait", is_flag=True, help="If another run holds this run folder, wait for it instead of failing."
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace files the run wrote that were edited since (named before any stage runs); without it "
    "the run stops and leaves them.",
)
def command(config: Path, dry_run: bool, force: bool, wait: bool, overwrite: bool) -> None:
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

    A stage is skipped when its artifacts carry the fingerprint of its current options and inputs AND
    every output it recorded in run.json is still there unchanged. A changed option reruns that stage and
    every stage after it; a missing or changed output reruns only that stage, which rebuilds just that.
    run.json keeps one history entry per run. A file the run recorded that was edited since (a changed
    labels.csv, distorted image or samples/ file) is yours: the run stops before any stage, naming it,
    unless --overwrite.
    """
    from reshape.cli.common import is_quiet
    from reshape.pipeline import run_pipeline

    if dry_run:
        run_pipeline(config, dry_run=True, force=force, echo=click.echo)
        return
    progress = (lambda line: None) if is_quiet() else (lambda line: click.echo(line, err=True))
    result = run_pipeline(config, force=force, wait=wait, overwrite=overwrite, echo=progress)
    if not is_quiet():
        for line in result.summary_lines():
            click.echo(line)
