"""Image-processing building blocks that behave like the MATLAB functions the KADID generator calls.

Everything works on float64 arrays (HxW or HxWxC). Filtering is correlation with a centred kernel, same-size
output and replicate border (MATLAB ``imfilter(..., 'replicate')``), done by OpenCV.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy.interpolate import CubicSpline

_EPS = np.finfo(np.float64).eps

# sRGB primaries with a D65 white, and MATLAB's whitepoint('d65') (four decimals, as MATLAB returns it).
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE_D65 = np.array([0.9504, 1.0, 1.0888])


def imfilter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate every channel with ``kernel`` (odd sides), replicate border, same size."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.shape == (1, 1):
        return image * kernel[0, 0]
    src = np.ascontiguousarray(image, dtype=np.float64)
    return _per_channel(
        src, lambda plane: cv2.filter2D(plane, cv2.CV_64F, kernel, borderType=cv2.BORDER_REPLICATE)
    )


def _per_channel(image: np.ndarray, fn) -> np.ndarray:
    # OpenCV handles at most 4 channels per call; a plane at a time keeps any channel count working.
    if image.ndim == 2:
        return fn(image)
    return np.stack([fn(np.ascontiguousarray(image[..., c])) for c in range(image.shape[2])], axis=2)


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """MATLAB ``imgaussfilt`` default kernel: side 2*ceil(2*sigma)+1, normalised to sum 1."""
    half = int(math.ceil(2 * sigma))
    x = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


#: Above this kernel side a 2-D correlation through OpenCV's DFT path beats two direct 1-D passes.
_DFT_MIN_SIDE = 31


def imgaussfilt(image: np.ndarray, sigma: float) -> np.ndarray:
    """MATLAB ``imgaussfilt(I, sigma)``: isotropic Gaussian, replicate border, each plane separately.

    The square kernel is the outer product of the normalised 1-D kernel, so small kernels run as two 1-D
    passes; large ones (colour diffusion's sigma up to 20) as one 2-D correlation, which OpenCV does by DFT.
    """
    g = gaussian_kernel_1d(sigma)
    src = np.ascontiguousarray(image, dtype=np.float64)
    if g.size >= _DFT_MIN_SIDE:
        square = np.outer(g, g)
        return _per_channel(
            src, lambda plane: cv2.filter2D(plane, cv2.CV_64F, square, borderType=cv2.BORDER_REPLICATE)
        )
    return _per_channel(
        src, lambda plane: cv2.sepFilter2D(plane, cv2.CV_64F, g, g, borderType=cv2.BORDER_REPLICATE)
    )


def _quarter_disk_area(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Area of the disk of ``radius`` (centred at 0) inside [0, x] x [0, y], for x, y >= 0."""
    x = np.minimum(x, radius)
    y = np.minimum(y, radius)
    r2 = radius * radius
    # Up to x_full the circle lies above height y, so the strip is a full rectangle.
    x_full = np.sqrt(np.maximum(r2 - y * y, 0.0))

    def circle_integral(t: np.ndarray) -> np.ndarray:
        t = np.clip(t / radius, -1.0, 1.0)
        return 0.5 * r2 * (t * np.sqrt(1.0 - t * t) + np.arcsin(t))

    rect = y * np.minimum(x, x_full)
    arc = np.where(x > x_full, circle_integral(x) - circle_integral(x_full), 0.0)
    return rect + arc


def disk_cell_areas(radius: float) -> np.ndarray:
    """Exact area inside the circle of ``radius`` of each unit cell of the (2*ceil(r-0.5)+1)^2 grid."""
    crad = int(math.ceil(radius - 0.5))
    c = np.arange(-crad, crad + 1, dtype=np.float64)
    y, x = np.meshgrid(c, c, indexing="ij")

    def signed_area(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        return np.sign(px) * np.sign(py) * _quarter_disk_area(np.abs(px), np.abs(py), radius)

    return (
        signed_area(x + 0.5, y + 0.5)
        - signed_area(x - 0.5, y + 0.5)
        - signed_area(x + 0.5, y - 0.5)
        + signed_area(x - 0.5, y - 0.5)
    )


def fspecial_disk(radius: float) -> np.ndarray:
    """MATLAB ``fspecial('disk', r)``: each cell weighted by the area of its unit square inside the circle."""
    area = disk_cell_areas(radius)
    return area / area.sum()


def fspecial_motion(length: float, angle_deg: float) -> np.ndarray:
    """MATLAB ``fspecial('motion', len, theta)``: a one-pixel-wide line of ``length`` at ``angle_deg``.

    Built on one quadrant: each cell gets 1 - (distance to the segment), the segment ending at half-length
    (len-1)/2 from the centre; the quadrant is mirrored through the centre and flipped so the line runs
    counter-clockwise from the horizontal axis. Length 1 gives the 1x1 kernel [1].
    """
    length = max(1.0, float(length))
    half = (length - 1.0) / 2.0
    phi = math.radians(float(angle_deg) % 180.0)
    cosphi, sinphi = math.cos(phi), math.sin(phi)
    xsign = 1.0 if cosphi > 0 else (-1.0 if cosphi < 0 else 0.0)
    width = 1.0
    # The eps terms keep the quadrant's extent exact at 0 and 90 degrees.
    sx = math.trunc(half * cosphi + width * xsign - length * _EPS)
    sy = math.trunc(half * sinphi + width - length * _EPS)
    step = -1 if xsign < 0 else 1
    xs = np.arange(0, sx + step, step, dtype=np.float64) if sx * step >= 0 else np.zeros(1)
    ys = np.arange(0, sy + 1, dtype=np.float64)
    x, y = np.meshgrid(xs, ys)
    dist = y * cosphi - x * sinphi
    rad = np.hypot(x, y)
    beyond_end = (rad >= half) & (np.abs(dist) <= width)
    along = half - np.abs((x + dist * sinphi) / cosphi)
    dist = np.where(beyond_end, np.sqrt(dist**2 + along**2), dist)
    weight = np.maximum(width + _EPS - np.abs(dist), 0.0)
    rows, cols = weight.shape
    kernel = np.zeros((2 * rows - 1, 2 * cols - 1))
    kernel[:rows, :cols] = weight[::-1, ::-1]
    kernel[rows - 1 :, cols - 1 :] = weight
    kernel /= kernel.sum() + _EPS * length * length
    if cosphi > 0:
        kernel = kernel[::-1, :]
    return np.ascontiguousarray(kernel)


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    """sRGB decoding; odd-extended so out-of-gamut negatives stay monotone instead of becoming NaN."""
    a = np.abs(v)
    out = a + 0.055
    out /= 1.055
    np.power(out, 2.4, out=out)
    np.divide(a, 12.92, out=out, where=a <= 0.04045)
    return np.copysign(out, v, out=out)


def _linear_to_srgb(v: np.ndarray) -> np.ndarray:
    """sRGB encoding, odd-extended like :func:`_srgb_to_linear`; values above 1 are extrapolated."""
    a = np.abs(v)
    out = np.power(a, 1.0 / 2.4)
    out *= 1.055
    out -= 0.055
    np.multiply(a, 12.92, out=out, where=a <= 0.0031308)
    return np.copysign(out, v, out=out)


def _apply_matrix(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Per-pixel ``matrix @ colour`` (3x3, or 3x4 with an offset column), in double, by OpenCV."""
    shape = image.shape
    flat = np.ascontiguousarray(image, dtype=np.float64).reshape(-1, 1, 3)
    return cv2.transform(flat, matrix).reshape(shape)


_DELTA = 6.0 / 29.0
# f(X/Xn, Y/Yn, Z/Zn) -> (L*, a*, b*) and back, as affine maps on the colour axis.
_F_TO_LAB = np.array([[0.0, 116.0, 0.0, -16.0], [500.0, -500.0, 0.0, 0.0], [0.0, 200.0, -200.0, 0.0]])
_LAB_TO_F = np.array(
    [
        [1 / 116.0, 1 / 500.0, 0.0, 16.0 / 116.0],
        [1 / 116.0, 0.0, 0.0, 16.0 / 116.0],
        [1 / 116.0, 0.0, -1 / 200.0, 16.0 / 116.0],
    ]
)


def rgb2lab(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2lab`` for double input: sRGB (IEC 61966-2-1) with a D65 white, L* in 0..100."""
    t = _apply_matrix(_srgb_to_linear(rgb), _RGB_TO_XYZ / _WHITE_D65[:, None])
    f = np.cbrt(t)
    linear = t <= _DELTA**3
    np.add(t / (3 * _DELTA**2), 4.0 / 29.0, out=f, where=linear)
    return _apply_matrix(f, _F_TO_LAB)


def lab2rgb(lab: np.ndarray) -> np.ndarray:
    """MATLAB ``lab2rgb`` for double input (inverse of :func:`rgb2lab`); the result is not clipped."""
    f = _apply_matrix(lab, _LAB_TO_F)
    t = f * f
    t *= f
    linear = f <= _DELTA
    np.multiply(f - 4.0 / 29.0, 3 * _DELTA**2, out=t, where=linear)
    return _linear_to_srgb(_apply_matrix(t, _XYZ_TO_RGB * _WHITE_D65[None, :]))


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """Hexcone HSV (MATLAB ``rgb2hsv``): H in [0, 1), S = (max-min)/max, V = max; grey gets H = S = 0."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    delta = v - rgb.min(axis=-1)
    safe = np.where(delta > 0, delta, 1.0)
    h = np.where(v == r, (g - b) / safe, np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1.0), 0.0)
    return np.stack([h, s, v], axis=-1)


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """Hexcone HSV -> RGB (MATLAB ``hsv2rgb``), unclipped so that S outside [0, 1] extrapolates linearly."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    h6 = 6.0 * h
    sector = np.floor(h6).astype(np.int64) % 6
    frac = h6 - np.floor(h6)
    p = v * (1 - s)
    q = v * (1 - s * frac)
    t = v * (1 - s * (1 - frac))
    choices_r = [v, q, p, p, t, v]
    choices_g = [t, v, v, q, p, p]
    choices_b = [p, p, t, v, v, q]
    conds = [sector == k for k in range(6)]
    return np.stack([np.select(conds, ch) for ch in (choices_r, choices_g, choices_b)], axis=-1)


def rgb2gray(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2gray`` weights (ITU-R BT.601 luma)."""
    return rgb @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def spline_curve(knots_x: list[float], knots_y: list[float], values: np.ndarray) -> np.ndarray:
    """MATLAB ``spline`` (not-a-knot ends) through the knots, evaluated at ``values`` and clipped to [0, 1].

    With three knots not-a-knot is the interpolating parabola (as in MATLAB), evaluated directly.
    """
    if len(knots_x) == 3:
        coeffs = np.polyfit(np.asarray(knots_x, float), np.asarray(knots_y, float), 2)
        curve = (coeffs[0] * values + coeffs[1]) * values + coeffs[2]
    else:
        spline = CubicSpline(np.asarray(knots_x, float), np.asarray(knots_y, float), bc_type="not-a-knot")
        curve = spline(values)
    return np.clip(curve, 0.0, 1.0)


def minmax(a: np.ndarray) -> np.ndarray:
    """One global linear map to [0, 1] (flat arrays are returned unchanged)."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else a.copy()


def require_size(image: np.ndarray, min_h: int, min_w: int, what: str) -> None:
    h, w = image.shape[:2]
    if h < min_h or w < min_w:
        raise ValueError(f"{what} needs an image of at least {min_w}x{min_h} pixels (WxH), got {w}x{h}")
