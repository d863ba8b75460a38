"""The type-15 denoisers: DnCNN weight loading (MatConvNet .mat, torch state_dict) and the fallback."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import scipy.io
from scipy import ndimage

import distortions
from distortions import denoisers


def _mcn_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """MatConvNet vl_nnconv semantics from its own layout (H x W x Cin x Cout, correlation, zero pad)."""
    if weight.ndim == 3:
        weight = weight[..., None]
    out = np.zeros(x.shape[:2] + (weight.shape[3],))
    for co in range(weight.shape[3]):
        for ci in range(weight.shape[2]):
            out[..., co] += ndimage.correlate(x[..., ci], weight[:, :, ci, co], mode="constant", cval=0.0)
        out[..., co] += bias.reshape(-1)[co]
    return out


def _cell(items: list) -> np.ndarray:
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


@pytest.fixture
def tiny_matconvnet(tmp_path):
    """A 3-conv DnCNN-shaped net in MatConvNet SimpleNN layout, with asymmetric random filters."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(3, 3, 1, 4)) * 0.5
    b1 = rng.normal(size=(1, 4)) * 0.1
    w2 = rng.normal(size=(3, 3, 4, 4)) * 0.3
    b2 = np.zeros((1, 4))
    mult = rng.uniform(0.5, 1.5, size=(4, 1))
    bn_bias = rng.normal(size=(4, 1)) * 0.1
    moments = np.c_[rng.normal(size=4) * 0.1, rng.uniform(0.5, 2.0, size=4)]
    w3 = rng.normal(size=(3, 3, 4)) * 0.2  # 3x3x4x1: MATLAB drops the trailing singleton
    b3 = np.array([[0.01]])
    layers = [
        {"type": "conv", "weights": _cell([w1, b1]), "pad": np.array([[1, 1, 1, 1]]), "stride": 1},
        {"type": "relu"},
        {"type": "conv", "weights": _cell([w2, b2]), "pad": np.array([[1, 1, 1, 1]]), "stride": 1},
        {"type": "bnorm", "weights": _cell([mult, bn_bias, moments])},
        {"type": "relu"},
        {"type": "conv", "weights": _cell([w3, b3]), "pad": np.array([[1, 1, 1, 1]]), "stride": 1},
    ]
    path = tmp_path / "tiny_dncnn.mat"
    scipy.io.savemat(path, {"net": {"layers": _cell(layers)}})

    def reference(grey: np.ndarray) -> np.ndarray:
        h = np.maximum(_mcn_conv(grey[..., None], w1, b1), 0)
        h = _mcn_conv(h, w2, b2)
        h = mult.reshape(-1) * (h - moments[:, 0]) / moments[:, 1] + bn_bias.reshape(-1)
        h = np.maximum(h, 0)
        residual = _mcn_conv(h, w3, b3)[..., 0]
        return grey - residual

    return path, reference


def test_matconvnet_layout_maps_to_the_same_network(tiny_matconvnet):
    path, reference = tiny_matconvnet
    denoiser = distortions.load_denoiser(path)
    assert "dncnn" in denoiser.name
    assert "tiny_dncnn.mat" in denoiser.name
    grey = np.random.default_rng(1).random((17, 23))
    np.testing.assert_allclose(denoiser(grey), reference(grey), atol=2e-5)


def _save_v73(path, layers: list[dict]) -> None:
    """Write ``net.layers`` the way MATLAB's ``save -v7.3`` does (layout read off cszn/DnCNN's
    GD_Gray_Blind.mat): HDF5 with reversed axes, structs as groups, cells as object references kept in
    ``#refs#``, char arrays as uint16 codes."""
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        counter = iter(range(10**6))

        def store(arr: np.ndarray):
            ds = refs.create_dataset(str(next(counter)), data=np.asarray(arr, np.float32).T)
            ds.attrs["MATLAB_class"] = np.bytes_("single")
            return ds.ref

        layer_refs = []
        for layer in layers:
            g = refs.create_group(str(next(counter)))
            g.attrs["MATLAB_class"] = np.bytes_("struct")
            codes = np.array([[ord(c)] for c in layer["type"]], dtype=np.uint16)
            g.create_dataset("type", data=codes).attrs["MATLAB_class"] = np.bytes_("char")
            if "weights" in layer:
                cell = np.array([[store(p)] for p in layer["weights"]], dtype=h5py.ref_dtype)
                g.create_dataset("weights", data=cell).attrs["MATLAB_class"] = np.bytes_("cell")
            layer_refs.append([g.ref])
        net = f.create_group("net")
        net.attrs["MATLAB_class"] = np.bytes_("struct")
        net.create_dataset("layers", data=np.array(layer_refs, dtype=h5py.ref_dtype))
    # MATLAB's 128-byte header in the user block: text, subsystem offset, version 0x0200, endian "IM"
    header = b"MATLAB 7.3 MAT-file, written by a test".ljust(116, b" ") + bytes(8) + b"\x00\x02IM"
    with open(path, "r+b") as fh:
        fh.write(header)


def test_matconvnet_v73_hdf5_loads_like_v7(tiny_matconvnet, tmp_path):
    # cszn/DnCNN ships its models as MATLAB v7.3 (HDF5) files; the same net saved that way must load
    # to the same network as the v7 file.
    path, reference = tiny_matconvnet
    raw = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)
    cells = denoisers._cells_from_v7(path, raw)
    layers = [{"type": kind, **({"weights": params} if params else {})} for kind, params in cells]
    v73 = tmp_path / "tiny_v73.mat"
    _save_v73(v73, layers)
    with pytest.raises(NotImplementedError):
        scipy.io.loadmat(v73)  # really a v7.3 file, not something scipy reads
    grey = np.random.default_rng(2).random((19, 21))
    np.testing.assert_allclose(distortions.load_denoiser(v73)(grey), reference(grey), atol=2e-5)


@pytest.mark.skipif(
    not os.environ.get("RESHAPE_DNCNN_WEIGHTS"),
    reason="set RESHAPE_DNCNN_WEIGHTS to cszn/DnCNN's model/GD_Gray_Blind.mat to test the real weights",
)
def test_real_dncnn_b_weights_denoise(natural_photos):
    denoiser = distortions.load_denoiser(os.environ["RESHAPE_DNCNN_WEIGHTS"])
    assert denoiser.depth == 20
    grey = natural_photos["chelsea"][..., 1].astype(np.float64) / 255.0
    rng = np.random.default_rng(0)
    noisy = np.clip(grey + rng.normal(0, 0.1, grey.shape), 0, 1)  # sigma 25.5/255, inside DnCNN-B's range

    def psnr(a: np.ndarray) -> float:
        return float(10 * np.log10(1.0 / np.mean((a - grey) ** 2)))

    assert psnr(denoiser(noisy)) > psnr(noisy) + 8
    assert psnr(denoiser(noisy)) > psnr(denoisers.NLMeansDenoiser()(noisy))


def test_matconvnet_transposed_filters_would_differ(tiny_matconvnet):
    # guards the test above: a loader that forgot the HWIO -> OIHW transpose or flipped filters would fail
    path, reference = tiny_matconvnet
    layers = denoisers.layers_from_matconvnet(path)
    flipped = [
        (kind, *rest) if kind != "conv" else (kind, rest[0][..., ::-1, ::-1], rest[1])
        for kind, *rest in layers
    ]
    grey = np.random.default_rng(1).random((17, 23))
    wrong = denoisers.DnCNN(flipped, name="flipped")(grey)
    assert np.max(np.abs(wrong - reference(grey))) > 1e-2


def test_identity_like_matconvnet_weights(tmp_path):
    # conv 1: centre tap copies the input to channel 0; conv 2: returns channel 0 scaled by 0.25 as residual
    w1 = np.zeros((3, 3, 1, 2))
    w1[1, 1, 0, 0] = 1.0
    w2 = np.zeros((3, 3, 2))
    w2[1, 1, 0] = 0.25
    layers = [
        {"type": "conv", "weights": _cell([w1, np.zeros((1, 2))])},
        {"type": "relu"},
        {"type": "conv", "weights": _cell([w2, np.zeros((1, 1))])},
        {"type": "euclideanloss"},
    ]
    path = tmp_path / "identity.mat"
    scipy.io.savemat(path, {"net": {"layers": _cell(layers)}})
    grey = np.random.default_rng(2).random((9, 11))
    np.testing.assert_allclose(distortions.load_denoiser(path)(grey), 0.75 * grey, atol=1e-6)


def test_torch_state_dict_loads(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 1, 3, padding=1),
    )
    bn = model[3]
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.1, 0.1)
    model.eval()
    path = tmp_path / "dncnn.pth"
    torch.save(model.state_dict(), path)
    grey = np.random.default_rng(3).random((13, 16))
    with torch.no_grad():
        x = torch.from_numpy(grey.astype(np.float32))[None, None]
        expected = (x - model(x))[0, 0].numpy()
    denoiser = distortions.load_denoiser(path)
    assert denoiser.depth == 3
    np.testing.assert_allclose(denoiser(grey), expected, atol=1e-5)


def test_bad_weight_files_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        distortions.load_denoiser(tmp_path / "missing.mat")
    path = tmp_path / "pooling.mat"
    layers = [{"type": "conv", "weights": _cell([np.ones((3, 3, 1, 1)), np.zeros((1, 1))])}, {"type": "pool"}]
    scipy.io.savemat(path, {"net": {"layers": _cell(layers)}})
    with pytest.raises(ValueError, match=r"pooling\.mat: layer 2 has unsupported type 'pool'"):
        distortions.load_denoiser(path)
    garbage = tmp_path / "garbage.mat"
    garbage.write_bytes(b"this is not a MAT file at all" * 10)
    with pytest.raises(ValueError, match="garbage.mat"):
        distortions.load_denoiser(garbage)
    not_a_net = tmp_path / "other.mat"
    scipy.io.savemat(not_a_net, {"weights": np.ones(3)})
    with pytest.raises(ValueError, match="other.mat"):
        distortions.load_denoiser(not_a_net)


def test_fallback_denoiser_reduces_noise_and_tracks_level():
    rows, cols = np.mgrid[0:96, 0:128].astype(np.float64)
    clean = 0.5 + 0.3 * np.sin(rows / 9) * np.cos(cols / 13)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        denoiser = distortions.load_denoiser(None)
    for sigma in (0.03, 0.1):
        noisy = clean + sigma * np.random.default_rng(4).standard_normal(clean.shape)
        assert denoisers.estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.15)
        out = denoiser(noisy)
        assert np.mean((out - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)
