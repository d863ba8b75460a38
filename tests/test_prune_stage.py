"""`reshape prune` as a stage: same bytes whatever the block size, backend or thread count (issue #13), the
Stage API (issue #15) and output safety (foreign files, --overwrite, reruns, locks)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_prune import clustered, train_table, write_features

from reshape import artifacts
from reshape.cli.main import cli
from reshape.errors import BadInputError
from reshape.outputs import OutputLock
from reshape.prune import PruneConfig, PruneResult, run


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    features, labels = clustered(8, per_cluster=(30, 70))
    images = [f"dist/img_{i:04d}.png" for i in range(len(labels))]
    write_features(tmp_path / "samples.parquet", images, features)
    train_table(images, labels).to_csv(tmp_path / "train.csv", index=False)
    return tmp_path


def prune_cli(tmp_path: Path, out: Path, *extra: str):
    args = ["prune", "--features", str(tmp_path / "samples.parquet"), "--labels", str(tmp_path / "train.csv")]
    return CliRunner().invoke(cli, [*args, "--out", str(out), "--min-cluster", "10", *extra])


def outputs_of(out: Path) -> dict[str, str]:
    indices = out.with_name(out.stem + ".indices.csv")
    return {
        "pruned": digest(out),
        "indices": digest(indices),
        "sidecars": digest(artifacts.sidecar_path(out)) + digest(artifacts.sidecar_path(indices)),
    }


# ----------------------------------------------------------------------------------------------- invariance
def test_same_bytes_for_every_block_size_and_backend(inputs: Path, pinned_clock) -> None:
    runs = {}
    for block, backend in (
        (2048, "faiss"),
        (1, "faiss"),
        (7, "faiss"),
        (64, "faiss"),
        (1, "bf16"),
        (50, "bf16"),
    ):
        out = inputs / f"p_{block}_{backend}.csv"
        result = prune_cli(inputs, out, "--block-size", str(block), "--backend", backend)
        assert result.exit_code == 0, result.output
        runs[(block, backend)] = outputs_of(out)
    assert len({r["pruned"] for r in runs.values()}) == 1
    assert len({r["indices"] for r in runs.values()}) == 1
    # the sidecars name the backend, otherwise they are the same too
    for backend in ("faiss", "bf16"):
        assert len({r["sidecars"] for key, r in runs.items() if key[1] == backend}) == 1
    assert runs[(1, "faiss")]["pruned"] != digest(inputs / "train.csv")  # something was pruned


def test_same_bytes_for_every_thread_count(inputs: Path, pinned_clock) -> None:
    import faiss
    import torch

    before = (torch.get_num_threads(), faiss.omp_get_max_threads())
    digests = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
            for backend in ("faiss", "bf16"):
                out = inputs / f"t{threads}_{backend}.csv"
                assert prune_cli(inputs, out, "--backend", backend, "--block-size", "33").exit_code == 0
                digests.append((backend, outputs_of(out)))
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])
    for backend in ("faiss", "bf16"):
        assert len({str(d) for b, d in digests if b == backend}) == 1


# ----------------------------------------------------------------------------------------------- Stage API
def test_run_returns_a_result_with_summary_lines(inputs: Path) -> None:
    config = PruneConfig(
        features=inputs / "samples.parquet", labels=inputs / "train.csv", out=inputs / "p.csv", min_cluster=10
    )
    result = run(config)
    assert isinstance(result, PruneResult)
    assert result.indices == inputs / "p.indices.csv"
    assert result.stats.removed > 0
    assert result.summary_lines()[0] == f"samples {result.stats.samples}: kept {result.stats.kept}, " + (
        f"removed {result.stats.removed}"
    )
    assert result.summary_lines()[-1] == f"wrote {inputs / 'p.csv'} and {inputs / 'p.indices.csv'}"
    assert not result.degenerate_features


def test_cli_summary_on_stdout_only(inputs: Path) -> None:
    result = prune_cli(inputs, inputs / "p.csv")
    assert result.exit_code == 0
    assert "kept" in result.stdout
    assert "kept" not in result.stderr
    assert CliRunner().invoke(cli, ["-q", "prune", "--features", str(inputs / "samples.parquet"), "--labels",
                                    str(inputs / "train.csv"), "--out", str(inputs / "p.csv")]).stdout == ""  # fmt: skip


# ----------------------------------------------------------------------------------------------- safety
@pytest.mark.parametrize("which", ["out", "indices", "sidecar"])
def test_foreign_file_refused_and_untouched(inputs: Path, which: str) -> None:
    out = inputs / "p.csv"
    foreign = {
        "out": out,
        "indices": inputs / "p.indices.csv",
        "sidecar": artifacts.sidecar_path(out),
    }[which]
    foreign.write_text('{"mine": true}\n' if which == "sidecar" else "my,own\n1,2\n")
    before = digest(foreign)
    result = prune_cli(inputs, out)
    assert result.exit_code == 2, result.output
    assert "not written by reshape" in result.output and str(foreign) in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert digest(foreign) == before
    assert not (inputs / "p.indices.csv").exists() or which == "indices"
    forced = prune_cli(inputs, out, "--overwrite")
    assert forced.exit_code == 0, forced.output
    assert digest(foreign) != before


def test_own_rerun_replaces_outputs_both_layouts(inputs: Path) -> None:
    out = inputs / "p.csv"
    assert prune_cli(inputs, out).exit_code == 0
    again = prune_cli(inputs, out, "--min-cluster", "5")
    assert again.exit_code == 0, again.output
    assert artifacts.read_artifact_metadata(out)["min_cluster"] == 5
    # the KADID dmos.csv layout: the pruned copy's sidecar has no schema tag, still recognised as ours
    table = artifacts.read_raw_csv(inputs / "train.csv")[["dist_img", "ref_img", "dmos", "var"]]
    table.to_csv(inputs / "dmos.csv", index=False)
    args = ["prune", "--features", str(inputs / "samples.parquet"), "--labels", str(inputs / "dmos.csv")]
    for _ in range(2):
        result = CliRunner().invoke(cli, [*args, "--out", str(inputs / "d.csv")])
        assert result.exit_code == 0, result.output


def test_inputs_are_never_outputs_and_locks_hold(inputs: Path) -> None:
    train = inputs / "train.csv"
    before = digest(train)
    same = prune_cli(inputs, train, "--overwrite")
    assert same.exit_code == 2
    assert "output is the input" in same.output
    clash = prune_cli(inputs, inputs / "p.csv", "--indices", str(inputs / "p.csv"))
    assert clash.exit_code == 2
    assert "same file" in clash.output
    assert digest(train) == before
    (inputs / "folder.csv").mkdir()
    with pytest.raises(BadInputError, match="is a folder"):
        run(PruneConfig(inputs / "samples.parquet", train, inputs / "folder.csv", overwrite=True))
    with OutputLock(inputs / "held.csv"):
        held = prune_cli(inputs, inputs / "held.csv")
    assert held.exit_code == 2
    assert "another reshape run holds this output" in held.output
    assert not (inputs / "held.csv").exists()
