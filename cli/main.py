"""``reshape`` console entry point: one click group, one sub-command per stage."""

from __future__ import annotations

import click

from reshape import __version__
from reshape.cli.common import ReshapeGroup, setup_logging

STAGES = ["features", "select", "distort", "label", "prune", "publish", "verify", "run", "demo"]


@click.group(
    cls=ReshapeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, "--version", prog_name="reshape")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", count=True, help="Only errors.")
def cli(verbose: int, quiet: int) -> None:
    """reshape: the SynDR-IQA pipeline as offline stages that each leave a static artifact.

    \b
    features -> select (DDCUp) -> distort -> label -> prune (DRCDown) -> publish -> verify
    `reshape run pipeline.toml` runs them all; `reshape demo` runs them on embedded data.
    Exit codes: 0 ok, 1 runtime failure, 2 usage error or bad input.
    """
    setup_logging(verbose - quiet)


def _register() -> None:
    import importlib

    for name in STAGES:
        module = importlib.import_module(f"reshape.cli.{name}_cmd")
        cli.add_command(module.command, name=name)


_register()


def main() -> None:
    cli(prog_name="reshape")


if __name__ == "__main__":
    main()
