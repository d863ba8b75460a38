"""Tone distortions: 16 brighten, 17 darken, 18 mean shift, 24 high sharpen, 25 contrast change."""

from __future__ import annotations

import numpy as np

from distortions._common import imgaussfilt, lab2rgb, rgb2lab, spline_curve
from distortions.registry import register


def _midpoint_curve(values: np.ndarray, midpoint: float) -> np.ndarray:
    return spline_curve([0.0, 0.5, 1.0], [0.0, midpoint, 1.0], values)


@register(16)
def brighten(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Tone curve through (0.5, 0.5+amount/2): two thirds on RGB, one third on L* (chroma kept)."""
    midpoint = 0.5 + amount / 2.0
    lab = rgb2lab(image)
    lab[..., 0] = _midpoint_curve(lab[..., 0] / 100.0, midpoint) * 100.0
    via_lab = np.clip(lab2rgb(lab), 0.0, 1.0)
    return (2.0 * _midpoint_curve(image, midpoint) + via_lab) / 3.0


@register(17)
def darken(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Tone curve through (0.5, 0.5-amount/2) on RGB only (the generator leaves its Lab branch off)."""
    return _midpoint_curve(image, 0.5 - amount / 2.0)


@register(18)
def mean_shift(image: np.ndarray, shift: float, rng: np.random.Generator) -> np.ndarray:
    """Add ``shift`` and clip; the wrapper's output stretch turns this into a gain with clipping."""
    return np.clip(image + shift, 0.0, 1.0)


@register(24)
def high_sharpen(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Unsharp mask of L* (Gaussian sigma 3, 13x13), ``amount`` times the detail, threshold 0."""
    lab = rgb2lab(image)
    lightness = lab[..., 0]
    lab[..., 0] = lightness + amount * (lightness - imgaussfilt(lightness, 3.0))
    return np.clip(lab2rgb(lab), 0.0, 1.0)


@register(25)
def contrast_change(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Not-a-knot spline through (0,0), (0.3, 0.25-a/4), (0.5,0.5), (0.7, 0.75+a/4), (1,1)."""
    knots_x = [0.0, 0.3, 0.5, 0.7, 1.0]
    knots_y = [0.0, 0.25 - amount / 4.0, 0.5, 0.75 + amount / 4.0, 1.0]
    return spline_curve(knots_x, knots_y, image)
