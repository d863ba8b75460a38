"""Image embeddings for DDCUp: ResNet-50 (the paper's encoder), ViT-B/16 (Appendix F.2's Table 10) or an
open_clip model, written to Parquet.

``colour-texture`` is an offline fallback for machines without pretrained weights (colour and texture
statistics, no download, :func:`colour_texture_features`); it is not the paper's encoder.

ResNet-50 input follows the paper: the centre 224x224 crop of the image as it is (no resize), normalised
with the ImageNet mean/std; the output is the 2048-d global-average-pooled feature. Images smaller than
224 on a side are an error (or skipped with ``skip_bad``): padding would embed a mostly-constant border that
no real reference has (KADID and KADIS images are 512x384, so the crop always fits). ViT-B/16 (``vit_b_16``)
takes its ImageNet weights' own inference transforms (shorter side 256, centre crop 224), so any size works;
its output is the 768-d class token. No encoder's output is L2-normalised here: DDCUp normalises the rows.

Incremental: when the output already exists with the same encoder, weights and preprocessing, images whose
(path, sha256) are unchanged keep their stored embedding and only new or changed files are embedded; files no
longer in the input are dropped. A partial artifact is written every ``checkpoint_every`` images, so an
interrupted run resumes where it stopped; it is marked ``partial`` in its metadata, and every other reader
refuses it (reshape.artifacts.read_parquet).

Speed (issue #28): convolutional encoders run channels-last; ``--precision auto`` uses bfloat16 where the
hardware computes it natively (:func:`native_bf16`); loader workers decode while the model runs. The layout
and precision are recorded in the metadata; ``precision="fp32", memory_format="contiguous"`` reproduces the
features of earlier versions byte for byte.

Modules: ``_inputs`` (image lists), ``_encoders`` (models, device, precision), ``_colour_texture`` (the
offline fallback), ``_loading`` (decoding workers), ``_stage`` (the stage), ``_on_ray`` (Ray backend).
"""

from reshape.features._colour_texture import (
    STATS_ENCODER,
    STATS_PREPROCESSING,
    STATS_SIDE,
    STATS_WEIGHTS,
    colour_texture_features,
)
from reshape.features._encoders import (
    CLIP_HINT,
    CROP,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MEMORY_FORMATS,
    NATIVE_BF16_CPU_FLAGS,
    NATIVE_BF16_ENV,
    PRECISIONS,
    RANDOM_INIT_SEED,
    RESNET_PREPROCESSING,
    VIT_PREPROCESSING,
    Encoder,
    StatsEncoder,
    _resnet50_state,
    build_clip,
    build_colour_texture,
    build_encoder,
    build_resnet50,
    build_vit_b_16,
    centre_crop_normalise,
    cpu_flags,
    load_state_file,
    native_bf16,
    resolve_device,
    resolve_precision,
    seeded_open_clip,
)
from reshape.features._inputs import IMAGE_EXTENSIONS, LIST_COLUMNS, collect_images, printable_path
from reshape.features._loading import available_cpus, default_workers
from reshape.features._on_ray import RAY_SHARD_IMAGES, embed_on_ray
from reshape.features._stage import (
    RANDOM_WEIGHTS_WARNING,
    ROW_BYTES,
    FeaturesConfig,
    FeaturesResult,
    FeaturesRun,
    RunSettings,
    run,
    run_features,
)

__all__ = [
    "CLIP_HINT",
    "CROP",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "LIST_COLUMNS",
    "MEMORY_FORMATS",
    "NATIVE_BF16_CPU_FLAGS",
    "NATIVE_BF16_ENV",
    "PRECISIONS",
    "RANDOM_INIT_SEED",
    "RANDOM_WEIGHTS_WARNING",
    "RAY_SHARD_IMAGES",
    "RESNET_PREPROCESSING",
    "ROW_BYTES",
    "STATS_ENCODER",
    "STATS_PREPROCESSING",
    "STATS_SIDE",
    "STATS_WEIGHTS",
    "VIT_PREPROCESSING",
    "Encoder",
    "FeaturesConfig",
    "FeaturesResult",
    "FeaturesRun",
    "RunSettings",
    "StatsEncoder",
    "_resnet50_state",
    "load_state_file",
    "seeded_open_clip",
    "available_cpus",
    "build_clip",
    "build_colour_texture",
    "build_encoder",
    "build_resnet50",
    "build_vit_b_16",
    "centre_crop_normalise",
    "collect_images",
    "colour_texture_features",
    "cpu_flags",
    "default_workers",
    "embed_on_ray",
    "native_bf16",
    "printable_path",
    "resolve_device",
    "resolve_precision",
    "run",
    "run_features",
]
