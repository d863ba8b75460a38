"""The report's "Clustered features" tab (`reshape report` / `publish` with ``--diagnose-encoder``)."""

from __future__ import annotations

from pathlib import Path

from reshape.diagnose import render

#: where the section's files go inside the report folder
FOLDER = "diagnose"
CSS = "diagnose.css"
#: the report's stylesheet shrinks every image to a thumbnail; the maps are shown at full width (a file,
#: since the report's Content-Security-Policy refuses inline styles)
STYLE = "img.diagnose-map { max-width: 100%; max-height: none; }\n#diagnose td.num { text-align: right; }\n"
TAB = '<a href="#diagnose" data-tab="diagnose">Clustered features</a>'


def section_files(
    dataset: Path, encoder: str, *, weights: str = "default", source_root: Path | None = None
) -> tuple[str, dict[str, bytes]]:
    """(the HTML section, {report-relative name: bytes}) for a published folder: its figures and map
    through ``encoder`` (any spec `reshape features` accepts), as `reshape diagnose` writes them."""
    from reshape.diagnose.inputs import build_embedder, read_table
    from reshape.diagnose.stage import JSON_NAME, MD_NAME, DiagnoseConfig, diagnose

    config = DiagnoseConfig(datasets=[str(dataset)], out="", encoder=encoder, weights=weights, device="auto")
    table = read_table(str(dataset), source_root=source_root, skip_unshipped=True)
    embedder = build_embedder(encoder, weights=weights, device=config.device)
    doc, pngs, _, _ = diagnose([table], embedder, config)
    files = {
        f"{FOLDER}/{CSS}": STYLE.encode(),
        f"{FOLDER}/{JSON_NAME}": render.to_json(doc),
        f"{FOLDER}/{MD_NAME}": render.to_markdown(doc).encode(),
    }
    files |= {f"{FOLDER}/{name}": data for name, data in pngs.items()}
    html = render.to_html(doc, image_prefix=f"{FOLDER}/").replace(
        "<section id='diagnose'>",
        f"<section id='diagnose' class='tab' hidden><link rel='stylesheet' href='{FOLDER}/{CSS}'>",
        1,
    )
    return html, files


def add_section(
    files: dict[str, bytes], dataset: Path, encoder: str, *, source_root: Path | None = None
) -> None:
    """Add the tab to a report's planned ``files`` (``index.html`` and the section's own files)."""
    html, extra = section_files(dataset, encoder, source_root=source_root)
    index = files["index.html"].decode()
    index = index.replace("</nav>", TAB + "</nav>", 1).replace("</main>", html + "\n</main>", 1)
    files["index.html"] = index.encode()
    files.update(extra)
