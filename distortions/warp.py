"""Type 19 jitter: five rounds of per-pixel random displacement, resampled with MATLAB's bicubic ``interp2``.

MATLAB's ``interp2(..., 'bicubic')`` is Keys' cubic convolution with a = -0.5 (not OpenCV's INTER_CUBIC,
a = -0.75, nor a B-spline), so it is implemented here directly, vectorised over all pixels. Images are
kept channel-first float32 between rounds: per-pixel weights then broadcast over the channels, and
float32's error (~1e-7) is far below one 8-bit step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


def _compiled_round() -> tuple[Callable[..., bool], Callable[..., None]] | None:
    """The numba version of one jitter round (the summation-order choice, the resampling), compiled on first
    use; None without numba (then the numpy path runs).

    It is the same computation as :func:`_resample` with ``method="auto"``, pixel by pixel: the float32
    operations and their order are those written out in :func:`keys_weights` and :func:`_keys_sum`
    (``fastmath`` off, so no reassociation or fused multiply-adds), and a clamped row/column index reads the
    same value as the edge-replicated padding. numba is optional: ``pip install 'reshape-iqa[fast]'``.
    """
    global _COMPILED, _keys_weights_inline
    if _COMPILED is None:
        try:
            import numba
        except ImportError:
            _COMPILED = False
        else:
            # the loops call the weights through this module name: compiled, they inline the compiled one
            _keys_weights_inline = numba.njit(cache=True, inline="always")(_keys_weights_scalar)
            _COMPILED = (
                numba.njit(cache=True, nogil=True)(_pairwise_loops),
                numba.njit(cache=True, nogil=True)(_keys_round_loops),
            )
    return _COMPILED or None


_COMPILED: Any = None


def _keys_weights_scalar(offset: float) -> tuple[Any, Any, Any, Any, int]:  # pragma: no cover - compiled
    """:func:`keys_weights` of one position's fractional part, in float32, and the position's floor."""
    floor = np.floor(offset)
    t = np.float32(offset - floor)
    t2 = t * t
    t3 = t2 * t
    half = np.float32(0.5)
    return (
        half * ((-t3 + np.float32(2.0) * t2) - t),
        half * ((np.float32(3.0) * t3 - np.float32(5.0) * t2) + np.float32(2.0)),
        half * ((np.float32(-3.0) * t3 + np.float32(4.0) * t2) + t),
        half * (t3 - t2),
        int(floor),
    )


_keys_weights_inline = _keys_weights_scalar


def _keys_round_loops(planar, offsets, pairwise, out) -> None:  # pragma: no cover - runs compiled
    """out[c, y, x] = Keys sample of ``planar`` (CxHxW float32) at (y + offsets[y, x, 0], x + offsets[y, x, 1])."""
    channels, h, w = planar.shape
    for y in range(h):
        for x in range(w):
            wy0, wy1, wy2, wy3, fy = _keys_weights_inline(offsets[y, x, 0])
            wx0, wx1, wx2, wx3, fx = _keys_weights_inline(offsets[y, x, 1])
            r0 = min(max(y + fy - 1, 0), h - 1)
            r1 = min(max(y + fy, 0), h - 1)
            r2 = min(max(y + fy + 1, 0), h - 1)
            r3 = min(max(y + fy + 2, 0), h - 1)
            c0 = min(max(x + fx - 1, 0), w - 1)
            c1 = min(max(x + fx, 0), w - 1)
            c2 = min(max(x + fx + 1, 0), w - 1)
            c3 = min(max(x + fx + 2, 0), w - 1)
            for c in range(channels):
                acc = np.float32(0.0)
                for m in range(4):
                    r = r0 if m == 0 else r1 if m == 1 else r2 if m == 2 else r3
                    wm = wy0 if m == 0 else wy1 if m == 1 else wy2 if m == 2 else wy3
                    p0 = planar[c, r, c0] * wx0
                    p1 = planar[c, r, c1] * wx1
                    p2 = planar[c, r, c2] * wx2
                    p3 = planar[c, r, c3] * wx3
                    row_sum = (p0 + p1) + (p2 + p3) if pairwise else ((p0 + p1) + p2) + p3
                    acc = acc + row_sum * wm
                out[c, y, x] = acc


def _pairwise_loops(offsets) -> bool:  # pragma: no cover - runs compiled
    """``method="auto"``'s choice for these offsets: rows sum in pairs when the taps span > MAX_SHIFT_SPAN
    (the bounds of :func:`_resample`: floors of the extreme offsets, taps one before and two after)."""
    lo_y = hi_y = offsets[0, 0, 0]
    lo_x = hi_x = offsets[0, 0, 1]
    for y in range(offsets.shape[0]):
        for x in range(offsets.shape[1]):
            lo_y = min(lo_y, offsets[y, x, 0])
            hi_y = max(hi_y, offsets[y, x, 0])
            lo_x = min(lo_x, offsets[y, x, 1])
            hi_x = max(hi_x, offsets[y, x, 1])
    span = (np.floor(hi_y) - np.floor(lo_y) + 4) * (np.floor(hi_x) - np.floor(lo_x) + 4)
    return span > MAX_SHIFT_SPAN


@register(19)
def jitter(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Each round: dy, dx ~ N(0, sigma^2) per pixel (shared by the channels); J(y,x) = I(y - dy, x - dx)."""
    return jitter_rounds(image, sigma, rng, compiled=True)


def jitter_rounds(
    image: np.ndarray, sigma: float, rng: np.random.Generator, compiled: bool = True
) -> np.ndarray:
    """:func:`jitter`, with the numba round where numba is installed and ``compiled``, else numpy's (the
    same numbers either way)."""
    h, w = image.shape[:2]
    # a copy that the rounds overwrite in place (each round pads, i.e. copies, its input first)
    planar = np.array(np.moveaxis(np.asarray(image), 2, 0), dtype=np.float32, order="C")
    loops = _compiled_round() if compiled else None
    spare = np.empty_like(planar) if loops else None
    scratch = None if loops else _Scratch(planar)
    offsets = np.empty((h, w, 2))
    for _ in range(JITTER_ROUNDS):
        # the draws of rng.standard_normal((h, w, 2)); the sample offset -(sigma * n) is exactly n * -sigma
        rng.standard_normal(out=offsets)
        offsets *= -sigma
        if loops:
            pairwise_loops, round_loops = loops
            round_loops(planar, offsets, pairwise_loops(offsets), spare)
            planar, spare = spare, planar
        else:
            planar = _resample(planar, offsets[..., 0], offsets[..., 1], "auto", scratch)
    return np.moveaxis(planar, 0, 2).astype(np.float64)
