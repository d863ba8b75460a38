"""`reshape label` (issue #6)."""

from __future__ import annotations

import click

from reshape.cli.common import not_built


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def command() -> None:
    """(not built yet: issue #6)"""
    not_built("label", "issue #6")()
