"""`reshape features --backend ray`: encoder actors embed shards of whole batches, each written to its own
Parquet so that a crashed run resumes (issue #9)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reshape import storage
from reshape.backends import map_shards
from reshape.errors import BadInputError, StageError
from reshape.features._encoders import Encoder, build_encoder, resolve_device, resolve_precision
from reshape.features._loading import _ImageSet

log = logging.getLogger("reshape.features")

#: Shards hold whole batches (so every image is embedded in the same batch as with the local backend) and
#: about this many images, each written to its own Parquet under ``<out>.shards/`` before the merge.
RAY_SHARD_IMAGES = 512


@dataclass(frozen=True)
class _RayShardSpec:
    shard_dir: str
    batch_size: int
    encoder: str
    weights: str
    image_root: str
    precision: str = "fp32"  # resolved, or "auto": each actor's device decides
    memory_format: str = "contiguous"


def _shard_file(spec: _RayShardSpec, items: Sequence[tuple[str, str, str]]) -> str:
    """Name of a shard's Parquet: a hash of what decides its content, so stale shards are never reused."""
    import hashlib
    import json

    key = json.dumps(
        [spec.encoder, spec.weights, spec.batch_size, spec.image_root, [(n, sha) for n, _, sha in items]]
        + ([] if spec.precision == "fp32" else [spec.precision])
        + ([] if spec.memory_format == "contiguous" else [spec.memory_format])
    )
    return storage.join(spec.shard_dir, f"shard-{hashlib.sha256(key.encode()).hexdigest()[:32]}.parquet")


def _ray_encoder(spec: str, weights: str, device: str, threads: int, memory_format: str) -> Encoder:
    """Actor set-up: the encoder, on the actor's GPU when Ray gave it one (``device="auto"``).

    On CPU the actor uses the driver's torch thread count: oneDNN's results depend on it in the last bits,
    and with the same count the embeddings are bit-identical to a local run.
    """
    import torch

    dev = resolve_device(device)
    if dev == "cpu":
        torch.set_num_threads(threads)
    enc = build_encoder(spec, weights, dev)
    enc.set_memory_format(memory_format)
    return enc


def _embed_shard(spec: _RayShardSpec, enc: Encoder, items: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """Embed one shard of (image, path, sha256) in batches and write it to its own features Parquet."""
    from reshape.artifacts import Features, write_features

    dataset = _ImageSet([Path(p) for _, p, _ in items], enc.prepare, enc.min_size)
    names, widths, heights, chunks = [], [], [], []
    skipped: list[dict[str, str]] = []
    for start in range(0, len(items), spec.batch_size):
        batch = [dataset[i] for i in range(start, min(start + spec.batch_size, len(items)))]
        good = [b for b in batch if b[4] is None]
        skipped += [{"image": items[b[0]][0], "error": b[4]} for b in batch if b[4] is not None]
        if not good:
            continue
        emb = enc.embed(np.stack([b[1] for b in good]), _precision(spec, enc))
        if not np.isfinite(emb).all():
            raise StageError(f"{items[good[0][0]][1]}: encoder produced NaN/inf values")
        names += [items[b[0]][0] for b in good]
        widths += [b[2] for b in good]
        heights += [b[3] for b in good]
        chunks.append(emb)
    sha = {n: h for n, _, h in items}
    frame = pd.DataFrame(
        {"image": names, "sha256": [sha[n] for n in names], "width": widths, "height": heights}
    )
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, enc.dim), np.float32)
    meta = {
        "encoder": enc.name,
        "weights": enc.weights,
        "preprocessing": enc.preprocessing,
        "image_root": spec.image_root,
        "device": enc.device,
        "precision": _precision(spec, enc),
        "memory_format": enc.memory_format,
        "batch_size": spec.batch_size,
        "skipped": skipped,
    }
    path = _shard_file(spec, items)
    with storage.staged_output(path) as tmp:
        write_features(tmp, Features(frame=frame, embeddings=embeddings, metadata=meta))
    return {"path": path, "skipped": skipped}


def _precision(spec: _RayShardSpec, enc: Encoder) -> str:
    """The shard's precision on this actor's device (the colour-texture fallback: always fp32)."""
    from reshape.features._colour_texture import STATS_ENCODER

    return "fp32" if spec.encoder == STATS_ENCODER else resolve_precision(spec.precision, enc.device)


def _finished_shard(spec: _RayShardSpec, items: Sequence[tuple[str, str, str]]) -> dict[str, Any] | None:
    """A shard file left by an interrupted run (written atomically, so present means complete)."""
    from reshape.artifacts import read_artifact_metadata

    path = _shard_file(spec, items)
    if not storage.is_file(path):
        return None
    try:
        with storage.local_copy(path) as local:
            skipped = read_artifact_metadata(local).get("skipped", [])
    except BadInputError:
        return None
    return {"path": path, "skipped": skipped}


def embed_on_ray(
    items: Sequence[tuple[str, str, str]],
    out: Path,
    *,
    encoder: str,
    weights: str,
    device: str,
    batch_size: int,
    image_root: Path,
    skip_bad: bool,
    precision: str = "fp32",
    memory_format: str = "contiguous",
    workers: int = 0,
    ray_address: str | None = None,
    progress: bool = False,
    shard_dir: str | None = None,
) -> tuple[dict[str, tuple[str, np.ndarray, int, int]], list[dict[str, str]]]:
    """Embed (image, path, sha256) items with Ray actors; returns rows by image name and skipped images.

    One actor per GPU when the cluster has GPUs (``num_gpus=1``), CPU actors otherwise (each reserving as
    many CPUs as this process's torch threads, and using that many), each loading the encoder once. Each
    shard is written to ``shard_dir`` (default ``<out>.shards/``; a local path every node sees, or an
    object-store URI) as it finishes, so a rerun after a crash embeds only the missing shards; the folder
    is removed once everything is merged.
    """
    import functools

    import torch

    from reshape.artifacts import read_features

    shard_dir = shard_dir or str(out.with_name(out.name + ".shards"))
    storage.makedirs(shard_dir)
    spec = _RayShardSpec(shard_dir, batch_size, encoder, weights, str(image_root), precision, memory_format)
    per_shard = batch_size * max(1, RAY_SHARD_IMAGES // batch_size)
    shards = [list(items[i : i + per_shard]) for i in range(0, len(items), per_shard)]
    results = map_shards(
        functools.partial(_embed_shard, spec),
        shards,
        backend="ray",
        workers=workers or None,
        ray_address=ray_address,
        setup=functools.partial(
            _ray_encoder, encoder, weights, device, torch.get_num_threads(), memory_format
        ),
        actor_cpus=torch.get_num_threads(),  # CPU actors: as many Ray CPUs as torch threads
        skip_done=functools.partial(_finished_shard, spec),
        progress=progress,
    )
    done: dict[int, dict[str, Any]] = {}
    try:
        for result in results:
            if result.value["skipped"] and not skip_bad:
                err = result.value["skipped"][0]["error"]
                raise BadInputError(f"{err} (use --skip-bad to skip unreadable images)")
            done[result.index] = result.value
    finally:
        results.close()
    rows: dict[str, tuple[str, np.ndarray, int, int]] = {}
    skipped: list[dict[str, str]] = []
    for index in sorted(done):
        with storage.local_copy(done[index]["path"]) as local:
            part = read_features(local)
        frame = part.frame[["image", "sha256", "width", "height"]]
        for i, (name, sha, w, h) in enumerate(frame.itertuples(index=False)):
            rows[name] = (sha, part.embeddings[i], int(w), int(h))
        skipped += done[index]["skipped"]
    for skip in skipped:
        log.warning("skipping %s", skip["error"])
    storage.remove_tree(shard_dir)
    return rows, skipped
