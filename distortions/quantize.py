"""Quantisation distortions: 6 colour quantisation (``rgb2ind`` + ``ind2rgb``) and 22 multi-level Otsu
quantisation (``multithresh`` + ``imquantize``), as in the reference generator."""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from distortions.registry import register

HIST_BITS = 5  # colour-cube resolution for the variance cut (32 levels per axis, as in Wu's quantiser)
OTSU_BINS = 256  # MATLAB multithresh's histogram size


def _to_uint8(image: np.ndarray) -> np.ndarray:
    # floor(clip(x) * 255 + 0.5), in one buffer
    scaled = np.clip(image, 0.0, 1.0)
    scaled *= 255.0
    scaled += 0.5
    return np.floor(scaled, out=scaled).astype(np.uint8)


def colour_moments_table(pixels_u8: np.ndarray) -> np.ndarray:
    """Summed-volume table of the colour cube at ``HIST_BITS`` per axis: any box's (count, sum r, g, b,
    sum of squares) comes from its 8 corners."""
    side = 1 << HIST_BITS
    cells = side**3
    # channel planes (one row: OpenCV splits a single long row fastest)
    planes = cv2.split(np.ascontiguousarray(pixels_u8).reshape(1, -1, 3))
    shift = 8 - HIST_BITS
    flat = (planes[0] >> shift).astype(np.intp).reshape(-1)
    for plane in planes[1:]:
        flat *= side
        flat += (plane >> shift).reshape(-1)
    # Each channel's value v/255 and its square come from 256-entry tables (the same doubles as computing
    # them per pixel) into two reused buffers; squares are summed r, g, b in that order, as the row sum of
    # three that this replaces did. Fewer multi-megabyte temporaries: their page faults cost more than
    # the arithmetic.
    codes = np.arange(256, dtype=np.float64) / 255.0
    squares = codes**2
    weights = np.empty(planes[0].shape, dtype=np.float64)
    square_sums = np.empty_like(weights)
    columns = [np.bincount(flat, minlength=cells).astype(np.float64)]
    for plane in planes:
        columns.append(np.bincount(flat, cv2.LUT(plane, codes, dst=weights).reshape(-1), minlength=cells))
    cv2.LUT(planes[0], squares, dst=square_sums)
    for plane in planes[1:]:
        square_sums += cv2.LUT(plane, squares, dst=weights)
    columns.append(np.bincount(flat, square_sums.reshape(-1), minlength=cells))
    moments = np.stack(columns, axis=-1).reshape(side, side, side, 5)
    table = np.zeros((side + 1, side + 1, side + 1, 5))
    table[1:, 1:, 1:] = moments.cumsum(0).cumsum(1).cumsum(2)
    return table


def _box_moments(table: np.ndarray, lo: list, hi: list) -> np.ndarray:
    """Moments of boxes [lo, hi) (entries may be index arrays, broadcast together)."""
    total = 0.0
    for corner in range(8):
        idx = tuple(hi[a] if corner >> a & 1 else lo[a] for a in range(3))
        sign = -1.0 if (3 - bin(corner).count("1")) % 2 else 1.0
        total = total + sign * table[idx]
    return total


def _sse(m: np.ndarray) -> float:
    return float(m[4] - (m[1:4] @ m[1:4]) / m[0]) if m[0] > 0 else 0.0


def _best_cut(table: np.ndarray, lo: list, hi: list) -> tuple[float, int, int] | None:
    """(gain, axis, position) of the cut that most reduces the box's squared error, or None."""
    whole = _box_moments(table, lo, hi)
    best: tuple[float, int, int] | None = None
    for axis in range(3):
        if hi[axis] - lo[axis] < 2:
            continue
        cuts = np.arange(lo[axis] + 1, hi[axis])
        upper = list(hi)
        upper[axis] = cuts
        low = _box_moments(table, lo, upper)
        high = whole - low
        valid = (low[:, 0] > 0) & (high[:, 0] > 0)
        if not valid.any():
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            # minimising the halves' SSE = maximising sum |S|^2 / N over the two halves
            score = (low[:, 1:4] ** 2).sum(1) / low[:, 0] + (high[:, 1:4] ** 2).sum(1) / high[:, 0]
        score = np.where(valid, score, -np.inf)
        k = int(np.argmax(score))
        gain = float(score[k]) - float(whole[1:4] @ whole[1:4]) / whole[0]
        if best is None or gain > best[0]:
            best = (gain, axis, int(cuts[k]))
    return best


def _cut_boxes(table: np.ndarray, n_colors: int) -> list[tuple[list, list]]:
    """Cut the box with the largest squared error (that can be cut) until there are ``n_colors``."""
    side = 1 << HIST_BITS
    boxes = [([0, 0, 0], [side, side, side])]
    errors = [_sse(_box_moments(table, *boxes[0]))]
    while len(boxes) < n_colors:
        chosen = None
        for i in np.argsort(errors)[::-1]:
            if errors[i] <= 0:
                break
            cut = _best_cut(table, *boxes[int(i)])
            if cut is not None:
                chosen = (int(i), cut)
                break
        if chosen is None:
            break
        i, (_, axis, position) = chosen
        lo, hi = boxes.pop(i)
        errors.pop(i)
        low_hi = list(hi)
        low_hi[axis] = position
        high_lo = list(lo)
        high_lo[axis] = position
        for part in ((lo, low_hi), (high_lo, hi)):
            boxes.append(part)
            errors.append(_sse(_box_moments(table, *part)))
    return boxes


def minimum_variance_palette(pixels_u8: np.ndarray, n_colors: int) -> np.ndarray:
    """Colour map of at most ``n_colors`` (float [0,1], Kx3) by recursive minimum-variance box cutting.

    The RGB cube is histogrammed at ``HIST_BITS`` per axis. The box with the largest squared error is cut
    along the axis and position that minimise the summed squared error of the two halves, until there are
    ``n_colors`` boxes or no box can be cut. Each colour is the mean of the pixels in its box.
    """
    table = colour_moments_table(pixels_u8)
    moments = (_box_moments(table, *box) for box in _cut_boxes(table, n_colors))
    palette = [m[1:4] / m[0] for m in moments if m[0] > 0]
    return np.array(palette, dtype=np.float64)


def dither_to_palette(pixels_u8: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Floyd-Steinberg error diffusion of an HxWx3 uint8 image onto ``palette``; returns HxW indices."""
    colours = _to_uint8(palette)
    # Pillow palettes have 256 entries; repeat the first colour in the unused ones so they add nothing.
    table = np.repeat(colours[:1], 256, axis=0)
    table[: len(colours)] = colours
    palette_image = Image.new("P", (1, 1))
    palette_image.putpalette(table.reshape(-1).tolist())
    indexed = Image.fromarray(np.ascontiguousarray(pixels_u8)).quantize(
        palette=palette_image, dither=Image.Dither.FLOYDSTEINBERG
    )
    index = np.asarray(indexed, dtype=np.intp)
    # Duplicated colours map back to the first entry that has them.
    first = {tuple(c): i for i, c in reversed(list(enumerate(colours.tolist())))}
    remap = np.array([first[tuple(c)] for c in table.tolist()], dtype=np.intp)
    return remap[index]


@register(6)
def color_quantization(image: np.ndarray, n_colors: float, rng: np.random.Generator) -> np.ndarray:
    """``rgb2ind(I, n)`` (minimum-variance map, dithering on) then ``ind2rgb``."""
    pixels_u8 = _to_uint8(image)
    palette = minimum_variance_palette(pixels_u8, int(n_colors))
    return np.take(palette, dither_to_palette(pixels_u8, palette), axis=0)


def otsu_histogram(values: np.ndarray, bins: int = OTSU_BINS) -> tuple[np.ndarray, float, float]:
    """MATLAB multithresh's histogram: ``bins`` bins centred on an even grid over [min, max] of the data."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        counts = np.zeros(bins, dtype=np.float64)
        counts[0] = values.size
        return counts, lo, hi
    # floor((v - lo) / (hi - lo) * (bins - 1) + 0.5), in one buffer
    scaled = values.reshape(-1) - lo
    scaled /= hi - lo
    scaled *= bins - 1
    scaled += 0.5
    index = np.floor(scaled, out=scaled).astype(np.intp)
    return np.bincount(index, minlength=bins).astype(np.float64), lo, hi


def between_class_variance(counts: np.ndarray, thresholds: np.ndarray) -> float:
    """Otsu's between-class variance (in bin units) of classes split after bins ``thresholds``."""
    p = counts / counts.sum()
    levels = np.arange(len(p), dtype=np.float64)
    edges = np.concatenate([[0], np.asarray(thresholds, dtype=np.intp) + 1, [len(p)]])
    mean = float(p @ levels)
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        w = p[a:b].sum()
        if w > 0:
            total += w * (float(p[a:b] @ levels[a:b]) / w - mean) ** 2
    return total


def multiotsu_indices(counts: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Exact multi-level Otsu by dynamic programming over the histogram, O(K * L^2).

    Returns the 0-based bin index ending each of the first ``n_thresholds`` classes (strictly increasing);
    class j is bins (t[j-1], t[j]]. Maximises the between-class variance; among equal optima the lowest
    indices win.
    """
    n_bins = len(counts)
    if not 1 <= n_thresholds < n_bins:
        raise ValueError(f"need 1..{n_bins - 1} thresholds, got {n_thresholds}")
    p = np.asarray(counts, dtype=np.float64) / float(np.sum(counts))
    cum_w = np.concatenate([[0.0], np.cumsum(p)])
    cum_s = np.concatenate([[0.0], np.cumsum(p * np.arange(n_bins))])
    # cost[a, b]: S^2 / W of the class holding bins a..b (0 when empty); -inf where a > b.
    w = cum_w[None, 1:] - cum_w[:-1, None]
    s = cum_s[None, 1:] - cum_s[:-1, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        cost = np.where(w > 1e-15, s * s / w, 0.0)
    cost[np.tril_indices(n_bins, -1)] = -np.inf
    # best[b]: optimum of the first j classes covering bins 0..b; choice[j][b]: start of class j.
    best = cost[0].copy()
    choices = []
    for _ in range(n_thresholds):
        # class starts at a >= 1, previous classes cover 0..a-1
        total = best[:-1, None] + cost[1:, :]
        start = np.argmax(total, axis=0)
        best = np.concatenate([[-np.inf], total[start, np.arange(n_bins)][1:]])
        best[~np.isfinite(best)] = -np.inf
        choices.append(start + 1)
    thresholds = np.empty(n_thresholds, dtype=np.intp)
    end = n_bins - 1
    for j in range(n_thresholds - 1, -1, -1):
        begin = int(choices[j][end])
        thresholds[j] = begin - 1
        end = begin - 1
    return thresholds


def multithresh(values: np.ndarray, n_thresholds: int) -> np.ndarray:
    """``multithresh(I, N)``: N Otsu thresholds in the data's units, from a 256-bin histogram."""
    counts, lo, hi = otsu_histogram(values)
    indices = multiotsu_indices(counts, n_thresholds)
    return lo + indices.astype(np.float64) / (OTSU_BINS - 1) * (hi - lo)


def imquantize_levels(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``imquantize(I, T, [0 T(2:N) 1])``: x <= T1 -> 0; T(k-1) < x <= T(k) -> T(k); x > T(N) -> 1."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    levels = np.concatenate([[0.0], thresholds[1:], [1.0]])
    return np.take(levels, np.searchsorted(thresholds, values, side="left"))


@register(22)
def quantization(image: np.ndarray, n_thresholds: float, rng: np.random.Generator) -> np.ndarray:
    """``T = multithresh(I, n)``; ``imquantize(I, T, [0 T(2:n) 1])``: ``n`` Otsu thresholds of the whole
    image (all three channels together); each value becomes 0, one of the upper thresholds, or 1."""
    thresholds = multithresh(image, int(n_thresholds))
    return imquantize_levels(image, thresholds)
