"""Helpers shared by the click commands: logging set-up, error reporting, option parsing."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from reshape.errors import ReshapeError

log = logging.getLogger("reshape")


def setup_logging(verbosity: int) -> None:
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(
        max(-1, min(verbosity, 2)), logging.DEBUG
    )
    logging.basicConfig(
        level=level, format="reshape: %(levelname)s: %(message)s", stream=sys.stderr, force=True
    )
    logging.captureWarnings(True)


class ReshapeGroup(click.Group):
    """A click group that turns ReshapeError into one stderr line and its exit code (2 = bad input)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReshapeError as exc:
            msg = str(exc).replace("\n", " ")
            click.echo(f"reshape: error: {msg}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("reshape: interrupted", err=True)
            ctx.exit(130)


def is_quiet() -> bool:
    """True after ``reshape -q``: stages then print no summary and show no progress bar."""
    return logging.getLogger("reshape").getEffectiveLevel() > logging.WARNING


def show_progress(disabled: bool = False) -> bool:
    """Progress bars only on a terminal, and not after ``-q`` (or a stage's own ``--no-progress``)."""
    return not disabled and sys.stderr.isatty() and not is_quiet()


#: hidden on every stage: `reshape run` passes the stage's fingerprint, stored in its artifact's metadata
fingerprint_option = click.option(
    "--fingerprint",
    hidden=True,
    default=None,
    help="Stored in the artifact metadata (used by `reshape run`).",
)


def int_list(text: str | None) -> list[int] | None:
    """Parse '1,3,5' or '1-5' or '1,3-5' into a list of ints."""
    if text is None:
        return None
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out
