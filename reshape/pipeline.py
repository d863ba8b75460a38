"""`reshape run pipeline.toml`: every stage from one config, rebuilding only what is stale.

`run` only orchestrates: it builds each stage's typed config (``<Stage>Config``) from the TOML tables and
calls the stage's ``run(config)`` — the same functions the CLI and notebooks call.

A stage is **up to date** when (1) its fingerprint — sha256 of (stage, its options, the fingerprints of its
inputs, reshape version), stored in its artifact's metadata — is unchanged, and (2) every output file it
recorded in ``run.json`` is still there unchanged (size and mtime, sha256 where they differ). A changed
option or input reruns that stage and every stage after it; a missing or changed output reruns only that
stage (whose own resume rebuilds just what is missing), since the same inputs give the same artifact.
Raw inputs are fingerprinted by content (files) or by listing (folders: relative path, size and mtime).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import hashlib
import importlib
import json
import os
import shlex
import shutil
import stat
import sys
import time
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from reshape import __version__
from reshape.artifacts import now_iso, read_artifact_metadata, write_json
from reshape.errors import BadInputError, ReshapeError
from reshape.fileio import sha256_file
from reshape.layout import DATASET_JSON
from reshape.outputs import (
    check_file_output,
    check_inputs_not_outputs,
    check_writable,
    created_folders,
    locked_outputs,
    refuse_edited,
)
from reshape.publish import RUN_LAYOUT
from reshape.records import check_record, record_outputs

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: Stage options that do not change the artifacts (same seed, same bytes whatever the worker count).
EXECUTION_OPTIONS = {
    "workers", "backend", "ray_address", "progress", "quiet", "wait", "overwrite", "chunk_size", "block_size",
}  # fmt: skip
SAMPLES_DIR = "samples"
#: Stage name -> the stage module (``reshape.<module>``) it runs.
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
#: Each stage's positional argument on the command line (for the dry-run's equivalent command).
POSITIONAL = {"features": "images", "distort": "source", "publish": "out_dir"}
RUN_HISTORY_LIMIT = 50


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
    module: str
    config: Any
    fingerprint: str
    components: dict[str, Any]
    outputs: list[Path]
    up_to_date: bool
    reason: str

    def command_line(self) -> str:
        """The `reshape <stage>` command that does the same work (for --dry-run)."""
        positional = POSITIONAL.get(self.module)
        args: list[str] = []
        for f in dataclasses.fields(self.config):
            value = getattr(self.config, f.name)
            if f.name in ("fingerprint", "progress") or value in (None, False, (), []) or value == f.default:
                continue
            if f.name == positional:
                args[:0] = [str(v) for v in (value if isinstance(value, list | tuple) else [value])]
                continue
            flag = "--" + f.name.replace("_", "-")
            args += [flag] if value is True else [flag, _text(value)]
        return f"reshape {self.module} {shlex.join(args)}"


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

    def summary_lines(self) -> list[str]:
        times = ", ".join(
            f"{r.name} {r.seconds:.1f}s" if r.ran else f"{r.name} skipped" for r in self.records
        )
        return [f"done: {times}", f"dataset: {self.config.dataset}"]


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


# ----------------------------------------------------------------------------------------------- config
def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BadInputError(f"{path}: no such config file")
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: not valid TOML ({exc})") from None


def _check_tables(path: Path, raw: dict[str, Any]) -> None:
    known_tables = {"inputs", "features", *STAGES}
    unknown = sorted(set(raw) - known_tables)
    if unknown:
        raise BadInputError(
            f"{path}: unknown table(s) [{'], ['.join(unknown)}]; known: {', '.join(sorted(known_tables))}"
        )
    bad = sorted(set(raw.get("inputs", {})) - INPUT_KEYS)
    if bad:
        raise BadInputError(
            f"{path}: [inputs] has unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(INPUT_KEYS))}"
        )
    for key in ("train_refs", "source_labels", "candidates", "out"):
        if key not in raw.get("inputs", {}):
            raise BadInputError(f"{path}: [inputs] lacks {key!r}")


def load_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Parse pipeline.toml; input paths are made absolute relative to the config file's folder."""
    path = Path(path)
    raw = _read_toml(path)
    _check_tables(path, raw)
    base = path.resolve().parent
    inputs: dict[str, Path | str] = {}
    for key, value in raw["inputs"].items():
        if not isinstance(value, str):
            raise BadInputError(f"{path}: [inputs] {key} must be a string")
        inputs[key] = value if key == "source_name" else (base / value).resolve()
    inputs.setdefault("source_root", Path(inputs["source_labels"]).parent)
    inputs.setdefault("dataset", Path(inputs["out"]) / "dataset")
    for key in ("train_refs", "source_labels", "candidates", "source_root"):
        if not Path(inputs[key]).exists():
            shown = raw["inputs"].get(key, str(inputs[key]))
            raise BadInputError(f"{path}: [inputs] {key} = {shown!r}: no such file or folder")
    options = {name: dict(raw.get(name, {})) for name in ("features", *STAGES)}
    prune = bool(options["prune"].pop("enabled", False))
    for name, table in options.items():
        for key, value in table.items():
            if isinstance(value, dict):
                raise BadInputError(f"{path}: [{name}] {key}: nested tables are not stage options")
    return PipelineConfig(path=path, inputs=inputs, options=options, prune=prune)


# ----------------------------------------------------------------------------------------------- stages
Runner = tuple[type, Callable[[Any], Any]]


def default_runners(names: Iterable[str] = STAGES) -> dict[str, Runner]:
    """Stage name -> (its config class, its ``run``), imported from the stage modules."""
    runners: dict[str, Runner] = {}
    for name in names:
        module_name = STAGES[name]
        module = importlib.import_module(f"reshape.{module_name}")
        runners[name] = (getattr(module, f"{module_name.capitalize()}Config"), module.run)
    return runners


def _is_path_field(f: dataclasses.Field) -> bool:
    return "Path" in str(f.type)


def stage_options(
    config_class: type, table: dict[str, Any], *, where: str, base: Path, reserved: set[str]
) -> dict[str, Any]:
    """A TOML table (keys = the stage's option names, `-` or `_`) checked against the config's fields;
    path-valued options are made relative to the config file."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    hints = _field_hints(config_class)
    settable = sorted(n for n in fields if n not in reserved and n not in ("fingerprint", "progress"))
    options: dict[str, Any] = {}
    for key in sorted(table):
        name = key.replace("-", "_")
        if name in reserved or name == "fingerprint":
            raise BadInputError(f"{where}: option {key!r} is set by `reshape run` itself")
        if name not in fields:
            shown = ", ".join(n.replace("_", "-") for n in settable)
            raise BadInputError(f"{where}: unknown option {key!r}; this stage accepts {shown}")
        value = table[key]
        if _is_path_field(fields[name]) and isinstance(value, str):
            value = (base / value).resolve()
        options[name] = _typed(value, hints.get(name, Any), f"{where}: option {key!r}")
    return options


def _field_hints(config_class: type) -> dict[str, Any]:
    """The config's field types, resolved (the stage modules use postponed annotations)."""
    module = sys.modules.get(config_class.__module__)
    namespace = {"Path": Path, "os": os, **(vars(module) if module else {})}
    try:
        return typing.get_type_hints(config_class, globalns=namespace)
    except (NameError, TypeError):
        return {}


def _fits(value: Any, hint: Any) -> bool:
    """Whether a TOML value can stand for a field of type ``hint`` (what click's types checked before)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in (Any, object):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is bool or hint is type(None):
        return value is None if hint is type(None) else isinstance(value, bool)
    if hint in (int, float):
        numbers = (int,) if hint is int else (int, float)
        return isinstance(value, numbers) and not isinstance(value, bool)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_fits, value, args))
        return not args or all(_fits(v, args[0]) for v in value)
    target = origin if origin is not None else hint
    return isinstance(value, target) if isinstance(target, type) else True


def _typed(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the field's type; one value for a list field becomes a list of one."""
    if typing.get_origin(hint) is list and not isinstance(value, list | tuple):
        value = [value]
    if not _fits(value, hint):
        raise BadInputError(f"{where} = {value!r}: expected {_type_name(hint)}")
    return value


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    return getattr(hint, "__name__", str(hint))


def _coerce(config_class: type, values: dict[str, Any], where: str) -> Any:
    try:
        return config_class(**values)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{where}: {exc}") from None


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
    """The fingerprint a stage's artifact carries, or None if it is missing or unreadable."""
    if stage == "publish":
        card = config.dataset / DATASET_JSON
        try:
            return json.loads(card.read_text("utf-8")).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            return None
    artifact = config.out / FINGERPRINT_ARTIFACT[stage]
    if not artifact.is_file():
        return None
    try:
        return read_artifact_metadata(artifact).get("fingerprint")
    except BadInputError:
        return None


# ----------------------------------------------------------------------------------------------- plan
@dataclass
class _Context:
    """What the per-stage planners share: the config, the layout and the fingerprints so far."""

    config: PipelineConfig
    fps: dict[str, str] = field(default_factory=dict)
    raw_fps: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> Path:
        return self.config.path.resolve().parent

    def a(self, key: str) -> Path:
        return self.config.out / RUN_LAYOUT[key]

    def raw(self, key: str) -> str:
        if key not in self.raw_fps:
            self.raw_fps[key] = input_fingerprint(Path(self.config.inputs[key]))
        return self.raw_fps[key]


#: planner(context, table) -> (the stage's input/output options, its input fingerprints, its outputs)
Planned = tuple[dict[str, Any], dict[str, str], list[Path]]


def _plan_features_train(c: _Context, table: dict[str, Any]) -> Planned:
    out = c.a("train_features")
    return (
        {"images": [str(c.config.inputs["train_refs"])], "out": out},
        {"train_refs": c.raw("train_refs")},
        [out],
    )


def _plan_features_candidates(c: _Context, table: dict[str, Any]) -> Planned:
    out = c.a("candidate_features")
    io = {"images": [str(c.config.inputs["candidates"])], "out": out}
    return io, {"candidates": c.raw("candidates")}, [out]


def _plan_select(c: _Context, table: dict[str, Any]) -> Planned:
    io = {
        "train": c.a("train_features"),
        "candidates": c.a("candidate_features"),
        "out": c.a("selection"),
        "plot": c.config.out / "selection.png",
    }
    inputs = {k: c.fps[k] for k in ("features_train", "features_candidates")}
    return io, inputs, [io["out"], io["plot"]]


def _plan_distort(c: _Context, table: dict[str, Any]) -> Planned:
    io = {"source": c.a("selection"), "out": c.a("images_root"), "manifest": c.a("manifest")}
    return io, {"select": c.fps["select"]}, [io["out"]]


def _plan_label(c: _Context, table: dict[str, Any]) -> Planned:
    io = {
        "selection": c.a("selection"),
        "source_labels": Path(c.config.inputs["source_labels"]),
        "distorted": c.a("manifest"),
        "out": c.a("labels"),
        "merge_source": c.a("train_csv"),
        "pyiqa_meta": c.config.out / "meta_info.csv",
        "train_features": c.a("train_features"),
        "candidate_features": c.a("candidate_features"),
        "source_root": Path(c.config.inputs["source_root"]),
    }
    inputs = {k: c.fps[k] for k in ("select", "distort", "features_train", "features_candidates")}
    inputs["source_labels"] = c.raw("source_labels")
    return io, inputs, [io["out"], io["merge_source"], io["pyiqa_meta"]]


def _plan_features_samples(c: _Context, table: dict[str, Any]) -> Planned:
    # Run-time step before it: out/samples/ is filled with links named by train.csv's dist_img, so the
    # features' image ids are exactly the keys prune joins on.
    out = c.a("sample_features")
    io = {"images": [str(c.config.out / SAMPLES_DIR)], "out": out}
    return io, {"label": c.fps["label"], "source_root": c.raw("source_root")}, [out]


def _plan_prune(c: _Context, table: dict[str, Any]) -> Planned:
    if "features" in table:
        sample_features = (c.base / str(table.pop("features"))).resolve()
        if not sample_features.is_file():
            raise BadInputError(f"{c.config.path}: [prune] features: {sample_features}: no such file")
        features_fp = input_fingerprint(sample_features)
    else:
        sample_features, features_fp = c.a("sample_features"), c.fps["features_samples"]
    io = {
        "features": sample_features,
        "labels": c.a("train_csv"),
        "out": c.a("pruned_csv"),
        "indices": c.config.out / "prune_indices.csv",
    }
    return io, {"label": c.fps["label"], "features": features_fp}, [io["out"], io["indices"]]


def _plan_publish(c: _Context, table: dict[str, Any]) -> Planned:
    cfg = c.config
    io: dict[str, Any] = {
        "out_dir": cfg.dataset,
        "from_run": cfg.out,
        "train_csv": c.a("pruned_csv") if cfg.prune else c.a("train_csv"),
    }
    if not table.get("source-root") and not table.get("source_root"):
        io["source_root"] = Path(cfg.inputs["source_root"])
    if "source_name" in cfg.inputs and not table.get("source-name") and not table.get("source_name"):
        io["source_name"] = str(cfg.inputs["source_name"])
    inputs = {"label": c.fps["label"], **({"prune": c.fps["prune"]} if cfg.prune else {})}
    inputs["source_root"] = c.raw("source_root")
    return io, inputs, [cfg.dataset]


PLANNERS: dict[str, Callable[[_Context, dict[str, Any]], Planned]] = {
    "features_train": _plan_features_train,
    "features_candidates": _plan_features_candidates,
    "select": _plan_select,
    "distort": _plan_distort,
    "label": _plan_label,
    "features_samples": _plan_features_samples,
    "prune": _plan_prune,
    "publish": _plan_publish,
}


def _why(previous: dict[str, Any] | None, components: dict[str, Any], stored: str | None) -> str:
    if stored is None:
        return "no artifact yet (or it is missing)"
    if previous:
        parts = []
        for key, label in (("options", "option(s) changed"), ("inputs", "input(s) changed")):
            old, new = previous.get(key, {}), components[key]
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if changed:
                parts.append(f"{label}: {', '.join(changed)}")
        if parts:
            return "; ".join(parts)
    return "fingerprint differs (options, inputs or reshape version changed)"


def _staleness(
    c: _Context, name: str, run_info: dict[str, Any], components: dict[str, Any], stored: str | None, fp: str
) -> str:
    """Why a stage must run ("up to date" if it need not): its outputs, then its fingerprint."""
    check = check_record(run_info.get("outputs", {}).get(name, {}), c.config.out)
    if stored in (None, fp) and not check.ok:
        return check.describe()
    if stored != fp:
        return _why(run_info.get("components", {}).get(name), components, stored)
    return "up to date"


def _stage_order(config: PipelineConfig) -> list[str]:
    own_sample_features = config.prune and "features" not in config.options["prune"]
    return [
        s
        for s in STAGES
        if (s != "prune" or config.prune) and (s != "features_samples" or own_sample_features)
    ]


def _table(config: PipelineConfig, name: str) -> dict[str, Any]:
    if name.startswith("features_"):
        return {**config.options["features"], **config.options[name]}
    return dict(config.options[name])


def _plan_stage(c: _Context, name: str, runner: Runner, run_info: dict[str, Any], force: bool) -> StagePlan:
    config_class = runner[0]
    table = _table(c.config, name)
    io, inputs, outputs = PLANNERS[name](c, table)
    where = f"{c.config.path}: [{name}]"
    options = stage_options(config_class, table, where=where, base=c.base, reserved=set(io))
    # Options that only say how the work is executed leave the artifact byte-identical (a project
    # rule), so changing them does not make a stage out of date.
    result_options = {k: v for k, v in options.items() if k not in EXECUTION_OPTIONS}
    components = {
        "stage": name,
        "reshape_version": __version__,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in result_options.items()},
        "inputs": inputs,
    }
    fingerprint = stage_fingerprint(components)
    c.fps[name] = fingerprint
    stage_config = _coerce(config_class, {**io, **options, "fingerprint": fingerprint}, where)
    stored = None if force else stored_fingerprint(name, c.config)
    reason = "--force" if force else _staleness(c, name, run_info, components, stored, fingerprint)
    return StagePlan(
        name, STAGES[name], stage_config, fingerprint, components, outputs, reason == "up to date", reason
    )


def plan_pipeline(
    config: PipelineConfig,
    runners: dict[str, Runner],
    *,
    force: bool = False,
    run_info: dict[str, Any] | None = None,
) -> list[StagePlan]:
    """One plan per stage; ``run_info`` is run.json's content (read here when not given)."""
    run_info = read_run_json(config) if run_info is None else run_info
    c = _Context(config)
    return [_plan_stage(c, name, runners[name], run_info, force) for name in _stage_order(config)]


# ----------------------------------------------------------------------------------------------- run.json
def read_run_json(config: PipelineConfig) -> dict[str, Any]:
    path = config.out / RUN_LAYOUT["run_json"]
    try:
        info = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}  # unreadable bookkeeping only means every stage is checked again
    return info if isinstance(info, dict) else {}


def _recorded_path(config: PipelineConfig, path: Path) -> str:
    """A path as run.json records it: relative to the run folder (``../data/source``) when it and the run
    folder both lie inside the config file's folder, the project a copy (``cp -a``) takes along, so a
    copied project publishes its own data; absolute otherwise. Readers join it onto the run folder."""
    from reshape.fileio import resolves_inside

    project = config.path.resolve().parent
    if resolves_inside(project, path) and resolves_inside(project, config.out):
        return Path(os.path.relpath(os.path.realpath(path), os.path.realpath(config.out))).as_posix()
    return str(path)


def _write_run_json(config: PipelineConfig, info: dict[str, Any]) -> None:
    info.update(
        config=_recorded_path(config, config.path.resolve()),
        inputs={
            k: v if k == "source_name" else _recorded_path(config, Path(v)) for k, v in config.inputs.items()
        },
        reshape_version=__version__,
    )
    write_json(config.out / RUN_LAYOUT["run_json"], info)


def _record_stage(info: dict[str, Any], plan: StagePlan, config: PipelineConfig, record: StageRecord) -> None:
    """After a stage ran: its fingerprint, components, outputs and timing (kept until it runs again)."""
    info.setdefault("fingerprints", {})[plan.name] = plan.fingerprint
    info.setdefault("components", {})[plan.name] = plan.components
    previous = info.setdefault("outputs", {}).get(plan.name)
    info["outputs"][plan.name] = record_outputs(_written_by(plan), config.out, previous)
    info.setdefault("stages", {})[plan.name] = {
        "seconds": round(record.seconds, 3),
        "reason": record.reason,
        "finished": now_iso(),
    }


def _written_by(plan: StagePlan) -> list[Path]:
    """The files a stage wrote: a published folder's are those in its SHA256SUMS (files a user added
    there are theirs, not the stage's), every other stage's are all files of its outputs."""
    if plan.name != "publish":
        return plan.outputs
    from reshape.layout import SUMS, parse_sha256sums
    from reshape.verify import VerifyReport

    folder = plan.outputs[0]
    sums = folder / SUMS
    if not sums.is_file():
        return plan.outputs
    listed = parse_sha256sums(sums.read_text("utf-8"), str(sums), VerifyReport(folder))
    return [sums, *(folder / rel for rel in listed)]


def _append_history(info: dict[str, Any], started: str, records: list[StageRecord]) -> None:
    entry = {
        "started": started,
        "finished": now_iso(),
        "ran": {r.name: round(r.seconds, 3) for r in records if r.ran},
        "skipped": [r.name for r in records if not r.ran],
    }
    info["history"] = [*info.get("history", []), entry][-RUN_HISTORY_LIMIT:]


# ----------------------------------------------------------------------------------------------- run
def materialize_samples(config: PipelineConfig, info: dict[str, Any], *, overwrite: bool = False) -> int:
    """Fill out/samples/ with hard links (copies across file systems) to every training image, named by
    its train.csv dist_img. Only links an earlier run recorded are ever removed, and only while they
    still hold the bytes recorded (``sample_sha256``) and are reached without a link leading out of
    ``out``; nothing is written through such a link either. A recorded link edited since is replaced
    only with ``overwrite`` (the run's preflight named it). Returns the count."""
    from reshape.artifacts import read_csv
    from reshape.fileio import check_inside, check_relative, remove_recorded, resolve_under_root, sha256_file

    out = config.out
    train_csv = out / RUN_LAYOUT["train_csv"]
    train = read_csv(train_csv, "train")
    folder = out / SAMPLES_DIR
    check_inside(out, folder, what="run folder")
    recorded: dict[str, str | None] = dict.fromkeys(info.get("samples", []))
    recorded.update(info.get("sample_sha256", {}))
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
    for dst in wanted:
        check_inside(folder, dst.parent, what="run folder")
        _check_sample_entry(folder, dst, recorded)
    for rel in sorted(set(recorded) - {p.relative_to(folder).as_posix() for p in wanted}):
        remove_recorded(folder, rel, recorded[rel])
    digests = {}
    for dst, src in wanted.items():
        rel = dst.relative_to(folder).as_posix()
        if dst.is_file() and not dst.is_symlink() and os.path.samefile(dst, src):
            digests[rel] = recorded.get(rel) or sha256_file(dst)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        replace = overwrite and os.path.lexists(dst) and rel in recorded
        if replace and not dst.is_symlink() and dst.is_file():
            dst.unlink()  # an edited recorded sample, named by the preflight (--overwrite)
        if os.path.lexists(dst) and not remove_recorded(folder, rel, recorded.get(rel)):
            raise BadInputError(
                f"{dst}: changed since reshape linked it; refusing to replace it (pass --overwrite to allow)"
            )
        try:
            os.link(src, dst)
        except OSError:
            from reshape.fileio import atomic_path

            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        digests[rel] = sha256_file(dst)
    info["samples"] = sorted(digests)
    info["sample_sha256"] = dict(sorted(digests.items()))
    return len(wanted)


def _check_sample_entry(folder: Path, dst: Path, recorded: dict[str, str | None]) -> None:
    """A sample name may hold only a regular file an earlier run recorded (or nothing): never a link, a
    special file or a user's file."""
    if not os.path.lexists(dst):
        return
    if dst.is_symlink() or not dst.is_file():
        what = "symbolic link" if dst.is_symlink() else "special file or a folder"
        raise BadInputError(f"{dst}: is a {what} where reshape links a sample; refusing to replace it")
    if dst.relative_to(folder).as_posix() not in recorded:
        raise BadInputError(f"{dst}: exists and was not written by reshape; refusing to replace it")


def _run_stage(plan: StagePlan, runner: Runner, config: PipelineConfig, info: dict[str, Any]) -> None:
    if plan.name == "features_samples":
        materialize_samples(config, info, overwrite=bool(getattr(plan.config, "overwrite", False)))
    try:
        runner[1](plan.config)
    except ReshapeError as exc:
        raise type(exc)(f"stage {plan.name}: {exc}") from None


def _dry_run_lines(plans: list[StagePlan]) -> list[str]:
    width = max(len(p.name) for p in plans)
    lines = []
    for p in plans:
        lines.append(f"{p.name:<{width}}  {'up to date' if p.up_to_date else 'will run: ' + p.reason}")
        lines.append(f"{'':<{width}}  $ {p.command_line()}")
    return lines


#: Stages whose config has no ``check_options`` method: the stage's own check of its options that reads
#: no artifact (module, function of the config), run before the first stage like ``check_options``.
OPTION_CHECKS = {"distort": ("reshape.distort", "_resolve_settings"), "label": ("reshape.label", "_validate")}


def _check_stage_options(plans: list[StagePlan]) -> None:
    """Every stage's file-free option checks (``check_options``), before the first stage runs: a bad value
    for the last stage (``levels = "1-500"``, ``label.k = 0``) must not cost the runs of the ones before it."""
    for p in plans:
        check = getattr(p.config, "check_options", None)
        module, function = OPTION_CHECKS.get(p.name, ("", ""))
        if check is None and type(p.config).__module__ == module:  # the stage's own config class
            check = functools.partial(getattr(importlib.import_module(module), function), p.config)
        if check is None:
            continue
        try:
            check()
        except ReshapeError as exc:
            raise type(exc)(f"stage {p.name}: {exc}") from None


def _check_reference_names(config: PipelineConfig, plans: list[StagePlan]) -> None:
    """Before any stage: every candidate could become a reference whose distorted images are named
    ``<stem>_<tt>_<ll>.<ext>``; a stem too long for the file system fails now, not halfway through distort."""
    from reshape.distort_plan import output_name, read_references
    from reshape.outputs import check_output_names

    distort = next((p for p in plans if p.name == "distort"), None)
    if distort is None or distort.up_to_date:
        return
    fmt = str(getattr(distort.config, "format", "png")).lower().lstrip(".")
    refs = read_references(Path(config.inputs["candidates"]))
    names = [output_name(ref, 25, 5, fmt) for ref in refs.images]
    check_output_names(config.out / RUN_LAYOUT["images_root"], names, what="distorted image")


def _check_edited(
    config: PipelineConfig, plans: list[StagePlan], info: dict[str, Any], *, overwrite: bool
) -> None:
    """The edit rule before any stage runs: an output a stage that will run recorded in run.json (and a
    samples/ link) whose bytes no longer match the record is the user's, so the run stops naming them,
    or with ``overwrite`` names them again and lets the stages replace them. Published files are judged
    by publish itself, against the dataset's SHA256SUMS (a report rebuilt into it changes them too)."""
    edited: list[str] = []
    for p in plans:
        if p.up_to_date or p.name == "publish":
            continue
        changed = check_record(info.get("outputs", {}).get(p.name, {}), config.out).changed
        edited += [
            k for k in changed if not any(part.startswith(".reshape") for part in PurePosixPath(k).parts)
        ]
        if p.name == "features_samples":
            edited += [f"{SAMPLES_DIR}/{rel}" for rel in edited_samples(config, info)]
    refuse_edited(edited, config.out, overwrite=overwrite)
    if overwrite:
        for p in plans:
            if not p.up_to_date and hasattr(p.config, "overwrite"):
                p.config = dataclasses.replace(p.config, overwrite=True)


def edited_samples(config: PipelineConfig, info: dict[str, Any]) -> list[str]:
    """samples/ links an earlier run recorded (with their sha256) that now hold other bytes. A file that
    still has other names (the hard link to its image, nlink > 1) is not hashed: it is the link itself."""
    folder = config.out / SAMPLES_DIR
    edited = []
    for rel, digest in sorted(info.get("sample_sha256", {}).items()):
        path = folder / rel
        try:
            st = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        if digest is None or not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            continue
        if sha256_file(path) != digest:
            edited.append(rel)
    return edited


def _check_layout(config: PipelineConfig) -> None:
    """Before any stage: outputs are neither inputs nor each other, and no link leads out of the run
    folder where a stage writes (a linked samples/ or features/, say)."""
    from reshape.fileio import check_inside, resolves_inside
    from reshape.outputs import check_folder_output

    inputs = [config.inputs[k] for k in ("train_refs", "source_labels", "source_root", "candidates")]
    for key in ("out", "dataset"):
        check_folder_output(config.inputs[key], option=f"[inputs] {key}")
    check_inputs_not_outputs(inputs, folder_outputs=[config.out, config.dataset])
    out, dataset = config.out.resolve(), Path(config.dataset).resolve()
    if out == dataset or resolves_inside(out, dataset) and dataset.relative_to(out).parts[0] in _RUN_NAMES:
        raise BadInputError(
            f"{config.path}: [inputs] dataset = {config.dataset} is the run folder or one of its stage "
            "outputs; choose another folder"
        )
    if resolves_inside(dataset, out):
        raise BadInputError(f"{config.path}: [inputs] out = {config.out} lies inside dataset {dataset}")
    for rel in [*RUN_LAYOUT.values(), SAMPLES_DIR]:
        check_inside(config.out, config.out / rel, what="run folder")
    check_file_output(config.out / RUN_LAYOUT["run_json"], "json")
    for folder in (config.out, config.dataset):
        check_writable(folder)  # read-only, or a name too long: before the first stage


#: The first path component of everything a run writes in its folder.
_RUN_NAMES = frozenset(PurePosixPath(p).parts[0] for p in [*RUN_LAYOUT.values(), SAMPLES_DIR])


def run_pipeline(
    config_path: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    force: bool = False,
    wait: bool = False,
    overwrite: bool = False,
    runners: dict[str, Runner] | None = None,
    echo: Callable[[str], None] = print,
) -> RunResult:
    """Run (or with ``dry_run`` only plan) the pipeline described by ``config_path``.

    ``echo`` receives the plan (dry run) or one progress line per stage. A file a stage recorded (in
    run.json) that was edited since is not replaced without ``overwrite``: the run stops before any stage.
    """
    config = load_config(config_path)
    runners = dict(runners or {})
    runners.update(default_runners(n for n in STAGES if n not in runners))
    result = RunResult(config=config)
    if dry_run:
        for line in _dry_run_lines(plan_pipeline(config, runners, force=force)):
            echo(line)
        return result
    _check_layout(config)
    with created_folders(config.out), locked_outputs(config.out, wait=wait, on_wait=echo):
        _run_plans(config, runners, force, result, echo, overwrite=overwrite)
    return result


def _run_plans(
    config: PipelineConfig,
    runners: dict[str, Runner],
    force: bool,
    result: RunResult,
    echo: Callable[[str], None],
    *,
    overwrite: bool = False,
) -> None:
    info = read_run_json(config)
    plans = plan_pipeline(config, runners, force=force, run_info=info)
    _check_stage_options(plans)
    _check_reference_names(config, plans)
    _check_edited(config, plans, info, overwrite=overwrite)
    run_json = config.out / RUN_LAYOUT["run_json"]
    first_run = not run_json.exists()
    started = now_iso()
    # publish --from-run reads the roots from run.json, so it is written before the stages run as well.
    _write_run_json(config, info)
    try:
        for p in plans:
            if p.up_to_date:
                echo(f"[{p.name}] up to date, skipped")
                result.records.append(StageRecord(p.name, False, 0.0, p.reason))
                continue
            echo(f"[{p.name}] running: {p.reason}")
            start = time.perf_counter()
            _run_stage(p, runners[p.name], config, info)
            record = StageRecord(p.name, True, time.perf_counter() - start, p.reason)
            result.records.append(record)
            _record_stage(info, p, config, record)
            _write_run_json(config, info)
    except BaseException:
        if first_run and not result.records:
            run_json.unlink(missing_ok=True)  # nothing was built: leave no trace of this run
            raise
        _append_history(info, started, result.records)
        _write_run_json(config, info)
        raise
    _append_history(info, started, result.records)
    _write_run_json(config, info)
