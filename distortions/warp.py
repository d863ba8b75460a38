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


def bicubic_sample(image: np.ndarray, sample_y: np.ndarray, sample_x: np.ndarray) -> np.ndarray:
    """Keys bicubic interpolation of ``image`` (HxWxC) at float pixel positions (0-based), same-shape fields.

    The image is extended by edge replication, which is what the generator's replicate padding provides for
    every position it samples, so the border is never darkened or distorted.
    """
    h, w, channels = image.shape
    reach = max(
        float(np.max(np.abs(sample_y - np.arange(h)[:, None]), initial=0.0)),
        float(np.max(np.abs(sample_x - np.arange(w)[None, :]), initial=0.0)),
    )
    pad = int(np.ceil(reach)) + 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    hp, wp = padded.shape[:2]
    # Four horizontally adjacent pixels side by side, so each of the four tap rows is one contiguous
    # 4*C gather. float32 halves the memory traffic; its error (~1e-7) is far below one 8-bit step and the
    # type is random anyway.
    row_windows = np.ascontiguousarray(
        np.stack([padded[:, n : wp - 3 + n] for n in range(4)], axis=2), dtype=np.float32
    ).reshape(hp * (wp - 3), 4 * channels)
    sy = (sample_y + pad).reshape(-1)
    sx = (sample_x + pad).reshape(-1)
    iy = np.floor(sy)
    ix = np.floor(sx)
    wy = keys_weights((sy - iy).astype(np.float32))
    wx = np.stack(keys_weights((sx - ix).astype(np.float32)), axis=-1)
    base = (iy.astype(np.intp) - 1) * (wp - 3) + (ix.astype(np.intp) - 1)
    out = np.zeros((h * w, channels), dtype=np.float32)
    for m in range(4):
        taps = np.take(row_windows, base + m * (wp - 3), axis=0).reshape(-1, 4, channels)
        out += wy[m][:, None] * np.einsum("pnc,pn->pc", taps, wx)
    return out.reshape(h, w, channels).astype(np.float64)


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
