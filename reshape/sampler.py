"""A torch Sampler that applies DRCDown afresh each epoch, as the paper does during training.

The paper recomputes the redundant clusters before every training round from the *current* model's
features, so what counts as redundant follows what the model has learnt. The trainer computes features
and labels of the whole training set (in dataset order) and hands them to :meth:`DRCDownSampler.update`;
the sampler then yields the kept indices in a shuffled order. Both the kept subset and the order are a
pure function of ``(seed, epoch, features, labels)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from reshape.errors import BadInputError
from reshape.prune import Clusters, find_clusters, keep_mask


def _as_numpy(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float32).numpy()
    return np.asarray(values)


class DRCDownSampler(Sampler[int]):
    """Yields the DRCDown-kept indices of a dataset of ``num_samples`` items, reshuffled each epoch.

    Until the first :meth:`update` every index is kept; call :meth:`update` before each epoch (the first
    included) to prune as the paper does.
    Labels passed to :meth:`update` must be on the 0..10 scale (see ``reshape.prune.labels_to_0_10``).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        sim_threshold: float = 0.9,
        label_threshold: float = 1.0,
        min_cluster: int = 20,
        seed: int = 0,
        shuffle: bool = True,
        approximate: bool = False,
    ) -> None:
        if num_samples < 1:
            raise BadInputError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)
        self.sim_threshold = sim_threshold
        self.label_threshold = label_threshold
        self.min_cluster = min_cluster
        self.seed = int(seed)
        self.shuffle = shuffle
        self.approximate = approximate
        self.epoch = 0
        self.kept = np.arange(self.num_samples, dtype=np.int64)
        self.clusters: Clusters | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _epoch_seed(self) -> int:
        # Distinct, reproducible stream per (seed, epoch) without the two ever colliding across epochs.
        return int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, np.uint64)[0] >> 1)

    def update(self, features: Any, labels: Any, epoch: int | None = None) -> np.ndarray:
        """Recompute the kept subset from the current features/labels (dataset order); returns it."""
        if epoch is not None:
            self.set_epoch(epoch)
        feats, labs = _as_numpy(features), _as_numpy(labels).reshape(-1)
        if len(feats) != self.num_samples:
            raise BadInputError(
                f"features have {len(feats)} rows but the sampler covers {self.num_samples} samples"
            )
        seed = self._epoch_seed()
        self.clusters = find_clusters(
            feats, labs, sim_threshold=self.sim_threshold, label_threshold=self.label_threshold,
            approximate=self.approximate, seed=seed,
        )  # fmt: skip
        self.kept = np.flatnonzero(keep_mask(self.clusters, min_cluster=self.min_cluster, seed=seed))
        return self.kept

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(self.kept.tolist())
        generator = torch.Generator()
        generator.manual_seed(self._epoch_seed())
        order = torch.randperm(len(self.kept), generator=generator).numpy()
        return iter(self.kept[order].tolist())

    def __len__(self) -> int:
        return len(self.kept)
