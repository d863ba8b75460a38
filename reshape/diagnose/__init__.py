"""`reshape diagnose`: the paper's clustered-feature finding (SynDR-IQA Fig. 1, Appendix A) as numbers and
pictures, for any published dataset, training table or authentic test set.

* :mod:`reshape.diagnose.metrics` - pure figures (cosine silhouette, k-NN purity, label continuity);
* :mod:`reshape.diagnose.inputs` - tables and the embedder (an encoder of `reshape features`, a checkpoint);
* :mod:`reshape.diagnose.plots` - the 2-D maps (UMAP with the ``umap`` extra, else PCA);
* :mod:`reshape.diagnose.render` - diagnose.json, diagnose.md and the report's HTML section;
* :mod:`reshape.diagnose.stage` - the command: read, embed, measure, write.
"""

from __future__ import annotations

from reshape.diagnose.metrics import (
    Rows,
    chance_purity,
    cosine_silhouette,
    dataset_figures,
    knn_purity,
    label_continuity,
    nearest_neighbours,
    subset_figures,
    terciles,
)
from reshape.diagnose.stage import DiagnoseConfig, DiagnoseResult, run

__all__ = [
    "DiagnoseConfig",
    "DiagnoseResult",
    "Rows",
    "chance_purity",
    "cosine_silhouette",
    "dataset_figures",
    "knn_purity",
    "label_continuity",
    "nearest_neighbours",
    "run",
    "subset_figures",
    "terciles",
]
