"""reshape.imageio: conversions to float RGB and one-line errors for every kind of bad input."""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from reshape.errors import BadInputError
from reshape.imageio import encode_image, image_size, load_image, save_image, to_uint8


@pytest.fixture
def photo(natural_photos) -> np.ndarray:
    return natural_photos["chelsea"][:120, :160]  # uint8 RGB, 160x120


def _bad(path: Path, **kw) -> str:
    with pytest.raises(BadInputError) as info:
        load_image(path, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    assert info.value.exit_code == 2
    return msg


# ----------------------------------------------------------------------------------------------- modes
def test_rgb_png_roundtrip_is_exact(tmp_path, photo):
    p = tmp_path / "a.png"
    Image.fromarray(photo).save(p)
    img = load_image(p)
    assert img.dtype == np.float32 and img.shape == (120, 160, 3) and img.flags.c_contiguous
    np.testing.assert_array_equal(to_uint8(img), photo)


def test_greyscale_is_replicated(tmp_path, photo):
    grey = photo[..., 1]
    p = tmp_path / "g.png"
    Image.fromarray(grey).save(p)
    img = load_image(p)
    assert img.shape == (120, 160, 3)
    for c in range(3):
        np.testing.assert_array_equal(to_uint8(img[..., c]), grey)


def test_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red channel
    rgba[:2, :, 3] = 255  # opaque top half
    rgba[2:, :, 3] = 0  # transparent bottom half
    p = tmp_path / "t.png"
    Image.fromarray(rgba).save(p)
    img = to_uint8(load_image(p))
    assert (img[:2] == [200, 0, 0]).all()
    assert (img[2:] == 255).all()


def test_la_half_alpha(tmp_path):
    la = np.stack([np.full((3, 3), 0, np.uint8), np.full((3, 3), 128, np.uint8)], axis=2)
    p = tmp_path / "la.png"
    Image.merge("LA", [Image.fromarray(la[..., 0]), Image.fromarray(la[..., 1])]).save(p)
    img = load_image(p)
    np.testing.assert_allclose(img, 1.0 - 128 / 255, atol=1e-6)


def test_palette_and_palette_transparency(tmp_path, photo):
    p = tmp_path / "p.png"
    pal = Image.fromarray(photo).quantize(16)
    pal.save(p)
    np.testing.assert_array_equal(to_uint8(load_image(p)), np.asarray(pal.convert("RGB")))
    q = tmp_path / "pt.png"
    pal.save(q, transparency=0)
    img = to_uint8(load_image(q))
    idx = np.asarray(pal)
    assert (img[idx == 0] == 255).all()


def test_cmyk_jpeg(tmp_path, photo):
    p = tmp_path / "c.jpg"
    Image.fromarray(photo).convert("CMYK").save(p, quality=95)
    img = to_uint8(load_image(p)).astype(int)
    assert img.shape == (120, 160, 3)
    assert np.abs(img - photo.astype(int)).mean() < 6


def test_icc_profile_is_applied(tmp_path, photo):
    # An sRGB profile embedded explicitly must give (nearly) the same pixels as none.
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    p = tmp_path / "icc.png"
    Image.fromarray(photo).save(p, icc_profile=srgb)
    img = to_uint8(load_image(p)).astype(int)
    assert np.abs(img - photo.astype(int)).max() <= 2


def test_sixteen_bit_png_keeps_precision(tmp_path):
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    rgb16 = np.stack([ramp, ramp[::-1], ramp.T], axis=2)
    p = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(p), rgb16[..., ::-1])
    img = load_image(p)
    np.testing.assert_allclose(img, rgb16 / 65535.0, atol=1e-6)
    g = tmp_path / "g16.png"
    assert cv2.imwrite(str(g), ramp)
    np.testing.assert_allclose(load_image(g)[..., 0], ramp / 65535.0, atol=1e-6)
    # 8-bit data could not have distinguished these neighbouring values
    assert len(np.unique(load_image(g)[..., 0])) == len(np.unique(ramp))


def test_i16_tiff(tmp_path):
    ramp = (np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60).astype(np.uint16)
    p = tmp_path / "i16.tif"
    Image.fromarray(ramp).save(p)  # uint16 -> mode I;16
    np.testing.assert_allclose(load_image(p)[..., 2], ramp / 65535.0, atol=1e-6)


@pytest.mark.parametrize(("orientation", "expect"), [(3, "rot180"), (6, "rot90cw"), (8, "rot90ccw")])
def test_exif_orientation(tmp_path, photo, orientation, expect):
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "o.png"
    Image.fromarray(photo).save(p, exif=exif)
    img = to_uint8(load_image(p))
    want = {"rot180": photo[::-1, ::-1], "rot90cw": np.rot90(photo, -1), "rot90ccw": np.rot90(photo, 1)}[
        expect
    ]
    np.testing.assert_array_equal(img, want)
    assert image_size(p) == (want.shape[1], want.shape[0])


# ----------------------------------------------------------------------------------------------- bad input
def test_missing_path(tmp_path):
    assert "no such file" in _bad(tmp_path / "nope.png")


def test_directory(tmp_path):
    d = tmp_path / "dir.png"
    d.mkdir()
    assert "directory" in _bad(d)


def test_zero_byte(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    assert "empty" in _bad(p)


def test_text_named_png(tmp_path):
    p = tmp_path / "text.png"
    p.write_text("this is not an image\n")
    assert "not a recognised image" in _bad(p)


@pytest.mark.parametrize("relaxed", [False, True], ids=["default", "relaxed-by-another-library"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(tmp_path, photo, fmt, relaxed, monkeypatch):
    # pyiqa's AVA loader sets Pillow's LOAD_TRUNCATED_IMAGES process-wide on import; reshape stays strict
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", relaxed)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format=fmt)
    data = buf.getvalue()
    p = tmp_path / f"trunc.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in _bad(p)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is relaxed  # the process-wide setting is left as it was


def test_decompression_bomb(tmp_path):
    p = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(p)  # 9 Mpx, tiny file
    msg = _bad(p, max_pixels=1_000_000)
    assert "3000x3000" in msg and "limit" in msg


def test_smaller_than_minimum(tmp_path, photo):
    p = tmp_path / "small.png"
    Image.fromarray(photo[:20, :30]).save(p)
    msg = _bad(p, min_size=(224, 224), purpose="features")
    assert "30x20" in msg and "224x224" in msg and "features" in msg


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_unreadable(tmp_path, photo):
    p = tmp_path / "locked.png"
    Image.fromarray(photo).save(p)
    p.chmod(0)
    _bad(p)


# ----------------------------------------------------------------------------------------------- saving
def test_save_is_atomic_and_deterministic(tmp_path, photo):
    img = photo.astype(np.float32) / 255
    p = tmp_path / "out" / "x.png"
    data = save_image(p, img)
    assert p.read_bytes() == data == encode_image(img)
    np.testing.assert_array_equal(to_uint8(load_image(p)), photo)
    assert [f.name for f in p.parent.iterdir()] == ["x.png"]
    bmp = tmp_path / "x.bmp"
    save_image(bmp, img)
    np.testing.assert_array_equal(to_uint8(load_image(bmp)), photo)


def test_save_failure_leaves_previous_file(tmp_path, photo):
    p = tmp_path / "keep.png"
    save_image(p, photo)
    before = p.read_bytes()
    with pytest.raises(ValueError):
        save_image(p, np.zeros((4, 4, 7)))  # not an image
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["keep.png"]


def test_save_rejects_unknown_suffix(tmp_path, photo):
    with pytest.raises(BadInputError, match="unsupported output format"):
        save_image(tmp_path / "x.gif", photo)


def test_to_uint8_rounds_half_up():
    x = np.array([0.0, 0.5 / 255, 1.5 / 255, 254.5 / 255, 1.0, 1.2, -0.1])
    np.testing.assert_array_equal(to_uint8(x), [0, 1, 2, 255, 255, 255, 0])
