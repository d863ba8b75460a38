"""Noise distortions 11-15, following MATLAB ``imnoise`` / ``rgb2ycbcr`` / ``ycbcr2rgb`` on doubles.

All randomness is drawn from the caller's ``numpy.random.Generator``; MATLAB's streams cannot be
reproduced, only their distributions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from distortions.registry import register

# MATLAB rgb2ycbcr for double images: BT.601 studio range, coefficients scaled to [0,1] data.
_YCBCR_FROM_RGB = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float64
)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64) / 255.0
_RGB_FROM_YCBCR = np.linalg.inv(_YCBCR_FROM_RGB / 255.0)


class GreyDenoiser(Protocol):
    name: str

    def __call__(self, grey: np.ndarray) -> np.ndarray: ...


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    return rgb @ (_YCBCR_FROM_RGB / 255.0).T + _YCBCR_OFFSET


def ycbcr_to_rgb(ycbcr: np.ndarray, clip: bool = True) -> np.ndarray:
    """MATLAB ``ycbcr2rgb`` for doubles, which clips to [0,1]; ``clip=False`` is Octave's unclipped result."""
    rgb = (ycbcr - _YCBCR_OFFSET) @ _RGB_FROM_YCBCR.T
    return np.clip(rgb, 0.0, 1.0) if clip else rgb


def gaussian_noise(image: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """``imnoise(I, 'gaussian', 0, v)``: add N(0, v) to every value, clip to [0,1]."""
    # image + s * n, computed in the noise's own buffer (addition commutes exactly)
    noisy = rng.standard_normal(image.shape)
    noisy *= np.sqrt(variance)
    noisy += image
    return np.clip(noisy, 0.0, 1.0, out=noisy)


@register(11)
def white_noise(image: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """``imnoise(I, 'gaussian', 0, v)`` on the RGB values: white noise of variance ``v``, clipped."""
    return gaussian_noise(image, variance, rng)


@register(12)
def white_noise_color(
    image: np.ndarray, variance: float, rng: np.random.Generator, clip_rgb: bool = True
) -> np.ndarray:
    """Noise in YCbCr, all three planes (Y included, as the generator does despite the type's name).

    ``clip_rgb=False`` reproduces the Octave run behind ``../shared/kadid_reference`` (no clip after the
    inverse transform), for comparison only; MATLAB, and the default, clip.
    """
    noisy = gaussian_noise(rgb_to_ycbcr(image), variance, rng)
    return ycbcr_to_rgb(noisy, clip=clip_rgb)


@register(13)
def impulse_noise(image: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """``imnoise(I, 'salt & pepper', d)`` on each value separately, so impulses are coloured."""
    u = rng.random(image.shape)
    out = image.copy()
    out[u < density / 2] = 0.0
    out[(u >= density / 2) & (u < density)] = 1.0
    return out


@register(14)
def multiplicative_noise(image: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    """``imnoise(I, 'speckle', v)``: I + n*I with n uniform, zero mean, variance v; clipped."""
    # image + n * image with n = s * (u - 0.5), computed in the draws' own buffer
    noisy = rng.random(image.shape)
    noisy -= 0.5
    noisy *= np.sqrt(12.0 * variance)
    noisy *= image
    noisy += image
    return np.clip(noisy, 0.0, 1.0, out=noisy)


def denoise(
    image: np.ndarray, variance: float, rng: np.random.Generator, denoiser: GreyDenoiser | None = None
) -> np.ndarray:
    """Type 15: white noise of variance v (as type 11), then each channel denoised as a grey image.

    The three planes go to the denoiser together (one ``denoise_batch`` call where it has one).
    """
    return denoise_noisy([gaussian_noise(image, variance, rng)], denoiser)[0]


def denoise_noisy(noisy_images: Sequence[np.ndarray], denoiser: GreyDenoiser | None) -> list[np.ndarray]:
    """The second half of type 15 for several noisy HxWxC images: all their planes in one batch."""
    from distortions.denoisers import denoise_planes, load_denoiser

    if denoiser is None:
        denoiser = load_denoiser(None)
    planes = [image[..., c] for image in noisy_images for c in range(image.shape[2])]
    denoised = iter(denoise_planes(denoiser, planes))
    return [np.stack([next(denoised) for _ in range(image.shape[2])], axis=2) for image in noisy_images]


register(15)(denoise)
