"""`reshape demo`: the whole pipeline on data that ships with a dependency, without network or downloads.

* Training references: scikit-image's bundled colour photos, centre-cropped and resized to a small 4:3 size.
* Source labels: KADID images are not bundled, so the "source dataset" is made here: every training
  reference is distorted with the ``distortions`` library (the demo's types, levels 1/3/5) and labelled with
  a full-reference proxy, ``dmos = 1 + 4 * clip(SSIM(distorted, reference), 0, 1)`` (higher = better, KADID's
  1..5 range), written as a KADID-layout ``dmos.csv``. The card says so.
* Candidate pool: crops, rescales and flips of *other* bundled photos.
* Encoder: ResNet-50 with ImageNet weights when torchvision's file is already in the local torch cache,
  else the offline ``colour-texture`` encoder (colour and texture statistics, a fallback that is not the
  paper's encoder) with a warning; the card, dataset.json and the report say which.

Then it writes ``pipeline.toml`` and runs it through `reshape run`, verifies the dataset and prints a summary.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reshape.errors import BadInputError, StageError
from reshape.outputs import created_folders
from reshape.steps import announce

log = logging.getLogger("reshape.demo")

TRAIN_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
POOL_PHOTOS = ("motorcycle_left", "motorcycle_right", "colorwheel", "logo", "retina", "camera", "cat")
DEMO_TYPES = (1, 3, 10, 17, 18, 25)  # the LIVE Challenge preset of the paper's code
SMOKE_TYPES = (1, 17)
DEMO_MARK = "# Written by `reshape demo`"
#: the demo's record of the data files it wrote (it deletes only files listed there)
DEMO_RECORD = ".reshape-demo-files.json"
LEVELS = (1, 3, 5)
SIZE = (320, 240)  # width, height: KADID's 4:3, >= 224 on each side for the ResNet centre crop
LABEL_PROXY = (
    "Source labels are a full-reference proxy, not human opinion scores: "
    "dmos = 1 + 4 * clip(SSIM(distorted, reference), 0, 1), computed on distorted versions of "
    "scikit-image's bundled photos (KADID-10k images are not bundled)."
)


@dataclass
class DemoResult:
    out: Path
    dataset: Path
    weights: str
    encoder: str = "resnet50"
    stage_seconds: dict[str, float] = field(default_factory=dict)
    n_selected: int = 0
    n_images: int = 0
    label_range: tuple[float, float] = (0.0, 0.0)
    build_seconds: float = 0.0

    def summary_lines(self) -> list[str]:
        """What `reshape demo` prints on stdout."""
        if self.encoder == "resnet50":
            weights = (
                "ResNet-50, ImageNet (local cache)" if self.weights == "default" else "random init (none)"
            )
        else:
            weights = f"{self.encoder} (offline fallback: colour and texture statistics, not the paper's)"
        lo, hi = self.label_range
        lines = [
            "",
            "reshape demo summary",
            f"  encoder         : {weights}",
            f"  selected refs   : {self.n_selected}",
            f"  images written  : {self.n_images} new distorted images",
            f"  pseudo labels   : {lo:.3f} .. {hi:.3f} (1..5, higher = better)",
            f"  data build      : {self.build_seconds:.1f}s",
        ]
        for stage, seconds in self.stage_seconds.items():
            lines.append(f"  {stage:<16}: {seconds:.1f}s" if seconds else f"  {stage:<16}: up to date")
        return lines + [
            f"  dataset         : {self.dataset} (passes reshape verify)",
            f"  card            : {self.dataset / 'README.md'}",
            f"  plots           : {self.dataset / 'plots'}",
            f"  report          : {self.dataset / 'report' / 'index.html'}",
        ]


def _photo(name: str) -> np.ndarray:
    from skimage import color, data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(data, name)()
    if img.ndim == 2:
        img = color.gray2rgb(img)
    if img.shape[2] == 4:  # composite onto white, like reshape.imageio does
        rgba = img.astype(np.float32) / 255.0
        img = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)


def _fit(
    img: np.ndarray, size: tuple[int, int], *, box: tuple[float, float, float] = (0.5, 0.5, 1.0)
) -> np.ndarray:
    """Crop the largest 4:3 window (scaled by box[2], centred at box[0:2]) and resize it to ``size``."""
    import cv2

    h, w = img.shape[:2]
    target = size[0] / size[1]
    cw, ch = (w, int(w / target)) if w / h < target else (int(h * target), h)
    cw, ch = max(8, int(cw * box[2])), max(8, int(ch * box[2]))
    x0 = int(np.clip(box[0] * w - cw / 2, 0, w - cw))
    y0 = int(np.clip(box[1] * h - ch / 2, 0, h - ch))
    crop = np.ascontiguousarray(img[y0 : y0 + ch, x0 : x0 + cw])
    return np.clip(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), 0.0, 1.0)


def ssim_to_dmos(ssim: float) -> float:
    """The demo's documented label proxy: SSIM in [0, 1] -> 1..5, higher = better."""
    return 1.0 + 4.0 * float(np.clip(ssim, 0.0, 1.0))


def _write_if_changed(path: Path, data: bytes) -> None:
    """Leave an identical file untouched so its mtime (part of `reshape run`'s folder fingerprint) stays."""
    from reshape.fileio import atomic_write_bytes

    if path.is_file() and path.read_bytes() == data:
        return
    atomic_write_bytes(path, data)


def _save(path: Path, image: np.ndarray) -> np.ndarray:
    """Write ``image`` as PNG (only if changed); returns it as a trainer will read it back (8-bit)."""
    from reshape.imageio import encode_image, to_uint8

    _write_if_changed(path, encode_image(image, "PNG"))
    return to_uint8(image).astype(np.float32) / 255.0


def _build_source(
    refs_dir: Path, source_dir: Path, *, types: tuple[int, ...], n_train: int, seed: int
) -> list[Path]:
    """Training refs plus their distorted, SSIM-labelled versions and dmos.csv; returns the files."""
    from skimage.metrics import structural_similarity

    import distortions

    rows = []
    written: list[Path] = []
    for name in TRAIN_PHOTOS[:n_train]:
        ref = _fit(_photo(name), SIZE)
        _save(refs_dir / f"{name}.png", ref)
        saved_ref = _save(source_dir / f"{name}.png", ref)
        written += [refs_dir / f"{name}.png", source_dir / f"{name}.png"]
        for t in types:
            for lvl in LEVELS:
                rng = np.random.default_rng([seed, t, lvl, len(rows)])
                dist = np.clip(distortions.apply(ref, t, lvl, rng=rng), 0.0, 1.0).astype(np.float32)
                fname = f"{name}_{t:02d}_{lvl:02d}.png"
                # SSIM of the images as saved (8-bit), i.e. exactly what a trainer will read.
                ssim = structural_similarity(
                    saved_ref, _save(source_dir / fname, dist), channel_axis=2, data_range=1.0
                )
                rows.append([fname, f"{name}.png", round(ssim_to_dmos(ssim), 4), 0.0])
                written.append(source_dir / fname)
    table = pd.DataFrame(rows, columns=["dist_img", "ref_img", "dmos", "var"])
    _write_if_changed(source_dir / "dmos.csv", table.to_csv(index=False, lineterminator="\n").encode())
    return [*written, source_dir / "dmos.csv"]


def _build_pool(pool_dir: Path, *, n_pool: int, seed: int) -> list[Path]:
    """Crops, rescales and flips of photos that are not training refs; returns the files."""
    rng = np.random.default_rng(seed)
    written: list[Path] = []
    for name in POOL_PHOTOS:
        img = _photo(name)
        boxes = [(0.5, 0.5, 1.0), (rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), 0.55), (0.5, 0.5, 0.8)]
        for i, box in enumerate(boxes):
            if len(written) >= n_pool:
                return written
            out = _fit(img, SIZE, box=box)
            if i == 2:
                out = np.ascontiguousarray(out[:, ::-1])
            _save(pool_dir / f"{name}_{i}.png", out)
            written.append(pool_dir / f"{name}_{i}.png")
    return written


def _forget_old_files(root: Path, written: list[Path]) -> None:
    """Delete files an earlier demo recorded (e.g. the full demo, then --smoke) and this one did not
    write, only while they still hold the bytes recorded and are reached without a link leading out of
    the folder; nothing else in the folder is ever touched. The record maps each file to its sha256 (a
    list, from before digests were recorded, is honoured by name)."""
    from reshape.fileio import atomic_write_text, remove_recorded, sha256_file

    record = root / DEMO_RECORD
    try:
        previous = json.loads(record.read_text("utf-8"))
    except (OSError, ValueError):
        previous = {}
    if isinstance(previous, list):
        previous = dict.fromkeys(map(str, previous))
    now = {p.relative_to(root).as_posix(): sha256_file(p) for p in written}
    for rel in sorted(set(previous) - set(now)):
        remove_recorded(root, rel, previous[rel])
    atomic_write_text(record, json.dumps(now, indent=0, sort_keys=True) + "\n")


def build_demo_data(
    root: Path, *, types: tuple[int, ...], n_train: int, n_pool: int, seed: int = 0
) -> dict[str, Path]:
    """Training refs, the SSIM-labelled source dataset and the candidate pool under ``root``."""
    refs_dir, source_dir, pool_dir = root / "refs", root / "source", root / "pool"
    for folder in (refs_dir, source_dir, pool_dir):
        folder.mkdir(parents=True, exist_ok=True)
    written = _build_source(refs_dir, source_dir, types=types, n_train=n_train, seed=seed)
    written += _build_pool(pool_dir, n_pool=n_pool, seed=seed)
    _forget_old_files(root, written)
    return {"refs": refs_dir, "source": source_dir, "labels": source_dir / "dmos.csv", "pool": pool_dir}


def planned_data_files(*, types: tuple[int, ...], n_train: int, n_pool: int) -> set[str]:
    """The data files (relative to ``data/``) a demo with these settings writes: what
    :func:`build_demo_data` writes, named without computing an image."""
    names = {"source/dmos.csv"}
    for name in TRAIN_PHOTOS[:n_train]:
        names |= {f"refs/{name}.png", f"source/{name}.png"}
        names |= {f"source/{name}_{t:02d}_{lvl:02d}.png" for t in types for lvl in LEVELS}
    return names | set([f"pool/{name}_{i}.png" for name in POOL_PHOTOS for i in range(3)][:n_pool])


def edited_data_files(root: Path, planned: set[str]) -> list[str]:
    """Data files an earlier demo recorded (with their sha256) that this one writes again but that were
    edited since: the edit rule keeps them unless --overwrite."""
    from reshape.fileio import sha256_file

    try:
        record = json.loads((root / DEMO_RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict):
        return []
    edited = []
    for rel in sorted(planned & set(record)):
        path = root / rel
        if record[rel] and path.is_file() and not path.is_symlink() and sha256_file(path) != record[rel]:
            edited.append(f"data/{rel}")
    return edited


#: What the demo writes inside --out: folders and files no link may lead out of.
DEMO_PATHS = ("pipeline.toml", "data", "data/refs", "data/source", "data/pool", "run", "dataset")


def check_demo_folder(out: Path) -> None:
    """The demo writes only into a new or empty folder, or one an earlier demo made (its pipeline.toml),
    and never through a symbolic link that leads out of it (a linked data/pool, say)."""
    from reshape.fileio import check_inside
    from reshape.outputs import check_entries, check_folder_output

    check_folder_output(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise BadInputError(f"{out}: --out is a file, expected a folder")
    for rel in DEMO_PATHS:
        check_inside(out, out / rel, what="demo folder")
    check_entries(out, ["pipeline.toml", f"data/{DEMO_RECORD}"], what="demo folder")
    config = out / "pipeline.toml"
    made_by_demo = config.is_file() and config.read_text("utf-8", errors="replace").startswith(DEMO_MARK)
    if any(out.iterdir()) and not made_by_demo:
        raise BadInputError(f"{out}: not empty and not a reshape demo folder; choose a new or empty --out")


def local_resnet_weights() -> Path | None:
    """torchvision's ResNet-50 ImageNet file if it is already in the local torch cache (no download).

    The folder is found the way ``torch.hub.get_dir`` finds it, without importing torch (seconds on a
    cold start, for a demo whose stages may all be up to date)."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch"
    )
    hub = Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"
    found = sorted(hub.glob("resnet50-*.pth")) if hub.is_dir() else []
    return found[0] if found else None


STATS_NOTE = (
    "Features were computed with reshape's offline colour-texture encoder (colour and texture statistics; no "
    "pretrained ResNet-50 weights in the local torch cache). It is a fallback, not the paper's encoder: the "
    "selection and neighbours follow colours and textures, not semantic content."
)


def write_config(
    path: Path,
    data: dict[str, Path],
    *,
    weights: str,
    types: tuple[int, ...],
    max_select: int,
    encoder: str = "resnet50",
) -> None:
    rel = {k: os.path.relpath(v, path.parent) for k, v in data.items()}
    notes = [LABEL_PROXY]
    if encoder != "resnet50":
        notes.append(STATS_NOTE)
    elif weights == "none":
        notes.append(
            "Features were computed with a randomly initialised ResNet-50 (no pretrained weights in the "
            "local torch cache), so the selection and the pseudo-labels only demonstrate the pipeline."
        )
    text = f"""{DEMO_MARK}; `reshape run {path.name}` reruns it, skipping up-to-date stages.
[inputs]
train_refs = "{rel["refs"]}"
source_labels = "{rel["labels"]}"
source_root = "{rel["source"]}"
candidates = "{rel["pool"]}"
out = "run"
dataset = "dataset"
source_name = "reshape demo (scikit-image photos, SSIM proxy labels)"

[features]
encoder = "{encoder}"
weights = "{weights}"
batch-size = 8

[select]
max-select = {max_select}

[distort]
types = "{",".join(map(str, types))}"
levels = "1,3,5"
seed = 0

[label]
k = 5

[publish]
copy-source = true
name = "reshape-demo"
note = {json.dumps(notes)}
"""
    from reshape.fileio import atomic_write_text

    atomic_write_text(path, text)


def run_demo(
    out: str | os.PathLike[str], *, smoke: bool = False, echo=print, overwrite: bool = False
) -> DemoResult:
    """Build the demo data under ``out``, run the pipeline on it and verify the dataset; a failed first
    demo leaves no empty folders behind. A data file or run output the demo wrote and someone edited
    since is not replaced without ``overwrite``: the demo stops before any work, naming it."""
    from reshape.outputs import refuse_edited

    out = Path(out)
    check_demo_folder(out)
    types = SMOKE_TYPES if smoke else DEMO_TYPES
    n_pool = 12 if smoke else 21
    planned = planned_data_files(types=types, n_train=6, n_pool=n_pool)
    refuse_edited(edited_data_files(out / "data", planned), out, overwrite=overwrite)
    with created_folders(out):
        return _run_demo(out, smoke, echo, overwrite=overwrite)


def _run_demo(out: Path, smoke: bool, echo, *, overwrite: bool = False) -> DemoResult:
    from reshape.artifacts import read_artifact_metadata, read_csv
    from reshape.pipeline import run_pipeline
    from reshape.verify import verify_dataset

    types = SMOKE_TYPES if smoke else DEMO_TYPES
    start = time.perf_counter()
    announce("building the demo data (scikit-image photos, distorted and SSIM-labelled) in %s", out / "data")
    data = build_demo_data(out / "data", types=types, n_train=6, n_pool=12 if smoke else 21)
    build_seconds = time.perf_counter() - start
    from reshape.features import STATS_ENCODER

    cached = local_resnet_weights()
    encoder = "resnet50" if cached else STATS_ENCODER
    weights = "default"
    if cached is None:
        log.warning(
            "no pretrained ResNet-50 weights in the local torch cache: the demo uses the offline %s encoder "
            "(colour and texture statistics, not the paper's encoder; the card says so)",
            STATS_ENCODER,
        )
    config = out / "pipeline.toml"
    write_config(config, data, weights=weights, types=types, max_select=3 if smoke else 8, encoder=encoder)
    result = run_pipeline(config, echo=echo, overwrite=overwrite)
    dataset = result.config.dataset
    report = verify_dataset(dataset)
    if not report.ok:
        raise StageError(f"{dataset}: demo output fails verify: {report.problems[0]}")
    run_root = result.config.out
    train = read_csv(dataset / "train.csv", "train")
    pseudo = train.loc[train["origin"] == "pseudo", "dmos"].to_numpy(dtype=float)
    selection_meta = read_artifact_metadata(run_root / "selection.parquet")
    return DemoResult(
        out=out,
        dataset=dataset,
        weights=weights,
        encoder=encoder,
        stage_seconds={r.name: r.seconds for r in result.records},
        n_selected=int(selection_meta.get("n_selected", 0)),
        n_images=int(len(pseudo)),
        label_range=(float(pseudo.min()), float(pseudo.max())) if len(pseudo) else (0.0, 0.0),
        build_seconds=build_seconds,
    )
