"""Blur distortions: 1 gaussian blur, 2 lens blur, 3 motion blur."""

from __future__ import annotations

import numpy as np

from distortions._common import fspecial_disk, fspecial_motion, imfilter, imgaussfilt
from distortions.registry import register


@register(1)
def gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Isotropic Gaussian of std ``sigma`` on every channel (kernel side 2*ceil(2*sigma)+1)."""
    return imgaussfilt(image, sigma)


@register(2)
def lens_blur(image: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Area-weighted disk of ``radius`` pixels (MATLAB ``fspecial('disk')``)."""
    return imfilter(image, fspecial_disk(radius))


@register(3)
def motion_blur(image: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """Line kernel of ``length`` pixels at an integer angle drawn uniformly from 0..180 degrees."""
    angle = int(rng.integers(0, 181))
    return imfilter(image, fspecial_motion(length, angle))
