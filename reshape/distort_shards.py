"""Per-shard work of `reshape distort`: decode a reference, apply the KADID kernels, write the images.

:func:`distort_shard` is the unit of work for every executor (in-process, a process pool, a Ray task): a
plain top-level function of plain data. It writes through :class:`reshape.writer.OutputFolder` and keeps the
shard's segment of the folder's journal: its claims before the first image, its finished records after
the last, so a killed shard leaves nothing under a final name that the folder's record does not cover.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

import distortions
from reshape.distort_plan import DEFAULT_MIN_SIZE, DENOISE_TYPE, DistortJob, shard_by_reference
from reshape.errors import BadInputError, StageError
from reshape.imageio import SAVE_FORMATS, encode_image, load_image, to_uint8
from reshape.writer import FileRecord, Journal, OutputFolder, shard_key

log = logging.getLogger("reshape.distort")


# ----------------------------------------------------------------------------------------------- pixels
def centre_crop_box(width: int, height: int, target_w: int, target_h: int) -> tuple[int, int, int, int]:
    """Largest centred box of the target aspect ratio (left/top offsets rounded down, as KADID's refs)."""
    if width * target_h > height * target_w:
        crop_w = round(height * target_w / target_h)
        left = (width - crop_w) // 2
        return left, 0, left + crop_w, height
    crop_h = round(width * target_h / target_w)
    top = (height - crop_h) // 2
    return 0, top, width, top + crop_h


def prepare_reference(image: np.ndarray, resize: tuple[int, int] | None) -> np.ndarray:
    """Optional KADID-style reference preparation: centre-crop to the aspect ratio, Pillow Lanczos resize.

    Done on 8-bit data, exactly as the KADID-10k references (and ../shared/kadid_reference) were made.
    """
    if resize is None:
        return image
    target_w, target_h = resize
    pil = Image.fromarray(to_uint8(image), mode="RGB")
    box = centre_crop_box(pil.width, pil.height, target_w, target_h)
    if box == (0, 0, pil.width, pil.height) and pil.size == (target_w, target_h):
        return image
    out = pil.crop(box).resize((target_w, target_h), Image.Resampling.LANCZOS)
    return np.asarray(out, dtype=np.float32) / np.float32(255.0)


# ----------------------------------------------------------------------------------------------- shard work
@dataclass(frozen=True, slots=True)
class ShardOptions:
    """Everything :func:`distort_shard` needs besides the jobs (plain data, picklable, JSON-able)."""

    out_dir: str
    fmt: str = "png"
    resize: tuple[int, int] | None = None
    dncnn_weights: str | None = None
    min_size: int = DEFAULT_MIN_SIZE
    #: what the manifest's denoiser column says for type 15 (name + weights hash); None: the denoiser's name
    denoiser_label: str | None = None
    #: tag of the run settings (seed, format, resize, version) kept with each journal record
    settings_tag: str = ""
    #: where and in which precision the DnCNN runs, and the torch threads of this worker's share
    dncnn_device: str = "cpu"
    dncnn_precision: str = "fp32"
    torch_threads: int | None = None


_DENOISERS: dict[tuple[Any, ...], Any] = {}


def load_denoiser(
    weights: str | None,
    *,
    quiet: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
    threads: int | None = None,
) -> Any:
    """The type-15 denoiser from the distortions library (cached per process and variant)."""
    key = (weights, device, precision, threads)
    if key not in _DENOISERS:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # a bad device, precision or weights file raises here; distort's _load_denoiser makes it one line
            _DENOISERS[key] = distortions.load_denoiser(
                weights, device=device, precision=precision, threads=threads
            )
        if not quiet:  # the fallback's warning, as one log line (workers stay silent: the driver said it)
            for w in caught:
                log.warning("%s", str(w.message).replace("\n", " "))
    return _DENOISERS[key]


def denoiser_name(denoiser: Any) -> str:
    return str(getattr(denoiser, "name", type(denoiser).__name__))


def _manifest_row(job: DistortJob, sha256: str, denoiser: str | None) -> dict[str, Any]:
    spec = distortions.TABLE[job.dist_type]
    return {
        "dist_img": job.dist_img,
        "ref_img": job.ref_img,
        "dist_type": job.dist_type,
        "dist_name": spec.name,
        "dist_level": job.dist_level,
        "parameter": float(spec.levels[job.dist_level - 1]),
        "seed": job.seed,
        "sha256": sha256,
        "denoiser": denoiser,
    }


def distort_shard(jobs: Sequence[DistortJob], options: ShardOptions) -> list[dict[str, Any]]:
    """Produce the images of ``jobs`` under ``options.out_dir`` and return their manifest rows.

    Each image is written atomically and its bytes depend only on the job, so running a shard twice,
    concurrently or after a crash is harmless. Rows come back in job order, each with the ``size`` and
    ``mtime_ns`` the store reports (journal fields; the manifest keeps its schema columns only).

    A reference that cannot be read (or is too small) yields one row ``{"ref_img", "ref_path", "error"}``
    instead of its images; the caller decides whether that is fatal (without ``--skip-bad``) or listed.
    Any other exception (a bug in a kernel, a full disk) propagates; the shard's claims stay recorded.
    """
    folder = OutputFolder(options.out_dir)
    journal = Journal(folder)
    key = shard_key([j.dist_img for j in jobs])
    journal.write_shard(key, [FileRecord(j.dist_img) for j in jobs])
    rows: list[dict[str, Any]] = []
    records: list[FileRecord] = []
    denoise: list[tuple[DistortJob, np.ndarray, list[int]]] = []
    for job, image, error in _references(jobs, options):
        if error is not None:
            rows.append({"ref_img": job.ref_img, "ref_path": job.ref_path, "error": error})
            continue
        if job.dist_type == DENOISE_TYPE:  # batched below, in one denoiser call for the whole shard
            denoise.append((job, image, _reference_stat(job.ref_path)))
            rows.append({})
            continue
        result, denoiser_name = _apply(job, image, options)
        rows.append(_put(folder, job, result, denoiser_name, options, records, _reference_stat(job.ref_path)))
    if denoise:
        slots = iter(i for i, row in enumerate(rows) if row == {})
        for (job, _image, ref_stat), (result, name) in zip(
            denoise, _apply_denoise(denoise, options), strict=True
        ):
            rows[next(slots)] = _put(folder, job, result, name, options, records, ref_stat)
    journal.write_shard(key, records)
    return rows


def _put(
    folder: OutputFolder,
    job: DistortJob,
    result: np.ndarray,
    denoiser: str | None,
    options: ShardOptions,
    records: list[FileRecord],
    ref_stat: list[int] | None,
) -> dict[str, Any]:
    """Encode and write one image; its record joins ``records``; returns its row (with the reference's
    size and mtime, so a rerun knows the reference it was made from without hashing it)."""
    data = encode_image(result, SAVE_FORMATS[f".{options.fmt}"])
    row = _manifest_row(job, "", denoiser)
    if ref_stat is not None:
        row["ref_stat"] = ref_stat
    record = folder.put_bytes(job.dist_img, data, meta={**row, "settings": options.settings_tag})
    record.meta["sha256"] = row["sha256"] = record.sha256
    records.append(record)
    return {**row, "size": record.size, "mtime_ns": record.mtime_ns}


def _reference_stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _references(jobs: Sequence[DistortJob], options: ShardOptions):
    """(job, prepared reference, None) per job, or (job, None, error) once for an unusable reference;
    each reference is decoded once (jobs of one reference are consecutive)."""
    image: np.ndarray | None = None
    loaded_from: str | None = None
    failed: set[str] = set()
    for job in jobs:
        if job.ref_path in failed:
            continue
        if job.ref_path != loaded_from:
            try:
                image = prepare_reference(load_image(job.ref_path), options.resize)
                _check_size(job.ref_path, image, options.min_size, options.resize)
            except BadInputError as exc:
                failed.add(job.ref_path)
                yield job, None, str(exc)
                continue
            loaded_from = job.ref_path
        yield job, image, None


def _shard_denoiser(options: ShardOptions) -> Any:
    return load_denoiser(
        options.dncnn_weights, quiet=True, device=options.dncnn_device, precision=options.dncnn_precision,
        threads=options.torch_threads,
    )  # fmt: skip


def _apply_denoise(
    work: Sequence[tuple[DistortJob, np.ndarray, Any]], options: ShardOptions
) -> list[tuple[np.ndarray, str | None]]:
    """Type-15 images of a shard, all planes through one batched denoiser call where the distortions
    library's ``apply_batch`` (the same bytes as one call per image, in fp32 on the CPU)."""
    if len(work) == 1:
        return [_apply(job, image, options) for job, image, _ in work]
    denoiser = _shard_denoiser(options)
    label = options.denoiser_label or denoiser_name(denoiser)
    requests = [
        (image, job.dist_type, job.dist_level, np.random.default_rng(job.seed)) for job, image, _ in work
    ]
    try:
        results = distortions.apply_batch(requests, denoiser=denoiser)
    except Exception as exc:
        first = work[0][0]
        raise StageError(
            f"{first.ref_path}: distortion {DENOISE_TYPE} failed in a batch of {len(work)} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return [(result, label) for result in results]


def shard_plan(jobs: Sequence[DistortJob], denoise_refs_per_shard: int = 4) -> list[list[DistortJob]]:
    """Shards of whole references; type-15 jobs apart, several references per shard, so a worker (a GPU
    one on Ray with ``--dncnn-device cuda``) denoises them in one batch. Depends on the jobs only."""
    other = [job for job in jobs if job.dist_type != DENOISE_TYPE]
    denoise = [job for job in jobs if job.dist_type == DENOISE_TYPE]
    return shard_by_reference(other) + shard_by_reference(denoise, denoise_refs_per_shard)


def _apply(job: DistortJob, image: np.ndarray, options: ShardOptions) -> tuple[np.ndarray, str | None]:
    kwargs: dict[str, Any] = {"rng": np.random.default_rng(job.seed)}
    denoiser_name = None
    if job.dist_type == DENOISE_TYPE:
        kwargs["denoiser"] = _shard_denoiser(options)
        denoiser_name = options.denoiser_label or denoiser_name(kwargs["denoiser"])
    try:
        return distortions.apply(image, job.dist_type, job.dist_level, **kwargs), denoiser_name
    except Exception as exc:
        raise StageError(
            f"{job.ref_path}: distortion {job.dist_type} level {job.dist_level} failed "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _check_size(path: str, image: np.ndarray, min_size: int, resize: tuple[int, int] | None) -> None:
    h, w = image.shape[:2]
    if w < min_size or h < min_size:
        hint = " (after --resize)" if resize else ""
        raise BadInputError(
            f"{path}: image is {w}x{h}{hint}, smaller than the minimum {min_size}x{min_size} "
            "for the requested distortion types"
        )


__all__ = [
    "ShardOptions",
    "centre_crop_box",
    "denoiser_name",
    "distort_shard",
    "load_denoiser",
    "prepare_reference",
    "shard_plan",
]
