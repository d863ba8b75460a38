"""Helpers shared by the click commands: logging set-up, error reporting, option parsing."""

from __future__ import annotations

import errno
import logging
import os
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
    from reshape.steps import STEP_LOGGER

    # "about to take a while" lines: shown unless -q, without a level name
    steps = logging.getLogger(STEP_LOGGER)
    steps.handlers[:] = [logging.StreamHandler(sys.stderr)]
    steps.handlers[0].setFormatter(logging.Formatter("reshape: %(message)s"))
    steps.setLevel(logging.INFO if verbosity >= 0 else logging.ERROR)
    steps.propagate = False


#: The group's own options, also accepted after the sub-command (`reshape distort ... -q`).
GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose", "--debug")


def debug_enabled() -> bool:
    """``reshape --debug`` or RESHAPE_DEBUG=1: faults keep their traceback."""
    return os.environ.get("RESHAPE_DEBUG", "").strip() not in ("", "0", "false", "no")


def fault_line(exc: BaseException) -> tuple[str, int] | None:
    """One line and the exit code for an error the user can act on, or None for a bug.

    Filesystem and resource faults (read-only, permission, no space, name too long, too many open files,
    decompression bomb, out of memory) exit 2 like bad input: they are about the user's paths and machine.
    """
    if isinstance(exc, ReshapeError):
        return str(exc).replace("\n", " "), exc.exit_code
    if isinstance(exc, OSError):
        cause = exc.strerror or (errno.errorcode.get(exc.errno or -1) if exc.errno else None) or str(exc)
        paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
        return (f"{' -> '.join(paths)}: {cause}" if paths else f"{cause}").replace("\n", " "), 2
    if isinstance(exc, MemoryError):
        return f"out of memory ({exc or 'the input is too large for this machine'})", 2
    if type(exc).__name__ == "DecompressionBombError":
        return f"{exc}".replace("\n", " "), 2
    return None


def _hoist_global_flags(args: list[str]) -> list[str]:
    """Move the group's flags that follow the sub-command in front of it (the stages define none)."""
    first = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
    if first is None:
        return args
    tail = args[first + 1 :]
    if "--" in tail:
        cut = tail.index("--")
        head_tail, rest = tail[:cut], tail[cut:]
    else:
        head_tail, rest = tail, []
    hoisted = [
        a for a in head_tail if a in GLOBAL_FLAGS or (a.startswith("-") and set(a[1:]) in ({"q"}, {"v"}))
    ]
    kept = [a for a in head_tail if a not in hoisted]
    return args[:first] + hoisted + [args[first]] + kept + rest


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the run unwinds (pools, locks) as after Ctrl-C: exit 143."""


class ReshapeGroup(click.Group):
    """A click group that turns user-actionable errors into one stderr line and their exit code
    (2 = bad input or a filesystem/resource fault); ``--debug`` / RESHAPE_DEBUG=1 keep the traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _hoist_global_flags(list(args)))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            click.echo(f"reshape: {'terminated' if terminated else 'interrupted'}", err=True)
            ctx.exit(143 if terminated else 130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            found = fault_line(exc)
            if found is None:
                raise
            line, code = found
            if debug_enabled():  # the traceback is added; the exit code stays the fault's
                import traceback

                traceback.print_exc(file=sys.stderr)
            click.echo(f"reshape: error: {line}", err=True)
            ctx.exit(code)


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


def output_options(func):
    """``--overwrite`` and ``--wait``, the same on every writing stage (keyword arguments of those names)."""
    func = click.option(
        "--wait", is_flag=True, help="If another run holds an output, wait for it instead of failing."
    )(func)
    return click.option(
        "--overwrite",
        is_flag=True,
        help="Write over existing files that reshape did not write, under the names this run produces; "
        "nothing is ever deleted that reshape did not write.",
    )(func)


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
