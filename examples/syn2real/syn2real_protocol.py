"""The two named protocols of the Table 4 kit (``--protocol official|paper``) and the checks they enforce.

Each protocol is a complete set of choices, printed at the start of a run and recorded in every result file:

* ``official``: what produced the published numbers, as far as the released script (GitHub
  Li-aobo/SynDR-IQA) shows it, without its result-changing bugs (README.md lists them).
* ``paper``: the paper's text wherever it says something; where it says nothing, the kit's neutral choice.

The numbers both share (network, optimiser, crops, epochs) are ``reshape.protocol``'s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from reshape.errors import BadInputError
from reshape.protocol import OFFICIAL_PROTOCOL, PAPER_PROTOCOL, TrainingProtocol

#: KADID-10k references the official training script leaves out of training (indices 5, 6, 17, 18, 52,
#: 57, 69 of I01..I81 in base_tools.py's ``img_num``); they still serve DDCUp as training references.
OFFICIAL_DROPPED_REFS = ("I06", "I07", "I18", "I19", "I53", "I58", "I70")
#: The official pool: ``KADID_10k/kadid_add81/ref_imgs`` (81 images).
OFFICIAL_POOL_SIZE = 81
#: BID_512: the folder the official loader reads BID from; the shorter side the kit resizes to.
BID_SHORT_SIDE = 512
KONIQ_OFFICIAL_SIZE = (512, 384)


@dataclass(frozen=True)
class KitProtocol:
    """Every choice of one named protocol; ``describe`` is what a run prints and records."""

    name: str
    training: TrainingProtocol
    pool: str  # "whole-sorted": every pool image in sorted order; "sample": seeded sample of n_refs
    down_scope: str  # "source": DRCDown on the KADID rows only; "all": on every training row
    drop_refs: str  # "official" (the 7 references) or "none"
    bid: str  # "BID_512" (shorter side 512) or "as given"
    koniq: str  # "512x384" (1024x768 refused) or "as given"
    #: the departures from the released code that a user can switch back on to measure them (README.md)
    label_softmax: str = "fixed"  # "fixed": softmax(-d); "official": DDCUp.py's softmax(+d)
    candidate_images: str = "reshape's port of KADID's distortions"
    drcdown_index_bug: str = "fixed"
    precision: str = "fp32 (TF32 off)"

    def describe(self, overrides: dict[str, str] | None = None, *, select_epoch: str = "final") -> list[str]:
        t = self.training
        marks = {k: f" ({k.replace('_', '-')} overridden: {v})" for k, v in (overrides or {}).items()}
        reported = {
            "final": "final epoch",
            "val": "the epoch with the best SRCC on held-out training references (--select-epoch val; "
            "their labels are kept out of DDCUp)",
        }[select_epoch]
        pool = {
            "whole-sorted": "every image of --pool in sorted file-name order (kadid_add81/ref_imgs: 81)",
            "sample": "a seeded sample of --pool as large as the training reference set",
        }[self.pool]
        return [
            f"protocol {self.name}:",
            f"  candidate pool: {pool}{marks.get('pool', '')}",
            f"  training crop: one random {t.patch_size} crop per image and epoch, "
            f"horizontal flip {'on' if t.hflip else 'off'}",
            f"  DRCDown scope: {self.down_scope} rows{marks.get('down_scope', '')}",
            f"  dropped KADID references: {self.drop_refs}{marks.get('drop_refs', '')}",
            f"  BID test images: {self.bid}{marks.get('bid', '')}; KonIQ-10k test images: {self.koniq}",
            f"  schedule: {t.epochs} epochs of batch {t.batch_size}{marks.get('epochs', '')}"
            f"{marks.get('batch_size', '')}{marks.get('patch_size', '')}",
            f"  pseudo-label weights: {_SOFTMAX[self.label_softmax]}{marks.get('label_softmax', '')}",
            f"  candidates' distorted images: {self.candidate_images}{marks.get('candidate_images', '')}",
            f"  DRCDown index bug of the released script: {self.drcdown_index_bug}"
            f"{marks.get('drcdown_index_bug', '')}",
            f"  precision: {self.precision}{marks.get('precision', '')}",
            f"  reported: {reported}; beside it, optimistic best-test-epoch (as the official script selects)",
        ]

    def record(self) -> dict:
        return asdict(self)


_SOFTMAX = {
    "fixed": "softmax(-d), the nearer neighbour weighs more",
    "official": "softmax(+d) as the released DDCUp.py, the farther neighbour weighs more",
}

PROTOCOLS = {
    "official": KitProtocol(
        "official", OFFICIAL_PROTOCOL, pool="whole-sorted", down_scope="source", drop_refs="official",
        bid=f"BID_512 (shorter side {BID_SHORT_SIDE})", koniq="512x384",
    ),
    "paper": KitProtocol(
        "paper", PAPER_PROTOCOL, pool="sample", down_scope="all", drop_refs="none", bid="as given",
        koniq="as given",
    ),
}  # fmt: skip


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot read image ({exc})") from None


def check_koniq(root: Path, first_image: Path) -> None:
    """The official protocol tests on KonIQ-10k's 512x384 release (folders.py reads KonIQ_10k/512x384)."""
    if "1024x768" in root.as_posix() or _image_size(first_image) == (1024, 768):
        raise BadInputError(
            f"{root}: KonIQ-10k at 1024x768; --protocol official tests on the 512x384 release "
            "(the official loader reads KonIQ_10k/512x384): give that folder as --koniq-root"
        )


def check_bid(paths: list[Path]) -> None:
    """The official protocol tests on BID_512: every image's shorter side is 512."""
    for path in paths:
        size = _image_size(path)
        if min(size) != BID_SHORT_SIDE:
            raise BadInputError(
                f"{path}: BID image is {size[0]}x{size[1]}; --protocol official tests on the authors' BID_512 "
                f"(shorter side {BID_SHORT_SIDE}): add --bid-resize to make it from the original BID"
            )


def resize_bid(paths: list[Path], scores: list[str], out: Path) -> Path:
    """Write BID_512 from the original BID: each image resized so its shorter side is 512 (aspect kept,
    longer side rounded, Pillow bicubic), saved losslessly as PNG under ``out``; returns ``out/mos.csv``
    (``image,score``).

    ``out/originals.json`` records, per written image, the fingerprint (resolved name, size, mtime) of the
    original it was made from. A copy is kept only while its original still has that fingerprint (and the
    copy is still the file written); a replaced, edited or touched original, or a copy without a record, is
    made again.
    """
    from reshape.fileio import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "originals.json"
    try:
        record = json.loads(record_path.read_text("utf-8")) if record_path.is_file() else {}
    except (OSError, ValueError):
        record = {}
    lines, made = ["image,score"], {}
    for path, score in zip(paths, scores):
        target = out / (path.stem + ".png")
        source = _fingerprint(path)
        entry = record.get(target.name, {})
        if not (
            target.is_file() and entry.get("original") == source and entry.get("copy") == _fingerprint(target)
        ):
            _write_bid_512(path, target)
        made[target.name] = {"original": source, "copy": _fingerprint(target)}
        lines.append(f"{target.name},{score}")
    if made != record:
        atomic_write_text(record_path, json.dumps(made, indent=1, sort_keys=True) + "\n")
    table, text = out / "mos.csv", "\n".join(lines) + "\n"
    if not table.is_file() or table.read_text("utf-8") != text:
        atomic_write_text(table, text)
    return table


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}\t{st.st_size}\t{st.st_mtime_ns}"


def _write_bid_512(path: Path, target: Path) -> None:
    from PIL import Image

    from reshape.fileio import atomic_path

    try:
        with Image.open(path) as im:
            image = im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot read image ({exc})") from None
    w, h = image.size
    scale = BID_SHORT_SIDE / min(w, h)
    size = (BID_SHORT_SIDE, round(h * scale)) if w <= h else (round(w * scale), BID_SHORT_SIDE)
    with atomic_path(target) as tmp:
        image.resize(size, Image.Resampling.BICUBIC).save(tmp, format="PNG")
