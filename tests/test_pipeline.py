"""`reshape run`: orchestration, up-to-date checks and reruns.

The stages are replaced by recording stand-ins that accept the same options and write their artifacts'
fingerprint exactly where the real ones do (Parquet metadata, CSV sidecar, dataset.json), so these tests
pin the orchestration itself; tests/test_demo.py runs the real stages end to end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from reshape import pipeline
from reshape.artifacts import read_artifact_metadata, write_csv
from reshape.cli.main import cli
from reshape.errors import BadInputError
from reshape.pipeline import run_pipeline


def _fields(*spec: tuple[str, str, object]) -> list[tuple]:
    return [(name, typ, dataclasses.field(default=default)) for name, typ, default in spec]


P = "Path | None"
COMMON = [("fingerprint", "str | None", None), ("progress", "bool", False), ("workers", "int", 0)]
FIELDS = {
    "features": [("images", "list", ()), ("out", P, None), ("weights", "str", "default"), ("batch_size", "int", 32)],
    "select": [("train", P, None), ("candidates", P, None), ("out", P, None), ("plot", P, None),
               ("tau_quantile", "float", 0.5)],
    "distort": [("source", P, None), ("out", P, None), ("manifest", P, None), ("preset", "str | None", None),
                ("seed", "int", 0), ("levels", "object", None)],
    "label": [("selection", P, None), ("source_labels", P, None), ("distorted", P, None), ("out", P, None),
              ("merge_source", P, None), ("pyiqa_meta", P, None), ("train_features", P, None),
              ("candidate_features", P, None), ("source_root", P, None), ("k", "int", 5), ("scale", "str | None", None),
              ("skip_missing", "bool", False)],
    "prune": [("features", P, None), ("labels", P, None), ("out", P, None), ("indices", P, None), ("seed", "int", 0)],
    "publish": [("out_dir", P, None), ("from_run", P, None), ("train_csv", P, None), ("source_root", P, None),
                ("source_name", "str | None", None), ("name", "str | None", None), ("copy_source", "bool", False)],
}  # fmt: skip


def _write_parquet(path: Path, fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"x": [1]}).replace_schema_metadata({b"fingerprint": json.dumps(fingerprint).encode()})
    pq.write_table(table, path)


def _write_csv(path: Path, fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a\n1\n")
    path.with_name(path.name + ".meta.json").write_text(json.dumps({"fingerprint": fingerprint}))


def _write_outputs(module: str, cfg: object) -> None:
    """Write the artifacts where the real stage does, carrying the fingerprint the same way."""
    fp = cfg.fingerprint
    if module in ("features", "select"):
        _write_parquet(Path(cfg.out), fp)
    elif module == "distort":
        _write_csv(Path(cfg.manifest), fp)
        (Path(cfg.out) / "c1_01_01.png").write_bytes(b"distorted")
    elif module == "label":
        for path in (cfg.out, cfg.pyiqa_meta):
            _write_csv(Path(path), fp)
        rows = [
            ["I01.png", "I01.png", 4.0, 0.1, 1, 1, "source"],
            ["c1_01_01.png", "c1.png", 3.5, 0.2, 1, 1, "pseudo"],
        ]
        columns = ["dist_img", "ref_img", "dmos", "var", "dist_type", "dist_level", "origin"]
        write_csv(Path(cfg.merge_source), pd.DataFrame(rows, columns=columns), "train", {"fingerprint": fp})
    elif module == "prune":
        _write_csv(Path(cfg.out), fp)
        _write_csv(Path(cfg.indices), fp)
    elif module == "publish":
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "dataset.json").write_text(json.dumps({"fingerprint": fp}))
        (out / "train.csv").write_text("published\n")
        sums = [
            f"{hashlib.sha256((out / n).read_bytes()).hexdigest()}  {n}"
            for n in ("dataset.json", "train.csv")
        ]
        (out / "SHA256SUMS").write_text("\n".join(sums) + "\n")


def make_stage(module: str, calls: list[tuple[str, dict]], fail: bool = False) -> tuple[type, object]:
    """A stand-in stage: a config with the real stage's field names, and a run() recording its config."""
    config_class = dataclasses.make_dataclass(
        f"{module.capitalize()}Config", _fields(*FIELDS[module], *COMMON)
    )

    def run(cfg: object) -> None:
        calls.append((module, dataclasses.asdict(cfg)))
        if fail:
            raise BadInputError(f"{cfg.out}: broken on purpose")
        _write_outputs(module, cfg)

    return config_class, run


@pytest.fixture
def calls() -> list[tuple[str, list[str]]]:
    return []


@pytest.fixture
def stages(calls: list[tuple[str, dict]]) -> dict[str, tuple]:
    return {name: make_stage(cmd, calls) for name, cmd in pipeline.STAGES.items()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "refs").mkdir()
    (tmp_path / "refs" / "I01.png").write_bytes(b"ref")
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "c1.png").write_bytes(b"cand")
    (tmp_path / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,4.1,0.2\n")
    return tmp_path


def write_config(project: Path, extra: str = "", **sections: str) -> Path:
    tables = {
        "features": 'weights = "none"\nbatch-size = 4',
        "distort": 'preset = "livec"\nseed = 3\nlevels = [1, 3, 5]',
        "label": "k = 5",
        "publish": "copy-source = true",
        **sections,
    }
    body = "\n".join(f"[{name}]\n{text}\n" for name, text in tables.items())
    text = textwrap.dedent(
        """\
        [inputs]
        train_refs = "refs"
        source_labels = "dmos.csv"
        source_root = "refs"
        candidates = "pool"
        out = "out"
        """
    )
    path = project / "pipeline.toml"
    path.write_text(text + "\n" + body + "\n" + extra)
    return path


def ran(calls: list[tuple[str, list[str]]]) -> list[str]:
    return [c for c, _ in calls]


def test_first_run_runs_everything_in_order_with_stage_arguments(project, stages, calls) -> None:
    result = run_pipeline(write_config(project), runners=stages, echo=lambda _: None)
    assert result.ran == ["features_train", "features_candidates", "select", "distort", "label", "publish"]
    assert ran(calls) == ["features", "features", "select", "distort", "label", "publish"]
    out = project / "out"
    args = dict(calls[3:5])
    assert args["distort"]["source"] == out / "selection.parquet"
    assert args["distort"]["levels"] == [1, 3, 5]
    assert args["distort"]["preset"] == "livec"
    assert args["label"]["source_labels"] == project / "dmos.csv"
    assert calls[0][1]["images"] == [str(project / "refs")]
    assert calls[0][1]["weights"] == "none"
    assert calls[5][1]["copy_source"] is True
    fp = read_artifact_metadata(out / "selection.parquet")["fingerprint"]
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["fingerprints"]["select"] == fp
    # inside the project: recorded relative to the run folder, so a copied project publishes its own data
    assert run_json["inputs"]["source_root"] == "../refs"
    assert (out / run_json["inputs"]["source_root"]).resolve() == (project / "refs").resolve()


def test_second_run_skips_everything(project, stages, calls) -> None:
    config = write_config(project)
    run_pipeline(config, runners=stages, echo=lambda _: None)
    calls.clear()
    result = run_pipeline(config, runners=stages, echo=lambda _: None)
    assert calls == []
    assert result.skipped == [
        "features_train",
        "features_candidates",
        "select",
        "distort",
        "label",
        "publish",
    ]


def test_changed_option_reruns_that_stage_and_the_ones_after(project, stages, calls) -> None:
    run_pipeline(write_config(project), runners=stages, echo=lambda _: None)
    calls.clear()
    result = run_pipeline(write_config(project, label="k = 3"), runners=stages, echo=lambda _: None)
    assert result.ran == ["label", "publish"]
    assert calls[0][1]["k"] == 3
    calls.clear()
    result = run_pipeline(
        write_config(project, label="k = 3", distort='preset = "koniq"\nseed = 3\nlevels = [1, 3, 5]'),
        runners=stages,
        echo=lambda _: None,
    )
    assert result.ran == ["distort", "label", "publish"]
    calls.clear()
    result = run_pipeline(
        write_config(project, label="k = 3", features='weights = "none"\nbatch-size = 8'),
        runners=stages,
        echo=lambda _: None,
    )
    assert len(result.ran) == 6


def test_execution_only_options_do_not_rerun(project, stages, calls) -> None:
    run_pipeline(write_config(project), runners=stages, echo=lambda _: None)
    calls.clear()
    options = 'preset = "livec"\nseed = 3\nlevels = [1, 3, 5]\nworkers = 2'
    assert run_pipeline(write_config(project, distort=options), runners=stages, echo=lambda _: None).ran == []
    options = 'preset = "livec"\nseed = 4\nlevels = [1, 3, 5]\nworkers = 2'
    result = run_pipeline(write_config(project, distort=options), runners=stages, echo=lambda _: None)
    assert result.ran == ["distort", "label", "publish"]
    assert calls[0][1]["workers"] == 2


def test_changed_input_file_reruns_dependants(project, stages, calls) -> None:
    config = write_config(project)
    run_pipeline(config, runners=stages, echo=lambda _: None)
    calls.clear()
    (project / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,3.9,0.2\n")
    assert run_pipeline(config, runners=stages, echo=lambda _: None).ran == ["label", "publish"]
    calls.clear()
    (project / "pool" / "c2.png").write_bytes(b"new candidate")
    assert run_pipeline(config, runners=stages, echo=lambda _: None).ran == [
        "features_candidates", "select", "distort", "label", "publish",
    ]  # fmt: skip


def test_missing_artifact_rebuilds_only_that_stage(project, stages, calls) -> None:
    """Same inputs give the same artifact, so a deleted one is rebuilt and nothing after it reruns."""
    config = write_config(project)
    run_pipeline(config, runners=stages, echo=lambda _: None)
    (project / "out" / "selection.parquet").unlink()
    calls.clear()
    assert run_pipeline(config, runners=stages, echo=lambda _: None).ran == ["select"]
    assert run_pipeline(config, runners=stages, echo=lambda _: None).ran == []


@pytest.mark.parametrize(
    ("stage", "victim"),
    [
        ("distort", "out/distorted/c1_01_01.png"),
        ("label", "out/meta_info.csv"),
        ("publish", "out/dataset/train.csv"),
        ("features_candidates", "out/features/candidates.parquet"),
    ],
)
@pytest.mark.parametrize("how", ["delete", "modify", "touch"])
def test_deleted_or_changed_output_is_rebuilt(project, stages, calls, stage, victim, how) -> None:
    config = write_config(project)
    run_pipeline(config, runners=stages, echo=lambda _: None)
    path = project / victim
    if how == "delete":
        path.unlink()
    elif how == "modify":
        path.write_bytes(path.read_bytes() + b"x")
    else:  # same bytes, new mtime: the sha256 shows it is unchanged
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    lines: list[str] = []
    run_pipeline(config, runners=stages, dry_run=True, echo=lines.append)
    plan = {line.split()[0]: line for line in lines if not line.startswith(" ")}
    if how == "touch":
        assert all("up to date" in line for line in plan.values())
        assert run_pipeline(config, runners=stages, echo=lambda _: None).ran == []
        return
    word = "missing" if how == "delete" else "changed"
    rel = Path(os.path.relpath(path, project / "out")).as_posix()
    assert f"1 output(s) {word}: {rel}" in plan[stage]
    assert [name for name, line in plan.items() if "will run" in line] == [stage]
    calls.clear()
    if how == "modify" and stage != "publish":  # the edit rule: an edited output is the user's
        with pytest.raises(BadInputError, match=f"edited since and would be replaced \\({rel}\\)"):
            run_pipeline(config, runners=stages, echo=lambda _: None)
        assert calls == [] and path.read_bytes().endswith(b"x")  # stopped before any stage
    overwrite = how == "modify"  # published files are judged by publish itself (SHA256SUMS)
    assert run_pipeline(config, runners=stages, overwrite=overwrite, echo=lambda _: None).ran == [stage]
    assert path.is_file()
    assert run_pipeline(config, runners=stages, echo=lambda _: None).ran == []


def test_files_a_user_adds_to_the_dataset_are_not_publish_outputs(project, stages, calls) -> None:
    config = write_config(project)
    run_pipeline(config, runners=stages, echo=lambda _: None)
    notes = project / "out" / "dataset" / "NOTES.md"
    notes.write_text("mine")
    assert len(run_pipeline(config, runners=stages, force=True, echo=lambda _: None).ran) == 6  # re-recorded
    notes.unlink()  # theirs to delete: publish has nothing to rebuild
    assert run_pipeline(config, runners=stages, echo=lambda _: None).ran == []
    info = json.loads((project / "out" / "run.json").read_text())
    assert sorted(info["outputs"]["publish"]) == [
        "dataset/SHA256SUMS",
        "dataset/dataset.json",
        "dataset/train.csv",
    ]


def test_a_run_json_reshape_did_not_write_is_refused(project, stages, calls) -> None:
    (project / "out").mkdir()
    mine = project / "out" / "run.json"
    mine.write_text('{"my": "experiment log"}\n')
    with pytest.raises(BadInputError, match="run.json: exists and was not written by reshape"):
        run_pipeline(write_config(project), runners=stages, echo=lambda _: None)
    assert mine.read_text() == '{"my": "experiment log"}\n' and calls == []


def test_noop_run_keeps_the_timings_and_appends_history(project, stages, calls) -> None:
    config = write_config(project)
    run_pipeline(config, runners=stages, echo=lambda _: None)
    run_json = project / "out" / "run.json"
    first = json.loads(run_json.read_text())
    run_pipeline(config, runners=stages, echo=lambda _: None)
    second = json.loads(run_json.read_text())
    assert second["stages"] == first["stages"]
    assert [sorted(h["ran"]) for h in second["history"]] == [sorted(first["stages"]), []]
    assert second["history"][1]["skipped"] == list(pipeline.STAGES)[:5] + ["publish"]


def test_dry_run_prints_plan_and_runs_nothing(project, stages, calls) -> None:
    run_pipeline(write_config(project), runners=stages, echo=lambda _: None)
    calls.clear()
    lines: list[str] = []
    run_pipeline(write_config(project, label="k = 7"), runners=stages, dry_run=True, echo=lines.append)
    assert calls == []
    plan = {line.split()[0]: line for line in lines if not line.startswith(" ")}
    assert "up to date" in plan["select"]
    assert "will run" in plan["label"]
    assert "option(s) changed: k" in plan["label"]
    assert "will run" in plan["publish"]
    assert "input(s) changed: label" in plan["publish"]
    assert any("$ reshape label --selection" in line for line in lines)


def test_prune_runs_when_enabled(project, stages, calls) -> None:
    (project / "samples.parquet").write_bytes(b"x")
    config = write_config(project, prune='enabled = true\nfeatures = "samples.parquet"\nseed = 1')
    result = run_pipeline(config, runners=stages, echo=lambda _: None)
    assert result.ran[-2:] == ["prune", "publish"]
    assert dict(calls)["prune"]["features"] == project / "samples.parquet"
    calls.clear()
    assert run_pipeline(config, runners=stages, echo=lambda _: None).ran == []


def test_prune_embeds_the_training_images_itself(project, stages, calls) -> None:
    config = write_config(project, prune="enabled = true\nseed = 1")
    result = run_pipeline(config, runners=stages, echo=lambda _: None)
    out = project / "out"
    assert result.ran[-4:] == ["label", "features_samples", "prune", "publish"]
    # The samples folder holds every train.csv image under its dist_img name, as links to the real files.
    samples = out / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["I01.png", "c1_01_01.png"]
    assert (samples / "I01.png").samefile(project / "refs" / "I01.png")
    assert (samples / "c1_01_01.png").samefile(out / "distorted" / "c1_01_01.png")
    args = dict(calls[-4:])
    assert calls[-3][1]["images"] == [str(samples)]
    assert args["prune"]["features"] == out / "features" / "samples.parquet"
    assert args["publish"]["train_csv"] == out / "pruned.csv"
    calls.clear()
    assert run_pipeline(config, runners=stages, echo=lambda _: None).ran == []
    # Switching prune off publishes the unpruned table again.
    result = run_pipeline(write_config(project), runners=stages, echo=lambda _: None)
    assert result.ran == ["publish"]
    assert calls[-1][1]["train_csv"] == out / "train.csv"


def _cli_run(monkeypatch, stages, *args: str):
    monkeypatch.setattr(pipeline, "default_runners", lambda names=(): {n: stages[n] for n in names})
    return CliRunner().invoke(cli, ["run", *args])


def test_cli_run_and_bad_configs(project, stages, calls, monkeypatch) -> None:
    res = _cli_run(monkeypatch, stages, str(write_config(project)))
    assert res.exit_code == 0, res.output
    assert "done:" in res.output
    res = _cli_run(monkeypatch, stages, str(write_config(project, label="neighbours = 3")))
    assert res.exit_code == 2
    assert "pipeline.toml: [label]: unknown option 'neighbours'" in res.output
    assert "this stage accepts" in res.output
    bad = project / "bad.toml"
    bad.write_text("[inputs\n")
    res = _cli_run(monkeypatch, stages, str(bad))
    assert res.exit_code == 2
    assert "bad.toml: not valid TOML" in res.output
    res = _cli_run(monkeypatch, stages, str(write_config(project, label="out = 'x.csv'")))
    assert res.exit_code == 2
    assert "'out' is set by `reshape run` itself" in res.output
    (project / "dmos.csv").unlink()
    res = _cli_run(monkeypatch, stages, str(write_config(project)))
    assert res.exit_code == 2
    assert "source_labels" in res.output


def test_stage_failure_names_the_stage(project, stages, calls, monkeypatch) -> None:
    stages = {**stages, "label": make_stage("label", calls, fail=True)}
    res = _cli_run(monkeypatch, stages, str(write_config(project)))
    assert res.exit_code == 2
    assert "reshape: error: stage label:" in res.output
    assert "broken on purpose" in res.output
    assert "publish" not in ran(calls)


def test_option_values_are_checked_against_the_real_config_types(project) -> None:
    """TOML values get the checks click's types gave them: one line naming the option, exit 2."""
    runners = pipeline.default_runners()
    cases = {
        "features_train": {"batch-size": "abc"},
        "select": {"tau-quantile": "high"},
        "distort": {"seed": 1.5},
        "label": {"skip-missing": "yes"},
        "publish": {"copy-source": 1},
    }
    for stage, table in cases.items():
        with pytest.raises(BadInputError, match=rf"\[{stage}\]: option '[a-z-]+' = .*: expected "):
            pipeline.stage_options(runners[stage][0], table, where=f"[{stage}]", base=project, reserved=set())
    values = pipeline.stage_options(
        runners["publish"][0],
        {"note": "one note", "label-range": "1-5"},
        where="p",
        base=project,
        reserved=set(),
    )
    assert values == {"note": ["one note"], "label_range": "1-5"}
    levels = pipeline.stage_options(
        runners["distort"][0], {"levels": [1, 3, 5]}, where="d", base=project, reserved=set()
    )
    assert levels == {"levels": [1, 3, 5]}


def test_example_config_uses_real_stage_options() -> None:
    """examples/pipeline.toml names only options the real stage configs have."""
    import tomllib

    example = Path(__file__).resolve().parents[1] / "examples" / "pipeline.toml"
    raw = tomllib.loads(example.read_text())
    assert set(raw["inputs"]) <= pipeline.INPUT_KEYS
    runners = pipeline.default_runners()
    checked = 0
    for table, options in raw.items():
        if table == "inputs":
            continue
        stage = "features_train" if table == "features" else table
        options = {k: v for k, v in options.items() if k not in ("enabled", "features") or table != "prune"}
        values = pipeline.stage_options(
            runners[stage][0], options, where=table, base=example.parent, reserved=set()
        )
        assert set(values) == {k.replace("-", "_") for k in options}
        checked += 1
    assert checked == len(raw) - 1
