"""`reshape distort` (issue #4): KADID distortions of reference images + manifest CSV."""

from __future__ import annotations

from pathlib import Path

import click

from reshape.cli.backend_opts import backend_options
from reshape.cli.common import fingerprint_option, int_list, is_quiet, output_options, show_progress
from reshape.errors import BadInputError

PRESET_HELP = "livec, koniq, bid, pipal1..pipal6 (the official per-target subsets) or all (1..25)"


def _levels(text: str | None) -> list[int] | None:
    try:
        return int_list(text)
    except ValueError:
        raise BadInputError(f"--levels {text!r}: expected levels 1..5 such as 1,3,5 or 1-5") from None


@click.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    metavar="PATH|URI",
    help="Output folder for <refstem>_<tt>_<ll>.<ext> images, or an object-store URI (s3://bucket/prefix, "
    "gs://..., any pyarrow.fs or fsspec URI) that every worker writes to directly. Its record of what it "
    "wrote is kept in OUT/.reshape-journal/: only those files are ever replaced or removed (earlier outputs "
    "this run does not produce are removed when unchanged); a file it did not write under a name it must "
    "produce stops the run before any work (see --overwrite). Must not be or lie inside the reference folder.",
)
@click.option(
    "--types", default=None, help="Distortion types: KADID ids 1..25 or names, e.g. 1,3,gaussian_blur,GBLUR."
)
@click.option("--preset", default=None, help=f"Type subset: {PRESET_HELP}. Combined with --types as a union.")
@click.option(
    "--levels",
    default=None,
    help="Levels 1..5, e.g. 1,3,5 or 1-5. [default: 1,3,5; 1-5 with --plan or --random-types]",
)
@click.option(
    "--plan",
    "plan",
    default=None,
    type=click.Path(path_type=Path),
    help="KADIS-700k-style plan CSV instead of the grid: one row per (reference, type), first column the "
    "reference's file name (relative to --ref-root, default SOURCE, a folder), second the KADID type id or "
    "name; a header line is tolerated (kadis700k_ref_imgs.csv works as it is).",
)
@click.option(
    "--random-types",
    type=int,
    default=None,
    metavar="N",
    help="Give each reference N distinct types drawn uniformly (from --types/--preset, default all 25), "
    "seeded by --seed; the drawn plan is written next to the manifest (<manifest stem>.plan.csv) for --plan.",
)
@click.option(
    "--dncnn-device",
    type=click.Choice(["cpu", "cuda", "auto"], case_sensitive=False),
    default="cpu",
    show_default=True,
    help="Where type 15's DnCNN runs (auto: cuda when torch sees a GPU). On Ray, cuda sends type-15 work "
    "to GPU workers while CPU workers make the other types. Recorded in the manifest.",
)
@click.option(
    "--dncnn-precision",
    type=click.Choice(["fp32", "bf16"], case_sensitive=False),
    default="fp32",
    show_default=True,
    help="DnCNN precision for type 15 (bf16: faster, opt-in, small 8-bit deviations). Recorded in the manifest.",
)
@click.option(
    "--manifest",
    default=None,
    metavar="PATH|URI",
    help="Manifest CSV to write (plus <manifest>.meta.json), a path or object-store URI. "
    "[default: OUT/manifest.csv]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["png", "bmp"], case_sensitive=False),
    default="png",
    show_default=True,
    help="Output image format (lossless).",
)
@click.option(
    "--resize",
    default=None,
    metavar="WxH",
    help="Prepare references KADID-style first: centre-crop to the W:H aspect ratio, then Pillow Lanczos "
    "resize to WxH (KADID uses 512x384). Default: use references as they are.",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes. The output bytes and manifest are identical for any value.",
)
@backend_options
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Global seed; each output's seed derives from it."
)
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Skip unreadable or too small references instead of stopping; they are listed in the summary and "
    "in the manifest's .meta.json under 'skipped'.",
)
@click.option(
    "--dncnn-weights",
    default=None,
    type=click.Path(path_type=Path),
    help="DnCNN weights for type 15 (denoise). Without them a classical denoiser is used (with a warning) "
    "and "
    "recorded in the manifest's denoiser column.",
)
@click.option(
    "--ref-root",
    default=None,
    type=click.Path(path_type=Path),
    help="Root the reference paths are relative to. Default: the CSV's folder, the Parquet's image_root "
    "metadata, or the SOURCE folder itself.",
)
@output_options
@fingerprint_option
def command(
    source: Path,
    out_dir: str,
    types: str | None,
    preset: str | None,
    levels: str | None,
    plan: Path | None,
    random_types: int | None,
    dncnn_device: str,
    dncnn_precision: str,
    manifest: str | None,
    fmt: str,
    resize: str | None,
    workers: int,
    backend: str,
    ray_address: str | None,
    seed: int,
    skip_bad: bool,
    dncnn_weights: Path | None,
    ref_root: Path | None,
    overwrite: bool,
    wait: bool,
    fingerprint: str | None,
) -> None:
    """Distort reference images with KADID-10k distortions and write a manifest CSV.

    SOURCE is a folder of reference images (searched recursively), a single image, a selection Parquet from
    `reshape select` or a features Parquet from `reshape features` (column image relative to the
    image_root metadata), or a CSV list (column image, else the first column; paths relative to the
    CSV's folder or --ref-root).

    Outputs are named <refstem>_<tt>_<ll>.png as in KADID-10k. The manifest has one row per image:
    dist_img, ref_img, dist_type, dist_name, dist_level, parameter, seed, sha256, denoiser. Re-running
    resumes: recorded outputs that still hold their bytes (size and mtime, else sha256) are kept, missing
    or changed ones are made again. One run at a time per output (see --wait).

    KADIS-700k: `reshape distort REF_FOLDER --plan kadis700k_ref_imgs.csv --format bmp --out DIST` makes
    <stem>_<tt>_<ll>.bmp for every plan row and level 1-5 (docs/kadis700k.md).

    References must be at least 16x16 pixels (48x48 with type 20, 32x32 with type 23), checked after
    --resize.
    """
    from reshape.cli.common import log
    from reshape.distort import DistortConfig, run

    result = run(
        DistortConfig(
            source=source,
            out=out_dir,
            types=types,
            preset=preset,
            levels=_levels(levels),
            manifest=manifest,
            format=fmt,
            resize=resize,
            workers=workers,
            backend=backend,
            ray_address=ray_address,
            seed=seed,
            skip_bad=skip_bad,
            dncnn_weights=dncnn_weights,
            ref_root=ref_root,
            overwrite=overwrite,
            wait=wait,
            fingerprint=fingerprint,
            progress=show_progress(),
            plan=plan,
            random_types=random_types,
            dncnn_device=dncnn_device,
            dncnn_precision=dncnn_precision,
        )
    )
    lines = result.summary_lines()
    if not is_quiet():
        for line in lines:
            click.echo(line)
    elif result.skipped:
        log.error("%s", " ".join(lines[1:]))
