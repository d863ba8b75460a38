"""Inputs of `reshape features`: folders, globs and CSV lists expanded into sorted image paths."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from reshape.errors import BadInputError
from reshape.fileio import check_file_name, printable_path, resolve_under_root
from reshape.imageio import IMAGE_SUFFIXES

#: the suffixes `features` embeds: the same list `distort` reads references by
IMAGE_EXTENSIONS = IMAGE_SUFFIXES


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


#: columns of a CSV image list, in the order they are looked for
LIST_COLUMNS = ("image", "path", "ref_img", "file")


def _csv_list(csv_path: Path, image_root: Path | None) -> list[Path]:
    """Images of a CSV list: column image, path, ref_img or file, else the first column (a list without a
    header works too); paths relative to ``image_root`` (default: the CSV's folder), never escaping it."""
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{csv_path}: not a readable CSV list ({str(exc).splitlines()[0]})") from None
    col = next((c for c in LIST_COLUMNS if c in df.columns), None)
    first_line = 2
    if col is None:
        if len(df.columns) == 0:
            raise BadInputError(f"{csv_path}: empty CSV list")
        col = df.columns[0]
        if _is_image(Path(str(col))):  # no header: the first line is an image already
            df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, header=None, names=df.columns)
            first_line = 1
    root = image_root if image_root is not None else csv_path.parent
    if df.empty:
        raise BadInputError(f"{csv_path}: lists no images (a header line only)")
    out = []
    for i, rel in enumerate(df[col].tolist()):
        full = resolve_under_root(root, rel, source=csv_path, row=i + first_line)
        if full.is_file():
            out.append(full)
        elif col in LIST_COLUMNS or first_line == 1:
            raise BadInputError(
                f"{csv_path}, row {i + first_line}: image {rel!r} does not exist under {root}"
            )
        else:
            raise BadInputError(
                f"{csv_path}, row {i + first_line}: {rel!r} (column {col!r}) is no image under {root}; an image "
                f"list needs a column {', '.join(LIST_COLUMNS[:-1])} or {LIST_COLUMNS[-1]} (else image paths "
                "in the first column)"
            )
    return out


def _check_utf8(path: Path, what: str) -> None:
    """Every table and the Parquet metadata store paths as UTF-8: a name the file system holds as other
    bytes (Latin-1, a broken copy) could not be written after all the work, so it is refused first."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise BadInputError(
            f"{printable_path(path)}: {what} is not valid UTF-8, which reshape's tables cannot store; rename it "
            "(e.g. convmv -f latin1 -t utf8)"
        ) from None


def collect_images(inputs: Sequence[str | os.PathLike[str]], image_root: str | os.PathLike[str] | None = None
                   ) -> tuple[Path, list[str], list[Path]]:  # fmt: skip
    """Expand folders (recursive), globs and CSV lists into (image_root, sorted relative paths, full paths).

    The default image root is the folder given, or the common parent folder of all images.
    """
    if not inputs:
        raise BadInputError("no input images given (folders, globs or a CSV list)")
    root = Path(image_root).resolve() if image_root is not None else None
    found: list[Path] = []
    folders: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            folders.append(p.resolve())
            imgs = sorted(q for q in p.rglob("*") if q.is_file() and _is_image(q))
            if not imgs:
                raise BadInputError(
                    f"{p}: folder holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            found.extend(imgs)
        elif p.is_file() and p.suffix.lower() in (".csv", ".txt", ".tsv") and not _is_image(p):
            found.extend(_csv_list(p, root))
        elif p.is_file():
            found.append(p)
        elif any(ch in str(item) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True) if Path(m).is_file())
            matches = [m for m in matches if _is_image(m)]
            if not matches:
                raise BadInputError(f"{item}: glob matches no image files")
            found.extend(matches)
        else:
            raise BadInputError(f"{item}: no such file or folder")
    found = [f.resolve() for f in found]
    if root is None:
        if len(folders) == 1 and len(inputs) == 1:
            root = folders[0]
        else:
            root = Path(os.path.commonpath([str(f.parent) for f in found]))
    _check_utf8(root, "the image root")
    rels: dict[str, Path] = {}
    for f in found:  # check_file_name refuses a name that is not UTF-8
        try:
            rel = f.relative_to(root).as_posix()
        except ValueError:
            raise BadInputError(f"{f}: image is outside the image root {root} (set --image-root)") from None
        rels[check_file_name(rel, f)] = f
    names = sorted(rels)
    return root, names, [rels[n] for n in names]
