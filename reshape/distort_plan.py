"""Planning for `reshape distort`: which (reference, type, level) images to make, under which name and seed.

Pure functions of the options and the reference list: :func:`resolve_types`, :func:`resolve_levels`,
:func:`plan_jobs` (KADID names ``<refstem>_<tt>_<ll>.<ext>``, one seed per output from :func:`derive_seed`),
:func:`shard_by_reference`, and :func:`read_references` (a folder, a single image, a selection/features
Parquet or a CSV list). Nothing here writes a file.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

import distortions
from reshape.artifacts import PARTIAL_KEY, SCHEMA_KEY, read_artifact_metadata, read_parquet
from reshape.errors import BadInputError, StageError
from reshape.fileio import (
    check_file_name,
    resolve_many_under_root,
    resolve_under_root,
    resolves_inside,
)
from reshape.imageio import IMAGE_SUFFIXES, image_size
from reshape.presets import PRESETS

DEFAULT_LEVELS: tuple[int, ...] = (1, 3, 5)
FORMATS = ("png", "bmp")
REFERENCE_SUFFIXES = IMAGE_SUFFIXES  # the same images features embeds (one list, reshape.imageio)
#: Smallest reference side per type: the non-eccentricity patch (20) samples 16x16 patches at least
#: 16 px inside the border (W-48 >= 0), colour block (23) paints 32x32 squares; the rest only need a few
#: pixels, 16 keeps every kernel's neighbourhood meaningful.
MIN_SIZE_BY_TYPE: dict[int, int] = {20: 48, 23: 32}
DEFAULT_MIN_SIZE = 16
#: Names this stage writes: <refstem>_<tt>_<ll>.<ext>.
OUTPUT_NAME_RE = re.compile(r"^.+_\d{2}_\d{2}\.(png|bmp)$")
DENOISE_TYPE = 15
SKIP_BAD_HINT = " (use --skip-bad to skip unreadable or too small images)"


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
    return f"{_stem(ref_img)}_{dist_type:02d}_{dist_level:02d}.{fmt}"


def _stem(ref_img: str) -> str:
    """``PurePosixPath(ref_img).stem`` (backslashes read as separators) by string operations alone."""
    name = ref_img.replace("\\", "/").rstrip("/").rpartition("/")[2]
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


class DistortJob(NamedTuple):  # a tuple: 700,000 of them are made at every KADIS-700k planning
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
    return _jobs(zip(ref_images, ref_paths, itertools.repeat(types)), levels, global_seed, fmt)


def _jobs(
    rows: Iterable[tuple[str, str | os.PathLike[str], Sequence[int]]],
    levels: Sequence[int],
    global_seed: int,
    fmt: str,
) -> list[DistortJob]:
    """Jobs of (reference, path, its types) rows, every level each; the seeds derived in one batch."""
    cells: list[tuple[str, str, int, int, str]] = []
    owner: dict[str, str] = {}
    levels = [int(lv) for lv in levels]
    endings: dict[int, list[tuple[int, str]]] = {}  # per type: (level, "_<tt>_<ll>.<ext>"), made once
    for ref_img, ref_path, types in rows:
        stem = _stem(ref_img)
        if stem in owner:
            raise BadInputError(
                f"references {owner[stem]!r} and {ref_img!r} have the same file stem, so their outputs "
                f"would collide (e.g. {output_name(ref_img, 1, 1, fmt)}); rename one or distort them into "
                "separate --out folders"
            )
        owner[stem] = ref_img
        path = str(ref_path)
        for t in types:
            t = int(t)
            if t not in endings:
                endings[t] = [(lv, f"_{t:02d}_{lv:02d}.{fmt}") for lv in levels]
            cells += [(ref_img, path, t, lv, stem + ending) for lv, ending in endings[t]]
    seeds = derive_seeds(global_seed, [(ref, t, lv) for ref, _, t, lv, _ in cells])
    return [DistortJob(*cell, seed) for cell, seed in zip(cells, seeds, strict=True)]


# SeedSequence's hash (numpy's bit_generator, from PCG's seed_seq), its constants
_SS_INIT_A, _SS_MULT_A = np.uint32(0x43B0D7E5), np.uint32(0x931E8875)
_SS_INIT_B, _SS_MULT_B = np.uint32(0x8B51F9DD), np.uint32(0x58F38DED)
_SS_MIX_L, _SS_MIX_R = np.uint32(0xCA01F9DD), np.uint32(0x4973F715)
_SS_SHIFT = np.uint32(16)
_SS_POOL = 4


def derive_seeds(global_seed: int, keys: Sequence[tuple[str, int, int]]) -> list[int]:
    """:func:`derive_seed` of many (reference, type, level) keys at once, the same numbers (tested).

    numpy's SeedSequence takes ~20 us per call, 15 s for the 700,000 images of KADIS-700k at every
    planning (resume included); its hash is run here on all keys as uint32 columns instead."""
    if not keys:
        return []
    head = _int_words(int(global_seed))
    entropy = np.empty((len(keys), len(head) + 8), dtype=np.uint32)
    entropy[:, : len(head)] = head
    digests = b"".join(
        hashlib.sha256(f"{ref}\x00{t:02d}\x00{lv:02d}".encode()).digest() for ref, t, lv in keys
    )
    entropy[:, len(head) :] = np.frombuffer(digests, dtype="<u4").reshape(len(keys), 8)
    state = _seed_sequence_state(entropy)
    return (state >> np.uint64(1)).astype(np.int64).tolist()


def _int_words(value: int) -> list[int]:
    """An int as SeedSequence reads it: little-endian 32-bit words, at least one."""
    words = []
    while True:
        words.append(value & 0xFFFFFFFF)
        value >>= 32
        if not value:
            return words


def _seed_sequence_state(entropy: np.ndarray) -> np.ndarray:
    """``SeedSequence(row).generate_state(1, uint64)`` for every row of an (N, L) uint32 array."""
    n, length = entropy.shape
    hash_const = _SS_INIT_A

    def hashmix(value: np.ndarray) -> np.ndarray:
        nonlocal hash_const
        value = value ^ hash_const
        hash_const = hash_const * _SS_MULT_A
        value = value * hash_const
        return value ^ (value >> _SS_SHIFT)

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        result = _SS_MIX_L * x - _SS_MIX_R * y
        return result ^ (result >> _SS_SHIFT)

    with np.errstate(over="ignore"):  # uint32 arithmetic wraps, as in the C code
        zero = np.zeros(n, np.uint32)
        pool = [hashmix(entropy[:, i] if i < length else zero) for i in range(_SS_POOL)]
        for src in range(_SS_POOL):
            for dst in range(_SS_POOL):
                if src != dst:
                    pool[dst] = mix(pool[dst], hashmix(pool[src]))
        for src in range(_SS_POOL, length):
            for dst in range(_SS_POOL):
                pool[dst] = mix(pool[dst], hashmix(entropy[:, src]))
        hash_const = _SS_INIT_B
        words = []
        for i in range(2):
            value = pool[i] ^ hash_const
            hash_const = hash_const * _SS_MULT_B
            value = value * hash_const
            words.append(value ^ (value >> _SS_SHIFT))
    return words[0].astype(np.uint64) | (words[1].astype(np.uint64) << np.uint64(32))


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


# ----------------------------------------------------------------------------------------------- inputs
@dataclass
class References:
    """Reference images to distort: ``images`` relative to ``root`` exactly as the input names them."""

    root: Path
    images: list[str]
    source: Path
    #: sha256 per image as a selection or features artifact recorded it (None for folders and lists)
    sha256: dict[str, str] | None = None

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
    """References from a folder (recursive), a single image file, a selection/features Parquet, or a CSV list.

    CSV: column ``image`` if present, else the first column; a first line that is itself an image path is
    taken as data (a header-less list). Paths are relative to the CSV's folder unless ``ref_root`` is given.
    Parquet: column ``image`` relative to metadata ``image_root`` (or ``ref_root``). A single image is
    relative to its folder (or ``ref_root``). ``exclude``: a folder to leave out of a folder scan.
    """
    src = Path(source)
    if not src.exists():
        raise BadInputError(f"{src}: no such file or folder")
    if src.is_dir():
        return _folder_references(src, ref_root, exclude)
    suffix = src.suffix.lower()
    if suffix in REFERENCE_SUFFIXES:
        root = Path(ref_root).resolve() if ref_root else src.resolve().parent
        return References(root=root, images=[_relative_to_root(src, root)], source=src)
    if suffix == ".parquet":
        return _parquet_references(src, ref_root)
    if suffix in (".csv", ".txt", ".tsv"):
        return _csv_references(src, ref_root)
    raise BadInputError(
        f"{src}: unsupported reference input (give a folder, an image, a .parquet from select/features, "
        "or a .csv list)"
    )


def _relative_to_root(path: Path, root: Path) -> str:
    full = path.resolve()
    if not resolves_inside(root, full):
        raise BadInputError(f"{path}: reference is not inside --ref-root {root}")
    return full.relative_to(root).as_posix()


def _folder_references(
    src: Path, ref_root: str | os.PathLike[str] | None, exclude: str | os.PathLike[str] | None
) -> References:
    folder = src.resolve()
    root = Path(ref_root).resolve() if ref_root else folder
    if not resolves_inside(root, folder):
        raise BadInputError(f"{src}: reference folder is not inside --ref-root {root}")
    skip = Path(exclude).resolve() if exclude else None
    images = []
    for p in sorted(folder.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        if p.is_file() and p.suffix.lower() in REFERENCE_SUFFIXES and not p.name.startswith("."):
            images.append(check_file_name(p.relative_to(root).as_posix(), p))
    if not images:
        raise BadInputError(
            f"{src}: folder contains no reference images ({', '.join(sorted(REFERENCE_SUFFIXES))})"
        )
    return References(root=root, images=images, source=src)


def _parquet_references(src: Path, ref_root: str | os.PathLike[str] | None) -> References:
    kind = _parquet_kind(src)
    if kind == "selection":
        table, meta = read_parquet(src, "selection")
    elif kind == "features":
        meta = read_artifact_metadata(src)
        if meta.get(PARTIAL_KEY):
            raise BadInputError(
                f"{src}: is a partial features artifact (an interrupted run's checkpoint); rerun it"
            )
        try:
            table = pq.read_table(src, columns=["image", "sha256"])
        except (pa.ArrowInvalid, KeyError) as exc:
            raise BadInputError(
                f"{src}: not a readable features artifact ({str(exc).splitlines()[0]})"
            ) from None
    else:
        raise BadInputError(f"{src}: not a selection or features artifact (schema {kind or 'missing'})")
    root = Path(ref_root).resolve() if ref_root else _root_from_metadata(src, meta)
    images = [str(v) for v in table.column("image").to_pylist()]
    if not images:
        raise BadInputError(f"{src}: contains no images")
    digests = None
    if "sha256" in table.column_names:
        digests = dict(zip(images, map(str, table.column("sha256").to_pylist()), strict=True))
    return References(root=root, images=images, source=src, sha256=digests)


def _csv_references(src: Path, ref_root: str | os.PathLike[str] | None) -> References:
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


def precheck_references(
    refs: References, paths: Sequence[str | os.PathLike[str]], min_size: int, resize: tuple[int, int] | None
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
        except Image.DecompressionBombError as exc:  # raised by Pillow's header read, before any decoding
            bad[rel] = f"{path}: refusing to decode ({exc})"
    return bad


def check_implemented(types: Sequence[int]) -> None:
    for t in types:
        try:
            distortions.get_kernel(t)
        except NotImplementedError:
            raise StageError(
                f"distortion type {t} ({distortions.TABLE[t].name}) is not implemented by the installed "
                "distortions library"
            ) from None


# ----------------------------------------------------------------------------------------------- plans
#: Levels of a plan (``--plan``, ``--random-types``) when ``--levels`` is not given: KADIS-700k writes all five.
PLAN_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5)
#: Header of the plan CSV that ``--random-types`` writes (the KADIS-700k CSV's two columns).
PLAN_HEADER = ("ref_im", "dist_type")


@dataclass
class TypePlan:
    """A per-reference plan: ``types[i]`` are the KADID ids of ``refs.images[i]`` (ascending, unique)."""

    refs: References
    types: list[list[int]]
    #: resolved reference paths (absolute, as strings) when the plan resolved them already (read_plan)
    paths: list[str] | None = None

    def all_types(self) -> list[int]:
        return sorted({t for ts in self.types for t in ts})


@functools.lru_cache(maxsize=1024)  # a plan repeats a few spellings 140,000 times
def _plan_type(text: str) -> int | None:
    """A KADID id from an id ('15', '15.0') or a name; None when it is neither."""
    value = text.strip()
    if re.fullmatch(r"\d+(\.0*)?", value):
        value = value.split(".")[0]
    try:
        return distortions.resolve_type(int(value) if value.isdigit() else value)
    except (ValueError, KeyError):
        return None


def _plan_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of every non-blank line; one line naming the file when it cannot be read."""
    import csv

    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return [(n, row) for n, row in enumerate(csv.reader(fh), start=1) if "".join(row).strip()]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"{path}: not a readable plan CSV ({exc})") from None


def read_plan(
    plan: str | os.PathLike[str], ref_root: str | os.PathLike[str], *, allowed: Iterable[int] | None = None
) -> TypePlan:
    """A KADIS-700k-style plan: one row per (reference, type), first column the reference's file name
    (relative to ``ref_root``), second the KADID type id or name. A header line is tolerated, blank lines
    are skipped. Refused in one line (file and line): an unknown type, a duplicate (reference, type), a
    reference outside ``ref_root`` or missing, an empty plan. Only ``stat`` touches the references."""
    path = Path(plan)
    if not path.is_file():
        raise BadInputError(f"{path}: no such plan file (--plan)")
    rows = _plan_rows(path)
    if rows and _plan_type(rows[0][1][1] if len(rows[0][1]) > 1 else "") is None:
        rows = rows[1:]  # a header ("ref_im,dist_type", "image,type", ...)
    if not rows:
        raise BadInputError(f"{path}: the plan lists no (reference, type) rows (--plan)")
    root = Path(ref_root).resolve()
    types: dict[str, list[int]] = {}
    first_line: dict[str, int] = {}
    checked: dict[str, str] = {}  # each reference's path in check_relative's form
    seen: dict[tuple[str, int], int] = {}
    for line, cells in rows:
        where = f"{path}, line {line}"
        if len(cells) < 2 or not cells[0].strip():
            raise BadInputError(f"{where}: expected 'reference,type' (two columns)")
        rel, dist_type = cells[0].strip(), _plan_type(cells[1])
        if dist_type is None or (allowed is not None and dist_type not in allowed):
            raise BadInputError(
                f"{where}: unknown distortion type {cells[1].strip()!r}; types are 1..25 or names"
            )
        if (rel, dist_type) in seen:
            raise BadInputError(
                f"{where}: duplicate row ({rel}, type {dist_type}), already on line {seen[rel, dist_type]}"
            )
        seen[rel, dist_type] = line
        if rel not in types:
            checked[rel] = check_file_name(rel, where)
            first_line[rel] = line
            types[rel] = []
        types[rel].append(dist_type)
    images = list(types)
    lines = [first_line[rel] for rel in images]
    resolved = resolve_many_under_root(root, [checked[rel] for rel in images], source=path, rows=lines)
    for line, (full, is_file) in zip(lines, resolved, strict=True):
        if not is_file:
            raise BadInputError(f"{path}, line {line}: reference {full} not found (under --ref-root {root})")
    refs = References(root=root, images=images, source=path)
    return TypePlan(refs, [sorted(types[rel]) for rel in images], [full for full, _ in resolved])


def draw_types(images: Sequence[str], n_types: int, pool: Sequence[int], seed: int) -> list[list[int]]:
    """``n_types`` distinct types per reference, drawn uniformly from ``pool`` without replacement.

    Each reference's draw is seeded by (seed, sha256 of its name) alone, so it does not depend on the
    reference order, the worker count or which other references are listed."""
    pool = sorted(set(pool))
    if not 1 <= n_types <= len(pool):
        raise BadInputError(
            f"--random-types must be in 1..{len(pool)} (the types to draw from), got {n_types}"
        )
    drawn = []
    for rel in images:
        digest = hashlib.sha256(f"random-types\x00{rel}".encode()).digest()
        rng = np.random.default_rng([int(seed), *(int(w) for w in np.frombuffer(digest, dtype="<u4"))])
        drawn.append(sorted(int(pool[i]) for i in rng.choice(len(pool), size=n_types, replace=False)))
    return drawn


def plan_csv_bytes(plan: TypePlan) -> bytes:
    """The plan as KADIS-700k's CSV (``ref_im,dist_type``, one row per pair), readable by :func:`read_plan`."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PLAN_HEADER)
    for rel, types in zip(plan.refs.images, plan.types, strict=True):
        writer.writerows((rel, t) for t in types)
    return buf.getvalue().encode()


def plan_jobs_per_reference(
    plan: TypePlan, paths: Sequence[str | os.PathLike[str]], levels: Sequence[int], global_seed: int, fmt: str
) -> list[DistortJob]:
    """The jobs of a plan in plan order (reference, then its types, then level); names and seeds exactly as
    :func:`plan_jobs` gives them, so a plan row makes the same bytes as the same grid cell."""
    return _jobs(zip(plan.refs.images, paths, plan.types, strict=True), levels, global_seed, fmt)


__all__ = [
    "DEFAULT_LEVELS",
    "DENOISE_TYPE",
    "FORMATS",
    "OUTPUT_NAME_RE",
    "PLAN_LEVELS",
    "PRESETS",
    "DistortJob",
    "References",
    "TypePlan",
    "check_implemented",
    "derive_seed",
    "derive_seeds",
    "draw_types",
    "min_reference_size",
    "output_name",
    "parse_resize",
    "plan_csv_bytes",
    "plan_jobs",
    "plan_jobs_per_reference",
    "precheck_references",
    "read_plan",
    "read_references",
    "resolve_levels",
    "resolve_types",
    "shard_by_reference",
    "split_list",
]
