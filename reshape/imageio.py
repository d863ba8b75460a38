"""Robust image loading and saving, used by every stage.

``load_image`` returns float32 RGB in [0, 1] (H x W x 3, C-contiguous) for anything Pillow or OpenCV can
read, and raises :class:`~reshape.errors.BadInputError` with one line naming the file for anything else.

Conventions (documented in README):
* EXIF orientation is applied (the image is returned as a viewer shows it).
* Alpha (LA, RGBA, PA, palette with transparency) is composited onto **white**: synthetic-IQA references
  are photos, and white is what most viewers show behind transparent pixels.
* CMYK and images with an embedded ICC profile are converted to sRGB through that profile (LittleCMS);
  without a profile CMYK uses Pillow's naive inversion.
* 16-bit greyscale or colour PNG/TIFF keep their full precision (decoded through OpenCV) and are scaled by
  1/65535; 32-bit integer ("I") images are assumed to hold 16-bit data; float ("F") images are clipped.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from reshape.errors import BadInputError
from reshape.fileio import atomic_path

#: Default limit on decoded pixels (about 179 Mpx, Pillow's own bomb threshold x2).
DEFAULT_MAX_PIXELS = 2 * 89_478_485
SAVE_FORMATS = {".png": "PNG", ".bmp": "BMP"}
#: The suffixes (lower case) that make a file in a folder an image, for every stage that lists a folder
#: (features, distort): one list, so the two stages see the same images.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}
)

ImageFile.LOAD_TRUNCATED_IMAGES = False


@contextlib.contextmanager
def strict_decoding() -> Iterator[None]:
    """Decode with Pillow's truncation check on, whatever the process-wide setting: another library in
    the same process may have relaxed it on import (pyiqa's AVA loader sets LOAD_TRUNCATED_IMAGES), and
    then a truncated file would decode into grey pixels instead of failing."""
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before


def _fail(path: object, problem: str) -> BadInputError:
    return BadInputError(f"{path}: {problem}")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a directory, not an image file")
    if not path.is_file():
        raise _fail(path, "is not a regular file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes)")


def _to_srgb(im: Image.Image, path: Path) -> Image.Image:
    icc = im.info.get("icc_profile")
    if icc and im.mode in ("RGB", "RGBA", "CMYK", "L", "LA"):
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out_mode = "RGBA" if "A" in im.mode else "RGB"
            if im.mode in ("L", "LA"):
                return im
            return ImageCms.profileToProfile(im, src, dst, outputMode=out_mode)
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            warnings.warn(f"{path}: embedded ICC profile ignored ({exc})", stacklevel=3)
    return im


def _composite_white(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + (1.0 - alpha)


def _decode_high_bit_depth(path: Path) -> np.ndarray | None:
    """Decode 16-bit PNG/TIFF with OpenCV to keep the precision Pillow drops; None if not 16-bit."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if arr is None or arr.dtype != np.uint16:
        return None
    arr = arr.astype(np.float32) / 65535.0
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        return _composite_white(arr[..., [2, 1, 0, 3]])
    if arr.shape[2] == 3:
        return arr[..., ::-1]
    return np.repeat(arr[..., :1], 3, axis=2)


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as fh:
        head = fh.read(25)
    return head[24] if len(head) >= 25 and head[:8] == b"\x89PNG\r\n\x1a\n" else 8


def _pil_to_array(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) <= 65535 else arr.max()
        grey = np.clip(arr / scale, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "F":
        grey = np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode == "1":
        im = im.convert("L")
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "LA":
        im = im.convert("RGBA")
    im = _to_srgb(im, path)
    if im.mode == "RGBA":
        return _composite_white(np.asarray(im, dtype=np.float32) / 255.0)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im, dtype=np.float32) / 255.0


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | int | None = None,
    purpose: str | None = None,
) -> np.ndarray:
    """Load an image as float32 RGB in [0, 1], shape (H, W, 3).

    ``max_pixels`` guards against decompression bombs (checked from the header, before decoding).
    ``min_size`` is (min_width, min_height) or one int for both; ``purpose`` names the stage in the error.
    """
    p = Path(path)
    _check_file(p)
    try:
        with strict_decoding(), Image.open(p) as im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise _fail(
                    p, f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} (decompression bomb?)"
                )
            _check_min_size(p, w, h, min_size, purpose)
            fmt = im.format
            needs_16bit = (fmt == "PNG" and _png_bit_depth(p) == 16) or (
                fmt == "TIFF" and im.mode not in ("RGB", "RGBA", "L", "LA", "P", "CMYK", "1")
            )
            exif_orientation = im.getexif().get(0x0112, 1) if hasattr(im, "getexif") else 1
            if needs_16bit:
                im.load()  # still decode with Pillow: it detects truncation reliably
                arr = _decode_high_bit_depth(p)
                if arr is not None:
                    if exif_orientation not in (None, 1):
                        arr = _apply_orientation(arr, exif_orientation)
                    return np.ascontiguousarray(arr, dtype=np.float32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = ImageOps.exif_transpose(im)
                im.load()
            arr = _pil_to_array(im, p)
    except BadInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise _fail(p, f"decompression bomb refused ({exc})") from None
    except MemoryError:
        raise _fail(p, "image too large for this machine's memory") from None
    except UnidentifiedImageError:
        raise _fail(p, "not a recognised image file (unknown format or not an image)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(p, f"truncated or corrupt image data ({msg})") from None
    # exif_transpose may change the size (rotation), re-check for the caller's minimum
    _check_min_size(p, arr.shape[1], arr.shape[0], min_size, purpose)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.transpose(a, (1, 0, 2)),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.transpose(a[::-1, ::-1], (1, 0, 2)),
        8: lambda a: np.rot90(a, 1),
    }
    return ops.get(orientation, lambda a: a)(arr)


def _check_min_size(
    p: Path, w: int, h: int, min_size: tuple[int, int] | int | None, purpose: str | None
) -> None:
    if min_size is None:
        return
    mw, mh = (min_size, min_size) if isinstance(min_size, int) else min_size
    if w < mw or h < mh:
        for_what = f" for {purpose}" if purpose else ""
        raise _fail(p, f"image is {w}x{h}, smaller than the minimum {mw}x{mh}{for_what}")


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) as displayed (EXIF orientation applied), read from the header only."""
    p = Path(path)
    _check_file(p)
    try:
        with strict_decoding(), Image.open(p) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            return w, h
    except Image.DecompressionBombError as exc:
        raise _fail(p, f"decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        raise _fail(p, "not a recognised image file (unknown format or not an image)") from None
    except OSError as exc:
        raise _fail(p, f"unreadable image header ({exc})") from None


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0,1] -> uint8 with round-half-up, as MATLAB's im2uint8 does."""
    if image.dtype == np.uint8:
        return image
    return np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_image(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode float [0,1] or uint8 RGB to PNG/BMP bytes (deterministic for a given Pillow version)."""
    arr = to_uint8(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {arr.shape}")
    buf = io.BytesIO()
    # zlib level 3: ~3x faster than Pillow's default 6 for ~6 % larger files; encoding dominated the
    # distort stage's time at level 6.
    kwargs = {"compress_level": 3} if fmt.upper() == "PNG" else {}
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format=fmt.upper(), **kwargs)
    return buf.getvalue()


def save_image(path: str | os.PathLike[str], image: np.ndarray) -> bytes:
    """Atomically write ``image`` as PNG or BMP (chosen by suffix); returns the bytes written."""
    p = Path(path)
    fmt = SAVE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise BadInputError(f"{p}: unsupported output format {p.suffix!r} (use .png or .bmp)")
    data = encode_image(image, fmt)
    with atomic_path(p) as tmp:
        tmp.write_bytes(data)
    return data
