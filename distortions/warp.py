"""Type 19 jitter: five rounds of per-pixel random displacement, resampled with MATLAB's bicubic ``interp2``.

MATLAB's ``interp2(..., 'bicubic')`` is Keys' cubic convolution with a = -0.5 (not OpenCV's INTER_CUBIC,
a = -0.75, nor a B-spline), so it is implemented here directly, vectorised over all pixels.
"""

from __future__ import annotations

import numpy as np

from distortions.registry import register

JITTER_ROUNDS = 5


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
    h, w, channels = image.shape
    sy = sample_y - np.arange(h, dtype=np.float64)[:, None]
    sx = sample_x - np.arange(w, dtype=np.float64)[None, :]
    fy = np.floor(sy)
    fx = np.floor(sx)
    # taps sit at integer offsets floor(s)-1 .. floor(s)+2 from each pixel
    lo_y, hi_y = int(fy.min()) - 1, int(fy.max()) + 2
    lo_x, hi_x = int(fx.min()) - 1, int(fx.max()) + 2
    pad = max(-lo_y, hi_y, -lo_x, hi_x, 0)
    padded = np.pad(image.astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    # float32 halves the memory traffic; its error (~1e-7) is far below one 8-bit step
    wy = keys_weights((sy - fy).astype(np.float32))
    wx = keys_weights((sx - fx).astype(np.float32))
    span = (hi_y - lo_y + 1) * (hi_x - lo_x + 1)
    if method == "shift" or (method == "auto" and span <= 100):
        out = _sum_of_shifts(
            padded, pad, fy.astype(np.intp), fx.astype(np.intp), wy, wx, (lo_y, hi_y, lo_x, hi_x)
        )
    elif method in ("gather", "auto"):
        out = _gather(padded, pad, fy.astype(np.intp), fx.astype(np.intp), wy, wx)
    else:
        raise ValueError(f"method must be 'auto', 'shift' or 'gather', got {method!r}")
    return out.astype(np.float64)


def _tap_weight_planes(offset: np.ndarray, weights: tuple, lo: int, hi: int) -> np.ndarray:
    """Per absolute tap offset a in lo..hi, each pixel's weight (0 where a is not among its four taps)."""
    planes = np.zeros((hi - lo + 1,) + offset.shape, dtype=np.float32)
    flat = planes.reshape(hi - lo + 1, -1)
    cols = np.arange(offset.size)
    for m in range(4):
        # a pixel's four taps have distinct offsets, so one fancy assignment per tap never collides
        flat[offset.reshape(-1) + (m - 1) - lo, cols] = weights[m].reshape(-1)
    return planes


def _sum_of_shifts(padded, pad, fy, fx, wy, wx, bounds) -> np.ndarray:
    lo_y, hi_y, lo_x, hi_x = bounds
    h, w = fy.shape
    planes_y = _tap_weight_planes(fy, wy, lo_y, hi_y)
    planes_x = _tap_weight_planes(fx, wx, lo_x, hi_x)
    # channel-first, so the per-pixel weight planes broadcast over whole contiguous rows
    planar = np.ascontiguousarray(padded.transpose(2, 0, 1))
    out = np.zeros((padded.shape[2], h, w), dtype=np.float32)
    row = np.empty_like(out)
    term = np.empty_like(out)
    for i, a in enumerate(range(lo_y, hi_y + 1)):
        band = planar[:, pad + a : pad + a + h]
        np.multiply(band[:, :, pad + lo_x : pad + lo_x + w], planes_x[0], out=row)
        for j, b in enumerate(range(lo_x + 1, hi_x + 1), start=1):
            np.multiply(band[:, :, pad + b : pad + b + w], planes_x[j], out=term)
            row += term
        row *= planes_y[i]
        out += row
    return out.transpose(1, 2, 0)


def _gather(padded, pad, fy, fx, wy, wx) -> np.ndarray:
    h, w = fy.shape
    hp, wp, channels = padded.shape
    # four horizontally adjacent pixels side by side, so each of the four tap rows is one 4*C gather
    row_windows = np.ascontiguousarray(np.stack([padded[:, n : wp - 3 + n] for n in range(4)], axis=2))
    row_windows = row_windows.reshape(hp * (wp - 3), 4 * channels)
    rows = np.arange(h)[:, None] + pad + fy - 1
    cols = np.arange(w)[None, :] + pad + fx - 1
    base = (rows * (wp - 3) + cols).reshape(-1)
    wx_stack = np.stack([x.reshape(-1) for x in wx], axis=-1)
    out = np.zeros((h * w, channels), dtype=np.float32)
    for m in range(4):
        taps = np.take(row_windows, base + m * (wp - 3), axis=0).reshape(-1, 4, channels)
        out += wy[m].reshape(-1, 1) * np.einsum("pnc,pn->pc", taps, wx_stack)
    return out.reshape(h, w, channels)


@register(19)
def jitter(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Each round: dy, dx ~ N(0, sigma^2) per pixel (shared by the channels); J(y,x) = I(y - dy, x - dx)."""
    h, w = image.shape[:2]
    rows = np.arange(h, dtype=np.float64)[:, None]
    cols = np.arange(w, dtype=np.float64)[None, :]
    out = np.asarray(image, dtype=np.float64)
    for _ in range(JITTER_ROUNDS):
        displacement = sigma * rng.standard_normal((h, w, 2))
        out = bicubic_sample(out, rows - displacement[..., 0], cols - displacement[..., 1])
    return out
