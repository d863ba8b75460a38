"""Registry of distortion kernels keyed by KADID id, name lookup, and the ``apply`` wrapper."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def _rgb_channels(arr: np.ndarray, original_shape: tuple[int, ...]) -> np.ndarray:
    """HxW / HxWx1 / HxWx3 / HxWx4 -> HxWx3 (grey replicated, alpha dropped), any dtype."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {original_shape}")
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        return arr[..., :3]
    return arr


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
    arr = _rgb_channels(arr, np.shape(image))
    if not np.isfinite(arr).all():
        raise ValueError("image contains NaN or inf")
    return arr


def _stretch_in_place(values: np.ndarray) -> bool:
    """``minmax_stretch`` overwriting ``values`` (float64); False, and nothing done, for a flat array."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return False
    values -= lo
    values /= hi - lo
    return True


def stretched_input(image: np.ndarray) -> np.ndarray:
    """``minmax_stretch(as_rgb_float(image))`` with the same values, without its intermediate copies.

    8-bit images take one table lookup: each of the 256 codes is converted and stretched by exactly the
    float64 operations the two-step version applies per pixel, so the results are identical.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        stretched = np.ascontiguousarray(as_rgb_float(image))
        _stretch_in_place(stretched)
        return stretched
    arr = np.ascontiguousarray(_rgb_channels(arr, np.shape(image)))
    codes = np.arange(256, dtype=np.float64) / 255.0
    lo, hi = float(codes[arr.min()]), float(codes[arr.max()])
    if hi > lo:
        codes = (codes - lo) / (hi - lo)
    import cv2  # lazily: name lookup and the level table stay import-light

    return cv2.LUT(arr, codes).reshape(arr.shape)


def stretched_output(kernel_output: np.ndarray) -> np.ndarray:
    """``clip(minmax_stretch(y), 0, 1)`` as float32, computed in place on the kernel's throw-away result.

    For a non-flat image (y - lo) / (hi - lo) already lies in [0, 1] (rounding is monotone and the maximum
    maps to exactly 1), so only a flat image needs the clip.
    """
    y = kernel_output
    if not isinstance(y, np.ndarray) or y.dtype != np.float64 or not y.flags.writeable:
        y = np.array(y, dtype=np.float64)
    if not _stretch_in_place(y):
        np.clip(y, 0.0, 1.0, out=y)
    return y.astype(np.float32, order="C")  # C order even when a kernel returns a transposed view


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
    _check_level(level)
    kernel = get_kernel(tid)
    rng = np.random.default_rng() if rng is None else rng
    x = stretched_input(image)
    if tid == DENOISE_TYPE:
        y = kernel(x, TABLE[tid].levels[int(level) - 1], rng, denoiser=denoiser)
    else:
        y = kernel(x, TABLE[tid].levels[int(level) - 1], rng)
    return stretched_output(y)


#: one request of :func:`apply_batch`: (image, dist_type, level, rng)
Request = tuple[np.ndarray, "int | str", int, "np.random.Generator | None"]


def apply_batch(
    requests: Sequence[Request], *, denoiser: Callable[[np.ndarray], np.ndarray] | None = None
) -> list[np.ndarray]:
    """``[apply(image, t, level, rng=rng, denoiser=denoiser) for image, t, level, rng in requests]``, with
    the denoising of every type-15 request done in one batch (``denoiser.denoise_batch``).

    Each request's rng is consumed as ``apply`` consumes it, in request order; the results are those of
    ``apply`` (with a DnCNN on the CPU in fp32, bit for bit: a plane's result does not depend on its batch).
    """
    results: list[np.ndarray | None] = [None] * len(requests)
    pending: list[tuple[int, np.ndarray]] = []  # (request index, noisy image) of the type-15 requests
    for index, (image, dist_type, level, rng) in enumerate(requests):
        tid = resolve_type(dist_type)
        if tid != DENOISE_TYPE:
            results[index] = apply(image, tid, level, rng=rng, denoiser=denoiser)
            continue
        _check_level(level)
        from distortions.noise import gaussian_noise

        rng = np.random.default_rng() if rng is None else rng
        variance = TABLE[tid].levels[int(level) - 1]
        pending.append((index, gaussian_noise(stretched_input(image), variance, rng)))
    if pending:
        from distortions.noise import denoise_noisy

        for (index, _), denoised in zip(pending, denoise_noisy([noisy for _, noisy in pending], denoiser)):
            results[index] = stretched_output(denoised)
    return [r for r in results if r is not None]


def _check_level(level: int) -> None:
    if isinstance(level, bool) or int(level) != level or not 1 <= int(level) <= 5:
        raise ValueError(f"level must be 1..5, got {level!r}")


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
