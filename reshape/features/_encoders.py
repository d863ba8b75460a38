"""The encoders of `reshape features` (ResNet-50, ViT-B/16, open_clip, the colour-texture fallback) and how they run:
device, autocast precision (``auto`` asks the hardware whether bfloat16 is native) and memory format."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reshape.errors import BadInputError
from reshape.features._colour_texture import (
    STATS_ENCODER,
    STATS_PREPROCESSING,
    STATS_WEIGHTS,
    colour_texture_features,
)
from reshape.fileio import atomic_path, sha256_file

CROP = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RESNET_PREPROCESSING = "centre crop 224x224 of the image as loaded (no resize); ImageNet mean/std"
VIT_PREPROCESSING = (
    "ViT_B_16_Weights.IMAGENET1K_V1 transforms: shorter side 256 (bilinear, antialias), centre crop 224x224; "
    "ImageNet mean/std"
)
RANDOM_INIT_SEED = 0
CLIP_HINT = "pip install 'reshape-iqa[clip]'"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: ``channels-last`` (NHWC) is the fast layout of oneDNN and cuDNN convolutions; ``contiguous`` (NCHW) is
#: the layout of earlier reshape versions and, with fp32, reproduces its features byte for byte
MEMORY_FORMATS = ("channels-last", "contiguous")
#: x86 flags of CPUs that compute in bfloat16 natively (AVX-512 BF16, AMX); elsewhere bf16 is emulated
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: ``1``/``0`` overrides the hardware probe behind ``--precision auto`` (a VM may hide its CPU's flags)
NATIVE_BF16_ENV = "RESHAPE_NATIVE_BF16"


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
    memory_format: str = "contiguous"

    def set_memory_format(self, memory_format: str) -> str:
        """Lay the model's convolution weights out as ``memory_format`` (the values stay the same); returns
        the layout in effect: ``contiguous`` for a model without 2-d convolutions, where it changes nothing."""
        import torch

        if memory_format not in MEMORY_FORMATS:
            raise BadInputError(f"--memory-format {memory_format!r}: choose {', '.join(MEMORY_FORMATS)}")
        convolutional = self.model is not None and any(
            isinstance(m, torch.nn.Conv2d) for m in self.model.modules()
        )
        wanted = memory_format if convolutional else "contiguous"
        if wanted != self.memory_format:
            fmt = torch.channels_last if wanted == "channels-last" else torch.contiguous_format
            self.model.to(memory_format=fmt)
            self.memory_format = wanted
        return self.memory_format

    def embed(self, batch: Any, precision: str = "fp32") -> np.ndarray:
        """(n, dim) float32 embeddings of an (n, C, H, W) float32 array or tensor (pinned memory is copied
        to the GPU without waiting); ``fp16``/``bf16`` run the model under autocast on its device (the
        same code path on CUDA and on the CPU), ``fp32`` without it."""
        import torch

        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch)
        x = x.to(self.device, non_blocking=True)
        if self.memory_format == "channels-last":
            x = x.contiguous(memory_format=torch.channels_last)
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


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The feature flags of the first ``flags`` line of ``/proc/cpuinfo`` (x86 Linux); empty elsewhere."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text("utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def native_bf16(device: str, flags: frozenset[str] | None = None) -> bool:
    """Whether ``device`` computes in bfloat16 natively, the probe behind ``--precision auto``.

    CPU: AVX-512 BF16 or AMX, from torch's own CPU probe or the ``/proc/cpuinfo`` flags (``flags`` given:
    only those); elsewhere bf16 is emulated and slower than fp32. CUDA: compute capability 8.0 (Ampere)
    or later. ``RESHAPE_NATIVE_BF16=1`` or ``0`` overrides the probe.
    """
    import torch

    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if device == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    if flags is not None:
        return any(f in flags for f in NATIVE_BF16_CPU_FLAGS)
    probes = [
        getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    return any(p is not None and p() for p in probes) or any(f in cpu_flags() for f in NATIVE_BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: str, backend: str = "local") -> str:
    """``auto`` -> bf16 where the device computes it natively (:func:`native_bf16`), fp32 elsewhere;
    ``bf16`` and ``fp32`` work on both devices, ``fp16`` needs CUDA. With Ray and ``--device auto`` each
    actor decides (``auto`` is passed on)."""
    if precision not in PRECISIONS:
        raise BadInputError(f"--precision {precision!r}: choose {', '.join(PRECISIONS)}")
    if backend == "ray" and device == "auto" and precision == "auto":
        return "auto"
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "fp16" and device != "cuda":
        raise BadInputError("--precision fp16 needs --device cuda; on the CPU use bf16 (or fp32)")
    return precision


def centre_crop_normalise(image: np.ndarray) -> np.ndarray:
    """ResNet input: 224x224 centre crop (no resize), ImageNet mean/std, CHW float32."""
    h, w = image.shape[:2]
    top, left = (h - CROP) // 2, (w - CROP) // 2
    crop = image[top : top + CROP, left : left + CROP]
    return np.ascontiguousarray(((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1), dtype=np.float32)


def load_state_file(path: Path, hint: str) -> dict[str, Any]:
    """A PyTorch state dict from a user's file, loaded with ``weights_only=True`` (no pickled code runs):
    unwrapped from a ``state_dict``/``model`` key, ``module.`` (DataParallel) prefixes dropped; every
    fault is one line naming the file (``hint`` says what else the option takes). The one loader of
    ``features``, ``train_reference`` and ``diagnose``."""
    import torch

    if not path.is_file():
        raise BadInputError(f"{path}: weights file does not exist ({hint})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"{path}: not a loadable PyTorch state_dict ({msg})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise BadInputError(f"{path}: holds a {type(state).__name__}, not a state_dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in state.items()}


def _resnet50_state(weights: str) -> tuple[dict[str, Any] | None, str]:
    return _torchvision_state(weights, "ResNet50_Weights", "ResNet-50")


def _torchvision_state(weights: str, enum: str, label: str) -> tuple[dict[str, Any] | None, str]:
    """The state dict of a torchvision model for ``--weights``: ``none`` (None: random init), ``default``
    (torchvision's ``<enum>.IMAGENET1K_V1`` from the torch hub cache, downloaded there when absent) or a
    local file (:func:`load_state_file`); with a description for the Parquet metadata."""
    import torch
    import torchvision

    if weights == "none":
        return None, f"none (random init, torch seed {RANDOM_INIT_SEED})"
    if weights == "default":
        w = getattr(torchvision.models, enum).IMAGENET1K_V1
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
        if not cache.is_file():
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(cache) as tmp:
                    torch.hub.download_url_to_file(w.url, str(tmp), hash_prefix=None, progress=False)
            except Exception as exc:  # noqa: BLE001 - any download failure means the same thing to the user
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise BadInputError(
                    f"cannot get torchvision's {label} IMAGENET1K_V1 weights ({reason}); offline, download "
                    f"{w.url} on a connected machine and pass it with --weights PATH (or copy it to {cache})"
                ) from None
        try:
            state = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise BadInputError(
                f"{cache}: cached {label} weights are unreadable ({exc}); delete the file"
            ) from None
        return state, f"torchvision {enum}.IMAGENET1K_V1"
    path = Path(weights)
    state = load_state_file(path, "--weights default, none or a file")
    return state, f"file {path.resolve()} (sha256 {sha256_file(path)[:16]})"


def build_resnet50(weights: str, device: str) -> Encoder:
    model, desc = _torchvision_trunk("resnet50", "ResNet50_Weights", "ResNet-50", "fc", weights, device)
    return Encoder("resnet50", desc, RESNET_PREPROCESSING, 2048, centre_crop_normalise, model, device, CROP)


def _torchvision_trunk(
    arch: str, enum: str, label: str, head: str, weights: str, device: str
) -> tuple[Any, str]:
    """torchvision's ``arch`` built with seeded random init, ``weights`` loaded (:func:`_torchvision_state`)
    but its classifier ``head``, which becomes the identity; in eval mode on ``device``; with its
    description for the metadata."""
    import torch
    import torchvision

    state, desc = _torchvision_state(weights, enum, label)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = getattr(torchvision.models, arch)(weights=None)
    if state is not None:
        _load_without_head(model, state, f"{head}.", weights, label)
    setattr(model, head, torch.nn.Identity())
    return model.eval().to(device), desc


def _load_without_head(model: Any, state: dict[str, Any], head: str, weights: str, label: str) -> None:
    """Load ``state`` into ``model`` except the classifier ``head`` (removed afterwards); a file that is not
    this architecture's weights is one line naming it and the first key that does not fit."""
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # right keys, wrong shapes
        raise BadInputError(f"{weights}: not {label} weights ({str(exc).splitlines()[-1].strip()})") from None
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        bad = (missing or unexpected)[0]
        what = "lacks" if missing else "has unexpected"
        raise BadInputError(f"{weights}: not {label} weights ({what} key {bad!r})")


def vit_prepare(image: np.ndarray) -> np.ndarray:
    """ViT-B/16 input: the inference transforms of torchvision's ``ViT_B_16_Weights.IMAGENET1K_V1``
    (shorter side resized to 256, bilinear with antialiasing, centre crop 224, ImageNet mean/std), applied
    to the float image as loaded; CHW float32."""
    import torch
    from torchvision.models import ViT_B_16_Weights

    chw = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return ViT_B_16_Weights.IMAGENET1K_V1.transforms()(chw).numpy().astype(np.float32, copy=False)


def build_vit_b_16(weights: str, device: str) -> Encoder:
    """torchvision ViT-B/16 with ``heads`` removed: the 768-d class token after the last layer norm."""
    model, desc = _torchvision_trunk("vit_b_16", "ViT_B_16_Weights", "ViT-B/16", "heads", weights, device)
    return Encoder("vit_b_16", desc, VIT_PREPROCESSING, 768, vit_prepare, model, device, None)


def seeded_open_clip(
    create: Callable[..., Any], model_name: str, pretrained: str | None, seed: int, **kwargs: Any
) -> Any:
    """``create(model_name, pretrained=pretrained, **kwargs)`` (an open_clip factory) with torch's random
    generator seeded by ``seed`` and restored after, so the randomly initialised parts are the same in every
    run; any failure (open_clip raises RuntimeError or hub errors offline) is one line naming the model."""
    import torch

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return create(model_name, pretrained=pretrained, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure means the same thing to the user
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(
            f"cannot create open_clip model {model_name!r} with weights {pretrained!r} ({msg}); "
            "offline, pass a local checkpoint with --weights PATH"
        ) from None


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
    model, _, preprocess = seeded_open_clip(
        open_clip.create_model_and_transforms, model_name, pretrained_arg, RANDOM_INIT_SEED
    )
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


class StatsEncoder(Encoder):
    """Colour + texture statistics: ``prepare`` computes the whole feature vector (in the loader workers),
    ``embed`` only stacks them. Deterministic, CPU only, independent of torch."""

    def embed(self, batch: Any, precision: str = "fp32") -> np.ndarray:
        return np.asarray(batch.numpy() if hasattr(batch, "numpy") else batch, dtype=np.float32)


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
    """``resnet50``, ``vit_b_16``, ``clip:<model>[:<pretrained>]`` or ``colour-texture`` (the offline fallback, no
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
    if spec == "vit_b_16":
        return build_vit_b_16(weights, device)
    if spec.startswith("clip:"):
        return build_clip(spec, weights, device)
    if spec == STATS_ENCODER:
        return build_colour_texture(weights, device)
    raise BadInputError(
        f"unknown encoder {spec!r}: use resnet50, vit_b_16, clip:<model>[:<pretrained>] or {STATS_ENCODER} (offline fallback)"
    )
