"""Do the DDCUp selection and the DRCDown clusters change with the features' precision? (issue #28)

    python benchmarks/features_precision_selection.py [--stand-in-refs 48] [--weights none|PATH]
                                                      [--official GITDIR] [--skip-demo]

Embeds each image set with ``reshape features`` three ways: ``fp32 contiguous`` (the features of earlier
versions, byte for byte), ``fp32 channels-last`` and ``bf16 channels-last`` (what ``--precision auto``
picks on a CPU with native bf16 or an Ampere GPU). Then runs DDCUp (reshape.select.select_candidates:
training refs against the candidate pool) and DRCDown (reshape.prune.find_clusters and drcdown on the
distorted images with their labels) on each and compares with the fp32 contiguous result.

Image sets: the demo's data (reshape.demo.build_demo_data: 6 training refs, 21 candidates, 108 distorted
images with SSIM proxy labels) and a stand-in (``--stand-in-refs`` crops of scikit-image photos at KADID's
512x384, half of them training refs and half candidates, each distorted with 2 random KADID types at 2
levels, SSIM proxy labels).

It also measures where a change *can* happen: delta = the largest change of any pair's cosine between the
settings; a pair whose cosine lies within delta of a threshold (DRCDown's similarity 0.9; DDCUp's tau and
d_max) could be decided either way. With ``--official GITDIR`` (a clone of Li-aobo/SynDR-IQA) the same
count is made on the official repository's shipped ResNet-50 features (RefSet/train_ref.pkl: 81 KADID-10k
references, RefSet/additional_ref.pkl: its 81 selected KADIS references), read from the pickle's opcodes
without unpickling. Their images are not shipped, so they cannot be embedded again: only the margin count.

``--weights none`` (the default) is a seeded random ResNet-50, the same arithmetic as the pretrained one
but other feature geometry; pass the torchvision IMAGENET1K_V1 file for the paper's encoder.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

# pickletools is the standard library's pickle *disassembler*: it lists the official files' opcodes and
# never unpickles, so no object of the file is constructed (the project reads no pickle)
from pickletools import genops

import numpy as np
import pandas as pd
from PIL import Image

from reshape.artifacts import read_features
from reshape.features import run_features
from reshape.prune import drcdown, find_clusters
from reshape.select import select_candidates

SETTINGS = {
    "fp32 contiguous": {"precision": "fp32", "memory_format": "contiguous"},
    "fp32 channels-last": {"precision": "fp32", "memory_format": "channels-last"},
    "bf16 channels-last": {"precision": "bf16", "memory_format": "channels-last"},
}
SIM_THRESHOLD = 0.9  # DRCDown, paper and official code
LABEL_THRESHOLD = 1.0


def demo_set(root: Path) -> dict:
    from reshape.demo import DEMO_TYPES, build_demo_data

    data = build_demo_data(root, types=DEMO_TYPES, n_train=6, n_pool=21)
    table = pd.read_csv(data["labels"])
    return {"train": data["refs"], "pool": data["pool"], "distorted": [data["source"] / n for n in table["dist_img"]],
            "labels": (table["dmos"].to_numpy() - 1.0) * 2.5}  # fmt: skip


def stand_in_set(root: Path, n_refs: int, seed: int = 0) -> dict:
    """KADID-sized references cut from scikit-image photos, and 4 distortions of each, SSIM-labelled."""
    from skimage.metrics import structural_similarity

    import distortions
    from reshape.demo import POOL_PHOTOS, TRAIN_PHOTOS, _photo, ssim_to_dmos

    photos = [np.rint(_photo(n) * 255).astype(np.uint8) for n in (*TRAIN_PHOTOS, *POOL_PHOTOS)]
    rng = np.random.default_rng(seed)
    train, pool, dist = root / "train", root / "pool", root / "distorted"
    for d in (train, pool, dist):
        d.mkdir(parents=True)
    paths, labels = [], []
    for i in range(n_refs):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        scale = rng.uniform(0.5, 1.0)
        ch, cw = int(h * scale), int(w * scale)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(photo[top : top + ch, left : left + cw]).resize(
            (512, 384), Image.Resampling.BILINEAR
        )
        ref = np.asarray(crop, dtype=np.float32) / 255.0
        folder = train if i % 2 == 0 else pool
        Image.fromarray(np.asarray(crop)).save(folder / f"ref{i:04d}.png")
        for t in rng.choice(np.arange(1, 26), size=2, replace=False):
            for level in (2, 4):
                out = np.clip(
                    distortions.apply(ref, int(t), level, rng=np.random.default_rng([seed, i, t, level])),
                    0,
                    1,
                )
                img = np.rint(out * 255).astype(np.uint8)
                path = dist / f"ref{i:04d}_{t:02d}_{level}.png"
                Image.fromarray(img).save(path)
                ssim = structural_similarity(
                    ref, img.astype(np.float32) / 255, channel_axis=2, data_range=1.0
                )
                paths.append(path)
                labels.append((ssim_to_dmos(ssim) - 1.0) * 2.5)
    return {"train": train, "pool": pool, "distorted": paths, "labels": np.array(labels)}


def embed(images, out: Path, weights: str, setting: dict) -> np.ndarray:
    run_features(images if isinstance(images, list) else [images], out, weights=weights, device="cpu",
                 batch_size=32, **setting)  # fmt: skip
    return read_features(out).embeddings


def unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def upper_cosines(x: np.ndarray) -> np.ndarray:
    u = unit(x)
    return (u @ u.T)[np.triu_indices(len(u), 1)]


def near(values: np.ndarray, threshold: float, delta: float) -> int:
    return int(np.sum(np.abs(values - threshold) <= delta))


def ddcup_margins(train: np.ndarray, cand: np.ndarray, sel, delta: float) -> tuple[int, int]:
    """Pair distances within ``delta`` of tau or d_max (candidate-train) or of tau (candidate-candidate)."""
    ct = 1.0 - unit(cand) @ unit(train).T
    cc = 1.0 - upper_cosines(cand)
    close = near(ct.ravel(), sel.tau, delta) + near(ct.ravel(), sel.d_max, delta) + near(cc, sel.tau, delta)
    return close, ct.size + cc.size


def compare_set(name: str, sets: dict, tmp: Path, weights: str) -> tuple[float, float]:
    """Print the comparison; returns (the largest pair-cosine change, the median 1 - cosine between an
    image's bf16 and fp32 features)."""
    feats: dict[str, dict[str, np.ndarray]] = {}
    for label, setting in SETTINGS.items():
        key = label.replace(" ", "-")
        feats[label] = {part: embed(sets[part], tmp / f"{name}-{part}-{key}.parquet", weights, setting)
                        for part in ("train", "pool", "distorted")}  # fmt: skip
    base = feats["fp32 contiguous"]
    ref_sel = select_candidates(base["train"], base["pool"])
    ref_clusters = find_clusters(base["distorted"], sets["labels"], sim_threshold=SIM_THRESHOLD)
    ref_kept = drcdown(base["distorted"], sets["labels"])
    worst, gap = 0.0, 0.0
    print(f"\n{name}: {len(base['train'])} training refs, {len(base['pool'])} candidates, "
          f"{len(base['distorted'])} distorted images; fp32 contiguous: {len(ref_sel.selected)} selected "
          f"(tau {ref_sel.tau:.4f}, d_max {ref_sel.d_max:.4f}), {ref_clusters.n_clusters} clusters "
          f"({ref_clusters.n_links} links), {len(ref_kept)} kept")  # fmt: skip
    for label in list(SETTINGS)[1:]:
        f = feats[label]
        sel = select_candidates(f["train"], f["pool"])
        clusters = find_clusters(f["distorted"], sets["labels"], sim_threshold=SIM_THRESHOLD)
        kept = drcdown(f["distorted"], sets["labels"])
        delta = max(np.abs(upper_cosines(np.concatenate([f[p] for p in ("train", "pool")]))
                           - upper_cosines(np.concatenate([base[p] for p in ("train", "pool")]))).max(),
                    np.abs(upper_cosines(f["distorted"]) - upper_cosines(base["distorted"])).max())  # fmt: skip
        worst = max(worst, delta)
        per_image = np.concatenate([np.sum(unit(f[p]) * unit(base[p]), axis=1) for p in f])
        cos = [float(per_image.min())]
        if label.startswith("bf16"):
            gap = float(np.median(1.0 - per_image))
        ddcup_close, ddcup_pairs = ddcup_margins(base["train"], base["pool"], ref_sel, delta)
        drc_close = near(upper_cosines(base["distorted"]), SIM_THRESHOLD, delta)
        drc_pairs = len(base["distorted"]) * (len(base["distorted"]) - 1) // 2
        same_sel = np.array_equal(sel.selected, ref_sel.selected)
        same_clusters = np.array_equal(clusters.cluster_id, ref_clusters.cluster_id)
        print(f"  {label:<20} min cosine to fp32 {min(cos):.7f}; max pair-cosine change delta {delta:.2e}")
        print(f"    DDCUp selection {'unchanged' if same_sel else 'CHANGED'} ({len(sel.selected)} selected); "
              f"pairs within delta of tau/d_max: {ddcup_close} of {ddcup_pairs} ({ddcup_close / ddcup_pairs:.2e})")  # fmt: skip
        print(f"    DRCDown clusters {'unchanged' if same_clusters else 'CHANGED'}, kept "
              f"{'unchanged' if np.array_equal(kept, ref_kept) else 'CHANGED'}; pairs within delta of "
              f"{SIM_THRESHOLD}: {drc_close} of {drc_pairs} ({drc_close / drc_pairs:.2e})")  # fmt: skip
    return worst, gap


def pickled_features(git_dir: str, path: str) -> tuple[list[str], np.ndarray]:
    """(image names, (n, 2048) float32) of one of the official ``(names, [arrays])`` pickles, read from
    its opcodes (no object is unpickled): the names are its strings, the arrays its 8192-byte buffers."""
    blob = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"], capture_output=True,
                          check=True).stdout  # fmt: skip
    names, arrays = [], []
    for op, arg, _ in genops(blob):
        if op.name in ("BINUNICODE", "SHORT_BINUNICODE") and str(arg).lower().endswith(
            (".png", ".bmp", ".jpg")
        ):
            names.append(str(arg))
        elif op.name in ("BINBYTES", "SHORT_BINBYTES") and len(arg) == 2048 * 4:
            arrays.append(np.frombuffer(arg, dtype="<f4"))
    if len(names) != len(arrays):
        raise SystemExit(f"{path}: {len(names)} names but {len(arrays)} 2048-d arrays")
    return names, np.stack(arrays)


def official(git_dir: str, delta: float, gap: float, trials: int = 200) -> None:
    _, train = pickled_features(git_dir, "RefSet/train_ref.pkl")
    _, extra = pickled_features(git_dir, "RefSet/additional_ref.pkl")
    sel = select_candidates(train, extra)
    close, pairs = ddcup_margins(train, extra, sel, delta)
    both = upper_cosines(np.concatenate([train, extra]))
    drc = near(both, SIM_THRESHOLD, delta)
    print(f"\nofficial shipped ResNet-50 features ({len(train)} KADID-10k refs, {len(extra)} additional refs): "
          f"DDCUp of the additional against the KADID refs selects {len(sel.selected)} (tau {sel.tau:.4f}, "
          f"d_max {sel.d_max:.4f})")  # fmt: skip
    print(f"  with delta = {delta:.2e} (the largest measured above): DDCUp pairs within delta of tau/d_max: "
          f"{close} of {pairs} ({close / pairs:.2e}); pairs of the {len(both)} ref pairs within delta of "
          f"{SIM_THRESHOLD}: {drc} ({drc / len(both):.2e}); nearest DDCUp margin "
          f"{_nearest_margin(train, extra, sel):.2e}")  # fmt: skip
    # Simulated bf16: isotropic noise per feature with the median measured 1 - cosine (a model of the
    # rounding, not a bf16 forward: the official images are not shipped)
    rng = np.random.default_rng(0)
    changed = []
    for _ in range(trials):
        noisy = [x + rng.standard_normal(x.shape) * np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(2 * gap / x.shape[1])
                 for x in (train, extra)]  # fmt: skip
        other = select_candidates(noisy[0].astype(np.float32), noisy[1].astype(np.float32))
        changed.append(len(np.setxor1d(other.selected, sel.selected)))
    changed = np.array(changed)
    print(
        f"  simulated bf16 rounding (median 1 - cosine {gap:.1e}, {trials} draws): selection changed in "
        f"{np.mean(changed > 0):.1%} of draws, by {changed.mean():.2f} candidates on average (max {changed.max()})"
    )


def _nearest_margin(train: np.ndarray, cand: np.ndarray, sel) -> float:
    ct = 1.0 - unit(cand) @ unit(train).T
    cc = 1.0 - upper_cosines(cand)
    return float(min(np.abs(ct - sel.tau).min(), np.abs(ct - sel.d_max).min(), np.abs(cc - sel.tau).min()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stand-in-refs", type=int, default=48, help="stand-in references (0 = none)")
    ap.add_argument("--weights", default="none", help="none (seeded random) or a ResNet-50 state_dict file")
    ap.add_argument("--official", default=None, help="git dir of a Li-aobo/SynDR-IQA clone")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--delta", type=float, default=1e-4, help="pair-cosine change when no set is embedded")
    ap.add_argument("--gap", type=float, default=1e-5, help="1 - cosine of bf16 when no set is embedded")
    args = ap.parse_args()
    worst, gap = 0.0, 0.0
    with tempfile.TemporaryDirectory(prefix="precision-selection-") as tmp:
        root = Path(tmp)
        if not args.skip_demo:
            delta, median_gap = compare_set("demo", demo_set(root / "demo"), root, args.weights)
            worst, gap = max(worst, delta), max(gap, median_gap)
        if args.stand_in_refs:
            stand_in = stand_in_set(root / "stand-in", args.stand_in_refs)
            delta, median_gap = compare_set("stand-in", stand_in, root, args.weights)
            worst, gap = max(worst, delta), max(gap, median_gap)
    if args.official:
        official(args.official, worst or args.delta, gap or args.gap)


if __name__ == "__main__":
    main()
