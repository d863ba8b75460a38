"""The plots `reshape publish` puts in plots/: the label histogram and the DDCUp selection map."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from reshape.artifacts import read_features, read_parquet
from reshape.errors import BadInputError
from reshape.fileio import atomic_path
from reshape.report_data import pca_2d as _pca_2d

if TYPE_CHECKING:
    from reshape.publish import PublishInputs


def plot_histogram(path: Path, train: pd.DataFrame, lo: float, hi: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    bins = np.linspace(lo, hi, 26) if hi > lo else 25
    for origin, colour in (("source", "tab:blue"), ("pseudo", "tab:orange")):
        values = train.loc[train["origin"] == origin, "dmos"].to_numpy(dtype=float)
        if len(values):
            ax.hist(values, bins=bins, alpha=0.6, color=colour, label=f"{origin} (n={len(values)})")
    ax.set_xlabel("label (dmos, higher = better)")
    ax.set_ylabel("images")
    ax.set_title("Label distribution: source vs pseudo-labelled")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def plot_selection(path: Path, inputs: PublishInputs) -> bool:
    if not (inputs.train_features and inputs.candidate_features and inputs.selection):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_refs = read_features(inputs.train_features)
    candidates = read_features(inputs.candidate_features)
    selection, _ = read_parquet(inputs.selection, "selection")
    chosen = selection.column("candidate_index").to_numpy()
    if len(chosen) and (chosen.min() < 0 or chosen.max() >= len(candidates)):
        raise BadInputError(
            f"{inputs.selection}: candidate_index out of range of {inputs.candidate_features}"
        )
    train_xy, cand_xy = _pca_2d(train_refs.embeddings, candidates.embeddings)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    ax.scatter(cand_xy[:, 0], cand_xy[:, 1], s=8, c="lightgrey", label=f"candidates (n={len(cand_xy)})")
    ax.scatter(
        train_xy[:, 0],
        train_xy[:, 1],
        s=30,
        c="tab:blue",
        marker="s",
        label=f"training refs (n={len(train_xy)})",
    )
    ax.scatter(cand_xy[chosen, 0], cand_xy[chosen, 1], s=30, c="tab:red", label=f"selected (n={len(chosen)})")
    ax.set_title("DDCUp selection (PCA of cosine-normalised features)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return True
