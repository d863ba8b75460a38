"""`reshape run pipeline.toml`: run every stage from one config, skipping the ones that are up to date.

`run` only orchestrates: each stage is its own click command, invoked in-process with the arguments a user
would type, so every stage stays runnable on its own. Up-to-date check: each stage gets a fingerprint =
sha256 of (stage, its options, the fingerprints of its inputs, reshape version), passed through the stage's
hidden ``--fingerprint`` option and stored in its artifact's metadata. A stage whose artifacts exist and
carry the same fingerprint is skipped; since fingerprints chain, a changed option reruns that stage and
every stage after it. Raw inputs are fingerprinted by content (files) or by listing (folders: relative path,
size and modification time of every file, so a KADIS-sized pool is not re-read on every run).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from reshape import __version__
from reshape.artifacts import read_artifact_metadata, write_json
from reshape.errors import BadInputError, ReshapeError, StageError
from reshape.fileio import sha256_file
from reshape.publish import DATASET_JSON, RUN_LAYOUT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Stage options that do not change the artifacts (same seed, same bytes whatever the worker count).
EXECUTION_OPTIONS = {"workers", "backend", "ray-address", "no-progress", "quiet"}
SAMPLES_DIR = "samples"
#: Stage name -> the `reshape` sub-command it runs.
STAGES: dict[str, str] = {
    "features_train": "features",
    "features_candidates": "features",
    "select": "select",
    "distort": "distort",
    "label": "label",
    "features_samples": "features",
    "prune": "prune",
    "publish": "publish",
}
INPUT_KEYS = {"train_refs", "source_labels", "source_root", "candidates", "out", "source_name", "dataset"}
OUTPUTS = {
    "features_train": [RUN_LAYOUT["train_features"]],
    "features_candidates": [RUN_LAYOUT["candidate_features"]],
    "select": [RUN_LAYOUT["selection"]],
    "distort": [RUN_LAYOUT["manifest"]],
    "label": [RUN_LAYOUT["labels"], RUN_LAYOUT["train_csv"], "meta_info.csv"],
    "features_samples": [RUN_LAYOUT["sample_features"]],
    "prune": [RUN_LAYOUT["pruned_csv"], "prune_indices.csv"],
}
#: The artifact whose metadata holds each stage's fingerprint.
FINGERPRINT_ARTIFACT = {
    "features_train": RUN_LAYOUT["train_features"],
    "features_candidates": RUN_LAYOUT["candidate_features"],
    "select": RUN_LAYOUT["selection"],
    "distort": RUN_LAYOUT["manifest"],
    "label": RUN_LAYOUT["train_csv"],
    "features_samples": RUN_LAYOUT["sample_features"],
    "prune": RUN_LAYOUT["pruned_csv"],
}


@dataclass
class PipelineConfig:
    path: Path
    inputs: dict[str, Path | str]
    options: dict[str, dict[str, Any]]
    prune: bool

    @property
    def out(self) -> Path:
        return Path(self.inputs["out"])

    @property
    def dataset(self) -> Path:
        return Path(self.inputs["dataset"])


@dataclass
class StagePlan:
    name: str
    command: str
    args: list[str]
    fingerprint: str
    components: dict[str, Any]
    up_to_date: bool
    reason: str


@dataclass
class StageRecord:
    name: str
    ran: bool
    seconds: float
    reason: str


@dataclass
class RunResult:
    config: PipelineConfig
    records: list[StageRecord] = field(default_factory=list)

    @property
    def ran(self) -> list[str]:
        return [r.name for r in self.records if r.ran]

    @property
    def skipped(self) -> list[str]:
        return [r.name for r in self.records if not r.ran]


# ----------------------------------------------------------------------------------------------- config
def load_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Parse pipeline.toml; input paths are made absolute relative to the config file's folder."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such config file")
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: not valid TOML ({exc})") from None
    base = path.resolve().parent
    known_tables = {"inputs", "features", *STAGES}
    unknown = sorted(set(raw) - known_tables)
    if unknown:
        raise BadInputError(
            f"{path}: unknown table(s) [{'], ['.join(unknown)}]; known: {', '.join(sorted(known_tables))}"
        )
    inputs_raw = raw.get("inputs", {})
    bad = sorted(set(inputs_raw) - INPUT_KEYS)
    if bad:
        raise BadInputError(
            f"{path}: [inputs] has unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(INPUT_KEYS))}"
        )
    for key in ("train_refs", "source_labels", "candidates", "out"):
        if key not in inputs_raw:
            raise BadInputError(f"{path}: [inputs] lacks {key!r}")
    inputs: dict[str, Path | str] = {}
    for key, value in inputs_raw.items():
        if not isinstance(value, str):
            raise BadInputError(f"{path}: [inputs] {key} must be a string")
        inputs[key] = value if key == "source_name" else (base / value).resolve()
    inputs.setdefault("source_root", Path(inputs["source_labels"]).parent)
    inputs.setdefault("dataset", Path(inputs["out"]) / "dataset")
    for key in ("train_refs", "source_labels", "candidates", "source_root"):
        if not Path(inputs[key]).exists():
            raise BadInputError(
                f"{path}: [inputs] {key} = {inputs_raw.get(key, str(inputs[key]))!r}: no such file or folder"
            )
    options = {name: dict(raw.get(name, {})) for name in ("features", *STAGES)}
    prune = bool(options["prune"].pop("enabled", False))
    for name, table in options.items():
        for key, value in table.items():
            if isinstance(value, dict):
                raise BadInputError(f"{path}: [{name}] {key}: nested tables are not stage options")
    return PipelineConfig(path=path, inputs=inputs, options=options, prune=prune)


# ----------------------------------------------------------------------------------------------- args
def _find_option(command: click.Command, key: str) -> click.Option | None:
    flag = "--" + key.replace("_", "-")
    for param in command.params:
        if isinstance(param, click.Option) and (flag in param.opts or flag in param.secondary_opts):
            return param
    return None


def option_args(
    command: click.Command, table: dict[str, Any], *, where: str, base: Path, reserved: set[str]
) -> list[str]:
    """Turn a TOML table of `--option = value` pairs into command-line arguments, checked against the
    command's own options (paths relative to the config file)."""
    args: list[str] = []
    for key in sorted(table):
        value = table[key]
        flag = "--" + key.replace("_", "-")
        if flag in reserved or flag == "--fingerprint":
            raise BadInputError(f"{where}: option {key!r} is set by `reshape run` itself")
        opt = _find_option(command, key)
        if opt is None:
            names = sorted(
                o for p in command.params if isinstance(p, click.Option) and not p.hidden for o in p.opts
            )
            raise BadInputError(f"{where}: unknown option {key!r}; this stage accepts {', '.join(names)}")
        if opt.is_flag:
            if not isinstance(value, bool):
                raise BadInputError(f"{where}: option {key!r} is a flag and needs true or false")
            chosen = flag if flag in opt.opts else None
            if value:
                args.append(chosen or opt.opts[0])
            elif chosen is None:
                args.append(flag)  # the user named the negative form, e.g. reference-source = true
            elif opt.secondary_opts:
                args.append(opt.secondary_opts[0])
            continue
        values = value if isinstance(value, list) else [value]
        texts = []
        for v in values:
            if isinstance(v, bool):
                v = str(v).lower()
            text = str(v)
            if isinstance(opt.type, click.Path) and isinstance(v, str):
                text = str((base / v).resolve())
            texts.append(text)
        if opt.multiple:
            for text in texts:
                args += [opt.opts[0], text]
        else:
            args += [opt.opts[0], ",".join(texts)]
    return args


def _has_option(command: click.Command, flag: str) -> bool:
    return _find_option(command, flag.lstrip("-")) is not None


# ----------------------------------------------------------------------------------------------- fingerprints
def input_fingerprint(path: Path) -> str:
    """Content hash of a file; listing hash of a folder (relative path, size, mtime of every file)."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def stage_fingerprint(components: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(components, sort_keys=True, default=str).encode()).hexdigest()


def stored_fingerprint(stage: str, config: PipelineConfig) -> str | None:
    """The fingerprint a stage's artifacts carry, or None if any of its outputs is missing."""
    if stage == "publish":
        card = config.dataset / DATASET_JSON
        if not card.is_file():
            return None
        try:
            return json.loads(card.read_text("utf-8")).get("fingerprint")
        except json.JSONDecodeError:
            return None
    if not all((config.out / rel).exists() for rel in OUTPUTS[stage]):
        return None
    try:
        return read_artifact_metadata(config.out / FINGERPRINT_ARTIFACT[stage]).get("fingerprint")
    except BadInputError:
        return None


def default_commands() -> dict[str, click.Command]:
    import importlib

    return {name: importlib.import_module(f"reshape.cli.{cmd}_cmd").command for name, cmd in STAGES.items()}


# ----------------------------------------------------------------------------------------------- plan
def _why(previous: dict[str, Any] | None, components: dict[str, Any], stored: str | None) -> str:
    if stored is None:
        return "no artifact yet (or an output is missing)"
    if previous:
        changed_opts = sorted(
            k
            for k in set(previous.get("options", {})) | set(components["options"])
            if previous.get("options", {}).get(k) != components["options"].get(k)
        )
        changed_inputs = sorted(
            k
            for k in set(previous.get("inputs", {})) | set(components["inputs"])
            if previous.get("inputs", {}).get(k) != components["inputs"].get(k)
        )
        parts = []
        if changed_opts:
            parts.append("option(s) changed: " + ", ".join(changed_opts))
        if changed_inputs:
            parts.append("input(s) changed: " + ", ".join(changed_inputs))
        if parts:
            return "; ".join(parts)
    return "fingerprint differs (options, inputs or reshape version changed)"


def plan_pipeline(
    config: PipelineConfig, commands: dict[str, click.Command], *, force: bool = False
) -> list[StagePlan]:
    out = config.out
    base = config.path.resolve().parent
    a = {k: str(out / v) for k, v in RUN_LAYOUT.items()}
    raw_fp: dict[str, str] = {}

    def raw(key: str) -> str:
        if key not in raw_fp:
            raw_fp[key] = input_fingerprint(Path(config.inputs[key]))
        return raw_fp[key]

    previous: dict[str, Any] = {}
    run_json = out / RUN_LAYOUT["run_json"]
    if run_json.is_file():
        try:
            previous = json.loads(run_json.read_text("utf-8")).get("components", {})
        except json.JSONDecodeError:
            previous = {}

    fps: dict[str, str] = {}
    plans: list[StagePlan] = []
    own_sample_features = config.prune and "features" not in config.options["prune"]
    order = [
        s
        for s in STAGES
        if (s != "prune" or config.prune) and (s != "features_samples" or own_sample_features)
    ]
    for name in order:
        cmd_name = STAGES[name]
        command = commands[name]
        if name.startswith("features_"):
            table = {**config.options["features"], **config.options[name]}
        else:
            table = dict(config.options[name])
        if name == "features_train":
            io_args = [str(config.inputs["train_refs"]), "--out", a["train_features"]]
            inputs = {"train_refs": raw("train_refs")}
        elif name == "features_candidates":
            io_args = [str(config.inputs["candidates"]), "--out", a["candidate_features"]]
            inputs = {"candidates": raw("candidates")}
        elif name == "select":
            io_args = [
                "--train",
                a["train_features"],
                "--candidates",
                a["candidate_features"],
                "--out",
                a["selection"],
            ]
            if _has_option(command, "--plot"):
                io_args += ["--plot", str(out / "selection.png")]
            inputs = {
                "features_train": fps["features_train"],
                "features_candidates": fps["features_candidates"],
            }
        elif name == "distort":
            io_args = [a["selection"], "--out", a["images_root"]]
            if _has_option(command, "--manifest"):
                io_args += ["--manifest", a["manifest"]]
            inputs = {"select": fps["select"]}
        elif name == "label":
            io_args = [
                "--selection", a["selection"], "--source-labels", str(config.inputs["source_labels"]),
                "--distorted", a["manifest"], "--out", a["labels"], "--merge-source", a["train_csv"],
                "--pyiqa-meta", str(out / "meta_info.csv"),
                "--train-features", a["train_features"], "--candidate-features", a["candidate_features"],
            ]  # fmt: skip
            inputs = {
                "select": fps["select"],
                "distort": fps["distort"],
                "features_train": fps["features_train"],
                "features_candidates": fps["features_candidates"],
                "source_labels": raw("source_labels"),
            }
        elif name == "features_samples":
            # Run-time step before it: out/samples/ is filled with hard links named by train.csv's dist_img,
            # so the features' image ids are exactly the keys prune joins on.
            io_args = [str(out / SAMPLES_DIR), "--out", a["sample_features"]]
            inputs = {"label": fps["label"], "source_root": raw("source_root")}
        elif name == "prune":
            if "features" in table:
                sample_features = (base / str(table.pop("features"))).resolve()
                if not sample_features.is_file():
                    raise BadInputError(f"{config.path}: [prune] features: {sample_features}: no such file")
                features_fp = input_fingerprint(sample_features)
            else:
                sample_features = Path(a["sample_features"])
                features_fp = fps["features_samples"]
            io_args = [
                "--features",
                str(sample_features),
                "--labels",
                a["train_csv"],
                "--out",
                a["pruned_csv"],
            ]
            if _has_option(command, "--indices"):
                io_args += ["--indices", str(out / "prune_indices.csv")]
            inputs = {"label": fps["label"], "features": features_fp}
        else:  # publish
            io_args = [
                str(config.dataset),
                "--from-run",
                str(out),
                "--train-csv",
                a["pruned_csv"] if config.prune else a["train_csv"],
            ]
            if "source_root" in config.inputs and not table.get("source-root"):
                io_args += ["--source-root", str(config.inputs["source_root"])]
            if "source_name" in config.inputs and not table.get("source-name"):
                io_args += ["--source-name", str(config.inputs["source_name"])]
            inputs = {"label": fps["label"], **({"prune": fps["prune"]} if config.prune else {})}
            inputs["source_root"] = raw("source_root")
        reserved = {x for x in io_args if x.startswith("--")}
        opt_args = option_args(command, table, where=f"{config.path}: [{name}]", base=base, reserved=reserved)
        # Options that only say how the work is executed leave the artifact byte-identical (a project
        # rule), so changing them does not make a stage out of date.
        result_options = {k: v for k, v in table.items() if k.replace("_", "-") not in EXECUTION_OPTIONS}
        components = {
            "stage": name,
            "reshape_version": __version__,
            "options": result_options,
            "inputs": inputs,
        }
        fingerprint = stage_fingerprint(components)
        fps[name] = fingerprint
        stored = None if force else stored_fingerprint(name, config)
        up_to_date = stored == fingerprint
        reason = (
            "up to date"
            if up_to_date
            else ("--force" if force else _why(previous.get(name), components, stored))
        )
        plans.append(
            StagePlan(
                name=name,
                command=cmd_name,
                args=io_args + opt_args + ["--fingerprint", fingerprint],
                fingerprint=fingerprint,
                components=components,
                up_to_date=up_to_date,
                reason=reason,
            )
        )
    return plans


# ----------------------------------------------------------------------------------------------- run
def materialize_samples(config: PipelineConfig) -> int:
    """Fill out/samples/ with hard links (copies across file systems) to every training image, named by its
    train.csv dist_img, and remove anything else there. Returns the number of images."""
    from reshape.artifacts import read_csv
    from reshape.fileio import check_relative, resolve_under_root

    out = config.out
    train_csv = out / RUN_LAYOUT["train_csv"]
    train = read_csv(train_csv, "train")
    folder = out / SAMPLES_DIR
    wanted: dict[Path, Path] = {}
    for i, row in enumerate(train.itertuples(index=False), start=2):
        root = (
            Path(config.inputs["source_root"]) if row.origin == "source" else out / RUN_LAYOUT["images_root"]
        )
        src = resolve_under_root(root, row.dist_img, source=train_csv, row=i)
        dst = folder / check_relative(row.dist_img, source=train_csv, row=i)
        if dst in wanted and wanted[dst] != src:
            raise BadInputError(
                f"{train_csv}, line {i}: image name {row.dist_img!r} is used by two different files"
            )
        wanted[dst] = src
    for path in folder.rglob("*") if folder.exists() else []:
        if path.is_file() and path not in wanted:
            path.unlink()
    for dst, src in wanted.items():
        if dst.exists() and os.path.samefile(dst, src):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            dst.unlink()
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return len(wanted)


def _invoke(plan: StagePlan, command: click.Command, config: PipelineConfig) -> None:
    if plan.name == "features_samples":
        materialize_samples(config)
    try:
        rc = command.main(plan.args, prog_name=f"reshape {plan.command}", standalone_mode=False)
    except ReshapeError as exc:
        raise type(exc)(f"stage {plan.name}: {exc}") from None
    except click.ClickException as exc:
        raise BadInputError(f"{config.path}: [{plan.name}] {exc.format_message()}") from None
    except click.exceptions.Exit as exc:
        rc = exc.exit_code
    except SystemExit as exc:
        rc = exc.code
    if isinstance(rc, int) and rc != 0:
        raise StageError(f"stage {plan.name} (`reshape {plan.command}`) exited with code {rc}")


def _write_run_json(config: PipelineConfig, plans: list[StagePlan], records: list[StageRecord]) -> None:
    previous_components: dict[str, Any] = {}
    path = config.out / RUN_LAYOUT["run_json"]
    if path.is_file():
        try:
            previous_components = json.loads(path.read_text("utf-8")).get("components", {})
        except json.JSONDecodeError:
            previous_components = {}
    done = {r.name for r in records}
    components = {**previous_components, **{p.name: p.components for p in plans if p.name in done}}
    write_json(
        path,
        {
            "config": str(config.path.resolve()),
            "inputs": {k: str(v) for k, v in config.inputs.items()},
            "reshape_version": __version__,
            "stages": {
                r.name: {"ran": r.ran, "seconds": round(r.seconds, 3), "reason": r.reason} for r in records
            },
            "fingerprints": {p.name: p.fingerprint for p in plans if p.name in done},
            "components": components,
        },
    )


def run_pipeline(
    config_path: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    force: bool = False,
    commands: dict[str, click.Command] | None = None,
    echo: Callable[[str], None] = click.echo,
) -> RunResult:
    """Run (or with ``dry_run`` only print) the pipeline described by ``config_path``."""
    config = load_config(config_path)
    commands = {**default_commands(), **(commands or {})}
    plans = plan_pipeline(config, commands, force=force)
    result = RunResult(config=config)
    width = max(len(p.name) for p in plans)
    if dry_run:
        for p in plans:
            echo(f"{p.name:<{width}}  {'up to date' if p.up_to_date else 'will run':<10}  {p.reason}")
            echo(f"{'':<{width}}  $ reshape {p.command} {shlex.join(p.args[:-2])}")
        return result
    config.out.mkdir(parents=True, exist_ok=True)
    # publish --from-run reads the roots from run.json, so it is written before the stages run as well.
    _write_run_json(config, plans, result.records)
    must_run = False
    for p in plans:
        if p.up_to_date and not must_run:
            echo(f"[{p.name}] up to date, skipped")
            result.records.append(StageRecord(p.name, False, 0.0, p.reason))
            continue
        # A rerun stage rewrote its artifact: everything after it reruns even if its inputs look unchanged.
        must_run = True
        echo(f"[{p.name}] running: {p.reason}")
        start = time.perf_counter()
        _invoke(p, commands[p.name], config)
        result.records.append(StageRecord(p.name, True, time.perf_counter() - start, p.reason))
        _write_run_json(config, plans, result.records)
    _write_run_json(config, plans, result.records)
    return result
