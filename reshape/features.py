"""Image embeddings for DDCUp: ResNet-50 (the paper's encoder) or an open_clip model, written to Parquet.

``colour-texture`` is an offline fallback for machines without pretrained weights (colour and texture
statistics, no download, :func:`colour_texture_features`); it is not the paper's encoder.

ResNet-50 input follows the paper: the centre 224x224 crop of the image as it is (no resize), normalised
with the ImageNet mean/std; the output is the 2048-d global-average-pooled feature. Images smaller than
224 on a side are an error (or skipped with ``skip_bad``): padding would embed a mostly-constant border that
no real reference has (KADID and KADIS images are 512x384, so the crop always fits).

Incremental: when the output already exists with the same encoder, weights and preprocessing, images whose
(path, sha256) are unchanged keep their stored embedding and only new or changed files are embedded; files no
longer in the input are dropped. A partial artifact is written every ``checkpoint_every`` images, so an
interrupted run resumes where it stopped; it is marked ``partial`` in its metadata, and every other reader
refuses it (reshape.artifacts.read_parquet).
"""

from __future__ import annotations

import glob
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reshape import storage
from reshape.backends import check_backend, import_ray, map_shards
from reshape.errors import BadInputError, StageError
from reshape.fileio import (
    atomic_path,
    check_file_name,
    remove_stale_temps,
    resolve_under_root,
    sha256_file,
)
from reshape.outputs import (
    check_file_output,
    check_inputs_not_outputs,
    check_writable,
    created_folders,
    locked_outputs,
)
from reshape.steps import announce

log = logging.getLogger("reshape.features")

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}
CROP = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RESNET_PREPROCESSING = "centre crop 224x224 of the image as loaded (no resize); ImageNet mean/std"
RANDOM_INIT_SEED = 0
CLIP_HINT = "pip install 'reshape-iqa[clip]'"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
RANDOM_WEIGHTS_WARNING = (
    "--weights none: the encoder has RANDOM weights (torch seed %d); the embeddings are meaningless for "
    "selection: use this for tests only"
)


# ---------------------------------------------------------------------------------------------- inputs
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
    rels: dict[str, Path] = {}
    for f in found:
        try:
            rel = f.relative_to(root).as_posix()
        except ValueError:
            raise BadInputError(f"{f}: image is outside the image root {root} (set --image-root)") from None
        rels[check_file_name(rel, f)] = f
    names = sorted(rels)
    return root, names, [rels[n] for n in names]


# ---------------------------------------------------------------------------------------------- encoders
@dataclass
class Encoder:
    """A callable from a list of float32 HxWx3 images to an (n, dim) float32 array, with provenance."""

    name: str
    weights: str
    preprocessing: str
    dim: int
    prepare: Callable[[np.ndarray], np.ndarray]  # one image -> CHW float32 input tensor data
    model: Any
    device: str
    min_size: int | None

    def embed(self, batch: np.ndarray, precision: str = "fp32") -> np.ndarray:
        """(n, dim) float32 embeddings; ``fp16``/``bf16`` run the model under autocast on its device (the
        same code path on CUDA and on the CPU), ``fp32`` without it."""
        import torch

        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        x = torch.from_numpy(batch).to(self.device)
        with torch.inference_mode(), torch.autocast(self.device, dtype=dtype, enabled=dtype is not None):
            out = self.model(x)
        return out.float().cpu().numpy().astype(np.float32)


def resolve_device(device: str) -> str:
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise BadInputError(f"--device {device!r}: choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda: CUDA is not available on this machine")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_precision(precision: str, device: str, backend: str = "local") -> str:
    """``auto`` -> fp16 on CUDA, fp32 on the CPU; ``bf16`` and ``fp32`` work on both, ``fp16`` needs CUDA.
    With Ray and ``--device auto`` each actor decides (``auto`` is passed on)."""
    if precision not in PRECISIONS:
        raise BadInputError(f"--precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if backend == "ray" and device == "auto" and precision == "auto":
        return "auto"
    if precision == "auto":
        return "fp16" if device == "cuda" else "fp32"
    if precision == "fp16" and device != "cuda":
        raise BadInputError("--precision fp16 needs --device cuda; on the CPU use bf16 (or fp32)")
    return precision


def centre_crop_normalise(image: np.ndarray) -> np.ndarray:
    """ResNet input: 224x224 centre crop (no resize), ImageNet mean/std, CHW float32."""
    h, w = image.shape[:2]
    top, left = (h - CROP) // 2, (w - CROP) // 2
    crop = image[top : top + CROP, left : left + CROP]
    return np.ascontiguousarray(((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1), dtype=np.float32)


def _resnet50_state(weights: str) -> tuple[dict[str, Any] | None, str]:
    import torch
    from torchvision.models import ResNet50_Weights

    if weights == "none":
        return None, f"none (random init, torch seed {RANDOM_INIT_SEED})"
    if weights == "default":
        w = ResNet50_Weights.IMAGENET1K_V1
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
        if not cache.is_file():
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(cache) as tmp:
                    torch.hub.download_url_to_file(w.url, str(tmp), hash_prefix=None, progress=False)
            except Exception as exc:  # noqa: BLE001 - any download failure means the same thing to the user
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise BadInputError(
                    f"cannot get torchvision's ResNet-50 IMAGENET1K_V1 weights ({reason}); offline, download "
                    f"{w.url} on a connected machine and pass it with --weights PATH (or copy it to {cache})"
                ) from None
        try:
            state = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(
                f"{cache}: cached ResNet-50 weights are unreadable ({exc}); delete the file"
            ) from None
        return state, "torchvision ResNet50_Weights.IMAGENET1K_V1"
    path = Path(weights)
    if not path.is_file():
        raise BadInputError(f"{path}: weights file does not exist (use --weights default, none or a file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"{path}: not a loadable PyTorch state_dict ({msg})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BadInputError(f"{path}: holds a {type(state).__name__}, not a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    return state, f"file {path.resolve()} (sha256 {sha256_file(path)[:16]})"


def build_resnet50(weights: str, device: str) -> Encoder:
    import torch
    import torchvision

    state, desc = _resnet50_state(weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = torchvision.models.resnet50(weights=None)
    if state is not None:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            bad = (missing or unexpected)[0]
            what = "lacks" if missing else "has unexpected"
            raise BadInputError(f"{weights}: not ResNet-50 weights ({what} key {bad!r})")
    model.fc = torch.nn.Identity()
    model.eval().to(device)
    return Encoder("resnet50", desc, RESNET_PREPROCESSING, 2048, centre_crop_normalise, model, device, CROP)


def build_clip(spec: str, weights: str, device: str) -> Encoder:
    try:
        import open_clip  # type: ignore[import-not-found]
    except ImportError:
        raise BadInputError(
            f"encoder {spec!r} needs open_clip, which is not installed: {CLIP_HINT}"
        ) from None
    import torch
    from PIL import Image

    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise BadInputError(
            f"encoder {spec!r}: expected clip:<model>[:<pretrained>], e.g. clip:ViT-B-16:openai"
        )
    model_name = parts[1]
    pretrained = parts[2] if len(parts) == 3 else "openai"
    if weights == "none":
        pretrained_arg = None
    elif weights == "default":
        pretrained_arg = pretrained
    else:
        if not Path(weights).is_file():
            raise BadInputError(f"{weights}: weights file does not exist")
        pretrained_arg = str(weights)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained_arg
            )
    except Exception as exc:  # noqa: BLE001 - open_clip raises RuntimeError/HF errors offline
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(
            f"cannot create open_clip model {model_name!r} with weights {pretrained_arg!r} ({msg}); "
            "offline, pass a local checkpoint with --weights PATH"
        ) from None
    model.eval().to(device)

    def prepare(image: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(np.floor(np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
        return preprocess(pil).numpy().astype(np.float32)

    class _Image(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Any) -> Any:
            return self.m.encode_image(x)

    wrapped = _Image(model)
    with torch.inference_mode():
        size = preprocess(Image.new("RGB", (CROP, CROP))).shape
        dim = int(wrapped(torch.zeros((1, *size), device=device)).shape[1])
    desc = "none (random init)" if pretrained_arg is None else f"open_clip {pretrained_arg}"
    return Encoder(spec, desc, f"open_clip transforms of {model_name}", dim, prepare, wrapped, device, None)


#: the offline fallback encoder's name (no weights, no download; NOT the paper's encoder)
STATS_ENCODER = "colour-texture"
STATS_SIDE = 128
STATS_PREPROCESSING = (
    f"resized (INTER_AREA) to {STATS_SIDE} px on the longer side; CIE Lab joint histogram 4x6x6, Lab moments, "
    "uniform LBP (P=8,R=1 and P=16,R=2), gradient orientation and magnitude histograms"
)
STATS_WEIGHTS = "no learned weights (hand-crafted colour and texture statistics)"
#: relative weight of each block (each block is L2-normalised first)
_STATS_BLOCK_WEIGHTS = (0.5, 0.6, 1.0, 1.0, 0.8, 0.8)


class StatsEncoder(Encoder):
    """Colour + texture statistics: ``prepare`` computes the whole feature vector (in the loader workers),
    ``embed`` only stacks them. Deterministic, CPU only, independent of torch."""

    def embed(self, batch: np.ndarray, precision: str = "fp32") -> np.ndarray:
        return np.asarray(batch, dtype=np.float32)


def colour_texture_features(image: np.ndarray) -> np.ndarray:
    """The offline fallback embedding of one float32 RGB image in [0, 1] (any size >= 8 px).

    A fallback for machines without pretrained weights, NOT the paper's encoder: it finds images that share
    colours and textures (crops and flips of one photo), not semantic content.

    1. Resize so the longer side is 128 px (crops and rescales of one scene then look alike).
    2. Colour: a 4x6x6 joint histogram of CIE Lab, and each Lab channel's mean, spread and skew.
    3. Texture: uniform local binary pattern histograms at two radii, and magnitude-weighted gradient
       orientation (12 unsigned bins) and log-magnitude (8 bins) histograms of the grey image.
    4. Square-root (Hellinger) every histogram, L2-normalise every block, weight and concatenate.
    """
    import cv2
    from skimage.feature import local_binary_pattern

    h, w = image.shape[:2]
    scale = STATS_SIDE / max(h, w)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small = cv2.resize(np.asarray(image, dtype=np.float32), size, interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(np.clip(small, 0.0, 1.0), cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(np.float64)
    joint, _ = np.histogramdd(lab, bins=(4, 6, 6), range=((0, 100), (-80, 80), (-80, 80)))
    mean, spread = lab.mean(axis=0), lab.std(axis=0)
    skew = np.cbrt(((lab - mean) ** 3).mean(axis=0))
    moments = np.concatenate([mean / [100, 80, 80], spread / [50, 40, 40], skew / [50, 40, 40]])
    grey = np.rint(small @ np.array([0.299, 0.587, 0.114], np.float32) * 255).astype(np.uint8)
    lbp = []
    for points, radius in ((8, 1), (16, 2)):
        codes = local_binary_pattern(grey, points, radius, "uniform").astype(np.int64).ravel()
        lbp.append(np.bincount(codes, minlength=points + 2).astype(np.float64))
    g = grey.astype(np.float64) / 255.0
    gx, gy = cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=3)
    magnitude, angle = np.hypot(gx, gy).ravel(), np.mod(np.arctan2(gy, gx), np.pi).ravel()
    orientation = np.bincount(np.minimum((angle / np.pi * 12).astype(np.int64), 11), magnitude, 12)
    strength, _ = np.histogram(np.log1p(10 * magnitude), bins=8, range=(0.0, float(np.log1p(40.0))))
    hists = [joint.ravel(), *lbp, orientation, strength.astype(np.float64)]
    blocks = [np.sqrt(hh / max(hh.sum(), 1e-12)) for hh in hists]
    blocks.insert(1, moments)
    return np.concatenate(
        [wt * b / max(float(np.linalg.norm(b)), 1e-12) for wt, b in zip(_STATS_BLOCK_WEIGHTS, blocks)]
    ).astype(np.float32)


def build_colour_texture(weights: str, device: str) -> Encoder:
    """The offline fallback encoder (:func:`colour_texture_features`); it has no weights to load."""
    if weights not in ("default", "none"):
        raise BadInputError(f"encoder {STATS_ENCODER!r} has no weights; drop --weights {weights}")
    dim = len(colour_texture_features(np.zeros((8, 8, 3), np.float32)))
    return StatsEncoder(
        STATS_ENCODER, STATS_WEIGHTS, STATS_PREPROCESSING, dim, colour_texture_features, None, "cpu", 8
    )


_ENCODER_CACHE: dict[tuple[str, str, str], Encoder] = {}


def build_encoder(spec: str, weights: str = "default", device: str = "cpu") -> Encoder:
    """``resnet50``, ``clip:<model>[:<pretrained>]`` or ``colour-texture`` (the offline fallback, no
    weights); ``weights`` is ``default``, ``none`` or a file.

    Encoders with library weights are kept for the life of the process (a pipeline embeds the training
    refs and the pool one after the other); a weights file is re-read every time since it may change.
    """
    key = (spec, weights, device)
    if weights in ("default", "none"):
        if key not in _ENCODER_CACHE:
            _ENCODER_CACHE.clear()  # one model at a time: they are large
            _ENCODER_CACHE[key] = _build_encoder(spec, weights, device)
        return _ENCODER_CACHE[key]
    return _build_encoder(spec, weights, device)


def _build_encoder(spec: str, weights: str, device: str) -> Encoder:
    if spec == "resnet50":
        return build_resnet50(weights, device)
    if spec.startswith("clip:"):
        return build_clip(spec, weights, device)
    if spec == STATS_ENCODER:
        return build_colour_texture(weights, device)
    raise BadInputError(
        f"unknown encoder {spec!r}: use resnet50, clip:<model>[:<pretrained>] or {STATS_ENCODER} (offline fallback)"
    )


# ---------------------------------------------------------------------------------------------- loading
class _ImageSet:
    """Map-style dataset: decodes and prepares one image; bad files come back as an error string."""

    def __init__(self, paths: list[Path], prepare: Callable[[np.ndarray], np.ndarray], min_size: int | None):
        self.paths = paths
        self.prepare = prepare
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, int, int, str | None]:
        from reshape.imageio import load_image

        try:
            img = load_image(self.paths[i], min_size=self.min_size, purpose="the 224x224 centre crop")
        except BadInputError as exc:
            return i, None, 0, 0, str(exc)
        return i, self.prepare(img), img.shape[1], img.shape[0], None


def _collate(items: list) -> list:
    return items


# ---------------------------------------------------------------------------------------------- I/O shell
def _previous(
    out: Path, encoder: Encoder, image_root: Path, precision: str
) -> dict[tuple[str, str], tuple[np.ndarray, int, int]]:
    """Rows of an existing output that can be reused: same encoder, weights, preprocessing, precision and
    root (artifacts from before ``precision`` was recorded used fp16 on CUDA and fp32 on the CPU)."""
    from reshape.artifacts import read_features

    if not out.exists():
        return {}
    try:
        old = read_features(out, allow_partial=True)  # a checkpoint of ours is resumed
    except BadInputError as exc:
        log.warning("ignoring the existing output (%s); embedding everything", exc)
        return {}
    m = old.metadata
    same = (
        m.get("encoder") == encoder.name
        and m.get("weights") == encoder.weights
        and m.get("preprocessing") == encoder.preprocessing
        and m.get("image_root") == str(image_root)
        and m.get("precision", "fp16" if m.get("device") == "cuda" else "fp32") == precision
    )
    if not same:
        log.warning("%s was made with other encoder/weights/precision/root; embedding everything again", out)
        return {}
    return {
        (img, sha): (old.embeddings[i], int(w), int(h))
        for i, (img, sha, w, h) in enumerate(
            old.frame[["image", "sha256", "width", "height"]].itertuples(index=False)
        )
    }


# ---------------------------------------------------------------------------------------------- stage API
@dataclass
class FeaturesConfig:
    """Options of `reshape features`; field names are the CLI option names with '-' -> '_'."""

    images: Sequence[str | os.PathLike[str]]
    out: str | os.PathLike[str]
    encoder: str = "resnet50"
    weights: str = "default"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 32
    workers: int = 0
    image_root: str | os.PathLike[str] | None = None
    skip_bad: bool = False
    checkpoint_every: int = 2048
    backend: str = "local"
    ray_address: str | None = None
    shard_dir: str | None = None  # Ray shard files (default: <out>.shards/)
    overwrite: bool = False
    wait: bool = False
    fingerprint: str | None = None
    progress: bool = False


@dataclass
class FeaturesResult:
    n_images: int
    n_reused: int
    n_embedded: int
    skipped: list[dict[str, str]]
    out: Path | str
    device: str = "cpu"
    precision: str = "fp32"
    seconds: float = 0.0

    def summary_lines(self) -> list[str]:
        return [
            f"{self.n_images} images: {self.n_embedded} embedded, {self.n_reused} reused, "
            f"{len(self.skipped)} skipped -> {self.out} ({self.device}, {self.precision}, {self.seconds:.1f} s)"
        ]


#: the name ``run_features`` returned before the Stage API (issue #15)
FeaturesRun = FeaturesResult

#: rough size of one stored row (2048 float32 + path, hash, sizes), for the free-space check
ROW_BYTES = 2048 * 4 + 256


def _validate(config: FeaturesConfig) -> str:
    """Option checks that need no file; returns the backend name."""
    if config.batch_size < 1:
        raise BadInputError(f"--batch-size {config.batch_size}: must be at least 1")
    if config.workers < 0:
        raise BadInputError(f"--workers {config.workers}: must be 0 or more")
    if config.precision not in PRECISIONS:
        raise BadInputError(f"--precision {config.precision!r}: choose {', '.join(PRECISIONS)}")
    backend = check_backend(config.backend)
    if backend == "ray":
        import_ray()  # a missing Ray is a usage error before any work
    return backend


def _check_outputs(config: FeaturesConfig, out: Path, paths: list[Path], backend: str) -> Path | None:
    """Output safety before anything is decoded or embedded; returns the local Ray shard folder, if any."""
    shards = None
    if backend == "ray" and (config.shard_dir is None or storage.is_local(config.shard_dir)):
        shards = Path(config.shard_dir) if config.shard_dir else out.with_name(out.name + ".shards")
    check_inputs_not_outputs([*config.images, *paths], file_outputs=[out], folder_outputs=[shards])
    target = out.resolve()
    for folder in (Path(item).resolve() for item in config.images if Path(item).is_dir()):
        if folder in target.parents:
            raise BadInputError(
                f"{out}: --out lies inside the input folder {folder}; write it elsewhere so outputs never "
                "mix with the images"
            )
    check_file_output(out, "parquet", overwrite=config.overwrite, kinds=("features",))
    check_writable(out, need_bytes=len(paths) * ROW_BYTES)
    if shards is not None:
        check_writable(shards, need_bytes=len(paths) * ROW_BYTES)
    return shards


@dataclass
class _Plan:
    """What one run embeds: every image by name, its sha256, and which rows an earlier run provides."""

    root: Path
    names: list[str]
    paths: list[Path]
    hashes: list[str]
    rows: dict[str, tuple[str, np.ndarray, int, int]]  # name -> (sha256, embedding, width, height)
    todo: list[int]
    skipped: list[dict[str, str]]


def _plan(config: FeaturesConfig, collected: tuple[Path, list[str], list[Path]], enc: Encoder,
          precision: str) -> _Plan:  # fmt: skip
    from tqdm import tqdm

    root, names, paths = collected
    bar = tqdm(paths, desc="sha256", unit="img", disable=not config.progress, leave=False)
    hashes = [sha256_file(p) for p in bar]
    prev = _previous(Path(config.out), enc, root, precision)
    rows: dict[str, tuple[str, np.ndarray, int, int]] = {}
    todo: list[int] = []
    for i, (name, sha) in enumerate(zip(names, hashes)):
        hit = prev.get((name, sha))
        if hit is not None:
            rows[name] = (sha, hit[0], hit[1], hit[2])
        else:
            todo.append(i)
    return _Plan(root, names, paths, hashes, rows, todo, [])


def _write(
    config: FeaturesConfig, plan: _Plan, enc: Encoder, device: str, precision: str, *, partial: bool = False
) -> None:
    """Write the rows so far; a checkpoint (``partial``) is marked so, and carries no fingerprint, so no
    reader, ``reshape run`` included, takes it for the finished artifact."""
    from reshape.artifacts import PARTIAL_KEY, Features, write_features

    ordered = sorted(plan.rows)
    frame = pd.DataFrame(
        {
            "image": ordered,
            "sha256": [plan.rows[n][0] for n in ordered],
            "width": [plan.rows[n][2] for n in ordered],
            "height": [plan.rows[n][3] for n in ordered],
        }
    )
    emb = np.stack([plan.rows[n][1] for n in ordered]) if ordered else np.zeros((0, enc.dim), np.float32)
    meta: dict[str, Any] = {
        "encoder": enc.name,
        "weights": enc.weights,
        "preprocessing": enc.preprocessing,
        "image_root": str(plan.root),
        "device": device,
        "precision": precision,
        "skipped": plan.skipped,
    }
    if partial:
        meta[PARTIAL_KEY] = {"embedded": len(ordered), "of": len(plan.names)}
    elif config.fingerprint is not None:
        meta["fingerprint"] = config.fingerprint
    write_features(config.out, Features(frame=frame, embeddings=emb, metadata=meta))


def _embed_local(config: FeaturesConfig, plan: _Plan, enc: Encoder, device: str, precision: str) -> None:
    """Decode (DataLoader workers) and embed the planned images in sorted batches; checkpoint as it goes."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    dataset = _ImageSet([plan.paths[i] for i in plan.todo], enc.prepare, enc.min_size)
    loader = DataLoader(
        dataset, batch_size=config.batch_size, shuffle=False, num_workers=config.workers, collate_fn=_collate
    )
    since_checkpoint = 0
    bar = tqdm(total=len(plan.todo), desc=f"embedding ({enc.name}, {device}, {precision})", unit="img",
               disable=not config.progress)  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*TypedStorage.*")
        for batch in loader:
            for local, _, _, _, err in batch:
                if err is not None:
                    if not config.skip_bad:
                        raise BadInputError(f"{err} (use --skip-bad to skip unreadable images)")
                    log.warning("skipping %s", err)
                    plan.skipped.append({"image": plan.names[plan.todo[local]], "error": err})
            good = [b for b in batch if b[4] is None]
            if good:
                emb = enc.embed(np.stack([b[1] for b in good]), precision)
                if not np.isfinite(emb).all():
                    raise StageError(f"{plan.paths[plan.todo[good[0][0]]]}: encoder produced NaN/inf values")
                for (local, _, w, h, _), e in zip(good, emb):
                    i = plan.todo[local]
                    plan.rows[plan.names[i]] = (plan.hashes[i], e, w, h)
            bar.update(len(batch))
            since_checkpoint += len(batch)
            if config.checkpoint_every and since_checkpoint >= config.checkpoint_every and plan.rows:
                _write(config, plan, enc, device, precision, partial=True)
                since_checkpoint = 0
    bar.close()


def _embed_with_ray(config: FeaturesConfig, plan: _Plan, precision: str, shards: Path | None) -> None:
    rows, skipped = embed_on_ray(
        [(plan.names[i], str(plan.paths[i]), plan.hashes[i]) for i in plan.todo],
        Path(config.out),
        encoder=config.encoder,
        weights=config.weights,
        device=config.device,
        precision=precision,
        batch_size=config.batch_size,
        image_root=plan.root,
        skip_bad=config.skip_bad,
        workers=config.workers,
        ray_address=config.ray_address,
        progress=config.progress,
        shard_dir=config.shard_dir if shards is None else str(shards),
    )
    plan.rows.update(rows)
    plan.skipped.extend(skipped)


def run(config: FeaturesConfig) -> FeaturesResult:
    """Embed every input image (reusing unchanged rows of an existing ``out``) and write the features Parquet.

    Output rows are sorted by image path. Embeddings do not depend on ``workers`` (they only decode); the
    batches are fixed by the sorted order and ``batch_size``.
    """
    start = time.perf_counter()
    backend = _validate(config)
    if not storage.is_local(config.out):  # s3://, gs://, ... (issue #9): stage locally, upload the result
        return _run_to_uri(config)
    out = Path(config.out)
    collected = collect_images(config.images, config.image_root)
    shards = _check_outputs(config, out, collected[2], backend)
    with created_folders(out.parent), locked_outputs(out, wait=config.wait):
        remove_stale_temps(out.parent, names=[out.name])
        device = resolve_device(config.device)
        precision = resolve_precision(config.precision, device, backend)
        weights = STATS_WEIGHTS if config.encoder == STATS_ENCODER else config.weights
        announce("loading the %s encoder (weights: %s) on %s", config.encoder, weights, device)
        enc = build_encoder(config.encoder, config.weights, device)
        if config.weights == "none" and config.encoder != STATS_ENCODER:
            log.warning(RANDOM_WEIGHTS_WARNING, RANDOM_INIT_SEED)
        plan = _plan(config, collected, enc, precision)
        n_reused = len(plan.rows)
        if plan.todo:
            announce("embedding %d image(s) (%d unchanged, reused)", len(plan.todo), n_reused)
        if plan.todo and backend == "ray":
            _embed_with_ray(config, plan, precision, shards)
        elif plan.todo:
            _embed_local(config, plan, enc, device, precision)
        if not plan.rows:
            raise BadInputError(
                f"{config.images[0]}: no image could be embedded ({len(plan.skipped)} skipped)"
            )
        _write(config, plan, enc, device, precision)
    n = len(plan.rows)
    return FeaturesResult(len(plan.names), n_reused, n - n_reused, plan.skipped, out, device, precision,
                          time.perf_counter() - start)  # fmt: skip


def run_features(
    inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], **options: Any
) -> FeaturesResult:
    """Keyword form of :func:`run`: ``run_features(inputs, out, encoder=, weights=, device=, ...)``."""
    return run(FeaturesConfig(images=inputs, out=out, **options))


# ---------------------------------------------------------------------------------------------- Ray (#9)
#: Shards hold whole batches (so every image is embedded in the same batch as with the local backend) and
#: about this many images, each written to its own Parquet under ``<out>.shards/`` before the merge.
RAY_SHARD_IMAGES = 512


@dataclass(frozen=True)
class _RayShardSpec:
    shard_dir: str
    batch_size: int
    encoder: str
    weights: str
    image_root: str
    precision: str = "fp32"  # resolved, or "auto": each actor's device decides


def _shard_file(spec: _RayShardSpec, items: Sequence[tuple[str, str, str]]) -> str:
    """Name of a shard's Parquet: a hash of what decides its content, so stale shards are never reused."""
    import hashlib
    import json

    key = json.dumps(
        [spec.encoder, spec.weights, spec.batch_size, spec.image_root, [(n, sha) for n, _, sha in items]]
        + ([] if spec.precision == "fp32" else [spec.precision])
    )
    return storage.join(spec.shard_dir, f"shard-{hashlib.sha256(key.encode()).hexdigest()[:32]}.parquet")


def _ray_encoder(spec: str, weights: str, device: str, threads: int) -> Encoder:
    """Actor set-up: the encoder, on the actor's GPU when Ray gave it one (``device="auto"``).

    On CPU the actor uses the driver's torch thread count: oneDNN's results depend on it in the last bits,
    and with the same count the embeddings are bit-identical to a local run.
    """
    import torch

    dev = resolve_device(device)
    if dev == "cpu":
        torch.set_num_threads(threads)
    return build_encoder(spec, weights, dev)


def _embed_shard(spec: _RayShardSpec, enc: Encoder, items: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    """Embed one shard of (image, path, sha256) in batches and write it to its own features Parquet."""
    from reshape.artifacts import Features, write_features

    dataset = _ImageSet([Path(p) for _, p, _ in items], enc.prepare, enc.min_size)
    names, widths, heights, chunks = [], [], [], []
    skipped: list[dict[str, str]] = []
    for start in range(0, len(items), spec.batch_size):
        batch = [dataset[i] for i in range(start, min(start + spec.batch_size, len(items)))]
        good = [b for b in batch if b[4] is None]
        skipped += [{"image": items[b[0]][0], "error": b[4]} for b in batch if b[4] is not None]
        if not good:
            continue
        emb = enc.embed(np.stack([b[1] for b in good]), resolve_precision(spec.precision, enc.device))
        if not np.isfinite(emb).all():
            raise StageError(f"{items[good[0][0]][1]}: encoder produced NaN/inf values")
        names += [items[b[0]][0] for b in good]
        widths += [b[2] for b in good]
        heights += [b[3] for b in good]
        chunks.append(emb)
    sha = {n: h for n, _, h in items}
    frame = pd.DataFrame(
        {"image": names, "sha256": [sha[n] for n in names], "width": widths, "height": heights}
    )
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, enc.dim), np.float32)
    meta = {
        "encoder": enc.name,
        "weights": enc.weights,
        "preprocessing": enc.preprocessing,
        "image_root": spec.image_root,
        "device": enc.device,
        "precision": resolve_precision(spec.precision, enc.device),
        "skipped": skipped,
    }
    path = _shard_file(spec, items)
    with storage.staged_output(path) as tmp:
        write_features(tmp, Features(frame=frame, embeddings=embeddings, metadata=meta))
    return {"path": path, "skipped": skipped}


def _finished_shard(spec: _RayShardSpec, items: Sequence[tuple[str, str, str]]) -> dict[str, Any] | None:
    """A shard file left by an interrupted run (written atomically, so present means complete)."""
    from reshape.artifacts import read_artifact_metadata

    path = _shard_file(spec, items)
    if not storage.is_file(path):
        return None
    try:
        with storage.local_copy(path) as local:
            skipped = read_artifact_metadata(local).get("skipped", [])
    except BadInputError:
        return None
    return {"path": path, "skipped": skipped}


def embed_on_ray(
    items: Sequence[tuple[str, str, str]],
    out: Path,
    *,
    encoder: str,
    weights: str,
    device: str,
    batch_size: int,
    image_root: Path,
    skip_bad: bool,
    precision: str = "fp32",
    workers: int = 0,
    ray_address: str | None = None,
    progress: bool = False,
    shard_dir: str | None = None,
) -> tuple[dict[str, tuple[str, np.ndarray, int, int]], list[dict[str, str]]]:
    """Embed (image, path, sha256) items with Ray actors; returns rows by image name and skipped images.

    One actor per GPU when the cluster has GPUs (``num_gpus=1``), CPU actors otherwise (each reserving as
    many CPUs as this process's torch threads, and using that many), each loading the encoder once. Each
    shard is written to ``shard_dir`` (default ``<out>.shards/``; a local path every node sees, or an
    object-store URI) as it finishes, so a rerun after a crash embeds only the missing shards; the folder
    is removed once everything is merged.
    """
    import functools

    import torch

    from reshape.artifacts import read_features

    shard_dir = shard_dir or str(out.with_name(out.name + ".shards"))
    storage.makedirs(shard_dir)
    spec = _RayShardSpec(shard_dir, batch_size, encoder, weights, str(image_root), precision)
    per_shard = batch_size * max(1, RAY_SHARD_IMAGES // batch_size)
    shards = [list(items[i : i + per_shard]) for i in range(0, len(items), per_shard)]
    results = map_shards(
        functools.partial(_embed_shard, spec),
        shards,
        backend="ray",
        workers=workers or None,
        ray_address=ray_address,
        setup=functools.partial(_ray_encoder, encoder, weights, device, torch.get_num_threads()),
        actor_cpus=torch.get_num_threads(),  # CPU actors: as many Ray CPUs as torch threads
        skip_done=functools.partial(_finished_shard, spec),
        progress=progress,
    )
    done: dict[int, dict[str, Any]] = {}
    try:
        for result in results:
            if result.value["skipped"] and not skip_bad:
                err = result.value["skipped"][0]["error"]
                raise BadInputError(f"{err} (use --skip-bad to skip unreadable images)")
            done[result.index] = result.value
    finally:
        results.close()
    rows: dict[str, tuple[str, np.ndarray, int, int]] = {}
    skipped: list[dict[str, str]] = []
    for index in sorted(done):
        with storage.local_copy(done[index]["path"]) as local:
            part = read_features(local)
        frame = part.frame[["image", "sha256", "width", "height"]]
        for i, (name, sha, w, h) in enumerate(frame.itertuples(index=False)):
            rows[name] = (sha, part.embeddings[i], int(w), int(h))
        skipped += done[index]["skipped"]
    for skip in skipped:
        log.warning("skipping %s", skip["error"])
    storage.remove_tree(shard_dir)
    return rows, skipped


def _run_to_uri(config: FeaturesConfig) -> FeaturesResult:
    """:func:`run` with ``out`` on an object store: the existing artifact (for incremental reuse) is
    fetched, the run writes a local copy, which is uploaded whole when complete (``reshape.storage``). On
    Ray the shard files go beside ``out`` on the store (``<out>.shards/``), which every node can reach.
    The store's lease lock (:class:`reshape.outputs.OutputLock`) keeps a second run off the same key."""
    import dataclasses
    import tempfile

    out = str(config.out)
    shard_dir = config.shard_dir
    if config.backend == "ray" and not shard_dir:
        shard_dir = out.rstrip("/") + ".shards"
    name = Path(out.rstrip("/").rsplit("/", 1)[-1] or "features.parquet")
    with (
        locked_outputs(out, wait=config.wait),
        tempfile.TemporaryDirectory(prefix="reshape-features-") as tmp,
    ):
        local = Path(tmp) / name
        if storage.is_file(out):
            local.write_bytes(storage.read_bytes(out))
        result = run(dataclasses.replace(config, out=local, shard_dir=shard_dir))
        storage.upload_file(local, out)
    return dataclasses.replace(result, out=out)
