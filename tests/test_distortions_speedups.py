"""Issue 30's speed-ups keep results: type-15 batching, the device/precision arguments, bf16's documented
deviation, and jitter against its definition written out tap by tap."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import distortions
from distortions import denoisers, noise, warp
from distortions.registry import stretched_input

torch = pytest.importorskip("torch")

#: bf16's documented deviation from fp32 (docs/distortions.md), in 8-bit steps of the denoised plane
BF16_MAX_8BIT = 2
BF16_MEAN_8BIT = 0.15


@pytest.fixture(scope="module")
def refs(kadid_reference: Path) -> dict[str, np.ndarray]:
    """The shared KADID reference photos (512x384, 8-bit RGB)."""
    from PIL import Image

    return {
        stem: np.asarray(Image.open(kadid_reference / f"{stem}.png").convert("RGB"))
        for stem in ("coffee", "chelsea")
    }


@pytest.fixture(scope="module")
def small_dncnn(tmp_path_factory) -> str:
    """A small DnCNN-shaped net (5 layers, 16 channels, batch norms) saved as a torch state_dict."""
    path = tmp_path_factory.mktemp("dncnn") / "small.pth"
    torch.save(denoisers.random_dncnn_state_dict(depth=5, channels=16, seed=3), path)
    return str(path)


@pytest.fixture(scope="module")
def dncnn_b(tmp_path_factory) -> str:
    """DnCNN-B's real shape (20 layers, 64 channels), random weights."""
    path = tmp_path_factory.mktemp("dncnn") / "dncnn_b.pth"
    torch.save(denoisers.random_dncnn_state_dict(), path)
    return str(path)


def _noisy_planes(refs: dict[str, np.ndarray], level: int, crop: tuple[slice, slice]) -> list[np.ndarray]:
    """The three noisy grey planes type 15 hands its denoiser, from a crop of a shared reference."""
    x = stretched_input(refs["coffee"][crop])
    noisy = noise.gaussian_noise(x, distortions.parameter(15, level), np.random.default_rng(15_000 + level))
    return [noisy[..., c] for c in range(3)]


def test_denoise_batch_equals_one_plane_at_a_time(refs, small_dncnn):
    # threads=1 in these tests: tiny passes on a busy machine otherwise wait on torch's thread barriers
    denoiser = distortions.load_denoiser(small_dncnn, threads=1)
    planes = _noisy_planes(refs, 3, (slice(0, 40), slice(0, 56)))
    planes += _noisy_planes(refs, 5, (slice(100, 131), slice(200, 223)))  # a second shape, interleaved
    planes = planes[::2] + planes[1::2]
    one_by_one = [denoiser(p) for p in planes]
    batched = denoiser.denoise_batch(planes)
    assert len(batched) == len(planes)
    for single, together in zip(one_by_one, batched):
        assert together.dtype == np.float64
        np.testing.assert_array_equal(together, single)
    # 31x23 planes through this 16-channel net: oneDNN rounds a 3-plane pass differently than 3 single
    # ones, which is why denoise_batch runs each plane alone
    odd = _noisy_planes(refs, 2, (slice(7, 38), slice(11, 34)))
    np.testing.assert_array_equal(np.stack(denoiser.denoise_batch(odd)), np.stack([denoiser(p) for p in odd]))
    # and the batch really denoises: the network's residual is applied, planes are not passed through
    assert max(np.abs(b - p).max() for b, p in zip(batched, planes)) > 1e-3


def test_apply_batch_equals_apply(refs, small_dncnn):
    denoiser = distortions.load_denoiser(small_dncnn, threads=1)
    images = [refs["coffee"][:48, :64], refs["chelsea"][10:50, 20:90], refs["coffee"][60:100, 8:72]]
    requests = [(images[0], 15, 1, 1), (images[1], 11, 2, 2), (images[2], "denoise", 5, 3)]
    requests += [(images[1], 15, 4, 4), (images[0], 19, 3, 5)]
    expected = [
        distortions.apply(image, t, level, rng=np.random.default_rng(seed), denoiser=denoiser)
        for image, t, level, seed in requests
    ]
    got = distortions.apply_batch(
        [(image, t, level, np.random.default_rng(seed)) for image, t, level, seed in requests],
        denoiser=denoiser,
    )
    for a, b in zip(expected, got):
        assert b.dtype == np.float32
        np.testing.assert_array_equal(b, a)
    # one generator shared by all requests is consumed in request order, as by apply one after the other
    shared = np.random.default_rng(9)
    expected = [
        distortions.apply(image, t, level, rng=shared, denoiser=denoiser) for image, t, level, _ in requests
    ]
    shared = np.random.default_rng(9)
    got = distortions.apply_batch([(i, t, lv, shared) for i, t, lv, _ in requests], denoiser=denoiser)
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(b, a)


def test_plain_callable_denoisers_still_work_in_batches(refs):
    calls = []

    def halve(grey: np.ndarray) -> np.ndarray:
        calls.append(grey.shape)
        return grey * 0.5

    image = refs["coffee"][:32, :40]
    out = distortions.apply_batch(
        [(image, 15, 2, np.random.default_rng(1)), (image, 15, 3, np.random.default_rng(2))], denoiser=halve
    )
    assert calls == [(32, 40)] * 6
    # halving then the final stretch is the noisy image stretched
    x = stretched_input(image)
    noisy = noise.gaussian_noise(x, distortions.parameter(15, 2), np.random.default_rng(1))
    lo, hi = noisy.min(), noisy.max()
    np.testing.assert_allclose(out[0], (noisy - lo) / (hi - lo), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "gpu"}, r"device must be one of 'cpu', 'cuda', 'auto', got 'gpu'"),
        ({"device": "CUDA"}, r"device must be one of"),
        ({"precision": "fp16"}, r"precision must be one of 'fp32', 'bf16', got 'fp16'"),
        ({"precision": "bfloat16"}, r"precision must be one of"),
        ({"threads": 0}, r"threads must be a positive integer or None, got 0"),
        ({"threads": 1.5}, r"threads must be a positive integer"),
    ],
)
def test_bad_device_precision_threads_are_one_clear_error(small_dncnn, kwargs, message):
    with pytest.raises(ValueError, match=message):
        distortions.load_denoiser(small_dncnn, **kwargs)
    # checked before anything else, also without weights (the fallback would ignore them otherwise)
    with warnings.catch_warnings(), pytest.raises(ValueError, match=message):
        warnings.simplefilter("ignore", UserWarning)
        distortions.load_denoiser(None, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has a CUDA device")
def test_cuda_without_a_cuda_device_says_so(small_dncnn):
    with pytest.raises(ValueError, match="no CUDA device"):
        distortions.load_denoiser(small_dncnn, device="cuda")
    assert distortions.load_denoiser(small_dncnn, device="auto").device == "cpu"


def test_labels_name_the_variant(small_dncnn):
    fp32 = distortions.load_denoiser(small_dncnn)
    assert fp32.name == "dncnn(depth=5, weights=small.pth)"  # unchanged: existing manifests stay valid
    assert (fp32.device, fp32.precision) == ("cpu", "fp32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bf16 = distortions.load_denoiser(small_dncnn, precision="bf16")
    assert bf16.name == "dncnn(depth=5, weights=small.pth, bf16)"
    # bf16 on a CPU that only emulates it is slower than fp32: said once, where it applies
    emulated = [w for w in caught if "emulates" in str(w.message)]
    assert len(emulated) == (0 if denoisers.cpu_has_native_bf16() else 1)


def test_threads_are_used_and_restored(refs, small_dncnn):
    planes = _noisy_planes(refs, 2, (slice(0, 24), slice(0, 32)))
    before = torch.get_num_threads()
    seen = []
    denoiser = distortions.load_denoiser(small_dncnn, threads=1)
    handle = denoiser.network[0].register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    one = denoiser.denoise_batch(planes)
    handle.remove()
    assert seen == [1, 1, 1]  # one pass per plane, each with the thread count asked for
    assert torch.get_num_threads() == before
    default = distortions.load_denoiser(small_dncnn, threads=2).denoise_batch(planes)
    for a, b in zip(one, default):  # thread counts may change float sums, not the result beyond rounding
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_bf16_stays_within_its_documented_deviation(refs, dncnn_b):
    planes = _noisy_planes(refs, 4, (slice(150, 182), slice(200, 248)))
    fp32 = distortions.load_denoiser(dncnn_b, threads=1).denoise_batch(planes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # emulated bf16 on CPUs without it (said elsewhere)
        bf16 = distortions.load_denoiser(dncnn_b, precision="bf16", threads=1).denoise_batch(planes)

    def to8(a: np.ndarray) -> np.ndarray:
        return np.floor(np.clip(a, 0.0, 1.0) * 255.0 + 0.5)

    deviation = np.abs(np.stack([to8(b) - to8(f) for f, b in zip(fp32, bf16)]))
    print(f"bf16 vs fp32: max {deviation.max()}, mean {deviation.mean():.4f} (8-bit steps)")
    assert deviation.max() <= BF16_MAX_8BIT
    assert deviation.mean() <= BF16_MEAN_8BIT
    # bf16 really ran in bf16 (a float32 run would match exactly)
    assert max(np.abs(b - f).max() for f, b in zip(fp32, bf16)) > 1e-5


# ---------------------------------------------------------------- 19 jitter


def _keys_round(planar: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """One jitter round from the definition: sample (y + dy, x + dx) with Keys weights, edge-replicated, in
    float32, row sums left to right unless the taps span more than ``MAX_SHIFT_SPAN`` offsets (then in
    pairs), rows weighted and added to zero in turn."""
    h, w = planar.shape[1:]
    fy, fx = np.floor(offsets[..., 0]), np.floor(offsets[..., 1])
    span = (fy.max() - fy.min() + 4) * (fx.max() - fx.min() + 4)
    wy = warp.keys_weights((offsets[..., 0] - fy).astype(np.float32))
    wx = warp.keys_weights((offsets[..., 1] - fx).astype(np.float32))
    rows0 = np.arange(h)[:, None] + fy.astype(int) - 1
    cols0 = np.arange(w)[None, :] + fx.astype(int) - 1
    out = np.zeros(planar.shape, dtype=np.float32)
    for m in range(4):
        rows = np.clip(rows0 + m, 0, h - 1)
        p = [planar[:, rows, np.clip(cols0 + n, 0, w - 1)] * wx[n] for n in range(4)]
        row_sum = (
            (p[0] + p[1]) + (p[2] + p[3]) if span > warp.MAX_SHIFT_SPAN else ((p[0] + p[1]) + p[2]) + p[3]
        )
        out = out + row_sum * wy[m]
    return out


def _jitter_reference(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Five rounds; each draws rng.standard_normal((h, w, 2)) and samples the image at -sigma times them."""
    planar = np.moveaxis(image, 2, 0).astype(np.float32)
    for _ in range(warp.JITTER_ROUNDS):
        planar = _keys_round(planar, rng.standard_normal(image.shape[:2] + (2,)) * -sigma)
    return np.moveaxis(planar, 0, 2).astype(np.float64)


#: jitter's two implementations: numba's loops (the ``fast`` extra) and numpy's
PATHS = [pytest.param(True, id="numba"), pytest.param(False, id="numpy")]


def _skip_without_numba(compiled: bool) -> None:
    if compiled and warp._compiled_round() is None:
        pytest.skip("numba is not installed (pip install 'reshape-iqa[fast]')")


@pytest.mark.parametrize("compiled", PATHS)
@pytest.mark.parametrize("level", [1, 3, 5])
def test_jitter_equals_its_definition(refs, level, compiled):
    _skip_without_numba(compiled)
    sigma = distortions.parameter(19, level)
    x = stretched_input(refs["chelsea"][100:164, 150:246])
    expected = _jitter_reference(x, sigma, np.random.default_rng(19_000 + level))
    got = warp.jitter_rounds(x, sigma, np.random.default_rng(19_000 + level), compiled=compiled)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("compiled", PATHS)
def test_jitter_equals_its_definition_with_wide_displacements(compiled):
    # sigma 3: tap windows span more than MAX_SHIFT_SPAN offsets, so rows sum in pairs; odd channel counts
    _skip_without_numba(compiled)
    x = np.random.default_rng(4).random((29, 37, 5))
    expected = _jitter_reference(x, 3.0, np.random.default_rng(8))
    got = warp.jitter_rounds(x, 3.0, np.random.default_rng(8), compiled=compiled)
    np.testing.assert_array_equal(got, expected)


def test_jitter_kernel_equals_the_numpy_path(refs):
    _skip_without_numba(True)
    x = stretched_input(refs["coffee"][:40, :56])
    fast = distortions.apply(refs["coffee"][:40, :56], 19, 4, rng=np.random.default_rng(2))
    numpy_only = warp.jitter_rounds(x, distortions.parameter(19, 4), np.random.default_rng(2), compiled=False)
    np.testing.assert_array_equal(fast, distortions.registry.stretched_output(numpy_only))


def test_jitter_without_numba_gives_the_same_bytes(tmp_path):
    # the base install (no 'fast' extra): numba hidden the way a missing package behaves, in a fresh
    # interpreter; jitter still runs, on the numpy path, and matches this process's result
    script = (
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, distortions\n"
        "from distortions import warp\n"
        "x = np.random.default_rng(6).random((33, 45, 3))\n"
        "assert warp._compiled_round() is None\n"
        "np.save(sys.argv[1], distortions.apply(x, 19, 5, rng=np.random.default_rng(3)))\n"
    )
    out = tmp_path / "jitter.npy"
    res = subprocess.run(
        [sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    x = np.random.default_rng(6).random((33, 45, 3))
    np.testing.assert_array_equal(np.load(out), distortions.apply(x, 19, 5, rng=np.random.default_rng(3)))
