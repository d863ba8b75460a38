"""`reshape run`: orchestration, up-to-date checks and reruns.

The stages are replaced by recording stand-ins that accept the same options and write their artifacts'
fingerprint exactly where the real ones do (Parquet metadata, CSV sidecar, dataset.json), so these tests
pin the orchestration itself; tests/test_demo.py runs the real stages end to end.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import click
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

OPTIONS = {
    "features": ["--out", "--weights", "--batch-size"],
    "select": ["--train", "--candidates", "--out", "--plot", "--tau-quantile"],
    "distort": ["--out", "--preset", "--seed", "--levels"],
    "label": [
        "--selection",
        "--source-labels",
        "--distorted",
        "--out",
        "--merge-source",
        "--pyiqa-meta",
        "--train-features",
        "--candidate-features",
        "--k",
        "--scale",
    ],  # fmt: skip
    "prune": ["--features", "--labels", "--out", "--indices", "--seed"],
    "publish": ["--from-run", "--train-csv", "--source-root", "--source-name", "--name"],
}
FLAGS = {"publish": [("--copy-source", "--reference-source")], "label": [("--skip-missing", None)]}


def _write_parquet(path: Path, fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"x": [1]}).replace_schema_metadata({b"fingerprint": json.dumps(fingerprint).encode()})
    pq.write_table(table, path)


def _write_csv(path: Path, fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("a\n1\n")
    path.with_name(path.name + ".meta.json").write_text(json.dumps({"fingerprint": fingerprint}))


def make_stage(command: str, calls: list[tuple[str, list[str]]], fail: bool = False) -> click.Command:
    def callback(positional: tuple[str, ...], fingerprint: str | None, **opts: object) -> None:
        calls.append(
            (command, [*positional, *(f"{k}={v}" for k, v in sorted(opts.items()) if v is not None)])
        )
        if fail:
            raise BadInputError(f"{opts.get('out')}: broken on purpose")
        if command in ("features", "select"):
            _write_parquet(Path(str(opts["out"])), fingerprint)
        elif command == "distort":
            _write_csv(Path(str(opts["out"])) / "manifest.csv", fingerprint)
            (Path(str(opts["out"])) / "c1_01_01.png").write_bytes(b"distorted")
        elif command == "label":
            for key in ("out", "pyiqa_meta"):
                _write_csv(Path(str(opts[key])), fingerprint)
            rows = [
                ["I01.png", "I01.png", 4.0, 0.1, 1, 1, "source"],
                ["c1_01_01.png", "c1.png", 3.5, 0.2, 1, 1, "pseudo"],
            ]
            columns = ["dist_img", "ref_img", "dmos", "var", "dist_type", "dist_level", "origin"]
            write_csv(
                Path(str(opts["merge_source"])),
                pd.DataFrame(rows, columns=columns),
                "train",
                {"fingerprint": fingerprint},
            )
        elif command == "prune":
            _write_csv(Path(str(opts["out"])), fingerprint)
            _write_csv(Path(str(opts["indices"])), fingerprint)
        elif command == "publish":
            out = Path(positional[0])
            out.mkdir(parents=True, exist_ok=True)
            (out / "dataset.json").write_text(json.dumps({"fingerprint": fingerprint}))

    params: list[click.Parameter] = [click.Argument(["positional"], nargs=-1)]
    params += [click.Option([o]) for o in OPTIONS[command]]
    for on, off in FLAGS.get(command, []):
        params.append(click.Option([f"{on}/{off}" if off else on], is_flag=True, default=False))
    params.append(click.Option(["--fingerprint"], hidden=True))
    return click.Command(command, params=params, callback=callback)


@pytest.fixture
def calls() -> list[tuple[str, list[str]]]:
    return []


@pytest.fixture
def stages(calls: list[tuple[str, list[str]]]) -> dict[str, click.Command]:
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
    result = run_pipeline(write_config(project), commands=stages, echo=lambda _: None)
    assert result.ran == ["features_train", "features_candidates", "select", "distort", "label", "publish"]
    assert ran(calls) == ["features", "features", "select", "distort", "label", "publish"]
    out = project / "out"
    args = dict(calls[3:5])
    assert args["distort"][0] == str(out / "selection.parquet")
    assert "levels=1,3,5" in args["distort"]
    assert "preset=livec" in args["distort"]
    assert f"source_labels={project / 'dmos.csv'}" in args["label"]
    assert calls[0][1][0] == str(project / "refs")
    assert "weights=none" in calls[0][1]
    assert "copy_source=True" in calls[5][1]
    fp = read_artifact_metadata(out / "selection.parquet")["fingerprint"]
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["fingerprints"]["select"] == fp
    assert run_json["inputs"]["source_root"] == str(project / "refs")


def test_second_run_skips_everything(project, stages, calls) -> None:
    config = write_config(project)
    run_pipeline(config, commands=stages, echo=lambda _: None)
    calls.clear()
    result = run_pipeline(config, commands=stages, echo=lambda _: None)
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
    run_pipeline(write_config(project), commands=stages, echo=lambda _: None)
    calls.clear()
    result = run_pipeline(write_config(project, label="k = 3"), commands=stages, echo=lambda _: None)
    assert result.ran == ["label", "publish"]
    assert "k=3" in calls[0][1]
    calls.clear()
    result = run_pipeline(
        write_config(project, label="k = 3", distort='preset = "koniq"\nseed = 3\nlevels = [1, 3, 5]'),
        commands=stages,
        echo=lambda _: None,
    )
    assert result.ran == ["distort", "label", "publish"]
    calls.clear()
    result = run_pipeline(
        write_config(project, label="k = 3", features='weights = "none"\nbatch-size = 8'),
        commands=stages,
        echo=lambda _: None,
    )
    assert len(result.ran) == 6


def test_execution_only_options_do_not_rerun(project, stages, calls) -> None:
    distort = make_stage("distort", calls)
    distort.params.insert(1, click.Option(["--workers"]))
    stages = {**stages, "distort": distort}
    run_pipeline(write_config(project), commands=stages, echo=lambda _: None)
    calls.clear()
    options = 'preset = "livec"\nseed = 3\nlevels = [1, 3, 5]\nworkers = 2'
    assert (
        run_pipeline(write_config(project, distort=options), commands=stages, echo=lambda _: None).ran == []
    )
    options = 'preset = "livec"\nseed = 4\nlevels = [1, 3, 5]\nworkers = 2'
    result = run_pipeline(write_config(project, distort=options), commands=stages, echo=lambda _: None)
    assert result.ran == ["distort", "label", "publish"]
    assert "workers=2" in calls[0][1]


def test_changed_input_file_reruns_dependants(project, stages, calls) -> None:
    config = write_config(project)
    run_pipeline(config, commands=stages, echo=lambda _: None)
    calls.clear()
    (project / "dmos.csv").write_text("dist_img,ref_img,dmos,var\nI01_01_01.png,I01.png,3.9,0.2\n")
    assert run_pipeline(config, commands=stages, echo=lambda _: None).ran == ["label", "publish"]
    calls.clear()
    (project / "pool" / "c2.png").write_bytes(b"new candidate")
    assert run_pipeline(config, commands=stages, echo=lambda _: None).ran == [
        "features_candidates", "select", "distort", "label", "publish",
    ]  # fmt: skip


def test_missing_artifact_reruns_from_there(project, stages, calls) -> None:
    config = write_config(project)
    run_pipeline(config, commands=stages, echo=lambda _: None)
    (project / "out" / "selection.parquet").unlink()
    calls.clear()
    assert run_pipeline(config, commands=stages, echo=lambda _: None).ran == [
        "select",
        "distort",
        "label",
        "publish",
    ]


def test_dry_run_prints_plan_and_runs_nothing(project, stages, calls) -> None:
    run_pipeline(write_config(project), commands=stages, echo=lambda _: None)
    calls.clear()
    lines: list[str] = []
    run_pipeline(write_config(project, label="k = 7"), commands=stages, dry_run=True, echo=lines.append)
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
    result = run_pipeline(config, commands=stages, echo=lambda _: None)
    assert result.ran[-2:] == ["prune", "publish"]
    assert f"features={project / 'samples.parquet'}" in dict(calls)["prune"]
    calls.clear()
    assert run_pipeline(config, commands=stages, echo=lambda _: None).ran == []


def test_prune_embeds_the_training_images_itself(project, stages, calls) -> None:
    config = write_config(project, prune="enabled = true\nseed = 1")
    result = run_pipeline(config, commands=stages, echo=lambda _: None)
    out = project / "out"
    assert result.ran[-4:] == ["label", "features_samples", "prune", "publish"]
    # The samples folder holds every train.csv image under its dist_img name, as links to the real files.
    samples = out / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["I01.png", "c1_01_01.png"]
    assert (samples / "I01.png").samefile(project / "refs" / "I01.png")
    assert (samples / "c1_01_01.png").samefile(out / "distorted" / "c1_01_01.png")
    args = dict(calls[-4:])
    assert calls[-3][1][0] == str(samples)
    assert f"features={out / 'features' / 'samples.parquet'}" in args["prune"]
    assert f"train_csv={out / 'pruned.csv'}" in args["publish"]
    calls.clear()
    assert run_pipeline(config, commands=stages, echo=lambda _: None).ran == []
    # Switching prune off publishes the unpruned table again.
    result = run_pipeline(write_config(project), commands=stages, echo=lambda _: None)
    assert result.ran == ["publish"]
    assert f"train_csv={out / 'train.csv'}" in calls[-1][1]


def _cli_run(monkeypatch, stages, *args: str):
    monkeypatch.setattr(pipeline, "default_commands", lambda: stages)
    return CliRunner().invoke(cli, ["run", *args])


def test_cli_run_and_bad_configs(project, stages, calls, monkeypatch) -> None:
    res = _cli_run(monkeypatch, stages, str(write_config(project)))
    assert res.exit_code == 0, res.output
    assert "done:" in res.output
    res = _cli_run(monkeypatch, stages, str(write_config(project, label="neighbours = 3")))
    assert res.exit_code == 2
    assert "pipeline.toml: [label]: unknown option 'neighbours'" in res.output
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


def test_example_config_uses_real_stage_options() -> None:
    """examples/pipeline.toml names only options the stage commands have (placeholder stages skipped)."""
    import tomllib

    example = Path(__file__).resolve().parents[1] / "examples" / "pipeline.toml"
    raw = tomllib.loads(example.read_text())
    assert set(raw["inputs"]) <= pipeline.INPUT_KEYS
    commands = pipeline.default_commands()
    checked = 0
    for table, options in raw.items():
        if table == "inputs":
            continue
        stage = "features_train" if table == "features" else table
        command = commands[stage]
        if "not built yet" in (command.help or ""):
            continue
        options = {k: v for k, v in options.items() if k != "enabled" or table != "prune"}
        args = pipeline.option_args(command, options, where=table, base=example.parent, reserved=set())
        assert args
        checked += 1
    assert checked >= 1  # publish at least
