"""reshape: an offline SynDR-IQA pipeline that reshapes synthetic IQA training sets.

Each stage (features, select, distort, label, prune, publish) reads and writes static artifacts whose
schemas live in ``data_manifests/``; any IQA trainer can consume the result without importing reshape.

Every stage module has a typed config and a ``run(config)``; the CLI and ``reshape run`` only build configs::

    from reshape import features
    result = features.run(features.FeaturesConfig(images=["refs/"], out="refs.parquet"))

The stage modules and their configs are importable from here (``from reshape import FeaturesConfig``);
they load lazily, so ``import reshape`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from reshape.errors import BadInputError, ReshapeError, ResourceError, StageError  # noqa: E402

STAGE_MODULES = (
    "features",
    "select",
    "distort",
    "label",
    "prune",
    "publish",
    "verify",
    "pipeline",
    "demo",
    "report",
)
#: ``<Stage>Config`` / ``<Stage>Result`` -> the module defining it
_LAZY = {
    f"{stage.capitalize()}{kind}": stage
    for stage in ("features", "select", "distort", "label", "prune", "publish")
    for kind in ("Config", "Result")
}


def __getattr__(name: str) -> Any:
    if name in STAGE_MODULES:
        return importlib.import_module(f"reshape.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(f"reshape.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'reshape' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *STAGE_MODULES, *_LAZY])


__all__ = [
    "BadInputError",
    "ReshapeError",
    "ResourceError",
    "StageError",
    "__version__",
    *STAGE_MODULES,
    *_LAZY,
]
