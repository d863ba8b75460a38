"""Type 19 jitter: five rounds of per-pixel random displacement, resampled with MATLAB's bicubic ``interp2``.

MATLAB's ``interp2(..., 'bicubic')`` is Keys' cubic convolution with a = -0.5 (not OpenCV's INTER_CUBIC,
a = -0.75, nor a B-spline), so it is implemented here directly, vectorised over all pixels. Images are
kept channel-first float32 between rounds: per-pixel weight planes then broadcast over contiguous rows,
and float32's error (~1e-7) is far below one 8-bit step.
"""

from __future__ import annotations

import numpy as np

from distortions.registry import register

JITTER_ROUNDS = 5
#: largest tap window (rows x columns of offsets) evaluated as a sum of shifted images; beyond it, gathers
MAX_SHIFT_SPAN = 150


def keys_weights(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keys (a = -0.5) weights of the taps at offsets -1, 0, 1, 2 for fractional positions ``t`` in [0, 1)."""
    t2 = t * t
    t3 = t2 * t
    return (
        0.5 * (-t3 + 2.0 * t2 - t),
        0.5 * (3.0 * t3 - 5.0 * t2 + 2.0),
        0.5 * (-3.0 * t3 + 4.0 * t2 + t),
        0.5 * (t3 - t2),
    )


def bicubic_sample(
    image: np.ndarray, sample_y: np.ndarray, sample_x: np.ndarray, method: str = "auto"
) -> np.ndarray:
    """Keys bicubic interpolation of ``image`` (HxWxC) at float pixel positions (0-based), same-shape fields.

    The image is extended by edge replication, which is what the generator's replicate padding provides for
    every position it samples, so the border is never darkened or distorted. ``method`` picks the
    evaluation strategy (same result up to float32 rounding): ``"shift"`` sums shifted copies of the image
    weighted per pixel (no gathers; fast when displacements are below a pixel or two), ``"gather"`` fetches
    each pixel's 4x4 neighbourhood; ``"auto"`` chooses by the displacement range.
    """
    h, w = image.shape[:2]
    planar = np.ascontiguousarray(np.moveaxis(image, 2, 0), dtype=np.float32)
    offset_y = sample_y - np.arange(h, dtype=np.float64)[:, None]
    offset_x = sample_x - np.arange(w, dtype=np.float64)[None, :]
    return np.moveaxis(_resample(planar, offset_y, offset_x, method), 0, 2).astype(np.float64)


def _resample(planar: np.ndarray, offset_y: np.ndarray, offset_x: np.ndarray, method: str) -> np.ndarray:
    """Keys-resample a CxHxW float32 image at (y + offset_y, x + offset_x); returns CxHxW float32."""
    fy = np.floor(offset_y)
    fx = np.floor(offset_x)
    wy = keys_weights((offset_y - fy).astype(np.float32))
    wx = keys_weights((offset_x - fx).astype(np.float32))
    fy = fy.astype(np.intp)
    fx = fx.astype(np.intp)
    # taps sit at integer offsets floor(s)-1 .. floor(s)+2 from each pixel
    bounds = (int(fy.min()) - 1, int(fy.max()) + 2, int(fx.min()) - 1, int(fx.max()) + 2)
    pad = max(-bounds[0], bounds[1], -bounds[2], bounds[3], 0)
    padded = np.pad(planar, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    span = (bounds[1] - bounds[0] + 1) * (bounds[3] - bounds[2] + 1)
    if method == "shift" or (method == "auto" and span <= MAX_SHIFT_SPAN):
        return _sum_of_shifts(padded, pad, fy, fx, wy, wx, bounds)
    if method in ("gather", "auto"):
        return _gather(padded, pad, fy, fx, wy, wx)
    raise ValueError(f"method must be 'auto', 'shift' or 'gather', got {method!r}")


def _tap_weight_planes(offset: np.ndarray, weights: tuple, lo: int, hi: int) -> np.ndarray:
    """Per absolute tap offset a in lo..hi, each pixel's weight (0 where a is not among its four taps)."""
    count = hi - lo + 1
    planes = np.zeros(count * offset.size, dtype=np.float32)
    # flat index of (plane offset + m - 1 - lo, pixel); a pixel's four taps never share a plane
    first = (offset.reshape(-1) - 1 - lo) * offset.size + np.arange(offset.size)
    for m in range(4):
        planes[first + m * offset.size] = weights[m].reshape(-1)
    return planes.reshape((count,) + offset.shape)


#: rows per block in the sum of shifts, so one block's working set stays in the CPU cache
SHIFT_BLOCK_ROWS = 32


def _sum_of_shifts(padded, pad, fy, fx, wy, wx, bounds) -> np.ndarray:
    lo_y, hi_y, lo_x, hi_x = bounds
    h, w = fy.shape
    planes_y = _tap_weight_planes(fy, wy, lo_y, hi_y)
    planes_x = _tap_weight_planes(fx, wx, lo_x, hi_x)
    channels = padded.shape[0]
    out = np.zeros((channels, h, w), dtype=np.float32)
    for top in range(0, h, SHIFT_BLOCK_ROWS):
        rows = slice(top, min(top + SHIFT_BLOCK_ROWS, h))
        n = rows.stop - rows.start
        block = out[:, rows]
        row = np.empty((channels, n, w), dtype=np.float32)
        term = np.empty_like(row)
        for i, a in enumerate(range(lo_y, hi_y + 1)):
            band = padded[:, pad + a + rows.start : pad + a + rows.stop]
            np.multiply(band[:, :, pad + lo_x : pad + lo_x + w], planes_x[0, rows], out=row)
            for j, b in enumerate(range(lo_x + 1, hi_x + 1), start=1):
                np.multiply(band[:, :, pad + b : pad + b + w], planes_x[j, rows], out=term)
                row += term
            row *= planes_y[i, rows]
            block += row
    return out


def _gather(padded, pad, fy, fx, wy, wx) -> np.ndarray:
    h, w = fy.shape
    channels, hp, wp = padded.shape
    rows = np.arange(h)[:, None] + pad + fy - 1
    cols = np.arange(w)[None, :] + pad + fx - 1
    base = (rows * (wp - 3) + cols).reshape(-1)
    wx_stack = np.stack([x.reshape(-1) for x in wx], axis=-1)
    out = np.empty((channels, h * w), dtype=np.float32)
    for c in range(channels):
        # four horizontally adjacent pixels side by side, so each tap row is one contiguous 4-wide gather
        windows = np.stack([padded[c, :, n : wp - 3 + n] for n in range(4)], axis=-1).reshape(-1, 4)
        acc = np.zeros(h * w, dtype=np.float32)
        for m in range(4):
            taps = np.take(windows, base + m * (wp - 3), axis=0)
            acc += wy[m].reshape(-1) * np.einsum("pn,pn->p", taps, wx_stack)
        out[c] = acc
    return out.reshape(channels, h, w)


@register(19)
def jitter(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Each round: dy, dx ~ N(0, sigma^2) per pixel (shared by the channels); J(y,x) = I(y - dy, x - dx)."""
    h, w = image.shape[:2]
    planar = np.ascontiguousarray(np.moveaxis(np.asarray(image), 2, 0), dtype=np.float32)
    for _ in range(JITTER_ROUNDS):
        displacement = sigma * rng.standard_normal((h, w, 2))
        planar = _resample(planar, -displacement[..., 0], -displacement[..., 1], "auto")
    return np.moveaxis(planar, 0, 2).astype(np.float64)
