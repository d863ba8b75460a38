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


def local_ray(
    setup_hook: str | None = None, env: dict[str, str] | None = None, num_gpus: int = 0
) -> Iterator[str]:
    """Start a local Ray (2 CPUs), yield its GCS address (for ``ray_address=``), shut it down.

    Its workers can import the helper modules in tests/ (they inherit PYTHONPATH from the cluster processes
    started here); ``map_shards`` reuses this session instead of starting its own. ``setup_hook``
    ("module.function") runs in every worker process of this driver; ``env`` is set for the cluster;
    ``num_gpus`` advertises logical GPUs (Ray schedules on them even where there is no real GPU).
    """
    if not ray_available():
        pytest.skip("the optional ray extra is not installed")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    settings = {
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        ctx = ray.init(
            address="local",
            num_cpus=2,
            num_gpus=num_gpus,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
            runtime_env={"worker_process_setup_hook": setup_hook} if setup_hook else None,
        )
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield ctx.address_info["gcs_address"]
    ray.shutdown()
