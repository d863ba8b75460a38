"""`reshape distort`: apply KADID distortions to reference images and record every output in a manifest.

Three layers:

* pure planning (:func:`resolve_types`, :func:`plan_jobs`, :func:`derive_seed`, :func:`output_name`): which
  (reference, type, level) triples to produce, under which file name and with which seed;
* :func:`distort_shard`, a plain top-level function doing the work for a list of jobs; any executor can
  call it (the local process pool today, a Ray task for issue #9);
* :func:`run_distort`, the I/O shell: reads the references, resumes from a previous run, schedules shards,
  and writes the manifest CSV with its sidecar metadata.

Each output's seed is derived from (global seed, reference path, type, level) only, so the bytes of every
image are the same whatever the worker count, shard layout or run order.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import distortions
from reshape import __version__, storage
from reshape.artifacts import (
    META_SUFFIX,
    SCHEMA_KEY,
    read_artifact_metadata,
    read_csv,
    read_parquet,
    sidecar_path,
    write_csv,
)
from reshape.backends import check_backend, import_ray, map_shards
from reshape.errors import BadInputError, StageError
from reshape.fileio import TMP_PREFIX, atomic_write_text, remove_stale_temps, resolve_under_root, sha256_file
from reshape.imageio import SAVE_FORMATS, encode_image, image_size, load_image, save_image, to_uint8
from reshape.presets import PRESETS

log = logging.getLogger("reshape.distort")

DEFAULT_LEVELS: tuple[int, ...] = (1, 3, 5)
FORMATS = ("png", "bmp")
REFERENCE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
#: Smallest reference side per type: the non-eccentricity patch (20) samples 16x16 patches at least
#: 16 px inside the border (W-48 >= 0), colour block (23) paints 32x32 squares; the rest only need a few
#: pixels, 16 keeps every kernel's neighbourhood meaningful.
MIN_SIZE_BY_TYPE: dict[int, int] = {20: 48, 23: 32}
DEFAULT_MIN_SIZE = 16
#: Names this stage writes: <refstem>_<tt>_<ll>.<ext>. Only such files are ever removed from --out.
OUTPUT_NAME_RE = re.compile(r"^.+_\d{2}_\d{2}\.(png|bmp)$")
JOURNAL_SUFFIX = ".journal.jsonl"
DENOISE_TYPE = 15


# ----------------------------------------------------------------------------------------------- planning
def resolve_types(types: Iterable[int | str] | None = None, preset: str | None = None) -> list[int]:
    """KADID ids for ``--types`` (ids or names) and/or ``--preset`` (their union), ascending."""
    ids: set[int] = set()
    if preset is not None:
        key = preset.strip().lower()
        if key not in PRESETS:
            raise BadInputError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        ids.update(PRESETS[key])
    for t in types or ():
        try:
            ids.add(distortions.resolve_type(t))
        except ValueError as exc:
            raise BadInputError(str(exc)) from None
    if not ids:
        raise BadInputError("no distortion types: give --types and/or --preset")
    return sorted(ids)


def split_list(text: str | None) -> list[str]:
    """'1, 3,gaussian_blur' -> ['1', '3', 'gaussian_blur']."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def resolve_levels(levels: Iterable[int | str] | None) -> list[int]:
    """Validated levels (1..5), ascending and unique; None gives the paper's 1, 3, 5."""
    if levels is None:
        return list(DEFAULT_LEVELS)
    out: set[int] = set()
    for lv in levels:
        text = str(lv).strip()
        if not text.lstrip("-").isdigit() or not 1 <= int(text) <= 5:
            raise BadInputError(f"unknown distortion level {lv!r}; levels are 1..5")
        out.add(int(text))
    if not out:
        raise BadInputError("no distortion levels given; levels are 1..5")
    return sorted(out)


def parse_resize(text: str | None) -> tuple[int, int] | None:
    """'512x384' -> (512, 384) (width, height)."""
    if text is None or not str(text).strip():
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise BadInputError(f"--resize {text!r}: expected WIDTHxHEIGHT with positive integers, e.g. 512x384")
    return int(m.group(1)), int(m.group(2))


def min_reference_size(types: Iterable[int]) -> int:
    """Smallest width/height a reference (after --resize) needs for all of ``types``."""
    return max((MIN_SIZE_BY_TYPE.get(t, DEFAULT_MIN_SIZE) for t in types), default=DEFAULT_MIN_SIZE)


def derive_seed(global_seed: int, ref_img: str, dist_type: int, dist_level: int) -> int:
    """Seed of one output: SeedSequence(global seed, sha256 of '<ref>/<tt>/<ll>'), a non-negative int64.

    It depends on nothing else (not the worker, shard or order), which is what makes runs reproducible.
    """
    digest = hashlib.sha256(f"{ref_img}\x00{dist_type:02d}\x00{dist_level:02d}".encode()).digest()
    words = [int(w) for w in np.frombuffer(digest, dtype="<u4")]
    state = np.random.SeedSequence([int(global_seed), *words]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))  # fits the manifest's int64 column


def output_name(ref_img: str, dist_type: int, dist_level: int, fmt: str = "png") -> str:
    """KADID naming: ``<refstem>_<tt>_<ll>.<ext>``."""
    stem = PurePosixPath(ref_img.replace("\\", "/")).stem
    return f"{stem}_{dist_type:02d}_{dist_level:02d}.{fmt}"


@dataclass(frozen=True, slots=True)  # millions of jobs at KADIS-700k scale
class DistortJob:
    """One output image to produce."""

    ref_img: str  # path relative to the reference root, as given by the input
    ref_path: str  # absolute path of the reference file
    dist_type: int
    dist_level: int
    dist_img: str  # file name under the output folder
    seed: int


def plan_jobs(
    ref_images: Sequence[str],
    ref_paths: Sequence[str | os.PathLike[str]],
    types: Sequence[int],
    levels: Sequence[int],
    global_seed: int,
    fmt: str = "png",
) -> list[DistortJob]:
    """All (reference, type, level) jobs in reference, type, level order; rejects colliding output names."""
    jobs: list[DistortJob] = []
    owner: dict[str, str] = {}
    for ref_img, ref_path in zip(ref_images, ref_paths, strict=True):
        probe = output_name(ref_img, 1, 1, fmt)
        if probe in owner:
            raise BadInputError(
                f"references {owner[probe]!r} and {ref_img!r} have the same file stem, so their outputs "
                f"would collide (e.g. {probe}); rename one or distort them into separate --out folders"
            )
        owner[probe] = ref_img
        for t in types:
            for lv in levels:
                jobs.append(
                    DistortJob(
                        ref_img=ref_img,
                        ref_path=str(ref_path),
                        dist_type=int(t),
                        dist_level=int(lv),
                        dist_img=output_name(ref_img, t, lv, fmt),
                        seed=derive_seed(global_seed, ref_img, t, lv),
                    )
                )
    return jobs


def shard_by_reference(jobs: Sequence[DistortJob], refs_per_shard: int = 1) -> list[list[DistortJob]]:
    """Group jobs into shards of whole references (a reference is decoded once per shard)."""
    shards: list[list[DistortJob]] = []
    current_refs: list[str] = []
    for job in jobs:
        if not current_refs or job.ref_path != current_refs[-1]:
            if len(current_refs) == refs_per_shard:
                current_refs = []
            if not current_refs:
                shards.append([])
            current_refs.append(job.ref_path)
        shards[-1].append(job)
    return shards


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


_DENOISERS: dict[str | None, Any] = {}


def load_denoiser(weights: str | None, *, quiet: bool = False) -> Any:
    """The type-15 denoiser from the distortions library (cached per process)."""
    if weights not in _DENOISERS:
        loader: Callable[[str | None], Any] | None = getattr(distortions, "load_denoiser", None)
        if loader is None:
            raise StageError("the installed distortions library has no load_denoiser (type 15 unavailable)")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _DENOISERS[weights] = loader(weights)
        if not quiet:  # the fallback's warning, as one log line (workers stay silent: the driver said it)
            for w in caught:
                log.warning("%s", str(w.message).replace("\n", " "))
    return _DENOISERS[weights]


def _denoiser_name(denoiser: Any) -> str:
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

    The unit of work for every executor: a plain top-level function of plain data, so it can run in the
    caller, in a ``concurrent.futures`` process pool, or as a Ray task (issue #9) unchanged. Each image is
    written atomically (temporary file + rename) and its bytes depend only on the job, so running a shard
    twice, concurrently or after a crash is harmless. Rows come back in job order.

    A reference that cannot be read (or is too small) yields one row ``{"ref_img", "ref_path", "error"}``
    instead of its images; the caller decides whether that is fatal (without ``--skip-bad``) or listed.
    Any other exception (a bug in a kernel) propagates.
    """
    to_store = not storage.is_local(options.out_dir)
    out_dir = options.out_dir if to_store else Path(options.out_dir)
    rows: list[dict[str, Any]] = []
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
                rows.append({"ref_img": job.ref_img, "ref_path": job.ref_path, "error": str(exc)})
                continue
            loaded_from = job.ref_path
        kwargs: dict[str, Any] = {"rng": np.random.default_rng(job.seed)}
        denoiser_name = None
        if job.dist_type == DENOISE_TYPE:
            kwargs["denoiser"] = load_denoiser(options.dncnn_weights, quiet=True)
            denoiser_name = options.denoiser_label or _denoiser_name(kwargs["denoiser"])
        try:
            result = distortions.apply(image, job.dist_type, job.dist_level, **kwargs)
        except Exception as exc:
            raise StageError(
                f"{job.ref_path}: distortion {job.dist_type} level {job.dist_level} failed "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if to_store:  # s3://, gs://, ...: straight to the store, one atomic object per image
            data = encode_image(result, SAVE_FORMATS[f".{options.fmt}"])
            storage.write_bytes(storage.join(out_dir, job.dist_img), data)
        else:
            data = save_image(out_dir / job.dist_img, result)
        rows.append(_manifest_row(job, hashlib.sha256(data).hexdigest(), denoiser_name))
    return rows


def _check_size(path: str, image: np.ndarray, min_size: int, resize: tuple[int, int] | None) -> None:
    h, w = image.shape[:2]
    if w < min_size or h < min_size:
        hint = " (after --resize)" if resize else ""
        raise BadInputError(
            f"{path}: image is {w}x{h}{hint}, smaller than the minimum {min_size}x{min_size} "
            "for the requested distortion types"
        )


# ----------------------------------------------------------------------------------------------- inputs
@dataclass
class References:
    """Reference images to distort: ``images`` relative to ``root`` exactly as the input names them."""

    root: Path
    images: list[str]
    source: Path

    def paths(self) -> list[Path]:
        return [
            resolve_under_root(self.root, rel, source=self.source, row=i) for i, rel in enumerate(self.images)
        ]


def _parquet_kind(path: Path) -> str:
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowException, OSError) as exc:
        raise BadInputError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    return meta.get(SCHEMA_KEY.encode(), b"").decode().partition("/")[0]


def _root_from_metadata(path: Path, meta: dict[str, Any]) -> Path:
    root = meta.get("image_root")
    if not root:
        raise BadInputError(f"{path}: metadata has no image_root; pass --ref-root")
    # a relative root is taken relative to the artifact's folder, so a moved project keeps working
    return (path.parent / str(root)).resolve() if not Path(str(root)).is_absolute() else Path(str(root))


def _looks_like_image_path(text: str) -> bool:
    return Path(text.strip()).suffix.lower() in REFERENCE_SUFFIXES


def read_references(
    source: str | os.PathLike[str],
    *,
    ref_root: str | os.PathLike[str] | None = None,
    exclude: str | os.PathLike[str] | None = None,
) -> References:
    """References from a folder (recursive), a selection/features Parquet, or a CSV list.

    CSV: column ``image`` if present, else the first column; a first line that is itself an image path is
    taken as data (a header-less list). Paths are relative to the CSV's folder unless ``ref_root`` is given.
    Parquet: column ``image`` relative to metadata ``image_root`` (or ``ref_root``).
    ``exclude``: a folder to leave out of a folder scan (the output folder).
    """
    src = Path(source)
    if not src.exists():
        raise BadInputError(f"{src}: no such file or folder")
    if src.is_dir():
        folder = src.resolve()
        root = Path(ref_root).resolve() if ref_root else folder
        if root != folder and root not in folder.parents:
            raise BadInputError(f"{src}: reference folder is not inside --ref-root {root}")
        skip = Path(exclude).resolve() if exclude else None
        images = []
        for p in sorted(folder.rglob("*")):
            if skip is not None and (p == skip or skip in p.parents):
                continue
            if p.is_file() and p.suffix.lower() in REFERENCE_SUFFIXES and not p.name.startswith("."):
                images.append(p.relative_to(root).as_posix())
        if not images:
            raise BadInputError(
                f"{src}: folder contains no reference images ({', '.join(sorted(REFERENCE_SUFFIXES))})"
            )
        return References(root=root, images=images, source=src)
    if src.suffix.lower() == ".parquet":
        kind = _parquet_kind(src)
        if kind == "selection":
            table, meta = read_parquet(src, "selection")
        elif kind == "features":
            table = pq.read_table(src, columns=["image"])
            meta = read_artifact_metadata(src)
        else:
            raise BadInputError(f"{src}: not a selection or features artifact (schema {kind or 'missing'})")
        root = Path(ref_root).resolve() if ref_root else _root_from_metadata(src, meta)
        images = [str(v) for v in table.column("image").to_pylist()]
        if not images:
            raise BadInputError(f"{src}: contains no images")
        return References(root=root, images=images, source=src)
    if src.suffix.lower() in (".csv", ".txt", ".tsv"):
        try:
            sep = "\t" if src.suffix.lower() == ".tsv" else ","
            df = pd.read_csv(src, dtype=str, keep_default_na=False, sep=sep)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise BadInputError(f"{src}: not a readable CSV ({str(exc).splitlines()[0]})") from None
        headerless = "image" not in df.columns and _looks_like_image_path(str(df.columns[0]))
        if "image" in df.columns:
            images = df["image"].tolist()
        else:
            images = ([str(df.columns[0])] if headerless else []) + df.iloc[:, 0].tolist()
        if not images:
            raise BadInputError(f"{src}: lists no images")
        for i, rel in enumerate(images):
            if not str(rel).strip():
                raise BadInputError(f"{src}, line {i + (1 if headerless else 2)}: empty image path")
        root = Path(ref_root).resolve() if ref_root else src.resolve().parent
        return References(root=root, images=[str(r).strip() for r in images], source=src)
    raise BadInputError(
        f"{src}: unsupported reference input (give a folder, a .parquet from select/features, or a .csv list)"
    )


# ----------------------------------------------------------------------------------------------- resume
def journal_path(manifest: str | os.PathLike[str]) -> Path:
    m = Path(manifest)
    return m.with_name(m.name + JOURNAL_SUFFIX)


def _normalise(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True))


def _load_previous(manifest: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Rows recorded by a previous run with the same settings, by dist_img: manifest, then journal."""
    records: dict[str, dict[str, Any]] = {}
    if manifest.is_file():
        try:
            meta = read_artifact_metadata(manifest)
            if _normalise(meta.get("settings")) == settings:
                for row in read_csv(manifest, "distortion_manifest").to_dict("records"):
                    records[str(row["dist_img"])] = row
        except BadInputError as exc:
            log.warning("ignoring the previous manifest (%s); every output is checked again", exc)
    journal = journal_path(manifest)
    if journal.is_file():
        with open(journal, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            header = {}
        if _normalise(header.get("settings")) == settings:
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the line being written when the run was killed
                if isinstance(row, dict) and "dist_img" in row:
                    records[str(row["dist_img"])] = row
    return records


def _still_valid(
    job: DistortJob, record: dict[str, Any] | None, out_dir: Path | str, denoiser: str | None
) -> bool:
    if record is None:
        return False
    recorded_denoiser = record.get("denoiser")
    if not isinstance(recorded_denoiser, str) or not recorded_denoiser:
        recorded_denoiser = None
    if recorded_denoiser != (denoiser if job.dist_type == DENOISE_TYPE else None):
        return False  # other DnCNN weights (or none now): only type-15 outputs are redone
    same = (
        str(record.get("ref_img")) == job.ref_img
        and int(record.get("dist_type", -1)) == job.dist_type
        and int(record.get("dist_level", -1)) == job.dist_level
        and int(record.get("seed", -1)) == job.seed
    )
    # object store: the object is read back and hashed again (see the object store notes below)
    if isinstance(out_dir, str):
        return same and _store_sha256(storage.join(out_dir, job.dist_img)) == record.get("sha256")
    path = out_dir / job.dist_img
    return same and path.is_file() and sha256_file(path) == record.get("sha256")


def _store_sha256(location: str) -> str | None:
    if not storage.is_file(location):
        return None
    return hashlib.sha256(storage.read_bytes(location)).hexdigest()


class _Journal:
    """Append-only JSON lines of finished rows, fsynced per shard: a crash loses only in-flight shards."""

    def __init__(self, path: Path, settings: dict[str, Any], verified: list[dict[str, Any]]):
        self.path = path
        lines = [json.dumps({"journal": "reshape-distort", "settings": settings}, sort_keys=True)]
        lines += [json.dumps(_jsonable(r), sort_keys=True) for r in verified]
        atomic_write_text(path, "\n".join(lines) + "\n")
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        self._fh.write("".join(json.dumps(_jsonable(r), sort_keys=True) + "\n" for r in rows))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and np.isnan(v):
            v = None
        out[k] = v
    return out


def _clean_out_dir(out_dir: Path, keep: set[str]) -> int:
    """Remove temp files and earlier outputs (our naming pattern only) that this run does not produce."""
    removed = remove_stale_temps(out_dir)
    for p in out_dir.iterdir():
        if p.is_file() and OUTPUT_NAME_RE.match(p.name) and p.name not in keep:
            p.unlink()
            removed += 1
    return removed


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BadInputError(f"{out_dir}: output path exists and is not a folder") from None
    except OSError as exc:
        raise BadInputError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from None
    if not out_dir.is_dir():
        raise BadInputError(f"{out_dir}: output path exists and is not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=out_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise BadInputError(f"{out_dir}: output folder is not writable ({exc.strerror or exc})") from None


# ----------------------------------------------------------------------------------------------- object store
# With --out/--manifest on an object store (s3://, gs://, any pyarrow.fs / fsspec URI; issue #9) the same
# run happens with these stand-ins for the local-file helpers above. Choices: resume re-reads every
# listed object and checks its sha256 (a size check would miss a rewritten object of equal size, and the
# read is cheap next to distorting); the journal, which an object store cannot append to, is a prefix
# ``<manifest>.journal.d/`` of numbered JSON-lines segments, each written atomically.
STORE_JOURNAL_SUFFIX = JOURNAL_SUFFIX.removesuffix(".jsonl") + ".d"
STORE_JOURNAL_FLUSH_S = 5.0


def _parent(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[0]


def _store_journal_dir(manifest: str) -> str:
    return manifest + STORE_JOURNAL_SUFFIX


def _load_previous_from_store(manifest: str, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """:func:`_load_previous` on local copies of the manifest, its sidecar and the journal segments."""
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
        local = Path(tmp) / manifest.rstrip("/").rsplit("/", 1)[-1]
        if storage.is_file(manifest):
            local.write_bytes(storage.read_bytes(manifest))
            sidecar = manifest + META_SUFFIX
            if storage.is_file(sidecar):
                sidecar_path(local).write_bytes(storage.read_bytes(sidecar))
        segments_dir = _store_journal_dir(manifest)
        segments = [n for n in storage.listdir(segments_dir) if n.endswith(".jsonl")]
        if segments:
            text = "".join(storage.read_bytes(storage.join(segments_dir, n)).decode() for n in segments)
            journal_path(local).write_text(text, encoding="utf-8")
        return _load_previous(local, settings)


class _StoreJournal:
    """:class:`_Journal` for an object store: rows are buffered and written as a new segment object at most
    every STORE_JOURNAL_FLUSH_S seconds (and on close); a driver crash loses only the last few seconds."""

    def __init__(self, manifest: str, settings: dict[str, Any], verified: list[dict[str, Any]]):
        self._clock = time.monotonic
        self.folder = _store_journal_dir(manifest)
        storage.remove_tree(self.folder)
        self._seq = 0
        self._buffer: list[str] = []
        header = json.dumps({"journal": "reshape-distort", "settings": settings}, sort_keys=True)
        self._write([header] + [json.dumps(_jsonable(r), sort_keys=True) for r in verified])
        self._last = self._clock()

    def _write(self, lines: list[str]) -> None:
        data = "".join(line + "\n" for line in lines).encode()
        storage.write_bytes(storage.join(self.folder, f"{self._seq:010d}.jsonl"), data)
        self._seq += 1

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        self._buffer += [json.dumps(_jsonable(r), sort_keys=True) for r in rows]
        if self._buffer and self._clock() - self._last >= STORE_JOURNAL_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._write(self._buffer)
            self._buffer = []
        self._last = self._clock()

    def close(self) -> None:
        self.flush()


def _clean_store_dir(out_dir: str, keep: set[str]) -> int:
    removed = storage.remove_stale_temps(out_dir)
    for name in storage.listdir(out_dir):
        if OUTPUT_NAME_RE.match(name) and name not in keep:
            storage.remove(storage.join(out_dir, name))
            removed += 1
    return removed


def _check_store_writable(location: str, folder: str | None = None) -> None:
    """Create the folder/prefix of ``location`` (``folder``, default itself; a no-op on most object stores);
    an unknown scheme or unusable location is bad input named after ``location``."""
    try:
        storage.filesystem(location)  # unknown scheme, missing fsspec plug-in: one line naming the URI
        storage.makedirs(folder or location)
        if folder is None and storage.is_file(location):
            raise BadInputError(f"{location}: output path exists and is not a folder")
    except BadInputError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"{location}: cannot use this output location ({first})") from None


def _write_manifest_to_store(manifest: str, frame: pd.DataFrame, metadata: dict[str, Any]) -> None:
    """write_csv into a local folder, then upload the CSV and then its sidecar (the local order)."""
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
        local = Path(tmp) / manifest.rstrip("/").rsplit("/", 1)[-1]
        write_csv(local, frame, "distortion_manifest", metadata)
        storage.upload_file(local, manifest)
        storage.upload_file(sidecar_path(local), manifest + META_SUFFIX)


# ----------------------------------------------------------------------------------------------- run
@dataclass
class DistortSummary:
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


def _precheck(
    refs: References, paths: list[Path], min_size: int, resize: tuple[int, int] | None
) -> dict[str, str]:
    """Cheap header checks before any work: {ref_img: error} for missing/unreadable/too-small references."""
    bad: dict[str, str] = {}
    for rel, path in zip(refs.images, paths):
        try:
            w, h = image_size(path)
            if resize is None and (w < min_size or h < min_size):
                raise BadInputError(
                    f"{path}: image is {w}x{h}, smaller than the minimum {min_size}x{min_size} "
                    "for the requested distortion types"
                )
        except BadInputError as exc:
            bad[rel] = str(exc)
    return bad


def _check_implemented(types: Sequence[int]) -> None:
    for t in types:
        try:
            distortions.get_kernel(t)
        except NotImplementedError:
            raise StageError(
                f"distortion type {t} ({distortions.TABLE[t].name}) is not implemented by the installed "
                "distortions library"
            ) from None


def run_distort(
    source: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    types: Sequence[int | str] | None = None,
    preset: str | None = None,
    levels: Sequence[int | str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    fmt: str = "png",
    resize: tuple[int, int] | str | None = None,
    workers: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    seed: int = 0,
    skip_bad: bool = False,
    dncnn_weights: str | os.PathLike[str] | None = None,
    ref_root: str | os.PathLike[str] | None = None,
    fingerprint: str | None = None,
    progress: bool = False,
) -> DistortSummary:
    """Distort every reference of ``source`` with ``types`` x ``levels`` into ``out_dir``; write the manifest.

    ``out_dir`` and ``manifest`` may be object-store URIs (``s3://``, ``gs://``, any pyarrow.fs/fsspec URI):
    the shards then write their images straight to the store (see the object store notes above).

    Resumable: outputs whose file still has the sha256 recorded by a previous run with the same settings
    (manifest or journal) are kept; everything else is (re)written; stale outputs and temp files are removed.
    """
    fmt = str(fmt).lower().lstrip(".")
    if fmt not in FORMATS:
        raise BadInputError(f"unknown output format {fmt!r}; use png or bmp")
    if isinstance(resize, str):
        resize = parse_resize(resize)
    if workers < 1:
        raise BadInputError(f"--workers must be at least 1, got {workers}")
    backend = check_backend(backend)
    if backend == "ray":
        import_ray()  # a missing Ray is a usage error before any work
    if not 0 <= int(seed) < 2**63:
        raise BadInputError(f"--seed must be in 0..2^63-1, got {seed}")
    if dncnn_weights is not None and not Path(dncnn_weights).is_file():
        raise BadInputError(f"{dncnn_weights}: DnCNN weights file not found (--dncnn-weights)")
    type_ids = resolve_types(types, preset)
    level_ids = resolve_levels(levels)
    out_on_store = not storage.is_local(out_dir)
    # an object-store location stays a URI string; a local one is a resolved Path as before
    out: Path | str = str(out_dir).rstrip("/") if out_on_store else storage.local_path(out_dir).resolve()
    manifest_path: Path | str
    if manifest:
        manifest_path = (
            str(manifest) if not storage.is_local(manifest) else storage.local_path(manifest).resolve()
        )
    else:
        manifest_path = storage.join(out, "manifest.csv") if out_on_store else out / "manifest.csv"
    manifest_on_store = isinstance(manifest_path, str)
    if out_on_store:
        _check_store_writable(out)
    if manifest_on_store:
        _check_store_writable(manifest_path, folder=_parent(manifest_path))

    src = Path(source).resolve()
    if not out_on_store and src.is_dir() and (src == out or out in src.parents):
        raise BadInputError(f"{out}: the output folder must not be the folder holding the references")
    refs = read_references(source, ref_root=ref_root, exclude=None if out_on_store else out)
    paths = refs.paths()
    if not out_on_store and any(p.parent == out for p in paths):
        raise BadInputError(f"{out}: the output folder must not be the folder holding the references")
    min_size = min_reference_size(type_ids)
    if resize is not None and (resize[0] < min_size or resize[1] < min_size):
        raise BadInputError(f"--resize {resize[0]}x{resize[1]} is below the minimum {min_size}x{min_size}")
    jobs = plan_jobs(refs.images, paths, type_ids, level_ids, int(seed), fmt)
    _check_implemented(type_ids)
    if not out_on_store:
        _check_writable(out)
    if not manifest_on_store:
        _check_writable(manifest_path.parent)

    denoiser_name = None
    weights = str(Path(dncnn_weights).resolve()) if dncnn_weights else None
    if DENOISE_TYPE in type_ids:
        try:
            denoiser_name = _denoiser_name(load_denoiser(weights))
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BadInputError(f"{weights}: cannot load DnCNN weights ({first})") from None
        if weights:
            denoiser_name += f" sha256:{sha256_file(weights)}"
    elif weights:
        log.info("--dncnn-weights ignored: type 15 (denoise) is not requested")
        weights = None

    bad = _precheck(refs, paths, min_size, resize)
    if bad and not skip_bad:
        raise BadInputError(next(iter(bad.values())))

    settings = _normalise(
        {
            "seed": int(seed),
            "format": fmt,
            "resize": list(resize) if resize else None,
            "reshape_version": __version__,
        }
    )
    if manifest_on_store:
        previous = _load_previous_from_store(manifest_path, settings)
    else:
        previous = _load_previous(manifest_path, settings)
    planned = [j for j in jobs if j.ref_img not in bad]
    if out_on_store:
        removed = _clean_store_dir(out, {j.dist_img for j in planned})
    else:
        removed = _clean_out_dir(out, {j.dist_img for j in planned})
    if manifest_on_store:
        storage.remove_stale_temps(_parent(manifest_path))
    else:
        remove_stale_temps(manifest_path.parent)

    done: dict[str, dict[str, Any]] = {}
    todo: list[DistortJob] = []
    for job in planned:
        if _still_valid(job, previous.get(job.dist_img), out, denoiser_name):
            done[job.dist_img] = previous[job.dist_img]
        else:
            todo.append(job)
    n_reused = len(done)
    log.info(
        "%d references x %d types x %d levels: %d to write, %d already done",
        len(refs.images) - len(bad),
        len(type_ids),
        len(level_ids),
        len(todo),
        n_reused,
    )

    options = ShardOptions(
        out_dir=str(out),
        fmt=fmt,
        resize=resize,
        dncnn_weights=weights,
        min_size=min_size,
        denoiser_label=denoiser_name,
    )
    journal: _Journal | _StoreJournal
    if manifest_on_store:
        journal = _StoreJournal(manifest_path, settings, list(done.values()))
    else:
        journal = _Journal(journal_path(manifest_path), settings, list(done.values()))
    failures: dict[str, str] = {}
    results = _execute(
        shard_by_reference(todo), options, workers, progress, len(planned), n_reused, backend, ray_address
    )
    try:
        for rows in results:
            good = [r for r in rows if "error" not in r]
            journal.append(good)
            done.update({r["dist_img"]: r for r in good})
            for r in rows:
                if "error" in r:
                    failures[r["ref_img"]] = r["error"]
                    if not skip_bad:
                        raise BadInputError(r["error"])
    finally:
        results.close()  # cancels shards not yet started when a bad reference stops the run
        journal.close()

    bad.update(failures)
    order = {j.dist_img: i for i, j in enumerate(jobs)}
    rows = sorted((r for r in done.values() if r["ref_img"] not in bad), key=lambda r: order[r["dist_img"]])
    skipped = [{"ref_img": k, "error": v} for k, v in bad.items()]
    if not rows:
        raise BadInputError(
            f"{refs.source}: no usable reference ({skipped[0]['error']})"
            if skipped
            else f"{refs.source}: nothing to distort"
        )
    frame = pd.DataFrame(rows, columns=_manifest_columns())
    frame["denoiser"] = frame["denoiser"].where(frame["denoiser"].notna(), None)
    metadata = {
        "settings": settings,
        "seed": int(seed),
        "ref_root": str(refs.root),
        "source": str(Path(source).resolve()),
        "out_dir": str(out),
        "format": fmt,
        "resize": list(resize) if resize else None,
        "types": type_ids,
        "levels": level_ids,
        "preset": preset,
        "denoiser": denoiser_name,
        "skipped": skipped,
        "n_images": len(rows),
    }
    if fingerprint is not None:
        metadata["fingerprint"] = fingerprint
    if manifest_on_store:
        _write_manifest_to_store(manifest_path, frame, metadata)
        storage.remove_tree(_store_journal_dir(manifest_path))
    else:
        write_csv(manifest_path, frame, "distortion_manifest", metadata)
        with contextlib.suppress(FileNotFoundError):
            journal_path(manifest_path).unlink()
    return DistortSummary(
        manifest=manifest_path,
        out_dir=out,
        n_references=len(refs.images),
        n_images=len(rows),
        n_written=len(rows) - n_reused,
        n_reused=n_reused,
        n_removed=removed,
        skipped=skipped,
        denoiser=denoiser_name,
    )


def _manifest_columns() -> list[str]:
    from reshape.artifacts import load_schema

    return load_schema("distortion_manifest").column_names


def _execute(
    shards: list[list[DistortJob]],
    options: ShardOptions,
    workers: int,
    progress: bool,
    total: int,
    initial: int,
    backend: str = "local",
    ray_address: str | None = None,
) -> Iterable[list[dict[str, Any]]]:
    """Run shards in this process (workers=1), a process pool or as Ray tasks (``backend="ray"``);
    yield each shard's rows as it finishes."""
    from tqdm import tqdm

    bar = tqdm(
        total=total, initial=initial, unit="img", desc="distort", disable=not progress, dynamic_ncols=True
    )
    try:
        # every backend runs the same top-level shard function; each shard writes its images atomically and
        # returns its rows (a Ray worker that dies has its shard retried); at most a bounded window of shards
        # is in flight, so memory stays flat for 100k-reference inputs
        for result in map_shards(
            functools.partial(distort_shard, options=options),
            shards,
            backend=backend,
            workers=workers,
            ray_address=ray_address,
            progress=lambda shard: bar.update(len(shard)),
        ):
            yield result.value
    finally:
        bar.close()


def summary_lines(summary: DistortSummary) -> list[str]:
    """Human summary for the CLI (the skipped references are listed one per line)."""
    lines = [
        f"distort: {summary.n_images} images for {summary.n_references - len(summary.skipped)} references "
        f"({summary.n_written} written, {summary.n_reused} already up to date) -> {summary.manifest}"
    ]
    if summary.denoiser:
        lines.append(f"distort: type 15 denoiser: {summary.denoiser}")
    if summary.skipped:
        lines.append(f"distort: skipped {len(summary.skipped)} bad reference(s):")
        lines += [f"  {s['ref_img']}: {s['error']}" for s in summary.skipped]
    return lines


__all__ = [
    "DEFAULT_LEVELS",
    "PRESETS",
    "DistortJob",
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
    "run_distort",
    "shard_by_reference",
    "summary_lines",
]
