"""`reshape features`: embed images (ResNet-50, ViT-B/16 or open_clip) into a features Parquet."""

from __future__ import annotations

import click

from reshape.cli.backend_opts import backend_options
from reshape.cli.common import fingerprint_option, is_quiet, output_options, show_progress


@click.command()
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Features Parquet to write; if it exists, unchanged images (same sha256) are reused.",
)
@click.option(
    "--encoder",
    default="resnet50",
    show_default=True,
    help="resnet50 (2048-d avgpool, 224 centre crop, no resize), vit_b_16 (torchvision ViT-B/16, 768-d class "
    "token, its weights' transforms: resize 256, centre crop 224), clip:<model>[:<pretrained>] "
    "(needs the `clip` extra), or colour-texture (offline fallback without pretrained weights: colour and "
    "texture statistics, not the paper's encoder).",
)
@click.option(
    "--weights",
    default="default",
    show_default=True,
    help="default = the library's pretrained weights (download/cache), none = random init (tests only), "
    "or PATH to a local state_dict / checkpoint.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="auto = CUDA when available.",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
    default="auto",
    show_default=True,
    help="auto = bf16 autocast where the hardware computes bfloat16 natively (CPUs with AVX-512 BF16 or "
    "AMX, GPUs from Ampere on), fp32 elsewhere; bf16 works on either device; fp16 needs CUDA. Recorded in "
    "the metadata; rows embedded at another precision are not reused.",
)
@click.option(
    "--memory-format",
    type=click.Choice(["channels-last", "contiguous"]),
    default="channels-last",
    show_default=True,
    help="Layout of convolutional encoders' tensors: channels-last is the fast one on CPUs and GPUs. "
    "--precision fp32 --memory-format contiguous reproduces the features of earlier reshape versions "
    "byte for byte.",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images per forward pass."
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="DataLoader worker processes that decode and crop images while the model runs (0 = in this "
    "process; the features do not depend on it). With --backend ray: the number of encoder actors (0 = one "
    "per GPU, or one per CPU without GPUs).  [default: CPU: one per two cores, at most 4; CUDA: all cores "
    "but one, at most 8; Ray: 0]",
)
@click.option(
    "--image-root",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Paths are stored relative to this folder (and CSV lists resolved against it).  "
    "[default: the folder given, or the common parent of all images]",
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Skip unreadable or too-small images (listed in the output metadata 'skipped') instead of failing.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=0),
    default=2048,
    show_default=True,
    help="Write the partial artifact every N embedded images so an interrupted run resumes (0 = off).",
)
@output_options
@backend_options
@fingerprint_option
def command(images: tuple[str, ...], **opts: object) -> None:
    """Embed IMAGES (folders, searched recursively; globs; or a CSV list with an `image` column).

    Images smaller than 224x224 are an error for resnet50 (or skipped with --skip-bad): the paper crops
    224x224 from KADID's 512x384 images and padding would embed an artificial border.
    """
    from reshape.features import FeaturesConfig, run

    result = run(FeaturesConfig(images=list(images), **opts, progress=show_progress()))
    if not is_quiet():
        for line in result.summary_lines():
            click.echo(line)
