"""`reshape features` (issue #5)."""

from __future__ import annotations

import click

from reshape.cli.common import not_built


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def command() -> None:
    """(not built yet: issue #5)"""
    not_built("features", "issue #5")()
