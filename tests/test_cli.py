"""The click layer: every stage is listed, version and errors behave, no bare `cli` module is installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from click.testing import CliRunner

from reshape import __version__
from reshape.cli.main import STAGES, cli


def test_help_lists_every_stage():
    out = CliRunner().invoke(cli, ["--help"]).output
    for stage in ("features", "select", "distort", "label", "prune", "publish", "verify", "demo", "run"):
        assert stage in STAGES and f"  {stage} " in out


def test_version():
    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0 and __version__ in res.output


def test_console_script_and_bad_usage():
    res = subprocess.run(
        [sys.executable, "-m", "reshape.cli.main", "no-such-stage"], capture_output=True, text=True
    )
    assert res.returncode == 2 and "No such command" in res.stderr


def test_no_bare_cli_module_installed():
    spec = importlib.util.find_spec("reshape.cli")
    assert spec is not None
    assert importlib.util.find_spec("cli") is None or "site-packages" not in str(
        importlib.util.find_spec("cli").origin
    )


def test_reshape_error_becomes_one_line_exit_2(tmp_path):
    import click

    from reshape.cli.common import ReshapeGroup
    from reshape.errors import BadInputError

    @click.group(cls=ReshapeGroup)
    def g() -> None:
        pass

    @g.command()
    def boom() -> None:
        raise BadInputError(f"{tmp_path}/x.csv, line 3: bad")

    res = CliRunner().invoke(g, ["boom"])
    assert res.exit_code == 2
    assert res.output.strip() == f"reshape: error: {tmp_path}/x.csv, line 3: bad"


def test_global_options_also_after_the_subcommand(tmp_path):
    missing = str(tmp_path / "nope")
    for args in (["-q", "verify", missing], ["verify", missing, "-q"], ["verify", "-q", missing]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.stderr.strip() == f"reshape: error: {missing}: not a folder"


def test_debug_shows_the_traceback(tmp_path):
    missing = str(tmp_path / "nope")
    env = {**__import__("os").environ, "RESHAPE_DEBUG": ""}
    cmd = [sys.executable, "-m", "reshape.cli.main"]
    plain = subprocess.run([*cmd, "verify", missing], capture_output=True, text=True, env=env)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    for extra_env, args in (
        ({}, ["verify", missing, "--debug"]),
        ({"RESHAPE_DEBUG": "1"}, ["verify", missing]),
    ):
        res = subprocess.run([*cmd, *args], capture_output=True, text=True, env={**env, **extra_env})
        assert "Traceback" in res.stderr and "BadInputError" in res.stderr
        # the traceback is added, the exit code stays the fault's (was 1 with --debug)
        assert res.returncode == 2, res.stderr
        assert res.stderr.rstrip().splitlines()[-1] == f"reshape: error: {missing}: not a folder"


def test_filesystem_faults_are_one_line_naming_the_path(tmp_path):
    """An OSError no stage anticipated still becomes one line with the path and the cause, exit 2."""
    import errno

    import click

    from reshape.cli.common import ReshapeGroup

    @click.group(cls=ReshapeGroup)
    def g() -> None:
        pass

    @g.command()
    def full() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.png"))

    @g.command()
    def memory() -> None:
        raise MemoryError

    res = CliRunner().invoke(g, ["full"])
    assert (
        res.exit_code == 2
        and res.stderr == f"reshape: error: {tmp_path / 'x.png'}: No space left on device\n"
    )
    res = CliRunner().invoke(g, ["memory"])
    assert res.exit_code == 2 and res.stderr.startswith("reshape: error: out of memory")
