"""``reshape`` console entry point: one click group, one sub-command per stage."""

from __future__ import annotations

import os
import signal
import sys

import click

from reshape import __version__
from reshape.cli.common import ReshapeGroup, Terminated, setup_logging

STAGES = ["features", "select", "distort", "label", "prune", "publish", "verify", "run", "demo", "report"]
STAGES += ["diagnose"]  # reshape diagnose (issue 29): how clustered the features are


@click.group(
    cls=ReshapeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110}
)
@click.version_option(__version__, "--version", prog_name="reshape")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", count=True, help="Only errors.")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error (also RESHAPE_DEBUG=1).")
def cli(verbose: int, quiet: int, debug: bool) -> None:
    """reshape: the SynDR-IQA pipeline as offline stages that each leave a static artifact.

    \b
    features -> select (DDCUp) -> distort -> label -> prune (DRCDown) -> publish -> verify
    `reshape run pipeline.toml` runs them all; `reshape demo` runs them on embedded data.
    Exit codes: 0 ok, 1 runtime failure, 2 usage error, bad input or a filesystem fault (one line).
    -q/-v/--debug may also follow the sub-command.
    """
    if debug:
        os.environ["RESHAPE_DEBUG"] = "1"
    setup_logging(verbose - quiet + (2 if debug else 0))


def _register() -> None:
    import importlib

    for name in STAGES:
        module = importlib.import_module(f"reshape.cli.{name}_cmd")
        cli.add_command(module.command, name=name)


_register()


def _terminate_cleanly(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like an interrupt: worker pools shut down and locks are released, so no process,
    semaphore or temporary file is left behind (the default action would kill the driver on the spot)."""
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM kills at once
    mp = sys.modules.get("multiprocessing")
    for child in mp.active_children() if mp is not None else []:
        child.terminate()  # pool workers stop now (their writes are atomic); the pool then shuts down
    raise Terminated(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate_cleanly)
    try:
        cli(prog_name="reshape")
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):
        print(code, file=sys.stderr)
    _exit_fast(code if isinstance(code, int) else (0 if code is None else 1))


def _exit_fast(rc: int) -> None:
    """Leave without tearing down torch's module graph (1-4 s of a short command's wall time): exit
    handlers run and every stream is flushed first, so nothing that was written is lost."""
    import atexit
    import logging

    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            rc = rc or 1  # a closed pipe or full disk on stdout is still a failure
    os._exit(rc)


if __name__ == "__main__":
    main()
