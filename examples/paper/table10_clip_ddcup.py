"""Table 10, CLIP as DDCUp's encoder only: SynDR-IQA with a ViT-B/16 (ImageNet) trainer, KADID -> authentic sets.

    python examples/paper/table10_clip_ddcup.py --kadid-root KADID_10k --pool KADID_10k/kadid_add81/ref_imgs \
        --livec-root ChallengeDB_release/Images --koniq-root koniq10k/512x384 \
        --bid-root BID/ImageDatabase --bid-mos bid_mos.csv --bid-resize \
        --weights vit_b_16-c867db91.pth --encoder-weights clip:ViT-B-16=open_clip_vit_b_16_openai.bin \
        --out runs/table10

Each ``--ddcup-encoders`` entry embeds the references for DDCUp (``reshape features --encoder``), so it
changes the selection and the pseudo-labels' neighbours, and makes its own dataset; the trainer is the same
for every line (``--backbone``, ViT-B/16 by default, as in Appendix F.2). The paper's first line names a
ViT-B/16 (ImageNet) DDCUp encoder; ``reshape features`` has ResNet-50 as its ImageNet encoder (the paper's
DDCUp encoder everywhere else), so the kit's first line is ``resnet50``, printed beside that figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_core as core  # noqa: E402
from paper_published import AUTHENTIC, TABLE10  # noqa: E402

DRIVER = "table10_clip_ddcup"
PAPER_ENCODERS = "resnet50,clip:ViT-B-16"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    core.add_common_args(p, targets=AUTHENTIC, rows="f")
    core.add_authentic_args(p)
    p.add_argument(
        "--ddcup-encoders", default=PAPER_ENCODERS, help=f"DDCUp encoders compared [{PAPER_ENCODERS}]"
    )
    p.add_argument(
        "--encoder-weights", action="append", metavar="ENCODER=PATH", help="an encoder's weights file"
    )
    p.set_defaults(backbone="vit_b_16")
    return p.parse_args(argv)


def run(argv=None) -> None:
    args = parse_args(argv)
    defaults = {
        "rows": "f",
        "ddcup_encoders": PAPER_ENCODERS,
        "backbone": "vit_b_16",
        "targets": "livec,koniq,bid",
        "ddcup_encoder": None,  # the encoders are this table's own option
    }
    ctx = core.start(DRIVER, args, defaults)
    encoders = [e.strip() for e in args.ddcup_encoders.split(",") if e.strip()]
    files = core.parse_named(args.encoder_weights, "encoder-weights")
    targets = core.split_list(args.targets, list(AUTHENTIC), "targets")
    tests = core.authentic_tests(ctx, targets)
    for encoder in encoders:
        weights = files.get(encoder, "none" if args.weights == "none" else "default")
        for target in targets:
            tag = f"{target}-{encoder.replace(':', '-')}"
            recipe = core.Recipe(tag, target, encoder=encoder, encoder_weights=weights)
            dataset = core.build_recipe(ctx, recipe)
            for row in ctx.rows:
                for seed in ctx.seeds:
                    config = core.train_config(ctx, row, seed)
                    extra = {"recipe": recipe.record(), "encoder": encoder, "target": target}
                    core.cached_fit(ctx, f"{encoder} {target} row {row} seed {seed}", dataset, row, config,
                                    {target: tests[target]}, extra)  # fmt: skip
    body = []
    for encoder in encoders:
        key = "clip" if encoder.startswith("clip:ViT-B-16") else "imagenet" if encoder == "resnet50" else None
        for row in ctx.rows:
            paper = TABLE10[key] if key and row == "f" else None
            paper = None if paper is None else tuple(paper[AUTHENTIC.index(t)] for t in targets)
            values = [core.scores_of(ctx, t, row=row, encoder=encoder, target=t) for t in targets]
            body.append([encoder, core.ROW_NAMES[row], *core.authentic_row(values, paper)])
    header = ["DDCUp Encoder", "Method", *(core.TARGETS[t].name for t in targets), "Average"]
    core.finish(ctx, f"Table 10: DDCUp encoder, trainer {args.backbone}; SRCC, final epoch, mean ± std over seeds",
                [("Published figures in brackets (resnet50 beside the paper's ViT-B/16 (ImageNet) line)",
                  core.markdown(header, body))])  # fmt: skip


def main(argv=None) -> int:
    return core.run_main(DRIVER, run, argv)


if __name__ == "__main__":
    sys.exit(main())
