"""Decoding for `reshape features`: a DataLoader whose worker processes decode and crop the next batches
while the model embeds the current one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reshape.errors import BadInputError


class _ImageSet:
    """Map-style dataset: decodes and prepares one image; bad files come back as an error string."""

    def __init__(self, paths: list[Path], prepare: Callable[[np.ndarray], np.ndarray], min_size: int | None):
        self.paths = paths
        self.prepare = prepare
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, int, int, str | None]:
        from reshape.imageio import load_image

        try:
            img = load_image(self.paths[i], min_size=self.min_size, purpose="the 224x224 centre crop")
        except BadInputError as exc:
            return i, None, 0, 0, str(exc)
        return i, self.prepare(img), img.shape[1], img.shape[0], None


class ImageBatch:
    """One batch as the loader hands it over: ``inputs``, the readable images' prepared arrays stacked in
    order (a tensor, or None when none was readable), and ``items``, (index, width, height, error) of
    every image of the batch, readable or not."""

    def __init__(self, inputs: Any, items: list[tuple[int, int, int, str | None]]):
        self.inputs = inputs
        self.items = items

    def pin_memory(self) -> ImageBatch:
        """Called by the DataLoader's pinning thread (``pin_memory=True``, on CUDA): page-locked inputs
        are copied to the GPU without blocking the host."""
        if self.inputs is not None:
            self.inputs = self.inputs.pin_memory()
        return self


def collate(items: list[tuple[int, np.ndarray | None, int, int, str | None]]) -> ImageBatch:
    """Stack a batch in the worker (``np.stack`` of the images in order, as every earlier version did,
    so the forward sees the same array whatever the number of workers)."""
    import torch

    good = [arr for _, arr, _, _, err in items if err is None]
    inputs = torch.from_numpy(np.stack(good)) if good else None
    return ImageBatch(inputs, [(i, w, h, err) for i, _, w, h, err in items])


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's share), else all."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers(device: str, cpus: int | None = None) -> int:
    """Loader processes when ``--workers`` is not given. On the CPU decoding costs a fraction of the
    forward (about 8 ms against 30-90 ms per ResNet-50 image), so one process per two cores (1 on a 2-core
    machine, at most 4) hides it without taking many cores from the forward; on CUDA the CPU only
    decodes: every core but one, at most 8."""
    cpus = available_cpus() if cpus is None else cpus
    if device == "cuda":
        return max(1, min(8, cpus - 1))
    return max(1, min(4, cpus // 2))


def image_loader(dataset: _ImageSet, batch_size: int, workers: int, device: str) -> Any:
    """Batches of ``dataset`` in order; ``workers`` processes decode ahead (two batches each), and on
    CUDA the batches arrive in pinned memory."""
    from torch.utils.data import DataLoader

    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device == "cuda",
        prefetch_factor=2 if workers else None,
    )
