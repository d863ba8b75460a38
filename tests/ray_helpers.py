"""A local Ray cluster for the tests that need one: each module wraps :func:`local_ray` in a module-scoped
fixture, so Ray starts once per module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reshape.backends import ray_available

TESTS = Path(__file__).resolve().parent

needs_ray = pytest.mark.skipif(not ray_available(), reason="the optional ray extra is not installed")


def local_ray() -> Iterator[str]:
    """Start a local Ray (2 CPUs), yield its GCS address (for ``ray_address=``), shut it down.

    Its workers can import the helper modules in tests/ (they inherit PYTHONPATH from the cluster processes
    started here); ``map_shards`` reuses this session instead of starting its own.
    """
    if not ray_available():
        pytest.skip("the optional ray extra is not installed")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), old]))
    try:
        ctx = ray.init(
            address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False
        )
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    yield ctx.address_info["gcs_address"]
    ray.shutdown()
