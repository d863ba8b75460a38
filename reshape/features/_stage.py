"""The `reshape features` stage: plan (hash, reuse), embed (locally or on Ray), write the Parquet."""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reshape import storage
from reshape.backends import check_backend, import_ray
from reshape.errors import BadInputError, StageError
from reshape.features._encoders import (
    MEMORY_FORMATS,
    PRECISIONS,
    RANDOM_INIT_SEED,
    STATS_ENCODER,
    STATS_WEIGHTS,
    Encoder,
    build_encoder,
    resolve_device,
    resolve_precision,
)
from reshape.features._inputs import collect_images
from reshape.features._loading import _ImageSet, default_workers, image_loader
from reshape.features._on_ray import embed_on_ray
from reshape.fileio import remove_stale_temps, sha256_file
from reshape.outputs import (
    check_file_output,
    check_inputs_not_outputs,
    check_writable,
    created_folders,
    locked_outputs,
)
from reshape.steps import announce

log = logging.getLogger("reshape.features")

RANDOM_WEIGHTS_WARNING = (
    "--weights none: the encoder has RANDOM weights (torch seed %d); the embeddings are meaningless for "
    "selection: use this for tests only"
)


@dataclass(frozen=True)
class RunSettings:
    """How one run embeds, resolved from the options and the machine. All but ``workers`` decide the
    numbers and are recorded in the artifact; ``workers`` only decode, so the artifact does not depend on
    them (and does not name them)."""

    device: str
    precision: str
    memory_format: str
    batch_size: int
    workers: int

    def describe(self) -> str:
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}"
        return f"{self.device}, {self.precision}, {self.memory_format}, batch {self.batch_size}, {workers}"


def _previous(
    out: Path, encoder: Encoder, image_root: Path, settings: RunSettings
) -> dict[tuple[str, str], tuple[np.ndarray, int, int]]:
    """Rows of an existing output that can be reused: same encoder, weights, preprocessing, precision,
    memory format and root (artifacts from before these were recorded used fp16 on CUDA, fp32 on the CPU,
    and the contiguous layout)."""
    from reshape.artifacts import read_features

    if not out.exists():
        return {}
    try:
        old = read_features(out, allow_partial=True)  # a checkpoint of ours is resumed
    except BadInputError as exc:
        log.warning("ignoring the existing output (%s); embedding everything", exc)
        return {}
    m = old.metadata
    same = (
        m.get("encoder") == encoder.name
        and m.get("weights") == encoder.weights
        and m.get("preprocessing") == encoder.preprocessing
        and m.get("image_root") == str(image_root)
        and m.get("precision", "fp16" if m.get("device") == "cuda" else "fp32") == settings.precision
        and m.get("memory_format", "contiguous") == settings.memory_format
    )
    if not same:
        log.warning(
            "%s was made with other encoder/weights/precision/memory format/root; embedding everything again",
            out,
        )
        return {}
    return {
        (img, sha): (old.embeddings[i], int(w), int(h))
        for i, (img, sha, w, h) in enumerate(
            old.frame[["image", "sha256", "width", "height"]].itertuples(index=False)
        )
    }


# ---------------------------------------------------------------------------------------------- stage API
@dataclass
class FeaturesConfig:
    """Options of `reshape features`; field names are the CLI option names with '-' -> '_'."""

    images: Sequence[str | os.PathLike[str]]
    out: str | os.PathLike[str]
    encoder: str = "resnet50"
    weights: str = "default"
    device: str = "auto"
    precision: str = "auto"
    memory_format: str = "channels-last"
    batch_size: int = 32
    workers: int | None = None  # None: default_workers() locally, one actor per GPU/CPU on Ray
    image_root: str | os.PathLike[str] | None = None
    skip_bad: bool = False
    checkpoint_every: int = 2048
    backend: str = "local"
    ray_address: str | None = None
    shard_dir: str | None = None  # Ray shard files (default: <out>.shards/)
    overwrite: bool = False
    wait: bool = False
    fingerprint: str | None = None
    progress: bool = False


@dataclass
class FeaturesResult:
    n_images: int
    n_reused: int
    n_embedded: int
    skipped: list[dict[str, str]]
    out: Path | str
    device: str = "cpu"
    precision: str = "fp32"
    seconds: float = 0.0
    settings: RunSettings | None = None

    def summary_lines(self) -> list[str]:
        how = self.settings.describe() if self.settings else f"{self.device}, {self.precision}"
        return [
            f"{self.n_images} images: {self.n_embedded} embedded, {self.n_reused} reused, "
            f"{len(self.skipped)} skipped -> {self.out} ({how}, {self.seconds:.1f} s)"
        ]


#: the name ``run_features`` returned before the Stage API (issue #15)
FeaturesRun = FeaturesResult

#: rough size of one stored row (2048 float32 + path, hash, sizes), for the free-space check
ROW_BYTES = 2048 * 4 + 256


def _validate(config: FeaturesConfig) -> str:
    """Option checks that need no file; returns the backend name."""
    if config.batch_size < 1:
        raise BadInputError(f"--batch-size {config.batch_size}: must be at least 1")
    if config.workers is not None and config.workers < 0:
        raise BadInputError(f"--workers {config.workers}: must be 0 or more")
    if config.precision not in PRECISIONS:
        raise BadInputError(f"--precision {config.precision!r}: choose {', '.join(PRECISIONS)}")
    if config.memory_format not in MEMORY_FORMATS:
        raise BadInputError(f"--memory-format {config.memory_format!r}: choose {', '.join(MEMORY_FORMATS)}")
    backend = check_backend(config.backend)
    if backend == "ray":
        import_ray()  # a missing Ray is a usage error before any work
    return backend


def _check_outputs(config: FeaturesConfig, out: Path, paths: list[Path], backend: str) -> Path | None:
    """Output safety before anything is decoded or embedded; returns the local Ray shard folder, if any."""
    shards = None
    if backend == "ray" and (config.shard_dir is None or storage.is_local(config.shard_dir)):
        shards = Path(config.shard_dir) if config.shard_dir else out.with_name(out.name + ".shards")
    check_inputs_not_outputs([*config.images, *paths], file_outputs=[out], folder_outputs=[shards])
    target = out.resolve()
    for folder in (Path(item).resolve() for item in config.images if Path(item).is_dir()):
        if folder in target.parents:
            raise BadInputError(
                f"{out}: --out lies inside the input folder {folder}; write it elsewhere so outputs never "
                "mix with the images"
            )
    check_file_output(out, "parquet", overwrite=config.overwrite, kinds=("features",))
    check_writable(out, need_bytes=len(paths) * ROW_BYTES)
    if shards is not None:
        check_writable(shards, need_bytes=len(paths) * ROW_BYTES)
    return shards


@dataclass
class _Plan:
    """What one run embeds: every image by name, its sha256, and which rows an earlier run provides."""

    root: Path
    names: list[str]
    paths: list[Path]
    hashes: list[str]
    rows: dict[str, tuple[str, np.ndarray, int, int]]  # name -> (sha256, embedding, width, height)
    todo: list[int]
    skipped: list[dict[str, str]]


def _plan(config: FeaturesConfig, collected: tuple[Path, list[str], list[Path]], enc: Encoder,
          settings: RunSettings) -> _Plan:  # fmt: skip
    from tqdm import tqdm

    root, names, paths = collected
    bar = tqdm(paths, desc="sha256", unit="img", disable=not config.progress, leave=False)
    hashes = [sha256_file(p) for p in bar]
    prev = _previous(Path(config.out), enc, root, settings)
    rows: dict[str, tuple[str, np.ndarray, int, int]] = {}
    todo: list[int] = []
    for i, (name, sha) in enumerate(zip(names, hashes)):
        hit = prev.get((name, sha))
        if hit is not None:
            rows[name] = (sha, hit[0], hit[1], hit[2])
        else:
            todo.append(i)
    return _Plan(root, names, paths, hashes, rows, todo, [])


def _write(
    config: FeaturesConfig, plan: _Plan, enc: Encoder, settings: RunSettings, *, partial: bool = False
) -> None:
    """Write the rows so far; a checkpoint (``partial``) is marked so, and carries no fingerprint, so no
    reader, ``reshape run`` included, takes it for the finished artifact."""
    from reshape.artifacts import PARTIAL_KEY, Features, write_features

    ordered = sorted(plan.rows)
    frame = pd.DataFrame(
        {
            "image": ordered,
            "sha256": [plan.rows[n][0] for n in ordered],
            "width": [plan.rows[n][2] for n in ordered],
            "height": [plan.rows[n][3] for n in ordered],
        }
    )
    emb = np.stack([plan.rows[n][1] for n in ordered]) if ordered else np.zeros((0, enc.dim), np.float32)
    meta: dict[str, Any] = {
        "encoder": enc.name,
        "weights": enc.weights,
        "preprocessing": enc.preprocessing,
        "image_root": str(plan.root),
        "device": settings.device,
        "precision": settings.precision,
        "memory_format": settings.memory_format,
        "batch_size": settings.batch_size,
        "skipped": plan.skipped,
    }
    if partial:
        meta[PARTIAL_KEY] = {"embedded": len(ordered), "of": len(plan.names)}
    elif config.fingerprint is not None:
        meta["fingerprint"] = config.fingerprint
    write_features(config.out, Features(frame=frame, embeddings=emb, metadata=meta))


def _embed_local(config: FeaturesConfig, plan: _Plan, enc: Encoder, settings: RunSettings) -> None:
    """Embed the planned images in sorted batches while loader workers decode the next ones; checkpoint as
    it goes. On CUDA with channels-last, cuDNN times its kernels once per shape (``cudnn.benchmark``)."""
    import torch
    from tqdm import tqdm

    dataset = _ImageSet([plan.paths[i] for i in plan.todo], enc.prepare, enc.min_size)
    loader = image_loader(dataset, settings.batch_size, settings.workers, settings.device)
    since_checkpoint = 0
    bar = tqdm(total=len(plan.todo), desc=f"embedding ({enc.name}, {settings.describe()})", unit="img",
               disable=not config.progress)  # fmt: skip
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = settings.device == "cuda" and settings.memory_format == "channels-last"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TypedStorage.*")
            for batch in loader:
                _take_batch(config, plan, enc, settings, batch)
                bar.update(len(batch.items))
                since_checkpoint += len(batch.items)
                if config.checkpoint_every and since_checkpoint >= config.checkpoint_every and plan.rows:
                    _write(config, plan, enc, settings, partial=True)
                    since_checkpoint = 0
    finally:
        torch.backends.cudnn.benchmark = benchmark
    bar.close()


def _take_batch(config: FeaturesConfig, plan: _Plan, enc: Encoder, settings: RunSettings, batch: Any) -> None:
    """Record one loader batch: its unreadable images (an error unless ``skip_bad``), then the embeddings
    of the readable ones."""
    for local, _, _, err in batch.items:
        if err is not None:
            if not config.skip_bad:
                raise BadInputError(f"{err} (use --skip-bad to skip unreadable images)")
            log.warning("skipping %s", err)
            plan.skipped.append({"image": plan.names[plan.todo[local]], "error": err})
    good = [item for item in batch.items if item[3] is None]
    if not good:
        return
    emb = enc.embed(batch.inputs, settings.precision)
    if not np.isfinite(emb).all():
        raise StageError(f"{plan.paths[plan.todo[good[0][0]]]}: encoder produced NaN/inf values")
    for (local, w, h, _), e in zip(good, emb):
        i = plan.todo[local]
        plan.rows[plan.names[i]] = (plan.hashes[i], e, w, h)


def _embed_with_ray(config: FeaturesConfig, plan: _Plan, settings: RunSettings, shards: Path | None) -> None:
    rows, skipped = embed_on_ray(
        [(plan.names[i], str(plan.paths[i]), plan.hashes[i]) for i in plan.todo],
        Path(config.out),
        encoder=config.encoder,
        weights=config.weights,
        device=config.device,
        precision=settings.precision,
        memory_format=settings.memory_format,
        batch_size=config.batch_size,
        image_root=plan.root,
        skip_bad=config.skip_bad,
        workers=config.workers or 0,
        ray_address=config.ray_address,
        progress=config.progress,
        shard_dir=config.shard_dir if shards is None else str(shards),
    )
    plan.rows.update(rows)
    plan.skipped.extend(skipped)


def _settings(config: FeaturesConfig, enc: Encoder, device: str, backend: str) -> RunSettings:
    """Resolve ``auto`` precision (the hardware probe), the memory format the encoder can use, and the
    default worker count. The colour-texture fallback has no float model: always fp32, contiguous."""
    precision = resolve_precision(config.precision, device, backend)
    if config.encoder == STATS_ENCODER:
        precision = "fp32"
    memory_format = enc.set_memory_format(config.memory_format)
    workers = config.workers
    if workers is None:
        workers = 0 if backend == "ray" else default_workers(device)
    return RunSettings(device, precision, memory_format, config.batch_size, workers)


def run(config: FeaturesConfig) -> FeaturesResult:
    """Embed every input image (reusing unchanged rows of an existing ``out``) and write the features Parquet.

    Output rows are sorted by image path. Embeddings do not depend on ``workers`` (they only decode); the
    batches are fixed by the sorted order and ``batch_size``.
    """
    start = time.perf_counter()
    backend = _validate(config)
    if not storage.is_local(config.out):  # s3://, gs://, ... (issue #9): stage locally, upload the result
        return _run_to_uri(config)
    out = Path(config.out)
    collected = collect_images(config.images, config.image_root)
    shards = _check_outputs(config, out, collected[2], backend)
    with created_folders(out.parent), locked_outputs(out, wait=config.wait):
        remove_stale_temps(out.parent, names=[out.name])
        device = resolve_device(config.device)
        resolve_precision(config.precision, device, backend)  # a usage error before the model loads
        weights = STATS_WEIGHTS if config.encoder == STATS_ENCODER else config.weights
        announce("loading the %s encoder (weights: %s) on %s", config.encoder, weights, device)
        enc = build_encoder(config.encoder, config.weights, device)
        if config.weights == "none" and config.encoder != STATS_ENCODER:
            log.warning(RANDOM_WEIGHTS_WARNING, RANDOM_INIT_SEED)
        settings = _settings(config, enc, device, backend)
        plan = _plan(config, collected, enc, settings)
        n_reused = len(plan.rows)
        if plan.todo:
            announce("embedding %d image(s) (%d unchanged, reused; %s)", len(plan.todo), n_reused,
                     settings.describe())  # fmt: skip
        if plan.todo and backend == "ray":
            _embed_with_ray(config, plan, settings, shards)
        elif plan.todo:
            _embed_local(config, plan, enc, settings)
        if not plan.rows:
            raise BadInputError(
                f"{config.images[0]}: no image could be embedded ({len(plan.skipped)} skipped)"
            )
        _write(config, plan, enc, settings)
    n = len(plan.rows)
    return FeaturesResult(len(plan.names), n_reused, n - n_reused, plan.skipped, out, device,
                          settings.precision, time.perf_counter() - start, settings)  # fmt: skip


def run_features(
    inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], **options: Any
) -> FeaturesResult:
    """Keyword form of :func:`run`: ``run_features(inputs, out, encoder=, weights=, device=, ...)``."""
    return run(FeaturesConfig(images=inputs, out=out, **options))


def _run_to_uri(config: FeaturesConfig) -> FeaturesResult:
    """:func:`run` with ``out`` on an object store: the existing artifact (for incremental reuse) is
    fetched, the run writes a local copy, which is uploaded whole when complete (``reshape.storage``). On
    Ray the shard files go beside ``out`` on the store (``<out>.shards/``), which every node can reach.
    The store's lease lock (:class:`reshape.outputs.OutputLock`) keeps a second run off the same key."""
    import dataclasses
    import tempfile

    out = str(config.out)
    shard_dir = config.shard_dir
    if config.backend == "ray" and not shard_dir:
        shard_dir = out.rstrip("/") + ".shards"
    name = Path(out.rstrip("/").rsplit("/", 1)[-1] or "features.parquet")
    with (
        locked_outputs(out, wait=config.wait),
        tempfile.TemporaryDirectory(prefix="reshape-features-") as tmp,
    ):
        local = Path(tmp) / name
        if storage.is_file(out):
            local.write_bytes(storage.read_bytes(out))
        result = run(dataclasses.replace(config, out=local, shard_dir=shard_dir))
        storage.upload_file(local, out)
    return dataclasses.replace(result, out=out)
