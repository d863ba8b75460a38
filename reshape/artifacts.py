"""The one module that reads and writes reshape artifacts.

Schemas live in ``data_manifests/*.schema.json`` (installed as ``reshape.data_manifests``). Writers
validate before writing and write atomically; readers validate on load and raise
:class:`~reshape.errors.BadInputError` with one line naming the file (and line) on any mismatch.

Provenance metadata (encoder, options, fingerprints, ...) is stored in the Parquet key-value metadata, and
for CSV artifacts in a sidecar ``<file>.meta.json`` so the CSV itself stays exactly what trainers expect.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from reshape import __version__
from reshape.errors import BadInputError
from reshape.fileio import atomic_open, atomic_path, atomic_write_text
from reshape.fsbase import META_SUFFIX, SCHEMA_KEY


# ----------------------------------------------------------------------------------------------- schemas
@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = False
    description: str = ""


@dataclass(frozen=True)
class Schema:
    name: str
    version: int
    format: str
    description: str
    columns: tuple[Column, ...]
    required_metadata: tuple[str, ...] = ()
    optional_metadata: tuple[str, ...] = ()

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def tag(self) -> str:
        return f"{self.name}/{self.version}"


@cache
def load_schema(name: str) -> Schema:
    """Load ``data_manifests/<name>.schema.json``."""
    try:
        text = resources.files("reshape.data_manifests").joinpath(f"{name}.schema.json").read_text("utf-8")
    except FileNotFoundError:
        raise KeyError(f"unknown artifact schema {name!r}; known: {', '.join(schema_names())}") from None
    raw = json.loads(text)
    return Schema(
        name=raw["name"],
        version=int(raw["version"]),
        format=raw["format"],
        description=raw.get("description", ""),
        columns=tuple(Column(**c) for c in raw["columns"]),
        required_metadata=tuple(raw.get("metadata", {}).get("required", [])),
        optional_metadata=tuple(raw.get("metadata", {}).get("optional", [])),
    )


def schema_names() -> list[str]:
    root = resources.files("reshape.data_manifests")
    return sorted(p.name[: -len(".schema.json")] for p in root.iterdir() if p.name.endswith(".schema.json"))


def now_iso() -> str:
    """UTC now, or SOURCE_DATE_EPOCH when set (the reproducible-builds convention), so that two runs on
    the same inputs can write byte-identical artifacts, metadata included."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc).isoformat()
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def base_metadata() -> dict[str, Any]:
    """Metadata every artifact carries."""
    return {"reshape_version": __version__, "created": now_iso()}


# ----------------------------------------------------------------------------------------------- parquet
_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "list<string>": pa.list_(pa.string()),
    "list<float32>": pa.list_(pa.float32()),
}


def _type_matches(declared: str, actual: pa.DataType) -> bool:
    if declared == "fixed_size_list<float32>":
        return pa.types.is_fixed_size_list(actual) and actual.value_type == pa.float32()
    if declared == "string":
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    expected = _ARROW_TYPES.get(declared)
    return expected is not None and actual.equals(expected)


def _encode_meta(schema: Schema, metadata: dict[str, Any]) -> dict[bytes, bytes]:
    out = {SCHEMA_KEY.encode(): schema.tag.encode()}
    for k, v in metadata.items():
        out[k.encode()] = json.dumps(v, sort_keys=True, default=_json_default).encode()
    return out


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _decode_meta(raw: dict[bytes, bytes] | None) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for k, v in (raw or {}).items():
        key = k.decode("utf-8", "replace")
        if key == SCHEMA_KEY or key.startswith("ARROW:") or key == "pandas":
            continue
        try:
            meta[key] = json.loads(v)
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta[key] = v.decode("utf-8", "replace")
    return meta


def _check_metadata(schema: Schema, metadata: dict[str, Any], path: object) -> None:
    missing = [k for k in schema.required_metadata if k not in metadata]
    if missing:
        raise BadInputError(f"{path}: {schema.name} artifact lacks metadata {', '.join(missing)}")


def validate_table(table: pa.Table, schema: Schema, path: object) -> None:
    names = set(table.column_names)
    for col in schema.columns:
        if col.name not in names:
            raise BadInputError(f"{path}: {schema.name} artifact has no column {col.name!r}")
        actual = table.schema.field(col.name).type
        if not _type_matches(col.type, actual):
            raise BadInputError(f"{path}: column {col.name!r} has type {actual}, expected {col.type}")
        if not col.nullable and table.column(col.name).null_count:
            idx = np.flatnonzero(table.column(col.name).is_null().to_numpy(zero_copy_only=False))[0]
            raise BadInputError(f"{path}, row {idx}: column {col.name!r} is null")


def write_parquet(
    path: str | os.PathLike[str], table: pa.Table, schema_name: str, metadata: dict[str, Any]
) -> None:
    """Validate ``table`` against the schema and write it atomically with ``metadata``."""
    schema = load_schema(schema_name)
    meta = {**base_metadata(), **metadata}
    _check_metadata(schema, meta, path)
    validate_table(table, schema, path)
    table = table.replace_schema_metadata(_encode_meta(schema, meta))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


#: Metadata key of an artifact an interrupted run left as a checkpoint: refused by every reader.
PARTIAL_KEY = "partial"


def read_parquet(
    path: str | os.PathLike[str], schema_name: str, *, allow_partial: bool = False
) -> tuple[pa.Table, dict[str, Any]]:
    """Read and validate a Parquet artifact; returns (table, metadata). A checkpoint an interrupted run
    left (metadata ``partial``) is refused unless ``allow_partial`` (the stage resuming it)."""
    schema = load_schema(schema_name)
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError) as exc:
        raise BadInputError(f"{p}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    raw = table.schema.metadata or {}
    tag = raw.get(SCHEMA_KEY.encode(), b"").decode()
    if not tag:
        raise BadInputError(f"{p}: not a reshape {schema.name} artifact (no {SCHEMA_KEY} metadata)")
    name, _, version = tag.partition("/")
    if name != schema.name:
        raise BadInputError(f"{p}: is a {name} artifact, expected {schema.name}")
    if not version.isdigit() or int(version) > schema.version:
        raise BadInputError(
            f"{p}: {name} schema version {version} is newer than supported ({schema.version})"
        )
    meta = _decode_meta(raw)
    if meta.get(PARTIAL_KEY) and not allow_partial:
        raise BadInputError(
            f"{p}: is a partial {name} artifact (the checkpoint of an interrupted run); rerun the command "
            "that writes it to finish it"
        )
    _check_metadata(schema, meta, p)
    validate_table(table, schema, p)
    return table, meta


def read_artifact_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Metadata of any artifact: Parquet key-value metadata, or a CSV's sidecar JSON ({} if none)."""
    p = Path(path)
    if p.suffix == ".parquet":
        try:
            return _decode_meta(pq.read_schema(p).metadata)
        except (pa.ArrowException, OSError) as exc:
            raise BadInputError(f"{p}: not a readable Parquet file ({exc})") from None
    side = sidecar_path(p)
    if side.is_file():
        try:
            return json.loads(side.read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{side}: invalid JSON ({exc})") from None
    return {}


# ----------------------------------------------------------------------------------------------- features
@dataclass
class Features:
    """A features artifact in memory: per-image rows, the (N, D) float32 embedding matrix, metadata."""

    frame: pd.DataFrame  # image, sha256, width, height
    embeddings: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def images(self) -> list[str]:
        return self.frame["image"].tolist()

    @property
    def image_root(self) -> str | None:
        return self.metadata.get("image_root")


def features_table(frame: pd.DataFrame, embeddings: np.ndarray) -> pa.Table:
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(frame):
        raise ValueError(f"embeddings shape {emb.shape} does not match {len(frame)} rows")
    flat = pa.array(emb.reshape(-1), type=pa.float32())
    return pa.table(
        {
            "image": pa.array(frame["image"].astype(str).tolist(), type=pa.string()),
            "sha256": pa.array(frame["sha256"].astype(str).tolist(), type=pa.string()),
            "width": pa.array(frame["width"].to_numpy(dtype=np.int32), type=pa.int32()),
            "height": pa.array(frame["height"].to_numpy(dtype=np.int32), type=pa.int32()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, emb.shape[1]),
        }
    )


def write_features(path: str | os.PathLike[str], features: Features) -> None:
    meta = dict(features.metadata)
    meta["dim"] = int(features.embeddings.shape[1])
    write_parquet(path, features_table(features.frame, features.embeddings), "features", meta)


def read_features(path: str | os.PathLike[str], *, allow_partial: bool = False) -> Features:
    """Read a features artifact; checks dim, finite values and unique image ids (a partial one only with
    ``allow_partial``)."""
    table, meta = read_parquet(path, "features", allow_partial=allow_partial)
    emb_col = table.column("embedding").combine_chunks()
    dim = emb_col.type.list_size
    if int(meta["dim"]) != dim:
        raise BadInputError(f"{path}: metadata dim {meta['dim']} != embedding length {dim}")
    emb = (
        emb_col.flatten()
        .to_numpy(zero_copy_only=False)
        .reshape(len(table), dim)
        .astype(np.float32, copy=False)
    )
    frame = table.select(["image", "sha256", "width", "height"]).to_pandas()
    bad = ~np.isfinite(emb).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BadInputError(f"{path}, row {i}: embedding of {frame['image'].iloc[i]!r} has NaN or inf values")
    dup = frame["image"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise BadInputError(f"{path}, row {i}: duplicate image id {frame['image'].iloc[i]!r}")
    return Features(frame=frame, embeddings=emb, metadata=meta)


# ----------------------------------------------------------------------------------------------- CSV
def sidecar_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_name(p.name + META_SUFFIX)


_PANDAS_CHECK = {
    "int64": lambda s: pd.to_numeric(s, errors="coerce"),
    "float64": lambda s: pd.to_numeric(s, errors="coerce"),
    "bool": lambda s: s.map(
        lambda v: {"true": True, "false": False, "1": True, "0": False}.get(str(v).strip().lower())
    ),
}


def _coerce_frame(df: pd.DataFrame, schema: Schema, path: object) -> pd.DataFrame:
    missing = [c.name for c in schema.columns if c.name not in df.columns]
    if missing:
        raise BadInputError(
            f"{path}: not a {schema.name} table: missing column(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, df.columns))})"
        )
    out = df.copy()
    for col in schema.columns:
        s = out[col.name]
        empty = s.isna() | (s.astype(str).str.strip() == "")
        if col.type in _PANDAS_CHECK:
            conv = _PANDAS_CHECK[col.type](s)
            bad = conv.isna() & ~empty
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                if str(s.iloc[i]).strip().lower().lstrip("+-") == "nan":
                    raise BadInputError(
                        f"{path}, line {i + 2}: column {col.name!r} is not finite ({s.iloc[i]!r})"
                    )
                raise BadInputError(
                    f"{path}, line {i + 2}: column {col.name!r} value {s.iloc[i]!r} is not a valid {col.type}"
                )
            if col.type == "float64":
                nonfinite = ~np.isfinite(conv.to_numpy(dtype=float, na_value=0.0))
                if nonfinite.any():
                    i = int(np.flatnonzero(nonfinite)[0])
                    raise BadInputError(
                        f"{path}, line {i + 2}: column {col.name!r} is not finite ({s.iloc[i]!r})"
                    )
            if col.type == "int64":
                as_float = conv.to_numpy(dtype=float, na_value=0.0)
                if not np.all(as_float == np.round(as_float)):
                    i = int(np.flatnonzero(as_float != np.round(as_float))[0])
                    raise BadInputError(
                        f"{path}, line {i + 2}: column {col.name!r} value {s.iloc[i]!r} is not an integer"
                    )
                conv = conv.astype("Int64") if empty.any() else conv.astype(np.int64)
            if col.type == "bool":
                conv = conv.astype("boolean") if empty.any() else conv.astype(bool)
            out[col.name] = conv
        else:
            out[col.name] = s.where(~s.isna(), None)
        if not col.nullable and empty.any():
            i = int(np.flatnonzero(empty.to_numpy())[0])
            raise BadInputError(f"{path}, line {i + 2}: column {col.name!r} is empty")
    return out


def validate_frame(df: pd.DataFrame, schema_name: str, path: object = "<table>") -> pd.DataFrame:
    """Check ``df`` against a CSV schema; returns a copy with typed columns (extra columns kept)."""
    return _coerce_frame(df, load_schema(schema_name), path)


def write_csv(
    path: str | os.PathLike[str],
    df: pd.DataFrame,
    schema_name: str,
    metadata: dict[str, Any] | None = None,
    *,
    float_format: str | None = "%.6g",
) -> None:
    """Validate and atomically write a CSV artifact; schema columns first, extra columns after.

    With ``metadata`` a sidecar ``<file>.meta.json`` is written (after the CSV) holding it.
    """
    schema = load_schema(schema_name)
    checked = _coerce_frame(df, schema, path)
    cols = schema.column_names + [c for c in checked.columns if c not in schema.column_names]
    buf = io.StringIO()
    checked[cols].to_csv(buf, index=False, float_format=float_format, lineterminator="\n")
    with atomic_open(path, "w") as fh:
        fh.write(buf.getvalue())
    if metadata is not None:
        meta = {SCHEMA_KEY: schema.tag, **base_metadata(), **metadata}
        atomic_write_text(
            sidecar_path(path), json.dumps(meta, indent=2, sort_keys=True, default=_json_default) + "\n"
        )


def read_raw_csv(path: str | os.PathLike[str], **read_options: Any) -> pd.DataFrame:
    """Read any CSV as an all-string frame (empty cells -> NaN); one-line errors for unreadable files.

    ``read_options`` go to :func:`pandas.read_csv` (e.g. ``skipinitialspace=True``).
    """
    p = Path(path)
    if not p.is_file():
        raise BadInputError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    if p.stat().st_size == 0:
        raise BadInputError(f"{p}: empty file (0 bytes)")
    options = {"dtype": str, "keep_default_na": False, "na_values": [""], **read_options}
    try:
        return pd.read_csv(p, **options)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise BadInputError(f"{p}: not a readable CSV ({str(exc).splitlines()[0]})") from None


def read_csv(path: str | os.PathLike[str], schema_name: str) -> pd.DataFrame:
    """Read and validate a CSV artifact (string columns stay strings; numbers are typed)."""
    return _coerce_frame(read_raw_csv(path), load_schema(schema_name), Path(path))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
