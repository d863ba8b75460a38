"""Tables 8-9, backbones: the baseline and SynDR-IQA trained with other networks, KADID-10k -> authentic sets.

    python examples/paper/tables8_9_backbones.py --kadid-root KADID_10k --pool KADID_10k/kadid_add81/ref_imgs \
        --livec-root ChallengeDB_release/Images --koniq-root koniq10k/512x384 \
        --bid-root BID/ImageDatabase --bid-mos bid_mos.csv --bid-resize \
        --backbone-weights vit_b_16=vit_b_16-c867db91.pth --backbone-weights swin_t=swin_t-704ceda3.pth \
        --backbone-weights clip_vit_b_16=open_clip_vit_b_16_openai.bin --out runs/tables8_9

Appendix F: Swin-T and ViT-B/16 (torchvision, ImageNet; Table 8) and the CLIP ViT-B/16 image tower
(open_clip, OpenAI weights; Table 9) replace ResNet-50 in the trainer, nothing else changes (DDCUp's
encoder stays ResNet-50). ``resnet50`` (Table 4's network) and ``vgg16`` can be added to
``--backbones``. Weights load offline: ``--backbone-weights NAME=PATH`` (a state_dict file), else
``--weights default`` (the library's cache, downloaded when absent) or ``none`` (random init, smoke tests).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper_core as core  # noqa: E402
from paper_published import AUTHENTIC, TABLE8_9  # noqa: E402

from reshape.train_reference import BACKBONES  # noqa: E402

DRIVER = "tables8_9_backbones"
PAPER_BACKBONES = "swin_t,vit_b_16,clip_vit_b_16"
NAMES = {"resnet50": "ResNet-50", "vit_b_16": "ViT-B/16 (ImageNet)", "swin_t": "Swin-T", "vgg16": "VGG-16",
         "clip_vit_b_16": "ViT-B/16 (CLIP)"}  # fmt: skip


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    core.add_common_args(p, targets=AUTHENTIC)
    core.add_authentic_args(p)
    p.add_argument(
        "--backbones", default=PAPER_BACKBONES, help=f"among {','.join(BACKBONES)} [{PAPER_BACKBONES}]"
    )
    p.add_argument(
        "--backbone-weights", action="append", metavar="NAME=PATH", help="a backbone's weights file"
    )
    return p.parse_args(argv)


def run(argv=None) -> None:
    args = parse_args(argv)
    defaults = {"rows": "a,f", "backbones": PAPER_BACKBONES, "targets": "livec,koniq,bid", "backbone": None}
    ctx = core.start(DRIVER, args, defaults)
    backbones = core.split_list(args.backbones, BACKBONES, "backbones")
    files = core.parse_named(args.backbone_weights, "backbone-weights")
    targets = core.split_list(args.targets, list(AUTHENTIC), "targets")
    tests = core.authentic_tests(ctx, targets)
    for target in targets:
        recipe = core.Recipe(target, target, encoder=args.ddcup_encoder, encoder_weights=args.ddcup_weights)
        dataset = core.build_recipe(ctx, recipe)
        for backbone in backbones:
            for row in ctx.rows:
                for seed in ctx.seeds:
                    config = core.train_config(
                        ctx, row, seed, backbone=backbone, weights=files.get(backbone, args.weights)
                    )
                    extra = {"recipe": recipe.record(), "backbone": backbone, "target": target}
                    core.cached_fit(ctx, f"{backbone} {target} row {row} seed {seed}", dataset, row, config,
                                    {target: tests[target]}, extra)  # fmt: skip
    body = []
    for backbone in backbones:
        for row in ctx.rows:
            paper = TABLE8_9.get(backbone, {}).get(row)
            paper = None if paper is None else tuple(paper[AUTHENTIC.index(t)] for t in targets)
            values = [core.scores_of(ctx, t, row=row, backbone=backbone, target=t) for t in targets]
            body.append([NAMES[backbone], core.ROW_NAMES[row], *core.authentic_row(values, paper)])
    header = ["Backbone", "Method", *(core.TARGETS[t].name for t in targets), "Average"]
    core.finish(ctx, "Tables 8-9: backbones, KADID-10k -> authentic sets; SRCC, final epoch, mean ± std over seeds",
                [("Published figures in brackets (ResNet-50: Table 4 rows a and f)", core.markdown(header, body))],
                ["Baseline = KADID with DGQA's type subset (row a); SynDR-IQA = DDCUp + DRCDown (row f)."])  # fmt: skip


def main(argv=None) -> int:
    return core.run_main(DRIVER, run, argv)


if __name__ == "__main__":
    sys.exit(main())
