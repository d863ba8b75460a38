"""What `reshape publish` may write, checked before any work, and the transaction that writes it.

* :func:`read_record` / :func:`check_collisions`: publish's own files are those its previous SHA256SUMS
  (or an interrupted run's pending list) names; a foreign file at a name it writes is refused.
* :func:`edited_outputs`: the edit rule. A recorded file whose bytes no longer match SHA256SUMS was edited
  by its user: it is not replaced without ``--overwrite`` (the command stops before any work, naming it).
* :func:`check_images`: every image publish copies is read once, checksummed and decoded under the
  decompression-bomb guard before the dataset is touched.
* :class:`Transaction`: every file a publish creates, replaces or deletes in the dataset. A replaced or
  deleted file is kept (hard-linked) in ``.reshape-publish-backup/`` until the publish completes; if it
  fails, the backups are put back and the files it created are removed, so the old dataset stays whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from reshape.errors import BadInputError, ResourceError
from reshape.fileio import check_relative, resolve_under_root, sha256_bytes, sha256_file
from reshape.layout import BACKUP_DIR, DATASET_JSON, PENDING, SUMS, is_regular, read_sha256sums
from reshape.outputs import check_entries, refuse_foreign
from reshape.steps import announce


# ----------------------------------------------------------------------------------------------- ownership
@dataclass
class Record:
    """What an earlier publish left in the output folder: the files it recorded as its own."""

    own: set[str]
    published: bool
    foreign: int = 0  # files there that publish did not write
    digests: dict[str, str] = field(default_factory=dict)  # own file -> sha256 its SHA256SUMS recorded


def read_record(out_dir: Path) -> Record:
    """Own files = those listed in the SHA256SUMS of a dataset publish wrote (dataset.json carrying reshape's
    mark), plus the names an interrupted publish announced in its pending list."""
    if not out_dir.exists():
        return Record(set(), published=False)
    if not out_dir.is_dir():
        raise BadInputError(f"{out_dir}: exists and is not a folder")
    own: set[str] = set()
    digests: dict[str, str] = {}
    published = False
    card = out_dir / DATASET_JSON
    if (out_dir / SUMS).is_file() and is_regular(card):
        with contextlib.suppress(OSError, ValueError):
            published = "reshape_version" in json.loads(card.read_text("utf-8"))
    if published:
        digests = read_sha256sums(out_dir / SUMS)
        own |= set(digests) | {SUMS}
    pending = out_dir / PENDING
    if is_regular(pending):
        with contextlib.suppress(OSError, ValueError, TypeError):
            own |= {check_relative(str(n)) for n in json.loads(pending.read_text("utf-8"))}
            published = True
    files = {
        p.relative_to(out_dir).as_posix()
        for p in out_dir.rglob("*")
        if (p.is_file() or p.is_symlink()) and BACKUP_DIR not in p.relative_to(out_dir).parts
    }
    return Record(own, published, foreign=len(files - own - {PENDING}), digests=digests)


def check_collisions(out_dir: Path, names: list[str], record: Record, *, overwrite: bool) -> None:
    """Refuse, before any work, to write over what publish does not own: a non-empty folder that is not a
    published dataset, or (without ``overwrite``) a foreign file at a name it writes; a folder at such a
    name, or a path leading out of the folder through a symlink, always."""
    if not out_dir.exists():
        return
    if not record.published and any(out_dir.iterdir()) and not overwrite:
        raise BadInputError(
            f"{out_dir}: folder is not empty and is not a published dataset; refusing to publish into it "
            "(pass --overwrite to write beside its files)"
        )
    check_entries(out_dir, names)  # no link or special file written through, replaced or deleted
    foreign = []
    for rel in names:
        target = out_dir / rel
        resolve_under_root(out_dir, rel, source=out_dir)  # a symlinked folder must not lead outside
        if target.is_dir() and not target.is_symlink():
            raise BadInputError(f"{target}: is a folder where publish writes a file; refusing")
        for parent in target.relative_to(out_dir).parents:
            if str(parent) != "." and (out_dir / parent).is_file():
                raise BadInputError(f"{out_dir / parent}: is a file where publish needs a folder; refusing")
        if (target.exists() or target.is_symlink()) and rel not in record.own:
            foreign.append(rel)
    refuse_foreign(foreign, out_dir, overwrite=overwrite)


def check_report_output(target: Path, record: Record, *, overwrite: bool) -> None:
    """Before any work: report/ must be new, publish's own or an earlier report's (reshape.report)."""
    from reshape import report

    prefix = report.REPORT_DIR + "/"
    listed = {n[len(prefix) :]: d for n, d in record.digests.items() if n.startswith(prefix)}
    record_of_report = report.owned_record(target, listed)
    report.check_output(target, list(report.FIXED_NAMES), record_of_report, overwrite=overwrite)


# ----------------------------------------------------------------------------------------------- edit rule
def shown_names(names: Iterable[str], limit: int = 10) -> str:
    ordered = sorted(names)
    return ", ".join(ordered[:limit]) + (f", ... ({len(ordered)} in all)" if len(ordered) > limit else "")


def edited_outputs(
    out_dir: Path, replaced: Iterable[str], record: Record
) -> tuple[list[str], dict[str, str]]:
    """(recorded files among ``replaced`` whose bytes no longer match SHA256SUMS, the current sha256 of
    every recorded file checked). A file without a recorded checksum (an interrupted run's) is not judged."""
    edited, current = [], {}
    for rel in sorted(set(replaced)):
        want = record.digests.get(rel)
        path = out_dir / rel
        if want is None or not is_regular(path) or path.is_symlink():
            continue
        current[rel] = sha256_file(path)
        if current[rel] != want:
            edited.append(rel)
    return edited, current


def apply_edit_rule(where: Path, edited: list[str], *, overwrite: bool, what: str = "publish") -> None:
    """Stop, in one line naming them, before replacing files edited since they were recorded; with
    ``overwrite`` name them again as they are replaced."""
    if not edited:
        return
    if not overwrite:
        raise BadInputError(
            f"{where}: {len(edited)} file(s) edited since the last {what} would be replaced "
            f"({shown_names(edited)}); refusing (pass --overwrite to replace them)"
        )
    announce("%s: replacing %d edited file(s) (--overwrite): %s", where, len(edited), shown_names(edited))


# ----------------------------------------------------------------------------------------------- images
def check_image(path: Path) -> str:
    """Read ``path`` once: a regular, non-empty image that decodes completely within the decompression-bomb
    limit. Returns its sha256; any fault is one line naming the file."""
    import io

    from PIL import Image, UnidentifiedImageError

    from reshape.imageio import DEFAULT_MAX_PIXELS, strict_decoding
    from reshape.layout import read_regular_bytes

    data = read_regular_bytes(path)
    if not data:
        raise BadInputError(f"{path}: empty file (0 bytes); refusing to publish it")
    try:
        with strict_decoding(), Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > DEFAULT_MAX_PIXELS:
                raise ResourceError(
                    f"{path}: {w}x{h} = {w * h} pixels exceeds the limit of {DEFAULT_MAX_PIXELS} "
                    "(decompression bomb?); refusing to publish it"
                )
            im.load()
    except Image.DecompressionBombError as exc:
        raise ResourceError(f"{path}: decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        raise BadInputError(f"{path}: not a recognised image file; refusing to publish it") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if isinstance(exc, ResourceError):
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(
            f"{path}: truncated or corrupt image data ({first}); refusing to publish it"
        ) from None
    return sha256_bytes(data)


# ----------------------------------------------------------------------------------------------- transaction
class Transaction:
    """Files and folders one publish creates, replaces or deletes in ``out_dir``, undone if it fails.

    :meth:`will_write` (or :meth:`will_delete`) is called before each change: a file already there is
    hard-linked (copied where links fail) into ``.reshape-publish-backup/`` first. :meth:`rollback` puts
    every kept file back, removes the files and folders created, then the backup; :meth:`commit` drops
    the backup. Thread-safe: thumbnails are written from worker threads."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.backup = out_dir / BACKUP_DIR
        self.created: list[Path] = []
        self.folders: list[Path] = []
        self.kept: dict[Path, Path] = {}  # path -> its backup
        self.last: Path | None = None
        self._lock = threading.Lock()

    def begin(self) -> None:
        """Clear a backup a killed publish left (its pending list made the rerun own those names). Anything
        else at that name (a link, a file) is refused: nothing is kept aside through a link."""
        if self.backup.is_symlink() or (self.backup.exists() and not self.backup.is_dir()):
            raise BadInputError(
                f"{self.backup}: is not the folder publish keeps replaced files in; remove it and run again"
            )
        if self.backup.is_dir():
            shutil.rmtree(self.backup)

    def will_write(self, path: Path) -> Path:
        with self._lock:
            self.last = path
            missing = []
            parent = path.parent
            while not parent.exists():
                missing.append(parent)
                parent = parent.parent
            for folder in reversed(missing):
                folder.mkdir(exist_ok=True)  # mode 0777 less the umask
                self.folders.append(folder)
            if path in self.kept or path in self.created:
                return path
            if path.is_file() and not path.is_symlink():
                self._keep(path)
            elif not path.exists() and not path.is_symlink():
                self.created.append(path)
        return path

    will_delete = will_write

    def _keep(self, path: Path) -> None:
        saved = self.backup / path.relative_to(self.out_dir)
        saved.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, saved)
        except OSError:
            shutil.copy2(path, saved)
        self.kept[path] = saved

    def rollback(self) -> bool:
        """Undo every change; True when all was put back."""
        complete = True
        for path, saved in self.kept.items():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(saved, path)
            except OSError:
                complete = False
        for path in self.created:
            with contextlib.suppress(FileNotFoundError):
                try:
                    path.unlink()
                except OSError:
                    complete = False
        for folder in reversed(self.folders):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if complete:
            self.commit()
        return complete

    def commit(self) -> None:
        if self.backup.is_dir() and not self.backup.is_symlink():
            shutil.rmtree(self.backup, ignore_errors=True)

    def fault(self, exc: OSError) -> OSError:
        """A filesystem fault that names no file (a full disk while writing) names the file being written."""
        if exc.filename is not None or self.last is None:
            return exc
        return ResourceError(f"{self.last}: {exc.strerror or exc} (the dataset was left as it was)")
