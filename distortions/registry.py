"""Registry of distortion kernels keyed by KADID id, name lookup, and the ``apply`` wrapper."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from distortions.params import TABLE

#: kernel(image_stretched_float32, parameter, rng) -> float array (not yet stretched)
Kernel = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
KERNELS: dict[int, Kernel] = {}
#: the one kernel that also takes ``denoiser=``
DENOISE_TYPE = 15


def register(dist_type: int) -> Callable[[Kernel], Kernel]:
    def deco(fn: Kernel) -> Kernel:
        if dist_type in KERNELS:
            raise ValueError(f"distortion {dist_type} registered twice")
        KERNELS[dist_type] = fn
        return fn

    return deco


def _aliases() -> dict[str, int]:
    out: dict[str, int] = {}
    for spec in TABLE.values():
        for alias in (spec.name, spec.kadid, spec.name.replace("_", ""), spec.kadid.replace(".", "")):
            out[alias.lower()] = spec.id
    return out


def resolve_type(dist_type: int | str) -> int:
    """Map an id (1..25, int or digit string), a name ('gaussian_blur') or a KADID name ('GBLUR') to an id."""
    if isinstance(dist_type, (int, np.integer)) and not isinstance(dist_type, bool):
        if int(dist_type) in TABLE:
            return int(dist_type)
        raise ValueError(f"unknown distortion type {dist_type}; valid ids are 1..25")
    text = str(dist_type).strip()
    if text.isdigit():
        return resolve_type(int(text))
    found = _aliases().get(text.lower()) or _aliases().get(text.lower().replace("-", "_"))
    if found is None:
        raise ValueError(
            f"unknown distortion type {dist_type!r}; use an id 1..25 or one of: {', '.join(names())}"
        )
    return found


def names() -> list[str]:
    return [TABLE[i].name for i in sorted(TABLE)]


def get_kernel(dist_type: int | str) -> Kernel:
    _load_kernels()
    tid = resolve_type(dist_type)
    if tid not in KERNELS:
        raise NotImplementedError(f"distortion {tid} ({TABLE[tid].name}) is not implemented")
    return KERNELS[tid]


def minmax_stretch(image: np.ndarray) -> np.ndarray:
    """The generator's ``mapmm``: one global linear map sending min -> 0 and max -> 1 (flat images kept)."""
    lo = float(image.min())
    hi = float(image.max())
    if hi <= lo:
        return image.astype(np.float64, copy=True)
    return (image.astype(np.float64) - lo) / (hi - lo)


def as_rgb_float(image: np.ndarray) -> np.ndarray:
    """Accept float in [0,1], uint8, uint16, grey (HxW, HxWx1) or RGBA; return HxWx3 float64."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float64) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float64) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    else:
        raise TypeError(f"unsupported image dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {np.shape(image)}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[..., :3]
    if not np.isfinite(arr).all():
        raise ValueError("image contains NaN or inf")
    return arr


def apply(
    image: np.ndarray,
    dist_type: int | str,
    level: int,
    *,
    rng: np.random.Generator | None = None,
    denoiser: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Apply KADID distortion ``dist_type`` at ``level`` (1..5) as the reference generator does.

    ``rng`` carries all randomness (a fresh ``default_rng()`` if None). ``denoiser`` (from
    :func:`distortions.load_denoiser`) is used by type 15 only; None there means the classical fallback of
    ``load_denoiser(None)``, which warns. Returns float32 HxWx3 in [0, 1].
    """
    tid = resolve_type(dist_type)
    if isinstance(level, bool) or int(level) != level or not 1 <= int(level) <= 5:
        raise ValueError(f"level must be 1..5, got {level!r}")
    kernel = get_kernel(tid)
    rng = np.random.default_rng() if rng is None else rng
    x = minmax_stretch(as_rgb_float(image))
    if tid == DENOISE_TYPE:
        y = kernel(x, TABLE[tid].levels[int(level) - 1], rng, denoiser=denoiser)
    else:
        y = kernel(x, TABLE[tid].levels[int(level) - 1], rng)
    return np.clip(minmax_stretch(np.asarray(y, dtype=np.float64)), 0.0, 1.0).astype(np.float32)


_LOADED = False


#: modules whose import registers kernels: blur 1-3, color 4,5,7,8, quantize 6,22, compression 9,10,
#: noise 11-15, tone 16-18,24,25, spatial 20,21,23, warp 19
KERNEL_MODULES = ("blur", "color", "quantize", "compression", "noise", "tone", "spatial", "warp")


def _load_kernels() -> None:
    """Import the kernel modules lazily, so ``params`` and name lookup stay import-light."""
    global _LOADED
    if _LOADED:
        return
    import importlib

    for name in KERNEL_MODULES:
        try:
            importlib.import_module(f"distortions.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"distortions.{name}":
                raise
    _LOADED = True
