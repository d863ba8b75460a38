"""Colour distortions: 4 colour diffusion, 5 colour shift, 7 saturation (HSV), 8 saturation (Lab)."""

from __future__ import annotations

import numpy as np

from distortions._common import imgaussfilt, lab2rgb, minmax, rgb2gray, rgb2lab
from distortions.registry import register


@register(4)
def color_diffusion(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Blur a*, b* with sigma 1.5*amount+2, then scale them by ``amount`` (chroma is amplified too)."""
    lab = rgb2lab(image)
    lab[..., 1:] = imgaussfilt(lab[..., 1:], 1.5 * amount + 2) * amount
    return np.clip(lab2rgb(lab), 0.0, 1.0)


def _clip_percentiles(weights: np.ndarray) -> np.ndarray:
    """The generator's ``ps2``: stretch, clip to the 1st/99th order statistics, stretch again."""
    weights = minmax(weights)
    n = weights.size
    # 1-based position round(n*0.99), clamped to 1..n; MATLAB rounds halves away from zero.
    pos = int(np.floor(min(max(n * 0.99, 1.0), n) + 0.5)) - 1
    hi = np.partition(weights.ravel(), pos)[pos]
    lo = 1.0 - np.partition((1.0 - weights).ravel(), pos)[pos]
    return minmax(np.clip(weights, lo, hi))


def edge_weights(image: np.ndarray) -> np.ndarray:
    """Type 5's blend map: blurred gradient magnitude of the grey image, high near edges, in [0, 1]."""
    gy, gx = np.gradient(rgb2gray(image))
    magnitude = minmax(imgaussfilt(np.hypot(gx, gy), 4))
    return _clip_percentiles(np.clip(magnitude, 0.1, 1.0))


def shift_green(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Blend green shifted down by ``dy`` and right by ``dx`` (edge-replicated) into the image near edges."""
    h, w = image.shape[:2]
    green = image[..., 1]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    shifted = green[rows][:, cols]
    weights = edge_weights(image)
    out = image.copy()
    out[..., 1] = weights * shifted + (1.0 - weights) * green
    return out


@register(5)
def color_shift(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Shift green by ``amount`` pixels in a random down-right direction, blended in near edges only."""
    u = rng.random(2)
    norm = np.hypot(u[0], u[1])
    direction = u / norm if norm > 0 else np.array([1.0, 0.0])
    # MATLAB round(): halves away from zero (all values are >= 0 here).
    dy, dx = (int(v) for v in np.floor(direction * amount + 0.5))
    return shift_green(image, dy, dx)


@register(7)
def color_saturation_hsv(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply HSV saturation by ``factor``, unclipped: negative factors overshoot, the wrapper rescales."""
    # In the hexcone every channel is V*(1 - S*w(H)), so scaling S by f with H and V kept is exactly
    # V + f*(channel - V): the rgb2hsv/hsv2rgb round trip without its cost (equal to ~1e-15).
    value = image.max(axis=2, keepdims=True)
    return value + factor * (image - value)


@register(8)
def color_saturation_lab(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply a* and b* by ``factor``, back to RGB, clip."""
    lab = rgb2lab(image)
    lab[..., 1:] *= factor
    return np.clip(lab2rgb(lab), 0.0, 1.0)
