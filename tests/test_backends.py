"""reshape.backends: local and Ray executors give the same results and bytes; retries and resume."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import shard_toys
from ray_helpers import local_ray, needs_ray

from reshape.backends import chunk, map_shards
from reshape.errors import BadInputError
from reshape.fileio import TMP_PREFIX, sha256_file

TESTS = Path(__file__).resolve().parent
ITEMS = [(f"item{i:03d}.bin", 7919 * i + 3) for i in range(24)]
SHARDS = chunk(ITEMS, 3)


def _files(folder: Path) -> dict[str, str]:
    """Final files (temp files excluded) -> sha256."""
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if not p.name.startswith(TMP_PREFIX)}


def _merged(results) -> list:
    """Shard results in shard order, asserting each shard came back exactly once."""
    results = list(results)
    indices = [r.index for r in results]
    assert sorted(indices) == list(range(len(SHARDS))), f"missing or duplicated shards: {sorted(indices)}"
    return [row for r in sorted(results, key=lambda r: r.index) for row in r.value]


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> tuple[Path, list]:
    """The toy job run in this process: what every other backend must reproduce."""
    out = tmp_path_factory.mktemp("local1")
    rows = _merged(map_shards(functools.partial(shard_toys.write_items, str(out)), SHARDS))
    return out, rows


# ----------------------------------------------------------------------------------------------- local
def test_local_pool_matches_inline(local_reference, tmp_path):
    ref_dir, ref_rows = local_reference
    rows = _merged(
        map_shards(functools.partial(shard_toys.write_items, str(tmp_path)), SHARDS, workers=2, window=3)
    )
    assert rows == ref_rows
    assert _files(tmp_path) == _files(ref_dir)
    assert len(_files(tmp_path)) == len(ITEMS)


def test_chunk_keeps_order_and_sizes():
    shards = chunk(range(10), 4)
    assert shards == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError):
        chunk([1], 0)


def test_skip_done_reuses_without_running(tmp_path):
    seen: list[int] = []

    def run(shard):
        seen.append(shard[0])
        return shard[0] * 10

    results = list(map_shards(run, [[1], [2], [3]], skip_done=lambda s: -1 if s[0] == 2 else None))
    assert seen == [1, 3]
    assert {r.index: (r.value, r.reused) for r in results} == {0: (10, False), 1: (-1, True), 2: (30, False)}


def test_setup_runs_once_per_process_locally():
    inline = _merged(map_shards(shard_toys.with_state, SHARDS, setup=shard_toys.make_state))
    assert {pid for _, _, pid in inline} == {os.getpid()}
    pooled = _merged(map_shards(shard_toys.with_state, SHARDS, setup=shard_toys.make_state, workers=2))
    assert [row[:2] for row in pooled] == [row[:2] for row in inline]
    assert len({pid for _, _, pid in pooled}) <= 2


def test_unknown_backend_and_bad_workers():
    with pytest.raises(BadInputError, match="unknown backend 'spark'"):
        list(map_shards(len, SHARDS, backend="spark"))
    with pytest.raises(BadInputError, match="--workers must be at least 1"):
        list(map_shards(len, SHARDS, workers=0))


def test_ray_missing_is_a_one_line_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BadInputError) as info:
        list(map_shards(len, SHARDS, backend="ray"))
    assert "pip install 'reshape-iqa[ray]'" in str(info.value)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------- ray
@pytest.fixture(scope="module")
def ray_cluster():
    yield from local_ray(num_gpus=1)  # one logical GPU: lets the actor tests see GPU scheduling


@needs_ray
@pytest.mark.ray
def test_ray_tasks_same_results_and_bytes(ray_cluster, local_reference, tmp_path):
    ref_dir, ref_rows = local_reference
    results = list(
        map_shards(functools.partial(shard_toys.write_items, str(tmp_path)), SHARDS, backend="ray", workers=2)
    )
    assert _merged(results) == ref_rows
    assert _files(tmp_path) == _files(ref_dir)


@needs_ray
@pytest.mark.ray
def test_ray_actors_setup_once_per_actor(ray_cluster):
    inline = _merged(map_shards(shard_toys.with_state, SHARDS, setup=shard_toys.make_state))
    on_ray = _merged(
        map_shards(
            shard_toys.with_state,
            SHARDS,
            setup=shard_toys.make_state,
            backend="ray",
            workers=2,
            use_gpus=False,
        )
    )
    assert [row[:2] for row in on_ray] == [row[:2] for row in inline]
    pids = {pid for _, _, pid in on_ray}
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2  # two CPU actors, each set up once


@needs_ray
@pytest.mark.ray
def test_ray_actor_killed_mid_shard_is_restarted_and_the_shard_retried(ray_cluster, tmp_path):
    victim = ITEMS[13][0]
    fn = functools.partial(shard_toys.with_state_or_die_once, str(tmp_path), victim)
    rows = _merged(
        map_shards(fn, SHARDS, setup=shard_toys.make_state, backend="ray", workers=2, use_gpus=False)
    )
    dead_pid = int((tmp_path / f"{victim}.attempted").read_text())
    inline = _merged(map_shards(shard_toys.with_state, SHARDS, setup=shard_toys.make_state))
    assert [row[:2] for row in rows] == [row[:2] for row in inline]  # every shard once, in full
    assert next(pid for name, _, pid in rows if name == victim) != dead_pid


@needs_ray
@pytest.mark.ray
def test_ray_actor_setup_error_reaches_driver_as_one_line(ray_cluster):
    with pytest.raises(BadInputError) as info:
        list(map_shards(shard_toys.with_state, SHARDS, setup=shard_toys.failing_setup, backend="ray"))
    assert str(info.value) == "weights.pt: not a loadable state_dict"


@needs_ray
@pytest.mark.ray
def test_ray_actors_take_one_gpu_each_when_the_cluster_has_gpus(ray_cluster):
    rows = _merged(map_shards(shard_toys.gpus_of, SHARDS, setup=shard_toys.make_state_on_ray, backend="ray"))
    assert len(rows) == len(ITEMS)
    assert {gpus for _, _, gpus in rows} == {("0",)}  # every shard ran on a GPU actor holding GPU 0
    assert len({pid for _, pid, _ in rows}) == 1  # one GPU in the cluster -> one actor
    cpu_rows = _merged(
        map_shards(
            shard_toys.gpus_of, SHARDS, setup=shard_toys.make_state_on_ray, backend="ray", use_gpus=False
        )
    )
    assert {gpus for _, _, gpus in cpu_rows} == {()}


@needs_ray
@pytest.mark.ray
def test_ray_killed_worker_is_retried_without_duplicates_or_partial_files(
    ray_cluster, local_reference, tmp_path
):
    ref_dir, ref_rows = local_reference
    out, markers = tmp_path / "out", tmp_path / "markers"
    out.mkdir()
    markers.mkdir()
    victim = ITEMS[10][0]  # in the middle of shard 3, after that shard already wrote one file
    fn = functools.partial(shard_toys.write_items_or_die_once, str(out), str(markers), victim)
    results = list(map_shards(fn, SHARDS, backend="ray", workers=2, max_retries=2))
    rows = _merged(results)
    # the first attempt really died in a worker process, the retry ran in another one
    first_pid = int((markers / f"{victim}.attempted").read_text())
    victim_row = next(r for r in rows if r["name"] == victim)
    assert victim_row["pid"] != first_pid
    assert [{k: r[k] for k in ("name", "sha256")} for r in rows] == ref_rows
    assert _files(out) == _files(ref_dir)  # no partial file under a final name, no extra file


@needs_ray
@pytest.mark.ray
def test_ray_shard_error_reaches_driver_as_one_line(ray_cluster):
    fn = functools.partial(shard_toys.fail_on, ITEMS[5][0])
    with pytest.raises(BadInputError) as info:
        list(map_shards(fn, SHARDS, backend="ray", workers=2, max_retries=1))
    assert str(info.value) == f"{ITEMS[5][0]}: not a valid toy item"


DRIVER = """
import functools, json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import shard_toys
from ray_helpers import local_ray, needs_ray
from reshape.backends import chunk, map_shards
items = [tuple(x) for x in json.loads({items!r})]
fn = functools.partial(shard_toys.write_items_slowly, {out!r}, 0.4)
for r in map_shards(fn, chunk(items, 3), backend="ray", ray_address={address!r}, workers=2):
    print(r.index, flush=True)
"""


def _resume_probe(out: Path):
    """skip_done for the toy job: a shard is done when all its files are on disk."""

    def done(shard):
        paths = [out / name for name, _ in shard]
        if all(p.is_file() for p in paths):
            return [{"name": p.name, "sha256": sha256_file(p)} for p in paths]
        return None

    return done


@needs_ray
@pytest.mark.ray
def test_ray_rerun_after_driver_crash_resumes_from_disk(ray_cluster, local_reference, tmp_path):
    import json

    ref_dir, ref_rows = local_reference
    out = tmp_path / "out"
    out.mkdir()
    script = DRIVER.format(tests=str(TESTS), items=json.dumps(ITEMS), out=str(out), address=ray_cluster)
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    finished = []
    try:
        deadline = time.monotonic() + 120
        while len(finished) < 3 and time.monotonic() < deadline:
            line = driver.stdout.readline()
            if not line:
                break
            finished.append(int(line))
        assert len(finished) >= 3, "the driver did not get going"
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    assert len(_files(out)) < len(ITEMS)  # it really died mid-run

    results = list(
        map_shards(
            functools.partial(shard_toys.write_items, str(out)),
            SHARDS,
            backend="ray",
            workers=2,
            skip_done=_resume_probe(out),
        )
    )
    reused = {r.index for r in results if r.reused}
    assert set(finished) <= reused  # every shard the crashed driver saw finish is not run again
    assert len(reused) < len(SHARDS)
    assert _merged(results) == ref_rows
    assert _files(out) == _files(ref_dir)


@needs_ray
def test_example_cluster_yaml_is_a_valid_ray_autoscaler_config():
    import json

    import jsonschema
    import ray
    import yaml

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((TESTS.parent / "examples" / "ray-cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    nodes = config["available_node_types"]
    assert any(n["resources"].get("GPU") for n in nodes.values())  # the optional GPU workers
    assert config["head_node_type"] in nodes
