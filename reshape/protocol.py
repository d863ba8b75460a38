"""The cross-dataset training and testing protocols of SynDR-IQA, as named sets of facts.

One place for the numbers that the published pyiqa options file and the ``examples/syn2real`` reference
trainer both use, so the two hand-offs cannot drift apart. The numbers the paper's text and the official
cross-dataset script (``train_test_IQA_cross.py`` with ``BaseIQASolver`` and ``data_loader``) share
(network, loss, optimiser, learning rates, batch, epochs, crops) are one :class:`TrainingProtocol`. They
differ in one training detail, the horizontal flip, so there are two named protocols:

* :data:`PAPER_PROTOCOL` follows the paper's text: one random crop per image *with* a random horizontal flip.
* :data:`OFFICIAL_PROTOCOL` follows the released script: ``data_loader.py`` trains on ``RandomCrop`` alone,
  no flip.

Neither one silently wins: every consumer names the protocol it follows (``PROTOCOLS``). The pyiqa options
file follows the paper's text; ``examples/syn2real --protocol official|paper`` lets the user choose. Where
pyiqa cannot express a detail the options file says so in a comment.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

import numpy as np

from reshape.errors import BadInputError

#: ImageNet statistics used by the official transforms (torchvision's).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrainingProtocol:
    """Hyper-parameters of the official cross-dataset training run."""

    name: str = "paper"
    backbone: str = "resnet50"  # torchvision ResNet-50, ImageNet-pretrained, avgpool -> Linear(2048, 1)
    loss: str = "l1"
    optimizer: str = "adam"
    #: backbone learning rate; the regression head uses lr * head_lr_ratio
    lr: float = 2e-5
    head_lr_ratio: int = 10
    weight_decay: float = 5e-4
    batch_size: int = 32
    epochs: int = 24
    patch_size: int = 224
    #: one random crop per training image per epoch
    train_patches: int = 1
    #: the paper's text adds a random horizontal flip; the official script's transform is RandomCrop only
    hflip: bool = True
    #: random crops per test image, their predictions averaged
    test_patches: int = 5
    seed: int = 123
    #: every dataset's scores are min-max normalised to 0..10 (DMOS flipped so higher = better)
    label_scale: tuple[float, float] = (0.0, 10.0)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


#: The paper's text (Section 4, Implementation Details): random crop + horizontal flip.
PAPER_PROTOCOL = TrainingProtocol()
#: The released script (``data_loader.py``: ``RandomCrop`` -> ``ToTensor`` -> ``Normalize``): no flip.
OFFICIAL_PROTOCOL = replace(PAPER_PROTOCOL, name="official", hflip=False)
PROTOCOLS = {p.name: p for p in (OFFICIAL_PROTOCOL, PAPER_PROTOCOL)}

#: Share of the training references held out for model choice (pyiqa's train.yml, ``--select-epoch val``).
VALIDATION_FRACTION = 0.1


def validation_references(
    references: Iterable[str], fraction: float = VALIDATION_FRACTION, seed: int = 0
) -> set[str]:
    """The references held out of training for model choice: ``round(fraction * n)`` of the sorted distinct
    references (at least one), drawn by a generator seeded with ``(seed, 7)``; every image of a reference goes with it, so
    validation and training never share a reference. Test sets never enter this choice."""
    refs = sorted(set(references))
    n_val = max(1, int(round(len(refs) * fraction))) if fraction > 0 else 0
    if fraction > 0 and not 1 <= n_val < len(refs):
        raise BadInputError(
            f"validation fraction {fraction} of {len(refs)} reference(s) leaves no training or no validation reference"
        )
    order = np.random.default_rng([seed, 7]).permutation(len(refs))
    return {refs[i] for i in order[:n_val]}


#: Table 4 of the paper (KADID-10k with the DGQA type subsets -> authentic sets), SRCC on
#: (LIVE Challenge, KonIQ-10k, BID). CD = the whole candidate pool added, SEL = DDCUp's selection of it,
#: DOWN = DRCDown; the paper's own text pairs c) with DOWN alone and e) with CD + SEL.
PAPER_TABLE4: dict[str, dict[str, object]] = {
    "a": {"recipe": "baseline", "srcc": (0.6958, 0.6810, 0.7696), "average": 0.7155},
    "b": {"recipe": "CD", "srcc": (0.6901, 0.7105, 0.7677), "average": 0.7228},
    "c": {"recipe": "DOWN", "srcc": (0.6962, 0.6887, 0.7793), "average": 0.7214},
    "d": {"recipe": "CD + DOWN", "srcc": (0.7095, 0.7107, 0.7775), "average": 0.7326},
    "e": {"recipe": "CD + SEL (DDCUp)", "srcc": (0.7219, 0.7119, 0.7822), "average": 0.7387},
    "f": {"recipe": "CD + SEL + DOWN (SynDR-IQA)", "srcc": (0.7127, 0.7268, 0.7884), "average": 0.7426},
}
