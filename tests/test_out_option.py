"""One spelling of the output: every writing stage takes `--out` (issue #19); publish's positional OUT_DIR
is the old spelling and keeps working."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from test_safety import Demo, argv, demo  # noqa: F401  (fixture)

from reshape.cli.main import cli
from reshape.verify import verify_dataset

#: what each writing stage leaves at its --out
WRITTEN = {
    "features": "f.parquet",
    "select": "sel.parquet",
    "distort": "img/manifest.csv",
    "label": "labels.csv",
    "prune": "pruned.csv",
    "publish": "ds/SHA256SUMS",
}


def _publish_with_out(args: list[str]) -> list[str]:
    """`publish DIR ...` (the old spelling in the shared argv table) as `publish --out DIR ...`."""
    assert args[0] == "publish" and not args[1].startswith("-")
    return ["publish", "--out", args[1], *args[2:]]


@pytest.mark.parametrize("stage", sorted(WRITTEN))
def test_every_writing_stage_takes_out(stage: str, demo: Demo, tmp_path: Path) -> None:  # noqa: F811
    args = argv(stage, demo, tmp_path, tmp_path / "cfg")
    if stage == "publish":
        args = _publish_with_out(args)
    assert "--out" in args
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / WRITTEN[stage]).is_file()
    if stage == "publish":
        verify_dataset(tmp_path / "ds")


def test_publish_old_positional_spelling_still_works(demo: Demo, tmp_path: Path) -> None:  # noqa: F811
    new, old = tmp_path / "new", tmp_path / "old"
    args = argv("publish", demo, tmp_path, tmp_path / "cfg")[2:]
    assert CliRunner().invoke(cli, ["publish", "--out", str(new), *args]).exit_code == 0
    res = CliRunner().invoke(cli, ["publish", str(old), *args])
    assert res.exit_code == 0, res.output
    assert (old / "train.csv").read_bytes() == (new / "train.csv").read_bytes()


def test_publish_output_given_twice_or_not_at_all_is_a_usage_error(demo: Demo, tmp_path: Path) -> None:  # noqa: F811
    args = argv("publish", demo, tmp_path, tmp_path / "cfg")[2:]
    res = CliRunner().invoke(cli, ["publish", str(tmp_path / "a"), "--out", str(tmp_path / "b"), *args])
    assert res.exit_code == 2 and "two output folders" in res.output
    res = CliRunner().invoke(cli, ["publish", *args])
    assert res.exit_code == 2 and "Missing option '--out'" in res.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # the same folder spelled both ways is one output
    res = CliRunner().invoke(cli, ["publish", str(tmp_path / "c"), "--out", str(tmp_path / "c"), *args])
    assert res.exit_code == 0, res.output
