"""Where shard work runs: in this process, a local process pool, or a Ray cluster.

Stages split their work into shards (lists of plain-data jobs) and hand a top-level function to
:func:`map_shards`, which yields each shard's result as soon as it is done, whatever the backend. Shard
functions must write their outputs atomically and depend only on their input, so that running a shard
twice (a Ray retry after a worker crash, a rerun after a driver crash) is harmless; the caller merges the
results in shard order, which makes the artifacts identical whatever the backend and worker count.

Ray is optional: it is imported only when ``backend="ray"`` is asked for, and a missing Ray is a one-line
usage error. Data travels to Ray workers through Ray's own in-memory serialisation; nothing is pickled to
disk.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from reshape.errors import BadInputError, ReshapeError, StageError

log = logging.getLogger("reshape.backends")

BACKENDS = ("local", "ray")
RAY_INSTALL_HINT = "pip install 'reshape-iqa[ray]'"
#: Application errors worth another attempt on Ray: I/O hiccups on shared filesystems and object stores.
#: Worker-process deaths (OOM killer, preemption, kill -9) are retried by Ray regardless, up to max_retries.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError)

S = TypeVar("S")
R = TypeVar("R")


@dataclass(frozen=True)
class ShardResult(Generic[R]):
    """One finished shard: its position in the input, what the shard function returned, and whether it was
    taken from disk (``reused``, via ``skip_done``) instead of being run."""

    index: int
    value: R
    reused: bool = False


def check_backend(backend: str) -> str:
    name = str(backend).strip().lower()
    if name not in BACKENDS:
        raise BadInputError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return name


def import_ray() -> Any:
    """The ``ray`` module, or a one-line usage error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise BadInputError(f"--backend ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def map_shards(
    fn: Callable[..., R],
    shards: Sequence[S],
    *,
    backend: str = "local",
    workers: int | None = 1,
    ray_address: str | None = None,
    max_retries: int = 3,
    progress: bool | Callable[[S], None] = False,
    setup: Callable[[], Any] | None = None,
    skip_done: Callable[[S], R | None] | None = None,
    use_gpus: bool | None = None,
    actor_cpus: int = 1,
    window: int | None = None,
    resources: Callable[[S], dict[str, float]] | None = None,
) -> Iterator[ShardResult[R]]:
    """Run ``fn`` over ``shards`` and yield a :class:`ShardResult` per shard as each completes.

    * ``backend="local"``: ``workers <= 1`` runs in this process, in order; more uses a process pool.
    * ``backend="ray"``: tasks on a Ray cluster; ``ray_address`` joins an existing cluster (``"auto"``,
      ``"host:6379"``, ``"ray://host:10001"``), without it a private local cluster with ``workers`` CPUs is
      started and shut down afterwards (a Ray session that is already initialised is reused as is). A
      shard whose worker process dies is retried up to ``max_retries`` times, as is one that raised one of
      :data:`TRANSIENT_ERRORS`.
    * ``setup``: when given, ``fn(state, shard)`` is called with ``state = setup()`` made once per worker
      (a model, say): once in-process, once per pool process, once per Ray actor. Ray actors ask for one
      GPU each when the cluster has GPUs (``use_gpus=None``), ``actor_cpus`` CPUs otherwise.
    * ``skip_done(shard)``: when it returns a value other than None the shard is not run and that value is
      yielded with ``reused=True`` (resume from outputs already on disk).
    * ``progress``: True shows a tqdm bar over shards; a callable is called with each finished shard.
    * ``resources(shard)``: on Ray (tasks, no ``setup``), the Ray resources of that shard's task, e.g.
      ``{"num_gpus": 1}`` for the shards a GPU should run while the others take one CPU each; ignored
      locally.

    At most ``window`` shards are in flight (default: four per local worker; on Ray four per cluster CPU,
    at least 64), so memory stays flat for huge inputs. Results come in completion order; sort by
    ``index`` where order matters.
    """
    backend = check_backend(backend)
    if workers is not None and workers < 1:
        raise BadInputError(f"--workers must be at least 1, got {workers}")
    if max_retries < 0:
        raise BadInputError(f"max_retries must be >= 0, got {max_retries}")
    shards = list(shards)
    tick, close = _progress(progress, len(shards))
    try:
        todo: list[int] = []
        for i, shard in enumerate(shards):
            previous = skip_done(shard) if skip_done is not None else None
            if previous is not None:
                tick(shard)
                yield ShardResult(i, previous, reused=True)
            else:
                todo.append(i)
        if not todo:
            return
        if backend == "ray":
            runner = _run_ray(
                fn, shards, todo, workers, ray_address, max_retries, setup, use_gpus, actor_cpus, window,
                resources,
            )  # fmt: skip
        elif (workers or 1) <= 1 or len(todo) == 1:
            runner = _run_inline(fn, shards, todo, setup)
        else:
            runner = _run_pool(fn, shards, todo, workers or 1, setup, window)
        try:
            for result in runner:
                tick(shards[result.index])
                yield result
        finally:
            runner.close()
    finally:
        close()


def _progress(
    progress: bool | Callable[[Any], None], total: int
) -> tuple[Callable[[Any], None], Callable[[], None]]:
    if callable(progress):
        return progress, lambda: None
    if not progress:
        return (lambda _shard: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="shard", desc="shards", dynamic_ncols=True)
    return (lambda _shard: bar.update(1)), bar.close


# ----------------------------------------------------------------------------------------------- local
def _run_inline(
    fn: Callable[..., R], shards: Sequence[S], todo: list[int], setup: Callable[[], Any] | None
) -> Iterator[ShardResult[R]]:
    state = setup() if setup is not None else None
    for i in todo:
        yield ShardResult(i, fn(state, shards[i]) if setup is not None else fn(shards[i]))


_WORKER_STATE: dict[str, Any] = {}


def _exit_with_parent() -> None:
    """Have the kernel kill a pool process when the driver dies (even by kill -9), on Linux.

    Otherwise the workers of a killed driver block forever on their task queue.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the driver died before prctl took effect
            os._exit(1)


def _pool_init(setup: Callable[[], Any] | None) -> None:
    _exit_with_parent()
    if setup is not None:
        _WORKER_STATE["state"] = setup()


def _pool_call(fn: Callable[..., Any], shard: Any, with_state: bool) -> Any:
    return fn(_WORKER_STATE["state"], shard) if with_state else fn(shard)


def _run_pool(
    fn: Callable[..., R],
    shards: Sequence[S],
    todo: list[int],
    workers: int,
    setup: Callable[[], Any] | None,
    window: int | None,
) -> Iterator[ShardResult[R]]:
    limit = window or workers * 4
    # "spawn", not fork: a forked child of a driver that has already run torch/OpenMP code (the type-15
    # DnCNN, an encoder) can deadlock in its first parallel region; spawned workers start clean.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_pool_init, initargs=(setup,)
    ) as pool:
        pending: dict[Future, int] = {}
        queue = iter(todo)
        try:
            while True:
                for i in queue:
                    pending[pool.submit(_pool_call, fn, shards[i], setup is not None)] = i
                    if len(pending) >= limit:
                        break
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(finished, key=pending.__getitem__):
                    yield ShardResult(pending.pop(fut), fut.result())
        finally:
            for fut in pending:
                fut.cancel()


# ----------------------------------------------------------------------------------------------- ray
def ray_session(ray_address: str | None, workers: int | None) -> tuple[Any, bool]:
    """Initialise Ray if needed; returns (ray module, whether this call started the session).

    Without an address a fresh private local cluster is started ("local"), never a stray one found in
    /tmp/ray, so ``workers`` really is the CPU count the run gets.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kwargs: dict[str, Any] = {"include_dashboard": False, "configure_logging": False}
    if ray_address:
        kwargs["address"] = ray_address
    else:
        kwargs["address"] = "local"
        kwargs["num_cpus"] = workers or os.cpu_count() or 1
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = ray_address or "a local Ray cluster"
        raise StageError(f"cannot start or join {where}: {str(exc).splitlines()[0]}") from None
    return ray, True


def _cluster_slots(ray: Any, gpu: bool) -> int:
    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU" if gpu else "CPU", 1)))


def _run_ray(
    fn: Callable[..., R],
    shards: Sequence[S],
    todo: list[int],
    workers: int | None,
    ray_address: str | None,
    max_retries: int,
    setup: Callable[[], Any] | None,
    use_gpus: bool | None,
    actor_cpus: int,
    window: int | None,
    resources: Callable[[S], dict[str, float]] | None = None,
) -> Iterator[ShardResult[R]]:
    ray, owned = ray_session(ray_address, workers)
    try:
        if setup is None:
            yield from _ray_tasks(ray, fn, shards, todo, workers, max_retries, window, resources)
        else:
            yield from _ray_actors(ray, fn, shards, todo, workers, max_retries, setup, use_gpus, actor_cpus)
    finally:
        if owned:
            ray.shutdown()


def _call_shard(fn: Callable[..., Any], shard: Any) -> Any:
    return fn(shard)


class _ShardWorker:
    """Ray actor body: ``setup()`` once (a model on its GPU), then shard after shard."""

    def __init__(self, setup: Callable[[], Any]):
        # a user error in set-up (weights that cannot be loaded...) is kept and raised by each call, so it
        # reaches the driver as that one-line error instead of as an actor that died
        self.error: ReshapeError | None = None
        try:
            self.state = setup()
        except ReshapeError as exc:
            self.error = exc

    def run(self, fn: Callable[..., Any], shard: Any) -> Any:
        if self.error is not None:
            raise self.error
        return fn(self.state, shard)


def _ray_tasks(
    ray: Any,
    fn: Callable[..., R],
    shards: Sequence[S],
    todo: list[int],
    workers: int | None,
    max_retries: int,
    window: int | None,
    resources: Callable[[S], dict[str, float]] | None = None,
) -> Iterator[ShardResult[R]]:
    options = {"max_retries": max_retries, "retry_exceptions": list(TRANSIENT_ERRORS), "num_cpus": 1}
    remote = ray.remote(_call_shard).options(**options)
    placed: dict[tuple[tuple[str, float], ...], Any] = {}  # one remote function per resource shape

    def submit(shard: S) -> Any:
        if resources is None:
            return remote.remote(fn_ref, shard)
        shape = tuple(sorted(resources(shard).items()))
        if shape not in placed:
            placed[shape] = ray.remote(_call_shard).options(**{**options, **dict(shape)})
        return placed[shape].remote(fn_ref, shard)

    fn_ref = ray.put(fn)  # shipped once, not once per task
    # the whole cluster's CPUs, not ``workers``: a joined cluster is used in full (``workers`` only sizes a
    # private local one), and at least 64 queued tasks so that an autoscaler sees demand and adds nodes
    limit = window or max(64, 4 * _cluster_slots(ray, gpu=False))
    pending: dict[Any, int] = {}
    queue = iter(todo)
    try:
        while True:
            for i in queue:
                pending[submit(shards[i])] = i
                if len(pending) >= limit:
                    break
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                yield ShardResult(i, _ray_get(ray, ref, i, max_retries))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)


def _ray_actors(
    ray: Any,
    fn: Callable[..., R],
    shards: Sequence[S],
    todo: list[int],
    workers: int | None,
    max_retries: int,
    setup: Callable[[], Any],
    use_gpus: bool | None,
    actor_cpus: int,
) -> Iterator[ShardResult[R]]:
    gpu = ray.cluster_resources().get("GPU", 0) > 0 if use_gpus is None else bool(use_gpus)
    slots = _cluster_slots(ray, gpu=True) if gpu else max(1, _cluster_slots(ray, gpu=False) // actor_cpus)
    n_actors = max(1, min(len(todo), workers or slots, slots))
    resources = {"num_gpus": 1, "num_cpus": 1} if gpu else {"num_cpus": actor_cpus}
    actor_cls = ray.remote(_ShardWorker).options(
        max_restarts=max_retries, max_task_retries=max_retries, **resources
    )
    log.info("ray: %d %s actor(s)", n_actors, "GPU" if gpu else "CPU")
    actors = [actor_cls.remote(setup) for _ in range(n_actors)]
    fn_ref = ray.put(fn)
    idle = list(actors)
    pending: dict[Any, tuple[int, Any]] = {}
    queue = iter(todo)
    try:
        while True:
            while idle and (i := next(queue, None)) is not None:
                actor = idle.pop()
                pending[actor.run.remote(fn_ref, shards[i])] = (i, actor)
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i, actor = pending.pop(ref)
                idle.append(actor)
                yield ShardResult(i, _ray_get(ray, ref, i, max_retries))
    finally:
        for actor in actors:
            ray.kill(actor)


def _ray_get(ray: Any, ref: Any, index: int, max_retries: int) -> Any:
    """``ray.get`` that turns remote failures into reshape's one-line errors (bugs keep their traceback)."""
    from ray import exceptions as rex

    try:
        return ray.get(ref)
    except rex.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ReshapeError):
            raise cause from None
        raise
    except (rex.WorkerCrashedError, rex.ActorDiedError, rex.NodeDiedError, rex.OutOfMemoryError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(
            f"shard {index}: its Ray worker died {max_retries + 1} time(s), giving up "
            f"({type(exc).__name__}: {first})"
        ) from None


def chunk(items: Sequence[S] | Iterable[S], size: int) -> list[list[S]]:
    """Consecutive shards of at most ``size`` items (order kept)."""
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    out: list[list[S]] = []
    for item in items:
        if not out or len(out[-1]) == size:
            out.append([])
        out[-1].append(item)
    return out


__all__ = [
    "BACKENDS",
    "RAY_INSTALL_HINT",
    "TRANSIENT_ERRORS",
    "ShardResult",
    "check_backend",
    "chunk",
    "import_ray",
    "map_shards",
    "ray_available",
    "ray_session",
]
