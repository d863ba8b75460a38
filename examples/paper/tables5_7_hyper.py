"""Tables 5-7, hyper-parameters: SynDR-IQA on KADID-10k -> LIVEC, KonIQ-10k, BID with one value changed.

    python examples/paper/tables5_7_hyper.py --kadid-root KADID_10k --pool KADID_10k/kadid_add81/ref_imgs \
        --livec-root ChallengeDB_release/Images --koniq-root koniq10k/512x384 \
        --bid-root BID/ImageDatabase --bid-mos bid_mos.csv --bid-resize --out runs/tables5_7

Appendix E's sweeps, each line one SynDR-IQA training (row f) per target and seed:

* Table 5, DDCUp (Algorithm 2): the pseudo-labels' number of neighbours ``k`` (``ALL`` = every training
  reference) and ``margin`` (``–`` = no margin filter): ``reshape label``'s ``k`` and ``margin``, so each
  value makes its own reshaped dataset (``<out>/datasets/<target>-k<k>-m<margin>``);
* Table 6, DRCDown (Algorithm 3): the quality (label) threshold and the feature (cosine distance)
  threshold; Table 7: the minimum kept per cluster. These are the trainer's DRCDown settings.

Every value is in the cache key (the dataset's ``train.csv`` or the training config) and in the printed
table. The lines named ``ours`` are the same experiment in all three tables, trained once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_core as core  # noqa: E402
from paper_published import AUTHENTIC, TABLE5, TABLE6, TABLE7  # noqa: E402

DRIVER = "tables5_7_hyper"
SWEEPS = [f"5.{k}" for k in TABLE5] + [f"6.{k}" for k in TABLE6] + [f"7.{k}" for k in TABLE7]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    core.add_common_args(p, targets=AUTHENTIC, rows="f")
    core.add_authentic_args(p)
    p.add_argument("--sweep", default="all", help="lines TABLE.ROW, e.g. 5.ours,5.1,6.2,7.1 [all]")
    return p.parse_args(argv)


def settings(line: str) -> tuple[dict, dict, list[str]]:
    """(label options, DRCDown options, printed values) of one sweep line."""
    table, key = line.split(".")
    label = {"label_k": 5, "label_margin": 0.05}
    down = {"down_quality_threshold": 1.0, "down_feature_threshold": 0.1, "down_min_kept": 20}
    if table == "5":
        k, margin, _ = TABLE5[key]
        label = {
            "label_k": k or core.ALL_NEIGHBOURS,
            "label_margin": core.NO_MARGIN if margin is None else margin,
        }
        shown = ["ALL" if k is None else str(k), "–" if margin is None else str(margin)]
    elif table == "6":
        quality, feature, _ = TABLE6[key]
        down.update(down_quality_threshold=quality, down_feature_threshold=feature)
        shown = [str(quality), str(feature)]
    else:
        down["down_min_kept"] = TABLE7[key][0]
        shown = [str(TABLE7[key][0])]
    return label, down, shown


def published(line: str) -> tuple[float, ...]:
    table, key = line.split(".")
    return {"5": TABLE5, "6": TABLE6, "7": TABLE7}[table][key][-1]


def _train(ctx: core.Context, lines: list[str], targets: list[str], tests: dict) -> None:
    a = ctx.args
    for target in targets:
        for line in lines:
            label, down, _ = settings(line)
            k = "ALL" if label["label_k"] == core.ALL_NEIGHBOURS else label["label_k"]
            tag = f"{target}-k{k}-m{label['label_margin']}"
            recipe = core.Recipe(
                tag, target, encoder=a.ddcup_encoder, encoder_weights=a.ddcup_weights, **label
            )
            dataset = core.build_recipe(ctx, recipe)
            for row in ctx.rows:
                for seed in ctx.seeds:
                    config = core.train_config(ctx, row, seed, **down)
                    extra = {"recipe": recipe.record(), "sweep": line, "target": target}
                    core.cached_fit(ctx, f"{line} {target} row {row} seed {seed}", dataset, row, config,
                                    {target: tests[target]}, extra)  # fmt: skip


def _tables(ctx: core.Context, lines: list[str], targets: list[str]) -> list[tuple[str, str]]:
    columns = {"5": ["k", "margin"], "6": ["quality threshold", "feature threshold"], "7": ["minimum kept"]}
    captions = {"5": "Table 5, DDCUp (label k, margin)", "6": "Table 6, DRCDown thresholds",
                "7": "Table 7, DRCDown minimum kept"}  # fmt: skip
    names = [core.TARGETS[t].name for t in targets]
    out = []
    for table in "567":
        chosen = [x for x in lines if x.startswith(table + ".")]
        if not chosen:
            continue
        body = []
        for line in chosen:
            paper = published(line)
            paper = tuple(paper[AUTHENTIC.index(t)] for t in targets)
            for row in ctx.rows:
                values = [core.scores_of(ctx, t, row=row, sweep=line, target=t) for t in targets]
                body.append([line.split(".")[1], *settings(line)[2], *core.authentic_row(values, paper)])
        header = ["line", *columns[table], *names, "Average"]
        out.append((f"{captions[table]}: SRCC, mean ± std over seeds, published in brackets",
                    core.markdown(header, body)))  # fmt: skip
    return out


def run(argv=None) -> None:
    args = parse_args(argv)
    ctx = core.start(DRIVER, args, {"rows": "f", "sweep": "all", "targets": "livec,koniq,bid"})
    lines = core.split_list(args.sweep, SWEEPS, "sweep")
    targets = core.split_list(args.targets, list(AUTHENTIC), "targets")
    tests = core.authentic_tests(ctx, targets)
    _train(ctx, lines, targets, tests)
    core.finish(ctx, "Tables 5-7: SynDR-IQA hyper-parameters, KADID-10k -> authentic sets; final epoch",
                _tables(ctx, lines, targets),
                ["k ALL = every training reference; margin – = no margin filter (2.0, above any cosine distance)."])  # fmt: skip


def main(argv=None) -> int:
    return core.run_main(DRIVER, run, argv)


if __name__ == "__main__":
    sys.exit(main())
