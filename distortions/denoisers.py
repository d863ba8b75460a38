"""Grey-image denoisers for type 15: the DnCNN network in torch, and a classical fallback.

The reference generator denoises each RGB channel with MATLAB's pretrained DnCNN (``denoisingNetwork``).
Weights are never shipped with this package: pass a MatConvNet ``.mat`` (e.g. cszn/DnCNN
``model/GD_Gray_Blind.mat``) or a torch state_dict (``.pth``/``.pt``, or ``.safetensors``) to
:func:`load_denoiser`. Without weights, :func:`load_denoiser` returns non-local means (OpenCV), warns, and
says so in its ``name`` so the distort manifest records which denoiser made each image.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator, Sequence
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

    def denoise_batch(self, planes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The planes one by one (non-local means has nothing to share between planes)."""
        return [self(p) for p in planes]


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


#: where the DnCNN runs: ``auto`` is ``cuda`` when torch sees a CUDA device, else ``cpu``
DEVICES = ("cpu", "cuda", "auto")
#: arithmetic of the DnCNN forward pass; ``bf16`` is opt-in (see docs/distortions.md for its deviation)
PRECISIONS = ("fp32", "bf16")


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}, got {device!r}")
    return device


def resolve_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"`` for a ``device`` argument of :func:`load_denoiser`; ValueError otherwise."""
    import torch

    if check_device(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested, but this torch sees no CUDA device (use 'cpu' or 'auto')")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX); False if torch cannot say."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision


def check_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


@functools.cache
def _channel_affine() -> Any:
    """The inference batch-norm module class (built on first use: torch is imported lazily)."""
    import torch
    from torch import nn

    class ChannelAffine(nn.Module):
        """``shift + x * scale`` per channel, in place by one torch.addcmul (a fused multiply-add, as the
        depthwise 1x1 convolution this replaces computed it in the default memory format), without that
        convolution's per-group copies."""

        def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("scale", scale.view(1, -1, 1, 1))
            self.register_buffer("shift", shift.view(1, -1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.addcmul(self.shift, x, self.scale, out=x)

    return ChannelAffine


def _network(layers: Sequence[Layer]) -> Any:
    """The layer list as a torch ``nn.Sequential`` (fp32, CPU, eval mode)."""
    import torch
    from torch import nn

    affine = _channel_affine()
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
            modules.append(
                affine(
                    torch.from_numpy(np.ascontiguousarray(layer[1], np.float32)),
                    torch.from_numpy(np.ascontiguousarray(layer[2], np.float32)),
                )
            )
        elif layer[0] == "relu":
            modules.append(nn.ReLU(inplace=True))
    return nn.Sequential(*modules).eval().requires_grad_(False)


class DnCNN:
    """DnCNN (Zhang et al. 2017): conv+ReLU, (conv+BN+ReLU) x (depth-2), conv; predicts the noise residual.

    Built from a framework-neutral layer list so MatConvNet and torch weights share one network; 17 layers
    of 64 channels is DnCNN-S, 20 is DnCNN-B (the blind grey model the generator used).

    The forward passes run channels-last under ``torch.inference_mode``, the batch norms as one fused
    multiply-add each (:meth:`denoise_batch` takes many planes under one setup); on CUDA with deterministic
    cuDNN and TF32 off. ``threads`` (None: leave torch's setting) is the torch thread count used during the
    passes: the caller's share of the machine.
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        name: str,
        device: str = "cpu",
        precision: str = "fp32",
        *,
        threads: int | None = None,
    ) -> None:
        import torch

        self.device = resolve_device(device)
        self.precision = check_precision(precision)
        self.threads = check_threads(threads)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.network = _network(layers).to(device=self.device, dtype=dtype, memory_format=torch.channels_last)
        self._dtype = dtype
        self.name = name
        self.depth = sum(1 for layer in layers if layer[0] == "conv")

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        return self.denoise_batch([grey])[0]

    def denoise_batch(self, planes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Denoise 2-D grey planes (floats, ~[0, 1]); one float64 plane per input, in order.

        Each result is ``plane - residual`` in float32, exactly what ``self(plane)`` gives: every plane is
        its own forward pass, because oneDNN (CPU) and cuDNN pick their kernels by batch size, and a plane
        sharing a pass could then be rounded differently than alone (measured: 31x23 planes through a
        16-channel net), so a worker's grouping would leak into the bytes of its images.
        """
        arrays = [np.asarray(p, dtype=np.float32) for p in planes]
        for p in arrays:
            if p.ndim != 2:
                raise ValueError(f"DnCNN denoises grey planes (HxW), got shape {p.shape}")
        with self._torch_settings():
            return [self._forward(p[None])[0] for p in arrays]

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """N x H x W float32 -> N x H x W float64 denoised planes."""
        import torch

        x = torch.from_numpy(batch)[:, None].to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
        residual = self.network(x.to(self._dtype)).to(torch.float32)
        return (x - residual)[:, 0].cpu().numpy().astype(np.float64)

    @contextlib.contextmanager
    def _torch_settings(self) -> Iterator[None]:
        """inference_mode, the thread count, and on CUDA deterministic cuDNN without TF32."""
        import torch

        previous = torch.get_num_threads()
        if self.threads is not None and self.threads != previous:
            torch.set_num_threads(self.threads)
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.inference_mode())
                if self.device == "cuda":
                    stack.enter_context(
                        torch.backends.cudnn.flags(
                            enabled=True, benchmark=False, deterministic=True, allow_tf32=False
                        )
                    )
                yield
        finally:
            if torch.get_num_threads() != previous:
                torch.set_num_threads(previous)


def _variant(device: str, precision: str) -> str:
    """What a manifest label adds for a non-default variant (outputs differ per device kind and precision)."""
    parts = [p for p in (device if device != "cpu" else "", precision if precision != "fp32" else "") if p]
    return "".join(f", {p}" for p in parts)


def load_denoiser(
    weights: str | Path | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    *,
    threads: int | None = None,
) -> NLMeansDenoiser | DnCNN:
    """The type-15 denoiser: DnCNN from ``weights`` (MatConvNet .mat, .pth/.pt, .safetensors) or a fallback.

    ``device`` is ``"cpu"``, ``"cuda"`` or ``"auto"``; ``precision`` ``"fp32"`` or ``"bf16"`` (opt-in);
    ``threads`` the torch thread count of the forward passes (None: torch's setting). Bad values raise
    ValueError. With ``weights=None`` returns :class:`NLMeansDenoiser` and emits a ``UserWarning``: the result
    then is not the reference generator's denoiser, and its ``name`` says so (device and precision are
    checked, then not used: the fallback runs on the CPU in float64).
    """
    check_device(device)
    check_precision(precision)
    check_threads(threads)
    if weights is None:
        warnings.warn(
            "type 15 (denoise): no DnCNN weights given (--dncnn-weights); using OpenCV non-local means "
            "instead. Outputs will NOT match the KADID generator's DnCNN artefacts.",
            UserWarning,
            stacklevel=2,
        )
        return NLMeansDenoiser()
    layers, path = _read_layers(weights)
    depth = sum(1 for layer in layers if layer[0] == "conv")
    resolved = resolve_device(device)
    if precision == "bf16" and resolved == "cpu" and not cpu_has_native_bf16():
        warnings.warn(
            "DnCNN precision 'bf16' on a CPU without native bf16 (AVX512-BF16/AMX): oneDNN emulates it, "
            "which is slower than fp32 here; bf16 pays off on GPUs and bf16-capable CPUs",
            UserWarning,
            stacklevel=2,
        )
    name = f"dncnn(depth={depth}, weights={path.name}{_variant(resolved, precision)})"
    return DnCNN(layers, name=name, device=resolved, precision=precision, threads=threads)


def _read_layers(weights: str | Path) -> tuple[list[Layer], Path]:
    """The layer list of a weights file (format by suffix) and its path."""
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
    return layers, path


def denoise_planes(denoiser: Any, planes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``denoiser`` applied to each plane (float64 results): one :meth:`DnCNN.denoise_batch` call when the
    denoiser has one, else plane by plane (any callable ``grey -> grey`` works)."""
    batch = getattr(denoiser, "denoise_batch", None)
    if batch is not None:
        return [np.asarray(p, dtype=np.float64) for p in batch(planes)]
    return [np.asarray(denoiser(p), dtype=np.float64) for p in planes]


def random_dncnn_state_dict(
    depth: int = 20, channels: int = 64, seed: int = 0, residual_scale: float = 0.05
) -> dict[str, Any]:
    """A DnCNN state_dict of the real shape with random weights (DnCNN-B: depth 20, 64 channels), for
    benchmarks and tests: MATLAB's trained weights are not public.

    Layout ``model.<i>.*`` of ``nn.Sequential(conv, relu, (conv, bn, relu) x (depth - 2), conv)``, which
    :func:`load_denoiser` reads from a ``.pth``. Convolutions are He-normal (activations keep their scale
    through the ReLUs), batch norms have moderate random statistics, and the last convolution is scaled by
    ``residual_scale`` so the predicted residual is of the order of type 15's noise, not of the image.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)

    def normal(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * std

    def uniform(n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator)

    state: dict[str, Any] = {}
    index = 0
    for layer in range(depth):
        cin = 1 if layer == 0 else channels
        cout = 1 if layer == depth - 1 else channels
        std = (2.0 / (9 * cin)) ** 0.5 * (residual_scale if layer == depth - 1 else 1.0)
        state[f"model.{index}.weight"] = normal(cout, cin, 3, 3, std=std)
        if layer in (0, depth - 1):
            state[f"model.{index}.bias"] = normal(cout, std=0.01)
            index += 2 if layer == 0 else 1  # conv (+ relu)
            continue
        index += 1
        state[f"model.{index}.weight"] = uniform(cout, 0.5, 1.5)
        state[f"model.{index}.bias"] = normal(cout, std=0.1)
        state[f"model.{index}.running_mean"] = normal(cout, std=0.1)
        state[f"model.{index}.running_var"] = uniform(cout, 0.5, 2.0)
        index += 2  # bn, relu
    return state
