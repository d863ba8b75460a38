"""Table 10, CLIP as DDCUp's encoder only: SynDR-IQA with a ViT-B/16 (ImageNet) trainer, KADID -> authentic sets.

    python examples/paper/table10_clip_ddcup.py --kadid-root KADID_10k --pool KADID_10k/kadid_add81/ref_imgs \
        --livec-root ChallengeDB_release/Images --koniq-root koniq10k/512x384 \
        --bid-root BID/ImageDatabase --bid-mos bid_mos.csv --bid-resize \
        --weights vit_b_16-c867db91.pth --encoder-weights clip:ViT-B-16=open_clip_vit_b_16_openai.bin \
        --out runs/table10

Each ``--ddcup-encoders`` entry embeds the references for DDCUp (``reshape features --encoder``), so it
changes the selection and the pseudo-labels' neighbours, and makes its own dataset; the trainer is the same
for every line (``--backbone``, ViT-B/16 by default, as in Appendix F.2). The default lines are the paper's
two: ``vit_b_16`` (torchvision ViT-B/16, ImageNet weights) and ``clip:ViT-B-16`` (open_clip, OpenAI
weights). ``resnet50`` (the paper's DDCUp encoder everywhere else) can be added as a third line; it has no
published figure. The ``vit_b_16`` encoder takes the trainer's ``--weights`` file when the trainer is
ViT-B/16 too (the same ImageNet weights), unless ``--encoder-weights vit_b_16=PATH`` names another.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_core as core  # noqa: E402
from paper_published import AUTHENTIC, TABLE10  # noqa: E402

DRIVER = "table10_clip_ddcup"
PAPER_ENCODERS = "vit_b_16,clip:ViT-B-16"
#: encoder -> the key of its published line in TABLE10 (resnet50, an extra line, has none)
PUBLISHED_LINE = {"vit_b_16": "imagenet", "clip:ViT-B-16": "clip", "clip:ViT-B-16:openai": "clip"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    core.add_common_args(p, targets=AUTHENTIC, rows="f")
    core.add_authentic_args(p)
    p.add_argument(
        "--ddcup-encoders",
        default=PAPER_ENCODERS,
        help=f"DDCUp encoders compared, e.g. {PAPER_ENCODERS},resnet50 [{PAPER_ENCODERS}]",
    )
    p.add_argument(
        "--encoder-weights", action="append", metavar="ENCODER=PATH", help="an encoder's weights file"
    )
    p.set_defaults(backbone="vit_b_16")
    return p.parse_args(argv)


def encoder_weights(encoder: str, args: argparse.Namespace) -> str:
    """An encoder's weights without ``--encoder-weights``: ``none`` with ``--weights none``; for
    ``vit_b_16`` under a ViT-B/16 trainer the trainer's own ``--weights`` (the same ImageNet network);
    else the library's default."""
    if args.weights == "none":
        return "none"
    if encoder == "vit_b_16" and args.backbone == "vit_b_16":
        return args.weights
    return "default"


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
        weights = files.get(encoder) or encoder_weights(encoder, args)
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
        key = PUBLISHED_LINE.get(encoder)
        for row in ctx.rows:
            paper = TABLE10[key] if key and row == "f" else None
            paper = None if paper is None else tuple(paper[AUTHENTIC.index(t)] for t in targets)
            values = [core.scores_of(ctx, t, row=row, encoder=encoder, target=t) for t in targets]
            body.append([encoder, core.ROW_NAMES[row], *core.authentic_row(values, paper)])
    header = ["DDCUp Encoder", "Method", *(core.TARGETS[t].name for t in targets), "Average"]
    core.finish(ctx, f"Table 10: DDCUp encoder, trainer {args.backbone}; SRCC, final epoch, mean ± std over seeds",
                [("Published figures in brackets (vit_b_16: the paper's ViT-B/16 (ImageNet) line; "
                  "clip:ViT-B-16: its ViT-B/16 (CLIP) line)",
                  core.markdown(header, body))])  # fmt: skip


def main(argv=None) -> int:
    return core.run_main(DRIVER, run, argv)


if __name__ == "__main__":
    sys.exit(main())
