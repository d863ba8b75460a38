"""Draw the distortion gallery of the docs from the ``distortions`` library itself.

One reference (scikit-image's bundled ``chelsea`` photo, centre-cropped to 4:3 and resized to KADID's
512x384 with Pillow's Lanczos filter, as KADID-10k's references were made) is distorted with every type at
every level, each with its own seeded generator, then shrunk to thumbnails:

* ``docs/images/gallery.jpg``: 25 rows (types 1..25) x the reference and levels 1..5;
* ``docs/images/preview.jpg``: the front page's picture, the six types of the paper's LIVE Challenge
  preset at levels 1, 3 and 5.

Type 15 (denoise) runs without DnCNN weights, i.e. with the library's classical fallback denoiser
(OpenCV non-local means); the caption in the docs says so. The output bytes depend only on the library,
Pillow and OpenCV versions: the images are computed single-threaded from fixed seeds.

    python docs/gen_gallery.py [--out docs/images] [--thumb 112]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import distortions

HERE = Path(__file__).resolve().parent
SIZE = (512, 384)  # KADID-10k's image size, width x height
PREVIEW_TYPES = (1, 3, 10, 17, 18, 25)
PREVIEW_LEVELS = (1, 3, 5)
LABEL_WIDTH = 168
HEADER = 18
INK = (20, 20, 20)
PAPER = (255, 255, 255)


def reference() -> np.ndarray:
    """chelsea, centre-cropped to 4:3 (offsets rounded down) and Lanczos-resized to 512x384, as uint8."""
    from skimage import data

    img = Image.fromarray(data.chelsea())
    w, h = img.size
    target = SIZE[0] / SIZE[1]
    cw, ch = (w, int(w / target)) if w / h < target else (int(h * target), h)
    left, top = (w - cw) // 2, (h - ch) // 2
    return np.asarray(img.crop((left, top, left + cw, top + ch)).resize(SIZE, Image.Resampling.LANCZOS))


def distorted(ref: np.ndarray, dist_type: int, level: int) -> np.ndarray:
    """One gallery cell as 8-bit RGB; the seed is a function of (type, level) only."""
    rng = np.random.default_rng([2025, dist_type, level])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # type 15's "no DnCNN weights" warning: the caption says it
        out = distortions.apply(ref, dist_type, level, rng=rng)
    return np.floor(out * 255.0 + 0.5).astype(np.uint8)


def thumbnail(image: np.ndarray, width: int) -> Image.Image:
    height = round(width * SIZE[1] / SIZE[0])
    return Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS)


def grid(ref: np.ndarray, types: tuple[int, ...], levels: tuple[int, ...], width: int) -> Image.Image:
    """Rows = types, columns = the reference then the levels; a label column and a header row."""
    height = round(width * SIZE[1] / SIZE[0])
    sheet = Image.new("RGB", (LABEL_WIDTH + width * (1 + len(levels)), HEADER + height * len(types)), PAPER)
    draw = ImageDraw.Draw(sheet)
    draw.text((LABEL_WIDTH + 4, 3), "reference", fill=INK)
    for j, level in enumerate(levels, start=1):
        draw.text((LABEL_WIDTH + j * width + 4, 3), f"level {level}", fill=INK)
    ref_thumb = thumbnail(ref, width)
    for i, dist_type in enumerate(types):
        y = HEADER + i * height
        spec = distortions.TABLE[dist_type]
        draw.text((4, y + height // 2 - 12), f"{dist_type:2d} {spec.name}", fill=INK)
        draw.text((4, y + height // 2 + 2), f"   ({spec.kadid})", fill=INK)
        sheet.paste(ref_thumb, (LABEL_WIDTH, y))
        for j, level in enumerate(levels, start=1):
            sheet.paste(thumbnail(distorted(ref, dist_type, level), width), (LABEL_WIDTH + j * width, y))
    return sheet


def save_jpeg(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=75, optimize=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images", help="folder for the two JPEGs")
    parser.add_argument("--thumb", type=int, default=112, help="thumbnail width in pixels")
    args = parser.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)
    ref = reference()
    save_jpeg(
        grid(ref, tuple(sorted(distortions.TABLE)), (1, 2, 3, 4, 5), args.thumb), args.out / "gallery.jpg"
    )
    save_jpeg(grid(ref, PREVIEW_TYPES, PREVIEW_LEVELS, args.thumb), args.out / "preview.jpg")


if __name__ == "__main__":
    main()
