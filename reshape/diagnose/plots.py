"""The pictures of `reshape diagnose`, like the paper's Fig. 1: one 2-D map of a dataset's embeddings
(UMAP with the ``umap`` extra, else PCA), its high- and low-quality rows side by side, coloured by
reference, by distortion type and by label."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np

from reshape.diagnose.metrics import group_codes, sample_rows, terciles, unit_rows

log = logging.getLogger("reshape.diagnose")

#: at most this many rows are drawn on a map (a seeded sample beyond)
MAP_POINTS = 20000
PLOT_SOFTWARE = "reshape diagnose"


def map_2d(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """(n, 2) coordinates and the method: UMAP (cosine) when umap-learn is installed, else PCA of the unit
    rows, each axis signed so that its largest loading is positive (the same picture on every BLAS)."""
    u = unit_rows(x)
    if len(u) >= 5:
        try:
            import umap  # type: ignore[import-not-found]
        except ImportError:
            log.info("diagnose map: PCA (UMAP needs umap-learn: pip install 'reshape-iqa[umap]')")
        else:
            reducer = umap.UMAP(
                n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, len(u) - 1)
            )
            return np.asarray(reducer.fit_transform(u), dtype=np.float64), "UMAP"
    centred = u - u.mean(axis=0)
    if len(u) < 2:
        return np.zeros((len(u), 2)), "PCA"
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    xy = centred @ (axes * signs[:, None]).T
    return (xy if xy.shape[1] == 2 else np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))), "PCA"


def _categorical(ax, xy: np.ndarray, groups: Sequence[object], title: str) -> None:
    codes = group_codes(groups)
    count = int(codes.max()) + 1 if len(codes) else 0
    # a cyclic map spreads many groups apart; a golden-ratio stride keeps neighbouring codes distinguishable
    hue = (codes * 0.618033988749895) % 1.0
    ax.scatter(xy[:, 0], xy[:, 1], c=hue, cmap="hsv", vmin=0, vmax=1, s=6, linewidths=0)
    ax.set_title(f"{title} ({count})", fontsize=9)


def _by_label(ax, xy: np.ndarray, labels: np.ndarray, title: str):
    points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="viridis", vmin=0, vmax=10, s=6, linewidths=0)
    ax.set_title(title, fontsize=9)
    return points


def render_map(
    embeddings: np.ndarray,
    labels: np.ndarray,
    references: Sequence[object] | None,
    types: Sequence[object] | None,
    *,
    title: str,
    seed: int = 0,
) -> tuple[bytes, str]:
    """PNG bytes of one dataset's map and the method (UMAP/PCA). Columns: high-quality rows (top label
    tercile), low-quality rows (bottom tercile), all rows; one row of panels per colouring the table has
    (reference, type, label); an authentic set gets the label row only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reshape import __version__

    keep = sample_rows(len(labels), MAP_POINTS, seed)
    pick = lambda seq: None if seq is None else [seq[i] for i in keep]  # noqa: E731
    embeddings, labels, references, types = embeddings[keep], labels[keep], pick(references), pick(types)
    xy, method = map_2d(embeddings, seed)
    bottom, top = terciles(labels)
    columns = [("high quality (top third of labels)", top), ("low quality (bottom third)", bottom),
               ("all rows", np.arange(len(labels)))]  # fmt: skip
    colourings = [
        (name, g) for name, g in (("reference", references), ("distortion type", types)) if g is not None
    ]
    n_rows = len(colourings) + 1
    fig, axes = plt.subplots(
        n_rows,
        3,
        figsize=(11, 3.3 * n_rows),
        dpi=80,
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    for col, (head, idx) in enumerate(columns):
        for row, (name, groups) in enumerate(colourings):
            _categorical(axes[row, col], xy[idx], [groups[i] for i in idx], f"{head}\nby {name}")
        points = _by_label(axes[-1, col], xy[idx], labels[idx], f"{head}\nby label (0..10)")
    fig.colorbar(points, ax=axes[-1, -1], label="label")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}: {method} of {len(labels)} embeddings", fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": f"{PLOT_SOFTWARE} {__version__}"})
    plt.close(fig)
    return buf.getvalue(), method
