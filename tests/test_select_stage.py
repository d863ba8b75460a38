"""`reshape select` as a stage: same bytes whatever the block size or device (issue #13), the torch path on
CPU (issue #15), the Stage API, and output safety (foreign files, --overwrite, reruns, locks)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_select import make_case, official_dense, write_feats

from reshape import artifacts
from reshape.cli.main import cli
from reshape.errors import BadInputError
from reshape.outputs import OutputLock
from reshape.select import SelectConfig, SelectResult, run, select_candidates


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pool(tmp_path: Path):
    train, cand = make_case(17, 900)
    write_feats(tmp_path / "train.parquet", train, "kadid")
    write_feats(tmp_path / "pool.parquet", cand, "kadis")
    return tmp_path, train, cand


def select_cli(tmp_path: Path, out: Path, *extra: str):
    args = [
        "select",
        "--train",
        str(tmp_path / "train.parquet"),
        "--candidates",
        str(tmp_path / "pool.parquet"),
    ]
    return CliRunner().invoke(cli, [*args, "--out", str(out), *extra])


# ----------------------------------------------------------------------------------------------- invariance
def test_same_bytes_for_every_block_size_and_device(pool, pinned_clock) -> None:
    """Decisions are taken on canonical float64 distances, so the Parquet is identical byte for byte."""
    tmp_path, train, cand = pool
    digests = {}
    for block, device in ((1024, "auto"), (1, "auto"), (7, "auto"), (100, "cpu"), (5000, "cpu")):
        out = tmp_path / f"sel_{block}_{device}.parquet"
        result = select_cli(tmp_path, out, "--block-size", str(block), "--device", device, "--k", "3")
        assert result.exit_code == 0, result.output
        digests[(block, device)] = digest(out)
    assert len(set(digests.values())) == 1, digests
    table, _ = artifacts.read_parquet(tmp_path / "sel_1_auto.parquet", "selection")
    np.testing.assert_array_equal(table.column("candidate_index").to_numpy(), official_dense(train, cand))


@pytest.mark.parametrize(("seed", "n_cand", "block"), [(0, 600, 64), (2, 1200, 100), (3, 500, 7)])
def test_torch_path_on_cpu_selects_what_numpy_selects(seed: int, n_cand: int, block: int) -> None:
    """`device="cpu"` runs the torch screening code (the one CUDA runs) on the CPU."""
    train, cand = make_case(seed, n_cand)
    numpy_path = select_candidates(train, cand, block=block, device="numpy")
    torch_path = select_candidates(train, cand, block=block, device="cpu")
    np.testing.assert_array_equal(torch_path.selected, numpy_path.selected)
    np.testing.assert_array_equal(torch_path.selected, official_dense(train, cand))
    assert torch_path.counts == numpy_path.counts
    np.testing.assert_array_equal(torch_path.neighbour_indices, numpy_path.neighbour_indices)
    # the canonical report distances come from the same float64 code on both paths
    np.testing.assert_array_equal(torch_path.nearest_train_distance, numpy_path.nearest_train_distance)


def test_torch_cpu_screening_is_what_runs() -> None:
    from reshape.select import _Matmul

    x = np.eye(4, dtype=np.float32)
    assert hasattr(_Matmul(x, "cpu"), "xt")
    assert not hasattr(_Matmul(x, "numpy"), "xt")
    with pytest.raises(BadInputError, match="device 'gpu'"):
        _Matmul(x, "gpu")


# ----------------------------------------------------------------------------------------------- Stage API
def test_run_returns_a_result_with_summary_lines(pool) -> None:
    tmp_path, train, cand = pool
    config = SelectConfig(
        train=tmp_path / "train.parquet", candidates=tmp_path / "pool.parquet", out=tmp_path / "s.parquet",
        max_select=5, plot=tmp_path / "s.png",
    )  # fmt: skip
    result = run(config)
    assert isinstance(result, SelectResult)
    assert result.out == tmp_path / "s.parquet"
    assert len(result.selection.selected) == 5
    lines = result.summary_lines()
    assert lines[0].startswith("tau = ")
    assert lines[-1] == f"wrote {tmp_path / 's.parquet'} and {tmp_path / 's.png'}"
    assert result.seconds > 0
    assert not result.degenerate_features


def test_cli_prints_summary_on_stdout_only(pool) -> None:
    tmp_path, *_ = pool
    result = CliRunner().invoke(
        cli, ["select", "--train", str(tmp_path / "train.parquet"), "--candidates",
              str(tmp_path / "pool.parquet"), "--out", str(tmp_path / "o.parquet")],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "tau = " in result.stdout
    assert result.stdout.strip().splitlines()[-1] == f"wrote {tmp_path / 'o.parquet'}"
    quiet = CliRunner().invoke(
        cli, ["-q", "select", "--train", str(tmp_path / "train.parquet"), "--candidates",
              str(tmp_path / "pool.parquet"), "--out", str(tmp_path / "o.parquet")],
    )  # fmt: skip
    assert quiet.exit_code == 0
    assert quiet.stdout == ""


# ----------------------------------------------------------------------------------------------- safety
@pytest.mark.parametrize(("name", "content"), [("out.parquet", None), ("map.png", None)])
def test_foreign_file_refused_and_untouched(pool, name: str, content) -> None:
    tmp_path, *_ = pool
    foreign = tmp_path / name
    if name.endswith(".parquet"):
        import pandas as pd

        pd.DataFrame({"mine": [1, 2, 3]}).to_parquet(foreign)  # a Parquet reshape did not write
    else:
        from PIL import Image

        Image.new("RGB", (8, 8), "red").save(foreign)  # a PNG reshape did not write
    before = digest(foreign)
    out = foreign if name.endswith(".parquet") else tmp_path / "s.parquet"
    extra = [] if name.endswith(".parquet") else ["--plot", str(foreign)]
    result = select_cli(tmp_path, out, *extra)
    assert result.exit_code == 2, result.output
    assert "not written by reshape" in result.output and str(foreign) in result.output
    assert "Traceback" not in result.output
    assert digest(foreign) == before
    assert not (tmp_path / "s.parquet").exists()  # refused before any work
    forced = select_cli(tmp_path, out, *extra, "--overwrite")
    assert forced.exit_code == 0, forced.output
    assert digest(foreign) != before


def test_own_rerun_replaces_outputs(pool) -> None:
    tmp_path, *_ = pool
    out, plot = tmp_path / "s.parquet", tmp_path / "s.png"
    assert select_cli(tmp_path, out, "--plot", str(plot)).exit_code == 0
    again = select_cli(tmp_path, out, "--plot", str(plot), "--max-select", "3")
    assert again.exit_code == 0, again.output
    assert artifacts.read_artifact_metadata(out)["n_selected"] == 3


def test_wrong_format_input_as_output_and_lock(pool) -> None:
    tmp_path, *_ = pool
    text = tmp_path / "notes.parquet"
    text.write_text("a,b\n1,2\n")
    result = select_cli(tmp_path, text, "--overwrite")
    assert result.exit_code == 2
    assert "holds a csv file, not parquet" in result.output
    assert text.read_text() == "a,b\n1,2\n"
    same = select_cli(tmp_path, tmp_path / "pool.parquet", "--overwrite")
    assert same.exit_code == 2
    assert "output is the input" in same.output
    with OutputLock(tmp_path / "held.parquet"):
        held = select_cli(tmp_path, tmp_path / "held.parquet")
    assert held.exit_code == 2
    assert "another reshape run holds this output" in held.output
    assert not (tmp_path / "held.parquet").exists()


def test_failed_run_leaves_no_output_behind(pool) -> None:
    tmp_path, *_ = pool
    write_feats(tmp_path / "narrow.parquet", np.ones((5, 3), np.float32), "kadis")
    out = tmp_path / "new" / "deeper" / "s.parquet"
    args = [
        "select",
        "--train",
        str(tmp_path / "train.parquet"),
        "--candidates",
        str(tmp_path / "narrow.parquet"),
    ]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code == 2
    assert "differs" in result.output
    # The folders the failed run made are gone again, lock file included.
    assert not (tmp_path / "new").exists()
