"""Compression distortions: 9 JPEG2000 (OpenJPEG, by compression ratio) and 10 JPEG (libjpeg, by quality).

Both round-trip the image through an 8-bit file as MATLAB's ``imwrite``/``imread`` do: the double image is
converted with ``im2uint8`` (round(255*x)), encoded, decoded and returned as double in [0, 1].
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from distortions.registry import register

#: MATLAB imwrite's default 'ReductionLevels' for JPEG 2000
MATLAB_REDUCTION_LEVELS = 4


def to_uint8(image: np.ndarray, rounding: str = "round") -> np.ndarray:
    """Quantise [0,1] doubles to 8 bits as MATLAB's writer does (``round``: round half up, im2uint8).

    ``rounding="floor"`` truncates instead, which is what the Octave/GraphicsMagick writer behind
    ``../shared/kadid_reference`` did; it exists so tests can show the codec path itself is exact.
    """
    if rounding not in ("round", "floor"):
        raise ValueError(f"rounding must be 'round' or 'floor', got {rounding!r}")
    # in one buffer: a fresh temporary per step costs more in page faults than the arithmetic
    scaled = np.clip(image, 0.0, 1.0)
    scaled *= 255.0
    if rounding == "round":
        scaled += 0.5
    return np.floor(scaled, out=scaled).astype(np.uint8)


def _roundtrip(
    image: np.ndarray, fmt: str, rounding: str = "round", **params: object
) -> tuple[np.ndarray, int]:
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image, rounding)).save(buf, format=fmt, **params)
    size = buf.tell()
    buf.seek(0)
    with Image.open(buf) as decoded:
        pixels = np.asarray(decoded.convert("RGB"))
    # v / 255 for each 8-bit code by table: the same doubles, one pass
    return cv2.LUT(pixels, np.arange(256, dtype=np.float64) / 255.0).reshape(pixels.shape), size


def jpeg2000_encode(image: np.ndarray, ratio: float) -> tuple[np.ndarray, int]:
    """Encode ``image`` (HxWx3 float in [0,1]) as lossy JPEG 2000 at ``ratio`` : 1; return (decoded, bytes).

    MATLAB's ``CompressionRatio`` is raw 24-bit size over compressed size, which is exactly OpenJPEG's
    ``rates`` quality mode. MATLAB's lossy mode is the irreversible 9/7 wavelet with the irreversible colour
    transform, one quality layer, no tiling, LRCP progression and 4 reduction (wavelet decomposition)
    levels (``ReductionLevels`` default), i.e. OpenJPEG's ``num_resolutions`` = 5 (its own default is 6).
    """
    # OpenJPEG needs 2^(resolutions-1) <= the smaller side; tiny images get fewer levels
    shortest = max(1, min(image.shape[:2]))
    resolutions = max(1, min(MATLAB_REDUCTION_LEVELS + 1, int(np.log2(shortest)) + 1))
    return _roundtrip(
        image,
        "JPEG2000",
        quality_mode="rates",
        quality_layers=[float(ratio)],
        irreversible=True,
        mct=1,
        num_resolutions=resolutions,
        progression="LRCP",
        no_jp2=False,
    )


def jpeg_encode(image: np.ndarray, quality: int, rounding: str = "round") -> tuple[np.ndarray, int]:
    """Encode ``image`` as baseline JPEG with libjpeg at IJG ``quality``; return (decoded, bytes)."""
    # Pillow's defaults (4:2:0 chroma subsampling, standard IJG tables scaled by quality, islow DCT) are
    # libjpeg's defaults, which is what the reference writer used.
    return _roundtrip(image, "JPEG", rounding, quality=int(quality), subsampling=2, optimize=False)


@register(9)
def jpeg2000(image: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """``imwrite(I, f, 'jp2', 'CompressionRatio', r)`` then ``imread``: lossy JPEG 2000 at ``r`` : 1."""
    return jpeg2000_encode(image, ratio)[0]


@register(10)
def jpeg(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    """``imwrite(I, f, 'jpg', 'Quality', q)`` then ``imread``: baseline JPEG at IJG quality ``q``."""
    return jpeg_encode(image, int(quality))[0]
