"""The offline fallback encoder's features: colour and texture statistics (NOT the paper's encoder)."""

from __future__ import annotations

import numpy as np

#: the offline fallback encoder's name (no weights, no download; NOT the paper's encoder)
STATS_ENCODER = "colour-texture"
STATS_SIDE = 128
STATS_PREPROCESSING = (
    f"resized (INTER_AREA) to {STATS_SIDE} px on the longer side; CIE Lab joint histogram 4x6x6, Lab moments, "
    "uniform LBP (P=8,R=1 and P=16,R=2), gradient orientation and magnitude histograms"
)
STATS_WEIGHTS = "no learned weights (hand-crafted colour and texture statistics)"
#: relative weight of each block (each block is L2-normalised first)
_STATS_BLOCK_WEIGHTS = (0.5, 0.6, 1.0, 1.0, 0.8, 0.8)


def colour_texture_features(image: np.ndarray) -> np.ndarray:
    """The offline fallback embedding of one float32 RGB image in [0, 1] (any size >= 8 px).

    A fallback for machines without pretrained weights, NOT the paper's encoder: it finds images that share
    colours and textures (crops and flips of one photo), not semantic content.

    1. Resize so the longer side is 128 px (crops and rescales of one scene then look alike).
    2. Colour: a 4x6x6 joint histogram of CIE Lab, and each Lab channel's mean, spread and skew.
    3. Texture: uniform local binary pattern histograms at two radii, and magnitude-weighted gradient
       orientation (12 unsigned bins) and log-magnitude (8 bins) histograms of the grey image.
    4. Square-root (Hellinger) every histogram, L2-normalise every block, weight and concatenate.
    """
    import cv2
    from skimage.feature import local_binary_pattern

    h, w = image.shape[:2]
    scale = STATS_SIDE / max(h, w)
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small = cv2.resize(np.asarray(image, dtype=np.float32), size, interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(np.clip(small, 0.0, 1.0), cv2.COLOR_RGB2Lab).reshape(-1, 3).astype(np.float64)
    joint, _ = np.histogramdd(lab, bins=(4, 6, 6), range=((0, 100), (-80, 80), (-80, 80)))
    mean, spread = lab.mean(axis=0), lab.std(axis=0)
    skew = np.cbrt(((lab - mean) ** 3).mean(axis=0))
    moments = np.concatenate([mean / [100, 80, 80], spread / [50, 40, 40], skew / [50, 40, 40]])
    grey = np.rint(small @ np.array([0.299, 0.587, 0.114], np.float32) * 255).astype(np.uint8)
    lbp = []
    for points, radius in ((8, 1), (16, 2)):
        codes = local_binary_pattern(grey, points, radius, "uniform").astype(np.int64).ravel()
        lbp.append(np.bincount(codes, minlength=points + 2).astype(np.float64))
    g = grey.astype(np.float64) / 255.0
    gx, gy = cv2.Sobel(g, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_64F, 0, 1, ksize=3)
    magnitude, angle = np.hypot(gx, gy).ravel(), np.mod(np.arctan2(gy, gx), np.pi).ravel()
    orientation = np.bincount(np.minimum((angle / np.pi * 12).astype(np.int64), 11), magnitude, 12)
    strength, _ = np.histogram(np.log1p(10 * magnitude), bins=8, range=(0.0, float(np.log1p(40.0))))
    hists = [joint.ravel(), *lbp, orientation, strength.astype(np.float64)]
    blocks = [np.sqrt(hh / max(hh.sum(), 1e-12)) for hh in hists]
    blocks.insert(1, moments)
    return np.concatenate(
        [wt * b / max(float(np.linalg.norm(b)), 1e-12) for wt, b in zip(_STATS_BLOCK_WEIGHTS, blocks)]
    ).astype(np.float32)
