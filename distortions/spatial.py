"""Spatial distortions: 20 non-eccentricity patch, 21 pixelate, 23 colour block."""

from __future__ import annotations

import math

import numpy as np

from distortions._common import require_size
from distortions.registry import register

PATCH = 16
PATCH_RADIUS = 16
BLOCK = 32


def _round_half_up(v: float) -> int:
    # MATLAB round() for the non-negative and small negative values used here: halves away from zero.
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


@register(20)
def non_eccentricity_patch(image: np.ndarray, moves: float, rng: np.random.Generator) -> np.ndarray:
    """Copy a 16x16 patch to a spot at most 8 px away, ``moves`` times, each copy from the current image.

    Per move four uniforms are drawn in the order u1 (source x), u2 (source y), u3 (dx), u4 (dy).
    """
    require_size(image, 2 * PATCH_RADIUS + PATCH, 2 * PATCH_RADIUS + PATCH, "non_eccentricity_patch")
    h, w = image.shape[:2]
    out = image.copy()
    draws = rng.random((int(moves), 4))
    for u1, u2, u3, u4 in draws:
        # 1-based MATLAB corners, converted to 0-based slices when indexing.
        x0 = _round_half_up(u1 * (w - PATCH - 2 * PATCH_RADIUS)) + PATCH_RADIUS
        y0 = _round_half_up(u2 * (h - PATCH - 2 * PATCH_RADIUS)) + PATCH_RADIUS
        x1 = _round_half_up((u3 - 0.5) * PATCH_RADIUS + x0)
        y1 = _round_half_up((u4 - 0.5) * PATCH_RADIUS + y0)
        patch = out[y0 - 1 : y0 - 1 + PATCH, x0 - 1 : x0 - 1 + PATCH].copy()
        out[y1 - 1 : y1 - 1 + PATCH, x1 - 1 : x1 - 1 + PATCH] = patch
    return out


def _nearest_indices(out_len: int, in_len: int, scale: float) -> np.ndarray:
    """MATLAB ``imresize`` nearest rule: output centre i maps to i/scale + 0.5*(1-1/scale) (1-based)."""
    i = np.arange(1, out_len + 1, dtype=np.float64)
    u = i / scale + 0.5 * (1.0 - 1.0 / scale)
    return np.clip(np.floor(u + 0.5).astype(np.int64), 1, in_len) - 1


def _resize_nearest(image: np.ndarray, out_h: int, out_w: int, scale_h: float, scale_w: float) -> np.ndarray:
    h, w = image.shape[:2]
    rows = _nearest_indices(out_h, h, scale_h)
    cols = _nearest_indices(out_w, w, scale_w)
    return image[rows][:, cols]


@register(21)
def pixelate(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Nearest-neighbour downscale by z = 0.95 - strength**0.6 (sizes rounded up), then back to full size."""
    h, w = image.shape[:2]
    z = 0.95 - strength**0.6
    low_h, low_w = math.ceil(z * h), math.ceil(z * w)
    low = _resize_nearest(image, low_h, low_w, z, z)
    return _resize_nearest(low, h, w, h / low_h, w / low_w)


@register(23)
def color_block(image: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    """Paint ``count`` opaque 32x32 squares of uniform random colour at uniform random positions.

    Draw order per block: colour (3 uniforms), x, y. The generator's corner x = u*(W-32) is read as a
    0-based offset and rounded to the nearest pixel (halves up), so every square is whole and inside.
    """
    require_size(image, BLOCK, BLOCK, "color_block")
    h, w = image.shape[:2]
    out = image.copy()
    for _ in range(int(count)):
        colour = rng.random(3)
        x = int(np.floor(rng.random() * (w - BLOCK) + 0.5))
        y = int(np.floor(rng.random() * (h - BLOCK) + 0.5))
        out[y : y + BLOCK, x : x + BLOCK] = colour
    return out
