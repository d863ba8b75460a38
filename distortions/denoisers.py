"""Grey-image denoisers for type 15: the DnCNN network in torch, and a classical fallback.

The reference generator denoises each RGB channel with MATLAB's pretrained DnCNN (``denoisingNetwork``).
Weights are never shipped with this package: pass a MatConvNet ``.mat`` (e.g. cszn/DnCNN
``model/GD_Gray_Blind.mat``) or a torch state_dict (``.pth``/``.pt``, or ``.safetensors``) to
:func:`load_denoiser`. Without weights, :func:`load_denoiser` returns non-local means (OpenCV), warns, and
says so in its ``name`` so the distort manifest records which denoiser made each image.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: ``name`` of the classical fallback, recorded in manifests
FALLBACK_NAME = "nlmeans-fallback(opencv fastNlMeansDenoising, h=0.9*sigma_est; NOT DnCNN)"

# One layer of the network, framework neutral: ("conv", weight[Cout,Cin,kh,kw], bias[Cout]) |
# ("bn", scale[C], shift[C]) (inference-time affine) | ("relu",).
Layer = tuple[Any, ...]


def estimate_noise_sigma(grey: np.ndarray) -> float:
    """Noise standard deviation from the finest diagonal Haar band (median absolute deviation / 0.6745)."""
    h2, w2 = (grey.shape[0] // 2) * 2, (grey.shape[1] // 2) * 2
    if h2 == 0 or w2 == 0:
        return 0.0
    g = grey[:h2, :w2]
    diagonal = (g[0::2, 0::2] - g[0::2, 1::2] - g[1::2, 0::2] + g[1::2, 1::2]) / 2.0
    return float(np.median(np.abs(diagonal)) / 0.6745)


class NLMeansDenoiser:
    """OpenCV non-local means on the 8-bit grey image, filter strength tied to the estimated noise level."""

    name = FALLBACK_NAME

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        import cv2

        grey = np.asarray(grey, dtype=np.float64)
        # h close to the noise std (in 8-bit units) removes the noise without flattening texture completely.
        h = max(1.0, 0.9 * 255.0 * estimate_noise_sigma(grey))
        grey8 = np.floor(np.clip(grey, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        out = cv2.fastNlMeansDenoising(grey8, None, h=float(h), templateWindowSize=7, searchWindowSize=21)
        return out.astype(np.float64) / 255.0


def _unwrap(value: Any) -> Any:
    """Strip the 1x1 object/cell wrappers that scipy.io.loadmat puts around MATLAB structs and cells."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    return value


def _field(struct: Any, name: str) -> Any:
    if hasattr(struct, name):
        return getattr(struct, name)
    if isinstance(struct, np.ndarray) and struct.dtype.names and name in struct.dtype.names:
        return struct[name]
    raise KeyError(name)


def _text(value: Any) -> str:
    value = _unwrap(value)
    if isinstance(value, np.ndarray):
        return "".join(str(v) for v in value.reshape(-1))
    return str(value)


def _conv_from_matconvnet(weight: np.ndarray, bias: np.ndarray | None) -> Layer:
    weight = np.asarray(weight, dtype=np.float32)
    # MATLAB drops trailing singleton dimensions: a 3x3x64x1 filter bank is saved as 3x3x64.
    while weight.ndim < 4:
        weight = weight[..., None]
    # MatConvNet filters are H x W x Cin x Cout and vl_nnconv correlates (no flip), like torch.
    torch_weight = np.ascontiguousarray(weight.transpose(3, 2, 0, 1))
    cout = torch_weight.shape[0]
    torch_bias = np.zeros(cout, np.float32) if bias is None else np.asarray(bias, np.float32).reshape(-1)
    if torch_bias.size != cout:
        raise ValueError(f"conv bias has {torch_bias.size} values for {cout} output channels")
    return ("conv", torch_weight, torch_bias)


def _bn_affine(mult: np.ndarray, bias: np.ndarray, mean: np.ndarray, std: np.ndarray) -> Layer:
    scale = np.asarray(mult, np.float64).reshape(-1) / np.asarray(std, np.float64).reshape(-1)
    shift = np.asarray(bias, np.float64).reshape(-1) - scale * np.asarray(mean, np.float64).reshape(-1)
    return ("bn", scale.astype(np.float32), shift.astype(np.float32))


def _cells_from_v7(path: str | Path, mat: dict[str, Any]) -> list[tuple[str, list[np.ndarray]]]:
    """``net.layers`` of a scipy-loaded (v5/v7) .mat as (type, parameter arrays in MATLAB axis order)."""
    if "net" not in mat:
        raise ValueError(f"{path}: no 'net' variable (expected a MatConvNet SimpleNN model)")
    net = _unwrap(mat["net"])
    cells = [_unwrap(c) for c in np.asarray(_field(net, "layers"), dtype=object).reshape(-1)]
    out = []
    for layer in cells:
        kind = _text(_field(layer, "type")).lower()
        try:
            params = [_unwrap(p) for p in np.asarray(_field(layer, "weights"), dtype=object).reshape(-1)]
        except KeyError:  # the pre-2015 SimpleNN format, or a layer without parameters
            params = [_unwrap(_field(layer, f)) for f in ("filters", "biases") if hasattr(layer, f)]
        out.append((kind, [np.asarray(p) for p in params]))
    return out


def _cells_from_v73(path: str | Path) -> list[tuple[str, list[np.ndarray]]]:
    """The same from a MATLAB v7.3 (HDF5) .mat, the format of cszn/DnCNN's ``model/*.mat``.

    HDF5 stores MATLAB's column-major arrays with the axes reversed, so ``.T`` restores MATLAB's order;
    structs are groups, cells are arrays of object references, char arrays are uint16 codes.
    """
    try:
        import h5py
    except ImportError as exc:
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) .mat files need the 'h5py' package") from exc

    def value(f: Any, item: Any) -> Any:
        return f[item] if isinstance(item, h5py.Reference) else item

    def array(f: Any, ds: Any) -> np.ndarray:
        if ds.attrs.get("MATLAB_empty", 0):
            return np.zeros((0,), np.float32)
        return np.asarray(ds[()]).T

    with h5py.File(path, "r") as f:
        if "net" not in f:
            raise ValueError(f"{path}: no 'net' variable (expected a MatConvNet SimpleNN model)")
        net = f["net"]
        if "layers" not in net:
            raise ValueError(f"{path}: 'net' has no 'layers' field")
        out = []
        for ref in np.asarray(net["layers"][()]).reshape(-1):
            layer = value(f, ref)
            kind = "".join(chr(c) for c in np.asarray(layer["type"][()]).reshape(-1)).lower()
            params: list[np.ndarray] = []
            if "weights" in layer:
                for p in np.asarray(layer["weights"][()]).reshape(-1):
                    params.append(array(f, value(f, p)))
            out.append((kind, params))
    return out


def layers_from_matconvnet(path: str | Path) -> list[Layer]:
    """Read a MatConvNet SimpleNN ``net`` (``net.layers{i}`` with ``type`` conv/bnorm/relu) from a .mat.

    Both the v5/v7 format (scipy) and v7.3/HDF5 (h5py; cszn/DnCNN's ``GD_Gray_Blind.mat`` is one) load.
    """
    import scipy.io

    try:
        cells = _cells_from_v7(path, scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=False))
    except NotImplementedError:  # scipy's answer to v7.3 files
        try:
            cells = _cells_from_v73(path)
        except (OSError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable MATLAB v7.3 .mat file ({exc})") from exc
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable .mat file ({exc})") from exc
    layers: list[Layer] = []
    for index, (kind, params) in enumerate(cells, start=1):
        if kind == "conv":
            if not params:
                raise ValueError(f"{path}: conv layer {index} has no weights")
            bias = params[1] if len(params) > 1 and params[1].size else None
            layers.append(_conv_from_matconvnet(params[0], bias))
        elif kind == "bnorm":
            if len(params) != 3:
                raise ValueError(f"{path}: bnorm layer {index} needs mult, bias and moments")
            mult, bias, moments = params
            moments = np.asarray(moments, np.float64).reshape(-1, 2)  # column 1 mean, column 2 std
            layers.append(_bn_affine(mult, bias, moments[:, 0], moments[:, 1]))
        elif kind == "relu":
            layers.append(("relu",))
        elif kind in ("loss", "softmaxloss", "euclideanloss", "pdist"):
            continue  # training-only heads
        else:
            raise ValueError(f"{path}: layer {index} has unsupported type {kind!r}")
    return layers


def layers_from_state_dict(state: dict[str, Any], source: str = "state_dict") -> list[Layer]:
    """Map a DnCNN torch state_dict (conv / BatchNorm2d modules in order) to layers.

    Module prefixes are grouped in order of appearance, so the common layouts (``model.N.*``, ``dncnn.N.*``,
    ``body.N.*``) all load. A ReLU follows the first conv and every BatchNorm; the last conv has none.
    """
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in state.items():
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = np.asarray(
            tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else tensor
        )
    layers: list[Layer] = []
    for prefix, params in groups.items():
        if "running_mean" in params:
            eps = 1e-5
            std = np.sqrt(params["running_var"].astype(np.float64) + eps)
            layers.append(_bn_affine(params["weight"], params["bias"], params["running_mean"], std))
            layers.append(("relu",))
        elif "weight" in params and params["weight"].ndim == 4:
            weight = params["weight"].astype(np.float32)
            bias = params.get("bias")
            cout = weight.shape[0]
            layers.append(
                ("conv", weight, np.zeros(cout, np.float32) if bias is None else bias.astype(np.float32))
            )
        elif params.keys() <= {"num_batches_tracked"}:
            continue
        else:
            raise ValueError(f"{source}: cannot map module {prefix!r} with parameters {sorted(params)}")
    convs = [i for i, layer in enumerate(layers) if layer[0] == "conv"]
    if not convs:
        raise ValueError(f"{source}: no convolution weights found")
    # Conv layers directly followed by a conv (no BatchNorm between) get their ReLU, except the last one.
    with_relu: list[Layer] = []
    for i, layer in enumerate(layers):
        with_relu.append(layer)
        if layer[0] == "conv" and i != convs[-1] and i + 1 < len(layers) and layers[i + 1][0] == "conv":
            with_relu.append(("relu",))
    return with_relu


class DnCNN:
    """DnCNN (Zhang et al. 2017): conv+ReLU, (conv+BN+ReLU) x (depth-2), conv; predicts the noise residual.

    Built from a framework-neutral layer list so MatConvNet and torch weights share one network; 17 layers
    of 64 channels is DnCNN-S, 20 is DnCNN-B (the blind grey model the generator used).
    """

    def __init__(self, layers: Sequence[Layer], name: str, device: str = "cpu") -> None:
        import torch
        from torch import nn

        modules: list[nn.Module] = []
        for layer in layers:
            if layer[0] == "conv":
                weight = torch.from_numpy(np.ascontiguousarray(layer[1], np.float32))
                cout, cin, kh, kw = weight.shape
                conv = nn.Conv2d(cin, cout, (kh, kw), padding=(kh // 2, kw // 2), bias=True)
                conv.weight.data.copy_(weight)
                conv.bias.data.copy_(torch.from_numpy(np.ascontiguousarray(layer[2], np.float32)))
                modules.append(conv)
            elif layer[0] == "bn":
                channels = len(layer[1])
                affine = nn.Conv2d(channels, channels, 1, groups=channels, bias=True)
                affine.weight.data.copy_(
                    torch.from_numpy(np.ascontiguousarray(layer[1], np.float32)).view(-1, 1, 1, 1)
                )
                affine.bias.data.copy_(torch.from_numpy(np.ascontiguousarray(layer[2], np.float32)))
                modules.append(affine)
            elif layer[0] == "relu":
                modules.append(nn.ReLU(inplace=True))
        self.network = nn.Sequential(*modules).eval().to(device)
        self.device = device
        self.name = name
        self.depth = sum(1 for layer in layers if layer[0] == "conv")

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        import torch

        grey = np.asarray(grey, dtype=np.float64)
        if grey.ndim != 2:
            raise ValueError(f"DnCNN denoises one grey plane at a time, got shape {grey.shape}")
        x = torch.from_numpy(grey.astype(np.float32))[None, None].to(self.device)
        with torch.inference_mode():
            residual = self.network(x)
        return (x - residual)[0, 0].cpu().numpy().astype(np.float64)


def load_denoiser(weights: str | Path | None = None, device: str = "cpu") -> NLMeansDenoiser | DnCNN:
    """The type-15 denoiser: DnCNN from ``weights`` (MatConvNet .mat, .pth/.pt, .safetensors) or a fallback.

    With ``weights=None`` returns :class:`NLMeansDenoiser` and emits a ``UserWarning``: the result then is not
    the reference generator's denoiser, and its ``name`` says so.
    """
    if weights is None:
        warnings.warn(
            "type 15 (denoise): no DnCNN weights given (--dncnn-weights); using OpenCV non-local means "
            "instead. Outputs will NOT match the KADID generator's DnCNN artefacts.",
            UserWarning,
            stacklevel=2,
        )
        return NLMeansDenoiser()
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: DnCNN weights file not found")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        layers = layers_from_matconvnet(path)
    elif suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as exc:
            raise ValueError(
                f"{path}: reading .safetensors needs the safetensors package: "
                "pip install 'reshape-iqa[safetensors]'"
            ) from exc

        layers = layers_from_state_dict(load_file(str(path)), str(path))
    else:
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ValueError(
                f"{path}: expected a state_dict (mapping of tensors), got {type(state).__name__}"
            )
        layers = layers_from_state_dict(state, str(path))
    if not any(layer[0] == "conv" for layer in layers):
        raise ValueError(f"{path}: no convolution layers found")
    depth = sum(1 for layer in layers if layer[0] == "conv")
    return DnCNN(layers, name=f"dncnn(depth={depth}, weights={path.name})", device=device)
