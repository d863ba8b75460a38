"""The ``--backend`` / ``--ray-address`` options shared by the stages that can run on Ray (issue #9)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable)


def backend_options(func: F) -> F:
    """Add ``--backend local|ray`` and ``--ray-address ADDRESS`` (keyword arguments backend, ray_address)."""
    func = click.option(
        "--ray-address",
        default=None,
        metavar="ADDRESS",
        help="With --backend ray: join this running Ray cluster ('auto', HOST:6379 or ray://HOST:10001). "
        "Default: start a private local Ray for this run.",
    )(func)
    func = click.option(
        "--backend",
        type=click.Choice(["local", "ray"], case_sensitive=False),
        default="local",
        show_default=True,
        help="Where the work runs: local (this machine) or ray (shards of the input as Ray tasks or actors; "
        "a shard whose worker dies is retried). The output is the same either way. ray needs: "
        "pip install 'reshape-iqa[ray]'.",
    )(func)
    return func
