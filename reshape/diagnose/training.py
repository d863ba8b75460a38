"""The figures of a training set beside the SRCC of the model trained on it (the Table 4 kit,
examples/syn2real), so that "SynDR-IQA lowers clustering and raises SRCC" is a checkable claim."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reshape.diagnose import render
from reshape.diagnose.inputs import Embedder, Table, read_table
from reshape.diagnose.metrics import Rows, dataset_figures

#: the figures shown beside the SRCC (subset, figure)
KIT_COLUMNS = (
    ("top_tercile", "silhouette_reference"),
    ("top_tercile", "purity_reference"),
    ("bottom_tercile", "silhouette_type"),
    ("bottom_tercile", "purity_type"),
    ("all", "continuity_spearman"),
    ("all", "label_gap"),
)


class TrainingSets:
    """Embeds each published folder once; a row's training set is a subset of its folder's rows."""

    def __init__(self, embedder: Embedder, source_root: Path | None, *, k: int = 10, seed: int = 0):
        self.embedder, self.source_root, self.k, self.seed = embedder, source_root, k, seed
        self._cache: dict[Path, tuple[Table, np.ndarray]] = {}

    def _embedded(self, dataset: Path) -> tuple[Table, np.ndarray]:
        key = Path(dataset).resolve()
        if key not in self._cache:
            table = read_table(str(dataset), source_root=self.source_root)
            self._cache[key] = (table, np.asarray(self.embedder.embed(table.paths), dtype=np.float64))
        return self._cache[key]

    def figures(self, dataset: Path, origins: Sequence[str], drop_refs: Sequence[str] = ()) -> dict[str, Any]:
        """Figures of the rows a trainer reads (``reshape.train_reference.read_published``'s selection:
        origin in ``origins``, reference stem not in ``drop_refs``), labels scaled over those rows."""
        from reshape.train_reference import scale_0_10

        table, emb = self._embedded(dataset)
        refs = table.references or [""] * len(table.paths)
        dropped = set(drop_refs)
        keep = np.array(
            [
                (table.origins is None or table.origins[i] in origins) and Path(refs[i]).stem not in dropped
                for i in range(len(table.paths))
            ]
        )
        idx = np.flatnonzero(keep)
        pick = lambda seq: None if seq is None else [seq[i] for i in idx]  # noqa: E731
        rows = Rows(
            emb[idx],
            scale_0_10(table.labels[idx]).astype(np.float64),
            pick(table.references),
            pick(table.types),
        )
        origins_kept = pick(table.origins)
        return {"rows": len(idx), "figures": dataset_figures(rows, origins_kept, k=self.k, seed=self.seed)}


def srcc_table(entries: dict[str, dict[str, Any]], srcc: dict[str, float], provenance: dict[str, Any]) -> str:
    """Markdown: one line per (row, target) with the SRCC of its model and its training set's figures."""
    names = [f"{render.FIGURES[f]}, {render.SUBSETS[s]}" for s, f in KIT_COLUMNS]
    lines = [
        "# Training sets diagnosed (reshape diagnose)",
        "",
        f"Embeddings: {provenance.get('encoder')}; {provenance.get('weights', provenance.get('checkpoint', ''))}. "
        f"{render.LABEL_NOTE.capitalize()}. SRCC: mean over the seeds of the model trained on that set (final epoch).",
        "",
        "| training set | rows | SRCC | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for name, entry in entries.items():
        cells = []
        for subset, figure in KIT_COLUMNS:
            value = entry["figures"].get(subset, {}).get(figure)
            cells.append("–" if value is None else f"{value:.4f}")
        s = srcc.get(name)
        lines.append(
            f"| {name} | {entry['rows']} | {'–' if s is None else f'{s:.4f}'} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"
