"""`reshape diagnose` at KADID scale: the metric time against the embedding time, measured in the same run.

KADID-10k has 10,125 rows (81 references x 25 types x 5 levels); a reshaped set adds ~1,500 pseudo rows.
The metrics (silhouettes, k-NN purity, continuity for all rows, both label terciles and the pseudo rows)
run on 2048-d synthetic embeddings with that structure. The embedding (ResNet-50, random weights, CPU,
the real preprocessing of `reshape features`) is timed on ``--embed-sample`` generated 512x384 images and
extrapolated linearly to all rows (embedding the full set on a CPU takes tens of minutes; the per-image
cost is constant). Goal: the metrics take at most 10 % of the embedding time, and their peak extra memory
stays O(n k) (no n x n matrix: at 11.6k rows a float64 n x n matrix alone would be ~1 GB).

    python benchmarks/diagnose_scale.py                  # KADID scale: 11,625 rows, 64 images embedded
    python benchmarks/diagnose_scale.py --rows 2000 --embed-sample 8    # a quick check
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def kadid_like(rows: int, refs: int, types: int, dim: int, seed: int = 0):
    """Rows with KADID's structure: high quality near the reference's direction, low quality near the type's."""
    from reshape.diagnose import Rows

    rng = np.random.default_rng(seed)
    ref_dirs = rng.standard_normal((refs, dim)).astype(np.float32)
    type_dirs = rng.standard_normal((types, dim)).astype(np.float32)
    ref = rng.integers(0, refs, rows)
    kind = rng.integers(0, types, rows)
    w = rng.integers(0, 5, rows).astype(np.float32)[:, None] / 4
    emb = (
        (1 - w) * ref_dirs[ref]
        + w * type_dirs[kind]
        + 0.3 * rng.standard_normal((rows, dim), dtype=np.float32)
    )
    labels = 10 - 8 * w[:, 0] + rng.normal(0, 0.3, rows)
    origins = np.where(np.arange(rows) >= rows * 10125 // 11625, "pseudo", "source")
    return Rows(emb, labels, [f"I{r:02d}" for r in ref], kind.tolist()), origins.tolist()


def embed_time(sample: int, encoder: str, batch_size: int) -> float:
    """Seconds per image of ``encoder`` on generated 512x384 PNGs (decode + preprocessing + forward)."""
    from PIL import Image

    from reshape.diagnose.inputs import build_embedder

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(sample):
            base = rng.uniform(0, 255, (48, 64, 3)).astype(np.uint8)
            image = Image.fromarray(base).resize((512, 384), Image.Resampling.BICUBIC)
            paths.append(Path(tmp) / f"I{i:03d}.png")
            image.save(paths[-1])
        weights = "default" if encoder == "colour-texture" else "none"
        embedder = build_embedder(encoder, weights=weights, device="cpu", batch_size=batch_size)
        embedder.embed(paths[: min(2, sample)])  # warm-up (allocations, lazy imports)
        start = time.perf_counter()
        embedder.embed(paths)
        return (time.perf_counter() - start) / sample


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=11625, help="rows (KADID-10k + ~1.5k pseudo rows)")
    parser.add_argument("--refs", type=int, default=81)
    parser.add_argument("--types", type=int, default=25)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--embed-sample", type=int, default=64, help="images actually embedded")
    parser.add_argument("--encoder", default="resnet50", help="resnet50 (random weights) or colour-texture")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from reshape.diagnose import dataset_figures

    warm_rows, warm_origins = kadid_like(60, 4, 3, 8)
    dataset_figures(warm_rows, warm_origins)  # imports (faiss) out of the timing
    rows, origins = kadid_like(args.rows, args.refs, args.types, args.dim)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    figures = dataset_figures(rows, origins)
    metric_s = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    per_image = embed_time(args.embed_sample, args.encoder, args.batch_size)
    embed_s = per_image * args.rows
    print(f"rows {args.rows} x {args.dim}-d, {args.refs} refs, {args.types} types")
    print(
        f"metrics (all, terciles, pseudo): {metric_s:.2f} s; peak RSS grew {rss_after - rss_before:.0f} MiB"
    )
    print(
        f"embedding ({args.encoder}, CPU): {per_image * 1000:.1f} ms/image over {args.embed_sample} images "
        f"-> {embed_s:.0f} s for {args.rows} rows (extrapolated)"
    )
    ratio = metric_s / embed_s
    print(f"ratio metrics / embedding: {ratio:.3f}  (goal <= 0.10) -> {'OK' if ratio <= 0.10 else 'MISSED'}")
    print(
        f"sanity: top-tercile purity by reference {figures['top_tercile']['purity_reference']}, "
        f"bottom-tercile purity by type {figures['bottom_tercile']['purity_type']}"
    )
    return 0 if ratio <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
