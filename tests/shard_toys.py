"""Deterministic shard functions for the backend tests (a module of its own so that pool processes, Ray
workers and a separate driver process can all import them by name)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from reshape.errors import BadInputError
from reshape.fileio import atomic_path, atomic_write_bytes, sha256_bytes

PAYLOAD = 64 * 1024


def payload(seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=PAYLOAD, dtype=np.uint8).tobytes()


def write_items(out_dir: str, shard: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Write one file per (name, seed) item atomically; return manifest-like rows."""
    rows = []
    for name, seed in shard:
        data = payload(seed)
        atomic_write_bytes(Path(out_dir) / name, data)
        rows.append({"name": name, "sha256": sha256_bytes(data)})
    return rows


def write_items_slowly(out_dir: str, delay: float, shard: list[tuple[str, int]]) -> list[dict[str, Any]]:
    time.sleep(delay)
    return write_items(out_dir, shard)


def write_items_or_die_once(out_dir: str, marker_dir: str, victim: str, shard: list[tuple[str, int]]):
    """Like write_items, but the first attempt at item ``victim`` kills its own worker process half-way
    through writing it (the marker file remembers that the first attempt happened)."""
    rows = []
    for name, seed in shard:
        data = payload(seed)
        marker = Path(marker_dir) / f"{name}.attempted"
        if name == victim and not marker.exists():
            marker.write_text(str(os.getpid()))
            with atomic_path(Path(out_dir) / name) as tmp:
                with open(tmp, "wb") as fh:
                    fh.write(data[: len(data) // 2])
                    fh.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        atomic_write_bytes(Path(out_dir) / name, data)
        rows.append({"name": name, "sha256": sha256_bytes(data), "pid": os.getpid()})
    return rows


def fail_on(bad: str, shard: list[tuple[str, int]]) -> list[str]:
    for name, _seed in shard:
        if name == bad:
            raise BadInputError(f"{name}: not a valid toy item")
    return [name for name, _ in shard]


def make_state() -> dict[str, Any]:
    return {"pid": os.getpid(), "offset": 1000}


def with_state(state: dict[str, Any], shard: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    return [(name, seed + state["offset"], state["pid"]) for name, seed in shard]


def make_state_on_ray() -> dict[str, Any]:
    """Actor state recording which GPUs Ray assigned to the actor ([] for a CPU actor)."""
    import ray

    return {"pid": os.getpid(), "gpus": [str(g) for g in ray.get_gpu_ids()]}


def gpus_of(state: dict[str, Any], shard: list[tuple[str, int]]) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(name, state["pid"], tuple(state["gpus"])) for name, _ in shard]


# ----------------------------------------------------------------------------------------------- distort
def _blur(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(x, (0, 0), p)


def _noise(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, np.sqrt(p), x.shape)


def _shift(x: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    return x + p


#: stand-ins for types 1, 11, 18, used only where the distortions library does not provide them
STAND_INS = {1: _blur, 11: _noise, 18: _shift}


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Images and the manifest of a distort output (the .meta.json sidecar holds a creation time)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".png", ".bmp", ".csv")}


#: ``python -c SLOW_CLI "$delay" distort ...``: the reshape CLI with the stand-in kernels registered where
#: needed and every image slowed by ``delay`` seconds, so that a test can kill or race a run mid-way.
SLOW_CLI = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import shard_toys
shard_toys.register_stand_in_kernels()
import distortions
delay = float(sys.argv.pop(1))
real_apply = distortions.apply
def slow_apply(*args, **kwargs):
    time.sleep(delay)
    return real_apply(*args, **kwargs)
distortions.apply = slow_apply
from reshape.cli.main import main
sys.argv[0] = "reshape"
main()
"""


def register_stand_in_kernels() -> None:
    from distortions import registry

    registry._load_kernels()
    for t, fn in STAND_INS.items():
        registry.KERNELS.setdefault(t, fn)


def distort_worker_hook() -> None:
    """Ray worker set-up for the distort tests: stand-in kernels where needed, and test controls.

    Files in the folder named by RESHAPE_TEST_CONTROL steer every worker: ``slow`` (seconds per image)
    slows distortion down; ``kill`` makes the first worker that sees it kill itself (``killed`` records
    its pid, created exclusively so that it happens once).
    """
    register_stand_in_kernels()
    control = os.environ.get("RESHAPE_TEST_CONTROL")
    if not control:
        return
    import distortions

    real_apply = distortions.apply

    def controlled_apply(*args: Any, **kwargs: Any) -> np.ndarray:
        folder = Path(control)
        slow = folder / "slow"
        if slow.exists():
            time.sleep(float(slow.read_text() or 0.05))
        if (folder / "kill").exists():
            try:
                with open(folder / "killed", "x") as fh:
                    fh.write(str(os.getpid()))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_apply(*args, **kwargs)

    distortions.apply = controlled_apply


def with_state_or_die_once(marker_dir: str, victim: str, state: dict[str, Any], shard: list[tuple[str, int]]):
    """Like with_state, but the first call that meets item ``victim`` kills its actor process."""
    marker = Path(marker_dir) / f"{victim}.attempted"
    if any(name == victim for name, _ in shard) and not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return with_state(state, shard)


def failing_setup() -> dict[str, Any]:
    raise BadInputError("weights.pt: not a loadable state_dict")


# ----------------------------------------------------------------------------------------------- storage
TEST_FS_PROTOCOL = "reshapetest"


def register_test_filesystem() -> None:
    """Register ``reshapetest://`` (fsspec): an "object store" kept in the folder RESHAPE_TEST_FS_ROOT.

    It goes through reshape.storage's remote code path (fsspec behind pyarrow.fs, temporary key + move)
    yet every process, Ray workers included, sees the same data, which ``memory://`` cannot offer.
    """
    import fsspec
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem

    class FolderStore(DirFileSystem):
        protocol = TEST_FS_PROTOCOL

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(path=os.environ["RESHAPE_TEST_FS_ROOT"], fs=LocalFileSystem(), **kwargs)

    fsspec.register_implementation(TEST_FS_PROTOCOL, FolderStore, clobber=True)


def distort_store_worker_hook() -> None:
    """Ray worker set-up for the distort object-store tests: ``reshapetest://`` and the stand-in kernels."""
    register_test_filesystem()
    register_stand_in_kernels()
