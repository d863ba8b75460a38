"""The public ``distortions`` API: lookup, argument errors, input formats and edge cases, determinism."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import distortions
from distortions._common import fspecial_motion
from distortions.params import TABLE
from distortions.registry import KERNELS, _load_kernels, minmax_stretch

#: types implemented in blur.py, color.py, tone.py and spatial.py
A_TYPES = (1, 2, 3, 4, 5, 7, 8, 16, 17, 18, 20, 21, 23, 24, 25)
#: smallest image side each size-limited type accepts
MIN_SIDE = {20: 48, 23: 32}


@pytest.fixture(scope="module")
def photo(natural_photos: dict[str, np.ndarray]) -> np.ndarray:
    # a 61x83 crop: no side a multiple of 8, 16 or 32
    return natural_photos["astronaut"][100:161, 150:233]


def registered_types() -> list[int]:
    _load_kernels()
    return sorted(KERNELS)


def test_part_a_types_are_registered() -> None:
    assert set(A_TYPES) <= set(registered_types())


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("gaussian_blur", 1),
        ("GBLUR", 1),
        ("gblur", 1),
        ("Lens_Blur", 2),
        ("motion-blur", 3),
        ("Saturation_Dist._HSV", 7),
        ("Saturation_Dist._Lab", 8),
        ("Non-eccentricity_patch", 20),
        ("color_block", 23),
        ("Contrast", 25),
        ("17", 17),
        (24, 24),
        (np.int64(5), 5),
    ],
)
def test_name_lookup(alias: object, expected: int) -> None:
    assert distortions.resolve_type(alias) == expected


def test_names_follow_kadid_order() -> None:
    names = distortions.names()
    assert len(names) == 25
    assert names[0] == "gaussian_blur"
    assert names[22] == "color_block"
    assert [distortions.resolve_type(n) for n in names] == list(range(1, 26))


@pytest.mark.parametrize("bad", [0, 26, -1, "foo", "", True])
def test_unknown_type_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="unknown distortion type|valid ids"):
        distortions.apply(np.zeros((16, 16, 3)), bad, 1)


@pytest.mark.parametrize("bad", [0, 6, 2.5, True, -3])
def test_bad_level_is_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="level must be 1..5"):
        distortions.apply(np.zeros((16, 16, 3)), 1, bad)


def test_level_parameter_table() -> None:
    assert distortions.parameter(1, 5) == 5
    assert distortions.parameter(3, 1) == 1
    assert TABLE[21].levels == (0.01, 0.05, 0.1, 0.2, 0.5)
    assert TABLE[24].levels == (1, 2, 3, 6, 12)


@pytest.mark.parametrize("dist_type", A_TYPES)
def test_grey_inputs_are_replicated_to_rgb(photo: np.ndarray, dist_type: int) -> None:
    grey = photo.mean(axis=2).astype(np.uint8)
    outs = [
        distortions.apply(img, dist_type, 3, rng=np.random.default_rng(1))
        for img in (grey, grey[..., None], np.repeat(grey[..., None], 3, axis=2))
    ]
    for out in outs:
        assert out.shape == (*grey.shape, 3)
    np.testing.assert_array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[1], outs[2])


@pytest.mark.parametrize("dist_type", A_TYPES)
def test_uint8_float_and_rgba_inputs_agree(photo: np.ndarray, dist_type: int) -> None:
    as_float64 = photo.astype(np.float64) / 255.0
    rgba = np.concatenate([photo, np.full((*photo.shape[:2], 1), 128, np.uint8)], axis=2)
    outs = [
        distortions.apply(img, dist_type, 4, rng=np.random.default_rng(2))
        for img in (photo, as_float64, as_float64.astype(np.float32), rgba)
    ]
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[3])
    # float32 input differs from float64 by its own rounding only
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-4)


@pytest.mark.parametrize("dist_type", A_TYPES)
@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_output_is_float32_rgb_in_unit_range(photo: np.ndarray, dist_type: int, level: int) -> None:
    out = distortions.apply(photo, dist_type, level, rng=np.random.default_rng(level))
    assert out.dtype == np.float32
    assert out.shape == photo.shape
    assert np.isfinite(out).all()
    assert out.min() >= 0.0
    assert out.max() <= 1.0


@pytest.mark.parametrize("dist_type", A_TYPES)
def test_tiny_image_works_or_names_the_minimum(dist_type: int) -> None:
    tiny = np.random.default_rng(0).random((8, 8, 3))
    if dist_type in MIN_SIDE:
        side = MIN_SIDE[dist_type]
        with pytest.raises(ValueError, match=f"at least {side}x{side}"):
            distortions.apply(tiny, dist_type, 5, rng=np.random.default_rng(0))
        just_big_enough = np.random.default_rng(0).random((side, side, 3))
        assert distortions.apply(just_big_enough, dist_type, 5, rng=np.random.default_rng(0)).shape == (
            side,
            side,
            3,
        )
        return
    for level in range(1, 6):
        out = distortions.apply(tiny, dist_type, level, rng=np.random.default_rng(0))
        assert out.shape == (8, 8, 3)
        assert np.isfinite(out).all()


@pytest.mark.parametrize("dist_type", A_TYPES)
@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_image_has_no_division_by_zero(dist_type: int, value: float) -> None:
    flat = np.full((50, 70, 3), value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = distortions.apply(flat, dist_type, 5, rng=np.random.default_rng(0))
    assert np.isfinite(out).all()
    assert out.shape == flat.shape


@pytest.mark.parametrize("dist_type", A_TYPES)
def test_same_seed_same_output(photo: np.ndarray, dist_type: int) -> None:
    a = distortions.apply(photo, dist_type, 5, rng=np.random.default_rng(42))
    b = distortions.apply(photo, dist_type, 5, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dist_type", [t for t in A_TYPES if not TABLE[t].deterministic])
def test_random_types_depend_on_the_seed(natural_photos: dict[str, np.ndarray], dist_type: int) -> None:
    image = natural_photos["coffee"][:96, :128]
    outs = {distortions.apply(image, dist_type, 5, rng=np.random.default_rng(s)).tobytes() for s in range(6)}
    assert len(outs) >= 3


@pytest.mark.parametrize("dist_type", [t for t in A_TYPES if TABLE[t].deterministic])
def test_deterministic_types_ignore_the_rng(photo: np.ndarray, dist_type: int) -> None:
    a = distortions.apply(photo, dist_type, 2, rng=np.random.default_rng(1))
    b = distortions.apply(photo, dist_type, 2, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)


def test_no_rng_still_works(photo: np.ndarray) -> None:
    assert distortions.apply(photo, "motion_blur", 3).shape == photo.shape


def test_every_registered_kernel_runs_at_every_level() -> None:
    image = np.random.default_rng(9).random((48, 64, 3))
    for dist_type in registered_types():
        if dist_type == 15:
            continue  # the denoiser's own tests cover it; here it would only add minutes
        for level in range(1, 6):
            out = distortions.apply(image, dist_type, level, rng=np.random.default_rng(level))
            assert out.shape == (48, 64, 3), (dist_type, level)
            assert out.dtype == np.float32
            assert 0.0 <= out.min() <= out.max() <= 1.0


def test_identity_levels_are_identities(photo: np.ndarray) -> None:
    stretched = minmax_stretch(photo / 255.0)
    # mean shift 0 and Lab saturation x1 leave the image unchanged (up to colour round trip)
    np.testing.assert_allclose(distortions.apply(photo, 18, 3), stretched, atol=1e-6)
    np.testing.assert_allclose(distortions.apply(photo, 8, 1), stretched, atol=1e-5)
    np.testing.assert_allclose(distortions.apply(photo, 1, 1), stretched, atol=1e-3)


def test_stronger_levels_distort_more(photo: np.ndarray) -> None:
    stretched = minmax_stretch(photo / 255.0)
    for dist_type in (1, 2, 4, 8, 16, 17, 21, 24):
        errors = [
            float(np.mean((distortions.apply(photo, dist_type, lv) - stretched) ** 2)) for lv in range(1, 6)
        ]
        assert errors == sorted(errors), (dist_type, errors)


def test_hsv_saturation_shortcut_equals_the_hsv_round_trip(photo: np.ndarray) -> None:
    from distortions._common import hsv2rgb, rgb2hsv

    image = minmax_stretch(photo / 255.0)
    kernel = distortions.get_kernel(7)
    for factor in TABLE[7].levels:
        hsv = rgb2hsv(image)
        hsv[..., 1] *= factor
        np.testing.assert_allclose(kernel(image, factor, np.random.default_rng(0)), hsv2rgb(hsv), atol=1e-12)
    # the round trip itself is lossless
    np.testing.assert_allclose(hsv2rgb(rgb2hsv(image)), image, atol=1e-12)


def test_lab_round_trip_and_white_point() -> None:
    from distortions._common import lab2rgb, rgb2lab

    rgb = np.random.default_rng(4).random((20, 30, 3))
    np.testing.assert_allclose(lab2rgb(rgb2lab(rgb)), rgb, atol=1e-10)
    white = rgb2lab(np.ones((1, 1, 3)))[0, 0]
    # MATLAB's whitepoint('d65') is rounded to four decimals, so white is L* = 100, a*, b* ~ 0
    np.testing.assert_allclose(white, [100.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(rgb2lab(np.zeros((1, 1, 3))), 0.0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.floats(min_value=0.5, max_value=12.0))
def test_disk_cells_cover_exactly_the_circle(radius: float) -> None:
    from distortions._common import disk_cell_areas, fspecial_disk

    areas = disk_cell_areas(radius)
    # the grid holds the whole circle, so the cell areas add up to pi r^2, each within [0, 1]
    assert areas.sum() == pytest.approx(np.pi * radius**2, rel=1e-9)
    assert areas.min() >= -1e-12
    assert areas.max() <= 1.0 + 1e-12
    np.testing.assert_allclose(areas, areas.T, atol=1e-12)
    np.testing.assert_allclose(areas, areas[::-1, ::-1], atol=1e-12)
    kernel = fspecial_disk(radius)
    assert kernel.sum() == pytest.approx(1.0)


def test_disk_radius_one_cells() -> None:
    from distortions._common import disk_cell_areas

    areas = disk_cell_areas(1.0)
    # centre cell fully inside; edge cell: 2*(0.5*(sqrt(3)/2 - 0.5) + circle segment), by hand
    segment = 0.5 * (np.pi / 2) - 0.5 * (np.sqrt(3) / 2 * 0.5 + np.pi / 3)
    edge = 2 * (0.5 * (np.sqrt(3) / 2 - 0.5) + segment)
    corner = (np.pi - 1.0 - 4 * edge) / 4
    np.testing.assert_allclose(areas[1, 1], 1.0)
    np.testing.assert_allclose(areas[0, 1], edge, rtol=1e-12)
    np.testing.assert_allclose(areas[0, 0], corner, rtol=1e-12)
    assert corner == pytest.approx(0.0788, abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=1.0, max_value=15.0), st.integers(min_value=0, max_value=360))
def test_motion_kernel_properties(length: float, angle: int) -> None:
    k = fspecial_motion(length, angle)
    assert k.shape[0] % 2 == 1
    assert k.shape[1] % 2 == 1
    assert k.min() >= 0
    assert k.sum() == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-12)
    # the kernel is just big enough for a segment of this length
    assert max(k.shape) <= 2 * int(np.ceil((length - 1) / 2)) + 3
    np.testing.assert_array_equal(k, fspecial_motion(length, angle % 180))
