"""The 25 KADID-10k distortions as pure functions (float32 RGB in [0, 1] in and out).

>>> import numpy as np, distortions
>>> out = distortions.apply(image, 1, 3, rng=np.random.default_rng(0))   # gaussian blur, level 3

``apply`` reproduces the reference generator ``imdist_generator``: global min-max stretch of the input,
the distortion with the level's parameter from :data:`distortions.params.TABLE`, then the same stretch of
the output. The per-type kernels (``distortions.registry.KERNELS``) take the already stretched image and
the *parameter* (not the level), like the generator's per-type functions.
"""

from distortions.denoisers import load_denoiser
from distortions.params import TABLE, DistortionSpec, parameter
from distortions.registry import KERNELS, apply, apply_batch, get_kernel, names, resolve_type

__all__ = [
    "KERNELS",
    "TABLE",
    "DistortionSpec",
    "apply",
    "apply_batch",
    "get_kernel",
    "load_denoiser",
    "names",
    "parameter",
    "resolve_type",
]
