"""The paper's published figures for Tables 2, 3 and 5-10 (NeurIPS 2025 text, ``shared/paper``).

Only numbers the text gives are here; a cell the text does not give is ``None`` and prints without a
bracket. Table 2's text keeps two numbers per row under the DGQA heading (its SRCC and PLCC: their
column means are the printed Average, 0.4789 and 0.4625); SynDR-IQA's own Table 2 figures are missing
from the text, so the kit prints none for them.
"""

from __future__ import annotations

#: PIPAL algorithmic type (the ``TT`` of ``A0001_TT_NN``, the official ``PIPALFolder``'s numbering) ->
#: (row name, reshape preset trained for it, DGQA's published (SRCC, PLCC)).
TABLE2 = {
    1: ("Traditional SR", "pipal1", (0.4897, 0.4567)),
    2: ("PSNR-originated SR", "pipal2", (0.5419, 0.5404)),
    3: ("SR with kernel mismatch", "pipal3", (0.5810, 0.5956)),
    4: ("GAN-based SR", "pipal4", (0.1629, 0.1353)),
    5: ("Denoising", "pipal5", (0.5393, 0.5279)),
    6: ("SR and Denoising Joint", "pipal6", (0.5588, 0.5193)),
}
TABLE2_AVERAGE = (0.4789, 0.4625)

#: Table 3, (SRCC, PLCC) per method and test set; "kadid" is the intra-dataset 80/20 protocol (median of 10).
TABLE3 = {
    "a": {"kadid": (0.8528, 0.8526), "live": (0.9173, 0.8988), "csiq": (0.7965, 0.8017), "tid2013": (0.7077, 0.7220)},
    "f": {"kadid": (0.8922, 0.8974), "live": (0.9258, 0.9014), "csiq": (0.8069, 0.8092), "tid2013": (0.7147, 0.7328)},
}  # fmt: skip

#: SRCC on (LIVEC, KonIQ-10k, BID) of SynDR-IQA with one hyper-parameter changed (Appendix E).
#: Table 5, DDCUp: row -> (k, margin, SRCC); k None = ALL, margin None = "–" (no filter).
TABLE5 = {
    "ours": (5, 0.05, (0.713, 0.727, 0.788)),
    "1": (1, None, (0.703, 0.710, 0.782)),
    "2": (3, 0.05, (0.704, 0.710, 0.783)),
    "3": (5, 0.1, (0.704, 0.713, 0.779)),
    "4": (10, 0.1, (0.712, 0.723, 0.776)),
    "5": (None, None, (0.708, 0.723, 0.789)),
}
#: Table 6, DRCDown: row -> (quality threshold, feature threshold, SRCC).
TABLE6 = {
    "ours": (1.0, 0.1, (0.713, 0.727, 0.788)),
    "1": (0.5, 0.1, (0.700, 0.703, 0.792)),
    "2": (1.5, 0.1, (0.702, 0.698, 0.796)),
    "3": (1.0, 0.05, (0.709, 0.716, 0.792)),
    "4": (1.0, 0.15, (0.709, 0.715, 0.790)),
    "5": (0.5, 0.05, (0.701, 0.695, 0.789)),
    "6": (1.5, 0.15, (0.710, 0.704, 0.792)),
}
#: Table 7, DRCDown: row -> (minimum kept, SRCC).
TABLE7 = {
    "ours": (20, (0.713, 0.727, 0.788)),
    "1": (10, (0.703, 0.709, 0.777)),
    "2": (30, (0.701, 0.694, 0.791)),
}

#: Tables 8 and 9, SRCC on (LIVEC, KonIQ-10k, BID): backbone -> row -> figures (Baseline = DGQA's data).
TABLE8_9 = {
    "swin_t": {"a": (0.620, 0.600, 0.729), "f": (0.670, 0.719, 0.777)},
    "vit_b_16": {"a": (0.714, 0.694, 0.740), "f": (0.729, 0.717, 0.761)},
    "clip_vit_b_16": {"a": (0.653, 0.683, 0.706), "f": (0.692, 0.744, 0.766)},
    # ResNet-50 is Table 4's network (rows a and f there); VGG-16 appears only in Appendix A's UMAPs.
    "resnet50": {"a": (0.6958, 0.6810, 0.7696), "f": (0.7127, 0.7268, 0.7884)},
}
#: Table 10, SynDR-IQA with a ViT-B/16 (ImageNet) trainer, SRCC on (LIVEC, KonIQ-10k, BID) per DDCUp encoder.
TABLE10 = {"imagenet": (0.729, 0.717, 0.761), "clip": (0.739, 0.751, 0.778)}
AUTHENTIC = ("livec", "koniq", "bid")
