"""mkdocs hook: pages that describe code are generated from that code when the site is built.

A page asks for a generated block with an HTML comment on a line of its own:

* ``<!-- generated: schemas -->``: one section per ``data_manifests/*.schema.json`` (columns, types,
  metadata keys and the descriptions of those that have one), so the artifact reference cannot drift from
  the schemas the readers enforce;
* ``<!-- generated: distortion-table -->``: the 25 distortions from ``distortions.TABLE`` (names, level
  parameters, random or not) with the first sentence of each kernel's docstring, i.e. what it reproduces
  of the MATLAB generator.

An unknown ``generated:`` name fails the build, and so does a schema file that does not parse.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.M)


def _cell(text: str) -> str:
    """One table cell: whitespace collapsed, ``|`` escaped, and ``*``/``_`` escaped outside code spans (a
    docstring's ``2*sigma`` is arithmetic, not emphasis)."""
    parts = re.split(r"(`+[^`]*`+)", " ".join(str(text).split()))
    escaped = [p if p.startswith("`") else re.sub(r"([*_])", r"\\\1", p) for p in parts]
    return "".join(escaped).replace("|", "\\|")


def schema_section(path: Path) -> str:
    schema = json.loads(path.read_text("utf-8"))
    lines = [
        f"### `{schema['name']}`",
        "",
        f"`{path.name}`, version {schema['version']}, {schema['format']}. {_cell(schema.get('description', ''))}",
        "",
    ]
    columns = schema.get("columns", [])
    if columns:
        lines += ["| column | type | nullable | meaning |", "|---|---|---|---|"]
        for col in columns:
            nullable = "yes" if col.get("nullable") else "no"
            lines.append(
                f"| `{col['name']}` | `{col['type']}` | {nullable} | {_cell(col.get('description', ''))} |"
            )
        lines.append("")
    meta = schema.get("metadata", {})
    for kind in ("required", "optional"):
        keys = meta.get(kind, [])
        if keys:
            lines.append(f"Metadata, {kind}: " + ", ".join(f"`{k}`" for k in keys) + ".")
            lines.append("")
    described = meta.get("descriptions", {})
    if described:
        lines += ["| metadata key | meaning |", "|---|---|"]
        lines += [f"| `{key}` | {_cell(text)} |" for key, text in described.items()]
        lines.append("")
    return "\n".join(lines)


def schemas() -> str:
    paths = sorted((REPO / "data_manifests").glob("*.schema.json"))
    if not paths:
        raise RuntimeError("data_manifests/ holds no *.schema.json")
    return "\n".join(schema_section(p) for p in paths)


def _first_sentence(doc: str | None) -> str:
    """Up to the first full stop; a helper's "; return ..." clause is about its return value, not the
    distortion, and is dropped."""
    text = " ".join((doc or "").split())
    match = re.match(r"(.+?\.)(\s|$)", text)
    sentence = match.group(1) if match else text
    return re.sub(r";\s*return\b.*$", ".", sentence)


def kernel_note(kernel) -> str:
    """The kernel's docstring; a kernel without one is a one-line call of a documented helper: use that's."""
    if kernel.__doc__:
        return _first_sentence(kernel.__doc__)
    module = inspect.getmodule(kernel)
    tree = ast.parse(inspect.getsource(kernel).lstrip())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            helper = getattr(module, node.func.id, None)
            if helper is not None and helper.__doc__:
                return _first_sentence(helper.__doc__)
    raise RuntimeError(f"{kernel.__module__}.{kernel.__name__}: no docstring to describe it")


def _number(value: float) -> str:
    return f"{value:g}"


def distortion_table() -> str:
    import distortions
    from distortions.registry import KERNELS, _load_kernels

    _load_kernels()
    lines = [
        "| id | name | KADID name | levels 1..5 | random | what it does (from the kernel's docstring) |",
        "|---:|---|---|---|---|---|",
    ]
    for tid in sorted(distortions.TABLE):
        spec = distortions.TABLE[tid]
        levels = ", ".join(_number(v) for v in spec.levels)
        random = "no" if spec.deterministic else "yes"
        note = _cell(kernel_note(KERNELS[tid]))
        lines.append(f"| {tid} | `{spec.name}` | {spec.kadid} | {levels} | {random} | {note} |")
    return "\n".join(lines) + "\n"


GENERATORS = {"schemas": schemas, "distortion-table": distortion_table}


def render(markdown: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in GENERATORS:
            raise KeyError(f"unknown generated block {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return render(markdown)
