"""The speed-ups in ``distortions`` keep results exactly: each fast path against its plain definition."""

from __future__ import annotations

import numpy as np
import pytest

from distortions import warp
from distortions.registry import as_rgb_float, minmax_stretch, stretched_input, stretched_output


@pytest.fixture(scope="module")
def photo(natural_photos: dict[str, np.ndarray]) -> np.ndarray:
    # an odd-sized crop with a dark corner, so the stretch is not the identity
    return natural_photos["coffee"][40:141, 60:223]


def _inputs(photo: np.ndarray) -> dict[str, np.ndarray]:
    grey = photo[..., 1]
    return {
        "uint8": photo,
        "uint8 grey": grey,
        "uint8 grey HxWx1": grey[..., None],
        "uint8 rgba": np.dstack([photo, np.full(photo.shape[:2], 7, np.uint8)]),
        "uint8 flat": np.full((9, 11, 3), 200, np.uint8),
        "uint8 strided": photo[::2, ::3],
        "uint16": photo.astype(np.uint16) * 257,
        "float32": photo.astype(np.float32) / 255,
        "float64 out of range": photo / 200.0 - 0.1,
    }


def test_stretched_input_equals_the_two_step_stretch(photo: np.ndarray) -> None:
    for name, image in _inputs(photo).items():
        fast = stretched_input(image)
        plain = minmax_stretch(as_rgb_float(image))
        assert fast.dtype == np.float64 and fast.shape == plain.shape, name
        np.testing.assert_array_equal(fast, plain, err_msg=name)


def test_stretched_input_leaves_the_caller_image_alone(photo: np.ndarray) -> None:
    image = photo.astype(np.float64) / 255
    before = image.copy()
    stretched_input(image)
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("kind", ["float64", "float32", "flat high", "flat in range", "read-only"])
def test_stretched_output_equals_clip_of_the_stretch(kind: str) -> None:
    rng = np.random.default_rng(3)
    y = {
        "float64": rng.normal(0.4, 0.7, (13, 17, 3)),
        "float32": rng.normal(0.4, 0.7, (13, 17, 3)).astype(np.float32),
        "flat high": np.full((5, 6, 3), 2.5),
        "flat in range": np.full((5, 6, 3), 0.25),
        "read-only": np.broadcast_to(rng.random((1, 17, 3)), (13, 17, 3)),
    }[kind]
    expected = np.clip(minmax_stretch(np.asarray(y, dtype=np.float64)), 0.0, 1.0).astype(np.float32)
    out = stretched_output(y)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, expected)


def _keys_reference(
    image: np.ndarray, sample_y: np.ndarray, sample_x: np.ndarray, pairwise: bool
) -> np.ndarray:
    """Keys bicubic in float32 written out tap by tap, row sums left to right or in pairs."""
    h, w = image.shape[:2]
    fy, fx = np.floor(sample_y), np.floor(sample_x)
    wy = warp.keys_weights((sample_y - fy).astype(np.float32))
    wx = warp.keys_weights((sample_x - fx).astype(np.float32))
    planar = np.moveaxis(image, 2, 0).astype(np.float32)
    out = np.zeros(planar.shape, dtype=np.float32)
    for m in range(4):
        rows = np.clip(fy.astype(int) - 1 + m, 0, h - 1)
        products = [planar[:, rows, np.clip(fx.astype(int) - 1 + n, 0, w - 1)] * wx[n] for n in range(4)]
        if pairwise:
            row_sum = (products[0] + products[1]) + (products[2] + products[3])
        else:
            row_sum = ((products[0] + products[1]) + products[2]) + products[3]
        out = out + row_sum * wy[m]
    return np.moveaxis(out, 0, 2).astype(np.float64)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
def test_bicubic_summation_orders_are_exact(sigma: float) -> None:
    rng = np.random.default_rng(11)
    image = rng.random((23, 31, 3))
    rows, cols = np.mgrid[0:23, 0:31].astype(np.float64)
    displacement = sigma * rng.standard_normal((23, 31, 2))
    sample = (rows - displacement[..., 0], cols - displacement[..., 1])
    for method, pairwise in (("shift", False), ("gather", True)):
        expected = _keys_reference(image, *sample, pairwise=pairwise)
        np.testing.assert_array_equal(warp.bicubic_sample(image, *sample, method=method), expected)


def test_jitter_reuses_no_caller_memory() -> None:
    image = np.random.default_rng(2).random((20, 24, 3)).astype(np.float32)
    before = image.copy()
    first = warp.jitter(image, 0.5, np.random.default_rng(9))
    np.testing.assert_array_equal(image, before)
    np.testing.assert_array_equal(warp.jitter(image, 0.5, np.random.default_rng(9)), first)
