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
