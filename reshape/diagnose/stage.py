"""`reshape diagnose`: embed datasets, measure how their features cluster, write json, md and maps.

Outputs in ``--out``: ``diagnose.json`` (the figures), ``diagnose.md`` (one table), ``plots/<name>.png``
(one map per dataset) and ``diagnose.record.json``, the sha256 of every file written, so that a later run
replaces or deletes only files this command wrote and that still hold those bytes (docs/safety.md). The
record is apart from diagnose.json because a map's PNG bytes may differ on another BLAS (UMAP, PCA),
while diagnose.json must stay byte-identical for the same inputs.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reshape.diagnose import render
from reshape.diagnose.inputs import Embedder, Table, build_embedder, read_table
from reshape.diagnose.metrics import Rows, dataset_figures
from reshape.errors import BadInputError
from reshape.steps import announce

log = logging.getLogger("reshape.diagnose")

JSON_NAME, MD_NAME, RECORD_NAME, PLOTS = "diagnose.json", "diagnose.md", "diagnose.record.json", "plots"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass
class DiagnoseConfig:
    datasets: Sequence[str]
    out: str
    encoder: str = "resnet50"
    weights: str = "default"
    checkpoint: str | None = None
    image_root: str | None = None
    source_root: str | None = None
    by: Sequence[str] | None = None
    k: int = 10
    sample: int = 20000
    seed: int = 0
    device: str = "auto"
    batch_size: int = 32
    workers: int = 0
    patch_size: int = 224
    overwrite: bool = False
    wait: bool = False


@dataclass
class DiagnoseResult:
    out: Path
    doc: dict[str, Any]
    embed_seconds: float = 0.0
    metric_seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def summary_lines(self) -> list[str]:
        return [
            f"diagnosed {len(self.doc['datasets'])} dataset(s): {', '.join(self.doc['datasets'])}",
            f"  embedding {self.embed_seconds:.1f} s, metrics {self.metric_seconds:.1f} s",
            f"  table : {self.out / MD_NAME}",
            f"  json  : {self.out / JSON_NAME}",
            f"  maps  : {self.out / PLOTS}/",
        ]


# ----------------------------------------------------------------------------------------------- compute
def plot_name(name: str) -> str:
    return f"{PLOTS}/{_UNSAFE.sub('_', name)}.png"


def read_tables(config: DiagnoseConfig) -> list[Table]:
    """Every DATASET argument read and checked before any embedding; names must differ."""
    root = None if config.image_root is None else Path(config.image_root)
    source = None if config.source_root is None else Path(config.source_root)
    tables = [
        read_table(s, image_root=root, source_root=source, groupings=config.by) for s in config.datasets
    ]
    seen: dict[str, str] = {}
    for t in tables:
        key = plot_name(t.name).lower()
        if key in seen:
            raise BadInputError(
                f"{t.given}: has the same name {t.name!r} as {seen[key]}; name them with NAME=PATH"
            )
        seen[key] = t.given
    return tables


def figures_of(table: Table, embeddings: np.ndarray, config: DiagnoseConfig) -> dict[str, Any]:
    """One dataset's entry of diagnose.json (without the map)."""
    from reshape.fileio import sha256_file

    rows = Rows(embeddings, table.labels, table.references, table.types)
    return {
        "input": table.given,
        "table": str(table.table),
        "table_sha256": sha256_file(table.table),
        "kind": "authentic (no reference, no type)" if table.authentic else "synthetic",
        "columns": dict(sorted(table.columns.items())),
        "rows": len(table.labels),
        **({"rows_left_out": table.left_out} if table.left_out else {}),
        "figures": dataset_figures(rows, table.origins, k=config.k, sample=config.sample, seed=config.seed),
        "plot": plot_name(table.name),
    }


def diagnose(
    tables: list[Table], embedder: Embedder, config: DiagnoseConfig
) -> tuple[dict[str, Any], dict[str, bytes], float, float]:
    """(diagnose.json's document, {plot name: PNG bytes}, embedding seconds, metric seconds)."""
    from reshape.diagnose.plots import render_map

    datasets: dict[str, Any] = {}
    pngs: dict[str, bytes] = {}
    embed_s = metric_s = 0.0
    method = "PCA"
    for t in tables:
        announce("diagnose: embedding %d image(s) of %s", len(t.paths), t.name)
        start = time.perf_counter()
        emb = np.asarray(embedder.embed(t.paths), dtype=np.float64)
        embed_s += time.perf_counter() - start
        start = time.perf_counter()
        datasets[t.name] = figures_of(t, emb, config)
        metric_s += time.perf_counter() - start
        png, method = render_map(emb, t.labels, t.references, t.types, title=t.name, seed=config.seed)
        pngs[datasets[t.name]["plot"]] = png
    doc = {
        "schema": render.SCHEMA,
        "embedding": dict(sorted(embedder.provenance.items())),
        "k": config.k,
        "seed": config.seed,
        "sample_limit": config.sample,
        "map": method,
        "labels": render.LABEL_NOTE,
        "datasets": datasets,
    }
    return doc, pngs, embed_s, metric_s


# ----------------------------------------------------------------------------------------------- outputs
def _record(out: Path) -> dict[str, str]:
    """{file: sha256} of an earlier run's record (nothing when there is none or it is not ours)."""
    try:
        raw = json.loads((out / RECORD_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if (
        not isinstance(raw, dict)
        or raw.get("schema") != render.SCHEMA
        or not isinstance(raw.get("files"), dict)
    ):
        return {}
    return {str(k): str(v) for k, v in raw["files"].items()}


def _owned(out: Path, rel: str, record: dict[str, str]) -> bool:
    from reshape.fileio import sha256_file

    if rel == RECORD_NAME:
        return bool(record)
    return rel in record and sha256_file(out / rel) == record[rel]


def check_output(config: DiagnoseConfig, tables: list[Table], names: list[str]) -> dict[str, str]:
    """Refuse, before any work, an output that mixes with an input, or existing files there that this
    command did not write (without --overwrite); returns the earlier run's record."""
    from reshape.outputs import check_entries, check_folder_output, check_inputs_not_outputs, refuse_foreign

    out = Path(config.out)
    check_folder_output(out)
    inputs = [t.table.parent if t.table.name == "train.csv" else t.table for t in tables]
    inputs += [p for p in (config.checkpoint, config.image_root, config.source_root) if p is not None]
    check_inputs_not_outputs(inputs, folder_outputs=[out])
    check_entries(out, [*names, RECORD_NAME])
    record = _record(out)
    conflicts = [n for n in [*names, RECORD_NAME] if (out / n).is_file() and not _owned(out, n, record)]
    refuse_foreign(conflicts, out, overwrite=config.overwrite)
    return record


def write_outputs(out: Path, files: dict[str, bytes], old_record: dict[str, str]) -> None:
    """Every file atomically, the record last; files of the earlier run no longer produced are removed
    when they still hold the recorded bytes."""
    from reshape.fileio import atomic_write_bytes, remove_recorded, remove_stale_temps, sha256_bytes

    remove_stale_temps(out, names=[*files, RECORD_NAME])
    for rel, data in files.items():
        atomic_write_bytes(out / rel, data)
    for rel in sorted(set(old_record) - set(files) - {RECORD_NAME}):
        remove_recorded(out, rel, old_record[rel])
    record = {
        "schema": render.SCHEMA,
        "files": {rel: sha256_bytes(data) for rel, data in sorted(files.items())},
    }
    atomic_write_bytes(out / RECORD_NAME, render.to_json(record))


def run(config: DiagnoseConfig) -> DiagnoseResult:
    """Read every dataset, embed, measure and write ``config.out``; nothing is written on a fault."""
    from reshape.outputs import created_folders, locked_outputs

    if config.k < 1:
        raise BadInputError(f"--k {config.k}: must be at least 1")
    if not config.datasets:
        raise BadInputError("no DATASET given (a published folder, or a CSV table with --image-root)")
    out = Path(config.out)
    tables = read_tables(config)
    names = [JSON_NAME, MD_NAME, *(plot_name(t.name) for t in tables)]
    check_output(config, tables, names)
    embedder = build_embedder(
        config.encoder, weights=config.weights, checkpoint=config.checkpoint, device=config.device,
        batch_size=config.batch_size, workers=config.workers, patch_size=config.patch_size,
    )  # fmt: skip
    with created_folders(out), locked_outputs(out, wait=config.wait):
        record = check_output(config, tables, names)  # again under the lock: another run may have finished
        doc, pngs, embed_s, metric_s = diagnose(tables, embedder, config)
        files = {JSON_NAME: render.to_json(doc), MD_NAME: render.to_markdown(doc).encode(), **pngs}
        write_outputs(out, files, record)
    return DiagnoseResult(out, doc, embed_s, metric_s, sorted(files))
