"""Type 19 jitter: five rounds of per-pixel random displacement, resampled with MATLAB's bicubic ``interp2``.

MATLAB's ``interp2(..., 'bicubic')`` is Keys' cubic convolution with a = -0.5 (not OpenCV's INTER_CUBIC,
a = -0.75, nor a B-spline), so it is implemented here directly, vectorised over all pixels. Images are
kept channel-first float32 between rounds: per-pixel weights then broadcast over the channels, and
float32's error (~1e-7) is far below one 8-bit step.
"""

from __future__ import annotations

import numpy as np

from distortions.registry import register

JITTER_ROUNDS = 5
#: In ``"auto"`` mode, tap windows of at most this many (rows x columns of offsets) sum each row's four
#: taps left to right, wider ones in pairs (see :func:`bicubic_sample`).
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
    every position it samples, so the border is never darkened or distorted. ``method`` fixes the float32
    summation order of each row's four taps, the only way results can differ (by float32 rounding):
    ``"shift"`` adds them left to right, ``"gather"`` in pairs ((t0 + t1) + (t2 + t3)); ``"auto"`` picks by
    the displacement range. The names are those of two former evaluation strategies whose exact results
    the jitter outputs keep.
    """
    h, w = image.shape[:2]
    planar = np.ascontiguousarray(np.moveaxis(image, 2, 0), dtype=np.float32)
    offset_y = sample_y - np.arange(h, dtype=np.float64)[:, None]
    offset_x = sample_x - np.arange(w, dtype=np.float64)[None, :]
    return np.moveaxis(_resample(planar, offset_y, offset_x, method), 0, 2).astype(np.float64)


class _Scratch:
    """Buffers of one resampling round, kept across jitter's rounds: fresh multi-megabyte arrays cost page
    faults comparable to the arithmetic. ``out`` may be the round's input, which is padded (copied) first."""

    def __init__(self, out: np.ndarray) -> None:
        channels, h, w = out.shape
        self.out = out
        self.taps = np.empty((4, channels, h * w), dtype=np.float32)
        self.index = np.empty(h * w, dtype=np.intp)


def _resample(
    planar: np.ndarray,
    offset_y: np.ndarray,
    offset_x: np.ndarray,
    method: str,
    scratch: _Scratch | None = None,
) -> np.ndarray:
    """Keys-resample a CxHxW float32 image at (y + offset_y, x + offset_x); returns CxHxW float32."""
    if method not in ("auto", "shift", "gather"):
        raise ValueError(f"method must be 'auto', 'shift' or 'gather', got {method!r}")
    fy = np.floor(offset_y)
    fx = np.floor(offset_x)
    # taps sit at integer offsets floor(s)-1 .. floor(s)+2 from each pixel
    bounds = (int(fy.min()) - 1, int(fy.max()) + 2, int(fx.min()) - 1, int(fx.max()) + 2)
    pad = max(-bounds[0], bounds[1], -bounds[2], bounds[3], 0)
    span = (bounds[1] - bounds[0] + 1) * (bounds[3] - bounds[2] + 1)
    pairwise = method == "gather" or (method == "auto" and span > MAX_SHIFT_SPAN)
    padded = np.pad(planar, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    top_left = _top_left_index(fy, fx, pad, padded.shape[2])
    # the floors are spent: their buffers take the fractional parts
    wy = keys_weights(np.subtract(offset_y, fy, out=fy).astype(np.float32))
    wx = keys_weights(np.subtract(offset_x, fx, out=fx).astype(np.float32))
    return _keys_sum(padded, top_left, wy, wx, pairwise, scratch or _Scratch(np.empty_like(planar)))


def _top_left_index(fy: np.ndarray, fx: np.ndarray, pad: int, padded_w: int) -> np.ndarray:
    """Flat index into the padded image of each pixel's top-left tap, row y+fy-1 and column x+fx-1."""
    h, w = fy.shape
    index = fy.astype(np.intp)
    index += np.arange(h)[:, None] + (pad - 1)
    index *= padded_w
    index += fx.astype(np.intp)
    index += np.arange(w) + (pad - 1)
    return index.reshape(-1)


def _keys_sum(padded, top_left, wy, wx, pairwise: bool, scratch: _Scratch) -> np.ndarray:
    """sum_m wy[m] * (sum_n wx[n] * tap[m, n]) per pixel and channel, always in the same float32 order.

    Each of the 16 taps is one gather of all channels at once from the flattened padded image; the tap
    (m, n) of every pixel lies m rows and n columns after its top-left tap, so one index array serves all
    16 by a constant shift. Weights are per pixel and broadcast over the channels; results go to
    ``scratch.out``.
    """
    channels, _, padded_w = padded.shape
    h, w = wy[0].shape
    flat = padded.reshape(channels, -1)
    index, taps = scratch.index, scratch.taps
    out = scratch.out.reshape(channels, h * w)
    out.fill(0.0)
    for m in range(4):
        for n in range(4):
            # np.take copies a non-contiguous source, so the index moves, not the source; mode="clip"
            # (indices are in range anyway) lets it write straight into ``out`` without a buffer
            np.add(top_left, m * padded_w + n, out=index)
            np.take(flat, index, axis=1, out=taps[n], mode="clip")
            taps[n] *= wx[n].reshape(-1)
        if pairwise:
            taps[0] += taps[1]
            taps[2] += taps[3]
            taps[0] += taps[2]
        else:
            taps[0] += taps[1]
            taps[0] += taps[2]
            taps[0] += taps[3]
        taps[0] *= wy[m].reshape(-1)
        out += taps[0]
    return scratch.out


@register(19)
def jitter(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Each round: dy, dx ~ N(0, sigma^2) per pixel (shared by the channels); J(y,x) = I(y - dy, x - dx)."""
    h, w = image.shape[:2]
    # a copy that the rounds overwrite in place (each round pads, i.e. copies, its input first)
    planar = np.array(np.moveaxis(np.asarray(image), 2, 0), dtype=np.float32, order="C")
    scratch = _Scratch(planar)
    offsets = np.empty((h, w, 2))
    for _ in range(JITTER_ROUNDS):
        # the draws of rng.standard_normal((h, w, 2)); the sample offset -(sigma * n) is exactly n * -sigma
        rng.standard_normal(out=offsets)
        offsets *= -sigma
        planar = _resample(planar, offsets[..., 0], offsets[..., 1], "auto", scratch)
    return np.moveaxis(planar, 0, 2).astype(np.float64)
