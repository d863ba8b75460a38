"""diagnose.json, diagnose.md and the report's HTML section, as text (no I/O)."""

from __future__ import annotations

import html
import json
from typing import Any

SCHEMA = "reshape-diagnose/1"
SUBSETS = {
    "all": "all rows",
    "top_tercile": "high quality (top third)",
    "bottom_tercile": "low quality (bottom third)",
    "pseudo": "pseudo-labelled rows",
}
FIGURES = {
    "rows": "rows",
    "silhouette_reference": "silhouette by reference",
    "silhouette_type": "silhouette by distortion type",
    "purity_reference": "k-NN purity by reference",
    "purity_type": "k-NN purity by distortion type",
    "continuity_spearman": "label continuity (Spearman, label vs neighbours' mean)",
    "label_gap": "mean absolute label gap to neighbours (0..10)",
}
LABEL_NOTE = "labels min-max scaled to 0..10 per dataset, higher = better"


def to_json(doc: dict[str, Any]) -> bytes:
    """The bytes of diagnose.json: sorted keys, fixed indentation (floats are rounded already)."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _cell(figures: dict[str, Any], figure: str) -> str:
    value = figures.get(figure)
    if value is None:
        return "–"
    if figure == "rows":
        return str(value)
    text = f"{value:.4f}"
    chance = figures.get(f"{figure}_chance")
    return f"{text} (chance {chance:.4f})" if chance is not None else text


def table_rows(datasets: dict[str, dict[str, Any]]) -> list[list[str]]:
    """[figure name, one cell per dataset] for every figure that some dataset has."""
    rows = []
    for subset, subset_title in SUBSETS.items():
        for figure, figure_title in FIGURES.items():
            cells = [_cell(d["figures"].get(subset, {}), figure) for d in datasets.values()]
            if all(c == "–" for c in cells):
                continue
            rows.append([f"{figure_title}, {subset_title}", *cells])
    return rows


def header_lines(doc: dict[str, Any]) -> list[str]:
    emb = doc["embedding"]
    weights = (
        f"checkpoint {emb['checkpoint']} (sha256 {emb['checkpoint_sha256'][:16]})"
        if "checkpoint" in emb
        else emb.get("weights", "")
    )
    return [
        f"Embeddings: {emb['encoder']}; {weights}.",
        f"k = {doc['k']} neighbours (cosine), seed {doc['seed']}, silhouettes on at most {doc['sample_limit']} "
        f"rows per subset (a seeded sample beyond), maps: {doc['map']}; {LABEL_NOTE}.",
        "Each subset is measured alone (its neighbours are found among its own rows). Higher silhouette and "
        "purity = more clustered; higher continuity and a lower gap = a smoother quality order.",
    ]


def to_markdown(doc: dict[str, Any]) -> str:
    """diagnose.md: one table, the datasets side by side, then the maps."""
    names = list(doc["datasets"])
    lines = ["# reshape diagnose", "", *header_lines(doc), ""]
    lines.append("| figure | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(doc["datasets"])]
    lines.append("")
    for name, d in doc["datasets"].items():
        lines += [f"![{name}]({d['plot']})", ""]
    return "\n".join(lines)


def to_html(doc: dict[str, Any], image_prefix: str = "") -> str:
    """The report's section: the same table and maps, as an HTML fragment (images under ``image_prefix``)."""
    names = list(doc["datasets"])
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = "".join(
        "<tr>"
        + f"<td>{html.escape(r[0])}</td>"
        + "".join(f"<td class='num'>{html.escape(c)}</td>" for c in r[1:])
        + "</tr>"
        for r in table_rows(doc["datasets"])
    )
    left = [f"{n}: {d['rows_left_out']} source rows left out (their images are not shipped in the folder)"
            for n, d in doc["datasets"].items() if d.get("rows_left_out")]  # fmt: skip
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in [*header_lines(doc), *left])
    images = "".join(
        f"<figure><a href='{html.escape(image_prefix + d['plot'])}'><img class='diagnose-map' "
        f"src='{html.escape(image_prefix + d['plot'])}' alt='{html.escape(n)} map'></a>"
        f"<figcaption>{html.escape(n)}</figcaption></figure>"
        for n, d in doc["datasets"].items()
    )
    return (
        "<section id='diagnose'><h2>Clustered features (reshape diagnose)</h2>"
        f"{notes}<table><thead><tr><th>figure</th>{head}</tr></thead><tbody>{body}</tbody></table>{images}</section>"
    )
