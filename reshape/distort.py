"""`reshape distort`: apply KADID distortions to reference images and record every output in a manifest.

The stage (:func:`run` on a :class:`DistortConfig`) is a short list of named steps over three modules:

* :mod:`reshape.distort_plan` — pure planning: which (reference, type, level) images, their KADID names
  and per-output seeds, from a folder, an image, a selection/features Parquet or a CSV list;
* :mod:`reshape.distort_shards` — :func:`distort_shard`, the unit of work every executor runs (in-process,
  a process pool, a Ray task);
* :mod:`reshape.distort_output` — the output folder's record (through :mod:`reshape.writer`, the same code
  for a local folder and an object-store prefix): ownership, verification for resume, the manifest;
* :mod:`reshape.distort_seal` — the seal a finished run leaves, so that a rerun with nothing to do ends
  after one folder listing instead of the record-by-record take-over.

Each output's seed is derived from (global seed, reference path, type, level) only, so the bytes of every
image are the same whatever the worker count, shard layout or run order. Safety (README, "Your files are
safe"): inputs are never outputs, files in ``--out`` the stage did not write are never replaced (unless
``--overwrite``) nor deleted, and one run at a time holds an output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import distortions
from reshape import __version__, storage
from reshape.backends import check_backend, import_ray, map_shards
from reshape.distort_output import (
    ShardRecords,
    Takeover,
    check_manifest,
    legacy_journal,
    manifest_is_current,
    read_sidecar,
    remove_legacy_journal,
    settings_tag,
    split_location,
    take_over,
    write_manifest_rows,
)
from reshape.distort_plan import (
    DEFAULT_LEVELS,
    DENOISE_TYPE,
    FORMATS,
    PLAN_LEVELS,
    PRESETS,
    SKIP_BAD_HINT,
    DistortJob,
    References,
    TypePlan,
    check_implemented,
    derive_seed,
    draw_types,
    min_reference_size,
    output_name,
    parse_resize,
    plan_csv_bytes,
    plan_jobs,
    plan_jobs_per_reference,
    precheck_references,
    read_plan,
    read_references,
    resolve_levels,
    resolve_types,
    shard_by_reference,
    split_list,
)
from reshape.distort_seal import Listing, Seal, inputs_digest, reference_stats
from reshape.distort_shards import (
    ShardOptions,
    centre_crop_box,
    denoiser_name,
    distort_shard,
    load_denoiser,
    prepare_reference,
    shard_plan,
)
from reshape.errors import BadInputError, ResourceError, StageError
from reshape.fileio import sha256_file
from reshape.fsbase import META_SUFFIX
from reshape.imageio import image_size
from reshape.outputs import (
    check_entries,
    check_inputs_not_outputs,
    check_output_names,
    check_writable,
    created_folders,
    locked_outputs,
)
from reshape.steps import announce
from reshape.writer import FileStat, Journal, OutputFolder

log = logging.getLogger("reshape.distort")

_precheck = precheck_references  # a module attribute, so a test can make the header check pass a bad file


# ----------------------------------------------------------------------------------------------- config
@dataclass
class DistortConfig:
    """`reshape distort` options; field names are the CLI option names (``--skip-bad`` -> skip_bad)."""

    source: str | os.PathLike[str]
    out: str | os.PathLike[str]
    types: Sequence[int | str] | str | None = None
    preset: str | None = None
    levels: Sequence[int | str] | str | None = None
    manifest: str | os.PathLike[str] | None = None
    format: str = "png"
    resize: tuple[int, int] | str | None = None
    workers: int = 1
    backend: str = "local"
    ray_address: str | None = None
    seed: int = 0
    skip_bad: bool = False
    dncnn_weights: str | os.PathLike[str] | None = None
    ref_root: str | os.PathLike[str] | None = None
    overwrite: bool = False
    wait: bool = False
    fingerprint: str | None = None
    progress: bool = False
    #: a KADIS-700k-style plan CSV (reference, type) instead of the types x references grid
    plan: str | os.PathLike[str] | None = None
    #: draw this many types per reference (seeded by ``seed``) instead of the grid
    random_types: int | None = None
    #: where and in which precision the type-15 DnCNN runs: cpu | cuda | auto, fp32 | bf16
    dncnn_device: str = "cpu"
    dncnn_precision: str = "fp32"


@dataclass
class DistortResult:
    """What a run did: counts, the manifest written, and references skipped with --skip-bad."""

    manifest: Path | str  # a str for an object-store URI
    out_dir: Path | str
    n_references: int
    n_images: int
    n_written: int
    n_reused: int
    n_removed: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    denoiser: str | None = None
    seconds: float = 0.0

    def summary_lines(self) -> list[str]:
        """Human summary for the CLI (the skipped references are listed one per line)."""
        lines = [
            f"distort: {self.n_images} images for {self.n_references - len(self.skipped)} references "
            f"({self.n_written} written, {self.n_reused} already up to date) -> {self.manifest}"
        ]
        if self.denoiser:
            lines.append(f"distort: type 15 denoiser: {self.denoiser}")
        if self.skipped:
            lines.append(f"distort: skipped {len(self.skipped)} bad reference(s):")
            lines += [f"  {s['ref_img']}: {s['error']}" for s in self.skipped]
        return lines


DistortSummary = DistortResult  # the name before the Stage API


def summary_lines(summary: DistortResult) -> list[str]:
    return summary.summary_lines()


@dataclass(frozen=True)
class _Settings:
    """The options, validated."""

    fmt: str
    resize: tuple[int, int] | None
    types: list[int]
    levels: list[int]
    seed: int
    backend: str
    min_size: int
    dncnn_device: str = "cpu"
    dncnn_precision: str = "fp32"

    @property
    def recorded(self) -> dict[str, Any]:
        """What decides the bytes of an output; a change means outputs are made again."""
        return {
            "format": self.fmt,
            "reshape_version": __version__,
            "resize": list(self.resize) if self.resize else None,
            "seed": self.seed,
        }

    @property
    def tag(self) -> str:
        return settings_tag(self.recorded)


@dataclass(frozen=True)
class _Where:
    """Output locations: resolved local paths as strings, or object-store URIs."""

    out: str
    manifest: str

    def shown(self, location: str) -> Path | str:
        return Path(location) if storage.is_local(location) else location

    def folders(self) -> list[str]:
        """The image folder and the manifest's folder: what a run creates and locks (locking the manifest's
        folder, not the file, keeps lock files out of the folder the run writes into)."""
        return [self.out, split_location(self.manifest)[0].location]


@dataclass
class _Plan:
    refs: References
    jobs: list[DistortJob]
    bad: dict[str, str]
    weights: str | None = None
    denoiser: str | None = None
    #: the per-reference types of --plan / --random-types (None for the grid)
    type_plan: TypePlan | None = None
    #: resolved reference paths, in ``refs.images`` order (strings when a plan resolved them)
    paths: Sequence[str | os.PathLike[str]] = field(default_factory=list)

    @property
    def usable(self) -> list[DistortJob]:
        return [j for j in self.jobs if j.ref_img not in self.bad]


# ----------------------------------------------------------------------------------------------- run
def run(config: DistortConfig) -> DistortResult:
    """Distort every reference of ``config.source`` into ``config.out`` and write the manifest.

    ``out`` and ``manifest`` may be object-store URIs (``s3://``, ``gs://``, any pyarrow.fs/fsspec URI).
    Resumable: recorded outputs that still hold their bytes (size and mtime, else sha256) and were made
    with the same settings are kept; everything else is (re)made.
    """
    started = time.monotonic()
    settings = _resolve_settings(config)
    where = _resolve_locations(config)
    if config.plan is not None:
        type_plan = _read_plan_input(config, where)
        refs = type_plan.refs
    else:
        refs = _read_inputs(config, where)
        type_plan = _draw_plan(config, refs, settings)
    settings = _settings_for_plan(settings, type_plan)
    _check_outputs(config, where)
    plan = _plan(config, refs, settings, type_plan)
    plan_file = _check_plan_file(config, where, plan)
    with (
        created_folders(*where.folders()),
        locked_outputs(*where.folders(), wait=config.wait),
    ):
        seal = _Sealing.of(where, settings, plan)
        result = _sealed_result(config, where, settings, plan, seal)
        if result is None:  # not sealed as finished for these inputs: the full take-over decides
            seal.remove()
            result = _full_run(config, where, settings, plan, plan_file, seal)
        else:
            _write_plan_file(plan_file, plan)
    result.seconds = time.monotonic() - started
    return result


def _full_run(
    config: DistortConfig,
    where: _Where,
    settings: _Settings,
    plan: _Plan,
    plan_file: str | None,
    seal: _Sealing,
) -> DistortResult:
    """Plan every job, take the folder over, make what is missing, write the manifest, seal when finished."""
    plan.jobs = _jobs(settings, plan)
    # one listing for these checks, the take-over and, when nothing is written, the seal
    listed = seal.listing()
    usable = plan.usable
    names = [job.dist_img for job in usable]
    check_entries(where.out, names, odd=listed.odd())  # no link or special file at an image name
    check_output_names(where.out, names, what="distorted image")
    state = take_over(
        seal.journal.folder, seal.journal, usable, manifest=where.manifest, tag=settings.tag,
        denoiser=plan.denoiser, overwrite=config.overwrite, listing=listed.files,
    )  # fmt: skip
    _check_references(config, settings, plan, state)
    _check_space(where, settings, state)
    _write_plan_file(plan_file, plan)
    done, failures, written = _distort(config, where, settings, plan, state)
    result = _finish(config, where, settings, plan, state, done, failures)
    if not failures and not plan.bad and result.n_images == len(plan.jobs):
        unchanged = not written and not state.n_removed  # the folder is as listed: no second listing
        seal.seal_finished(plan, state, done, written, listed if unchanged else None)
    return result


def run_distort(
    source: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, fmt: str = "png", **options: Any
) -> DistortResult:
    """:func:`run` with keyword options (``fmt`` is the config's ``format``)."""
    return run(DistortConfig(source=source, out=out_dir, format=fmt, **options))


# ----------------------------------------------------------------------------------------------- steps
def _resolve_settings(config: DistortConfig) -> _Settings:
    fmt = str(config.format).lower().lstrip(".")
    if fmt not in FORMATS:
        raise BadInputError(f"unknown output format {fmt!r}; use png or bmp")
    resize = parse_resize(config.resize) if isinstance(config.resize, str) else config.resize
    resize = tuple(int(v) for v in resize) if resize else None
    if config.workers < 1:
        raise BadInputError(f"--workers must be at least 1, got {config.workers}")
    backend = check_backend(config.backend)
    if backend == "ray":
        import_ray()  # a missing Ray is a usage error before any work
    if not 0 <= int(config.seed) < 2**63:
        raise BadInputError(f"--seed must be in 0..2^63-1, got {config.seed}")
    if config.dncnn_weights is not None and not Path(config.dncnn_weights).is_file():
        raise BadInputError(f"{config.dncnn_weights}: DnCNN weights file not found (--dncnn-weights)")
    types = split_list(config.types) if isinstance(config.types, str) else config.types
    type_ids = _requested_types(config, types)
    level_ids = resolve_levels(
        _level_items(config.levels) if isinstance(config.levels, str) else config.levels
    ) if config.levels is not None or not _plan_mode(config) else list(PLAN_LEVELS)  # fmt: skip
    min_size = min_reference_size(type_ids)
    _check_resize(resize, min_size)
    device, precision = _dncnn_variant(config)
    return _Settings(fmt, resize, type_ids, level_ids, int(config.seed), backend, min_size, device, precision)


def _check_resize(resize: tuple[int, int] | None, min_size: int) -> None:
    if resize is not None and (resize[0] < min_size or resize[1] < min_size):
        raise BadInputError(f"--resize {resize[0]}x{resize[1]} is below the minimum {min_size}x{min_size}")


def _level_items(text: str) -> list[str]:
    """'1,3-5' -> ['1', '3', '4', '5'] (a TOML or Python caller may give levels as text)."""
    items: list[str] = []
    for part in split_list(text):
        first, dash, last = part.partition("-")
        if dash and first.strip().isdigit() and last.strip().isdigit():
            items += [str(i) for i in range(int(first), int(last) + 1)]
        else:
            items.append(part)
    return items


def _resolve_locations(config: DistortConfig) -> _Where:
    """Absolute local paths (as strings) or URIs; an unusable URI is one line naming it, before any write."""
    out = OutputFolder(config.out).location
    manifest = (
        OutputFolder(config.manifest).location if config.manifest else storage.join(out, "manifest.csv")
    )
    for location in (out, manifest):
        if not storage.is_local(location):
            try:
                storage.filesystem(location)  # unknown scheme, missing fsspec plug-in
            except (OSError, ValueError, ImportError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise BadInputError(f"{location}: cannot use this output location ({first})") from None
    return _Where(out, manifest)


def _read_inputs(config: DistortConfig, where: _Where) -> References:
    """The reference list; refuses outputs that are inputs or lie inside/around the reference folder."""
    source = Path(config.source)
    inputs: list[Any] = [source, config.dncnn_weights]
    if source.is_dir():  # checked before the scan, which would otherwise take in earlier outputs
        check_inputs_not_outputs(inputs, file_outputs=[where.manifest], folder_outputs=[where.out])
        return read_references(source, ref_root=config.ref_root)
    refs = read_references(source, ref_root=config.ref_root)
    # a list, an artifact or an image: the reference files are inputs, and so is the folder they are read
    # from (an output inside it would be taken for references by the next run)
    check_inputs_not_outputs(
        inputs + refs.paths() + [refs.root], file_outputs=[where.manifest], folder_outputs=[where.out]
    )
    return refs


def _check_outputs(config: DistortConfig, where: _Where) -> None:
    """Before any work: the manifest is reshape's (or --overwrite), and both locations are usable."""
    check_manifest(where.manifest, overwrite=config.overwrite)
    for folder in (OutputFolder(where.out), split_location(where.manifest)[0]):
        if folder.is_local:
            _check_local_folder(Path(folder.location))
            check_writable(folder.location)
        else:
            folder.create()
    if not storage.is_local(where.out) and storage.is_file(where.out):
        raise BadInputError(f"{where.out}: output path exists and is not a folder")


def _check_local_folder(folder: Path) -> None:
    """The folder, or its nearest existing parent, must be a folder."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        shown = folder if probe == folder else f"{folder} ({probe} is a file)"
        raise BadInputError(f"{shown}: output path exists and is not a folder")


def _plan(config: DistortConfig, refs: References, settings: _Settings, type_plan: TypePlan | None) -> _Plan:
    """References, types and the type-15 denoiser; the jobs come later (:func:`_jobs`), once the run is
    known not to be a sealed rerun. The references' header and hash checks wait for the take-over
    (:func:`_check_references`), so that only references with work still to do are read."""
    paths = type_plan.paths if type_plan is not None and type_plan.paths is not None else refs.paths()
    check_implemented(settings.types)
    plan = _Plan(refs, [], {}, type_plan=type_plan, paths=paths)
    plan.weights, plan.denoiser = _load_denoiser(
        settings.types,
        config.dncnn_weights,
        settings.dncnn_device,
        settings.dncnn_precision,
        settings.backend,
        config.ray_address,
    )
    return plan


def _jobs(settings: _Settings, plan: _Plan) -> list[DistortJob]:
    """Every (reference, type, level) image of the plan, in plan order, with its name and seed."""
    if plan.type_plan is None:
        return plan_jobs(
            plan.refs.images, plan.paths, settings.types, settings.levels, settings.seed, settings.fmt
        )
    return plan_jobs_per_reference(plan.type_plan, plan.paths, settings.levels, settings.seed, settings.fmt)


def _changed_references(
    refs: References,
    paths: Sequence[str | os.PathLike[str]],
    bad: dict[str, str],
    unchanged: set[str] | None = None,
) -> dict[str, str]:
    """References whose bytes differ from the sha256 the selection (or features) artifact recorded: the
    images made from them would no longer match the embeddings the selection was made from. ``unchanged``:
    references known to hold the bytes their finished outputs were made from (same size and mtime as
    recorded), not hashed again."""
    if not refs.sha256:
        return {}
    changed = {}
    for row, (rel, path) in enumerate(zip(refs.images, paths, strict=True)):
        recorded = refs.sha256.get(rel)
        if rel in bad or not recorded or (unchanged and rel in unchanged) or not os.path.isfile(path):
            continue
        if sha256_file(path) != recorded:
            changed[rel] = (
                f"{path}: sha256 differs from the one {refs.source} recorded (row {row}); the reference "
                "changed since it was embedded: rerun features and select"
            )
    return changed


def _load_denoiser(
    types: Sequence[int],
    dncnn_weights: Any,
    device: str = "cpu",
    precision: str = "fp32",
    backend: str = "local",
    ray_address: str | None = None,
) -> tuple[str | None, str | None]:
    """(weights path, manifest label) of the type-15 denoiser; (None, None) without type 15."""
    weights = str(Path(dncnn_weights).resolve()) if dncnn_weights else None
    if DENOISE_TYPE not in types:
        if weights:
            log.info("--dncnn-weights ignored: type 15 (denoise) is not requested")
        return None, None
    if weights and os.path.getsize(weights) == 0:
        raise BadInputError(f"{weights}: empty file (0 bytes), not DnCNN weights (--dncnn-weights)")
    try:
        label = _denoiser_label(weights, device, precision, backend, ray_address)
    except Exception as exc:  # noqa: BLE001 - any loader failure on a user's file (EOFError, unpickling, zip)
        if isinstance(exc, StageError):
            raise
        first = str(exc).splitlines()[0] if str(exc).strip() else "unreadable"
        if isinstance(exc, ValueError) and ("device" in first or "precision" in first):
            raise BadInputError(f"--dncnn-device {device} --dncnn-precision {precision}: {first}") from None
        raise BadInputError(
            f"{weights}: not a DnCNN weights file ({type(exc).__name__}: {first}) (--dncnn-weights)"
        ) from None
    return weights, label + (f" sha256:{sha256_file(weights)}" if weights else "")


def _check_space(where: _Where, settings: _Settings, state: Takeover) -> None:
    """Refuse in one line when the images still to make clearly cannot fit (PNG at 4:1, a low guess)."""
    pixels: dict[str, int] = {}
    for job in state.todo:
        if job.ref_path not in pixels:
            pixels[job.ref_path] = _pixels(job.ref_path, settings.resize)
    check_writable(where.out, need_bytes=sum(pixels[j.ref_path] for j in state.todo) * 3 // 4)


def _pixels(path: str, resize: tuple[int, int] | None) -> int:
    try:
        width, height = resize or image_size(path)
    except BadInputError:
        return 0
    return width * height


def _distort(
    config: DistortConfig, where: _Where, settings: _Settings, plan: _Plan, state: Takeover
) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, FileStat]]:
    """Make the images still to do; record each finished shard; stop at a bad reference unless
    --skip-bad. Returns (rows by image name, {ref_img: error}, {written image: its size and mtime})."""
    options = ShardOptions(
        out_dir=where.out, fmt=settings.fmt, resize=settings.resize, dncnn_weights=plan.weights,
        min_size=settings.min_size, denoiser_label=plan.denoiser, settings_tag=settings.tag,
        dncnn_device=settings.dncnn_device, dncnn_precision=settings.dncnn_precision,
        torch_threads=_torch_threads(config),
    )  # fmt: skip
    announce(
        "distorting %d reference(s) x %d type(s) x %d level(s): %d image(s) to write, %d already done",
        len(plan.refs.images) - len(plan.bad), len(settings.types), len(settings.levels),
        len(state.todo), len(state.done),
    )  # fmt: skip
    records = ShardRecords(state.journal or Journal(OutputFolder(where.out)), settings.tag)
    done, failures = dict(state.done), {}
    results = _execute(shard_plan(state.todo), options, config, len(plan.usable), len(state.done))
    try:
        for jobs, rows in results:
            records.add(jobs, rows)
            for row in rows:
                if "error" in row:
                    failures[row["ref_img"]] = row["error"]
                    if not config.skip_bad:
                        raise BadInputError(row["error"] + SKIP_BAD_HINT)
                else:
                    done[row["dist_img"]] = records.record(row).meta
    except BaseException:
        results.close()  # cancels shards not yet started
        with contextlib.suppress(Exception):  # best effort: their shard segments keep them anyway
            records.close()
        raise
    records.close()
    return done, failures, records.written


def _execute(
    shards: list[list[DistortJob]], options: ShardOptions, config: DistortConfig, total: int, initial: int
) -> Iterator[tuple[list[DistortJob], list[dict[str, Any]]]]:
    """Run shards in this process (workers=1), a process pool or as Ray tasks; yield (jobs, rows) of each
    shard as it finishes. At most a bounded window of shards is in flight, so memory stays flat."""
    from tqdm import tqdm

    bar = tqdm(
        total=total, initial=initial, unit="img", desc="distort", disable=not config.progress,
        dynamic_ncols=True,
    )  # fmt: skip
    try:
        for result in map_shards(
            functools.partial(distort_shard, options=options),
            shards,
            backend=config.backend,
            workers=config.workers,
            ray_address=config.ray_address,
            progress=lambda shard: bar.update(len(shard)),
            resources=_shard_resources(options),
        ):
            yield shards[result.index], result.value
    finally:
        bar.close()


def _finish(
    config: DistortConfig,
    where: _Where,
    settings: _Settings,
    plan: _Plan,
    state: Takeover,
    done: dict[str, dict[str, Any]],
    failures: dict[str, str],
) -> DistortResult:
    """Write the manifest (rows in plan order, bad references listed in the sidecar)."""
    bad = {**plan.bad, **failures}
    kept = [j.dist_img for j in plan.jobs if j.dist_img in done and j.ref_img not in bad]  # plan order
    skipped = [{"ref_img": k, "error": v} for k, v in bad.items()]
    if not kept:
        first = f"no usable reference ({skipped[0]['error']})" if skipped else "nothing to distort"
        raise BadInputError(f"{plan.refs.source}: {first}")
    metadata = _metadata(config, where, settings, plan, skipped, len(kept))
    n_reused = sum(1 for name in kept if name in state.done)
    unchanged = n_reused == len(kept) and not state.n_removed and not state.legacy_journal
    if not (unchanged and manifest_is_current(where.manifest, metadata)):
        write_manifest_rows(where.manifest, (done[name] for name in kept), metadata)  # streamed, in chunks
    remove_legacy_journal(state.legacy_journal)
    return DistortResult(
        manifest=where.shown(where.manifest), out_dir=where.shown(where.out),
        n_references=len(plan.refs.images), n_images=len(kept), n_written=len(kept) - n_reused,
        n_reused=n_reused, n_removed=state.n_removed, skipped=skipped, denoiser=plan.denoiser,
    )  # fmt: skip


def _metadata(
    config: DistortConfig,
    where: _Where,
    settings: _Settings,
    plan: _Plan,
    skipped: list[dict[str, str]],
    n_images: int,
) -> dict[str, Any]:
    metadata = {
        "settings": settings.recorded,
        "seed": settings.seed,
        "ref_root": str(plan.refs.root),
        "source": str(Path(config.source).resolve()),
        "out_dir": where.out,
        "format": settings.fmt,
        "resize": list(settings.resize) if settings.resize else None,
        "types": settings.types,
        "levels": settings.levels,
        "preset": config.preset,
        "denoiser": plan.denoiser,
        "skipped": skipped,
        "n_images": n_images,
    }
    if config.fingerprint is not None:
        metadata["fingerprint"] = config.fingerprint
    metadata.update(_plan_metadata(config, where, settings, plan))
    return metadata


# ----------------------------------------------------------------------------------------------- the seal
@dataclass
class _Sealing:
    """The run's side of :mod:`reshape.distort_seal`: the digest of its inputs and the folder's seal."""

    seal: Seal
    inputs: str | None
    n_images: int

    @property
    def journal(self) -> Journal:
        return self.seal.journal

    @classmethod
    def of(cls, where: _Where, settings: _Settings, plan: _Plan) -> _Sealing:
        if plan.type_plan is not None:
            types = plan.type_plan.types
        else:
            types = [settings.types] * len(plan.refs.images)
        inputs = inputs_digest(
            plan.refs.images, types, levels=settings.levels, tag=settings.tag, denoiser=plan.denoiser
        )
        folder = OutputFolder(where.out)
        beside = set()  # the manifest, its sidecar and the drawn plan, when they lie among the images
        for location in (where.manifest, where.manifest + META_SUFFIX, _plan_file(where)):
            parent, name = split_location(location)
            if parent.location == folder.location:
                beside.add(name)
        n_images = len(settings.levels) * sum(map(len, types))
        return cls(Seal(Journal(folder), beside), inputs, n_images)

    def matches(self, plan: _Plan) -> bool:
        ref_stats = reference_stats(plan.paths) if plan.refs.sha256 else None
        return self.seal.matches(self.inputs, self.n_images, images=plan.refs.images, ref_stats=ref_stats)

    def remove(self) -> None:
        self.seal.remove()

    def listing(self) -> Listing:
        try:
            return self.seal.listing()
        except ResourceError:
            raise  # one line naming the folder already (an object store's listing)
        except OSError as exc:
            raise ResourceError(
                f"{self.journal.folder.location}: cannot list ({exc.strerror or exc})"
            ) from None

    def seal_finished(
        self,
        plan: _Plan,
        state: Takeover,
        done: dict[str, dict[str, Any]],
        written: dict[str, FileStat],
        listed: Listing | None = None,
    ) -> bool:
        """Seal a run that made or reused every planned image (see :meth:`Seal.seal` for the checks).
        With references whose sha256 the input recorded, each must still have the size and mtime its
        outputs recorded, so that a rerun would not hash it either."""
        ref_stats = None
        if plan.refs.sha256:
            paths = dict(zip(plan.refs.images, plan.paths, strict=True))
            if len(_unchanged_finished(paths, done.values(), set())) != len(paths):
                return False
            ref_stats = reference_stats(plan.paths)
        planned = [job.dist_img for job in plan.jobs]
        return self.seal.seal(
            self.inputs, state.records, written, planned, images=plan.refs.images, ref_stats=ref_stats,
            with_references=bool(plan.refs.sha256), listed=listed,
        )  # fmt: skip


def _sealed_result(
    config: DistortConfig, where: _Where, settings: _Settings, plan: _Plan, sealing: _Sealing
) -> DistortResult | None:
    """The result of a rerun the seal proves has nothing to do; None: take the full path."""
    if legacy_journal(where.manifest) is not None:  # an older version's record, to be adopted
        return None
    if not sealing.matches(plan):
        return None
    n_images = sealing.n_images
    if not manifest_is_current(where.manifest, _metadata(config, where, settings, plan, [], n_images)):
        return None
    announce(
        "distorting %d reference(s) x %d type(s) x %d level(s): 0 image(s) to write, %d already done "
        "(the folder is as its last run sealed it)",
        len(plan.refs.images), len(settings.types), len(settings.levels), n_images,
    )  # fmt: skip
    return DistortResult(
        manifest=where.shown(where.manifest), out_dir=where.shown(where.out),
        n_references=len(plan.refs.images), n_images=n_images, n_written=0, n_reused=n_images,
        n_removed=0, denoiser=plan.denoiser,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- plans
DNCNN_DEVICES = ("cpu", "cuda", "auto")
DNCNN_PRECISIONS = ("fp32", "bf16")
PLAN_FILE_SUFFIX = ".plan.csv"


def _plan_mode(config: DistortConfig) -> bool:
    return config.plan is not None or config.random_types is not None


def _requested_types(config: DistortConfig, types: Sequence[int | str] | None) -> list[int]:
    """The grid's types; with --random-types the pool drawn from (all 25 unless --types/--preset); with
    --plan none yet (the plan gives them)."""
    if config.plan is not None and config.random_types is not None:
        raise BadInputError("--plan and --random-types exclude each other: a plan already gives the types")
    if config.plan is not None:
        if types or config.preset:
            raise BadInputError("--plan gives each reference its types; drop --types/--preset")
        return []
    if config.random_types is not None and not (types or config.preset):
        return sorted(distortions.TABLE)
    return resolve_types(types, config.preset)


def _dncnn_variant(config: DistortConfig) -> tuple[str, str]:
    device = str(config.dncnn_device).strip().lower()
    precision = str(config.dncnn_precision).strip().lower()
    if device not in DNCNN_DEVICES:
        raise BadInputError(
            f"--dncnn-device {config.dncnn_device!r}: choose one of {', '.join(DNCNN_DEVICES)}"
        )
    if precision not in DNCNN_PRECISIONS:
        raise BadInputError(
            f"--dncnn-precision {config.dncnn_precision!r}: choose one of {', '.join(DNCNN_PRECISIONS)}"
        )
    return device, precision


def _read_plan_input(config: DistortConfig, where: _Where) -> TypePlan:
    """--plan: the references are named by the plan, relative to --ref-root (default: SOURCE, a folder).
    Only the folder is taken as the input (not 140k files one by one): every reference lies inside it."""
    root = Path(config.ref_root if config.ref_root is not None else config.source)
    if not root.is_dir():
        what = "--ref-root" if config.ref_root is not None else "SOURCE"
        raise BadInputError(f"{root}: with --plan, {what} must be the folder the plan's references are in")
    inputs = [config.source, root, config.plan, config.dncnn_weights]
    check_inputs_not_outputs(
        inputs, file_outputs=[where.manifest, _plan_file(where)], folder_outputs=[where.out]
    )
    return read_plan(config.plan, root)


def _draw_plan(config: DistortConfig, refs: References, settings: _Settings) -> TypePlan | None:
    if config.random_types is None:
        return None
    return TypePlan(refs, draw_types(refs.images, int(config.random_types), settings.types, settings.seed))


def _settings_for_plan(settings: _Settings, type_plan: TypePlan | None) -> _Settings:
    """The types a plan uses decide the minimum reference size and whether a denoiser is loaded."""
    if type_plan is None:
        return settings
    types = type_plan.all_types()
    min_size = min_reference_size(types)
    _check_resize(settings.resize, min_size)
    return dataclasses.replace(settings, types=types, min_size=min_size)


def _plan_file(where: _Where) -> str:
    """Where --random-types writes the plan it drew: next to the manifest, ``<manifest stem>.plan.csv``."""
    folder, name = split_location(where.manifest)
    stem = name[: -len(".csv")] if name.lower().endswith(".csv") else name
    return storage.join(folder.location, stem + PLAN_FILE_SUFFIX)


def _check_plan_file(config: DistortConfig, where: _Where, plan: _Plan) -> str | None:
    """Before any work: the drawn plan may replace only a plan file this stage wrote (its sha256 is in the
    previous manifest's sidecar) or one that already holds the same bytes, unless --overwrite."""
    if config.random_types is None or plan.type_plan is None:
        return None
    location = _plan_file(where)
    if not storage.is_file(location) or config.overwrite:
        return location
    current = hashlib.sha256(storage.read_bytes(location)).hexdigest()
    recorded = (read_sidecar(where.manifest) or {}).get("plan", {}) or {}
    new = hashlib.sha256(plan_csv_bytes(plan.type_plan)).hexdigest()
    if current not in (new, recorded.get("sha256")):
        raise BadInputError(
            f"{location}: exists and was not written by reshape; refusing to replace it with the drawn plan "
            "(pass --overwrite to allow, or move it)"
        )
    return location


def _write_plan_file(location: str | None, plan: _Plan) -> None:
    if location is None or plan.type_plan is None:
        return
    data = plan_csv_bytes(plan.type_plan)
    if storage.is_file(location) and storage.read_bytes(location) == data:
        return
    folder, name = split_location(location)
    folder.put_bytes(name, data)


def _check_references(config: DistortConfig, settings: _Settings, plan: _Plan, state: Takeover) -> None:
    """Header and hash checks of the references that still have images to make (a finished reference is
    neither opened nor hashed again: its outputs were made and recorded from it, and a selection's
    reference with the size and mtime its outputs recorded is not hashed). Bad ones stop the run in one
    line, or with --skip-bad are dropped from the work."""
    paths = dict(zip(plan.refs.images, plan.paths, strict=True))
    pending = list(dict.fromkeys(job.ref_img for job in state.todo))
    todo_refs = dataclasses.replace(plan.refs, images=pending)
    plan.bad = _precheck(todo_refs, [paths[r] for r in pending], settings.min_size, settings.resize)
    if plan.refs.sha256:
        unchanged = _unchanged_finished(paths, state.done.values(), set(pending))
        images = [r for r in plan.refs.images if r not in unchanged]
        subset = dataclasses.replace(plan.refs, images=images)
        plan.bad.update(_changed_references(subset, [paths[r] for r in images], plan.bad))
    if plan.bad and not config.skip_bad:
        raise BadInputError(next(iter(plan.bad.values())) + SKIP_BAD_HINT)
    if plan.bad:
        state.todo = [job for job in state.todo if job.ref_img not in plan.bad]


def _unchanged_finished(
    paths: dict[str, str | os.PathLike[str]], rows: Iterable[dict[str, Any]], pending: set[str]
) -> set[str]:
    """Finished references whose size and mtime are those their outputs recorded (``rows``: the records'
    data, with ``ref_stat``), one stat each."""
    recorded: dict[str, Any] = {}
    for row in rows:
        recorded.setdefault(row["ref_img"], row.get("ref_stat"))
    unchanged = set()
    for rel, stat in recorded.items():
        if rel in pending or not isinstance(stat, list) or rel not in paths:
            continue
        try:
            now = os.stat(paths[rel])
        except OSError:
            continue
        if [now.st_size, now.st_mtime_ns] == stat:
            unchanged.add(rel)
    return unchanged


def _denoiser_label(
    weights: str | None, device: str, precision: str, backend: str, ray_address: str | None = None
) -> str:
    """The manifest label of the denoiser the workers will run. On Ray with ``cuda`` and no CUDA here, one
    GPU task loads it where the type-15 work will run."""
    if device == "cuda" and backend == "ray" and not _local_cuda():
        return _remote_label(weights, device, precision, ray_address)
    return denoiser_name(load_denoiser(weights, device=device, precision=precision))


def _local_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _remote_label(weights: str | None, device: str, precision: str, ray_address: str | None) -> str:
    [result] = map_shards(
        functools.partial(_label_job, weights=weights, device=device, precision=precision),
        [[DENOISE_TYPE]],
        backend="ray",
        ray_address=ray_address,
        resources=_one_gpu,
    )
    return str(result.value)


def _one_gpu(_shard: Any) -> dict[str, float]:
    return {"num_gpus": 1, "num_cpus": 1}


def _label_job(_shard: Any, *, weights: str | None, device: str, precision: str) -> str:
    return denoiser_name(load_denoiser(weights, device=device, precision=precision, quiet=True))


def _torch_threads(config: DistortConfig) -> int:
    """The worker's share of this machine's cores for the DnCNN (one per Ray task: each asks for one CPU)."""
    if config.backend == "ray":
        return 1
    return max(1, (os.cpu_count() or 1) // max(1, config.workers))


def _shard_resources(options: ShardOptions) -> Any:
    """On Ray with ``--dncnn-device cuda``, type-15 shards ask for a GPU and the others for a CPU."""
    if options.dncnn_device != "cuda":
        return None
    return functools.partial(_gpu_for_denoise)


def _gpu_for_denoise(shard: Sequence[DistortJob]) -> dict[str, float]:
    if shard and all(job.dist_type == DENOISE_TYPE for job in shard):
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": 1}


def _plan_metadata(config: DistortConfig, where: _Where, settings: _Settings, plan: _Plan) -> dict[str, Any]:
    """Sidecar entries: the denoiser's device and precision, and the plan the run followed."""
    out: dict[str, Any] = {"dncnn_device": settings.dncnn_device, "dncnn_precision": settings.dncnn_precision}
    if config.plan is not None:
        data = Path(config.plan).read_bytes()
        out["plan"] = {"file": str(Path(config.plan).resolve()), "sha256": hashlib.sha256(data).hexdigest()}
    elif plan.type_plan is not None:
        data = plan_csv_bytes(plan.type_plan)
        out["plan"] = {
            "file": _plan_file(where), "sha256": hashlib.sha256(data).hexdigest(),
            "random_types": int(config.random_types or 0),
        }  # fmt: skip
    return out


__all__ = [
    "DEFAULT_LEVELS",
    "PRESETS",
    "DistortConfig",
    "DistortJob",
    "DistortResult",
    "DistortSummary",
    "References",
    "ShardOptions",
    "centre_crop_box",
    "derive_seed",
    "distort_shard",
    "min_reference_size",
    "output_name",
    "parse_resize",
    "plan_jobs",
    "prepare_reference",
    "read_references",
    "resolve_levels",
    "resolve_types",
    "run",
    "run_distort",
    "shard_by_reference",
    "split_list",
    "summary_lines",
]
