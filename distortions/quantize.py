"""Quantisation distortions: 6 colour quantisation (``rgb2ind`` + ``ind2rgb``) and 22 multi-level Otsu
quantisation (``multithresh`` + ``imquantize``), as in the reference generator."""

from __future__ import annotations

import numpy as np
from PIL import Image

from distortions.registry import register

HIST_BITS = 5  # colour-cube resolution for the variance cut (32 levels per axis, as in Wu's quantiser)
OTSU_BINS = 256  # MATLAB multithresh's histogram size


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def minimum_variance_palette(pixels_u8: np.ndarray, n_colors: int) -> np.ndarray:
    """Colour map of at most ``n_colors`` (float [0,1], Kx3) by recursive minimum-variance box cutting.

    The RGB cube is histogrammed at ``HIST_BITS`` per axis. The box with the largest squared error is cut
    along the axis and position that minimise the summed squared error of the two halves, until there are
    ``n_colors`` boxes or no box can be cut. Each colour is the mean of the pixels in its box.
    """
    pixels = pixels_u8.reshape(-1, 3)
    side = 1 << HIST_BITS
    cell = (pixels >> (8 - HIST_BITS)).astype(np.intp)
    flat = (cell[:, 0] * side + cell[:, 1]) * side + cell[:, 2]
    values = pixels.astype(np.float64) / 255.0
    size = side**3
    count = np.bincount(flat, minlength=size).reshape(side, side, side)
    sums = np.stack([np.bincount(flat, values[:, c], minlength=size) for c in range(3)], axis=-1)
    sums = sums.reshape(side, side, side, 3)
    sq = np.bincount(flat, (values**2).sum(axis=1), minlength=size).reshape(side, side, side)

    def stats(box: tuple[slice, slice, slice]) -> tuple[float, np.ndarray, float]:
        n = float(count[box].sum())
        s = sums[box].reshape(-1, 3).sum(axis=0)
        return n, s, float(sq[box].sum())

    def sse(n: float, s: np.ndarray, q: float) -> float:
        return q - float(s @ s) / n if n > 0 else 0.0

    def best_cut(box: tuple[slice, slice, slice]) -> tuple[float, int, int] | None:
        """(gain, axis, cut offset) of the best cut of ``box``, or None when it cannot be cut."""
        best: tuple[float, int, int] | None = None
        for axis in range(3):
            length = box[axis].stop - box[axis].start
            if length < 2:
                continue
            other = tuple(a for a in range(3) if a != axis)
            n_line = count[box].sum(axis=other)
            s_line = sums[box].sum(axis=other)
            n_low = np.cumsum(n_line)[:-1].astype(np.float64)
            s_low = np.cumsum(s_line, axis=0)[:-1]
            n_all, s_all = n_low[-1] + n_line[-1], s_low[-1] + s_line[-1]
            n_high = n_all - n_low
            s_high = s_all - s_low
            with np.errstate(divide="ignore", invalid="ignore"):
                # Minimising the halves' SSE = maximising sum |S|^2 / N over the two halves.
                score = np.where(n_low > 0, (s_low**2).sum(1) / n_low, 0.0) + np.where(
                    n_high > 0, (s_high**2).sum(1) / n_high, 0.0
                )
            valid = (n_low > 0) & (n_high > 0)
            if not valid.any():
                continue
            score = np.where(valid, score, -np.inf)
            cut = int(np.argmax(score))
            gain = float(score[cut]) - float(s_all @ s_all) / n_all
            if best is None or gain > best[0]:
                best = (gain, axis, cut + 1)
        return best

    full = (slice(0, side), slice(0, side), slice(0, side))
    boxes = [full]
    errors = [sse(*stats(full))]
    while len(boxes) < n_colors:
        order = np.argsort(errors)[::-1]
        chosen = None
        for i in order:
            if errors[i] <= 0:
                break
            cut = best_cut(boxes[i])
            if cut is not None:
                chosen = (int(i), cut)
                break
        if chosen is None:
            break
        i, (_, axis, offset) = chosen
        box = boxes.pop(i)
        errors.pop(i)
        start = box[axis].start
        low = list(box)
        high = list(box)
        low[axis] = slice(start, start + offset)
        high[axis] = slice(start + offset, box[axis].stop)
        for part in (tuple(low), tuple(high)):
            boxes.append(part)
            errors.append(sse(*stats(part)))
    palette = []
    for box in boxes:
        n, s, _ = stats(box)
        if n > 0:
            palette.append(s / n)
    return np.array(palette, dtype=np.float64)


def dither_to_palette(pixels_u8: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Floyd-Steinberg error diffusion of an HxWx3 uint8 image onto ``palette``; returns HxW indices."""
    colours = _to_uint8(palette)
    # Pillow palettes have 256 entries; repeat the first colour in the unused ones so they add nothing.
    table = np.repeat(colours[:1], 256, axis=0)
    table[: len(colours)] = colours
    palette_image = Image.new("P", (1, 1))
    palette_image.putpalette(table.reshape(-1).tolist())
    indexed = Image.fromarray(pixels_u8, mode="RGB").quantize(
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
    return palette[dither_to_palette(pixels_u8, palette)]


def otsu_histogram(values: np.ndarray, bins: int = OTSU_BINS) -> tuple[np.ndarray, float, float]:
    """MATLAB multithresh's histogram: ``bins`` bins centred on an even grid over [min, max] of the data."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        counts = np.zeros(bins, dtype=np.float64)
        counts[0] = values.size
        return counts, lo, hi
    index = np.floor((values.reshape(-1) - lo) / (hi - lo) * (bins - 1) + 0.5).astype(np.intp)
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
    return levels[np.searchsorted(thresholds, values, side="left")]


@register(22)
def quantization(image: np.ndarray, n_thresholds: float, rng: np.random.Generator) -> np.ndarray:
    thresholds = multithresh(image, int(n_thresholds))
    return imquantize_levels(image, thresholds)
